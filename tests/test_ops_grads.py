"""Every op's gradient against central finite differences, through ``gc.check_grads``.

Each case is one line: the op, the domain its inputs are drawn from, and a numpy
reference for the forward value.  ``check`` (tests/conftest.py) builds the graph,
compares the forward value with the reference and checks the gradient of every
input (non-scalar outputs are projected on a random tensor by ``check_grads``).
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy

import graphc as gc
from helpers import np_log_softmax, np_softmax, softplus

hypot = gc.elementwise("hypot", lambda x, y: sympy.sqrt(x**2 + y**2))
logaddexp = gc.elementwise("logaddexp", lambda x, y: sympy.log(sympy.exp(x) + sympy.exp(y)))


def np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


# -- elementwise, one operand -------------------------------------------------------
UNARY = {
    "neg": (gc.neg, "real", np.negative),
    "neg_op": (lambda x: -x, "real", np.negative),
    "exp": (gc.exp, "real", np.exp),
    "log": (gc.log, "pos", np.log),
    "sqrt": (gc.sqrt, "pos", np.sqrt),
    "tanh": (gc.tanh, "real", np.tanh),
    "sigmoid": (gc.sigmoid, "real", np_sigmoid),
    "relu": (gc.relu, "away", lambda x: np.maximum(x, 0)),
    "step": (gc.step, "away", lambda x: (x > 0).astype(float)),
    "pow2": (lambda x: x**2, "real", np.square),
    "pow3": (lambda x: x**3, "real", lambda x: x**3),
    "pow_half": (lambda x: x**0.5, "pos", np.sqrt),
    "pow_1.5": (lambda x: x**1.5, "pos", lambda x: x**1.5),
    "pow_-1": (lambda x: x**-1, "pos", np.reciprocal),
    "pow_-2": (lambda x: x**-2, "pos", lambda x: x**-2.0),
    "pow0": (lambda x: x**0, "real", np.ones_like),
    "pow1": (lambda x: x**1, "real", lambda x: x),
    "power_fn": (lambda x: gc.power(x, 3.0), "real", lambda x: x**3),
    "const_pow": (lambda x: 2.0**x, "real", lambda x: 2.0**x),
    "scale": (lambda x: 3.0 * x, "real", lambda x: 3 * x),
    "shift": (lambda x: x + 2.0, "real", lambda x: x + 2),
    "rsub": (lambda x: 1.0 - x, "real", lambda x: 1 - x),
    "rdiv": (lambda x: 2.0 / x, "pos", lambda x: 2 / x),
    "div_const": (lambda x: x / 4.0, "real", lambda x: x / 4),
    "max_const": (lambda x: gc.maximum(x, 0.0), "away", lambda x: np.maximum(x, 0)),
    "softplus": (softplus, "real", lambda x: np.log1p(np.exp(x))),
    "sigmoid_tanh": (lambda x: gc.sigmoid(gc.tanh(x)), "real", lambda x: np_sigmoid(np.tanh(x))),
    "log_sigmoid": (lambda x: gc.log(gc.sigmoid(x)), "real", lambda x: np.log(np_sigmoid(x))),
}
SHAPES = [(), (5,), (3, 4), ("n", 3), (2, 3, 2)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", UNARY)
def test_unary(check, name, shape):
    op, domain, ref = UNARY[name]
    check(op, shape, domain=domain, ref=ref)


# -- elementwise, two operands ------------------------------------------------------
BINARY = {
    "add": (gc.add, ("real", "real"), np.add),
    "add_op": (lambda a, b: a + b, ("real", "real"), np.add),
    "sub": (lambda a, b: a - b, ("real", "real"), np.subtract),
    "mul": (lambda a, b: a * b, ("real", "real"), np.multiply),
    "div": (lambda a, b: a / b, ("real", "pos"), np.divide),
    "pow": (lambda a, b: a**b, ("pos", "real"), np.power),
    "maximum": (gc.maximum, ("real", "real"), np.maximum),
    "minimum": (gc.minimum, ("real", "real"), np.minimum),
    "hypot": (hypot, ("real", "real"), np.hypot),
    "logaddexp": (logaddexp, ("real", "real"), np.logaddexp),
    "mixed": (lambda a, b: gc.tanh(a) * gc.exp(b) - a / (1.0 + b * b), ("real", "real"),
              lambda a, b: np.tanh(a) * np.exp(b) - a / (1 + b * b)),
}
BROADCASTS = [
    ((3, 4), (3, 4)),
    ((3, 4), (4,)),  # A[n,h] + b[h]
    ((4,), (3, 4)),
    (("n", 3), (3,)),
    (("n", "m"), ("n", "m")),
    ((2, 3, 4), (3, 4)),
    ((), (3,)),
    ((3,), ()),
]


@pytest.mark.parametrize("shapes", BROADCASTS, ids=str)
@pytest.mark.parametrize("name", BINARY)
def test_binary(check, name, shapes):
    op, domain, ref = BINARY[name]
    check(op, *shapes, domain=domain, ref=ref)


def test_add_distributes_the_gradient_unchanged(graph, values):
    g, (a, b, v) = graph((3, 4), (4,), (3, 4))
    vals = values([a, b, v])
    da, db = gc.grad(((a + b) * v).sum(), [a, b])
    got_a, got_b = gc.compile([da, db])(vals)
    np.testing.assert_array_equal(got_a, vals["x2"])
    np.testing.assert_allclose(got_b, vals["x2"].sum(0), rtol=1e-14)


def test_broadcasting_elementwise_add(check):
    # Y[n,h] = A[n,h] + b[h]: b has no n, so its adjoint sums over n.
    out, nodes, vals, report = check(lambda A, b: A + b, ("n", 4), (4,), ref=lambda A, b: A + b)
    assert out.shape == ("n", 4) and report["x1"][0].shape == (4,)


def test_bias_gradient_sums_over_the_batch(graph, values):
    g, (A, b, v) = graph(("n", 4), (4,), ("n", 4))
    vals = values([A, b, v])
    db = gc.compile([gc.grad(((A + b) * v).sum(), b), A])(vals)[0]
    np.testing.assert_allclose(db, vals["x2"].sum(0), rtol=1e-14)


def test_mul_swaps_the_multiplier(graph, values):
    g, (a, b) = graph((3,), (3,))
    vals = values([a, b])
    da, db = gc.compile(gc.grad((a * b).sum(), [a, b]))(vals)
    np.testing.assert_array_equal(da, vals["x1"])
    np.testing.assert_array_equal(db, vals["x0"])


# -- the kinks: relu, step, maximum -------------------------------------------------
def test_step_has_zero_gradient(graph):
    g, (x,) = graph((6,))
    X = np.array([-2.0, -0.5, 0.0, 0.3, 1.0, 4.0])
    y, dx = gc.compile([gc.step(x), gc.grad(gc.step(x).sum(), x)])(x0=X)
    np.testing.assert_array_equal(y, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(dx, np.zeros(6))
    assert dx.shape == (6,) and dx.dtype == np.float64


def test_relu_gradient_is_the_mask(graph):
    g, (x,) = graph((5,))
    X = np.array([-1.0, -0.1, 0.0, 0.1, 2.0])
    dx = gc.compile(gc.grad(gc.relu(x).sum(), x))(x0=X)
    np.testing.assert_array_equal(dx, [0, 0, 0, 1, 1])


@pytest.mark.parametrize("op, winner", [(gc.maximum, np.greater), (gc.minimum, np.less)], ids=["maximum", "minimum"])
@pytest.mark.parametrize("lowering", ["auto", "array_api"])
def test_maximum_and_minimum_route_the_gradient_and_split_it_on_a_tie(graph, op, winner, lowering):
    # Finite differences are undefined at a tie: the rule is torch's (half to each side), exactly.
    g, (a, b, v) = graph((5,), (5,), (5,))
    A = np.array([1.0, 2.0, 3.0, -1.0, 0.5])
    B = np.array([1.0, 3.0, 2.0, -1.0, 0.7])  # ties at 0 and 3
    V = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    m = op(a, b)
    y, da, db = gc.compile([m, *gc.grad((m * v).sum(), [a, b])], lowering=lowering)(x0=A, x1=B, x2=V)
    np.testing.assert_array_equal(y, np.maximum(A, B) if op is gc.maximum else np.minimum(A, B))
    np.testing.assert_array_equal(da, V * winner(A, B) + V / 2 * (A == B))
    np.testing.assert_array_equal(db, V * winner(B, A) + V / 2 * (A == B))
    assert (da + db).tolist() == V.tolist()  # the gradient is passed on once, split at a tie


def test_maximum_and_minimum_split_ties_as_torch_does():
    torch = pytest.importorskip("torch")  # the peer is optional; the rule is asserted above without it
    A = np.array([1.0, 2.0, 3.0, -1.0, 0.5, 0.0])
    B = np.array([1.0, 3.0, 2.0, -1.0, 0.7, -0.0])
    g = gc.Graph("ties")
    a, b, v = g.input("a", (6,)), g.input("b", (6,)), g.input("v", (6,))
    for op, top in ((gc.maximum, torch.maximum), (gc.minimum, torch.minimum)):
        ours = gc.compile(gc.grad((op(a, b) * v).sum(), [a, b]))(a=A, b=B, v=np.arange(1.0, 7.0))
        ta, tb = (torch.tensor(x, requires_grad=True) for x in (A, B))
        (top(ta, tb) * torch.arange(1.0, 7.0, dtype=torch.float64)).sum().backward()
        np.testing.assert_array_equal(ours[0], ta.grad.numpy())
        np.testing.assert_array_equal(ours[1], tb.grad.numpy())


def test_maximum_of_a_node_with_itself_passes_the_gradient_once(graph, values):
    g, (a,) = graph((4,))
    da = gc.compile(gc.grad(gc.maximum(a, a).sum(), a))(values([a]))
    np.testing.assert_array_equal(da, np.full(4, 1.0))  # half from each side, as torch


# -- fan-out: a node used more than once --------------------------------------------
FANOUT = {
    "copy": (lambda x: (lambda c: c[0] * gc.tanh(c[1]))(gc.copy(x)), lambda x: x * np.tanh(x)),
    "copy3": (lambda x: (lambda c: c[0] + c[1] * c[2])(gc.copy(x, 3)), lambda x: x + x * x),
    "square_by_mul": (lambda x: x * x, np.square),
    "three_uses": (lambda x: x * gc.exp(x) + gc.tanh(x), lambda x: x * np.exp(x) + np.tanh(x)),
    "shared_subexpr": (lambda x: (lambda s: s * s + gc.log(s))(gc.sigmoid(x)),
                       lambda x: np_sigmoid(x) ** 2 + np.log(np_sigmoid(x))),
    "through_sum": (lambda x: x * x.sum(), lambda x: x * x.sum()),
}


@pytest.mark.parametrize("name", FANOUT)
def test_fan_out_adjoints_add_up(check, name):
    build, ref = FANOUT[name]
    check(build, (3, 4), ref=ref)


def test_copy_gradient_is_the_sum_of_both_uses(graph, values):
    g, (x, u, v) = graph((4,), (4,), (4,))
    c1, c2 = gc.copy(x)
    vals = values([x, u, v])
    dx = gc.compile(gc.grad((c1 * u + c2 * v).sum(), x))(vals)
    np.testing.assert_allclose(dx, vals["x1"] + vals["x2"], rtol=1e-15)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_copy_returns_a_tuple_of_n_uses_of_the_node(graph, n):
    g, (x,) = graph((4,))
    uses = gc.copy(x, n)
    assert isinstance(uses, tuple) and len(uses) == n and all(u is x for u in uses)


@pytest.mark.parametrize("n", [0, -1, 2.0, True, "2"])
def test_copy_refuses_a_count_that_is_not_a_positive_integer(graph, n):
    g, (x,) = graph((4,))
    with pytest.raises(gc.GraphError, match=r"copy: n is the number of uses, an integer ≥ 1"):
        gc.copy(x, n)


def test_copy_takes_a_float_node(graph):
    g, _ = graph((4,))
    labels = g.input("labels", (4,), kind="int")
    with pytest.raises(gc.GraphError, match="copy: operand 'labels' holds int values"):
        gc.copy(labels)
    with pytest.raises(gc.GraphError, match="copy: at least one operand must be a graph node"):
        gc.copy(2.0)


def test_matmul_used_twice(check):
    check(lambda x, W: (x @ W) * gc.tanh(x @ W), ("n", 3), (3, 2))


# -- reductions -----------------------------------------------------------------------
AXES = [None, 0, 1, -1, (0, 2), (0, 1, 2), ()]


@pytest.mark.parametrize("axis", AXES, ids=str)
def test_sum(check, axis):
    check(lambda x: x.sum(axis), (3, 4, 2), ref=lambda x: x.sum(axis))


@pytest.mark.parametrize("axis", AXES, ids=str)
def test_mean(check, axis):
    check(lambda x: x.mean(axis), (3, 4, 2), ref=lambda x: x.mean(axis))


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_mean_over_symbolic_dims(check, axis):
    check(lambda x: gc.mean(x, axis), ("n", "m"), ref=lambda x: x.mean(axis))


def test_sum_of_a_product(check):
    check(lambda a, b: gc.sum(a * b, 1), ("n", 4), ("n", 4), ref=lambda a, b: (a * b).sum(1))


# -- contractions ---------------------------------------------------------------------
MATMULS = [
    ((3, 4), (4, 2)),
    (("n", 3), (3, 2)),
    ((3, 4), (4,)),
    ((4,), (4, 2)),
    ((4,), (4,)),
    ((2, 3, 4), (2, 4, 5)),
    (("b", 3, 4), ("b", 4, "m")),
]


@pytest.mark.parametrize("shapes", MATMULS, ids=str)
def test_matmul(check, shapes):
    check(lambda a, b: a @ b, *shapes, ref=np.matmul)


def test_matmul_function_and_operator_agree(check):
    check(lambda a, b: gc.matmul(a, b) - a @ b + gc.matmul(a, b), (3, 4), (4, 2), ref=np.matmul)


@pytest.mark.parametrize("axes", [None, (1, 0, 2), (2, 0, 1), (0, 1, 2)], ids=str)
def test_transpose(check, axes):
    check(lambda x: gc.transpose(x, axes), (2, 3, 4), ref=lambda x: np.transpose(x, axes))


def test_dot_T(check):
    check(lambda x, y: x.T @ y, ("n", 3), ("n", 2), ref=lambda x, y: x.T @ y)


def test_affine(check):
    check(lambda x, W, b: x @ W + b, ("n", 3), (3, 2), (2,), ref=lambda x, W, b: x @ W + b)


def test_affine_layer_with_loss(check):
    check(lambda x, W, b: (gc.tanh(x @ W + b) ** 2).mean(), ("n", 3), (3, 2), (2,))


def test_two_layer_net(check):
    check(lambda x, W1, b1, W2, b2: gc.sigmoid(gc.relu(x @ W1 + b1) @ W2 + b2).sum(),
          ("n", 4), (4, 3), (3,), (3, 2), (2,), domain=("real", "real", "pos", "real", "real"))


@pytest.mark.parametrize("op,shape,ref", [
    (gc.trace, (3, 3), np.trace),
    (gc.diagonal, (3, 3), np.diagonal),
], ids=["trace", "diagonal"])
def test_trace_and_diagonal(check, op, shape, ref):
    check(op, shape, ref=ref)


def test_outer(check):
    check(gc.outer, (3,), (4,), ref=np.outer)


# -- softmax and its loss -------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4,), (3, 4), ("n", 4), (2, 3, 4)], ids=str)
@pytest.mark.parametrize("op,ref", [(gc.softmax, np_softmax), (gc.log_softmax, np_log_softmax)],
                         ids=["softmax", "log_softmax"])
def test_softmax(check, op, ref, shape):
    check(op, shape, ref=ref)


def test_softmax_is_shift_invariant_and_stable(graph):
    g, (a,) = graph((2, 3))
    A = np.array([[1000.0, 1001.0, 1002.0], [-1000.0, -1001.0, -1002.0]])
    y, ly = gc.compile([gc.softmax(a), gc.log_softmax(a)])(x0=A)
    np.testing.assert_allclose(y, np_softmax(A), rtol=1e-14)
    np.testing.assert_allclose(ly, np_log_softmax(A - A.max(1, keepdims=True)), rtol=1e-14)


def one_hot(labels, classes):
    return np.eye(classes)[labels]


def ce_reference(a, t):
    return -(t * np_log_softmax(a)).sum() / (a.shape[0] if a.ndim > 1 else 1)


@pytest.mark.parametrize("shape", [(5, 4), (1, 3), (4,)], ids=str)
def test_softmax_cross_entropy_one_hot(graph, rng, shape):
    g = gc.Graph("ce")
    a, t = g.input("a", shape), g.input("t", shape)
    A = rng.standard_normal(shape)
    T = one_hot(rng.integers(0, shape[-1], shape[:-1]), shape[-1])
    loss = gc.softmax_cross_entropy(a, t)
    assert gc.compile(loss)(a=A, t=T) == pytest.approx(ce_reference(A, T), rel=1e-13)
    gc.check_grads(loss, [a], {"a": A, "t": T})


def test_softmax_cross_entropy_soft_targets_wrt_logits_and_targets(rng):
    g = gc.Graph("ce")
    a, t = g.input("a", ("n", 4)), g.input("t", ("n", 4))
    A = rng.standard_normal((5, 4))
    T = rng.uniform(0.1, 1, (5, 4))
    T /= T.sum(1, keepdims=True)  # rows sum to 1, as the fused rule assumes
    loss = gc.softmax_cross_entropy(a, t)
    assert gc.compile(loss)(a=A, t=T) == pytest.approx(ce_reference(A, T), rel=1e-13)
    gc.check_grads(loss, [a, t], {"a": A, "t": T})


@pytest.mark.parametrize("n", [1, 5])
def test_softmax_cross_entropy_integer_labels(rng, n):
    g = gc.Graph("ce")
    a, t = g.input("a", ("n", 4)), g.input("t", ("n",), kind="int")
    A, L = rng.standard_normal((n, 4)), rng.integers(0, 4, n)
    loss = gc.softmax_cross_entropy(a, t)
    assert gc.compile(loss)(a=A, t=L) == pytest.approx(ce_reference(A, one_hot(L, 4)), rel=1e-13)
    gc.check_grads(loss, [a], {"a": A, "t": L})


def test_softmax_cross_entropy_with_a_symbolic_number_of_classes(rng):
    g = gc.Graph("ce")
    a, t, T = g.input("a", ("n", "c")), g.input("t", ("n",), kind="int"), g.input("T", ("n", "c"))
    A, L = rng.standard_normal((4, 5)), np.array([0, 4, 2, 1])
    gc.check_grads(gc.softmax_cross_entropy(a, t), [a], {"a": A, "t": L})
    gc.check_grads(gc.softmax_cross_entropy(a, T), [a, T], {"a": A, "T": one_hot(L, 5)})


def test_softmax_cross_entropy_integer_label_of_one_row(rng):
    g = gc.Graph("ce")
    a, t = g.input("a", (4,)), g.input("t", (), kind="int")
    A = rng.standard_normal(4)
    gc.check_grads(gc.softmax_cross_entropy(a, t), [a], {"a": A, "t": np.array(2)})


def test_integer_label_gradient_subtracts_one_at_the_label(rng):
    """The seed's CEE_Softmax did ``da[arange(N), t] = 1`` instead of ``-= 1``: catch it."""
    N, C = 6, 4
    g = gc.Graph("ce")
    a, t = g.input("a", ("n", C)), g.input("t", ("n",), kind="int")
    A, L = rng.standard_normal((N, C)), np.array([0, 1, 2, 3, 1, 1])
    da = gc.compile(gc.grad(gc.softmax_cross_entropy(a, t), a))(a=A, t=L)

    expected = (np_softmax(A) - one_hot(L, C)) / N
    buggy = np_softmax(A)
    buggy[np.arange(N), L] = 1
    buggy /= N
    np.testing.assert_allclose(da, expected, rtol=1e-12, atol=1e-15)
    assert not np.allclose(da, buggy)
    np.testing.assert_allclose(da.sum(1), 0, atol=1e-15)  # each row of softmax - onehot sums to 0


