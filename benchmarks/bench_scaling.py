#!/usr/bin/env python
"""How close graphc's training step gets to numpy's GEMM throughput as the problem grows.

An MLP built with graphc ops (``gc.relu(h @ W + b)`` per hidden layer, a last affine layer,
``gc.softmax_cross_entropy``), 784 inputs, 10 classes, trained with ``TrainStep`` + SGD.
From the base point (batch 100, width 50, depth 2 = the seed's net) one axis is swept at a time:

  batch  1, 10, 100, 1000, 10000
  width  50, 256, 1024, 4096       (every hidden layer)
  depth  2, 4, 8, 16, 32           (affine layers; depth 2 is 784-w-10)

For each point, graphc's step and "the same FLOPs as bare GEMMs" are timed interleaved: the
GEMMs a step needs at their shapes and layouts (forward h·W, weight grads hᵀ·dz, input grads
dz·Wᵀ for every layer but the first), np.matmul into preallocated outputs.

  gemm frac = t_gemm_only / t_graphc   (1.0 = graphc costs no more than its GEMMs)

    python benchmarks/bench_scaling.py            # about 30 s on an idle machine
    python benchmarks/bench_scaling.py --quick
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

N_IN, N_OUT = 784, 10
BASE = {"batch": 100, "width": 50, "depth": 2}
SWEEPS = {"batch": [1, 10, 100, 1000, 10000], "width": [50, 256, 1024, 4096], "depth": [2, 4, 8, 16, 32]}


def layer_sizes(width: int, depth: int) -> list[int]:
    return [N_IN] + [width] * (depth - 1) + [N_OUT]


def mlp(width: int, depth: int):
    """The graph: returns (graph, loss node)."""
    import graphc as gc

    g = gc.Graph(f"mlp_w{width}_d{depth}")
    x = g.input("x", ("n", N_IN))
    t = g.input("t", ("n", N_OUT))
    sizes = layer_sizes(width, depth)
    h = x
    for k in range(depth):
        W = g.param(f"W{k + 1}", (sizes[k], sizes[k + 1]))
        b = g.param(f"b{k + 1}", (sizes[k + 1],))
        z = h @ W + b
        h = gc.relu(z) if k < depth - 1 else z
    return g, gc.softmax_cross_entropy(h, t)


def init(width: int, depth: int, dtype, rng) -> dict:
    """He-scaled weights so activations neither vanish (denormals are slow) nor blow up at depth 32."""
    sizes = layer_sizes(width, depth)
    params = {}
    for k in range(depth):
        params[f"W{k + 1}"] = (rng.standard_normal((sizes[k], sizes[k + 1])) * np.sqrt(2.0 / sizes[k])).astype(dtype)
        params[f"b{k + 1}"] = np.zeros(sizes[k + 1], dtype)
    return params


class GemmOnly:
    """The step's GEMMs at their shapes and layouts, np.matmul into preallocated outputs.

    The first layer's two products read the same batch arrays, in the same turn, as graphc's
    step is fed (``inputs``): a batch read from memory costs more than one kept in cache.
    """

    def __init__(self, batch, width, depth, dtype, rng, inputs=None):
        sizes = layer_sizes(width, depth)
        r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
        self.inputs = list(inputs) if inputs is not None else [r(batch, sizes[0])]
        self.calls = []  # (a, b, out); a is None for the batch
        self.flops = 0
        for k in range(depth):
            i, o = sizes[k], sizes[k + 1]
            h, W, dz = r(batch, i), r(i, o), r(batch, o)
            if k == 0:
                h = None
            self.calls.append((h, W, np.empty((batch, o), dtype), False))         # forward  h·W
            self.calls.append((h, dz, np.empty((i, o), dtype), True))             # dW = hᵀ·dz
            self.flops += 2 * 2 * batch * i * o
            if k > 0:
                self.calls.append((dz, W.T, np.empty((batch, i), dtype), False))  # dh = dz·Wᵀ
                self.flops += 2 * batch * i * o

    def step(self, k=0):
        mm = np.matmul
        x = self.inputs[k % len(self.inputs)]
        for a, b, out, transpose in self.calls:
            a = x if a is None else a
            mm(a.T if transpose else a, b, out=out)


def measure_point(batch, width, depth, dtype, args, rng) -> dict:
    from graphc.optim import SGD, TrainStep

    t0 = time.perf_counter()
    g, loss = mlp(width, depth)
    params = init(width, depth, dtype, rng)
    step = TrainStep(loss, params, SGD(lr=args.lr))
    compile_s = time.perf_counter() - t0
    nb = 4
    xs = [rng.standard_normal((batch, N_IN)).astype(dtype) for _ in range(nb)]
    ts = [np.eye(N_OUT, dtype=dtype)[rng.integers(0, N_OUT, batch)] for _ in range(nb)]
    gemm = GemmOnly(batch, width, depth, dtype, rng, inputs=xs)

    def run_graphc(k):
        return step(x=xs[k % nb], t=ts[k % nb])

    def run_gemm(k):
        gemm.step(k)

    first = run_graphc(0)  # specialises (contraction paths) for these shapes
    for k in range(3):
        run_graphc(k), run_gemm(k)
    t1 = time.perf_counter()
    run_graphc(0)
    one = time.perf_counter() - t1
    steps = max(1, min(200, int(args.chunk_s / max(one, 1e-7))))  # steps per timed chunk
    rounds = max(3, min(args.rounds, int(args.point_s / max(2 * steps * one, 1e-9))))
    fns = {"graphc": run_graphc, "gemm": run_gemm}
    times = {k: [] for k in fns}
    others = []
    order = np.random.default_rng(1)
    for _ in range(rounds):
        gc.collect()
        with C.OtherLoad() as load:
            for name in order.permutation(list(fns)):
                C.settle()
                f = fns[name]
                t0 = time.perf_counter()
                for k in range(steps):
                    f(k)
                times[name].append((time.perf_counter() - t0) / steps * 1e6)
        others.append(load.cores)
    tg, tm = C.median(times["graphc"]), C.median(times["gemm"])
    busy = [c for c in others if c is not None]
    last = float(run_graphc(0))
    return {"batch": batch, "width": width, "depth": depth, "graphc_us": tg, "gemm_us": tm, "gemm_frac": tm / tg,
            "graphc_gflops": gemm.flops / tg / 1e3, "gemm_gflops": gemm.flops / tm / 1e3, "flops": gemm.flops,
            "n_gemms": len(gemm.calls), "rounds": rounds, "steps_per_chunk": steps, "compile_s": compile_s,
            "loss_first": float(first), "loss_last": last, "samples_us": times, "other_cores_per_round": others,
            "other_cores": C.median(busy) if busy else None}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer, shorter rounds; drops batch 10000 and width 4096")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--rounds", type=int, default=15, help="most interleaved rounds per point (default 15)")
    p.add_argument("--chunk-s", type=float, default=0.05, help="target seconds per timed chunk (default 0.05)")
    p.add_argument("--point-s", type=float, default=6.0, help="target timing seconds per point (default 6)")
    p.add_argument("--threads", type=int, default=C.THREADS, help="BLAS threads (default 2)")
    p.add_argument("--sweep", default="batch,width,depth", help="which sweeps (default batch,width,depth)")
    p.add_argument("--json", default=str(Path(__file__).with_suffix(".json")), help="where to write results")
    args = p.parse_args(argv)
    sweeps = {k: list(v) for k, v in SWEEPS.items() if k in args.sweep.split(",")}
    if args.quick:
        args.rounds, args.chunk_s, args.point_s = 3, 0.02, 0.5
        sweeps = {k: [v for v in vs if v not in (10000, 4096)] for k, vs in sweeps.items()}
    C.set_threads(args.threads)
    warning = C.busy_warning()
    if warning:
        print(warning)
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    results = {}
    for axis, values in sweeps.items():
        rows, res = [], []
        for v in values:
            point = {**BASE, axis: v}
            r = measure_point(point["batch"], point["width"], point["depth"], dtype, args, rng)
            res.append(r)
            rows.append((v, f"{r['graphc_us']:.1f}", f"{r['gemm_us']:.1f}", f"{r['gemm_frac']:.2f}",
                         f"{r['graphc_gflops']:.1f}", f"{r['gemm_gflops']:.1f}", r["n_gemms"], f"{r['compile_s']:.2f}",
                         f"{r['other_cores']:.2f}" if r["other_cores"] is not None else "n/a"))
        results[axis] = res
        fixed = ", ".join(f"{k} {v}" for k, v in BASE.items() if k != axis)
        print(f"sweep {axis} ({fixed}; {dtype.name}): median us/step")
        print(C.fmt_table([axis, "graphc us", "GEMMs us", "gemm frac", "graphc GF/s", "GEMM GF/s", "GEMMs",
                           "compile s", "others"], rows))
        print()
    total = time.perf_counter() - start
    print(f"total {total:.0f} s")
    record = {"benchmark": "bench_scaling", "args": vars(args), "base": BASE, "busy_warning": warning,
              "environment": C.environment(), "results": results, "total_s": total, "loadavg_end": os.getloadavg()}
    path = C.write_json(args.json, record)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
