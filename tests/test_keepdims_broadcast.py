"""Reductions with ``keepdims=True`` and the explicit broadcast ``gc.broadcast_to``.

A kept axis (size 1, made by ``keepdims=True`` or by a broadcast) stretches against any
dim in an elementwise op, as numpy's do; every other dim must match exactly.  The
shape-mismatch error's hint names a ``gc.broadcast_to`` call, and that call works.
Values are compared with numpy, gradients with torch in float64 and with finite
differences, in both lowerings; graphs using both survive a save/load round trip.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest

import graphc as gc

LOWERINGS = ["auto", "array_api"]


def run(outputs, lowering="auto", **arrays):
    return gc.compile(outputs, lowering=lowering)(**arrays)


def layer_norm(x, eps=1e-5):
    xc = x - x.mean(1, keepdims=True)
    return xc / gc.sqrt((xc ** 2).mean(1, keepdims=True) + eps)


def np_layer_norm(x, eps=1e-5):
    xc = x - x.mean(1, keepdims=True)
    return xc / np.sqrt((xc ** 2).mean(1, keepdims=True) + eps)


# -- shapes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [0, 1, -1, (0, 2), None])
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_keepdims_shapes_and_values_match_numpy(axis, reduce):
    g = gc.Graph("k")
    x = g.input("x", (2, "n", 4))
    X = np.random.default_rng(0).standard_normal((2, 3, 4))
    for y in (getattr(gc, reduce)(x, axis, keepdims=True), getattr(x, reduce)(axis, keepdims=True)):
        want = getattr(X, reduce)(axis=axis, keepdims=True)
        assert y.shape == tuple(1 if d == 1 else s for s, d in zip(x.shape, want.shape))
        for lowering in LOWERINGS:
            got = run([y, x], lowering, x=X)[0]
            np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14, strict=True)
            z = run([x - y, x], lowering, x=X)[0]  # the kept axes stretch back
            np.testing.assert_allclose(z, X - want, rtol=1e-13, atol=1e-13, strict=True)


def test_keepdims_false_is_the_plain_reduction():
    g = gc.Graph("k")
    x = g.input("x", ("n", 3))
    assert x.sum(1).shape == gc.sum(x, 1, keepdims=False).shape == ("n",)
    assert x.mean(0, keepdims=False).shape == (3,)


def test_a_size_one_dim_that_was_not_kept_still_does_not_stretch():
    g = gc.Graph("k")
    a, b = g.input("a", (3, 4)), g.input("b", (1, 4))
    with pytest.raises(gc.ShapeError, match=r"is 3 in 'a' \(3, 4\) but 1 in 'b' \(1, 4\)"):
        a * b


def test_kept_axes_survive_elementwise_ops_and_transposes():
    g = gc.Graph("k")
    x = g.input("x", (3, 5))
    row = (gc.exp(x.sum(1, keepdims=True)) + 1.0) * x.mean(1, keepdims=True)  # (3, 1), still kept
    col = x.sum(0, keepdims=True).T  # (5, 1): the kept axis moved by a transpose
    assert row.shape == (3, 1) and col.shape == (5, 1)
    y = x * row
    z = x.T - col
    X = np.random.default_rng(1).standard_normal((3, 5))
    r = (np.exp(X.sum(1, keepdims=True)) + 1) * X.mean(1, keepdims=True)
    for lowering in LOWERINGS:
        gy, gz = run([y, z], lowering, x=X)
        np.testing.assert_allclose(gy, X * r, rtol=1e-13)
        np.testing.assert_allclose(gz, X.T - X.sum(0, keepdims=True).T, rtol=1e-13)
    gc.check_grads((y * y).sum() + (z * z).sum(), [x], {"x": X})


def test_two_kept_axes_stay_kept():
    g = gc.Graph("k")
    x = g.input("x", (3, 5))
    both = x.sum(1, keepdims=True) * x.mean(1, keepdims=True)
    assert both.shape == (3, 1)
    assert (x - both).shape == (3, 5)


# -- layer norm: the example, its gradient against torch and finite differences --------------
@pytest.mark.parametrize("lowering", LOWERINGS)
def test_layer_norm_with_keepdims_matches_numpy_and_torch(lowering):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    X, W, G = rng.standard_normal((4, 6)), rng.standard_normal((4, 6)), rng.standard_normal(6)
    g = gc.Graph("ln")
    x, w, gamma = g.input("x", ("n", 6)), g.input("w", ("n", 6)), g.param("gamma", (6,))
    y = layer_norm(x) * gamma
    loss = (y * w).sum()
    grads = gc.grad(loss, [x, gamma])
    got_y, dx, dgamma = run([y, *grads], lowering, x=X, w=W, gamma=G)
    np.testing.assert_allclose(got_y, np_layer_norm(X) * G, rtol=1e-12, atol=1e-13)
    tx, tg = torch.tensor(X, requires_grad=True), torch.tensor(G, requires_grad=True)
    ty = torch.nn.functional.layer_norm(tx, (6,), eps=1e-5) * tg
    (ty * torch.tensor(W)).sum().backward()
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dgamma, tg.grad.numpy(), rtol=1e-10, atol=1e-12)
    gc.check_grads(loss, [x, gamma], {"x": X, "w": W, "gamma": G}, lowering=lowering)


def test_layer_norm_second_derivative_matches_finite_differences():
    rng = np.random.default_rng(3)
    g = gc.Graph("ln2")
    x, v = g.input("x", (3, 4)), g.input("v", (3, 4))
    (dx,) = gc.grad((layer_norm(x) ** 3).sum(), [x])
    gc.check_grads((dx * v).sum(), [x], {"x": rng.standard_normal((3, 4)), "v": rng.standard_normal((3, 4))})


# -- the error's hint, followed ------------------------------------------------------------------
def hinted_call(message: str) -> str:
    m = re.search(r"write (gc\.broadcast_to\(.*?\));", message)
    assert m, message
    return m.group(1)


def test_the_mismatch_hint_names_a_broadcast_that_works():
    torch = pytest.importorskip("torch")
    g = gc.Graph("hint")
    x = g.input("x", ("n", 5))
    mu = x.mean(1, name="mu")
    with pytest.raises(gc.ShapeError) as err:
        x - mu
    message = str(err.value)
    assert "sub: index 'j' (axis -1) is 5 in 'x' (n, 5) but 'n' in 'mu' (n,)" in message
    call = hinted_call(message)
    assert call == "gc.broadcast_to(mu, ('n', 5), axes=(0,))"
    xc = x - eval(call, {"gc": gc, "mu": mu})  # the advice, taken literally
    std = gc.sqrt((xc ** 2).mean(1) + 1e-5).rename("std")
    with pytest.raises(gc.ShapeError) as err:
        xc / std
    call = hinted_call(str(err.value))
    assert call == "gc.broadcast_to(std, ('n', 5), axes=(0,))"
    y = xc / eval(call, {"gc": gc, "std": std})
    X, W = np.random.default_rng(4).standard_normal((3, 5)), np.random.default_rng(5).standard_normal((3, 5))
    w = g.input("w", ("n", 5))
    loss = (y * w).sum()
    got, (dx,) = run([y], x=X)[0], run(gc.grad(loss, [x]), x=X, w=W)
    np.testing.assert_allclose(got, np_layer_norm(X), rtol=1e-12, atol=1e-13)
    tx = torch.tensor(X, requires_grad=True)
    (torch.nn.functional.layer_norm(tx, (5,), eps=1e-5) * torch.tensor(W)).sum().backward()
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_the_hint_for_a_size_one_dim_and_for_the_trailing_rule():
    g = gc.Graph("hint")
    a, b, c = g.input("a", (3, 4)), g.input("b", (1, 4)), g.input("c", (2, 3, 4))
    with pytest.raises(gc.ShapeError) as err:
        a * b
    assert hinted_call(str(err.value)) == "gc.broadcast_to(b, (3, 4))"
    assert (a * eval(hinted_call(str(err.value)), {"gc": gc, "b": b})).shape == (3, 4)
    d = g.input("d", (2,))
    with pytest.raises(gc.ShapeError) as err:
        c + d
    assert hinted_call(str(err.value)) == "gc.broadcast_to(d, (2, 3, 4), axes=(0,))"
    e = g.input("e", (5,))
    with pytest.raises(gc.ShapeError) as err:  # nothing to broadcast: no hint that cannot work
        a + e
    assert "broadcast_to" not in str(err.value)


def test_einsum_to_a_new_index_points_to_broadcast_to():
    g = gc.Graph("hint")
    mu = g.input("mu", ("n",))
    with pytest.raises(gc.SpecError, match=r"output index 'j' appears in no operand \(.*gc\.broadcast_to"):
        gc.einsum("n->nj", mu)
    assert gc.broadcast_to(mu, ("n", 4), axes=(0,)).shape == ("n", 4)


# -- broadcast_to ----------------------------------------------------------------------------------
CASES = [  # operand shape, target shape, axes, numpy reference
    ((4,), (3, 4), None, lambda v: np.broadcast_to(v, (3, 4))),
    ((3,), (3, 4), (0,), lambda v: np.broadcast_to(v[:, None], (3, 4))),
    ((1, 4), (3, 4), None, lambda v: np.broadcast_to(v, (3, 4))),
    ((3, 1), (2, 3, 5), (1, 2), lambda v: np.broadcast_to(v, (2, 3, 5))),
    ((2, 5), (2, 3, 5), (0, 2), lambda v: np.broadcast_to(v[:, None, :], (2, 3, 5))),
    ((), (2, 3), None, lambda v: np.broadcast_to(v, (2, 3))),
    ((3, 4), (3, 4), None, lambda v: v),
]


@pytest.mark.parametrize("lowering", LOWERINGS)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_broadcast_to_values_and_gradients_match_torch(case, lowering):
    torch = pytest.importorskip("torch")
    shape, target, axes, ref = CASES[case]
    rng = np.random.default_rng(case)
    V, W = rng.standard_normal(shape), rng.standard_normal(target)
    g = gc.Graph("b")
    v, w = g.input("v", shape), g.input("w", target)
    y = gc.broadcast_to(v, target, axes=axes)
    assert y.shape == target
    loss = (gc.tanh(y) * w).sum()
    got, dv = run([y, *gc.grad(loss, [v])], lowering, v=V, w=W)
    np.testing.assert_allclose(got, ref(V), rtol=0, atol=0)
    tv = torch.tensor(V, requires_grad=True)
    axes = tuple(range(len(target) - len(shape), len(target))) if axes is None else axes
    aligned = tv.reshape([shape[axes.index(k)] if k in axes else 1 for k in range(len(target))])
    (torch.tanh(aligned.expand(*target)) * torch.tensor(W)).sum().backward()
    np.testing.assert_allclose(dv, tv.grad.numpy(), rtol=1e-12, atol=1e-13)
    gc.check_grads(loss, [v], {"v": V, "w": W}, lowering=lowering)


def test_broadcast_to_explains_as_a_repeat_and_its_gradient_as_a_sum():
    g = gc.Graph("b")
    b = g.param("b", (3,))
    B = gc.broadcast_to(b, ("n", 3), name="B")
    (db,) = gc.grad(B.sum(), [b])
    assert "B[n,i] = b[i]" in gc.explain(B)
    assert "db[i] = Σ_n dB[n,i]" in gc.explain(db)


def test_broadcast_to_binds_a_symbolic_dim_from_the_other_inputs():
    g = gc.Graph("b")
    x, b = g.input("x", ("n", 3)), g.param("b", (3,))
    y = x * gc.broadcast_to(b, ("n", 3))
    got = gc.compile([y])(x=np.ones((2, 3)), b=np.arange(3.0))[0]
    np.testing.assert_array_equal(got, np.tile(np.arange(3.0), (2, 1)))


@pytest.mark.parametrize("shape, target, axes, message", [
    ((3, 4), (4,), None, r"broadcast_to: 'v' \(3, 4\) has more axes than the target shape \(4,\)"),
    ((3,), (3, 4), None, r"broadcast_to: axis 0 of 'v' \(3,\) is 3 but axis 1 of the target shape \(3, 4\) is 4"),
    ((3,), (3, 4), (0, 1), r"broadcast_to: axes \(0, 1\) must name one axis of the target shape \(3, 4\) for each"),
    ((3,), (3, 4), (2,), r"broadcast_to: axes \(2,\) must name one axis"),
    ((3, 3), (3, 3), (1, 0), r"broadcast_to: axes \(1, 0\) must be increasing"),
    ((3,), (3, -1), None, r"broadcast_to: dim -1 in shape \(3, -1\) is negative"),
])
def test_broadcast_to_refuses_at_declaration(shape, target, axes, message):
    g = gc.Graph("b")
    v = g.input("v", shape)
    with pytest.raises(gc.ShapeError, match=message):
        gc.broadcast_to(v, target, axes=axes)


def test_broadcast_to_takes_nodes_only():
    with pytest.raises(gc.GraphError, match="broadcast_to: 2.0 is not a graph node"):
        gc.broadcast_to(2.0, (3,))


# -- graph files ---------------------------------------------------------------------------------
def test_keepdims_and_broadcast_graphs_survive_a_round_trip():
    g = gc.Graph("ln")
    x, gamma = g.input("x", ("n", 6)), g.param("gamma", (6,))
    y = layer_norm(x) * gc.broadcast_to(gamma, ("n", 6))
    loss = (y ** 2).sum()
    outputs = [y, x.sum(0, keepdims=True), *gc.grad(loss, [x, gamma])]
    buf = io.StringIO()
    gc.save_graph(outputs, buf)
    buf.seek(0)
    graph, loaded = gc.load_graph(buf)
    X, G = np.random.default_rng(6).standard_normal((3, 6)), np.random.default_rng(7).standard_normal(6)
    for a, b in zip(gc.compile(outputs)(x=X, gamma=G), gc.compile(loaded)(x=X, gamma=G)):
        np.testing.assert_array_equal(a, b)
    assert loaded[1].shape == (1, 6) and (loaded[0] - loaded[1]).shape == ("n", 6)  # still a kept axis


def test_layer_norm_derivation_reads_with_vectors_not_size_one_axes():
    g = gc.Graph("ln")
    x, w = g.input("x", ("n", 5)), g.input("w", ("n", 5))
    mu = gc.mean(x, 1, keepdims=True, name="mu")
    xc = (x - mu).rename("xc")
    var = gc.mean(xc ** 2, 1, keepdims=True, name="var")
    loss = ((xc / gc.sqrt(var + 1e-5)) * w).sum()
    text = gc.explain(gc.grad(loss, [x]), forward=True)
    assert "mu[n] = " in text and "xc[n,i] = -mu[n] + x[n,i]" in text and "var[n] = " in text
    assert "squeeze" not in text and "keepdims" not in text, text


def test_a_long_elementwise_chain_of_size_one_axes_is_not_walked_recursively():
    """kept axes are remembered per node: an EMA over (1, H) states, one step per node, must
    not recurse through the whole chain at each step (it hit Python's recursion limit)."""
    import inspect
    import sys

    g = gc.Graph("ema")
    m = g.input("m0", (1, 4))
    x = g.input("x", (1, 4))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 250)
    try:
        for _ in range(400):
            m = 0.9 * m + 0.1 * gc.tanh(x + m)
    finally:
        sys.setrecursionlimit(limit)
    assert m.shape == (1, 4)