def test_integer_labels_and_one_hot_targets_agree(rng):
    g = gc.Graph("ce")
    a, t, T = g.input("a", ("n", 3)), g.input("t", ("n",), kind="int"), g.input("T", ("n", 3))
    A, L = rng.standard_normal((4, 3)), np.array([2, 0, 1, 2])
    li, lf = gc.softmax_cross_entropy(a, t), gc.softmax_cross_entropy(a, T)
    out = gc.compile([li, lf, gc.grad(li, a), gc.grad(lf, a)])(a=A, t=L, T=one_hot(L, 3))
    assert out[0] == pytest.approx(out[1], rel=1e-14)
    np.testing.assert_allclose(out[2], out[3], rtol=1e-14)


def test_one_hot_and_argmax(rng):
    g = gc.Graph("oh")
    a, t = g.input("a", ("n", 4)), g.input("t", ("n",), kind="int")
    A, L = rng.standard_normal((5, 4)), rng.integers(0, 4, 5)
    oh, am = gc.compile([gc.one_hot(t, 4), gc.argmax(a)])(a=A, t=L)
    np.testing.assert_array_equal(oh, one_hot(L, 4))
    np.testing.assert_array_equal(am, A.argmax(1))


# -- user-defined elementwise ops -------------------------------------------------------
def test_user_defined_softplus_gradient_is_the_sigmoid(graph, values):
    g, (x,) = graph((3, 4))
    vals = values([x])
    dx = gc.compile(gc.grad(softplus(x).sum(), x))(vals)
    np.testing.assert_allclose(dx, np_sigmoid(vals["x0"]), rtol=1e-13)


