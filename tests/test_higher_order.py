"""Higher order: ``gc.jvp`` (forward mode), ``gc.hvp`` and ``gc.hessian``.

Values are checked in float64 against torch.autograd.functional (jvp, hvp, hessian) and
against central differences of graphc's own compiled function or gradient, on both
lowerings; the printed Hessian of the two-layer net shows its δ structure; bad arguments
raise GradError (or GraphError for a node of another graph).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import graphc as gc
from graphc.compiler.walk import toposort

torch = pytest.importorskip("torch")
F = torch.nn.functional

LOWERINGS = ["auto", "array_api"]


def _t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


# name -> (shape of x, {other input: shape}, graphc f(x, **others), torch f(x, **others), domain of x)
# The others are fixed data; x is the variable.  Every f is a scalar.
SCALAR = {
    "mlp": ((3, 4), {"X": (5, 3), "W2": (4, 2)},
            lambda x, X, W2: ((gc.tanh(X @ x) @ W2) ** 2).sum(),
            lambda x, X, W2: ((torch.tanh(X @ x) @ W2) ** 2).sum(), "real"),
    "softmax_ce": ((3, 4), {"X": (5, 3), "T": (5, 4)},
                   lambda x, X, T: gc.softmax_cross_entropy(X @ x, T),
                   lambda x, X, T: -(T * F.log_softmax(X @ x, -1)).sum() / 5, "real"),
    "two_layer_relu": ((4, 3), {"X": (5, 6), "W1": (6, 4), "T": (5, 3)},
                       lambda x, X, W1, T: gc.softmax_cross_entropy(gc.relu(X @ W1) @ x, T),
                       lambda x, X, W1, T: -(T * F.log_softmax(torch.relu(X @ W1) @ x, -1)).sum() / 5, "real"),
    "einsum_repeated_index": ((3, 3), {"A": (3, 3)},
                              lambda x, A: (gc.einsum("ii,ij->j", x, A) ** 2).sum() + gc.einsum("ij,ji->", x, x),
                              lambda x, A: (torch.einsum("ii,ij->j", x, A) ** 2).sum() + torch.einsum("ij,ji->", x, x),
                              "real"),
    "elementwise_chain": ((2, 3), {},
                          lambda x: (gc.sigmoid(x) * gc.exp(-x * x) + gc.log(1.0 + x * x) / gc.sqrt(x * x + 2.0)).sum(),
                          lambda x: (torch.sigmoid(x) * torch.exp(-x * x) + torch.log(1 + x * x)
                                     / torch.sqrt(x * x + 2)).sum(), "real"),
    "log_softmax_axis0": ((3, 4), {"C": (3, 4)},
                          lambda x, C: (gc.log_softmax(x, axis=0) ** 2 * C).sum() + (gc.softmax(x) * C).sum(),
                          lambda x, C: (F.log_softmax(x, 0) ** 2 * C).sum() + (F.softmax(x, -1) * C).sum(), "real"),
    "maximum_and_sigmoid": ((2, 3), {},
                            lambda x: (gc.maximum(x, x * x - 1.0) * gc.sigmoid(x)).sum(),
                            lambda x: (torch.maximum(x, x * x - 1) * torch.sigmoid(x)).sum(), "real"),
    "trace_of_cube": ((3, 3), {},
                      lambda x: gc.trace(x @ x @ x) + (gc.diagonal(x) ** 3).sum(),
                      lambda x: torch.trace(x @ x @ x) + (torch.diagonal(x) ** 3).sum(), "real"),
}

# Non-scalar outputs for jvp (softmax, log_softmax, contractions reading x twice, a diagonal).
VECTOR = {
    "softmax_rows": ((3, 4), {"X": (5, 3)}, lambda x, X: gc.softmax(X @ x), lambda x, X: F.softmax(X @ x, -1)),
    "log_softmax_cols": ((3, 4), {}, lambda x: gc.log_softmax(gc.tanh(x), axis=0),
                         lambda x: F.log_softmax(torch.tanh(x), 0)),
    "x_A_x": ((3, 3), {"A": (3, 3)}, lambda x, A: gc.einsum("ij,jk,kl->il", x, A, x),
              lambda x, A: torch.einsum("ij,jk,kl->il", x, A, x)),
    "diagonal_times_x": ((3, 3), {}, lambda x: gc.einsum("ii,ij->ij", x, x) * gc.exp(x),
                         lambda x: torch.einsum("ii,ij->ij", x, x) * torch.exp(x)),
    "maximum_mix": ((2, 3), {}, lambda x: gc.maximum(x, x * x - 1.0) * gc.sigmoid(x),
                    lambda x: torch.maximum(x, x * x - 1) * torch.sigmoid(x)),
}


def build(case, name):
    shape, others, f, tf = case[:4]
    g = gc.Graph(name)
    x = g.param("x", shape)
    ins = {k: g.input(k, s) for k, s in others.items()}
    rng = np.random.default_rng(7)
    vals = {k: rng.standard_normal(s) for k, s in {"x": shape, **others}.items()}
    if "T" in vals:  # one-hot targets
        vals["T"] = np.eye(vals["T"].shape[1])[rng.integers(0, vals["T"].shape[1], vals["T"].shape[0])]
    out = f(x, **ins)
    fixed = {k: _t(v) for k, v in vals.items() if k != "x"}
    tref = lambda X: tf(X, **fixed)  # noqa: E731
    return g, x, out, vals, tref, rng


@pytest.mark.parametrize("lowering", LOWERINGS)
@pytest.mark.parametrize("name", list(SCALAR) + list(VECTOR))
def test_jvp_matches_torch_and_finite_differences(name, lowering):
    case = SCALAR.get(name) or VECTOR[name]
    g, x, out, vals, tref, rng = build(case, name)
    t = g.input("tx", x.shape)
    vals["tx"] = rng.standard_normal(x.shape)
    Jt = gc.jvp(out, x, t)
    assert Jt.shape == out.shape
    got = gc.compile([Jt, out], lowering=lowering)(vals)[0]
    _, want = torch.autograd.functional.jvp(tref, _t(vals["x"]), _t(vals["tx"]))
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-10, atol=1e-12)
    f = gc.compile(out, lowering=lowering)
    eps = 1e-6
    fd = (f({**vals, "x": vals["x"] + eps * vals["tx"]}) - f({**vals, "x": vals["x"] - eps * vals["tx"]})) / (2 * eps)
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("lowering", LOWERINGS)
@pytest.mark.parametrize("name", SCALAR)
def test_hvp_matches_torch_and_finite_differences_of_the_gradient(name, lowering):
    g, x, out, vals, tref, rng = build(SCALAR[name], name)
    v = g.input("v", x.shape)
    vals["v"] = rng.standard_normal(x.shape)
    hv = gc.hvp(out, x, v)
    got = gc.compile(hv, lowering=lowering)(vals)
    _, want = torch.autograd.functional.hvp(tref, _t(vals["x"]), _t(vals["v"]))
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-10, atol=1e-12)
    gradient = gc.compile(gc.grad(out, x), lowering=lowering)
    eps = 1e-6
    fd = (gradient({**vals, "x": vals["x"] + eps * vals["v"]})
          - gradient({**vals, "x": vals["x"] - eps * vals["v"]})) / (2 * eps)
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("lowering", LOWERINGS)
@pytest.mark.parametrize("name", SCALAR)
def test_hessian_matches_torch(name, lowering):
    g, x, out, vals, tref, rng = build(SCALAR[name], name)
    H = gc.hessian(out, x)
    assert H.shape == x.shape + x.shape
    assert not any(n.is_leaf and n.name.startswith("v_") for n in toposort([H]))  # no dummy direction
    got = gc.compile(H, lowering=lowering)(vals)
    want = torch.autograd.functional.hessian(tref, _t(vals["x"]))
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-10, atol=1e-12)
    M = got.reshape(int(np.prod(x.shape)), -1)
    np.testing.assert_allclose(M, M.T, rtol=1e-10, atol=1e-12)  # symmetric


def test_hessian_agrees_with_finite_differences_of_the_gradient():
    g, x, out, vals, tref, rng = build(SCALAR["elementwise_chain"], "fd")
    H = gc.compile(gc.hessian(out, x))(vals)
    gradient = gc.compile(gc.grad(out, x))
    eps, X = 1e-6, vals["x"]
    for idx in np.ndindex(X.shape):
        e = np.zeros_like(X)
        e[idx] = eps
        col = (gradient({**vals, "x": X + e}) - gradient({**vals, "x": X - e})) / (2 * eps)
        np.testing.assert_allclose(H[(Ellipsis, *idx)], col, rtol=1e-6, atol=1e-7)


def test_jvp_and_hvp_with_several_variables_match_torch():
    g = gc.Graph("two")
    X, T = g.input("X", (5, 3)), g.input("T", (5, 2))
    W1, W2 = g.param("W1", (3, 4)), g.param("W2", (4, 2))
    V1, V2 = g.input("V1", (3, 4)), g.input("V2", (4, 2))
    loss = gc.softmax_cross_entropy(gc.tanh(X @ W1) @ W2, T)
    rng = np.random.default_rng(3)
    vals = {k: rng.standard_normal(n.shape) for k, n in [("X", X), ("W1", W1), ("W2", W2), ("V1", V1), ("V2", V2)]}
    vals["T"] = np.eye(2)[rng.integers(0, 2, 5)]

    def tloss(w1, w2):
        return -(_t(vals["T"]) * F.log_softmax(torch.tanh(_t(vals["X"]) @ w1) @ w2, -1)).sum() / 5

    prim, tan = (_t(vals["W1"]), _t(vals["W2"])), (_t(vals["V1"]), _t(vals["V2"]))
    jv = gc.compile(gc.jvp(loss, [W1, W2], [V1, V2]))(vals)
    np.testing.assert_allclose(jv, torch.autograd.functional.jvp(tloss, prim, tan)[1].numpy(), rtol=1e-10)
    hv = gc.hvp(loss, [W1, W2], [V1, V2])
    assert [h.shape for h in hv] == [W1.shape, W2.shape]
    got = gc.compile(list(hv))(vals)
    want = torch.autograd.functional.hvp(tloss, prim, tan)[1]
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-10, atol=1e-13)


def test_jvp_of_a_variable_the_output_ignores_is_zero():
    g = gc.Graph("z")
    x, y, t = g.param("x", (3,)), g.param("y", (3,)), g.input("t", (3,))
    f = (x * x).sum()
    assert gc.compile(gc.jvp(f, y, t))({"x": np.ones(3), "t": np.ones(3)}) == 0.0
    np.testing.assert_array_equal(gc.compile(gc.hessian(f, y))({"x": np.ones(3)}), np.zeros((3, 3)))
    np.testing.assert_array_equal(gc.compile(gc.hessian(x.sum() * 2.0, x))({}), np.zeros((3, 3)))


def test_third_order_through_hvp():
    g = gc.Graph("third")
    x, v = g.param("x", (4,)), g.input("v", (4,))
    hv = gc.hvp((gc.sigmoid(x) ** 3).sum(), x, v)
    rng = np.random.default_rng(0)
    gc.check_grads((hv * v).sum(), [x], {"x": rng.standard_normal(4), "v": rng.standard_normal(4)})


def test_explain_shows_the_two_layer_hessian_with_its_delta_structure():
    g = gc.Graph("two_layer")
    x, t = g.input("x", ("n", 6)), g.input("t", ("n", 3))
    W1, b1 = g.param("W1", (6, 4)), g.param("b1", (4,))
    W2, b2 = g.param("W2", (4, 3)), g.param("b2", (3,))
    h = gc.relu(x @ W1 + b1, name="h")
    a = gc.add(gc.einsum("nh,hc->nc", h, W2, name="hW2"), b2, name="a")
    loss = gc.softmax_cross_entropy(a, t, name="loss")
    H = gc.hessian(loss, W2, name="H")
    text = gc.explain(H)
    lines = [line.strip() for line in text.splitlines()]
    # ∂²L/∂W2[h,c]∂W2[p,q] = Σ_n h[n,h]·h[n,p]·(δ[c,q]·y[n,c] − y[n,c]·y[n,q])/N, step by step:
    assert "softmax_a[n,c] = softmax(a[n,c])" in lines
    assert any(re.fullmatch(r"\w+\[n,c,p,q\] = δ\[c,q\]·h\[n,p\]", s) for s in lines), text
    assert any(re.fullmatch(r"\w+\[n,c,p,q\] = \w+\[n,c,p,q\]/\|n\|", s) for s in lines), text
    assert any(re.fullmatch(r"\w+\[n,p,q\] = Σ_c \w+\[n,c,p,q\]·softmax_a\[n,c\]", s) for s in lines), text
    assert lines[-1].startswith("H[h,c,p,q] = Σ_n ") and "h[n,h]" in lines[-1], text
    # and it computes the Hessian: Σ_n h h' (diag(y) - y yᵀ)/N
    rng = np.random.default_rng(5)
    vals = {"x": rng.standard_normal((7, 6)), "t": np.eye(3)[rng.integers(0, 3, 7)],
            "W1": rng.standard_normal((6, 4)), "b1": rng.standard_normal(4),
            "W2": rng.standard_normal((4, 3)), "b2": rng.standard_normal(3)}
    Hv, hv, av = gc.compile([H, h, a])(vals)
    y = np.exp(av - av.max(1, keepdims=True))
    y /= y.sum(1, keepdims=True)
    curvature = np.einsum("nc,cq->ncq", y, np.eye(3)) - np.einsum("nc,nq->ncq", y, y)  # diag(y) - y yᵀ per row
    want = np.einsum("nh,np,ncq->hcpq", hv, hv, curvature) / 7
    np.testing.assert_allclose(Hv, want, rtol=1e-12, atol=1e-14)


def test_explain_shows_a_jvp_rule_by_rule():
    g = gc.Graph("jv")
    x, W, V = g.input("x", ("n", 3)), g.param("W", (3, 2)), g.input("V", (3, 2))
    y = gc.tanh(gc.matmul(x, W, name="xW"), name="y")
    text = gc.explain(gc.jvp(y, W, V))
    assert "∂xW[n,j] = Σ_i x[n,i]·V[i,j]    (∂xW = x·V)" in text
    assert "∂y[n,j] = 4·∂xW[n,j]·sigmoid(-2·xW[n,j])·sigmoid(2·xW[n,j])" in text


# -- errors ------------------------------------------------------------------------------------
def _errors_graph():
    g = gc.Graph("err")
    x, v = g.param("x", (3, 2)), g.input("v", (3, 2))
    return g, x, v, (x * x).sum()


@pytest.mark.parametrize("call, message", [
    (lambda g, x, v, f: gc.jvp(f, x, g.input("bad", (2, 3))), "must have its shape (3, 2)"),
    (lambda g, x, v, f: gc.hvp(f, x, g.input("bad", (3,))), "must have its shape (3, 2)"),
    (lambda g, x, v, f: gc.jvp(f, [x], [v, v]), "one tangent per variable"),
    (lambda g, x, v, f: gc.hvp(f, [x], v), "one vector per variable"),
    (lambda g, x, v, f: gc.jvp(f, x, 1.0), "one tangent per variable"),
    (lambda g, x, v, f: gc.hvp(x * x, x, v), "not a scalar"),
    (lambda g, x, v, f: gc.hessian(x * x, x), "not a scalar"),
    (lambda g, x, v, f: gc.jvp(f, x, g.input("labels", (3, 2), kind="int")), "holds int values"),
    (lambda g, x, v, f: gc.hessian(f, g.input("k", (3,), kind="int")), "holds int values"),
    (lambda g, x, v, f: gc.hessian(gc.argmax(x), x), "holds int values"),
    (lambda g, x, v, f: gc.hessian((g.param("big", (65, 64)) ** 2).sum(), g.leaves["big"]), "more than 4096"),
    (lambda g, x, v, f: gc.hessian((g.param("s", ("n", 2)) ** 2).sum(), g.leaves["s"]), "symbolic dim"),
    (lambda g, x, v, f: gc.hessian(f, [x]), "must be a graph node"),
    (lambda g, x, v, f: gc.jvp("f", x, v), "must be a graph node"),
])
def test_bad_arguments_raise_a_clear_grad_error(call, message):
    g, x, v, f = _errors_graph()
    with pytest.raises(gc.GradError, match=re.escape(message)):
        call(g, x, v, f)


def test_a_tangent_from_another_graph_is_a_graph_error():
    g, x, v, f = _errors_graph()
    other = gc.Graph("other").input("v", (3, 2))
    with pytest.raises(gc.GraphError, match="belongs to graph 'other'"):
        gc.jvp(f, x, other)



def test_jvp_through_cross_entropy_targets_survives_a_graph_file(tmp_path):
    # The scalar rule (gradient · tangent) for both operands of softmax_cross_entropy, and a
    # Hessian: saved, loaded and run again, the same numbers.
    g = gc.Graph("ce_targets")
    x, A, T, W = g.param("x", (3,)), g.input("A", (4, 3)), g.input("T", (4, 2)), g.param("W", (3, 2))
    tT, tW = g.input("tT", (4, 2)), g.input("tW", (3, 2))
    f = gc.softmax_cross_entropy(gc.tanh(A * x) @ W, T)
    outs = [gc.jvp(f, [T, W], [tT, tW]), gc.hessian(f, x, name="H")]
    rng = np.random.default_rng(2)
    vals = {"x": rng.standard_normal(3), "A": rng.standard_normal((4, 3)), "T": rng.dirichlet(np.ones(2), 4),
            "W": rng.standard_normal((3, 2)), "tT": rng.standard_normal((4, 2)), "tW": rng.standard_normal((3, 2))}
    got = gc.compile(outs)(vals)
    tv = {k: _t(v) for k, v in vals.items()}

    def tf(T_, W_):
        return -(T_ * F.log_softmax(torch.tanh(tv["A"] * tv["x"]) @ W_, -1)).sum() / 4

    want = torch.autograd.functional.jvp(tf, (tv["T"], tv["W"]), (tv["tT"], tv["tW"]))[1]
    np.testing.assert_allclose(got[0], want.numpy(), rtol=1e-12)
    gc.save_graph(outs, tmp_path / "higher.json")
    _, loaded = gc.load_graph(tmp_path / "higher.json")
    for a, b in zip(got, gc.compile(loaded)(vals)):
        np.testing.assert_allclose(a, b, rtol=1e-14)


def test_the_docs_show_the_two_layer_hessian_as_explain_prints_it():
    from pathlib import Path

    from graphc.models import two_layer_net

    net = two_layer_net()
    text = gc.explain(gc.hessian(net.loss, net.params["W2"], name="H"))
    page = (Path(__file__).resolve().parent.parent / "docs" / "how-it-works.md").read_text(encoding="utf-8")
    shown = "\n".join(text.splitlines()[-3:])  # the page shows the last three lines
    assert shown in page


@pytest.mark.parametrize("build, expected", [
    (lambda x: gc.sum(x) ** 2, lambda X: 2 * np.ones((3, 3))),
    (lambda x: (x * gc.sum(x)).sum(), lambda X: 2 * np.ones((3, 3))),
    (lambda x: ((x - x.mean(None, keepdims=True)) ** 2).sum(), lambda X: 2 * (np.eye(3) - 1 / 3)),
], ids=["sum_squared", "x_times_sum", "centered_squares"])
@pytest.mark.parametrize("lowering", ["auto", "array_api"])
def test_a_hessian_through_a_full_sum_compiles_and_prints(build, expected, lowering):
    """Found by review: a Σ_b δ[a,b] whose every operand was a δ left an einsum of no operands."""
    g = gc.Graph("h")
    x = g.param("x", (3,))
    H = gc.hessian(build(x), x)
    X = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(gc.compile(H, lowering=lowering)(x=X), expected(X), rtol=1e-12)
    assert gc.explain(H).splitlines()[-1].startswith("  ")
