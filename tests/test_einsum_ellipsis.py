"""einsum with ``...``: numpy's rules, expanded to explicit letters at declaration.

Values against ``np.einsum``, gradients against torch's einsum in float64 and finite
differences, in both lowerings; graphc's exact dims hold across ellipses (a size-1 dim
does not stretch); malformed ellipses raise SpecError/ShapeError naming the spec.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

import graphc as gc

CASES = [  # spec, operand shapes
    ("...i", [(2, 3, 4)]),
    ("i...", [(2, 3, 4)]),
    ("...i->...", [(2, 3, 4)]),
    ("ij...->...", [(2, 3, 4)]),
    ("...ij->...ji", [(2, 3, 4)]),
    ("...ii->...i", [(2, 3, 3)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)]),
    ("...ij,...jk", [(2, 3, 4), (2, 4, 5)]),
    ("...ij,jk->...ik", [(2, 3, 4), (4, 5)]),
    ("...i,...i->...", [(2, 3), (3,)]),
    ("...i,...j", [(2, 3), (4,)]),
    ("...,...", [(3,), (3,)]),
    ("...->...", [(2, 3)]),
    ("i...->i", [(3,)]),  # the ellipsis covers no axis: an output without '...' is fine
    ("b...,b...->b...", [(2, 3, 4), (2, 3, 4)]),
    ("a...c,c...->a...", [(2, 3, 4), (4, 3)]),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("lowering", ["auto", "array_api"])
@pytest.mark.parametrize("spec, shapes", CASES, ids=IDS)
def test_ellipsis_matches_numpy_and_torch(spec, shapes, lowering):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(len(spec))
    arrays = [rng.standard_normal(s) for s in shapes]
    want = np.einsum(spec, *arrays)
    g = gc.Graph("e")
    nodes = [g.input(f"x{k}", s) for k, s in enumerate(shapes)]
    y = gc.einsum(spec, *nodes)
    assert y.shape == want.shape
    w = g.input("w", y.shape)
    W = rng.standard_normal(want.shape)
    loss = (gc.tanh(y) * w).sum()
    vals = {f"x{k}": a for k, a in enumerate(arrays)} | {"w": W}
    got, *grads = gc.compile([y, *gc.grad(loss, nodes)], lowering=lowering)(**vals)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    (torch.tanh(torch.einsum(spec, *ts)) * torch.tensor(W)).sum().backward()
    for ours, t in zip(grads, ts):
        np.testing.assert_allclose(ours, t.grad.numpy(), rtol=1e-12, atol=1e-13)
    gc.check_grads(loss, nodes, vals, lowering=lowering)


def test_ellipsis_with_symbolic_dims_and_a_saved_graph():
    g = gc.Graph("e")
    A, B = g.input("A", ("b", 3, 4)), g.input("B", ("b", 4, 5))
    y = gc.einsum("...ij,...jk->...ik", A, B, name="y")
    assert y.shape == ("b", 3, 5)
    buf = io.StringIO()
    gc.save_graph([y], buf)
    buf.seek(0)
    _, (loaded,) = gc.load_graph(buf)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 4, 5))
    np.testing.assert_array_equal(gc.compile([loaded])(A=a, B=b)[0], gc.compile([y])(A=a, B=b)[0])
    np.testing.assert_allclose(gc.compile([y])(A=a, B=b)[0], a @ b, rtol=1e-13)


@pytest.mark.parametrize("spec, shapes, error, message", [
    ("...i->i", [(2, 3)], gc.SpecError, r"einsum '\.\.\.i->i'.*the ellipsis covers 1 axis\(es\) but the output has no '\.\.\.'"),
    ("..i", [(2, 3)], gc.SpecError, r"write an ellipsis as one '\.\.\.'"),
    ("......i", [(2, 3)], gc.SpecError, r"write an ellipsis as one '\.\.\.'"),
    ("...i->....", [(2, 3)], gc.SpecError, r"write an ellipsis as one '\.\.\.'"),
    ("ijk...", [(2, 3)], gc.ShapeError, r"operand 0 has shape \(2, 3\), rank 2, but its indices 'ijk\.\.\.' name 3 axes"),
    ("...i,...i->...", [(2, 3), (4, 3)], gc.ShapeError, r"einsum '\.\.\.i,\.\.\.i->\.\.\.' as '.*': index .* is 2 .* but 4"),
    ("...i,...i->...", [(1, 3), (4, 3)], gc.ShapeError, r"is 1 .* but 4"),  # a size-1 dim does not stretch
    ("...,...", [(3,)], gc.SpecError, r"names 2 operand\(s\) but 1 were given"),
])
def test_malformed_ellipses_are_refused_at_declaration(spec, shapes, error, message):
    g = gc.Graph("e")
    nodes = [g.input(f"x{k}", s) for k, s in enumerate(shapes)]
    with pytest.raises(error, match=message):
        gc.einsum(spec, *nodes)