def test_user_defined_two_argument_op(check):
    check(hypot, ("n", 3), ("n", 3), ref=np.hypot)


def test_user_defined_op_with_a_constant_operand(check):
    f = gc.elementwise("scaled_sin", lambda x, s: s * sympy.sin(x))
    check(lambda x: f(x, 2.5), (3, 4), ref=lambda x: 2.5 * np.sin(x))


def test_user_defined_op_composes_with_builtins(check):
    check(lambda x, y: softplus(hypot(x, gc.tanh(y))) * x, (3,), (3,),
          ref=lambda x, y: np.log1p(np.exp(np.hypot(x, np.tanh(y)))) * x)


# -- float32 runs too (the checker itself is float64) -------------------------------------
def _float32_matches_float64(graph, values, build):
    g, (x, W) = graph(("n", 3), (3, 2))
    vals = values([x, W])
    loss = build(x, W)
    fn = gc.compile([loss, *gc.grad(loss, [x, W])])
    out = fn({k: v.astype(np.float32) for k, v in vals.items()})
    assert [o.dtype for o in out] == [np.dtype(np.float32)] * 3
    for o, r in zip(out, fn(vals)):
        np.testing.assert_allclose(o, r, rtol=2e-5, atol=1e-6)


def test_float32_forward_and_gradient_keep_the_dtype(graph, values):
    _float32_matches_float64(graph, values, lambda x, W: gc.softmax(gc.tanh(x @ W)).sum() + gc.sum(x @ W) * 0.5)


