"""fold_scalar_factors: ``(c·u)·B = c·(u·B)``; a constant multiple read only by contractions is never made.

Each case checks what the simplified graph computes (whether some node still scales the
input) and that the compiled values agree with the unfused graph in float64.
"""

import numpy as np
import pytest

import graphc as gc
from graphc.compiler.passes.simplification import _no_larger, simplify
from graphc.compiler.walk import toposort
from graphc.ops.elementwise import Elementwise


def _scales(outputs, x) -> bool:
    """Whether the simplified graph still has an elementwise node reading ``x``."""
    return any(isinstance(n.op, Elementwise) and any(i is x for i in n.inputs) for n in toposort(simplify(outputs)))


def _copy(feed):
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in feed.items()}


def _scaled_layer(name, batch, divisor):
    """``sum(relu((x/divisor)·W))`` for x of (batch, 6) and W of (6, 3): (graph, x, W, loss, dW)."""
    g = gc.Graph(name)
    x, W = g.input("x", (batch, 6)), g.param("W", (6, 3))
    loss = gc.sum(gc.relu(gc.matmul(x / divisor, W)))
    (dW,) = gc.grad(loss, [W])
    return g, x, W, loss, dW


def _agree(outputs, feed, updates=None, lowering="auto", rtol=1e-10, atol=1e-12):
    """Fused vs unfused: same outputs (shape, dtype, value) and same updated arrays."""
    runs = []
    for fuse in (True, False):
        f = _copy(feed)
        r = gc.compile(outputs, fuse=fuse, updates=updates, lowering=lowering if fuse else "auto")(f)
        runs.append((r, f))
    (r1, f1), (r2, f2) = runs
    for a, b in zip(r1, r2):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    for k in f1:
        if isinstance(f1[k], np.ndarray):
            np.testing.assert_allclose(f1[k], f2[k], rtol=rtol, atol=atol, err_msg=k)
    return r1


SCALES = {"x/255": lambda x: x / 255, "0.5*x": lambda x: 0.5 * x, "-x": lambda x: -x, "x*3": lambda x: x * 3}


@pytest.mark.parametrize("scale", SCALES)
def test_a_scaled_input_read_by_products_is_never_made(scale):
    rng = np.random.default_rng(0)
    g = gc.Graph("fold")
    x, W, b = g.input("x", (8, 6)), g.param("W", (6, 3)), g.param("b", (3,))
    loss = gc.sum(gc.relu(gc.matmul(SCALES[scale](x), W) + b))
    # dW = (c·x)ᵀ·dA reads the scaled input too; x·W (8 x 3) and dW (6 x 3) together are smaller than x
    outputs = [loss, *gc.grad(loss, [W, b])]
    assert not _scales(outputs, x)
    _agree(outputs, {"x": rng.standard_normal((8, 6)), "W": rng.standard_normal((6, 3)), "b": rng.standard_normal(3)})


def test_gradients_through_a_folded_scale_match_finite_differences():
    rng = np.random.default_rng(1)
    g = gc.Graph("fold_grads")
    x, t = g.input("x", (20, 8)), g.input("t", (20, 4))
    W1, b1, W2 = g.param("W1", (8, 5)), g.param("b1", (5,)), g.param("W2", (5, 4))
    loss = gc.softmax_cross_entropy(gc.matmul(gc.relu(gc.matmul(x / 255, W1) + b1), W2), t)
    assert not _scales([loss, *gc.grad(loss, [W1, b1, W2])], x)
    values = {"x": rng.integers(0, 256, (20, 8)).astype(float), "t": np.eye(4)[rng.integers(0, 4, 20)],
              "W1": rng.standard_normal((8, 5)), "b1": rng.standard_normal(5), "W2": rng.standard_normal((5, 4))}
    gc.check_grads(loss, [W1, b1, W2], values)


