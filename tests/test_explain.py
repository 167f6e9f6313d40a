"""What ``explain`` prints, and what ``compile`` emits.

explain: the gradient lines carry the textbook matrix forms (dX = dY·Wᵀ, dW = Xᵀ·dY,
db = Σ_n dY), ``steps=True`` replays the δ derivation, ``latex=True`` prints LaTeX.
compile: the source is valid Python with no user names outside comments, only the
requested gradients are computed, common subexpressions are computed once and
transposes are folded into the contractions that read them.
"""

from __future__ import annotations

import ast
import itertools
import re

import numpy as np
import pytest

import graphc as gc
from graphc.compiler.passes.simplification import simplify
from graphc.compiler.walk import toposort
from graphc.ops.contraction import Contraction
from graphc.ops.elementwise import Elementwise
from graphc.ops.leaves import Input


def lines_of(text: str) -> dict:
    """{lhs name: line} for the lines of an explain output."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"\s+([^\s\[=]+)(\[[^\]]*\])? = ", line)
        if m:
            out[m.group(1)] = line
    return out


@pytest.fixture
def affine():
    """Y = x·W + b with a squared loss; gradients wrt x, W, b."""
    g = gc.Graph("affine")
    x, W, b = g.input("x", ("n", 3)), g.param("W", (3, 2)), g.param("b", (2,))
    Y = (x @ W + b).rename("Y")
    loss = (Y**2).sum().rename("L")
    dx, dW, db = gc.grad(loss, [x, W, b])
    return g, (x, W, b), loss, (dx, dW, db)


@pytest.fixture
def two_layer():
    g = gc.Graph("two_layer")
    x, t = g.input("x", ("n", 784)), g.input("t", ("n", 10))
    W1, b1 = g.param("W1", (784, 50)), g.param("b1", (50,))
    W2, b2 = g.param("W2", (50, 10)), g.param("b2", (10,))
    h = gc.relu(x @ W1 + b1)
    a = gc.einsum("nh,hc->nc", h, W2) + b2
    loss = gc.softmax_cross_entropy(a, t)
    return g, (x, t, W1, b1, W2, b2), loss, gc.grad(loss, [W1, b1, W2, b2])


# -- explain -------------------------------------------------------------------------------
def test_affine_gradients_in_textbook_matrix_form(affine):
    g, _, _, grads = affine
    text = gc.explain(grads)
    assert text.startswith("backward:")
    lines = lines_of(text)
    assert set(lines) >= {"dY", "dx", "dW", "db"}
    assert re.search(r"\(dx = dY·Wᵀ\)", lines["dx"])  # dX = dY·Wᵀ
    assert re.search(r"\(dW = xᵀ·dY\)", lines["dW"])  # dW = Xᵀ·dY
    assert re.search(r"\(db = Σ_n dY\)", lines["db"])  # db = Σ_n dY
    assert "2·Y[n,j]" in lines["dY"]


def test_affine_gradients_in_einstein_notation(affine):
    lines = lines_of(gc.explain(affine[3]))
    assert re.match(r"\s+dW\[(\w),(\w)\] = Σ_n dY\[n,\2\]·x\[n,\1\]", lines["dW"])
    assert re.match(r"\s+dx\[n,(\w)\] = Σ_(\w) dY\[n,\2\]·W\[\1,\2\]", lines["dx"])
    assert re.match(r"\s+db\[(\w)\] = Σ_n dY\[n,\1\]", lines["db"])


def test_steps_replay_the_delta_derivation(affine):
    text = gc.explain(affine[3], steps=True)
    assert "δ[" in text and "∂L/∂" in text
    # ∂L/∂W[p,q] = Σ_{n,j} ∂L/∂Y'[n,j]·∂Y'[n,j]/∂W[p,q] = Σ dY·x·δ·δ ⇒ dW = ...
    chain = re.search(r"∂L/∂W\[(\w),(\w)\] = Σ_\{n,(\w)\} ∂L/∂\w+\[n,\3\]·∂\w+\[n,\3\]/∂W\[\1,\2\]", text)
    assert chain, text
    p, q, j = chain.groups()
    assert re.search(rf"= Σ_\{{[n,{j}\w,]+\}} dY\[n,{j}\]·x\[n,(\w)\]·δ\[\1,{p}\]·δ\[{j},{q}\]", text), text
    assert re.search(r"⇒ dW\[\w,\w\] = Σ_n", text)
    assert text.count("⇒") == 2  # the two contraction adjoints: dx and dW (db is a plain sum)


def test_latex_output(affine):
    text = gc.explain(affine[3], latex=True)
    lines = text.splitlines()[1:]
    assert len(lines) == 4
    dW = next(line for line in lines if line.strip().startswith("{dW}"))
    assert r"\sum_{n=0}^{n - 1}" in dW  # the sum over the symbolic batch dim, with limits
    assert "{x}_{n,i}" in dW and "{dY}_{n,j}" in dW
    dx = next(line for line in lines if line.strip().startswith("{dx}"))
    assert r"\sum_{j=0}^{1}" in dx  # a fixed dim of 2: limits 0..1
    assert "Σ" not in text and "·" not in text  # LaTeX, not the text notation


def test_forward_section(affine):
    text = gc.explain(affine[3], forward=True)
    fwd, bwd = text.split("backward:")
    assert fwd.startswith("forward:")
    assert re.search(r"= Σ_i x\[n,i\]·W\[i,j\]\s+\(\w+ = x·W\)", fwd)
    assert "b[j] +" in fwd and "dW" not in fwd and "dW" in bwd


def test_explain_a_compiled_function(affine):
    fn = gc.compile(affine[3])
    assert fn.explain() == gc.explain(affine[3]) == gc.explain(fn)


def test_two_layer_net_explains(two_layer):
    g, (x, t, W1, b1, W2, b2), loss, grads = two_layer
    text = gc.explain(grads)
    lines = lines_of(text)
    assert {"dW1", "db1", "dW2", "db2"} <= set(lines)
    assert "(dW1 = xᵀ·" in lines["dW1"] and "(db1 = Σ_n " in lines["db1"]
    assert re.search(r"\(dW2 = relu\w*ᵀ·\w+\)", lines["dW2"]) and "(db2 = Σ_n " in lines["db2"]
    # the fused softmax cross-entropy rule: (softmax(a) - t)/N
    assert re.search(r"\(-t\[n,c\] \+ \w+\[n,c\]\)/\|n\|", text), text
    # relu's derivative is the Iverson bracket [a > 0]
    assert re.search(r"·\[\w+\[n,\w\] > 0\]", text)
    assert "δ[" in gc.explain(grads, steps=True)
    assert r"\sum" in gc.explain(grads, latex=True)
    assert "forward:" in gc.explain(grads, forward=True)


def test_integer_label_gradient_explains_the_one_hot(two_layer):
    g = gc.Graph("labels")
    a, t = g.input("a", ("n", 10)), g.input("t", ("n",), kind="int")
    text = gc.explain(gc.grad(gc.softmax_cross_entropy(a, t), a))
    assert "one_hot(t)" in text and "/|n|" in text


def test_explain_with_matrix_forms_off(affine):
    text = gc.explain(affine[3], matrix=False)
    assert "ᵀ" not in text and "(dW =" not in text


def test_explain_of_nothing():
    assert gc.explain([]) == ""


def test_explain_second_order(affine):
    g, (x, W, b), loss, (dx, dW, db) = affine
    v = g.input("v", (3, 2))
    text = gc.explain(gc.grad((dW * v).sum(), W))
    assert text.startswith("backward:") and "v[" in text


# -- compile: the source --------------------------------------------------------------
DISTINCT = ["inputs_qq", "weights_qq", "bias_qq", "loss_qq", "hidden_qq"]


def test_source_is_valid_python_without_user_names(generated_only):
    g = gc.Graph("graph_qq")
    x, W, b = g.input("inputs_qq", ("batch_qq", 3)), g.param("weights_qq", (3, 2)), g.param("bias_qq", (2,))
    h = gc.tanh(x @ W + b).rename("hidden_qq")
    loss = gc.softmax(h).sum().rename("loss_qq")
    fn = gc.compile([loss, *gc.grad(loss, [x, W, b])], name="fn_qq")
    ast.parse(fn.source)
    generated_only(fn.source)
    code = "\n".join(line.split("#", 1)[0] for line in fn.source.splitlines())  # no '#' in generated code
    for name in DISTINCT + ["graph_qq", "batch_qq", "fn_qq"]:
        assert name not in code
    assert "weights_qq" in fn.source  # ...but the comments name them, for the reader


# -- compile: only what is requested --------------------------------------------------
def test_only_the_requested_gradient_is_built(affine):
    g, (x, W, b), loss, _ = affine
    dW = gc.grad(loss, [W])[0]
    nodes = toposort([dW])
    assert not [n for n in nodes if n.origin is not None and n.origin[0].inputs[n.origin[1]] is x]
    assert "dx" not in lines_of(gc.explain(dW))
    assert "dx[" not in gc.compile(dW).source


def test_only_the_requested_gradient_is_compiled(affine):
    g, (x, W, b), loss, _ = affine

    def contractions(outputs):
        return sum(isinstance(n.op, Contraction) and len(n.inputs) > 1 for n in toposort(simplify(outputs)))

    dW, dx = gc.grad(loss, [W, x])
    assert contractions(gc.grad(loss, [W])) == 2  # forward x·W, then dW = xᵀ·dY
    assert contractions([dW, dx]) == 3  # ... and dx = dY·Wᵀ
    assert "dx" in lines_of(gc.explain([dW, dx]))


def test_gradient_wrt_data_only_builds_no_weight_gradient(two_layer):
    g, (x, t, W1, b1, W2, b2), loss, _ = two_layer
    dx = gc.grad(loss, x)
    names = lines_of(gc.explain(dx))
    assert "dx" in names and not {"dW1", "db1", "dW2", "db2"} & set(names)


# -- compile: common subexpressions ------------------------------------------------
def code_of(fn) -> str:
    return "\n".join(line.split("#", 1)[0] for line in fn.source.splitlines())


def test_the_same_expression_built_twice_is_computed_once(graph, values):
    g, (x, W) = graph(("n", 3), (3, 2))
    e1, e2 = gc.exp(x @ W).sum(), gc.exp(x @ W).sum()
    assert e1 is not e2
    fn = gc.compile([e1, e2])
    assert code_of(fn).count("exp(") == 1
    kept = toposort(simplify([e1, e2]))
    assert sum(isinstance(n.op, Contraction) and len(n.inputs) == 2 for n in kept) == 1
    out = fn(values([x, W]))
    assert out[0] == out[1]


def test_a_product_of_two_copies_is_a_square(graph, values):
    g, (x, W) = graph(("n", 3), (3, 2))
    fn = gc.compile(gc.exp(x @ W) * gc.exp(x @ W))
    assert code_of(fn).count("exp(") == 1
    vals = values([x, W])
    np.testing.assert_allclose(fn(vals), np.exp(vals["x0"] @ vals["x1"]) ** 2, rtol=1e-13)


def test_forward_values_are_shared_with_the_backward_pass(affine):
    g, (x, W, b), loss, grads = affine
    fn = gc.compile([loss, *grads])
    # the forward matmul is computed once and reused by dx, dW, db
    kept = toposort(simplify([loss, *grads]))
    assert sum(isinstance(n.op, Contraction) and len(n.inputs) == 2 for n in kept) == 3


# -- compile: transposes are folded into contractions ----------------------------------
def materialised_transposes(fn) -> list:
    """Statements of the generated ``run`` that only permute an array."""
    tree = ast.parse(fn.source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            f = node.value.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in ("permute_dims", "transpose", "swapaxes", "ascontiguousarray", "copy"):
                found.append(ast.unparse(node))
    return found


@pytest.mark.parametrize("build", [
    lambda x, y: x.T @ y,
    lambda x, y: (y.T @ x).T,
    lambda x, y: gc.einsum("ij,ik->jk", x, y),
    lambda x, y: gc.transpose(gc.transpose(x)).T @ y,
], ids=["xT_y", "transposed_product", "einsum", "double_transpose"])
def test_transposes_are_not_materialised(graph, values, build):
    g, (x, y) = graph(("n", 3), ("n", 2))
    out = build(x, y)
    kept = toposort(simplify([out]))
    assert [type(n.op).__name__ for n in kept if not isinstance(n.op, Input)] == ["Contraction"]
    assert set(kept[-1].inputs) == {x, y}  # the transpose merged into the contraction
    fn = gc.compile(out)
    assert not materialised_transposes(fn), fn.source
    vals = values([x, y])
    np.testing.assert_allclose(fn(vals), vals["x0"].T @ vals["x1"], rtol=1e-13)


def test_backward_of_an_affine_layer_materialises_no_transpose(affine):
    fn = gc.compile(affine[3])
    assert not materialised_transposes(fn), fn.source


def test_contractions_read_only_once_are_fused(graph):
    g, (a, b, c) = graph((2, 3), (3, 4), (4, 5))
    kept = toposort(simplify([(a @ b) @ c]))
    contractions = [n for n in kept if isinstance(n.op, Contraction)]
    assert len(contractions) == 1 and len(contractions[0].inputs) == 3


def test_elementwise_chains_are_fused(graph):
    g, (x,) = graph((3,))
    kept = toposort(simplify([gc.exp(gc.tanh(x) * 2.0 + 1.0)]))
    assert sum(isinstance(n.op, Elementwise) for n in kept) == 1


# -- explain on every kind of contraction adjoint -----------------------------------
ADJOINT_SPECS = [
    ("ij,jk->ik", (2, 3), (3, 4)), ("ii->", (3, 3)), ("ii->i", (3, 3)), ("iij->j", (3, 3, 2)),
    ("iii->i", (3, 3, 3)), ("ii,i->i", (3, 3), (3,)), ("ij,jk,ki->", (2, 3), (3, 4), (4, 2)),
    ("bij,bjk->bik", (2, 3, 4), (2, 4, 5)), ("i,j->ij", (2,), (3,)), ("ijk->kji", (2, 3, 4)),
]


@pytest.mark.parametrize("case", ADJOINT_SPECS, ids=[c[0] for c in ADJOINT_SPECS])
@pytest.mark.parametrize("kw", [{}, {"steps": True}, {"latex": True}, {"forward": True}], ids=str)
def test_explain_every_contraction_adjoint(case, kw):
    spec, *shapes = case
    g = gc.Graph("adj")
    nodes = [g.input(f"x{k}", s) for k, s in enumerate(shapes)]
    out = gc.einsum(spec, *nodes)
    grads = gc.grad((gc.tanh(out) * out).sum(), nodes)
    text = gc.explain(grads, **kw)
    backward = text.split("backward:")[1]
    for k in range(len(nodes)):  # every gradient is in the backward section
        lhs = r"^\s+" + re.escape(f"{{dx_{{{k}}}}}") if kw.get("latex") else rf"(^\s+|⇒ )dx{k}\b"
        assert re.search(lhs, backward, re.M), text
    assert "KroneckerDelta" not in text and "Idx(" not in text


def test_the_adjoint_of_a_diagonal_is_a_kronecker_delta():
    g = gc.Graph("diag")
    x, v = g.input("x", (3, 3)), g.input("v", (3,))
    dx = gc.grad((gc.diagonal(x) * v).sum(), x)
    text = gc.explain(dx, forward=True)
    assert text.startswith("backward:")  # it is a gradient, even after explain's CSE copies it
    assert re.search(r"dx\[i,(\w)\] = v\[i\]·δ\[\1,i\]", text), text
    assert r"\delta_{" in gc.explain(dx, latex=True)
    assert re.search(r"δ\[i,\w\]·δ\[i,\w\]", gc.explain(dx, steps=True))


# -- the matrix forms are right: evaluate them -------------------------------------------
def _two_operand_specs():
    terms = ["", "i", "j", "k", "ij", "ji", "ik", "ki", "jk", "kj", "ii"]
    for ta in terms:
        for tb in terms:
            letters = sorted(set(ta + tb))
            for r in range(3):
                for out in itertools.permutations(letters, r):
                    yield f"{ta},{tb}->{''.join(out)}"


SIZES = {"i": 2, "j": 3, "k": 4}


def test_matrix_forms_evaluate_to_their_contractions():
    """Every two-operand contraction of vectors/matrices that gets a matrix form (dY·Wᵀ, Xᵀ·dY, ...)."""
    from graphc.compiler.explain.notation import matrix_form

    rng = np.random.default_rng(0)
    checked = []
    for spec in _two_operand_specs():
        ta, tb = spec.split("->")[0].split(",")
        g = gc.Graph("mf")
        A, B = g.input("A", tuple(SIZES[c] for c in ta)), g.input("B", tuple(SIZES[c] for c in tb))
        node = gc.einsum(spec, A, B)
        form = matrix_form(node) if isinstance(node.op, Contraction) else None
        if form is None:
            continue
        vals = {"A": rng.standard_normal(A.shape), "B": rng.standard_normal(B.shape)}
        got = eval(form.replace("ᵀ", ".T").replace("·", "@"), {}, vals)  # noqa: S307 - matrix-form text over A, B
        want = np.einsum(spec, vals["A"], vals["B"])
        assert np.shape(got) == want.shape and np.allclose(got, want), (spec, form)
        checked.append(form)
    assert len(checked) > 50 and {"A·B", "Aᵀ·B", "A·Bᵀ", "Bᵀ·Aᵀ"} <= set(checked)


def test_constants_print_as_their_values():
    g = gc.Graph("consts")
    x, b = g.input("x", ("n", 3)), g.param("b", (3,))
    assert "dx[n,i] = 2.0" in gc.explain(gc.grad((x * 2.0).sum(), x))
    assert "= b[i]·2.5" in gc.explain(gc.einsum("i,->i", b, 2.5), forward=True)
    text = gc.explain(gc.grad(gc.einsum("ni,->", x, 3.0), x))
    assert "3.0" in text and "const" not in text