def test_float32_gradient_of_mean_keeps_the_dtype(graph, values):
    _float32_matches_float64(graph, values, lambda x, W: (x @ W).mean())


# -- the checker itself ----------------------------------------------------------------
def test_check_grads_runs_on_several_outputs_of_one_graph(graph, values):
    g, (x, W) = graph(("n", 3), (3, 2))
    vals = values([x, W])
    for out in (x @ W, (x @ W).sum(0), gc.tanh(x @ W), (x @ W).sum(1), gc.exp(x)):
        gc.check_grads(out, [x], vals)


def test_check_grads_catches_a_wrong_derivative(graph, values):
    wrong = gc.elementwise("wrong_tanh", lambda v: sympy.tanh(v),
                           derivatives={0: lambda v: 1 - sympy.tanh(v)})  # should be 1 - tanh²
    g, (x,) = graph((3,))
    with pytest.raises(AssertionError, match="disagrees with finite differences"):
        gc.check_grads(wrong(x).sum(), [x], values([x]))


def test_a_gradient_that_is_a_broadcast_scalar_input_is_a_float_array(graph, values):
    # d/dx Σ x·s = s everywhere: an elementwise node whose expression is the bare symbol s,
    # which sympy classes as a Boolean; it was marked a bool node (and lowered to a bool buffer).
    g, (x, s) = graph((3, 1), ())
    vals = values([x, s])
    dx = gc.grad((x * s).sum(), x)
    assert dx.kind == "float"
    got = gc.compile([dx, x])(vals)[0]
    np.testing.assert_array_equal(got, np.full((3, 1), vals["x1"]), strict=True)
    gc.check_grads((x * s).sum(), [x, s], vals)


