"""The flagship job: train the seed's MNIST two-layer net (or the next chapter's SimpleConvNet,
``model="convnet"``) with one compiled step.

``train_mnist(TrainConfig(...))`` reproduces the seed's run (784-50-10, ReLU,
weights 0.01·randn, zero biases, batches of 100 drawn at random with
replacement, SGD with lr 0.1, 10,000 iterations, train and test accuracy over
the full sets after every epoch of 600 iterations) with graphc's compiled
forward + backward + update step, and writes the parameters (``params.npz``),
the curves (``history.json``, ``curves.png``) and a summary line.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from graphc.backends.numpy.casting import RowCaster
from graphc.errors import GraphcError
from graphc.evaluate import Evaluator


#: What each model trains with unless told otherwise: the seed's run for the two-layer net
#: (SGD, lr 0.1, 10,000 iterations, 50 hidden units), the book's for SimpleConvNet (Adam,
#: lr 0.001, 20 epochs of 600 iterations, 100 hidden units).
MODEL_DEFAULTS = {
    "mlp": {"iters": 10_000, "lr": 0.1, "hidden": 50, "optimizer": "sgd"},
    "convnet": {"iters": 12_000, "lr": 0.001, "hidden": 100, "optimizer": "adam"},
}


@dataclass
class TrainConfig:
    iters: int = 10_000
    batch_size: int = 100
    lr: float = 0.1
    hidden: int = 50
    weight_init_std: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.9
    seed: int = 0
    dtype: str = "float32"
    integer_labels: bool = False
    data: str | None = None  # MNIST directory; else $GRAPHC_DATA, else the cache
    out: str | None = "runs/mnist"  # where params, curves and the plot go; None: nowhere
    eval_chunk: int = 2_000  # rows per evaluation call: the chunk and its activations stay in cache
    # "uint8": kept as the files store them (a quarter of float32's memory), each batch and
    # evaluation chunk cast to float as it is used, and the net divides by 255 inside its
    # first products (the compiler folds it there): equal to "float" up to rounding, and
    # usually faster (README).  "float": normalized once at load, the seed's arithmetic.
    images: str = "uint8"
    progress: bool = True
    plot: bool = True
    checkpoint_every: int = 0  # iterations between checkpoints in ``out`` (0: none)
    resume: bool = False  # continue from ``out``/checkpoint.npz when it exists
    model: str = "mlp"  # "mlp": the seed's 784-50-10 net; "convnet": SimpleConvNet (see MODEL_DEFAULTS)


@dataclass
class TrainResult:
    config: TrainConfig
    params: dict
    train_acc: float
    test_acc: float
    seconds: float
    history: dict = field(default_factory=dict)

    def summary(self) -> str:
        c = self.config
        kind = "two-layer" if c.model == "mlp" else "SimpleConvNet"
        return (f"graphc MNIST {kind} ({c.optimizer}, lr {c.lr}, batch {c.batch_size}, {c.iters} iterations, "
                f"{c.dtype}, seed {c.seed}): train accuracy {self.train_acc:.4f}, test accuracy {self.test_acc:.4f}, "
                f"{self.seconds:.1f} s")


def _optimizer(config: TrainConfig):
    from graphc.optim import make_optimizer

    hyper = {"lr": config.lr, **({"momentum": config.momentum} if config.optimizer == "momentum" else {})}
    return make_optimizer(config.optimizer, **hyper)


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is an optional extra: run without a bar
        return None
    return tqdm(total=total, unit="step", dynamic_ncols=True)


# Settings a resumed run must share with the run that wrote the checkpoint.
_RESUME_KEYS = ("batch_size", "lr", "hidden", "weight_init_std", "optimizer", "momentum", "seed", "dtype",
                "integer_labels", "model")


def _save_checkpoint(path: Path, config: TrainConfig, iteration: int, step, rng, history: dict) -> None:
    from graphc.serialize import save_arrays

    arrays = {f"param/{k}": v for k, v in step.params.items()}
    arrays.update({f"state/{k}": v for k, v in step.state.items()})
    arrays["history/loss"] = np.asarray(history["loss"], dtype=np.float64)
    meta = {"format": "graphc-checkpoint", "version": 1, "iteration": iteration, "step_count": step.step_count,
            "rng": rng.bit_generator.state, "config": {k: getattr(config, k) for k in _RESUME_KEYS},
            "evaluations": {k: history[k] for k in ("iteration", "train_acc", "test_acc")}}
    save_arrays(path, arrays, meta=meta)


def _load_checkpoint(path: Path, config: TrainConfig, step, rng, history: dict) -> int:
    """Restore params, optimizer state, RNG and history in place; returns the iteration to go on from.

    Everything is checked before anything is restored, so a bad file leaves the run as it was.
    """
    from graphc.serialize import load_arrays

    arrays, meta = load_arrays(path)
    if not isinstance(meta, dict) or meta.get("format") != "graphc-checkpoint" or meta.get("version") != 1:
        raise GraphcError(f"{path}: not a graphc checkpoint of version 1")

    def bad(what: str) -> GraphcError:
        return GraphcError(f"{path}: damaged checkpoint: {what}")

    saved = meta.get("config")
    if not isinstance(saved, dict):
        raise bad("its config is missing")
    saved = {"model": "mlp", **saved}  # checkpoints from before the convnet were of the two-layer net
    differ = {k: (saved.get(k), getattr(config, k)) for k in _RESUME_KEYS if saved.get(k) != getattr(config, k)}
    if differ:
        raise GraphcError(f"{path}: the checkpoint was written with other settings (saved, now): {differ}")
    counts = {k: meta.get(k) for k in ("iteration", "step_count")}
    for k, v in counts.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise bad(f"{k} must be a count, got {v!r}")
    evaluations = meta.get("evaluations")
    keys = ("iteration", "train_acc", "test_acc")
    if (not isinstance(evaluations, dict) or set(evaluations) != set(keys)
            or not all(isinstance(evaluations[k], list) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                                 for x in evaluations[k]) for k in keys)
            or len({len(evaluations[k]) for k in keys}) != 1):
        raise bad("its evaluations are not three lists of numbers of one length")
    loss = arrays.get("history/loss")
    if loss is None or loss.ndim != 1 or loss.dtype != np.float64:
        raise bad("history/loss is missing or not a float64 vector")
    try:  # on a generator of the same kind first: a bad state must not reach the run's
        probe = type(rng.bit_generator)()
        probe.state = meta.get("rng")
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise bad(f"its RNG state does not restore ({type(exc).__name__}: {exc})") from None
    restores = []
    for prefix, target in (("param/", step.params), ("state/", step.state)):
        for k, v in target.items():
            got = arrays.get(prefix + k)
            if got is None or got.shape != v.shape or got.dtype != v.dtype:
                raise GraphcError(f"{path}: {prefix + k} is missing or has the wrong shape or dtype")
            restores.append((v, got))
    for v, got in restores:
        v[...] = got
    step.step_count = counts["step_count"]
    rng.bit_generator.state = probe.state
    history["loss"] = loss.tolist()
    history.update({k: list(evaluations[k]) for k in keys})
    return counts["iteration"]


def train_mnist(config: TrainConfig = TrainConfig(), log: Callable[[str], None] = print,
                data: tuple | None = None) -> TrainResult:
    """Run the training described by ``config``; ``data`` overrides the MNIST files (tests pass small sets)."""
    from graphc.datasets import load_mnist
    from graphc.models import init_simple_conv_params, init_two_layer_params, simple_conv_net, two_layer_net
    from graphc.optim import TrainStep

    if config.iters < 1 or config.batch_size < 1:
        raise GraphcError(f"iters and batch_size must be positive, got {config.iters} and {config.batch_size}")
    dtype = np.dtype(config.dtype)
    if dtype.kind != "f":
        raise GraphcError(f"dtype must be a float type, got {config.dtype!r}")
    if config.images not in ("float", "uint8"):
        raise GraphcError(f"images must be 'float' or 'uint8', got {config.images!r}")
    if config.model not in MODEL_DEFAULTS:
        raise GraphcError(f"model must be one of {sorted(MODEL_DEFAULTS)}, got {config.model!r}")
    conv = config.model == "convnet"
    if data is None:  # uint8 images: batches and evaluation chunks are normalized as they are used
        data = load_mnist(config.data, normalize=config.images == "float", flatten=not conv,
                          one_hot_label=not config.integer_labels, dtype=dtype)
    (x_train, t_train), (x_test, t_test) = data
    labels_train = t_train if config.integer_labels else t_train.argmax(axis=1)
    labels_test = t_test if config.integer_labels else t_test.argmax(axis=1)

    rng = np.random.default_rng(config.seed)
    # uint8 images are fed as the pixel values they are (cast to float, exactly); the net
    # divides by 255 itself, and the compiler folds that into the first layer's products.
    pixels = x_train.dtype == np.uint8
    if conv:
        if x_train.shape[1:] != (1, 28, 28):
            raise GraphcError(f"the convnet reads images of shape (1, 28, 28), got {x_train.shape[1:]}")
        net = simple_conv_net(hidden_size=config.hidden, integer_labels=config.integer_labels,
                              input_divisor=255 if pixels else None)
        params = init_simple_conv_params(rng, hidden_size=config.hidden, weight_init_std=config.weight_init_std,
                                         dtype=dtype)
    else:
        net = two_layer_net(784, config.hidden, 10, integer_labels=config.integer_labels,
                            input_divisor=255 if pixels else None)
        params = init_two_layer_params(rng, 784, config.hidden, 10, config.weight_init_std, dtype)
    step = TrainStep(net.loss, params, _optimizer(config))
    # a convnet's activations are 30 maps per image: smaller chunks keep them in cache
    evaluator = Evaluator(net.logits, max(config.eval_chunk // 8, 1) if conv else config.eval_chunk, dtype)

    train_size = len(x_train)
    iter_per_epoch = max(train_size // config.batch_size, 1)
    history = {"loss": [], "iteration": [], "train_acc": [], "test_acc": []}
    x_batch = np.empty((config.batch_size,) + x_train.shape[1:], dtype=dtype if pixels else x_train.dtype)
    # uint8 images are gathered into ``staging`` and cast into x_batch, which the step's
    # products have just read on every core (graphc.backends.numpy.casting says why that matters).
    staging = np.empty(x_batch.shape, np.uint8) if pixels else None
    # Every step: probing the dearer way every 64 steps costs a fourth of every 16th (the default).
    cast = RowCaster(x_batch.shape[1:], x_batch.dtype, probe_every=64) if pixels else None
    t_batch = np.empty((config.batch_size,) + t_train.shape[1:], dtype=t_train.dtype)
    checkpoint = Path(config.out) / "checkpoint.npz" if config.out and config.checkpoint_every > 0 else None
    first = 0
    if config.resume and checkpoint is not None and checkpoint.exists():
        first = _load_checkpoint(checkpoint, config, step, rng, history)
        log(f"resumed from {checkpoint} at iteration {first}")
    bar = _progress(config.iters, config.progress)
    if bar is not None and first:
        bar.update(first)
    start = time.perf_counter()
    train_acc = history["train_acc"][-1] if history["train_acc"] else float("nan")
    test_acc = history["test_acc"][-1] if history["test_acc"] else float("nan")
    for i in range(first, config.iters):
        batch = rng.integers(0, train_size, config.batch_size)
        # Into reused buffers.  mode="clip" because numpy buffers out= in the default
        # mode="raise" (2.5x slower); rng.integers(0, train_size) never leaves the range.
        if staging is None:
            np.take(x_train, batch, axis=0, out=x_batch, mode="clip")
        else:
            cast(np.take(x_train, batch, axis=0, out=staging, mode="clip"), x_batch)
        np.take(t_train, batch, axis=0, out=t_batch, mode="clip")
        loss = step(x=x_batch, t=t_batch)
        history["loss"].append(float(loss))
        last = i + 1 == config.iters
        if (i + 1) % iter_per_epoch == 0 or last:
            train_acc = evaluator.accuracy(params, x_train, labels_train)
            test_acc = evaluator.accuracy(params, x_test, labels_test)
            history["iteration"].append(i + 1)
            history["train_acc"].append(train_acc)
            history["test_acc"].append(test_acc)
            line = f"iter {i + 1:>6}  loss {float(loss):.4f}  train acc {train_acc:.4f}  test acc {test_acc:.4f}"
            if bar is not None:
                bar.set_postfix(train=f"{train_acc:.4f}", test=f"{test_acc:.4f}")
                bar.write(line)
            else:
                log(line)
        if checkpoint is not None and ((i + 1) % config.checkpoint_every == 0 or last):
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            _save_checkpoint(checkpoint, config, i + 1, step, rng, history)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    result = TrainResult(config, params, train_acc, test_acc, seconds, history)
    if config.out:
        _write_outputs(result, Path(config.out), log)
    return result


def _write_outputs(result: TrainResult, out: Path, log) -> None:
    from graphc.serialize import save_arrays

    out.mkdir(parents=True, exist_ok=True)
    save_arrays(out / "params.npz", result.params)
    record = {"config": asdict(result.config), "train_acc": result.train_acc, "test_acc": result.test_acc,
              "seconds": result.seconds, **result.history}
    (out / "history.json").write_text(json.dumps(record))
    log(f"wrote {out / 'params.npz'} and {out / 'history.json'}")
    if result.config.plot:
        try:
            plot_curves(result.history, out / "curves.png")
            log(f"wrote {out / 'curves.png'}")
        except ImportError:
            log("matplotlib is not installed: no plot (pip install 'graphc[train]')")


def plot_curves(history: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    loss = np.asarray(history["loss"])
    ax_loss.plot(np.arange(1, len(loss) + 1), loss, lw=0.5, alpha=0.5, label="batch loss")
    if len(loss) >= 100:
        smooth = np.convolve(loss, np.ones(100) / 100, mode="valid")
        ax_loss.plot(np.arange(100, len(loss) + 1), smooth, label="mean of 100")
    ax_loss.set(xlabel="iteration", ylabel="loss", title="training loss")
    ax_loss.legend()
    ax_acc.plot(history["iteration"], history["train_acc"], marker="o", label="train")
    ax_acc.plot(history["iteration"], history["test_acc"], marker="s", label="test")
    ax_acc.set(xlabel="iteration", ylabel="accuracy", title="accuracy", ylim=(0.8, 1.0))
    ax_acc.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
