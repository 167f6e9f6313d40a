"""Clear errors: the graphc exception class, and a message naming the op/spec and the shapes.

Declaration-time errors are raised where the user made the mistake; call-time
errors come from binding arrays.  None may surface as a raw numpy error,
IndexError or KeyError: ``pytest.raises`` with a graphc class asserts exactly that.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy

import graphc as gc
from graphc.errors import BindingError, GradError, GraphcError, GraphError, ShapeError, SpecError


@pytest.fixture
def g():
    return gc.Graph("errs")


# -- declaration time --------------------------------------------------------------------
def test_matmul_inner_dims_differ(g):
    x, W = g.input("x", ("n", 3)), g.param("W", (4, 2))
    with pytest.raises(ShapeError, match=r"matmul: inner dims differ: 'x' \(n, 3\) @ 'W' \(4, 2\) \(3 vs 4\)"):
        x @ W


def test_matmul_of_a_scalar(g):
    x = g.input("x", (3,))
    with pytest.raises(ShapeError, match=r"matmul.*rank ≥ 1.*'x' \(3,\)"):
        x @ x.sum()


def test_matmul_batch_dims_differ(g):
    a, b = g.input("a", (2, 3, 4)), g.input("b", (3, 4, 5))
    with pytest.raises(ShapeError, match=r"matmul: batch dims differ: 'a' \(2, 3, 4\) @ 'b' \(3, 4, 5\)"):
        a @ b


@pytest.mark.parametrize("spec,operands", [("ij,jk->ik", 1), ("ij->ij", 2), ("ij,jk,kl->il", 2)])
def test_einsum_wrong_operand_count(g, spec, operands):
    A = g.input("A", (2, 2))
    with pytest.raises(SpecError, match=rf"einsum '{spec}'.*names {spec.count(',') + 1} operand\(s\) but {operands} were given"):
        gc.einsum(spec, *[A] * operands)


def test_einsum_without_operands(g):
    with pytest.raises(SpecError, match="einsum 'ij->': no operands"):
        gc.einsum("ij->")


MALFORMED = [
    ("ij,jk", ["A"], "names 2 operand"),  # valid numpy implicit mode, but one operand given
    ("i..j->", ["A"], "ellipsis"),
    ("ij->ii", ["A"], r"output 'ii' repeats an index"),
    ("ij->k", ["A"], r"output index 'k' appears in no operand"),
    ("1j->j", ["A"], r"'1' is not an index letter"),
    ("ij->->i", ["A"], "more than one '->'"),
    ("ij-ji", ["A"], r"'-' is not an index letter"),
    ("ij->j,i", ["A"], r"',' is not an index letter"),
    ("Ωj->j", ["A"], r"'Ω' is not an index letter"),
    ("ij,,jk->ik", ["A", "A"], "names 3 operand"),
    ("...->", ["A"], "ellipsis"),
]


@pytest.mark.parametrize("spec,operands,message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_spec(g, spec, operands, message):
    A = g.input("A", (2, 3))
    with pytest.raises(SpecError, match=message) as info:
        gc.einsum(spec, *[A for _ in operands])
    assert repr(spec)[1:-1] in str(info.value) or spec in str(info.value)


def test_spec_must_be_a_string(g):
    A = g.input("A", (2, 3))
    with pytest.raises(SpecError, match="spec must be a string"):
        gc.einsum(["ij->ji"], A)


def test_einsum_rank_mismatch(g):
    A = g.input("A", (2, 3))
    with pytest.raises(ShapeError, match=r"einsum 'ijk->'.*'A'.*\(2, 3\).*rank 2.*'ijk' need rank 3"):
        gc.einsum("ijk->", A)


def test_index_bound_to_two_sizes(g):
    A, B = g.input("A", (2, 3)), g.input("B", (4, 5))
    with pytest.raises(ShapeError, match=r"einsum 'ij,jk->ik': index 'j' is 3 in operand 0 \('A', shape \(2, 3\)\) "
                                         r"but 4 in operand 1 \('B', shape \(4, 5\)\)"):
        gc.einsum("ij,jk->ik", A, B)


def test_index_bound_to_a_symbolic_and_a_fixed_size(g):
    A, B = g.input("A", ("n", 3)), g.input("B", (5, 3))
    with pytest.raises(ShapeError, match=r"index 'i' is 'n'.*but 5"):
        gc.einsum("ij,ij->", A, B)


def test_elementwise_shapes_must_agree_exactly(g):
    a, b = g.input("a", ("n", 3)), g.input("b", (4,))
    with pytest.raises(ShapeError, match=r"add: .*is 3 in 'a' \(n, 3\) but 4 in 'b' \(4,\)"):
        a + b


def test_elementwise_size_one_does_not_stretch(g):
    a, b = g.input("a", (3, 4)), g.input("b", (1, 4))
    with pytest.raises(ShapeError, match=r"mul: .*is 3 in 'a' \(3, 4\) but 1 in 'b' \(1, 4\)"):
        a * b


def test_symbolic_dim_never_matches_a_number(g):
    a, b = g.input("a", ("n",)), g.input("b", (100,))
    with pytest.raises(ShapeError, match=r"'n' in 'a' \(n,\) but 100 in 'b'"):
        a - b


@pytest.mark.parametrize("op", [
    lambda a, y: a + y,
    lambda a, y: a @ y,
    lambda a, y: gc.einsum("ij,ij->", a, y),
    lambda a, y: gc.maximum(a, y),
    lambda a, y: gc.softmax_cross_entropy(a, y),
    lambda a, y: gc.grad(gc.sum(a, name="a"), y),
    lambda a, y: gc.compile([a, y]),
], ids=["add", "matmul", "einsum", "maximum", "softmax_cross_entropy", "grad", "compile"])
def test_mixing_two_graphs(request, op):
    name = request.node.callspec.id
    g1, g2 = gc.Graph("first"), gc.Graph("second")
    a, y = g1.input("a", (3, 3)), g2.input("y", (3, 3))
    with pytest.raises(GraphError, match=r"'a'.*'y'.*(different )?graph|'y'.*graph.*'a'") as info:
        op(a, y)
    assert str(info.value).split(":")[0] == name


def test_arrays_do_not_enter_a_graph_as_operands(g):
    a = g.input("a", (2, 3))
    with pytest.raises(GraphError, match=r"(?s)add: operand .* ndarray .*g.input"):
        a + np.ones((2, 3))


def test_integer_nodes_take_no_elementwise_ops(g):
    t = g.input("t", (3,), kind="int")
    with pytest.raises(GraphError, match="add: operand 't' holds int values"):
        t + 1.0


def test_nodes_have_no_truth_value(g):
    a = g.input("a", (2,))
    with pytest.raises(GraphError, match="'a' has no truth value"):
        if a:
            pass


@pytest.mark.parametrize("build,message", [
    (lambda g, a, b: gc.sigmoid(a, b), "sigmoid: a node name must be a non-empty string"),
    (lambda g, a, b: gc.exp(a, 3), "exp: a node name must be a non-empty string, got 3"),
    (lambda g, a, b: gc.softmax(a, b), "softmax: takes one operand; the axis must be an integer, got node 'b'"),
    (lambda g, a, b: a.rename(""), "a node name must be a non-empty string"),
    (lambda g, a, b: g.input("", (2,)), "leaf name must be a non-empty string"),
    (lambda g, a, b: g.input(3, (2,)), "leaf name must be a non-empty string"),
    (lambda g, a, b: g.input("a", (2,)), "the name 'a' is already taken"),
    (lambda g, a, b: g.input("q", (2,), kind="complex"), "unknown kind 'complex'"),
], ids=["sigmoid_two_operands", "exp_number_name", "softmax_node_name", "rename_empty", "empty_leaf",
        "int_leaf_name", "duplicate", "kind"])
def test_bad_names_and_kinds(g, build, message):
    a, b = g.input("a", (2, 3)), g.input("b", (2, 3))
    with pytest.raises(GraphError, match=message):
        build(g, a, b)


@pytest.mark.parametrize("shape,message", [
    ((2, -1), "dim -1 in shape \\(2, -1\\) is negative"),
    ((2, 1.5), "dim 1.5 in shape \\(2, 1.5\\) is neither an int nor a dim name"),
    ((True,), "neither an int nor a dim name"),
    (("",), "must be a non-empty printable string"),
    (("a\nb",), "must be a non-empty printable string"),
    (None, "shape must be a tuple"),
])
def test_bad_shapes(g, shape, message):
    with pytest.raises(ShapeError, match=message):
        g.input("x", shape)


@pytest.mark.parametrize("build,error,message", [
    (lambda a: a.sum(2), ShapeError, r"sum: axis 2 is out of range for 'a' of shape \(2, 3\)"),
    (lambda a: a.mean((0, 0)), ShapeError, "mean: repeated axis"),
    (lambda a: gc.transpose(a, (0, 0)), ShapeError, r"transpose: axes \(0, 0\) are not a permutation"),
    (lambda a: gc.softmax(a.sum()), ShapeError, "softmax: 'sum.*' is a scalar"),
    (lambda a: a * float("inf"), GraphError, "constant inf is not finite"),
    (lambda a: a + float("nan"), GraphError, "constant nan is not finite"),
], ids=["sum_axis", "mean_repeated", "transpose_axes", "softmax_scalar", "inf", "nan"])
def test_bad_axes_and_constants(g, build, error, message):
    a = g.input("a", (2, 3))
    with pytest.raises(error, match=message):
        build(a)


def test_softmax_cross_entropy_target_shapes(g):
    a = g.input("a", ("n", 3))
    with pytest.raises(ShapeError, match=r"targets 't' \(n, 4\) must match logits 'a' \(n, 3\)"):
        gc.softmax_cross_entropy(a, g.input("t", ("n", 4)))
    with pytest.raises(ShapeError, match=r"integer labels 'L' \(m,\) must have shape \(n,\)"):
        gc.softmax_cross_entropy(a, g.input("L", ("m",), kind="int"))
    with pytest.raises(ShapeError, match=r"softmax_cross_entropy: axis 2 is out of range for 'a' of shape \(n, 3\)"):
        gc.softmax_cross_entropy(a, g.input("T", ("n", 3)), axis=2)
    with pytest.raises(ShapeError, match=r"integer labels 'M' \(n,\) must have shape \(3,\) .* along axis 0"):
        gc.softmax_cross_entropy(a, g.input("M", ("n",), kind="int"), axis=0)


def test_user_defined_op_errors(g):
    a = g.input("a", (2,))
    with pytest.raises(GraphError, match="f2: takes 2 operand"):
        gc.elementwise("f2", lambda x, y: x * y)(a)
    with pytest.raises(GraphError, match=r"elementwise 'fz': expression x0\*z uses unknown symbols \['z'\]"):
        gc.elementwise("fz", lambda x: x * sympy.Symbol("z"))(a)


def test_compile_errors(g):
    with pytest.raises(GraphError, match="compile: no outputs given"):
        gc.compile([])
    with pytest.raises(GraphError, match="compile: outputs must be graph nodes"):
        gc.compile([np.ones(2)])


@pytest.mark.parametrize("build", [
    lambda x: sympy.gamma(x),  # no numpy ufunc and no runtime helper
    lambda x: sympy.Heaviside(x),  # its derivative is a DiracDelta
], ids=["gamma", "heaviside_gradient"])
def test_unsupported_functions_are_graph_errors_at_compile_time(build):
    fn = gc.elementwise("f", build)
    g = gc.Graph("unsupported")
    x = g.input("x", (3,))
    y = fn(x).sum()
    with pytest.raises(gc.GraphError, match="elementwise expression"):
        gc.compile([y, *gc.grad(y, [x])])


# -- grad ----------------------------------------------------------------------------
def test_grad_of_a_non_scalar_needs_a_seed(g):
    a = g.input("a", (2, 3))
    with pytest.raises(GradError, match=r"grad: output 'y' has shape \(2, 3\), not a scalar; pass seed="):
        gc.grad((a * 2.0).rename("y"), a)


def test_grad_seed_must_match_the_output(g):
    a, s = g.input("a", (2, 3)), g.input("s", (3, 2))
    with pytest.raises(GradError, match=r"seed must be a node .* shape \(2, 3\)"):
        gc.grad(a * 2.0, a, seed=s)


def test_grad_wrt_an_integer_node(g):
    a, t = g.input("a", ("n", 3)), g.input("t", ("n",), kind="int")
    with pytest.raises(GradError, match="grad: 't' holds int values; gradients exist only for floats"):
        gc.grad(gc.softmax_cross_entropy(a, t), t)


def test_grad_of_an_integer_output(g):
    a = g.input("a", ("n", 3))
    with pytest.raises(GradError, match="output 'argmax.*' holds int values"):
        gc.grad(gc.argmax(a), a)


def test_grad_wrt_something_that_is_not_a_node(g):
    a = g.input("a", (3,))
    with pytest.raises(GradError, match="can only differentiate with respect to graph nodes"):
        gc.grad(a.sum(), "a")


def test_grad_wrt_an_unrelated_variable_is_zeros(g):
    a, b = g.input("a", (2, 3)), g.input("b", (3, 4))
    db, da = gc.grad((a * a).sum(), [b, a])
    out = gc.compile([db, da])(a=np.ones((2, 3)), b=np.ones((3, 4)))
    np.testing.assert_array_equal(out[0], np.zeros((3, 4)))
    np.testing.assert_array_equal(out[1], 2 * np.ones((2, 3)))


def test_grad_wrt_an_unrelated_variable_with_symbolic_dims_is_zeros(g):
    a, b = g.input("a", ("n", 3)), g.input("b", ("n", 4))
    db = gc.grad((a * a).sum(), b)
    out = gc.compile([db, b])(a=np.ones((2, 3)), b=np.ones((2, 4)))[0]
    np.testing.assert_array_equal(out, np.zeros((2, 4)))


def test_compile_a_gradient_that_reads_no_input_of_its_dims(g):
    x, W, b = g.input("x", ("n", 3)), g.param("W", (3, 2)), g.param("b", (2,))
    db = gc.grad((x @ W + b).sum(), b)
    got = gc.compile(db)(x=np.ones((4, 3)), W=np.ones((3, 2)), b=np.ones(2))
    np.testing.assert_array_equal(got, [4.0, 4.0])


# -- call time -------------------------------------------------------------------------
@pytest.fixture
def net():
    g = gc.Graph("net")
    x, W, t = g.input("x", ("n", 3)), g.param("W", (3, 4)), g.input("t", ("n", 4))
    L = g.input("L", ("n",), kind="int")
    a = x @ W
    rng = np.random.default_rng(0)
    arrays = {"x": rng.standard_normal((5, 3)), "W": rng.standard_normal((3, 4)),
              "t": np.eye(4)[[0, 1, 2, 3, 0]], "L": np.array([0, 1, 2, 3, 0])}
    return (gc.compile(gc.softmax_cross_entropy(a, t)), gc.compile(gc.softmax_cross_entropy(a, L)),
            gc.compile(gc.grad(gc.softmax_cross_entropy(a, L), W)), arrays)


def call(fn, arrays, **changes):
    args = {k: v for k, v in {**arrays, **changes}.items() if v is not None}
    return fn(args)


def test_the_net_runs(net):
    f, fL, dfL, arrays = net
    assert call(f, arrays, L=None) == pytest.approx(call(fL, arrays, t=None), rel=1e-14)


def test_missing_input(net):
    f, _, _, arrays = net
    with pytest.raises(BindingError, match=r"missing input\(s\) \['t'\]; this function reads \['x', 'W', 't'\]"):
        call(f, arrays, t=None, L=None)


def test_unknown_input(net):
    f, _, _, arrays = net
    with pytest.raises(BindingError, match=r"unknown input\(s\) \['zz'\]; the graph 'net' declares"):
        call(f, arrays, L=None, zz=np.ones(3))


def test_wrong_shape(net):
    f, _, _, arrays = net
    with pytest.raises(BindingError, match=r"'W': axis 1 must be 4 \(declared shape \(3, 4\)\), got shape \(3, 5\)"):
        call(f, arrays, L=None, W=np.ones((3, 5)))


@pytest.mark.parametrize("name,array,message", [
    ("W", np.ones((3, 4, 1)), r"'W': expected an array of shape \(3, 4\) \(rank 2\), got shape \(3, 4, 1\)"),
    ("x", np.ones(3), r"'x': expected an array of shape \(n, 3\) \(rank 2\), got shape \(3,\)"),
    ("x", 1.0, r"'x': expected an array of shape \(n, 3\) \(rank 2\), got shape \(\)"),
])
def test_wrong_rank(net, name, array, message):
    f, _, _, arrays = net
    with pytest.raises(BindingError, match=message):
        call(f, arrays, L=None, **{name: array})


def test_symbolic_dim_bound_to_two_sizes(net):
    f, _, _, arrays = net
    with pytest.raises(BindingError, match=r"dim 'n' is 5 in 'x' but 6 in 't' \(shape \(6, 4\), declared \(n, 4\)\)"):
        call(f, arrays, L=None, t=np.eye(4)[[0, 1, 2, 3, 0, 1]])


def test_float32_and_float64_mixed(net):
    f, _, _, arrays = net
    with pytest.raises(BindingError, match="'W' has dtype float64 but 'x' has float32; all float inputs"):
        call(f, arrays, L=None, x=arrays["x"].astype(np.float32))


@pytest.mark.parametrize("dtype", [np.int64, np.int32, bool, complex, object])
def test_non_float_array_for_a_float_input(net, dtype):
    f, _, _, arrays = net
    with pytest.raises(BindingError, match=r"'x': expected a floating-point array, got dtype"):
        call(f, arrays, L=None, x=arrays["x"].astype(dtype))


def test_float_array_for_integer_labels(net):
    _, fL, _, arrays = net
    with pytest.raises(BindingError, match="'L': expected an integer array of labels, got dtype float64"):
        call(fL, arrays, t=None, L=arrays["L"].astype(float))


@pytest.mark.parametrize("labels,bad,dtype", [
    (labels, bad, dtype)
    for labels, bad in [([0, 1, 2, 4, 0], 4), ([0, 1, -1, 3, 0], -1), ([9, 9, 9, 9, 9], 9)]
    for dtype in [np.int64, np.int32, np.int8, np.uint8, np.uint64]
    if bad >= 0 or np.dtype(dtype).kind == "i"  # an unsigned array cannot hold -1
])
@pytest.mark.parametrize("which", ["loss", "grad"])
def test_out_of_range_integer_labels(net, labels, bad, dtype, which):
    _, fL, dfL, arrays = net
    with pytest.raises(BindingError, match=rf"integer labels must lie in \[0, 4\); found {bad}"):
        call(fL if which == "loss" else dfL, arrays, t=None, L=np.array(labels, dtype=dtype))


def test_ragged_list(net):
    f, _, _, arrays = net
    with pytest.raises(BindingError, match="'x': cannot make an array of list"):
        call(f, arrays, L=None, x=[[1.0, 2.0], [3.0]])


def test_positional_arrays(net):
    f, _, _, arrays = net
    with pytest.raises(BindingError, match="pass arrays by name"):
        f(arrays["x"], arrays["W"], arrays["t"])


def test_every_error_is_a_graphc_error_and_a_value_error():
    for cls in (GraphError, SpecError, ShapeError, BindingError, GradError):
        assert issubclass(cls, GraphcError) and issubclass(cls, ValueError)


@pytest.mark.parametrize("classes", [-5, 2.5, 0, None])
def test_one_hot_classes_must_be_a_positive_dim(classes):
    g = gc.Graph("one_hot")
    labels = g.input("labels", ("n",), kind="int")
    with pytest.raises(gc.ShapeError, match="one_hot of 'labels'"):
        gc.one_hot(labels, classes)


def test_absurd_declared_dims_are_refused():
    with pytest.raises(gc.ShapeError, match="larger than"):
        gc.Graph("big").input("x", (2 ** 62,))


def test_numpy_scalars_bind_like_0d_arrays():
    """np.float64(2.0) is a numpy value, not a foreign array type."""
    g = gc.Graph("scalar")
    x = g.input("x", ())
    assert gc.compile(gc.exp(x))(x=np.float64(0.0)) == 1.0


@pytest.mark.parametrize("name", ["x", "W"])
def test_big_endian_arrays_are_refused_by_name(net, name):
    """BLAS and ufuncs with out= need native byte order; say so instead of numpy's out= error."""
    f, _, _, arrays = net
    swapped = arrays[name].astype(arrays[name].dtype.newbyteorder())
    with pytest.raises(BindingError, match=f"'{name}': dtype >f8 is stored in non-native byte order"):
        call(f, arrays, **{name: swapped})
