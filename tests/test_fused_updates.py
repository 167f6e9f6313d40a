"""Gemm updates: an update ``W ← β·W + α·A·B`` fused into one gemm accumulating into W.

The numpy lowering agrees with the array-API lowering (and plain float64 numpy) for every
way an update can be written: operand orientations, layouts, zero sizes, dtypes BLAS does
not take, targets aliasing operands, graphs that read around the update, optimizers.
Whether the update was fused is read from the compiled program (``helpers.update_gemms``).
Calls from several threads are in test_concurrency.py.
"""

import numpy as np
import pytest

import graphc as gc
from graphc.optim import SGD, Adam, Momentum, TrainStep
from helpers import stored_as, update_gemms

LOWERINGS = ["auto", "array_api"]


def _w_x_v(rng, m=3, n=5, k=4):
    return rng.standard_normal((m, n)), rng.standard_normal((k, m)), rng.standard_normal((k, n))


@pytest.mark.parametrize("lowering", LOWERINGS)
@pytest.mark.parametrize("rule", ["gemm", "elementwise"])
def test_two_targets_given_the_same_update_node_both_receive_its_value(lowering, rule):
    # updates={W: u, W2: u}: both arrays must end up holding u = f(old W).  A review found the
    # numpy lowering wrote only one of them in place (and, fused, applied W's rule to W2).
    rng = np.random.default_rng(0)
    w, x, v = _w_x_v(rng)
    w2 = rng.standard_normal(w.shape)
    g = gc.Graph("shared_update")
    W, W2 = g.param("W", w.shape), g.param("W2", w.shape)
    X, V = g.input("X", x.shape), g.input("V", v.shape)
    u = W - gc.matmul(X.T, V) if rule == "gemm" else W * 2.0
    want = w - x.T @ v if rule == "gemm" else 2.0 * w
    fn = gc.compile(gc.sum(X), updates={W: u, W2: u}, lowering=lowering)
    a, b = w.copy(), w2.copy()
    fn(W=a, W2=b, X=x, V=v)
    np.testing.assert_allclose(b, want, rtol=1e-12)
    np.testing.assert_allclose(a, want, rtol=1e-12)


_SPECS = [f"{p},{q}->ij" for a in ("ik", "ki") for b in ("kj", "jk") for p, q in ((a, b), (b, a))]


@pytest.mark.parametrize("spec", _SPECS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_update_every_operand_orientation_non_square(spec, dtype):
    m, n, k = 3, 5, 4
    size = {"i": m, "j": n, "k": k}
    sa, sb = spec.split("->")[0].split(",")
    rng = np.random.default_rng(1)
    w = rng.standard_normal((m, n)).astype(dtype)
    a = rng.standard_normal(tuple(size[c] for c in sa)).astype(dtype)
    b = rng.standard_normal(tuple(size[c] for c in sb)).astype(dtype)
    g = gc.Graph("orient")
    W, A, B = g.param("W", (m, n)), g.input("A", a.shape), g.input("B", b.shape)
    fn = gc.compile(gc.sum(A), updates={W: 0.9 * W - 0.3 * gc.einsum(spec, A, B)})
    assert set(update_gemms(fn)) == {"W"}
    want = 0.9 * w.astype(np.float64) - 0.3 * np.einsum(spec, a.astype(np.float64), b.astype(np.float64))
    for _ in range(2):  # the second call runs the cached BLAS arguments
        c = w.copy()
        fn(W=c, A=a, B=b)
        np.testing.assert_allclose(c, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)


_WRITABLE_LAYOUTS = ["C", "F", "strided", "padded", "reversed"]  # strided: numpy's path


@pytest.mark.parametrize("mnk", [(3, 5, 4), (1, 5, 4), (3, 1, 4), (3, 5, 1), (3, 5, 0), (0, 5, 4), (1, 1, 1)])
def test_fused_update_any_layout_and_zero_sizes(mnk):
    m, n, k = mnk
    g = gc.Graph("layouts")
    W, X, V = g.param("W", ("m", "p")), g.input("X", ("k", "m")), g.input("V", ("k", "p"))
    fn = gc.compile(gc.sum(X), updates={W: 0.5 * W - 0.25 * gc.matmul(X.T, V)})
    rng = np.random.default_rng(2)
    w, x, v = _w_x_v(rng, m, n, k)
    want = 0.5 * w - 0.25 * x.T @ v
    for c in (stored_as(w, kind) for kind in _WRITABLE_LAYOUTS):
        for xs in (stored_as(x, kind) for kind in _WRITABLE_LAYOUTS):
            vs = v.copy()
            c[...] = w
            fn(W=c, X=xs, V=vs)
            np.testing.assert_allclose(c, want, rtol=1e-12, atol=1e-12)


def test_fused_update_when_target_array_is_also_the_operand_array():
    rng = np.random.default_rng(3)
    w, v = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    g = gc.Graph("alias_args")
    W, X, V = g.param("W", (4, 4)), g.input("X", (4, 4)), g.input("V", (4, 4))
    fn = gc.compile(gc.sum(V), updates={W: W - gc.matmul(X.T, V)})
    c = w.copy()
    fn(W=c, X=c, V=v)  # the caller passes one array twice: the product must read the old values
    np.testing.assert_allclose(c, w - w.T @ v, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float16, np.longdouble])
