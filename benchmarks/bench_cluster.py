"""Data-parallel graphc on a dask LocalCluster: sync overhead, 1 -> 2 worker speedup, full-set evaluation.

* overhead: one synchronous step of the 784-50-10 net on a batch of 1 per worker (the work is
  nothing; what is left is scatter the params, run the rank tasks, sum, gather, update) against
  the same compiled step in this process;
* speedup: ``2·t(1 worker) / t(2 workers)`` of a data-parallel step with the per-worker batch
  fixed (each worker single-threaded; two workers do twice the rows per step), over per-worker
  batches and hidden widths; the crossover is the smallest batch where two workers gain;
* evaluation: accuracy over MNIST's 70,000 images (uint8, chunks of 10,000 rows read from npy
  files by the workers) on two workers, against the numpy ``Evaluator`` in this process
  (2 BLAS threads), and with the chunks already in the workers' memory (``persist``).

Rounds alternate between the implementations and the table shows medians and [min, max].
The machine's 2 cores are shared with other processes: ratios are noisy (see the load warning).

    python benchmarks/bench_cluster.py            # ~3-5 min
    python benchmarks/bench_cluster.py --quick    # seconds: a smoke run
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time

import numpy as np

from _common import HERE, busy_warning, environment, fmt_table, median, set_threads, write_json


def _trainers(clients, net, hidden, batch, directory, lr=0.1):
    from graphc.distributed import DataParallelTrainer
    from graphc.models import init_two_layer_params
    from graphc.optim import SGD

    out = []
    for ranks, client in clients.items():
        params = init_two_layer_params(np.random.default_rng(0), 784, hidden, 10, 0.01, np.float32)
        out.append(DataParallelTrainer(client, net.loss, params, SGD(lr=lr), directory, batch, ranks=ranks,
                                       reduce="mean"))
    return out


def _time_steps(trainer, steps):
    start = time.perf_counter()
    trainer.run(steps)
    return (time.perf_counter() - start) / steps


def speedup(clients, directory, batches, widths, rounds, budget_s):
    from graphc.models import two_layer_net

    rows = []
    for hidden in widths:
        net = two_layer_net(784, hidden, 10, integer_labels=True, input_divisor=255)
        for batch in batches:
            one, two = _trainers(clients, net, hidden, batch, directory)
            for t in (one, two):
                t.run(2)  # lead-in: shards loaded, steps compiled and specialised on the workers
            probe = _time_steps(two, 1)
            steps = max(1, min(20, int(budget_s / max(probe, 1e-4) / (2 * rounds))))
            t1, t2 = [], []
            for _ in range(rounds):
                t1.append(_time_steps(one, steps))
                t2.append(_time_steps(two, steps))
            ratios = [2 * a / b for a, b in zip(t1, t2)]
            rows.append({"hidden": hidden, "batch_per_worker": batch, "steps": steps, "t1_s": t1, "t2_s": t2,
                         "speedup": ratios})
            print(f"  hidden {hidden:>5}  batch/worker {batch:>6}  1 worker {median(t1) * 1e3:8.1f} ms  "
                  f"2 workers {median(t2) * 1e3:8.1f} ms  speedup {median(ratios):.2f} "
                  f"[{min(ratios):.2f}, {max(ratios):.2f}]", flush=True)
            for t in (one, two):
                t.close()
    return rows


def overhead(clients, directory, rounds):
    from graphc.models import init_two_layer_params, two_layer_net
    from graphc.optim import SGD, TrainStep

    net = two_layer_net(784, 50, 10, integer_labels=True, input_divisor=255)
    trainers = _trainers(clients, net, 50, 1, directory)
    params = init_two_layer_params(np.random.default_rng(0), 784, 50, 10, 0.01, np.float32)
    local = TrainStep(net.loss, params, SGD(lr=0.1))
    x, t = np.zeros((1, 784), np.float32), np.zeros(1, np.int64)
    for tr in trainers:
        tr.run(3)
    times = {1: [], 2: [], "local": []}
    for _ in range(rounds):
        for tr in trainers:
            times[tr.ranks].append(_time_steps(tr, 20))
        start = time.perf_counter()
        for _ in range(200):
            local(x=x, t=t)
        times["local"].append((time.perf_counter() - start) / 200)
    for tr in trainers:
        tr.close()
    return times


def evaluation(client, rounds, tmp):
    import dask

    from graphc.datasets import load_mnist
    from graphc.distributed import accuracy, open_chunks, save_chunks
    from graphc.evaluate import Evaluator
    from graphc.models import init_two_layer_params, two_layer_net

    (x, t), (xt, tt) = load_mnist(normalize=False, download=False)
    x, labels = np.concatenate([x, xt]), np.concatenate([t, tt])
    arrays = open_chunks(save_chunks(os.path.join(tmp, "mnist"), {"x": x, "t": labels}, rows=10_000))
    net = two_layer_net(784, 50, 10, integer_labels=True, input_divisor=255)
    params = init_two_layer_params(np.random.default_rng(0), 784, 50, 10, 0.1, np.float32)
    evaluator = Evaluator(net.logits, 2_000)
    persisted = dask.persist(arrays["x"], arrays["t"])
    want = evaluator.accuracy(params, x, labels)
    got = accuracy(client, net.logits, params, arrays["x"], arrays["t"])
    assert got == want, (got, want)
    times = {"numpy Evaluator": [], "cluster, from files": [], "cluster, persisted": []}
    for _ in range(rounds):
        start = time.perf_counter()
        evaluator.accuracy(params, x, labels)
        times["numpy Evaluator"].append(time.perf_counter() - start)
        start = time.perf_counter()
        accuracy(client, net.logits, params, arrays["x"], arrays["t"])
        times["cluster, from files"].append(time.perf_counter() - start)
        start = time.perf_counter()
        accuracy(client, net.logits, params, *persisted)
        times["cluster, persisted"].append(time.perf_counter() - start)
    return {"rows": len(x), "accuracy": got, "times_s": times}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smoke run: small grid, few rounds")
    ap.add_argument("--json", default=str(HERE / "bench_cluster.json"))
    args = ap.parse_args()
    from graphc.distributed import connect, save_chunks

    set_threads(2)
    batches = [100, 1000] if args.quick else [100, 1_000, 5_000, 10_000, 20_000]
    widths = [50] if args.quick else [50, 256, 1024]
    rounds, budget = (2, 1.0) if args.quick else (5, 6.0)
    warning = busy_warning()
    if warning:
        print(warning)
    record = {"environment": environment(), "load_before": os.getloadavg()[0]}
    clients = {1: connect(workers=1), 2: connect(workers=2)}
    for c in clients.values():
        logging.getLogger("distributed").setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rng = np.random.default_rng(0)
            most = max(batches)
            x = rng.integers(0, 256, (2 * most, 784), dtype=np.uint8)
            t = rng.integers(0, 10, 2 * most)
            directory = save_chunks(os.path.join(tmp, "train"), {"x": x, "t": t}, rows=most)
            print("sync overhead (batch 1 per worker, 784-50-10):", flush=True)
            over = overhead(clients, directory, rounds)
            record["overhead_s"] = over
            print(fmt_table(["", "per step (ms)", "[min, max]"],
                            [[str(k) + (" worker(s)" if k != "local" else " compiled step"), f"{median(v) * 1e3:.2f}",
                              f"[{min(v) * 1e3:.2f}, {max(v) * 1e3:.2f}]"] for k, v in over.items()]))
            print("speedup, 1 -> 2 single-threaded workers (2·t1/t2, per-worker batch fixed):", flush=True)
            rows = speedup(clients, directory, batches, widths, rounds, budget)
            record["speedup"] = rows
            print(fmt_table(["hidden", "batch/worker", "t1 (ms)", "t2 (ms)", "speedup", "[min, max]"],
                            [[r["hidden"], r["batch_per_worker"], f"{median(r['t1_s']) * 1e3:.1f}",
                              f"{median(r['t2_s']) * 1e3:.1f}", f"{median(r['speedup']):.2f}",
                              f"[{min(r['speedup']):.2f}, {max(r['speedup']):.2f}]"] for r in rows]))
            for hidden in widths:  # where two workers first pay, and first reach the 1.6x (80%) target
                mine = [r for r in rows if r["hidden"] == hidden]
                gain = [r["batch_per_worker"] for r in mine if median(r["speedup"]) > 1]
                target = [r["batch_per_worker"] for r in mine if median(r["speedup"]) >= 1.6]
                print(f"  hidden {hidden}: median speedup > 1 from batch/worker {min(gain) if gain else 'never'}; "
                      f">= 1.6 from {min(target) if target else 'never (in this grid)'}")
            if os.environ.get("GRAPHC_DATA"):
                ev = evaluation(clients[2], rounds, tmp)
                record["evaluation"] = ev
                print(f"evaluation of {ev['rows']} MNIST images (accuracy {ev['accuracy']:.4f}, equal on both):")
                print(fmt_table(["", "seconds", "[min, max]"],
                                [[k, f"{median(v):.3f}", f"[{min(v):.3f}, {max(v):.3f}]"]
                                 for k, v in ev["times_s"].items()]))
            else:
                print("GRAPHC_DATA is not set: no MNIST evaluation")
    finally:
        for c in clients.values():
            c.close()
    record["load_after"] = os.getloadavg()[0]
    print(f"load average before/after: {record['load_before']:.2f} / {record['load_after']:.2f}")
    print(f"wrote {write_json(args.json, record)}")


if __name__ == "__main__":
    main()
