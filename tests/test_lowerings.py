"""The numpy lowering (planned buffers, BLAS, filled constants) and the array-API lowering compute
the same values: the two-layer net's gradients and train steps, torch tensors, the softmax
family, multi-operand contractions with their gradients, maximum/minimum against constants.
What the numpy lowering's step is made of (buffers planned once, one gemm per product) is
read from its source in one test, where that is the point.
"""

import re

import numpy as np
import pytest
import sympy

import graphc as gc
from graphc.backends.numpy import runtime as rt
from graphc.models import init_two_layer_params, two_layer_net
from graphc.optim import SGD, Adam, Momentum, TrainStep
from helpers import mnist_batch, np_log_softmax


def _net_and_values(integer_labels=False):
    rng = np.random.default_rng(0)
    net = two_layer_net(integer_labels=integer_labels)
    params = init_two_layer_params(rng, dtype=np.float64, weight_init_std=0.1)
    x, t = mnist_batch(rng, 8, integer=integer_labels)
    return net, params, x, t


@pytest.fixture
def filled_calls(monkeypatch):
    """The shapes ``rt.filled`` is called with in this test: the numpy lowering builds the constant
    operand of maximum/minimum with it (once per specialisation)."""
    calls, real = [], rt.filled

    def counting(shape, value, dtype):
        calls.append(shape)
        return real(shape, value, dtype)

    monkeypatch.setattr(rt, "filled", counting)
    return calls


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
    # the reference really is the other lowering: no planned buffers, no numpy-only calls (only its
    # source shows which lowering wrote it)
    assert "xp.matmul" not in generic.source and "out=" not in generic.source
    for _ in range(3):
        np.testing.assert_allclose(fast(x=x, t=t), generic(x=x, t=t), rtol=1e-12)
    for k in params:
        np.testing.assert_allclose(params[k], copies[k], rtol=1e-12, atol=1e-15)
    for k in fast.state:
        np.testing.assert_allclose(fast.state[k], generic.state[k], rtol=1e-12, atol=1e-15)


