"""Comparisons (bool masks) and where(cond, a, b), against numpy and torch.where (float64).

The gradient flows through the chosen branch only; none into the comparison's operands.
Values away from ties, so finite differences see no kink.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

import graphc as gc

COMPARISONS = [
    (lambda a, b: a > b, np.greater), (lambda a, b: a >= b, np.greater_equal),
    (lambda a, b: a < b, np.less), (lambda a, b: a <= b, np.less_equal),
    (gc.greater, np.greater), (gc.greater_equal, np.greater_equal), (gc.less, np.less),
    (gc.less_equal, np.less_equal), (lambda a, b: 0.5 < a, lambda a, b: 0.5 < a),
]


@pytest.mark.parametrize("lowering", ["auto", "array_api"])
@pytest.mark.parametrize("k", range(len(COMPARISONS)))
def test_comparisons_are_bool_masks(k, lowering):
    ours, ref = COMPARISONS[k]
    g = gc.Graph("cmp")
    a, b = g.input("a", ("n", 3)), g.input("b", (3,))
    A, B = np.array([[0.0, 1.0, 2.0], [1.0, 0.5, -1.0]]), np.array([1.0, 0.5, 0.0])
    m = ours(a, b)
    assert m.kind == "bool" and m.shape == ("n", 3)
    got = gc.compile([m, a], lowering=lowering)(a=A, b=B)[0]
    np.testing.assert_array_equal(np.asarray(got, dtype=bool), ref(A, B))


WHERES = {  # build(x, y) and the torch equivalent
    "leaky_relu": (lambda x, y: gc.where(x > 0, x, 0.1 * x), lambda torch, x, y: torch.where(x > 0, x, 0.1 * x)),
    "two_inputs": (lambda x, y: gc.where(x < y, gc.exp(x), y * y),
                   lambda torch, x, y: torch.where(x < y, torch.exp(x), y * y)),
    "scalar_branch": (lambda x, y: gc.where(x >= y, gc.tanh(x), 0.0),
                      lambda torch, x, y: torch.where(x >= y, torch.tanh(x), torch.zeros_like(x))),
    "nested": (lambda x, y: gc.where(x > 0.5, x, gc.where(x < -0.5, -x, x * x)),
               lambda torch, x, y: torch.where(x > 0.5, x, torch.where(x < -0.5, -x, x * x))),
    "broadcast_cond": (lambda x, y: gc.where(x.sum(1, keepdims=True) > 0, x, y),
                       lambda torch, x, y: torch.where(x.sum(1, keepdim=True) > 0, x, y)),
}


@pytest.mark.parametrize("lowering", ["auto", "array_api"])
@pytest.mark.parametrize("name", WHERES)
def test_where_values_and_gradients_match_torch(name, lowering):
    torch = pytest.importorskip("torch")
    build, tbuild = WHERES[name]
    rng = np.random.default_rng(len(name))
    X, Y, W = (rng.uniform(-2, 2, (4, 3)) for _ in range(3))
    g = gc.Graph("w")
    x, y, w = g.input("x", (4, 3)), g.input("y", (4, 3)), g.input("w", (4, 3))
    z = build(x, y)
    loss = (z * w).sum()
    got, dx, dy = gc.compile([z, *gc.grad(loss, [x, y])], lowering=lowering)(x=X, y=Y, w=W)
    tx, ty = torch.tensor(X, requires_grad=True), torch.tensor(Y, requires_grad=True)
    tz = tbuild(torch, tx, ty)
    (tz * torch.tensor(W)).sum().backward()
    np.testing.assert_allclose(got, tz.detach().numpy(), rtol=1e-13)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dy, np.zeros_like(Y) if ty.grad is None else ty.grad.numpy(), rtol=1e-12, atol=1e-14)
    gc.check_grads(loss, [x, y], {"x": X, "y": Y, "w": W}, lowering=lowering)


def test_no_gradient_flows_into_the_comparison():
    g = gc.Graph("w")
    x, y = g.input("x", (3,)), g.input("y", (3,))
    (dy,) = gc.grad(gc.where(y > 0, x, 2.0 * x).sum(), [y])
    np.testing.assert_array_equal(gc.compile(dy)(y=np.ones(3)), np.zeros(3))


def test_where_survives_a_round_trip():
    g = gc.Graph("w")
    x = g.input("x", ("n",))
    z = gc.where(x > 0, x, 0.1 * x, name="z")
    outputs = [z, x > 1.0, *gc.grad(z.sum(), [x])]
    buf = io.StringIO()
    gc.save_graph(outputs, buf)
    buf.seek(0)
    _, loaded = gc.load_graph(buf)
    X = np.array([-2.0, 0.5, 3.0])
    for a, b in zip(gc.compile(outputs)(x=X), gc.compile(loaded)(x=X)):
        np.testing.assert_array_equal(a, b)


def test_errors_at_declaration():
    g = gc.Graph("w")
    x, n = g.input("x", (3,)), g.input("n", (3,), kind="int")
    with pytest.raises(gc.GraphError, match="where: the condition must be a comparison node"):
        gc.where(x, x, x)
    with pytest.raises(gc.GraphError, match="where: the condition must be a comparison node"):
        gc.where(g.input("m", (3,), kind="bool"), x, x)
    with pytest.raises(gc.GraphError, match="greater: operand 'n' holds int values"):
        n > 0
    with pytest.raises(gc.GraphError, match="where: branch 'n' holds int values"):
        gc.where(x > 0, n, x)
    with pytest.raises(gc.ShapeError, match=r"where: .*is 3 in .* but 4 in 'v' \(4,\)"):
        gc.where(x > 0, x, g.input("v", (4,)))
    with pytest.raises(gc.GraphError, match="add: operand .* holds bool values"):
        (x > 0) + x
