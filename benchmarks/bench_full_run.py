#!/usr/bin/env python
"""The seed's whole MNIST schedule, end to end: graphc vs a hand-tuned numpy run.

Schedule (graphc.train.train_mnist's): 784-50-10 two-layer net, weights 0.01·randn from
``default_rng(seed)``, 10,000 SGD steps (lr 0.1) on batches of 100 drawn with
``rng.integers`` from the same generator, full train and test accuracy every 600
iterations and after the last.  Every run is its own subprocess (``python -c``), so each
run's peak resident memory is that child's ``ru_maxrss`` (read with ``os.wait4``).

  graphc        graphc.train.train_mnist(TrainConfig(out=None, progress=False)): the defaults,
                images kept as the uint8 the files store, cast per batch/chunk, /255 in the net
  numpy-hand    the same schedule with the hand-tuned numpy step of bench_step.py
  graphc-float  train_mnist with images="float": all images normalized to float at load, as the hand run
  --peers adds  seed-layers (the seed's layer classes), torch-eager, jax-jit (when installed)
  load-only     a child that only imports numpy+graphc and loads MNIST: the memory baseline

Runs alternate (A B A B ..., order reversed every repeat); "loop s" is the training loop
alone (after loading and set-up, as train_mnist's own timer), ratios are paired per repeat.

    python benchmarks/bench_full_run.py                 # 3 repeats of the 10,000-step run
    python benchmarks/bench_full_run.py --quick         # 1,000 steps, 1 repeat
    python benchmarks/bench_full_run.py --peers         # also the seed's classes, torch, jax
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _common as C  # noqa: E402

MARK = "@@bench_full_run@@"
BASE = ("graphc", "numpy-hand", "graphc-float")
PEERS = ("seed-layers", "torch-eager", "jax-jit")


# --------------------------------------------------------------------------- in the child
# Evaluation chunk for every implementation: the fastest for the hand-tuned numpy predict
# and graphc's evaluator alike on this machine (2,000 rows: the chunk's activations stay in cache).
EVAL_CHUNK = 2_000


def _accuracy(impl, x, labels, chunk=EVAL_CHUNK) -> float:
    correct = 0
    for s in range(0, len(x), chunk):
        correct += int(np.count_nonzero(np.asarray(impl.predict(x[s:s + chunk])) == labels[s:s + chunk]))
    return correct / len(x)


def _run_reference(name: str, iters: int, dtype: str, seed: int, batch_size=100, lr=0.1) -> dict:
    from graphc.datasets import load_mnist
    from graphc.models import init_two_layer_params

    classes = {"numpy-hand": C.NumpyHand, "seed-layers": C.SeedStep}
    if name == "torch-eager":
        C.available_peers(("torch",))
        classes[name] = C.TorchStep
    elif name == "jax-jit":
        C.available_peers(("jax",))
        classes[name] = C.JaxStep
    dt = np.dtype(dtype)
    (x_train, t_train), (x_test, t_test) = load_mnist(normalize=True, flatten=True, one_hot_label=True, dtype=dt)
    labels_train, labels_test = t_train.argmax(axis=1), t_test.argmax(axis=1)
    rng = np.random.default_rng(seed)
    params = init_two_layer_params(rng, 784, 50, 10, 0.01, dt)
    impl = classes[name](params, lr=lr, batch=batch_size)
    train_size = len(x_train)
    iter_per_epoch = max(train_size // batch_size, 1)
    losses = []
    train_acc = test_acc = float("nan")
    # Batches gathered into reused buffers, as graphc's loop does (not x_train[batch], which allocates).
    x_batch = np.empty((batch_size,) + x_train.shape[1:], dt)
    t_batch = np.empty((batch_size,) + t_train.shape[1:], dt)
    start = time.perf_counter()
    for i in range(iters):
        batch = rng.integers(0, train_size, batch_size)
        np.take(x_train, batch, axis=0, out=x_batch, mode="clip")
        np.take(t_train, batch, axis=0, out=t_batch, mode="clip")
        loss = impl.step(impl.prepare(x_batch, t_batch))
        losses.append(float(loss))
        if (i + 1) % iter_per_epoch == 0 or i + 1 == iters:
            train_acc = _accuracy(impl, x_train, labels_train)
            test_acc = _accuracy(impl, x_test, labels_test)
    seconds = time.perf_counter() - start
    return {"loop_s": seconds, "train_acc": train_acc, "test_acc": test_acc, "final_loss": losses[-1]}


def child(name: str, iters: int, dtype: str, seed: int, threads: int = C.THREADS) -> None:
    """Entry point of one run's subprocess: prints one JSON line after MARK."""
    C.set_threads(threads)
    if name in ("graphc", "graphc-float"):
        from graphc.train import TrainConfig, train_mnist

        config = TrainConfig(iters=iters, dtype=dtype, seed=seed, out=None, progress=False, plot=False)
        if name == "graphc-float":
            config.images = "float"
        res = train_mnist(config, log=lambda line: None)
        out = {"loop_s": res.seconds, "train_acc": res.train_acc, "test_acc": res.test_acc,
               "final_loss": res.history["loss"][-1]}
    elif name == "load-only":
        import graphc  # noqa: F401 - the same imports as a graphc run, for a fair baseline
        from graphc.datasets import load_mnist

        load_mnist(normalize=True, flatten=True, one_hot_label=True, dtype=np.dtype(dtype))
        out = {}
    else:
        out = _run_reference(name, iters, dtype, seed)
    out.update(_proc_memory())
    print(MARK + json.dumps(out), flush=True)


