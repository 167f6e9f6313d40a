"""Gemm epilogues: ``α·(A·B) + b`` lowered as ``copyto(result, b)`` and one gemm with β = 1 (the
numpy lowering), and ``f(α·(A·B) + b)`` as the same followed by f in place.

Which sums are fused, and that the values agree with the unfused graph or the array-API
lowering in float64: for every product orientation, memory layout, batch size, dtype,
aliasing between operands and bias, and next to in-place updates of the parameters the
product reads.  Whether the fusion was made is read from the compiled program's Gemm nodes
(``helpers.epilogue_gemms``).  BLAS's layout cache and pointers are in test_blas.py, calls
from several threads in test_concurrency.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy

import graphc as gc
from graphc.backends.numpy import fusions
from graphc.optim import SGD, Adam, Momentum, TrainStep
from helpers import LAYOUTS, assert_agree, epilogue_gemms, program_nodes, readers_of, reference_logits, stored_as

_SPECS = ["ik,kj->ij", "ki,kj->ij", "ik,jk->ij", "ki,jk->ij"]


def _shapes(spec, m=5, n=3, k=4):
    sizes = {"i": m, "j": n, "k": k}
    return [tuple(sizes[c] for c in term) for term in spec.split("->")[0].split(",")]


def _tuple(r):
    return r if isinstance(r, tuple) else (r,)


def _run(outputs, feed):
    """Compile ``outputs`` fused and unfused, check that they agree on ``feed``; the fused function."""
    fused = gc.compile(outputs)
    got = fused(feed)
    want = gc.compile(outputs, fuse=False)(feed)
    for a, b in zip(_tuple(got), _tuple(want)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    return fused


# -- what is fused -------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", _SPECS)
@pytest.mark.parametrize("form", ["P + b", "b + P", "P/4 + b", "b - P", "-2*P + b"])
def test_a_product_plus_a_row_bias_is_one_gemm(spec, form):
    rng = np.random.default_rng(0)
    g = gc.Graph("epilogue")
    sa, sb = _shapes(spec)
    A, B, b = g.input("A", sa), g.param("B", sb), g.param("b", (3,))
    P = gc.einsum(spec, A, B)
    out = {"P + b": lambda: P + b, "b + P": lambda: b + P, "P/4 + b": lambda: P / 4 + b,
           "b - P": lambda: b - P, "-2*P + b": lambda: -2 * P + b}[form]()
    # read twice (as a layer's pre-activation is, by the ReLU and its mask), so it stays one node
    fn = _run([gc.relu(out), gc.sum(out * out)], {"A": rng.standard_normal(sa), "B": rng.standard_normal(sb),
                                                  "b": rng.standard_normal(3)})
    assert epilogue_gemms(fn)


def test_a_full_matrix_addend_is_copied_in_too():
    rng = np.random.default_rng(1)
    g = gc.Graph("residual")
    x, W = g.input("x", (6, 6)), g.param("W", (6, 6))
    z = gc.matmul(x, W) + x
    fn = _run([gc.relu(z), gc.sum(z * z)], {"x": rng.standard_normal((6, 6)), "W": rng.standard_normal((6, 6))})
    assert epilogue_gemms(fn)  # the addend x is also the product's operand: read, never written


@pytest.mark.parametrize("case", ["product read twice", "bias scaled", "product returned"])
def test_what_is_not_fused_stays_correct(case):
    rng = np.random.default_rng(2)
    g = gc.Graph("plain")
    x, W = g.input("x", (5, 4)), g.param("W", (4, 3))
    P = gc.matmul(x, W)
    if case == "product read twice":
        b = g.param("b", (3,))
        z = P + b
        outputs = [gc.relu(z), gc.sum(z * P)]
    elif case == "bias scaled":
        b = g.param("b", (3,))
        z = P + 2 * b
        outputs = [gc.relu(z), gc.sum(z * z)]
    else:
        b = g.param("b", (3,))
        z = P + b
        outputs = [P, gc.relu(z), gc.sum(z * z)]
    fn = _run(outputs, {"x": rng.standard_normal((5, 4)), "W": rng.standard_normal((4, 3)),
                        "b": rng.standard_normal(3)})
    assert not epilogue_gemms(fn)


_FUNCTIONS = {"relu": gc.relu, "tanh": gc.tanh, "sigmoid": gc.sigmoid, "exp": gc.exp,
              "square": lambda z: z * z,
              "exp(z) + z": lambda z: gc.exp(z) + z}  # reads z after writing: the gemm writes a scratch


@pytest.mark.parametrize("spec", _SPECS)
@pytest.mark.parametrize("f", list(_FUNCTIONS))
def test_a_function_of_a_product_plus_a_bias_runs_in_place_after_the_gemm(spec, f):
    """f(α·P + b) read once is one fused elementwise node: the gemm makes α·P + b, f follows."""
    rng = np.random.default_rng(4)
    g = gc.Graph("layer")
    sa, sb = _shapes(spec)
    A, B, b = g.input("A", sa), g.param("B", sb), g.param("b", (3,))
    out = _FUNCTIONS[f](gc.einsum(spec, A, B) / 4 + b)
    fn = _run([gc.sum(out * out)], {"A": rng.standard_normal(sa), "B": rng.standard_normal(sb),
                                    "b": rng.standard_normal(3)})
    (gemm,) = epilogue_gemms(fn)
    assert readers_of(fn, "b") == [gemm]  # the bias is read once, by the copy into the gemm's result


@pytest.mark.parametrize("case", ["bias read again", "product read again"])
def test_a_function_that_reads_the_bias_or_product_again_is_not_an_epilogue(case):
    rng = np.random.default_rng(5)
    g = gc.Graph("layer")
    x, W, b = g.input("x", (5, 4)), g.param("W", (4, 3)), g.param("b", (3,))
    P = gc.matmul(x, W)
    out = gc.relu(P + b) * b if case == "bias read again" else gc.relu(P + b) * P
    fn = _run([gc.sum(out * out)], {"x": rng.standard_normal((5, 4)), "W": rng.standard_normal((4, 3)),
                                    "b": rng.standard_normal(3)})
    assert not epilogue_gemms(fn)


@pytest.mark.parametrize("name, fn", [
    ("softsign", lambda x: x / (1 + sympy.Abs(x))),
    ("softplus", lambda x: sympy.log(1 + sympy.exp(x))),
    ("sin_plus_cos", lambda x: sympy.sin(x) + sympy.cos(x)),  # in place it would read x after writing:
    ("exp_plus_square", lambda x: sympy.exp(x) + x ** 2),  # the gemm then writes a scratch buffer
])
def test_a_user_function_of_a_product_plus_a_bias_gets_the_epilogue(name, fn):
    rng = np.random.default_rng(7)
    g = gc.Graph("layer")
    x, W, b = g.input("x", (5, 4)), g.param("W", (4, 3)), g.param("b", (3,))
    out = gc.elementwise(name, fn)(gc.matmul(x, W) / 4 + b)
    compiled = _run([gc.sum(out * out)], {"x": rng.standard_normal((5, 4)), "W": rng.standard_normal((4, 3)),
                                          "b": rng.standard_normal(3)})
    assert epilogue_gemms(compiled)


def test_an_f_numpy_lacks_is_reported_with_the_users_terms():
    """The symbol standing for the sum is named after it, so the error shows the expression."""
    gamma = gc.elementwise("gamma", lambda z: sympy.gamma(z))
    g = gc.Graph("gamma")
    x, W, b = g.input("x", (5, 4)), g.param("W", (4, 3)), g.param("b", (3,))
    out = gamma(gc.matmul(x, W) / 4 + b)
    with pytest.raises(gc.GraphError, match=r"no numpy function for 'gamma' in the elementwise expression "
                                             r"gamma\(\(\w+/4 \+ \w+\)\)"):
        gc.compile([out])(x=np.ones((5, 4)), W=np.ones((4, 3)), b=np.ones(3))


def test_the_evaluation_graph_adds_the_first_bias_inside_its_gemm():
    """argmax(relu(x·W1/255 + b1)·W2 + b2): no divide or add pass over the hidden layer."""
    from graphc.evaluate import Evaluator
    from graphc.models import init_two_layer_params, two_layer_net

    rng = np.random.default_rng(6)
    params = init_two_layer_params(rng, 20, 6, 4, weight_init_std=0.5)
    evaluator = Evaluator(two_layer_net(20, 6, 4, input_divisor=255).logits, 16)
    x = rng.integers(0, 256, (16, 20)).astype(np.float32)
    pred = evaluator.fn(params, x=x)
    np.testing.assert_array_equal(pred, reference_logits(params, x).argmax(axis=1))
    # the whole program: two gemms (the first scaled by 1/255 and followed by the ReLU) and the argmax
    program = program_nodes(evaluator)
    assert [type(n.op).__name__ for n in program] == ["Gemm", "Gemm", "Argmax"]
    hidden, logits, _ = program
    assert hidden.op.alpha == 1 / 255 and hidden.op.post is not None and logits.op.post is None


# -- without BLAS ----------------------------------------------------------------------------------
def test_without_blas_the_same_code_runs_on_numpy(no_blas):
    test_a_product_plus_a_row_bias_is_one_gemm("ik,kj->ij", "P/4 + b")


def test_without_blas_every_layout_takes_numpy_path(no_blas):
    test_successive_calls_with_every_layout_and_batch_size(np.float64, False)
    test_successive_calls_with_every_layout_and_batch_size(np.float32, True)


# -- layouts, batch sizes, dtypes, aliasing --------------------------------------------------------
def _spec_graph(spec, form):
    g = gc.Graph("epi")
    sizes = {"i": "n", "j": 3, "k": 4}
    ta, tb = spec.split("->")[0].split(",")
    A = g.input("A", tuple(sizes[c] for c in ta))
    B = g.param("B", tuple(sizes[c] for c in tb))
    b, C = g.param("b", (3,)), g.input("C", ("n", 3))
    P = gc.einsum(spec, A, B)
    z = {"P/255 + b": lambda: P / 255 + b, "b - P": lambda: b - P, "-2P + C": lambda: -2 * P + C,
         "C + P": lambda: C + P}[form]()
    return (ta, tb), z


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("returned", [True, False])
def test_successive_calls_with_every_layout_and_batch_size(dtype, returned):
    rng = np.random.default_rng(1)
    for spec in _SPECS:
        for form in ("P/255 + b", "b - P", "-2P + C", "C + P"):
            (ta, tb), z = _spec_graph(spec, form)
            outputs = [z] if returned else [gc.relu(z), gc.sum(z * z)]
            fn, ref = gc.compile(outputs), gc.compile(outputs, lowering="array_api")
            assert epilogue_gemms(fn)
            for call, n in enumerate((5, 7, 5, 1, 5, 2, 5)):
                sz = {"i": n, "j": 3, "k": 4}
                vals = {"A": rng.standard_normal(tuple(sz[c] for c in ta)),
                        "B": rng.standard_normal(tuple(sz[c] for c in tb)),
                        "b": rng.standard_normal(3), "C": rng.standard_normal((n, 3))}
                vals = {k: v.astype(dtype) for k, v in vals.items()}
                feed = {k: stored_as(v, LAYOUTS[(call + j) % len(LAYOUTS)]) for j, (k, v) in enumerate(vals.items())}
                assert_agree(fn(feed), ref({k: v.copy() for k, v in vals.items()}), dtype)
                for k in vals:  # inputs are only read
                    assert np.array_equal(feed[k], vals[k])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_empty_and_unit_dims_blas_does_not_take(dtype):
    rng = np.random.default_rng(9)
    g = gc.Graph("dims")
    x, W, b = g.input("x", ("n", "k")), g.param("W", ("k", "m")), g.param("b", ("m",))
    z = gc.matmul(x, W) * 0.5 + b
    for outputs in ([z], [gc.relu(z), gc.sum(z * z)]):
        fn, ref = gc.compile(outputs), gc.compile(outputs, fuse=False)
        assert epilogue_gemms(fn)
        for n, k, m in [(5, 4, 3), (0, 4, 3), (5, 0, 3), (5, 4, 1), (1, 4, 3), (1, 1, 1), (3, 4, 3)]:
            vals = {"x": rng.standard_normal((n, k)).astype(dtype), "W": rng.standard_normal((k, m)).astype(dtype),
                    "b": rng.standard_normal(m).astype(dtype)}
            got, want = _tuple(fn(vals)), _tuple(ref(vals))
            for p, q in zip(got, want):
                assert p.dtype == q.dtype == np.dtype(dtype) and p.shape == q.shape
                tol = 2e-4 if np.dtype(dtype) == np.float32 else 1e-10
                np.testing.assert_allclose(p.astype(np.float64), q.astype(np.float64), rtol=tol, atol=tol)


def test_operands_and_bias_that_alias_each_other():
    rng = np.random.default_rng(3)
    g = gc.Graph("alias")
    x, M, c = g.input("x", (4, 4)), g.input("M", (4, 4)), g.input("c", (4, 4))
    v = g.input("v", (4,))
    z1 = gc.matmul(x, M) + c
    z2 = gc.einsum("ik,jk->ij", x, M) + v
    outputs = [z1, gc.relu(z2), gc.sum(z2 * z2)]
    fn, ref = gc.compile(outputs), gc.compile(outputs, lowering="array_api")
    assert len(epilogue_gemms(fn)) == 2
    a = rng.standard_normal((4, 4))
    feeds = [dict(x=a, M=a, c=a, v=a[1]),  # every operand and bias is the same memory
             dict(x=a, M=a.T, c=a.T, v=a[:, 2]),  # transposed views and a strided column
             dict(x=a.T, M=a, c=np.broadcast_to(a[0], (4, 4)), v=a[0]),  # a zero-stride bias
             dict(x=a, M=rng.standard_normal((4, 4)), c=a, v=a[3])]
    for feed in feeds:
        assert_agree(fn(feed), ref({k: np.array(w) for k, w in feed.items()}))


def test_returned_epilogue_results_are_fresh():
    rng = np.random.default_rng(4)
    g = gc.Graph("fresh")
    x, W, b = g.input("x", ("n", 4)), g.param("W", (4, 3)), g.param("b", (3,))
    z = gc.matmul(x, W) + b
    fn, ref = gc.compile([z, z, gc.relu(z)]), gc.compile([z, z, gc.relu(z)], lowering="array_api")
    Wv, bv = rng.standard_normal((4, 3)), rng.standard_normal(3)
    previous = []
    for n in (5, 5, 3, 5):
        xv = rng.standard_normal((n, 4))
        got = fn(x=xv, W=Wv, b=bv)
        assert_agree(got, ref(x=xv, W=Wv, b=bv))
        arrays = list(got) + [xv, Wv, bv] + previous
        for i, p in enumerate(got):
            assert all(not np.shares_memory(p, q) for j, q in enumerate(arrays) if j != i)
        for p in got:  # the caller may write into them: no effect on the next call
            p[...] = np.nan
        previous = list(got)


# -- next to in-place updates of the parameters the product reads ------------------------------------
def _lookahead(update):
    """``z = x·W + x·W_new`` with ``updates={W: W_new}``: predictions before and after the step."""
    g = gc.Graph("lookahead")
    x, W, y = g.input("x", (5, 4)), g.param("W", (4, 3)), g.input("y", (5, 3))
    if update == "in-place ufunc":
        Wn = W * 0.5
    else:  # W - 0.1·xᵀ·y: a gemm update (one accumulating BLAS call into W)
        Wn = W - 0.1 * gc.matmul(gc.einsum("ij->ji", x), y)
    z = gc.matmul(x, W) + gc.matmul(x, Wn)
    return [gc.relu(z), gc.sum(z * z)], {W: Wn}


def _run_lookahead(update):
    rng = np.random.default_rng(0)
    outputs, updates = _lookahead(update)
    vals = {"x": rng.standard_normal((5, 4)), "W": rng.standard_normal((4, 3)), "y": rng.standard_normal((5, 3))}
    mine, ref = {k: v.copy() for k, v in vals.items()}, {k: v.copy() for k, v in vals.items()}
    fn = gc.compile(outputs, updates=updates)
    got = fn(mine)
    want = gc.compile(outputs, updates=updates, lowering="array_api")(ref)
    return fn, got, want, mine, ref


# An update target among a product's operands keeps that product out of the epilogue when the
# update is written first: the fused node would read the product's operands where the sum stood.
@pytest.mark.parametrize("update", ["in-place ufunc", "gemm update"])
def test_update_written_in_place_before_the_epilogue_reads_the_parameter(update):
    fn, got, want, mine, ref = _run_lookahead(update)
    assert epilogue_gemms(fn)
    np.testing.assert_allclose(mine["W"], ref["W"], rtol=1e-12)  # the update itself is right
    assert_agree(got, want)  # and the forward value read W before it was updated


@pytest.mark.parametrize("update", ["in-place ufunc", "gemm update"])
def test_the_same_graph_is_right_without_the_epilogue(update, monkeypatch):
    """Control for the test above: the numpy lowering with no epilogue at all agrees too."""
    monkeypatch.setattr(fusions, "_gemm_epilogues", lambda schedule, taken: {})
    fn, got, want, mine, ref = _run_lookahead(update)
    assert not epilogue_gemms(fn)
    assert_agree(got, want)
    np.testing.assert_allclose(mine["W"], ref["W"], rtol=1e-12)


@pytest.mark.parametrize("case", range(5))
def test_epilogue_outputs_with_updates_of_the_params_they_read(case):
    rng = np.random.default_rng(5)
    g = gc.Graph("upd")
    x, W, b = g.input("x", ("n", 4)), g.param("W", (4, 3)), g.param("b", (3,))
    z = gc.matmul(x, W) + b
    loss = gc.sum(z * z)
    gW, gb = gc.grad(loss, [W, b])
    updates, outputs = [
        ({W: W - 0.01 * gW, b: b - 0.01 * gb}, [z, loss]),
        ({b: b - 0.01 * gb}, [z]),
        ({W: W - 0.01 * gW}, [gc.relu(z), z]),
        ({b: b * 0.5}, [z, z]),
        ({W: W * 0.5, b: b + 1.0}, [gc.relu(z), gc.sum(z * z)]),
    ][case]
    fn = gc.compile(outputs, updates=updates)
    ref = gc.compile(outputs, updates=updates, lowering="array_api")
    assert epilogue_gemms(fn)
    W0, b0 = rng.standard_normal((4, 3)), rng.standard_normal(3)
    mine, theirs = {"W": W0.copy(), "b": b0.copy()}, {"W": W0.copy(), "b": b0.copy()}
    for n in (3, 5, 3):
        xv = rng.standard_normal((n, 4))
        assert_agree(fn(x=xv, **mine), ref(x=xv.copy(), **theirs))
        for k in mine:
            np.testing.assert_allclose(mine[k], theirs[k], rtol=1e-10)


def test_the_step_is_right_when_each_call_brings_a_new_batch_array():
    """x·W1 + b1 caches x's layout; a new array every call must be read again."""
    from graphc.models import init_two_layer_params, two_layer_net

    rng = np.random.default_rng(3)
    net = two_layer_net(20, 6, 4)
    params = init_two_layer_params(rng, 20, 6, 4, weight_init_std=0.5, dtype=np.float64)
    copies = {k: v.copy() for k, v in params.items()}
    fast = TrainStep(net.loss, params, SGD(lr=0.1))
    generic = TrainStep(net.loss, copies, SGD(lr=0.1), lowering="array_api")
    for _ in range(4):
        x, t = rng.standard_normal((8, 20)), np.eye(4)[rng.integers(0, 4, 8)]
        np.testing.assert_allclose(fast(x=x, t=t), generic(x=x.copy(), t=t.copy()), rtol=1e-12)
    for k in params:
        np.testing.assert_allclose(params[k], copies[k], rtol=1e-12, atol=1e-15)


