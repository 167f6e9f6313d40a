"""graphc.distributed on a real LocalCluster (2 worker processes, 1 thread each): full-batch loss,
gradients and accuracy from chunk files equal the numpy results; synchronous data-parallel training
equals single-process training and survives a killed worker; ``graphc sweep``; bad input.

One cluster serves the module (started once, closed at the end); dask retries a task whose worker
died once (``allowed-failures=1``), so the test of a worker killed every time is short.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

pytest.importorskip("distributed")  # the `test` extra installs it; the core suite runs without it

import dask  # noqa: E402
import dask.array as da  # noqa: E402

import graphc as gc  # noqa: E402
from graphc.distributed import DataParallelTrainer, accuracy, connect, full_batch, open_chunks, save_chunks  # noqa: E402
from graphc.evaluate import Evaluator  # noqa: E402
from graphc.models import init_two_layer_params, two_layer_net  # noqa: E402
from graphc.optim import SGD, Adam, Momentum, TrainStep  # noqa: E402

ROWS, FEATURES, HIDDEN, CLASSES = 103, 20, 8, 3


@pytest.fixture(scope="module")
def client():
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        client = connect(workers=2)
    try:
        yield client
    finally:
        client.close()


def _workers(client, n: int = 2) -> list[str]:
    client.wait_for_workers(n, timeout=60)
    return sorted(client.scheduler_info()["workers"])


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    """The two-layer net (integer labels) in float64, 103 rows saved in uneven chunks of 25."""
    rng = np.random.default_rng(0)
    net = two_layer_net(FEATURES, HIDDEN, CLASSES, integer_labels=True)
    params = init_two_layer_params(rng, FEATURES, HIDDEN, CLASSES, 0.5, np.float64)
    x, t = rng.standard_normal((ROWS, FEATURES)), rng.integers(0, CLASSES, ROWS)
    directory = save_chunks(tmp_path_factory.mktemp("chunks"), {"x": x, "t": t}, rows=25)
    return net, params, x, t, directory


def test_full_batch_equals_numpy(client, problem):
    from distributed import get_task_stream

    net, params, x, t, directory = problem
    arrays = open_chunks(directory)
    assert arrays["x"].chunks[0] == (25, 25, 25, 25, 3)
    # The graph holds file names, not the data: the workers read the chunks.
    assert all(not isinstance(v, np.ndarray) for v in dict(arrays["x"].__dask_graph__()).values())
    with get_task_stream(client) as stream:
        loss, grads = full_batch(client, net.loss, list(net.params), params, arrays)
    fn = gc.compile([net.loss, *gc.grad(net.loss, list(net.params.values()))])
    want = fn(params, x=x, t=t)
    assert abs(loss - float(want[0])) <= 1e-12
    for name, w in zip(net.params, want[1:]):
        np.testing.assert_allclose(grads[name], w, rtol=0, atol=1e-12)
    keys = [task["key"] for task in stream.data]
    per_chunk = [k for k in keys if "chunk_grads" in str(k)]
    assert len(per_chunk) == 5  # one task per chunk, running the whole compiled function


def test_a_summed_loss_is_summed(client, tmp_path):
    rng = np.random.default_rng(1)
    g = gc.Graph("sq"); x = g.input("x", ("n", 4)); y = g.input("y", ("n",)); w = g.param("w", (4,))
    loss = ((x @ w - y) ** 2).sum()
    xv, yv, wv = rng.standard_normal((30, 4)), rng.standard_normal(30), rng.standard_normal(4)
    arrays = open_chunks(save_chunks(tmp_path, {"x": xv, "y": yv}, rows=7))
    value, grads = full_batch(client, loss, [w], {"w": wv}, arrays)
    want = gc.compile([loss, *gc.grad(loss, [w])])(x=xv, y=yv, w=wv)
    assert abs(value - float(want[0])) <= 1e-12 * abs(float(want[0]))
    np.testing.assert_allclose(grads["w"], want[1], rtol=1e-12)


def test_accuracy_equals_the_evaluator(client, problem, tmp_path):
    net, params, x, t, directory = problem
    arrays = open_chunks(directory)
    got = accuracy(client, net.logits, params, arrays["x"], arrays["t"], dtype=np.float64)
    assert got == Evaluator(net.logits, 2_000, np.float64).accuracy(params, x, t)
    # uint8 images, as MNIST's files hold them, cast on the workers as the Evaluator casts them
    rng = np.random.default_rng(2)
    pixels, labels = rng.integers(0, 256, (50, FEATURES), dtype=np.uint8), rng.integers(0, CLASSES, 50)
    net255 = two_layer_net(FEATURES, HIDDEN, CLASSES, integer_labels=True, input_divisor=255)
    chunks = open_chunks(save_chunks(tmp_path, {"x": pixels, "t": labels}, rows=16))
    params32 = {k: v.astype(np.float32) for k, v in params.items()}
    got = accuracy(client, net255.logits, params32, chunks["x"], chunks["t"], chunk=5)
    assert got == Evaluator(net255.logits, 5).accuracy(params32, pixels, labels)


@pytest.mark.parametrize("optimizer", [lambda: SGD(lr=0.5), lambda: Momentum(lr=0.1), lambda: Adam(lr=0.01)],
                         ids=["sgd", "momentum", "adam"])
def test_data_parallel_training_equals_one_process(client, problem, tmp_path, optimizer):
    net, params, x, t, _ = problem
    directory = save_chunks(tmp_path, {"x": x, "t": t}, rows=52)  # two shards
    mine = {k: v.copy() for k, v in params.items()}
    ref = {k: v.copy() for k, v in params.items()}
    with DataParallelTrainer(client, net.loss, mine, optimizer(), directory, batch_size=16, seed=3) as trainer:
        assert (trainer.ranks, trainer.reduce) == (2, "mean")
        step = TrainStep(net.loss, ref, optimizer())
        for s in range(6):
            rows = trainer.global_batch(s)
            assert len(rows) == 32
            got = trainer.step()
            assert abs(got - float(step(x=x[rows], t=t[rows]))) <= 1e-12
    for name in ref:
        np.testing.assert_allclose(mine[name], ref[name], rtol=0, atol=1e-12)
    assert not np.array_equal(mine["W1"], params["W1"])


async def _exit_now():  # a coroutine: client.run(wait=False) sends it without waiting for an answer
    os._exit(1)


def test_training_survives_a_killed_worker(client, problem, tmp_path):
    net, params, x, t, _ = problem
    directory = save_chunks(tmp_path, {"x": x, "t": t}, rows=52)
    before = _workers(client)
    mine = {k: v.copy() for k, v in params.items()}
    ref = {k: v.copy() for k, v in params.items()}
    step = TrainStep(net.loss, ref, Adam(lr=0.01))
    with DataParallelTrainer(client, net.loss, mine, Adam(lr=0.01), directory, batch_size=16) as trainer:
        for s in range(8):
            if s == 3:  # killed while the step's tasks are sent to it
                threading.Timer(0.01, client.run, (_exit_now,), {"workers": [before[0]], "wait": False}).start()
            trainer.step()
            step(x=x[trainer.global_batch(s)], t=t[trainer.global_batch(s)])
        assert trainer.step_count == 8
    for name in ref:
        np.testing.assert_allclose(mine[name], ref[name], rtol=0, atol=1e-12)
    after = _workers(client)
    assert before[0] not in after  # the nanny started a new worker process in its place


def _die():
    os._exit(1)


def test_a_worker_killed_every_time_is_a_graphc_error(client, problem):
    net, params, *_ = problem
    _workers(client)
    poison = da.from_delayed(dask.delayed(_die)(), (10, FEATURES), dtype=np.float64)
    x = da.concatenate([da.zeros((10, FEATURES), chunks=(10, -1)), poison])
    t = da.zeros(20, dtype=np.int64, chunks=10)
    with pytest.raises(gc.GraphcError, match="a worker died running .* every time dask retried it"):
        full_batch(client, net.loss, ["W1"], params, {"x": x, "t": t}, reduce="mean")
    _workers(client)
    assert not client.processing() or not any(client.processing().values())  # nothing left queued


def test_bad_inputs(client, problem):
    net, params, x, t, directory = problem
    arrays = open_chunks(directory)
    split = arrays["x"].rechunk({1: 10})  # chunked along k, which x·W1 contracts
    with pytest.raises(gc.BindingError, match=r"'x' is chunked along axis 1 .*whole rows.*x.rechunk\(\{1: -1\}\)"):
        full_batch(client, net.loss, ["W1"], params, {"x": split, "t": arrays["t"]})
    with pytest.raises(gc.BindingError, match=r"chunked differently.*rechunk"):
        full_batch(client, net.loss, ["W1"], params, {"x": arrays["x"], "t": arrays["t"].rechunk(50)})
    with pytest.raises(gc.BindingError, match="must be a dask array"):
        full_batch(client, net.loss, ["W1"], params, {"x": x, "t": arrays["t"]})
    with pytest.raises(gc.BindingError, match=r"no value for \['t'\]"):
        full_batch(client, net.loss, ["W1"], params, {"x": arrays["x"]})
    with pytest.raises(gc.BindingError, match="one-hot rows"):
        accuracy(client, net.logits, params, arrays["x"], da.zeros((ROWS, 3), chunks=25))
    # the square of a mean is not a sum of per-row terms: it cannot be split into chunks
    g = gc.Graph("sq_mean"); xs = g.input("x", ("n", FEATURES)); w = g.param("w", (FEATURES,))
    with pytest.raises(gc.GraphcError, match="neither a sum nor a mean of per-row terms"):
        full_batch(client, gc.mean(xs @ w) ** 2, [w], {"w": np.ones(FEATURES)}, {"x": arrays["x"]})
    with pytest.raises(gc.BindingError, match=r"holds \['x', 't'\], but the graph's inputs"):
        DataParallelTrainer(client, gc.mean((xs @ w) ** 2) + gc.mean(g.input("y", ("n",))), {"w": np.ones(20)},
                            SGD(), directory, batch_size=4)


def test_a_dead_scheduler_address(unused_tcp_port):
    address = f"tcp://127.0.0.1:{unused_tcp_port}"
    threads = threading.active_count()
    start = time.perf_counter()
    with pytest.raises(gc.GraphcError, match=rf"no dask scheduler answered at {address} within 1 s.*dask scheduler"):
        connect(address, timeout=1)
    assert time.perf_counter() - start < 10
    deadline = time.time() + 5
    while threading.active_count() > threads and time.time() < deadline:
        time.sleep(0.1)
    assert threading.active_count() <= threads  # nothing left running


@pytest.fixture
def unused_tcp_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sweep_on_a_scheduler_address(client, tmp_path, capsys, monkeypatch):
    from graphc.cli import main

    data = os.environ.get("GRAPHC_DATA", "/work/shared/mnist")
    if not os.path.exists(os.path.join(data, "train-images-idx3-ubyte.gz")):
        pytest.skip("MNIST files not found (set GRAPHC_DATA)")
    out = tmp_path / "sweep"
    status = main(["sweep", "--lr", "0.1", "0.5", "--optimizer", "sgd", "adam", "--iters", "30", "--train-size", "600",
                   "--test-size", "300", "--data", data, "--scheduler", client.scheduler.address, "--out", str(out),
                   "--no-progress"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    lines = captured.out.splitlines()
    assert lines[0].split() == ["optimizer", "lr", "hidden", "seed", "final", "loss", "train", "acc", "test", "acc",
                                "seconds"]
    assert len(lines) == 2 + 4 and {line.split()[0] for line in lines[2:]} == {"sgd", "adam"}
    import json

    results = json.loads((out / "sweep.json").read_text())
    assert sorted((r["config"]["optimizer"], r["config"]["lr"]) for r in results) == [
        ("adam", 0.1), ("adam", 0.5), ("sgd", 0.1), ("sgd", 0.5)]
    assert all(len(r["history"]["loss"]) == 30 for r in results)
    assert (out / "sweep.png").stat().st_size > 10_000
    # the same configuration alone, in this process, gives the same curve
    from graphc.distributed.sweep import run_one
    from graphc.train import TrainConfig

    alone = run_one(TrainConfig(iters=30, lr=0.5, optimizer="sgd", data=data), 600, 300)
    swept = next(r for r in results if r["config"]["lr"] == 0.5 and r["config"]["optimizer"] == "sgd")
    # float32, and BLAS on one thread on the workers, on several here: equal up to rounding
    np.testing.assert_allclose(swept["history"]["loss"], alone["history"]["loss"], rtol=1e-4)


def test_sweep_errors(capsys, unused_tcp_port):
    from graphc.cli import main

    address = f"tcp://127.0.0.1:{unused_tcp_port}"
    assert main(["sweep", "--scheduler", address, "--timeout", "1"]) == 2
    err = capsys.readouterr().err
    assert f"graphc: error: no dask scheduler answered at {address}" in err and "Traceback" not in err