def test_a_fused_update_refuses_floats_other_than_float32_and_float64(dtype):
    """The dtype policy: float16 overflows where constant factors move past products (and Adam's
    eps rounds to 0 in it); longdouble has no BLAS.  The call says so and writes nothing."""
    rng = np.random.default_rng(4)
    w, x, v = (a.astype(dtype) for a in _w_x_v(rng))
    g = gc.Graph("dtypes")
    W, X, V = g.param("W", w.shape), g.input("X", x.shape), g.input("V", v.shape)
    fn = gc.compile(gc.sum(X), updates={W: W - 0.5 * gc.matmul(X.T, V)})
    before = w.copy()
    with pytest.raises(gc.BindingError, match=rf"'W': dtype {np.dtype(dtype).name} is not supported"):
        fn(W=w, X=x, V=v)
    np.testing.assert_array_equal(w, before)


def _both(build, values):
    """``build(graph) -> (outputs, updates)`` compiled with both lowerings, each run on its own copy
    of ``values``: the outputs and the updated arrays agree; returns the numpy lowering's function."""
    results = []
    for lowering in LOWERINGS:
        g = gc.Graph("both")
        outs, updates = build(g)
        fn = gc.compile(outs, updates=updates, lowering=lowering)
        feed = {k: a.copy() for k, a in values.items() if k in g.leaves}
        got = fn(**feed)
        results.append((got if isinstance(got, tuple) else (got,), feed, fn))
    (fast, fast_feed, fn), (ref, ref_feed, _) = results
    assert len(fast) == len(ref)
    for a, b in zip(fast, ref):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)
    for k in ref_feed:
        np.testing.assert_allclose(fast_feed[k], ref_feed[k], rtol=1e-12, atol=1e-14)
    return fn


@pytest.mark.parametrize("case", ["reads_itself", "product_returned", "operand_updated_too", "plain"])
def test_fused_updates_agree_with_the_array_api_lowering(case):
    rng = np.random.default_rng(0)
    values = {k: rng.standard_normal((4, 4)) for k in ("W", "X", "V")}

    def build(g):
        W, X, V = (g.param(k, (4, 4)) for k in ("W", "X", "V"))
        if case == "reads_itself":  # W ← W - 0.1·W·X: the product reads the target
            prod = gc.matmul(W, X)
            return gc.sum(W), {W: W - 0.1 * prod}
        if case == "product_returned":  # the product is also an output: it must exist
            prod = gc.matmul(X, V)
            return prod, {W: W - prod}
        if case == "operand_updated_too":  # X is updated as well: the product must read the old X
            prod = gc.matmul(X, V)
            return gc.sum(W), {W: W - prod, X: X * 2.0}
        prod = gc.matmul(X.T, V)
        return gc.sum(W), {W: 0.9 * W - 0.5 * prod}

    fn = _both(build, values)
    assert bool(update_gemms(fn)) == (case == "plain")


