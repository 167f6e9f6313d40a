"""What ``explain`` prints: the gradient lines carry the textbook matrix forms (dX = dY·Wᵀ,
dW = Xᵀ·dY, db = Σ_n dY), ``steps=True`` replays the δ derivation, ``latex=True`` prints
LaTeX, ``forward=True`` adds the forward section; every kind of contraction adjoint prints,
and the matrix forms evaluate to the contractions they stand for.
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

import graphc as gc
from graphc.ops.contraction import Contraction
from helpers import explain_lines, mnist_graph


def test_affine_gradients_in_textbook_matrix_form(affine):
    g, _, _, grads = affine
    text = gc.explain(grads)
    assert text.startswith("backward:")
    lines = explain_lines(text)
    assert set(lines) >= {"dY", "dx", "dW", "db"}
    assert re.search(r"\(dx = dY·Wᵀ\)", lines["dx"])  # dX = dY·Wᵀ
    assert re.search(r"\(dW = xᵀ·dY\)", lines["dW"])  # dW = Xᵀ·dY
    assert re.search(r"\(db = Σ_n dY\)", lines["db"])  # db = Σ_n dY
    assert "2·Y[n,j]" in lines["dY"]


def test_affine_gradients_in_einstein_notation(affine):
    lines = explain_lines(gc.explain(affine[3]))
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
    assert r"\sum_{n}" in dW  # the sum over the batch index, its bound (the dim n) not written over it
    assert "{x}_{n,i}" in dW and "{dY}_{n,j}" in dW
    dx = next(line for line in lines if line.strip().startswith("{dx}"))
    assert r"\sum_{j}" in dx  # a fixed dim of 2: limits 0..1
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


def test_two_layer_net_explains():
    g, (x, t, W1, b1, W2, b2), loss, grads = mnist_graph()
    text = gc.explain(grads)
    lines = explain_lines(text)
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


def test_integer_label_gradient_explains_the_one_hot():
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


# -- every kind of contraction adjoint -----------------------------------------------------
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
    assert "dx[n,i] = 2" in gc.explain(gc.grad((x * 2.0).sum(), x))
    assert "= b[i]·2.5" in gc.explain(gc.einsum("i,->i", b, 2.5), forward=True)
    text = gc.explain(gc.grad(gc.einsum("ni,->", x, 3.0), x))
    assert "3" in text and "3.0" not in text and "const" not in text


# -- what Jupyter shows (more in test_notebook.py) -------------------------------------------------
def test_explain_returns_the_same_text_as_a_str_that_typesets(affine):
    text = gc.explain(affine[3])
    assert isinstance(text, str) and str(text) == (
        "backward:\n  dY[n,j] = 2·Y[n,j]\n  dx[n,i] = Σ_j dY[n,j]·W[i,j]    (dx = dY·Wᵀ)\n"
        "  dW[i,j] = Σ_n dY[n,j]·x[n,i]    (dW = xᵀ·dY)\n  db[j] = Σ_n dY[n,j]    (db = Σ_n dY)")
    latex = text._repr_latex_()
    assert r"\sum" in latex and r"{dW}_{i,j} &= \sum_{n} {dY}_{n,j} {x}_{n,i}" in latex
    assert r"\left(dW = x^{\top}\,dY\right)" in latex


@pytest.mark.parametrize("kw", [{}, {"forward": True}, {"steps": True}], ids=str)
def test_the_typeset_rows_are_the_latex_lines(affine, kw):
    """latex=True still returns its LaTeX text; each of its lines is a row of the typeset derivation."""
    text = gc.explain(affine[3], latex=True, **kw)
    assert "  {dY}_{n,j} = 2 {Y}_{n,j}" in str(text).splitlines()
    rows = [line.strip().replace("&", "") for line in text.splitlines() if line.startswith("  ")]
    for typeset in (text._repr_latex_(), gc.explain(affine[3], **kw)._repr_latex_()):
        typeset = typeset.replace("&", "")  # alignment marks aside
        assert all(row in typeset for row in rows), (rows, typeset)


# -- issue 14: derivations as a person writes them -------------------------------------------------
def test_a_mean_over_three_prints_one_third_exactly_and_no_unit_factor():
    g = gc.Graph("mean3")
    z = g.input("z", (3,))
    text = gc.explain(gc.grad((z * z).mean().rename("l"), [z]), forward=True)
    assert "/3" in text and "0.333" not in text and "1.0·" not in text
    assert "1.0" not in gc.explain(gc.grad((z * 1.0).sum(), [z]))


def test_latex_sums_name_the_index_only_so_it_never_collides_with_its_bound():
    g = gc.Graph("bounds")
    x, w = g.input("x", ("n", 4)), g.param("w", (4,))
    text = gc.explain(gc.grad(gc.einsum("ni,i->", x, w).rename("L"), [w]), latex=True)
    assert r"\sum_{n}" in text and "n - 1" not in text and "=0}" not in text
    eps = gc.explain((x + 1e-5).rename("y"), forward=True, latex=True)
    assert "10^{-5}" in eps and r"1.0 \cdot" not in eps


def test_the_forward_section_lists_every_node_a_step_refers_to():
    g = gc.Graph("cited")
    x, W = g.input("x", ("n", "D")), g.param("W", ("D", "k"))
    loss = (x @ W).sum()
    text = gc.explain(gc.grad(loss, [W]), forward=True, steps=True)
    forward = text.split("backward:")[0]
    cited = set(re.findall(r"∂L/∂(\w+)", text.split("backward:")[1])) - {"W"}
    assert cited and all(re.search(rf"^  {name}\b", forward, re.M) for name in cited), text
    assert "[]" not in text


def test_latex_keeps_the_steps():
    g = gc.Graph("steps")
    x, W = g.input("x", ("n", 3)), g.param("W", (3, 2))
    (dW,) = gc.grad(gc.matmul(x, W, name="y"), [W], seed=g.input("dy", ("n", 2)))
    text = gc.explain([dW], steps=True, latex=True)
    assert r"\frac{\partial L}{\partial {W}_{p,q}}" in text and r"\delta_{" in text
    assert r"\Rightarrow\ {dW}_{i,j} = \sum_{n}" in text and "Σ" not in text and "∂" not in text
    assert gc.explain([dW], latex=True).count("\n") < text.count("\n")


def _layer_norm():
    g = gc.Graph("layernorm")
    x = g.input("x", ("n", "D"))
    mu = x.mean(1).rename("mu")
    xc = (x.T - mu).T.rename("xc")
    var = (xc * xc).mean(1).rename("var")
    y = (xc.T / gc.sqrt(var + 1e-5)).T.rename("y")
    return x, (y * y).sum().rename("loss")


def test_every_derived_node_is_named_after_a_variable_through_elementwise_chains():
    x, loss = _layer_norm()
    text = gc.explain(gc.grad(loss, [x]), forward=True).split("backward:")[1]
    names = re.findall(r"^  (\S+?)\[", text, re.M)
    assert names and all(name.startswith("d") for name in names), names
    assert not re.search(r"\b(ew|einsum)\d", text), text
    assert "dxc[n,D] = dxc_1[n,D] + dxc_2[n,D] + dxc_3[n,D]" in text
    assert "dmu[n] = Σ_D dmu_pre[D,n]" in text
    g = gc.Graph("chain")
    a = g.input("a", ("n", 3))
    W1 = g.param("W1", (3, 4))
    h = gc.tanh(gc.sigmoid(a @ W1) * 2).rename("h")
    text = gc.explain(gc.grad(h.sum().rename("L"), [W1]), forward=True, steps=True)
    assert not re.search(r"[a-z]\d", text.replace("W1", "")), text  # no generated name (ew34, matmul2)
    # tanh' in its stable form (4·σ(-2u)·σ(2u), not 1 - h²: graphc.ops.stable)
    assert "dmul_h[n,j] = 4·sigmoid(-2·mul_h[n,j])·sigmoid(2·mul_h[n,j])" in text
    assert "dsigmoid_h[n,j] = 2·dmul_h[n,j]" in text
    assert "∂L/∂matmul_h[n,j]" in text and "matmul_h[n,j] = Σ_i a[n,i]·W1[i,j]" in text


def test_index_letters_follow_the_declared_dims_across_a_derivation():
    x, loss = _layer_norm()
    text = gc.explain(gc.grad(loss, [x]), forward=True)
    assert "dx[n,D] = " in text and "dxc[n,D] = " in text and "dy[n,D] = " in text
    assert not re.search(r"\b(dx|dxc|dy)\[i,j\]", text)
