"""fold_scalar_factors: ``(c·u)·B = c·(u·B)``; a constant multiple read only by contractions is never made.

Which scaled nodes the pass removes (read from the simplified graph: ``_scales``), and that
the compiled values, gradients, updates and train steps agree with the unfused graph
(``fuse=False``) or with the pipeline without this pass (``nofold``) in float64.  The
``_elements_written`` tests count the elements the generated code writes: the pass exists to
make less work, so there the generated source is what is measured.  One ``xfail(strict=True)``
test documents what is left as it is (a 0-d array-API output's type); float16, where the
move could overflow, is refused by the dtype policy.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphc as gc
import graphc.compiler.passes.simplification as SIMPLIFY
from graphc.compiler.passes.simplification import _no_larger, simplify
from graphc.compiler.walk import toposort
from graphc.ops.contraction import Contraction
from graphc.ops.elementwise import Elementwise
from graphc.ops.fused import Gemm
from graphc.optim import SGD, Adam, Momentum, TrainStep
from helpers import examples, program_nodes, readers_of, update_gemms


# -- helpers -------------------------------------------------------------------------------------
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


@pytest.fixture
def nofold(monkeypatch):
    """``nofold(build)``: run ``build()`` (graph construction and compile) with this pass switched off."""
    def run(build):
        with monkeypatch.context() as m:
            m.setattr(SIMPLIFY, "fold_scalar_factors", lambda outputs: list(outputs))
            return build()
    return run


def _elements_written(fn, outputs) -> int:
    """Elements the generated ``run`` writes: every ``out=``/``copyto`` destination and returned copy.

    Read from the source on purpose: the pass exists to write fewer elements, and only the
    emitted code says how many are written."""
    src = fn.source
    shapes = {}
    for name, shape in re.findall(r"(\w+) = xp\.empty\(\(([^)]*)\),", src):
        shapes[name] = math.prod(int(d) for d in shape.split(",") if d.strip())
    total = 0
    body = src.split("def run(", 1)[1]
    for line in body.splitlines():
        line = line.strip()
        if line.startswith("#"):
            continue
        for name in re.findall(r"out=(\w+)", line) + re.findall(r"xp\.copyto\((\w+),", line):
            total += shapes.get(name, 1)
        m = re.match(r"r(\d+) = rt\.materialize", line)
        if m:
            total += math.prod(outputs[int(m.group(1))].shape)
    return total


def _written(nofold, build):
    outputs = build()
    folded = _elements_written(gc.compile(outputs), outputs)
    outputs = nofold(build)
    plain = _elements_written(nofold(lambda: gc.compile(outputs)), outputs)
    return folded, plain


# -- which scaled nodes are never made ------------------------------------------------------
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


def test_a_symbolic_batch_counts_as_larger_than_fixed_dims():
    # dW (6 x 3) and x·W (n x 3) against x (n x 6): smaller for every batch beyond a few rows,
    # so the factor moves whether dW is returned or feeds an update.
    g, x, W, loss, dW = _scaled_layer("symbolic", "n", 255)
    assert not _scales([loss, dW], x)
    assert not _scales([loss, W - 0.1 * dW], x)
    wide = gc.einsum("ij,k->ijk", x / 255, g.input("v", (3,)))  # n x 6 x 3: larger than x
    assert _scales([wide], x)


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


@pytest.mark.parametrize("lowering", ["auto", "array_api"])
def test_a_transposed_scaled_node_as_output_and_in_a_product(lowering):
    rng = np.random.default_rng(0)
    g = gc.Graph("T")
    x, W = g.input("x", (5, 6)), g.param("W", (5, 3))
    xs = x * 0.5
    outputs = [xs.T, gc.matmul(xs.T, W)]
    assert not _scales(outputs, x)
    _agree(outputs, {"x": rng.standard_normal((5, 6)), "W": rng.standard_normal((5, 3))}, lowering=lowering)


@pytest.mark.parametrize("lowering", ["auto", "array_api"])
def test_one_scaled_node_read_by_contractions_with_different_specs(lowering):
    rng = np.random.default_rng(1)
    g = gc.Graph("specs")
    x, W, v = g.input("x", (50, 6)), g.param("W", (6, 3)), g.input("v", (50,))
    xs = x / -7
    # Results together no larger than x (150 + 6 + 1 + 6 < 300 elements): all take the factor.
    small = [gc.matmul(xs, W), gc.einsum("ij,i->j", xs, v), gc.einsum("ij,ij->", xs, xs), gc.sum(xs, 0)]
    assert not _scales(small, x)
    # Add a transpose (300) and an outer product (2500): scaling x once is cheaper.
    every = small + [gc.einsum("ij->ji", xs), gc.einsum("ij,kj->ik", xs, xs)]
    assert _scales(every, x)
    feed = {"x": rng.standard_normal((50, 6)), "W": rng.standard_normal((6, 3)), "v": rng.standard_normal(50)}
    _agree(small, feed, lowering=lowering)
    _agree(every, feed, lowering=lowering)


def test_a_multi_operand_einsum_from_fuse_contractions_reads_the_unscaled_input():
    rng = np.random.default_rng(6)
    g = gc.Graph("chain")
    x, W1, W2 = g.input("x", ("n", 20)), g.param("W1", (20, 8)), g.param("W2", (8, 2))
    out = gc.matmul(gc.matmul(x / 255, W1), W2)  # merged into one 3-operand einsum, then folded
    assert not _scales([out], x)
    _agree([out], {"x": rng.integers(0, 256, (7, 20)).astype(float), "W1": rng.standard_normal((20, 8)),
                   "W2": rng.standard_normal((8, 2))})


@pytest.mark.parametrize("shapes, than, want", [
    ([(3,)], (3, 4), True), ([("n", 3)], ("n", 784), True), ([(784, 50)], ("n", 784), True),
    ([("n", 50), (784, 50)], ("n", 784), True), ([("n",)], (784, 50), False), ([()], ("n",), True),
    ([(5, 5)], (4, 6), False), ([(4, 6)], (6, 4), True), ([(4, 6), ()], (6, 4), False),
    ([(512, "n")], ("n",), False), ([("n", "n")], ("n", 9), False), ([(3, 1000)], (3,), False),
    ([()], (), True), ([("n", "n")], ("n",), False), ([("n",)], ("n", "n"), True), ([(3, "n")], ("n", 3), True),
    ([(2, 2)], (4,), True), ([(5,)], (4,), False),
])
def test_no_larger_counts_symbolic_dims_as_larger_than_any_fixed_size(shapes, than, want):
    assert _no_larger(shapes, than) is want


# -- values ------------------------------------------------------------------------------------
@pytest.mark.parametrize("lowering", ["auto", "array_api"])
def test_a_scaled_scalar_read_by_broadcasting_contractions(lowering):
    rng = np.random.default_rng(2)
    g = gc.Graph("scalar")
    s, M = g.input("s", ()), g.input("M", (3, 4))
    ss = s * 3
    outputs = [gc.exp(gc.einsum(",ij->ij", ss, M)), gc.einsum(",->", ss, ss), gc.einsum(",ij->", ss, M)]
    _agree(outputs, {"s": np.array(1.5), "M": rng.standard_normal((3, 4))}, lowering=lowering)


FACTORS = {"neg": lambda x: -x, "rational": lambda x: x / 255, "float": lambda x: x * 0.1,
           "neg_float": lambda x: x * -2.5, "big": lambda x: x * 1e6, "small": lambda x: x * 1e-6,
           "nested": lambda x: (x * 3) / 7, "double_neg": lambda x: -(-x * 2)}


@pytest.mark.parametrize("scale", FACTORS)
def test_factors_of_every_kind_fold_to_the_same_values_and_gradients(scale):
    rng = np.random.default_rng(3)
    g = gc.Graph("factors")
    x, W1, W2 = g.input("x", ("n", 6)), g.param("W1", (6, 4)), g.param("W2", (4, 3))
    h = gc.tanh(gc.matmul(FACTORS[scale](x), W1))
    loss = gc.sum(gc.matmul(FACTORS[scale](h), W2) ** 2)
    values = {"x": rng.standard_normal((5, 6)), "W1": rng.standard_normal((6, 4)) * 0.3,
              "W2": rng.standard_normal((4, 3)) * 0.3}
    _agree([loss, *gc.grad(loss, [W1, W2])], values)
    gc.check_grads(loss, [W1, W2], values)


def test_factors_that_cancel_give_the_plain_product():
    rng = np.random.default_rng(4)
    g = gc.Graph("cancel")
    x, W = g.input("x", (5, 6)), g.param("W", (6, 3))
    outputs = [gc.matmul(x * 2, W / 2), gc.matmul(x * 4, W * 0.25), gc.matmul(-x, -W)]
    _agree(outputs, {"x": rng.standard_normal((5, 6)), "W": rng.standard_normal((6, 3))})


def test_float32_outputs_keep_their_dtype_and_rank():
    rng = np.random.default_rng(5)
    g = gc.Graph("f32")
    x, W = g.input("x", ("n", 6)), g.param("W", (6, 3))
    xs = x / 3
    outputs = [gc.einsum("ij,ij->", xs, xs), gc.matmul(xs, W), xs.T]
    feed = {"x": rng.standard_normal((4, 6)).astype(np.float32), "W": rng.standard_normal((6, 3)).astype(np.float32)}
    for lowering in ("auto", "array_api"):
        fused = gc.compile(outputs, lowering=lowering)(feed)
        plain = gc.compile(outputs, fuse=False, lowering=lowering)(feed)
        for a, b in zip(fused, plain):
            assert a.shape == b.shape and a.dtype == b.dtype == np.float32
            np.testing.assert_allclose(a, b, rtol=1e-5)
    fused = gc.compile(outputs)(feed)
    plain = gc.compile(outputs, fuse=False)(feed)
    assert [type(a) for a in fused] == [type(b) for b in plain] == [np.ndarray] * 3


@pytest.mark.xfail(strict=True, reason=(
    "minor: with lowering='array_api' a 0-d contraction output (returned as a 0-d ndarray) becomes "
    "the elementwise `(1/9)*v0` after folding, which numpy returns as a numpy scalar (np.float32), "
    "not an ndarray; the unfused array_api result is a 0-d ndarray. (Elementwise 0-d outputs of "
    "the array_api lowering are numpy scalars already; the pass changes which outputs are.)"))
def test_array_api_scalar_output_stays_an_ndarray():
    g = gc.Graph("f32aa")
    x = g.input("x", ("n", 6))
    xs = x / 3
    out = [gc.einsum("ij,ij->", xs, xs)]
    feed = {"x": np.ones((4, 6), np.float32)}
    plain = gc.compile(out, fuse=False, lowering="array_api")(feed)[0]
    fused = gc.compile(out, lowering="array_api")(feed)[0]
    assert type(plain) is np.ndarray
    assert type(fused) is np.ndarray


def test_diagonals_traces_and_their_delta_gradients():
    rng = np.random.default_rng(7)
    g = gc.Graph("diag")
    M, v = g.input("M", (4, 4)), g.input("v", (4,))
    Ms = M * 3
    loss = gc.sum(gc.tanh(gc.einsum("ii,i->i", Ms, v * -2)) ** 2) + gc.trace(Ms) ** 2
    outputs = [gc.diagonal(Ms), gc.einsum("ij,jj->i", Ms / 2, Ms), loss, *gc.grad(loss, [M, v])]
    values = {"M": rng.standard_normal((4, 4)), "v": rng.standard_normal(4)}
    _agree(outputs, values)
    _agree(outputs, values, lowering="array_api")
    gc.check_grads(loss, [M, v], values)


def test_factors_whose_product_overflows_a_float():
    g = gc.Graph("overflow")
    a, b = g.input("a", (3, 3)), g.input("b", (3, 3))
    out = gc.matmul(a * 1e200, b * 1e200)
    feed = {"a": np.full((3, 3), 1e-200), "b": np.full((3, 3), 1e-200)}
    np.testing.assert_allclose(gc.compile(out, fuse=False)(feed), 3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        np.testing.assert_allclose(gc.compile(out)(feed), 3.0)


def test_factors_whose_product_underflows_a_float():
    g = gc.Graph("underflow")
    a, b = g.input("a", (3, 3)), g.input("b", (3, 3))
    out = gc.matmul(a * 1e-200, b * 1e-150)
    feed = {"a": np.full((3, 3), 1e100), "b": np.full((3, 3), 1e100)}
    np.testing.assert_allclose(gc.compile(out, fuse=False)(feed), 3e-150, rtol=1e-12)
    np.testing.assert_allclose(gc.compile(out)(feed), 3e-150, rtol=1e-12)


def test_float16_is_refused_so_moving_a_division_past_a_product_cannot_overflow_it():
    """In float16, (x/255)·W with x = 255 over 784 inputs is 784, but x·W overflows before the
    division that the pass moves after it.  The dtype policy refuses float16 at the call."""
    g = gc.Graph("f16")
    x, W = g.input("x", ("n", 784)), g.param("W", (784, 10))
    feed = {"x": np.full((4, 784), 255, np.float16), "W": np.ones((784, 10), np.float16)}
    for fuse in (True, False):
        with pytest.raises(gc.BindingError, match="dtype float16 is not supported"):
            gc.compile(gc.matmul(x / 255, W), fuse=fuse)(feed)


# -- gradients -------------------------------------------------------------------------------
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


def test_second_order_gradients_through_folded_scales():
    rng = np.random.default_rng(8)
    g = gc.Graph("second")
    x, W = g.input("x", (4, 5)), g.param("W", (5, 3))
    loss = gc.sum(gc.tanh(gc.matmul(x / 3, W)) ** 2)
    (dW,) = gc.grad(loss, [W])
    penalty = gc.sum(dW * dW) * 0.5
    values = {"x": rng.standard_normal((4, 5)), "W": rng.standard_normal((5, 3))}
    _agree([penalty, *gc.grad(penalty, [W, x])], values)
    gc.check_grads(penalty, [W, x], values)


def test_integer_label_loss_with_a_scaled_input_and_an_update():
    rng = np.random.default_rng(9)
    g = gc.Graph("labels")
    x, W, y = g.input("x", ("n", 8)), g.param("W", (8, 4)), g.input("y", ("n",), kind="int")
    loss = gc.softmax_cross_entropy(gc.matmul(x / 255, W), y)
    (dW,) = gc.grad(loss, [W])
    values = {"x": rng.integers(0, 256, (6, 8)).astype(float), "W": rng.standard_normal((8, 4)) * 0.01,
              "y": rng.integers(0, 4, 6)}
    _agree([loss, dW], values)
    _agree([loss], values, updates={W: W - 0.5 * dW})
    gc.check_grads(loss, [W], values)


# -- updates -------------------------------------------------------------------------------
def test_the_fused_update_takes_the_factor_as_its_gemm_alpha():
    rng = np.random.default_rng(2)
    _, x, W, loss, dW = _scaled_layer("fold_update", 7, 4)
    fn = gc.compile(loss, updates={W: W - 0.1 * dW})
    xv, wv = rng.standard_normal((7, 6)), rng.standard_normal((6, 3))
    w = wv.copy()
    fn(x=xv, W=w)
    mask = (xv / 4) @ wv > 0
    np.testing.assert_allclose(w, wv - 0.1 * (xv / 4).T @ mask, rtol=1e-12)
    gemm = update_gemms(fn)["W"]
    assert (gemm.op.alpha, gemm.op.beta) == (-0.025, 1.0)  # α = -lr/4
    readers = readers_of(fn, "x")  # x itself is read by products only: the forward one and the gemm update
    assert len(readers) == 2 and all(isinstance(n.op, (Contraction, Gemm)) for n in readers)


@pytest.mark.parametrize("spec", ["ni,nj->ij", "ni,nj->ji"])
@pytest.mark.parametrize("rule", ["sgd", "decay", "transposed"])
def test_gemm_updates_absorb_folded_factors(spec, rule):
    rng = np.random.default_rng(10)
    g = gc.Graph("gemm")
    W, A, B = g.param("W", (4, 4)), g.input("A", ("m", 4)), g.input("B", ("m", 4))
    P = gc.einsum(spec, A * -3, B / 2)
    new = {"sgd": W - 0.1 * P, "decay": 0.9 * W - 0.1 * P, "transposed": W - 0.1 * P.T}[rule]
    values = {"W": rng.standard_normal((4, 4)), "A": rng.standard_normal((5, 4)), "B": rng.standard_normal((5, 4))}
    _agree([gc.sum(gc.matmul(A, W))], values, updates={W: new})
    _agree([gc.sum(gc.matmul(A, W))], values, updates={W: new}, lowering="array_api")


def test_a_folded_operand_that_is_another_update_target_is_read_before_it_is_written():
    rng = np.random.default_rng(11)
    for first in (True, False):
        for product in (True, False):
            g = gc.Graph("targets")
            A, W, B = g.param("A", (4, 4)), g.param("W", (4, 4)), g.input("B", (4, 4))
            P = gc.matmul((2 * A).T, B) if product else (2 * A).T
            ups = {A: A * 0.5, W: W - 0.1 * P}
            if not first:
                ups = dict(reversed(list(ups.items())))
            _agree([gc.sum(gc.matmul(A, B))], {"A": rng.standard_normal((4, 4)), "W": rng.standard_normal((4, 4)),
                                               "B": rng.standard_normal((4, 4))}, updates=ups)


def _update_of_a_transposed_scaled_self(V):
    return gc.exp((2 * V).T) * (3 * V).T


def test_an_update_reading_a_transposed_scaled_copy_of_its_own_target(nofold):
    rng = np.random.default_rng(13)
    v0 = rng.standard_normal((4, 4))
    want = np.exp(2 * v0.T) * 3 * v0.T

    def build():
        g = gc.Graph("self")
        V, x = g.param("V", (4, 4)), g.input("x", (4,))
        return gc.compile(gc.sum(gc.matmul(V, x)), updates={V: _update_of_a_transposed_scaled_self(V)})

    v = v0.copy()
    nofold(build)(V=v, x=np.ones(4))  # fine without fold_scalar_factors
    np.testing.assert_allclose(v, want, rtol=1e-12)
    v = v0.copy()
    build()(V=v, x=np.ones(4))
    np.testing.assert_allclose(v, want, rtol=1e-12)


# -- train steps and check_numerics ----------------------------------------------------------------
def _train(nofold_run, opt, lowering="auto", check_numerics=False, fold=True):
    def build():
        g = gc.Graph("net")
        x, t = g.input("x", ("n", 12)), g.input("t", ("n", 4))
        W1, b1, W2 = g.param("W1", (12, 7)), g.param("b1", (7,)), g.param("W2", (7, 4))
        h = gc.relu(gc.matmul(x / 255, W1) + b1)
        loss = gc.softmax_cross_entropy(gc.matmul(h * 0.5, W2), t)
        rng = np.random.default_rng(0)
        params = {"W1": rng.standard_normal((12, 7)) * 0.3, "b1": np.zeros(7), "W2": rng.standard_normal((7, 4)) * 0.3}
        return TrainStep(loss, params, opt, lowering=lowering, check_numerics=check_numerics)
    step = build() if fold else nofold_run(build)
    rng = np.random.default_rng(1)
    losses = []
    for n in (5, 5, 3, 5):
        losses.append(step(x=rng.integers(0, 256, (n, 12)).astype(float), t=np.eye(4)[rng.integers(0, 4, n)]))
    return losses, {k: v.copy() for k, v in step.params.items()}, step


@pytest.mark.parametrize("make", [lambda: SGD(lr=0.1), lambda: Momentum(lr=0.1), lambda: Adam(lr=0.01)],
                         ids=["sgd", "momentum", "adam"])
def test_train_steps_agree_without_the_pass_with_array_api_and_with_check_numerics(nofold, make):
    losses, params, step = _train(nofold, make())
    if not isinstance(step.optimizer, Adam):  # Adam reads dW1 twice (m and v): x/255 is kept, by design
        # x/255 is never made: the factor went onto x·W1, and x is read by products only
        readers = readers_of(step, "x")
        assert readers and all(isinstance(n.op, (Contraction, Gemm)) for n in readers)
    for other in (_train(nofold, make(), fold=False), _train(nofold, make(), lowering="array_api"),
                  _train(nofold, make(), check_numerics=True)):
        np.testing.assert_allclose(losses, other[0], rtol=1e-10)
        for k in params:
            np.testing.assert_allclose(params[k], other[1][k], rtol=1e-10, atol=1e-13)


def test_check_numerics_compiles_without_folding_and_agrees():
    rng = np.random.default_rng(12)
    _, x, W, loss, dW = _scaled_layer("numerics", 5, 255)
    values = {"x": rng.standard_normal((5, 6)), "W": rng.standard_normal((6, 3))}
    checked = gc.compile([loss, dW], check_numerics=True)(values)
    for a, b in zip(checked, gc.compile([loss, dW])(values)):
        np.testing.assert_allclose(a, b, rtol=1e-10)


# -- random contractions of scaled operands ----------------------------------------------------------
_SIZES = {"i": 3, "j": 4, "k": 2, "l": 5}
_FACTOR = st.sampled_from([None, None, 2, -1, 0.5, -0.1, 7, 1e-3, "r3", "nest"])


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(terms=st.lists(st.text("ijkl", min_size=0, max_size=3).filter(lambda t: len(set(t)) == len(t)),
                      min_size=1, max_size=3),
       factors=st.lists(_FACTOR, min_size=3, max_size=3),
       keep=st.integers(0, 15), mode=st.sampled_from(["out", "ew", "sum", "grad", "two"]),
       lowering=st.sampled_from(["auto", "array_api"]), seed=st.integers(0, 2**16))
def test_random_contractions_of_scaled_operands_match_the_unfused_graph(terms, factors, keep, mode, lowering, seed):
    rng = np.random.default_rng(seed)
    g = gc.Graph("prop")
    letters = sorted(set("".join(terms)))
    out = "".join(c for n, c in enumerate(letters) if keep >> n & 1)
    leaves, feed, ops = [], {}, []
    for k, (t, f) in enumerate(zip(terms, factors)):
        shape = tuple(_SIZES[c] for c in t)
        leaf = g.input(f"a{k}", shape)
        leaves.append(leaf)
        feed[leaf.name] = np.asarray(rng.standard_normal(shape))
        ops.append(leaf if f is None else leaf / 3 if f == "r3" else (leaf * 3) / -5 if f == "nest" else leaf * f)
    e = gc.einsum(",".join(terms) + "->" + out, *ops)
    if mode == "out":
        outputs = [e]
    elif mode == "ew":
        outputs = [gc.tanh(e) + 1.0]
    elif mode == "sum":
        outputs = [gc.sum(gc.exp(e * 0.1))]
    elif mode == "two":
        outputs = [gc.sum(e * e), gc.einsum(",".join(terms) + "->", *ops)]
    else:
        loss = gc.sum(gc.tanh(e) ** 2)
        outputs = [loss, *gc.grad(loss, leaves)]
    _agree(outputs, feed, lowering=lowering, rtol=1e-9, atol=1e-11)


# -- less work: elements written, operations left --------------------------------------------------------
def test_the_element_count_helper_sees_the_saving_in_the_intended_case(nofold):
    def build():
        g = gc.Graph("mnist")
        x, W = g.input("x", (64, 784)), g.param("W", (784, 50))
        return [gc.sum(gc.relu(gc.matmul(x / 255, W)))]
    folded, plain = _written(nofold, build)
    assert folded < plain  # 64x50 scaled instead of 64x784


def test_a_scalar_factor_is_not_moved_onto_a_broadcast(nofold):
    def build():
        g = gc.Graph("bcast")
        Z = g.input("Z", (200, 100))
        return gc.grad(gc.sum(gc.relu(Z)) ** 2, [Z])
    folded, plain = _written(nofold, build)
    assert folded <= plain, (folded, plain)


def test_a_factor_is_not_moved_onto_a_much_larger_product_read_elementwise(nofold):
    def build():
        g = gc.Graph("outer")
        u, w = g.input("u", (3,)), g.input("w", (100_000,))
        return [gc.exp(gc.einsum("i,j->ij", u * 2, w))]
    folded, plain = _written(nofold, build)
    assert folded <= plain, (folded, plain)


def test_a_scaled_node_read_by_several_same_size_contractions_is_scaled_once(nofold):
    def build():
        g = gc.Graph("readers")
        x, a, b = g.input("x", (200, 200)), g.input("a", (200,)), g.input("b", (200,))
        xs = x * 2
        return [gc.einsum("ij,j->ij", xs, a), gc.einsum("ij,i->ij", xs, b), gc.einsum("ij->ji", xs)]
    folded, plain = _written(nofold, build)
    assert folded <= plain, (folded, plain)


def test_float_factors_that_cancel_leave_no_multiply_by_one():
    g = gc.Graph("one")
    x, W = g.input("x", (5, 6)), g.param("W", (6, 3))
    fn = gc.compile(gc.matmul(x * 4, W * 0.25))
    assert [type(n.op) for n in program_nodes(fn)] == [Contraction], fn.source  # the product alone, scaled by nothing


def test_a_named_product_keeps_its_name_when_the_factors_cancel():
    g = gc.Graph("name")
    x, W = g.input("x", (5, 6)), g.param("W", (6, 3))
    fn = gc.compile(gc.matmul(x * 2, W / 2, name="logits"))
    assert [n.name for n in program_nodes(fn)] == ["logits"]
