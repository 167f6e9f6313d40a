#!/usr/bin/env python
"""Per-step time of one MNIST two-layer training step (forward + backward + SGD update).

Implementations (same init, same batches, measured interleaved in one process; each timed
chunk follows 200 ms of untimed steps of the same implementation, so that no other
library's worker threads are still spinning on the cores):
  graphc            graphc.optim.TrainStep (compiled forward+backward+in-place update)
  numpy-hand        hand-tuned numpy: preallocated buffers, out=, exactly 5 GEMMs, fused CE grad
  seed-layers       the seed's Affine/Relu/CEE_Softmax classes + ``params[key] -= lr*grad[key]``
  opt_einsum-naive  numpy with one opt_einsum contract_expression per product, no buffers
  torch-eager       PyTorch autograd, manual forward, SGD under no_grad (if torch is installed)
  jax-jit           jax.jit of value_and_grad + SGD, params donated (if jax is installed)
and a floor estimate: the five GEMMs alone (np.matmul into preallocated outputs, timed in
the same rounds) + 0.4 µs per other numpy call of the hand-tuned step.

Before timing, one float64 step of every implementation is checked against numpy-hand
(loss and updated params, rtol 1e-8); graphc, numpy-hand and torch must agree or the
benchmark stops.

    python benchmarks/bench_step.py            # 30 rounds x 50 steps, float32 and float64
    python benchmarks/bench_step.py --quick    # a smoke run
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

OTHER_CALL_US = 0.4
MUST_AGREE = ("graphc", "numpy-hand", "torch-eager")


def _close(a, b, rtol):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = float(np.max(np.abs(b))) or 1.0
    err = float(np.max(np.abs(a - b) / (np.abs(b) + 1e-12 * scale)))
    return bool(np.allclose(a, b, rtol=rtol, atol=1e-12 * scale)), err


def verify(x, t, peers, batch, lr, steps=3, log=print) -> dict:
    """Run ``steps`` float64 steps of every impl from the same init; compare with numpy-hand."""
    params = C.init_params(0, np.float64)
    impls = C.make_impls(params, lr, batch, peers)
    rng = np.random.default_rng(7)
    idx = [rng.integers(0, len(x), batch) for _ in range(steps)]
    batches = [(x[i].astype(np.float64), t[i].astype(np.float64)) for i in idx]
    out = {}
    for impl in impls:
        losses = [float(impl.step(impl.prepare(*b))) for b in batches]
        impl.sync()
        out[impl.name] = (losses, {k: np.asarray(v) for k, v in impl.params().items()})
    ref_losses, ref_params = out["numpy-hand"]
    report = {}
    failed = []
    for name, (losses, ps) in out.items():
        # The seed's loss is -log(y + 1e-7): up to ~1e-6 away from the exact loss; its gradient is exact.
        loss_rtol = 1e-5 if name == "seed-layers" else 1e-8
        loss_ok, loss_err = _close(losses, ref_losses, loss_rtol)
        param_res = {k: _close(ps[k], ref_params[k], 1e-8) for k in C.PARAM_NAMES}
        ok = loss_ok and all(r[0] for r in param_res.values())
        report[name] = {"ok": ok, "loss_rtol": loss_rtol, "loss_max_rel_err": loss_err,
                        "param_max_rel_err": max(r[1] for r in param_res.values()), "losses": losses}
        if not ok:
            failed.append(name)
    rows = [(n, "ok" if r["ok"] else "MISMATCH", f"{r['loss_max_rel_err']:.1e}", f"{r['param_max_rel_err']:.1e}")
            for n, r in report.items()]
    log(f"check: {steps} float64 steps from one init vs numpy-hand (params rtol 1e-8)")
    log(C.fmt_table(["impl", "result", "loss rel err", "param rel err"], rows))
    log("")
    bad = [n for n in failed if n in MUST_AGREE]
    if bad:
        raise SystemExit(f"bench_step: {bad} disagree with numpy-hand; not timing a wrong implementation")
    return {"steps": steps, "results": report, "failed": failed}


def measure(x, t, dtype, peers, args, log=print) -> dict:
    params = C.init_params(0, dtype)
    impls = C.make_impls(params, args.lr, args.batch, peers)
    impls.append(C.GemmOnly(params, batch=args.batch))
    rng = np.random.default_rng(args.seed)
    idx = rng.integers(0, len(x), (args.steps, args.batch))
    raw = [(np.ascontiguousarray(x[i], dtype=dtype), np.ascontiguousarray(t[i], dtype=dtype)) for i in idx]
    prepared = {impl.name: [impl.prepare(*b) for b in raw] for impl in impls}

    def chunk(impl):
        bs = prepared[impl.name]
        t0 = time.perf_counter()
        for b in bs:
            impl.step(b)
        impl.sync()
        return (time.perf_counter() - t0) / len(bs)

    def lead_in(impl):
        # Every library keeps worker threads spinning after its last call (numpy's OpenBLAS for
        # about 100 ms), and on two cores a spinning thread takes one from whoever runs next: after
        # a 5 ms pause jax-jit's float64 step measured 419 us behind numpy-hand and 306 behind
        # itself.  Running the same implementation untimed first lets the previous library's
        # threads go to sleep and brings this one's up, as in a training loop that runs it alone.
        end = time.perf_counter() + args.lead_ms / 1e3
        while time.perf_counter() < end:
            chunk(impl)

    for _ in range(args.warmup):
        for impl in impls:
            chunk(impl)
    times = {impl.name: [] for impl in impls}
    others = []  # cores other processes used during each round
    order_rng = np.random.default_rng(args.seed + 1)
    for _ in range(args.rounds):
        gc.collect()
        with C.OtherLoad() as load:
            for k in order_rng.permutation(len(impls)):
                impl = impls[k]
                lead_in(impl)
                times[impl.name].append(chunk(impl) * 1e6)
        others.append(load.cores)

    stats = {name: C.quantiles(ts) for name, ts in times.items()}
    quiet = [k for k, c in enumerate(others) if c is not None and c < C.QUIET_CORES]
    quiet_med = {name: (C.median([ts[k] for k in quiet]) if len(quiet) >= 3 else None) for name, ts in times.items()}
    qm = lambda name: f"{quiet_med[name]:.1f}" if quiet_med[name] is not None else "n/a"  # noqa: E731
    base = stats["numpy-hand"]["median"]
    gemm = stats.pop("gemm-only")
    n_other = C.NumpyHand.N_OTHER
    floor = gemm["median"] + OTHER_CALL_US * n_other
    # Paired: the median over rounds of this round's time / numpy-hand's in the same round.  When the
    # machine changes speed during the run, each impl's median can land in a different state; the
    # paired ratio compares times taken a few milliseconds apart.
    hand_us = times["numpy-hand"]
    floor_us = [g + OTHER_CALL_US * n_other for g in times["gemm-only"]]
    paired = {name: C.median([a / b for a, b in zip(ts, hand_us)]) for name, ts in times.items()}
    rows = []
    for name, s in stats.items():
        rows.append((name, f"{s['median']:.1f}", f"{s['p25']:.1f}-{s['p75']:.1f}", f"{s['min']:.1f}", qm(name),
                     f"{s['median'] / base:.2f}", f"{paired[name]:.2f}"))
    rows.append(("5 GEMMs alone (np.matmul)", f"{gemm['median']:.1f}", f"{gemm['p25']:.1f}-{gemm['p75']:.1f}",
                 f"{gemm['min']:.1f}", qm("gemm-only"), f"{gemm['median'] / base:.2f}", f"{paired['gemm-only']:.2f}"))
    rows.append((f"floor: GEMMs + {n_other} x {OTHER_CALL_US} us", f"{floor:.1f}", "", "",
                 f"{quiet_med['gemm-only'] + OTHER_CALL_US * n_other:.1f}" if quiet_med["gemm-only"] else "n/a",
                 f"{floor / base:.2f}", f"{C.median([f / b for f, b in zip(floor_us, hand_us)]):.2f}"))
    graphc_us = times["graphc"]
    peers_paired = {name: C.median([a / g for a, g in zip(times[name], graphc_us)])
                    for name in ("torch-eager", "jax-jit") if name in times}
    hand = next(i for i in impls if i.name == "numpy-hand")
    log(f"{np.dtype(dtype).name}, batch {args.batch}: {args.rounds} rounds x {args.steps} steps, "
        "median us/step (order shuffled each round)")
    log(C.fmt_table(["impl", "us/step", "p25-p75", "min", "quiet med", "x numpy-hand", "paired x"], rows))
    busy = [c for c in others if c is not None]
    if busy:
        log(f"other processes used {C.median(busy):.2f} cores (median over rounds); {len(quiet)}/{len(others)} "
            f"rounds were quiet (< {C.QUIET_CORES} cores): 'quiet med' is the median over those")
    over_floor = C.median([g / f for g, f in zip(graphc_us, floor_us)])
    log(f"graphc / floor = {stats['graphc']['median'] / floor:.2f} (paired {over_floor:.2f}); "
        f"numpy-hand GEMM functions: {hand.gemm_choice}")
    if peers_paired:
        log("paired, peer / graphc: " + ", ".join(f"{n} {r:.2f}x" for n, r in peers_paired.items()))
    log("")
    return {"dtype": np.dtype(dtype).name, "us_per_step": stats, "gemm_only": gemm, "floor_us": floor,
            "floor_other_calls": n_other, "other_call_us": OTHER_CALL_US,
            "ratio_to_numpy_hand": {n: s["median"] / base for n, s in stats.items()},
            "paired_ratio_to_numpy_hand": paired, "paired_peer_over_graphc": peers_paired,
            "paired_graphc_over_floor": over_floor,
            "numpy_hand_gemm_choice": hand.gemm_choice, "samples_us": times, "other_cores_per_round": others,
            "quiet_rounds": quiet, "quiet_median_us": quiet_med}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 5 rounds x 20 steps")
    p.add_argument("--rounds", type=int, default=30, help="rounds; each runs every impl once (default 30)")
    p.add_argument("--steps", type=int, default=50, help="steps per impl per round (default 50)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    p.add_argument("--lead-ms", type=float, default=200.0,
                   help="untimed steps of an implementation before each of its timed chunks, in ms (default 200)")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--dtypes", default="float32,float64", help="comma-separated (default float32,float64)")
    p.add_argument("--no-peers", action="store_true", help="skip torch and jax even if installed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=C.THREADS, help="threads for BLAS, torch and XLA (default 2)")
    p.add_argument("--json", default=str(Path(__file__).with_suffix(".json")), help="where to write results")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.warmup = min(args.rounds, 5), min(args.steps, 20), 1

    C.set_threads(args.threads)
    warning = C.busy_warning()
    if warning:
        print(warning)
    peers = {} if args.no_peers else C.available_peers()
    skipped = [n for n in ("torch", "jax") if n not in peers]
    if skipped:
        print(f"note: {', '.join(skipped)} not {'used' if args.no_peers else 'installed'}; those columns are skipped")
    x, t, source = C.mnist_or_synthetic(np.float32)
    print(f"data: {source}; threads: {C.THREADS}")
    record = {"benchmark": "bench_step", "args": vars(args), "data": source, "busy_warning": warning,
              "environment": C.environment(peers)}
    record["check"] = verify(x, t, peers, args.batch, args.lr)
    record["results"] = [measure(x, t, np.dtype(d), peers, args) for d in args.dtypes.split(",")]
    record["loadavg_end"] = os.getloadavg()
    path = C.write_json(args.json, record)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
