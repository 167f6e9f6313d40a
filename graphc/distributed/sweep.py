"""``graphc sweep``: a grid of ``train-mnist`` runs as dask tasks, one task per configuration.

Each task runs :func:`graphc.train.train_mnist` on a worker, which reads MNIST itself (from
``--data`` or its own ``$GRAPHC_DATA``, once per worker process); the client shows a progress
bar as runs finish, then prints a table of the results and draws every run's curves in one plot.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from graphc.errors import GraphcError

#: The settings a sweep varies, in the order of its table's columns.
GRID = ("optimizer", "lr", "hidden", "seed")


def grid(base, **values) -> list:
    """Every combination of ``values`` (``lr=[0.1, 0.05], hidden=[50, 100]``, ...) applied to the
    :class:`~graphc.train.TrainConfig` ``base``, in the order of :data:`GRID`."""
    unknown = set(values) - set(GRID)
    if unknown:
        raise GraphcError(f"sweep: cannot vary {sorted(unknown)}; a sweep varies {list(GRID)}")
    axes = [values.get(k) or [getattr(base, k)] for k in GRID]
    return [replace(base, **dict(zip(GRID, combo))) for combo in itertools.product(*axes)]


def _mnist(config, train_size: int | None, test_size: int | None):
    """MNIST as ``config`` wants it, loaded once per worker process and cut to the sizes asked for."""
    from graphc.datasets import load_mnist
    from graphc.distributed.worker import cached

    dtype = np.dtype(config.dtype)
    key = ("mnist", config.data, config.images, dtype.str, config.integer_labels)
    (x, t), (xt, tt) = cached(key, lambda: load_mnist(config.data, normalize=config.images == "float",
                                                      one_hot_label=not config.integer_labels, dtype=dtype,
                                                      download=False))
    return (x[:train_size], t[:train_size]), (xt[:test_size], tt[:test_size])


def run_one(config, train_size: int | None = None, test_size: int | None = None) -> dict:
    """One configuration's run (on a worker): its settings, final accuracies, time and curves."""
    from graphc.train import train_mnist

    config = replace(config, out=None, progress=False, plot=False)
    result = train_mnist(config, log=lambda line: None, data=_mnist(config, train_size, test_size))
    return {"config": asdict(config), "train_acc": result.train_acc, "test_acc": result.test_acc,
            "seconds": result.seconds, "history": result.history}


def run_sweep(client, configs: list, train_size: int | None = None, test_size: int | None = None,
              progress: bool = True) -> list[dict]:
    """Run every configuration as a task on ``client``'s cluster; the results in ``configs``' order.

    A run that fails stops the sweep with its error, and every run not yet finished is cancelled."""
    from distributed import KilledWorker, as_completed

    from graphc.train import _progress

    futures = [client.submit(run_one, c, train_size, test_size, pure=False,
                             key=f"graphc-sweep-{k}-{c.optimizer}-lr{c.lr}-h{c.hidden}-s{c.seed}")
               for k, c in enumerate(configs)]
    index = {f.key: k for k, f in enumerate(futures)}
    results: list = [None] * len(futures)
    bar = _progress(len(futures), progress)
    if bar is not None:
        bar.unit = "run"
    try:
        for future in as_completed(futures):
            try:
                results[index[future.key]] = future.result()
            except KilledWorker as exc:
                raise GraphcError(f"sweep: a worker died running {exc.task!r} every time dask retried it; see the "
                                  f"worker's log (memory?) and run the sweep again with fewer runs per worker") from None
            if bar is not None:
                bar.update(1)
    finally:
        client.cancel(futures)
        if bar is not None:
            bar.close()
    return results


def table(results: list[dict]) -> str:
    """The results as a text table, best test accuracy first."""
    head = ["optimizer", "lr", "hidden", "seed", "final loss", "train acc", "test acc", "seconds"]
    rows = []
    for r in sorted(results, key=lambda r: -r["test_acc"]):
        c = r["config"]
        loss = r["history"]["loss"]
        rows.append([c["optimizer"], f"{c['lr']:g}", str(c["hidden"]), str(c["seed"]),
                     f"{np.mean(loss[-100:]):.4f}", f"{r['train_acc']:.4f}", f"{r['test_acc']:.4f}",
                     f"{r['seconds']:.2f}"])
    widths = [max(len(h), *(len(row[k]) for row in rows)) for k, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def label(config: dict) -> str:
    return f"{config['optimizer']} lr={config['lr']:g} h={config['hidden']} seed={config['seed']}"


def plot(results: list[dict], path) -> None:
    """One figure: every run's training loss (a running mean) and its test accuracy by iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in results:
        loss = np.asarray(r["history"]["loss"])
        width = max(1, min(100, len(loss) // 10))
        smooth = np.convolve(loss, np.ones(width) / width, mode="valid")
        (line,) = ax_loss.plot(np.arange(width, len(loss) + 1), smooth, lw=1, label=label(r["config"]))
        ax_acc.plot(r["history"]["iteration"], r["history"]["test_acc"], marker="o", ms=3, color=line.get_color())
    ax_loss.set(xlabel="iteration", ylabel="loss (running mean)", title="training loss", yscale="log")
    ax_acc.set(xlabel="iteration", ylabel="accuracy", title="test accuracy")
    ax_loss.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(results: list[dict], out, plot_curves: bool = True, log=print) -> None:
    """``OUT/sweep.json`` (every run's settings, results and curves) and ``OUT/sweep.png``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(results))
    log(f"wrote {out / 'sweep.json'}")
    if plot_curves:
        try:
            plot(results, out / "sweep.png")
            log(f"wrote {out / 'sweep.png'}")
        except ImportError:
            log("matplotlib is not installed: no plot (pip install 'graphc[train]')")
