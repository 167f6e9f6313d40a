"""Second (and third) derivatives: ``grad`` applied to the output of ``grad``.

The backward graph is built from ordinary ops, so it can be differentiated again.
Each case checks a Hessian-vector product ``grad(sum(grad(f, x) * v), x)``
against finite differences of the compiled gradient (``check_grads`` on
``sum(grad(f, x) * v)``), and the full Jacobian of the gradient (``check_grads``
projects the non-scalar ``grad(f, x)`` on a random tensor).
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from helpers import softplus

FUNCTIONS = {
    "sigmoid_cubed": (lambda x: (gc.sigmoid(x) ** 3).sum(), "real"),
    "exp_squared": (lambda x: (gc.exp(x) ** 2).sum(), "real"),
    "x_exp_x": (lambda x: (x * gc.exp(x)).sum(), "real"),
    "x_to_the_4": (lambda x: ((x * x) ** 2).sum(), "real"),
    "tanh": (lambda x: gc.tanh(x).sum(), "real"),
    "tanh_times_exp": (lambda x: (gc.tanh(x) * gc.exp(x)).sum(), "real"),
    "log_squared": (lambda x: (gc.log(x) ** 2).sum(), "pos"),
    "sqrt_cubed": (lambda x: (gc.sqrt(x) ** 3).sum(), "pos"),
    "reciprocal": (lambda x: (1.0 / (1.0 + x * x)).sum(), "real"),
    "softplus": (lambda x: (softplus(x) * x).sum(), "real"),
    "softmax": (lambda x: (gc.softmax(x) * gc.exp(x)).sum(), "real"),
    "log_softmax": (lambda x: (gc.log_softmax(x) * gc.exp(x)).sum(), "real"),
    "log_softmax_linear": (lambda x: (gc.log_softmax(x) ** 2).sum(), "real"),
    "mean_of_squares": (lambda x: (x**2).mean(), "real"),
    "sum_squared": (lambda x: x.sum() ** 2, "real"),
    "row_norms": (lambda x: gc.sqrt((x * x).sum(1) + 1.0).sum(), "real"),
    "gram_trace": (lambda x: gc.trace(x.T @ x @ x.T @ x), "real"),
    "maximum_smooth_part": (lambda x: gc.maximum(x, x * x + 2.0).sum() * x.sum(), "real"),
}


def hvp_setup(graph, values, build, domain, shape=(3, 4)):
    g, (x, v) = graph(shape, shape)
    gx = gc.grad(build(x), x)
    return x, v, gx, values([x, v], (domain, "real"))


@pytest.mark.parametrize("name", FUNCTIONS)
def test_hessian_vector_product(graph, values, name):
    build, domain = FUNCTIONS[name]
    x, v, gx, vals = hvp_setup(graph, values, build, domain)
    gc.check_grads((gx * v).sum(), [x], vals)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_jacobian_of_the_gradient(graph, values, name):
    build, domain = FUNCTIONS[name]
    x, v, gx, vals = hvp_setup(graph, values, build, domain)
    gc.check_grads(gx, [x], vals)


def test_hvp_of_sigmoid_cubed_matches_the_closed_form(graph, values):
    x, v, gx, vals = hvp_setup(graph, values, lambda x: (gc.sigmoid(x) ** 3).sum(), "real")
    hv = gc.compile(gc.grad((gx * v).sum(), x))(vals)
    s = 1 / (1 + np.exp(-vals["x0"]))
    # d/dx s³ = 3 s³ (1 - s);  d²/dx² = 3 s³ (1 - s)(3 - 4 s)
    np.testing.assert_allclose(hv, 3 * s**3 * (1 - s) * (3 - 4 * s) * vals["x1"], rtol=1e-12)


def test_third_derivative(graph, values):
    g, (x,) = graph((4,))
    f = (gc.sigmoid(x) ** 3).sum()
    g1 = gc.grad(f, x)
    g2 = gc.grad(g1.sum(), x)
    vals = values([x])
    gc.check_grads(g2.sum(), [x], vals)
    gc.check_grads(gc.grad(g2.sum(), x), [x], vals)


def test_second_derivative_through_a_contraction(graph, values):
    g, (x, W, v) = graph(("n", 4), (4, 4), ("n", 4))
    f = gc.tanh(gc.tanh(x @ W) @ W).sum()
    vals = values([x, W, v])
    vals["x1"] *= 0.5
    gx, gW = gc.grad(f, [x, W])
    gc.check_grads((gx * v).sum(), [x, W], vals)  # mixed second derivatives too
    gc.check_grads(gW, [x, W], vals)


def test_second_derivative_of_x_matmul_W_used_twice(graph, values):
    g, (x, W, v) = graph(("n", 3), (3, 2), (3, 2))
    f = ((x @ W) * (x @ W)).sum()
    gW = gc.grad(f, W)  # 2 xᵀx W
    vals = values([x, W, v])
    gc.check_grads((gW * v).sum(), [W, x], vals)
    hv = gc.compile([gc.grad((gW * v).sum(), W), x])(vals)[0]
    X = vals["x0"]
    np.testing.assert_allclose(hv, 2 * X.T @ X @ vals["x2"], rtol=1e-12)


@pytest.mark.parametrize("labels", ["one_hot", "int"])
def test_softmax_cross_entropy_gradient_differentiates_again(rng, labels):
    # The fused rule's gradient (softmax(a) - t)/N needs softmax's own vjp to go further.
    g = gc.Graph("ce2")
    a, v = g.input("a", ("n", 4)), g.input("v", ("n", 4))
    L = rng.integers(0, 4, 5)
    if labels == "int":
        t, T = g.input("t", ("n",), kind="int"), L
    else:
        t, T = g.input("t", ("n", 4)), np.eye(4)[L]
    ga = gc.grad(gc.softmax_cross_entropy(a, t), a)
    vals = {"a": rng.standard_normal((5, 4)), "v": rng.standard_normal((5, 4)), "t": T}
    gc.check_grads((ga * v).sum(), [a], vals)
    gc.check_grads(ga, [a], vals)


def test_softmax_cross_entropy_hvp_closed_form(rng):
    g = gc.Graph("ce2")
    a, v, t = g.input("a", ("n", 3)), g.input("v", ("n", 3)), g.input("t", ("n",), kind="int")
    ga = gc.grad(gc.softmax_cross_entropy(a, t), a)
    hv_node = gc.grad((ga * v).sum(), a)
    A, V, L = rng.standard_normal((4, 3)), rng.standard_normal((4, 3)), np.array([0, 2, 1, 1])
    hv = gc.compile([hv_node, ga])(a=A, v=V, t=L)[0]
    e = np.exp(A - A.max(1, keepdims=True))
    s = e / e.sum(1, keepdims=True)
    # H = (diag(s) - s sᵀ)/N per row
    np.testing.assert_allclose(hv, (s * V - s * (s * V).sum(1, keepdims=True)) / 4, rtol=1e-12, atol=1e-15)


def test_grad_with_an_explicit_seed_is_a_vjp(graph, values):
    g, (x, u) = graph((3, 4), (3, 4))
    y = gc.tanh(x) * 2.0
    vjp = gc.grad(y, x, seed=u)
    vals = values([x, u])
    got = gc.compile(vjp)(vals)
    np.testing.assert_allclose(got, 2 * (1 - np.tanh(vals["x0"]) ** 2) * vals["x1"], rtol=1e-13)
    gc.check_grads((vjp * u).sum(), [x], vals)


def test_hvp_with_the_elementwise_fusion_off_and_on_agree(graph, values):
    x, v, gx, vals = hvp_setup(graph, values, FUNCTIONS["log_softmax"][0], "real")
    hv = gc.grad((gx * v).sum(), x)
    np.testing.assert_allclose(gc.compile(hv, fuse=False)(vals), gc.compile(hv)(vals), rtol=1e-12)