def test_a_symbolic_batch_counts_as_larger_than_fixed_dims():
    # dW (6 x 3) and x·W (n x 3) against x (n x 6): smaller for every batch beyond a few rows,
    # so the factor moves whether dW is returned or feeds an update.
    g, x, W, loss, dW = _scaled_layer("symbolic", "n", 255)
    assert not _scales([loss, dW], x)
    assert not _scales([loss, W - 0.1 * dW], x)
    wide = gc.einsum("ij,k->ijk", x / 255, g.input("v", (3,)))  # n x 6 x 3: larger than x
    assert _scales([wide], x)


def test_the_fused_update_takes_the_factor_as_its_gemm_alpha():
    rng = np.random.default_rng(2)
    _, x, W, loss, dW = _scaled_layer("fold_update", 7, 4)
    fn = gc.compile(loss, updates={W: W - 0.1 * dW})
    xv, wv = rng.standard_normal((7, 6)), rng.standard_normal((6, 3))
    w = wv.copy()
    fn(x=xv, W=w)
    mask = (xv / 4) @ wv > 0
    np.testing.assert_allclose(w, wv - 0.1 * (xv / 4).T @ mask, rtol=1e-12)
    assert "rt.GemmAccumulate(dtype, True, False, -0.025, 1.0" in fn.source  # α = -lr/4
    assert not any(f"xp.{ufunc}(a0" in fn.source for ufunc in ("divide", "multiply"))  # x itself is read by BLAS only


def test_a_scaled_input_also_read_elementwise_is_made_once_and_not_folded():
    g = gc.Graph("keep")
    x, W = g.input("x", (4, 6)), g.param("W", (6, 3))
    xs = x / 255
    outputs = [gc.sum(gc.matmul(xs, W)), gc.sum(xs * xs)]
    assert _scales(outputs, x)
    _agree(outputs, {"x": np.arange(24.0).reshape(4, 6), "W": np.ones((6, 3))})


def test_a_scaled_output_is_not_folded():
    g = gc.Graph("out")
    x, W = g.input("x", (4, 6)), g.param("W", (6, 3))
    xs = x * 0.5
    assert _scales([xs, gc.matmul(xs, W)], x)


def test_no_factor_moves_onto_a_larger_product_that_nothing_absorbs():
    g = gc.Graph("outer")
    u, w = g.input("u", (3,)), g.input("w", (1000,))
    outer = gc.einsum("i,j->ij", u * 2, w)  # an output 333x the size of u: scale u, not the product
    assert _scales([outer], u)
    _agree([outer], {"u": np.arange(3.0), "w": np.linspace(0, 1, 1000)})


def test_a_scaled_operand_read_twice_contributes_its_factor_twice():
    g = gc.Graph("square")
    x = g.input("x", ("n", 5))
    xs = x / 3
    total = gc.einsum("ij,ij->", xs, xs)
    assert not _scales([total], x)
    xv = np.random.default_rng(3).standard_normal((4, 5))
    np.testing.assert_allclose(gc.compile(total)(x=xv), np.sum((xv / 3) ** 2), rtol=1e-12)


def test_two_scaled_operands_of_one_product_multiply_their_factors():
    g = gc.Graph("two")
    a, b = g.input("a", (3, 4)), g.input("b", (4, 2))
    out = gc.sum(gc.exp(gc.matmul(a * 2, b / 8)))
    assert not _scales([out], a) and not _scales([out], b)
    rng = np.random.default_rng(4)
    _agree([out], {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal((4, 2))})


@pytest.mark.parametrize("shapes, than, want", [
    ([(3,)], (3, 4), True), ([("n", 3)], ("n", 784), True), ([(784, 50)], ("n", 784), True),
    ([("n", 50), (784, 50)], ("n", 784), True), ([("n",)], (784, 50), False), ([()], ("n",), True),
    ([(5, 5)], (4, 6), False), ([(4, 6)], (6, 4), True), ([(4, 6), ()], (6, 4), False),
    ([(512, "n")], ("n",), False), ([("n", "n")], ("n", 9), False), ([(3, 1000)], (3,), False),
])
def test_no_larger_counts_symbolic_dims_as_larger_than_any_fixed_size(shapes, than, want):
    assert _no_larger(shapes, than) is want