def test_elementwise_arity_counts_parameters_without_defaults():
    cube = gc.elementwise("cube", lambda x, k=3: x ** k)
    g = gc.Graph("arity")
    x = g.input("x", (4,))
    assert cube.arity == 1
    gc.check_grads(cube(x).sum(), [x], {"x": np.linspace(0.5, 2.0, 4)})


@pytest.mark.parametrize("scalar", [np.float32(2.0), np.float64(2.0), np.int64(2), np.array(2.0), np.array(2)],
                         ids=["float32", "float64", "int64", "0-d float", "0-d int"])
def test_numpy_scalars_and_0d_arrays_are_constants_on_either_side(scalar):
    g = gc.Graph("s")
    x = g.input("x", (3,))
    X = np.array([1.0, 2.0, 3.0])
    fn = gc.compile([x * scalar, scalar * x, x - scalar, scalar / x])
    for got, want in zip(fn(x=X), (X * 2, 2 * X, X - 2, 2 / X)):
        np.testing.assert_allclose(got, want, rtol=1e-15)
    with pytest.raises(gc.GraphError, match="neither a graph node nor a scalar"):
        x * np.bool_(True)  # a truth value is not a number here
    with pytest.raises(gc.GraphError, match="neither a graph node nor a scalar"):
        np.ones(3) * x  # arrays enter a graph as inputs, from either side


