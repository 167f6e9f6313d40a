#!/usr/bin/env python
"""Compile cost of graphc for MLPs of growing depth: time, graph size, memory, and whether it is linear.

For each depth (affine layers; the same MLP as bench_scaling.py, width 50), on a fresh graph each time:
  build s     declaring the graph (forward nodes)
  grad s      gc.grad(loss, params) alone (symbolic reverse mode)
  step s      TrainStep(loss, params, SGD) construction: its own grad + simplify + emit + exec
  1st call s  the first call: specialising (opt_einsum contraction paths) + one step
  fwd/all nodes  nodes reachable from the loss / from the loss and the gradients
  peak MiB    tracemalloc peak during TrainStep construction (a separate, traced run)
  us/node     step s / all nodes: flat when compile time grows linearly with graph size
The log-log slope of step time against node count is printed (1.0 = linear).
Times are medians of --repeats runs in one process (process-level caches stay warm after the
first depth; the very first compile, which warms sympy, is reported separately).

    python benchmarks/bench_compile.py            # depths 2 4 8 16 32, 5 repeats
    python benchmarks/bench_compile.py --quick
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from bench_scaling import init, mlp  # noqa: E402


def count_nodes(roots) -> int:
    """Nodes reachable from ``roots`` through ``.inputs`` (iterative: deep graphs are fine)."""
    seen, stack = set(), list(roots)
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        stack.extend(n.inputs)
    return len(seen)


def one(depth: int, width: int, traced: bool = False) -> dict:
    import graphc as gc
    from graphc.optim import SGD, TrainStep

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    g, loss = mlp(width, depth)
    t1 = time.perf_counter()
    params_nodes = g.params
    grads = gc.grad(loss, params_nodes)
    t2 = time.perf_counter()
    fwd_nodes, all_nodes = count_nodes([loss]), count_nodes([loss, *grads])

    g2, loss2 = mlp(width, depth)  # fresh graph: TrainStep does its own grad
    params = init(width, depth, np.float32, rng)
    if traced:
        tracemalloc.start()
    t3 = time.perf_counter()
    step = TrainStep(loss2, params, SGD(lr=0.01))
    t4 = time.perf_counter()
    peak = None
    if traced:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    x = rng.standard_normal((100, 784)).astype(np.float32)
    t = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 100)]
    t5 = time.perf_counter()
    step(x=x, t=t)
    t6 = time.perf_counter()
    src = getattr(step, "source", "") or ""
    return {"depth": depth, "build_s": t1 - t0, "grad_s": t2 - t1, "step_s": t4 - t3, "first_call_s": t6 - t5,
            "fwd_nodes": fwd_nodes, "all_nodes": all_nodes, "source_lines": src.count("\n"), "peak_mib": peak}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 repeat, depths 2 4 8 16 32")
    p.add_argument("--depths", default="2,4,8,16,32")
    p.add_argument("--width", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default=str(Path(__file__).with_suffix(".json")), help="where to write results")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats = 1
    depths = [int(d) for d in args.depths.split(",")]
    warning = C.busy_warning()
    if warning:
        print(warning)

    cold = one(depths[0], args.width)  # the first compile in the process warms sympy and friends
    rows, results = [], []
    for d in depths:
        runs = [one(d, args.width) for _ in range(args.repeats)]
        traced = one(d, args.width, traced=True)
        r = {k: C.median([x[k] for x in runs]) if k.endswith("_s") else runs[0][k] for k in runs[0]}
        r["peak_mib"] = traced["peak_mib"]
        r["us_per_node"] = r["step_s"] / r["all_nodes"] * 1e6
        r["runs"] = runs
        results.append(r)
        rows.append((d, r["fwd_nodes"], r["all_nodes"], r["source_lines"], f"{r['build_s'] * 1e3:.1f}",
                     f"{r['grad_s'] * 1e3:.1f}", f"{r['step_s'] * 1e3:.1f}", f"{r['first_call_s'] * 1e3:.1f}",
                     f"{r['peak_mib']:.2f}", f"{r['us_per_node']:.0f}"))
    print(f"MLP width {args.width}; medians of {args.repeats} compile(s) per depth, times in ms")
    print(C.fmt_table(["depth", "fwd nodes", "all nodes", "src lines", "build", "grad", "TrainStep", "1st call",
                       "peak MiB", "us/node"], rows))
    nodes = np.array([r["all_nodes"] for r in results], float)
    slope = {}
    for key in ("grad_s", "step_s", "first_call_s", "peak_mib"):
        ys = np.array([r[key] for r in results], float)
        slope[key] = float(np.polyfit(np.log(nodes), np.log(ys), 1)[0]) if len(nodes) > 1 else float("nan")
    print(f"log-log slope vs nodes (1.0 = linear): grad {slope['grad_s']:.2f}, TrainStep {slope['step_s']:.2f}, "
          f"1st call {slope['first_call_s']:.2f}, peak memory {slope['peak_mib']:.2f}")
    print(f"us/node, deepest / shallowest: {results[-1]['us_per_node'] / results[0]['us_per_node']:.2f}; "
          f"first compile in the process (depth {depths[0]}, cold caches): build+grad+TrainStep+1st call "
          f"{(cold['build_s'] + cold['grad_s'] + cold['step_s'] + cold['first_call_s']) * 1e3:.0f} ms")
    record = {"benchmark": "bench_compile", "args": vars(args), "busy_warning": warning,
              "environment": C.environment(), "cold_first": cold, "results": results, "loglog_slope": slope,
              "loadavg_end": os.getloadavg()}
    path = C.write_json(args.json, record)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