def _proc_memory() -> dict:
    """This process's peak (VmHWM) and current (VmRSS) resident memory, from /proc (Linux only).

    Called after the run returned: its data are freed, so VmRSS is the imports plus what the run keeps."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines()
                      if line.startswith(("VmHWM", "VmRSS")))
        return {"vm_hwm_mib": int(fields["VmHWM"].split()[0]) / 1024,
                "vm_rss_after_mib": int(fields["VmRSS"].split()[0]) / 1024}
    except (OSError, KeyError, ValueError):
        return {}


# --------------------------------------------------------------------------- in the parent
def run_child(name: str, iters: int, dtype: str, seed: int, threads: int) -> dict:
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import bench_full_run as b; "
            f"b.child({name!r}, {iters}, {dtype!r}, {seed}, {threads})")
    with tempfile.TemporaryFile(mode="w+") as out:
        load = C.OtherLoad().__enter__()
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not all children's
        wall = time.perf_counter() - t0
        load.close(minus_s=usage.ru_utime + usage.ru_stime)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    lines = [ln for ln in text.splitlines() if ln.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"bench_full_run: the {name} run failed (exit {proc.returncode}):\n{text[-3000:]}")
    res = json.loads(lines[-1][len(MARK):])
    res["process_s"] = wall
    res["other_cores"] = load.cores  # cores other processes kept busy during this run
    # ru_maxrss of this one child (Linux: KiB).  It also counts the pre-exec copy of this parent,
    # so the parent stays small (it never imports torch or jax); vm_hwm_mib is the child's own view.
    res["peak_rss_mib"] = usage.ru_maxrss / 1024
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1,000 steps, 1 repeat")
    p.add_argument("--iters", type=int, default=None, help="training steps (default 10,000; --quick 1,000)")
    p.add_argument("--repeats", type=int, default=None, help="paired repeats (default 3; --quick 1)")
    p.add_argument("--peers", action="store_true", help="also the seed's layer classes, torch and jax (if installed)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=C.THREADS, help="threads for BLAS, torch and XLA (default 2)")
    p.add_argument("--json", default=str(Path(__file__).with_suffix(".json")), help="where to write results")
    args = p.parse_args(argv)
    iters = args.iters or (1_000 if args.quick else 10_000)
    repeats = args.repeats or (1 if args.quick else 3)
    if not os.environ.get("GRAPHC_DATA"):
        print("note: GRAPHC_DATA is not set; the runs look for MNIST in graphc's cache")
    warning = C.busy_warning()
    if warning:
        print(warning)

    names = list(BASE)
    versions = {}
    if args.peers:
        names.append("seed-layers")
        for mod, impl in (("torch", "torch-eager"), ("jax", "jax-jit")):
            # Only look: importing torch/jax here would inflate every child's ru_maxrss (see run_child).
            if importlib.util.find_spec(mod) is not None:
                names.append(impl)
                versions[mod] = importlib.metadata.version(mod)
            else:
                print(f"note: {mod} is not installed; {impl} is skipped")

    print(f"{iters} steps, {args.dtype}, seed {args.seed}, {repeats} repeat(s), runs alternate: {', '.join(names)}")
    baseline = run_child("load-only", iters, args.dtype, args.seed, args.threads)
    runs = {n: [] for n in names}
    for rep in range(repeats):
        for name in (names if rep % 2 == 0 else names[::-1]):
            res = run_child(name, iters, args.dtype, args.seed, args.threads)
            runs[name].append(res)
            print(f"  repeat {rep + 1} {name:<12} loop {res['loop_s']:7.2f} s  process {res['process_s']:6.2f} s  "
                  f"peak {res['peak_rss_mib']:6.0f} MiB  test acc {res['test_acc']:.4f}  "
                  f"others {res['other_cores'] if res['other_cores'] is not None else float('nan'):.2f} cores",
                  flush=True)

    base = runs["numpy-hand"]
    summary = {}
    rows = []

    def quiet(r):
        return r.get("other_cores") is not None and r["other_cores"] < C.QUIET_CORES

    for name in names:
        rs = runs[name]
        ratio = C.median([r["loop_s"] / b["loop_s"] for r, b in zip(rs, base)])
        q_loop = [r["loop_s"] for r in rs if quiet(r)]
        q_ratio = [r["loop_s"] / b["loop_s"] for r, b in zip(rs, base) if quiet(r) and quiet(b)]
        s = {"loop_s": C.median([r["loop_s"] for r in rs]), "ratio_to_numpy_hand": ratio,
             "quiet_runs": len(q_loop), "quiet_loop_s": C.median(q_loop) if q_loop else None,
             "quiet_pairs": len(q_ratio), "quiet_ratio_to_numpy_hand": C.median(q_ratio) if q_ratio else None,
             "process_s": C.median([r["process_s"] for r in rs]),
             "peak_rss_mib": C.median([r["peak_rss_mib"] for r in rs]),
             "rss_after_mib": C.median([r.get("vm_rss_after_mib", float("nan")) for r in rs]),
             "train_acc": rs[-1]["train_acc"], "test_acc": rs[-1]["test_acc"], "final_loss": rs[-1]["final_loss"]}
        summary[name] = s
        rows.append((name, f"{s['loop_s']:.2f}", f"{ratio:.2f}",
                     f"{s['quiet_loop_s']:.2f} ({len(q_loop)})" if q_loop else "n/a",
                     f"{s['quiet_ratio_to_numpy_hand']:.2f} ({len(q_ratio)})" if q_ratio else "n/a",
                     f"{s['process_s']:.2f}", f"{s['peak_rss_mib']:.0f}",
                     f"{s['rss_after_mib']:.0f}", f"{s['train_acc']:.4f}", f"{s['test_acc']:.4f}",
                     f"{s['final_loss']:.4f}"))
    rows.append(("load-only (baseline)", "", "", "", "", f"{baseline['process_s']:.2f}", f"{baseline['peak_rss_mib']:.0f}",
                 f"{baseline.get('vm_rss_after_mib', float('nan')):.0f}", "", "", ""))
    print()
    print(f"MNIST two-layer, {iters} steps + accuracy every 600, {args.dtype}: medians of {repeats} run(s)")
    print(C.fmt_table(["impl", "loop s", "x numpy-hand", "quiet loop s", "quiet x", "process s", "peak MiB",
                       "after MiB", "train acc", "test acc", "last loss"], rows))
    print(f"quiet: runs during which other processes used < {C.QUIET_CORES} cores (count in parentheses; "
          "'quiet x' pairs only runs that were both quiet)")
    record = {"benchmark": "bench_full_run", "args": vars(args), "iters": iters, "repeats": repeats,
              "busy_warning": warning, "environment": {**C.environment(), **versions, "threads": args.threads},
              "summary": summary, "runs": runs, "load_only": baseline, "loadavg_end": os.getloadavg()}
    path = C.write_json(args.json, record)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