# -- softmax and log_softmax along any axis ----------------------------------------------------
@pytest.mark.parametrize("axis", [0, 1, -1, 2, -3])
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("lowering", ["auto", "array_api"])
def test_softmax_and_log_softmax_along_any_axis(axis, op, lowering):
    rng = np.random.default_rng(7)
    g = gc.Graph("ax")
    a, w = g.input("a", (3, 4, 5)), g.input("w", (3, 4, 5))
    y = getattr(gc, op)(a, axis=axis)
    values = {"a": rng.standard_normal((3, 4, 5)), "w": rng.standard_normal((3, 4, 5))}
    want = np_softmax(values["a"], axis)
    want = np.log(want) if op == "log_softmax" else want
    np.testing.assert_allclose(gc.compile(y, lowering=lowering)(values), want, rtol=1e-12, atol=1e-15)
    gc.check_grads((y * w).sum(), a, values, lowering=lowering)


def test_softmax_along_an_axis_matches_torch():
    torch = pytest.importorskip("torch")  # the peer is optional; finite differences check it above
    rng = np.random.default_rng(8)
    A, W = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    g = gc.Graph("ax")
    a, w = g.input("a", (3, 4)), g.input("w", (3, 4))
    for axis in (0, 1):
        for ours, theirs in ((gc.softmax, torch.softmax), (gc.log_softmax, torch.log_softmax)):
            (da,) = gc.compile(gc.grad((ours(a, axis=axis) * w).sum(), [a]))(a=A, w=W)
            ta = torch.tensor(A, requires_grad=True)
            (theirs(ta, dim=axis) * torch.tensor(W)).sum().backward()
            np.testing.assert_allclose(da, ta.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_softmax_along_a_bad_axis_is_refused_at_declaration():
    g = gc.Graph("ax")
    a = g.input("a", (3, 4))
    with pytest.raises(gc.ShapeError, match=r"softmax: axis 2 is out of range for 'a' of shape \(3, 4\)"):
        gc.softmax(a, axis=2)


# -- erf and GELU -------------------------------------------------------------------------------
@pytest.mark.parametrize("lowering", ["auto", "array_api"])
def test_erf_and_gelu_match_torch_and_finite_differences(lowering):
    torch = pytest.importorskip("torch")  # the peer is optional; finite differences check it below too
    # torch's GELU computes 1 + erf(x/√2) and loses its negative tail (x = -8: -4.88e-15 against the
    # true -4.977e-15, which graphc gives); tests/test_stability.py checks the tails against mpmath
    X = np.array([-3.0, -2.0, -1.0, -0.5, -0.1, 0.0, 0.2, 1.0, 2.5, 9.0, 40.0])
    g = gc.Graph("gelu")
    x, w = g.input("x", (11,)), g.input("w", (11,))
    W = np.linspace(-1.0, 1.0, 11)
    for ours, theirs in ((gc.erf, torch.erf), (gc.gelu, torch.nn.functional.gelu),
                         (lambda a: gc.gelu(a, approximate="tanh"),
                          lambda t: torch.nn.functional.gelu(t, approximate="tanh"))):
        y = ours(x)
        value, (dx,) = gc.compile(y, lowering=lowering)(x=X), gc.compile(gc.grad((y * w).sum(), [x]),
                                                                           lowering=lowering)(x=X, w=W)
        tx = torch.tensor(X, requires_grad=True)
        tv = theirs(tx)
        (tv * torch.tensor(W)).sum().backward()
        np.testing.assert_allclose(value, tv.detach().numpy(), rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-20)
        gc.check_grads((y * w).sum(), x, {"x": X, "w": W}, lowering=lowering)


def test_gelu_refuses_an_unknown_approximation():
    g = gc.Graph("gelu")
    with pytest.raises(gc.GraphError, match="gelu: approximate must be 'none' or 'tanh', got 'fast'"):
        gc.gelu(g.input("x", (3,)), approximate="fast")
