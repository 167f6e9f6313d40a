"""Before and after: one benchmark script run alternately in two checkouts, paired per run.

Each run is its own process, started in the checkout being measured (its ``benchmarks/``
script imports that checkout's graphc), in the order A B A B ... with the order reversed
every other pair, so that both see the same machine states.  Every script measures graphc
against something in the same process (the hand-tuned numpy step, the bare GEMMs), and
that ratio is what is compared: it does not move with the machine's speed.

    python benchmarks/compare_checkouts.py BASE_DIR [HEAD_DIR] --pairs 3 -- bench_step.py --no-peers --rounds 10
    python benchmarks/compare_checkouts.py BASE_DIR --pairs 3 -- bench_full_run.py --repeats 1
    python benchmarks/compare_checkouts.py BASE_DIR --pairs 3 -- bench_compile.py --quick

(``git worktree add /tmp/base <commit>`` makes BASE_DIR.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def metrics(record: dict) -> dict:
    """The figures compared, by name, from one run's JSON."""
    kind = record["benchmark"]
    if kind == "bench_step":
        out = {}
        for r in record["results"]:
            out[f"{r['dtype']} graphc / numpy-hand (paired)"] = r["paired_ratio_to_numpy_hand"]["graphc"]
            out[f"{r['dtype']} graphc us/step"] = r["us_per_step"]["graphc"]["median"]
        return out
    if kind == "bench_full_run":
        g = record["summary"]["graphc"]
        return {"loop graphc / numpy-hand": g["ratio_to_numpy_hand"], "loop graphc s": g["loop_s"],
                "peak MiB": g["peak_rss_mib"], "process s": g["process_s"]}
    if kind == "bench_compile":
        out = {f"TrainStep ms, depth {r['depth']}": 1e3 * r["step_s"] for r in record["results"]}
        out["cold first compile ms"] = 1e3 * sum(record["cold_first"][k] for k in record["cold_first"]
                                                 if k.endswith("_s"))
        return out
    raise SystemExit(f"compare_checkouts: no metrics for benchmark {kind!r}")


def run(checkout: Path, script: str, args: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "run.json"
        subprocess.run([sys.executable, str(checkout / "benchmarks" / script), *args, "--json", str(out)],
                       cwd=checkout, check=True, stdout=subprocess.DEVNULL)
        return metrics(json.loads(out.read_text()))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base", type=Path, help="the checkout measured as 'before'")
    p.add_argument("head", type=Path, nargs="?", default=Path(__file__).resolve().parent.parent,
                   help="the checkout measured as 'after' (default: this one)")
    p.add_argument("--pairs", type=int, default=3)
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--" not in argv:
        p.error("name the benchmark script and its arguments after --")
    split = argv.index("--")
    args, bench = p.parse_args(argv[:split]), argv[split + 1:]
    if not bench:
        p.error("name the benchmark script after --")
    script, rest = bench[0], bench[1:]
    runs: dict[str, list[dict]] = {"base": [], "head": []}
    for k in range(args.pairs):
        order = ("base", "head") if k % 2 == 0 else ("head", "base")
        for which in order:
            runs[which].append(run(getattr(args, which).resolve(), script, rest))
            print(f"pair {k + 1}/{args.pairs}: {which} done", file=sys.stderr)
    print(f"{script} {' '.join(rest)}: {args.pairs} pairs, base {args.base}, head {args.head}")
    print(f"{'metric':44}  {'base (median, range)':>26}  {'head (median, range)':>26}  head/base")
    for name in runs["base"][0]:
        b = [r[name] for r in runs["base"]]
        h = [r[name] for r in runs["head"]]
        ratio = statistics.median(x / y for x, y in zip(h, b))

        def show(v):
            return f"{statistics.median(v):.3f} ({min(v):.3f}-{max(v):.3f})"
        print(f"{name:44}  {show(b):>26}  {show(h):>26}  {ratio:.3f}")


if __name__ == "__main__":
    main()