def _residual_net():
    g = gc.Graph("residual")
    x, t = g.input("x", ("n", 6)), g.input("t", ("n", 6))
    W1, b1, W2, b2 = g.param("W1", (6, 6)), g.param("b1", (6,)), g.param("W2", (6, 6)), g.param("b2", (6,))
    h = gc.relu(gc.matmul(x, W1) + b1)
    r = gc.matmul(h, W2) + x  # the bias is the batch input
    r2 = gc.matmul(r, W1) / 7 + r  # the bias is the previous epilogue's result; W1 read twice
    a = gc.matmul(r2, W2) + b2
    loss = gc.softmax_cross_entropy(a, t)
    return loss, {"W1": W1, "b1": b1, "W2": W2, "b2": b2}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("opt", [lambda: SGD(lr=0.05), lambda: Momentum(lr=0.05), lambda: Adam(lr=0.01)])
def test_train_step_with_epilogues_in_forward_and_backward(dtype, opt):
    rng = np.random.default_rng(6)
    loss, nodes = _residual_net()
    params = {k: (0.4 * rng.standard_normal(n.shape)).astype(dtype) for k, n in nodes.items()}
    copies = {k: v.copy() for k, v in params.items()}
    fast = TrainStep(loss, params, opt())
    ref = TrainStep(loss, copies, opt(), lowering="array_api")
    assert len(epilogue_gemms(fast)) >= 4
    x_same = rng.standard_normal((7, 6)).astype(dtype)
    for it, n in enumerate((7, 7, 3, 7, 1, 6, 7)):
        if it in (0, 1, 3, 6):  # the same batch array, refilled
            x_same[...] = rng.standard_normal((7, 6))
            x = x_same
        elif n == 6:  # the batch is a parameter array itself (updated in place by this very step)
            x = params["W1"]
        else:
            x = stored_as(rng.standard_normal((n, 6)).astype(dtype), LAYOUTS[it % len(LAYOUTS)])
        t = np.eye(6, dtype=dtype)[rng.integers(0, 6, x.shape[0])]
        x_ref = copies["W1"] if x is params["W1"] else np.array(x)
        # both read their own W1 as the batch: same semantics on both sides
        assert_agree(np.asarray(fast(x=x, t=t)), np.asarray(ref(x=x_ref, t=t.copy())), dtype)
        for k in params:
            assert_agree(params[k], copies[k], dtype)


def test_gradients_through_epilogues():
    rng = np.random.default_rng(7)
    loss, nodes = _residual_net()
    vals = {k: 0.4 * rng.standard_normal(n.shape) for k, n in nodes.items()}
    vals["x"], vals["t"] = rng.standard_normal((4, 6)), np.eye(6)[rng.integers(0, 6, 4)]
    gc.check_grads(loss, list(nodes.values()), vals)
    grads = gc.grad(loss, list(nodes.values()) + [loss.graph.leaves["x"]])
    fn = gc.compile([loss, *grads])
    assert epilogue_gemms(fn)
    assert_agree(fn(vals), gc.compile([loss, *grads], fuse=False)(vals))
