"""The numpy lowering (planned buffers) and the array-API lowering compute the same values."""

import numpy as np
import pytest

import graphc as gc
from graphc.models import init_two_layer_params, two_layer_net
from graphc.optim import SGD, Adam, Momentum, TrainStep


def _net_and_values(integer_labels=False):
    rng = np.random.default_rng(0)
    net = two_layer_net(integer_labels=integer_labels)
    params = init_two_layer_params(rng, dtype=np.float64, weight_init_std=0.1)
    x = rng.random((8, 784))
    labels = rng.integers(0, 10, 8)
    return net, params, x, (labels if integer_labels else np.eye(10)[labels])


@pytest.mark.parametrize("integer_labels", [False, True])
def test_both_lowerings_agree_on_the_two_layer_gradients(integer_labels):
    net, params, x, t = _net_and_values(integer_labels)
    outputs = [net.loss, *gc.grad(net.loss, list(net.params.values()))]
    fast = gc.compile(outputs)(params, x=x, t=t)
    generic = gc.compile(outputs, lowering="array_api")(params, x=x, t=t)
    for a, b in zip(fast, generic):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("make", [SGD, Momentum, Adam])
def test_both_lowerings_agree_on_a_train_step(make):
    net, params, x, t = _net_and_values()
    copies = {k: v.copy() for k, v in params.items()}
    fast = TrainStep(net.loss, params, make())
    generic = TrainStep(net.loss, copies, make(), lowering="array_api")
    assert "xp.matmul" not in generic.source and "out=" not in generic.source
    for _ in range(3):
        np.testing.assert_allclose(fast(x=x, t=t), generic(x=x, t=t), rtol=1e-12)
    for k in params:
        np.testing.assert_allclose(params[k], copies[k], rtol=1e-12, atol=1e-15)
    for k in fast.state:
        np.testing.assert_allclose(fast.state[k], generic.state[k], rtol=1e-12, atol=1e-15)


def test_numpy_lowering_plans_buffers_and_no_transposes():
    net, params, x, t = _net_and_values()
    step = TrainStep(net.loss, params, SGD(lr=0.1))
    body = step.source.split("def run(")[1]
    assert "xp.empty" not in body  # every buffer is allocated once, in build()
    assert "permute_dims" not in body and "ascontiguousarray" not in body
    assert body.count("xp.dot(") == 5  # 2 forward + dW2, dh, dW1: no dX for the input layer


def test_torch_tensors_run_through_the_array_api_lowering():
    torch = pytest.importorskip("torch")  # optional peers: graphc[backends] and torch
    pytest.importorskip("array_api_compat")
    net, params, x, t = _net_and_values()
    outputs = [net.loss, *gc.grad(net.loss, list(net.params.values()))]
    fn = gc.compile(outputs)
    expected = fn(params, x=x, t=t)
    got = fn({k: torch.from_numpy(v) for k, v in params.items()}, x=torch.from_numpy(x), t=torch.from_numpy(t))
    for a, b in zip(got, expected):
        assert isinstance(a, torch.Tensor)
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-12, atol=1e-15)