@pytest.mark.parametrize("case", ["chain_reads_new_V", "chain_reads_old_V", "new_W_and_operand_read_later",
                                  "update_returned_and_transposed", "view_operand"])
def test_fused_updates_in_graphs_that_read_around_them(case):
    rng = np.random.default_rng(5)
    values = {"W": rng.standard_normal((3, 5)), "V": rng.standard_normal((4, 5)), "X": rng.standard_normal((4, 3)),
              "A": rng.standard_normal((2, 4)), "B": rng.standard_normal((2, 5)), "S": rng.standard_normal((3, 3))}

    def build(g):
        W, V, X = g.param("W", (3, 5)), g.param("V", (4, 5)), g.input("X", (4, 3))
        A, B, S = g.input("A", (2, 4)), g.input("B", (2, 5)), g.input("S", (3, 3))
        if case.startswith("chain"):
            Vn = V - gc.matmul(A.T, B)
            Wn = W - 0.5 * gc.matmul(X.T, Vn if case == "chain_reads_new_V" else V)
            return [gc.sum(X), gc.sum(Vn)], {V: Vn, W: Wn}
        h = gc.tanh(gc.matmul(S, W))  # reads the old W, an operand of W's product
        operand = gc.transpose(gc.transpose(h)) if case == "view_operand" else h
        Wn = W - 0.5 * gc.matmul(S.T, operand)
        if case == "update_returned_and_transposed":
            return [Wn, gc.transpose(Wn), gc.sum(h)], {W: Wn}
        k = gc.exp(h) * 2.0  # may take a dying operand's buffer: never h's, which the update still reads
        return [gc.sum(Wn * k)], {W: Wn}

    fn = _both(build, values)
    assert bool(update_gemms(fn)) == (case != "chain_reads_old_V")  # that product reads a target


def _deep_net(integer_labels):
    g = gc.Graph("deep")
    x = g.input("x", ("n", 6))
    t = g.input("t", ("n",), kind="int") if integer_labels else g.input("t", ("n", 4))
    W1, W2, W3 = g.param("W1", (6, 5)), g.param("W2", (5, 5)), g.param("W3", (5, 4))
    b1, b2 = g.param("b1", (5,)), g.param("b2", (5,))
    h2 = gc.tanh(gc.relu(x @ W1 + b1) @ W2 + b2)
    return gc.softmax_cross_entropy(gc.einsum("nh,hc->nc", h2, W3), t)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("integer_labels", [False, True])
@pytest.mark.parametrize("make", [lambda: SGD(lr=0.3), lambda: Momentum(lr=0.2, momentum=0.8), lambda: Adam(lr=0.05)],
                         ids=["sgd", "momentum", "adam"])
def test_optimizers_three_layers_agree_with_the_array_api_lowering(dtype, integer_labels, make):
    rng = np.random.default_rng(6)
    shapes = {"W1": (6, 5), "W2": (5, 5), "W3": (5, 4), "b1": (5,), "b2": (5,)}
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    copies = {k: a.copy() for k, a in params.items()}
    loss = _deep_net(integer_labels)
    fast, ref = TrainStep(loss, params, make()), TrainStep(loss, copies, make(), lowering="array_api")
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    for n in (7, 7, 3, 7):  # a new batch size specialises again
        labels = rng.integers(0, 4, n)
        x, t = rng.standard_normal((n, 6)).astype(dtype), labels if integer_labels else np.eye(4, dtype=dtype)[labels]
        np.testing.assert_allclose(fast(x=x, t=t), ref(x=x, t=t), **tol)
        for k in params:
            np.testing.assert_allclose(params[k], copies[k], **tol)
        for k in fast.state:
            np.testing.assert_allclose(fast.state[k], ref.state[k], **tol)