def test_numpy_lowering_plans_buffers_and_no_transposes():
    """Read from the generated source on purpose: what is allocated per call and how many BLAS
    calls a step makes are properties of the emitted code, not of the values."""
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
    expected = [np.exp(np_log_softmax(a_val)), np_log_softmax(a_val)]
    if len(shape) <= 2:
        t = g.input("t", shape)
        t_val = rng.random(shape)  # rows need not sum to 1 for the loss itself
        loss = gc.softmax_cross_entropy(a, t)
        outputs.append(loss)
        feed["t"] = t_val
        expected.append(-(t_val * np_log_softmax(a_val)).sum() / (shape[0] if len(shape) == 2 else 1))
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
    picked = np.take_along_axis(np_log_softmax(a_val), labels[..., None], axis=-1)
    n = shape[0] if len(shape) == 2 else 1
    onehot = np.eye(shape[-1])[labels]
    for _ in range(2):
        got_loss, got_grad = fn(a=a_val, labels=labels)
        np.testing.assert_allclose(got_loss, -picked.sum() / n, rtol=1e-12)
        np.testing.assert_allclose(got_grad, (np.exp(np_log_softmax(a_val)) - onehot) / n, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("shape", [(7, 5), (2, 600, 1000)])  # a filled operand, and one above rt.FILL_LIMIT
def test_maximum_and_minimum_against_constants_match_numpy(shape, filled_calls):
    rng = np.random.default_rng(0)
    x_val = rng.standard_normal(shape)
    g = gc.Graph("clamps")
    x = g.input("x", shape)
    clamp = gc.elementwise("clamp", lambda v: sympy.Min(sympy.Max(v, -0.5), 0.25))
    fn = gc.compile([gc.relu(x), clamp(x)])
    relu, clamped = fn(x=x_val)
    assert filled_calls  # the constants were filled arrays (0-d above rt.FILL_LIMIT)
    np.testing.assert_array_equal(relu, np.maximum(x_val, 0))
    np.testing.assert_array_equal(clamped, np.clip(x_val, -0.5, 0.25))


# -- multi-operand contractions (pairwise.NpContraction) -------------------------------------------
GRAPH_SPECS = ["ij,jk,kl,lm->im", "ij,jk,ki->", "ab,bc,cd,da->a", "iij,jk,kl->il", "ij,ij,jk->k",
               "ab,ab,c->c", "ab,c,cd,->bd", "na,ab,bc,cd,de,ef->nf", "ij,jk,kl->", "ab,ba,bc->c"]


@pytest.mark.parametrize("spec", GRAPH_SPECS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_graph_numpy_lowering_matches_array_api_with_grads(spec, dtype):
    dims = {"a": "n", "i": "n", "n": "m"}  # symbolic dims on some indices
    sizes = {"a": 3, "b": 4, "c": 2, "d": 5, "e": 3, "f": 2, "i": 3, "j": 4, "k": 2, "l": 5, "m": 3, "n": 6}
    terms = spec.split("->")[0].split(",")
    g = gc.Graph("review")
    nodes = [g.param(f"p{k}", tuple(dims.get(c, sizes[c]) for c in t)) for k, t in enumerate(terms)]
    y = gc.einsum(spec, *nodes)
    loss = gc.sum(y * y) if y.shape else y * y
    outs = [y, *gc.grad(loss, nodes)]
    rng = np.random.default_rng(len(spec))
    kw = {f"p{k}": rng.standard_normal([sizes[c] for c in t]).astype(dtype) for k, t in enumerate(terms)}
    fn, ref = gc.compile(outs), gc.compile(outs, lowering="array_api")
    tol = 1e-4 if dtype == np.float32 else 1e-10
    want = np.einsum(spec, *[v.astype(np.float64) for v in kw.values()])
    for _ in range(2):
        got, exp = fn(**kw), ref(**kw)
        np.testing.assert_allclose(got[0], want, rtol=tol, atol=tol)
        for a, b in zip(got, exp):
            assert np.shape(a) == np.shape(b) and np.asarray(a).dtype == dtype
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


# -- maximum/minimum against constants: rt.filled ---------------------------------------------------
clip = gc.elementwise("filled_clip", lambda x: sympy.Min(sympy.Max(x, -1), 1))
max3 = gc.elementwise("filled_max3", lambda x, y: sympy.Max(x, y, 0))


def _filled_graph():
    g = gc.Graph("fill")
    x = g.input("x", ("n", 3))
    s = g.input("s", ())
    return [gc.relu(x), clip(x), max3(gc.transpose(x), s), clip(s), gc.relu(gc.transpose(x) * 2.0)]


def _filled_expect(x, s):
    return [np.maximum(x, 0), np.clip(x, -1, 1), np.maximum(np.maximum(x.T, s), 0), np.clip(s, -1, 1),
            np.maximum(2 * x.T, 0)]


@pytest.mark.parametrize("limit", [rt.FILL_LIMIT, 0, 5])
@pytest.mark.parametrize("n", [0, 1, 4])
def test_filled_constants_match_numpy_and_are_never_written(monkeypatch, filled_calls, limit, n):
    monkeypatch.setattr(rt, "FILL_LIMIT", limit)
    outs = _filled_graph()
    fn, ref = gc.compile(outs), gc.compile(outs, lowering="array_api")
    rng = np.random.default_rng(n)
    for _ in range(3):  # consts built once: results of a call written to must not leak into the next
        x, s = rng.standard_normal((n, 3)) * 2, np.asarray(rng.standard_normal() * 2)
        got = fn(x=x, s=s)
        assert filled_calls  # the constants are filled arrays
        for a, b, c in zip(got, _filled_expect(x, s), ref(x=x, s=s)):
            np.testing.assert_allclose(a, b, rtol=1e-12)
            np.testing.assert_allclose(a, c, rtol=1e-12)
            assert np.asarray(a).flags.writeable
        for a in got:
            np.asarray(a)[...] = 123.0


def test_filled_is_read_only_and_zero_d_above_the_limit():
    small = rt.filled((2, 3), 0, np.float32)
    assert small.shape == (2, 3) and small.dtype == np.float32 and not small.flags.writeable
    assert (small == 0).all()
    big = rt.filled((rt.FILL_LIMIT + 1,), -1, np.float64)
    assert big.shape == () and big == -1 and not big.flags.writeable
    assert rt.filled((rt.FILL_LIMIT,), 1, np.float64).shape == (rt.FILL_LIMIT,)
    with pytest.raises(ValueError):
        small[...] = 1
