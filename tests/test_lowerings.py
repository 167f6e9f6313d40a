"""The numpy lowering (planned buffers) and the array-API lowering compute the same values."""

import re

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
    dots = re.findall(r"xp\.dot\((\w+)", body)
    ones = re.findall(r"(c\d+) = xp\.ones\(", step.source)
    accumulating = re.findall(r"(g\d+) = rt\.GemmAccumulate\(", step.source)
    # x·W1 + b1 and h·W2 + b2: the bias copied into the result, one accumulating gemm each;
    # dh = da·W2ᵀ (no dX for the input layer); db1, db2 as ones·dA (BLAS gemv);
    # dW1 and dW2 never exist: W ← W - (lr-scaled) product, one accumulating gemm each
    assert len([d for d in dots if d not in ones]) == 1
    assert len([d for d in dots if d in ones]) == 2
    assert len(accumulating) == 4 and all(body.count(f"{g}(") == 1 for g in accumulating)
    assert body.count("xp.copyto(") == 2 and "xp.add(" not in body  # the bias adds are the copies
    assert "xp.empty((784, 50,)" not in step.source  # no gradient buffer the size of W1


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


def _reference_log_softmax(a):
    shifted = a - a.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


# (100, 10) and (1, 5) take the numpy lowering's transposed row-max path, (6, 80) and the
# 1-D and 3-D shapes the direct reduction.
@pytest.mark.parametrize("shape", [(10,), (1, 5), (7, 3), (100, 10), (6, 80), (2, 3, 5)])
@pytest.mark.parametrize("lowering", ["auto", "array_api"])
def test_softmax_family_matches_a_float64_reference(shape, lowering):
    rng = np.random.default_rng(len(shape) * 100 + shape[-1])
    a_val = rng.standard_normal(shape) * 30  # spreads of ~200 between entries: exp would overflow unshifted
    g = gc.Graph("softmaxes")
    a = g.input("a", shape)
    outputs = [gc.softmax(a), gc.log_softmax(a)]
    feed = {"a": a_val}
    expected = [np.exp(_reference_log_softmax(a_val)), _reference_log_softmax(a_val)]
    if len(shape) <= 2:
        t = g.input("t", shape)
        t_val = rng.random(shape)  # rows need not sum to 1 for the loss itself
        loss = gc.softmax_cross_entropy(a, t)
        outputs.append(loss)
        feed["t"] = t_val
        expected.append(-(t_val * _reference_log_softmax(a_val)).sum() / (shape[0] if len(shape) == 2 else 1))
    fn = gc.compile(outputs, lowering=lowering)
    for _ in range(2):  # the second call reuses the planned scratch
        got = fn(**feed)
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-12)  # relative, down to the tiniest probability
        for value, want in zip(got[1:], expected[1:]):  # log values of size ~100: absolute error ~100·eps
            np.testing.assert_allclose(value, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(10,), (100, 10), (6, 80)])
@pytest.mark.parametrize("label_dtype", [np.int64, np.int32, np.uint8, np.uint64])
def test_integer_label_cross_entropy_matches_a_float64_reference(shape, label_dtype):
    rng = np.random.default_rng(shape[-1])
    a_val = rng.standard_normal(shape) * 30
    labels = rng.integers(0, shape[-1], shape[:-1]).astype(label_dtype)
    g = gc.Graph("ce_labels")
    a = g.input("a", shape)
    loss = gc.softmax_cross_entropy(a, g.input("labels", shape[:-1], kind="int"))
    fn = gc.compile([loss, *gc.grad(loss, [a])])
    picked = np.take_along_axis(_reference_log_softmax(a_val), labels[..., None], axis=-1)
    n = shape[0] if len(shape) == 2 else 1
    onehot = np.eye(shape[-1])[labels]
    for _ in range(2):
        got_loss, got_grad = fn(a=a_val, labels=labels)
        np.testing.assert_allclose(got_loss, -picked.sum() / n, rtol=1e-12)
        np.testing.assert_allclose(got_grad, (np.exp(_reference_log_softmax(a_val)) - onehot) / n, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("shape", [(7, 5), (2, 600, 1000)])  # a filled operand, and one above rt.FILL_LIMIT
def test_maximum_and_minimum_against_constants_match_numpy(shape):
    rng = np.random.default_rng(0)
    x_val = rng.standard_normal(shape)
    g = gc.Graph("clamps")
    x = g.input("x", shape)
    clamp = gc.elementwise("clamp", lambda v: __import__("sympy").Min(__import__("sympy").Max(v, -0.5), 0.25))
    fn = gc.compile([gc.relu(x), clamp(x)])
    assert "rt.filled(" in fn.source
    relu, clamped = fn(x=x_val)
    np.testing.assert_array_equal(relu, np.maximum(x_val, 0))
    np.testing.assert_array_equal(clamped, np.clip(x_val, -0.5, 0.25))
