"""TrainStep's per-call path: after the first call it checks only the batch's shapes and dtypes."""

import threading

import numpy as np
import pytest

from graphc.errors import BindingError
from graphc.models import init_two_layer_params, two_layer_net
from graphc.optim import Adam, SGD, TrainStep
from helpers import mnist_batch


def _steps(make=SGD):
    net = two_layer_net()
    params = init_two_layer_params(np.random.default_rng(0), dtype=np.float64, weight_init_std=0.1)
    copies = {k: v.copy() for k, v in params.items()}
    return (TrainStep(net.loss, params, make()), TrainStep(net.loss, copies, make(), lowering="array_api"))


@pytest.mark.parametrize("make", [SGD, Adam])
def test_changing_batch_sizes_agree_with_the_array_api_lowering(make):
    fast, reference = _steps(make)
    rng = np.random.default_rng(1)
    for n in (8, 8, 5, 8, 5, 1):
        x, t = mnist_batch(rng, n)
        np.testing.assert_allclose(fast(x=x, t=t), reference(x=x, t=t), rtol=1e-12)
    for k in fast.params:
        np.testing.assert_allclose(fast.params[k], reference.params[k], rtol=1e-12, atol=1e-15)


def test_a_bad_batch_after_good_ones_is_still_refused():
    step, _ = _steps()
    rng = np.random.default_rng(2)
    step(x=mnist_batch(rng, 4)[0], t=mnist_batch(rng, 4)[1])
    x, t = mnist_batch(rng, 4)
    with pytest.raises(BindingError, match="has dtype float64 but .x. has float32"):
        step(x=x.astype(np.float32), t=t)
    with pytest.raises(BindingError, match="axis 1 must be 784"):
        step(x=x[:, :783], t=t)
    with pytest.raises(BindingError, match="dim 'n' is 4"):
        step(x=x, t=t[:3])
    before = {k: v.copy() for k, v in step.params.items()}
    step(x=x.tolist(), t=t)  # array-likes are converted, as on a first call
    assert any(not np.array_equal(before[k], step.params[k]) for k in before)


def test_another_thread_checks_and_specialises_for_itself():
    step, reference = _steps()
    rng = np.random.default_rng(3)
    batches = [mnist_batch(rng, 6) for _ in range(4)]
    step(x=batches[0][0], t=batches[0][1])
    reference(x=batches[0][0], t=batches[0][1])
    losses = []
    worker = threading.Thread(target=lambda: losses.extend(step(x=x, t=t) for x, t in batches[1:]))
    worker.start()
    worker.join()
    expected = [reference(x=x, t=t) for x, t in batches[1:]]
    np.testing.assert_allclose(losses, expected, rtol=1e-12)


# -- what a TrainStep accepts, and what it leaves alone -------------------------------------------
def _params(**over):
    params = init_two_layer_params(np.random.default_rng(0), dtype=np.float64)
    params.update(over)
    return params


def _readonly(shape):
    a = np.zeros(shape)
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("params, message", [
    (lambda: _params(b1=[0.0] * 50), r"param 'b1' must be a numpy array .* got list"),
    (lambda: _params(W2=np.zeros((50, 11))), r"param 'W2' has shape \(50, 11\), but it is declared \(50, 10\)"),
    (lambda: _params(b2=np.zeros((10, 1))), r"param 'b2' has shape \(10, 1\)"),
    (lambda: _params(W1=np.zeros((784, 50), np.float16)), r"'W1': dtype float16 is not supported"),
    (lambda: _params(W1=np.zeros((784, 50), np.int64)), r"param 'W1' must hold floats, got dtype int64"),
    (lambda: _params(b2=np.zeros(10, np.float32)), r"param 'b2' has dtype float32 but 'W1' has float64"),
    (lambda: _params(b1=_readonly(50)), r"param 'b1' is read-only"),
    (lambda: [np.zeros(3)], r"params must map param names to numpy arrays, got list"),
], ids=["list", "shape", "rank", "float16", "int", "mixed dtypes", "read-only", "not a mapping"])
def test_bad_params_are_refused_when_the_step_is_made(params, message):
    net = two_layer_net()
    with pytest.raises(BindingError, match=message):
        TrainStep(net.loss, params(), Adam())


@pytest.mark.parametrize("make", [SGD, Adam])
def test_a_train_step_leaves_the_users_graph_as_declared(make, tmp_path):
    import graphc as gc
    from graphc.serialize import graph_to_dict

    net = two_layer_net()
    leaves, inputs, params = list(net.graph.leaves), list(net.graph.inputs), list(net.graph.params)
    before = graph_to_dict(net.loss)
    step = TrainStep(net.loss, init_two_layer_params(np.random.default_rng(0), dtype=np.float64), make())
    step(dict(zip(("x", "t"), mnist_batch(np.random.default_rng(1), 8))))
    assert list(net.graph.leaves) == leaves and net.graph.inputs == inputs and net.graph.params == params
    assert graph_to_dict(net.loss) == before  # save_graph writes what the user declared, no optimizer leaf
    gc.save_graph(net.loss, tmp_path / "net.json")
    _, (loaded,) = gc.load_graph(tmp_path / "net.json")
    assert sorted(loaded.graph.leaves) == sorted(leaves)


def test_check_grads_leaves_the_users_graph_as_declared():
    import graphc as gc

    g = gc.Graph("g")
    x = g.input("x", ("n", 3))
    gc.check_grads(gc.tanh(x), x, {"x": np.random.default_rng(0).standard_normal((4, 3))})
    assert list(g.leaves) == ["x"]
