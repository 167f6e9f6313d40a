"""softmax_cross_entropy along any axis, against torch's cross_entropy (float64).

The classes lie along ``axis``; the loss is the mean over every other axis, as torch's
``cross_entropy`` on ``(batch, classes, ...)`` with the class axis moved to 1.  The numpy
backend keeps its fused row kernel (and the kept softmax) for the last axis of rank ≤ 2
logits; any other axis takes the array-API helper.  Targets: float rows summing to 1
along the axis, or integer labels.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

import graphc as gc

CASES = [((4, 5), -1), ((4, 5), 0), ((5,), 0), ((3, 4, 5), 1), ((3, 4, 5), -1), ((3, 4, 5), 0), (("n", 4, 2), 1)]
SIZES = {"n": 3}


def concrete(shape):
    return tuple(SIZES.get(d, d) for d in shape)


def problem(shape, axis, labels, seed=0):
    rng = np.random.default_rng(seed)
    g = gc.Graph("ce")
    a = g.input("a", shape)
    ax = axis % len(shape)
    positions = tuple(d for k, d in enumerate(shape) if k != ax)
    A = 3 * rng.standard_normal(concrete(shape))
    C = concrete(shape)[ax]
    if labels:
        t = g.input("t", positions, kind="int")
        T = rng.integers(0, C, concrete(positions))
    else:
        t = g.input("t", shape)
        T = rng.random(concrete(shape))
        T /= T.sum(ax, keepdims=True)
    return g, a, t, A, T, ax


def torch_loss(torch, A, T, ax, labels):
    ta = torch.tensor(A, requires_grad=True)
    tt = torch.tensor(T)
    if A.ndim == 1:
        loss = torch.nn.functional.cross_entropy(ta[None], tt[None])
    else:
        loss = torch.nn.functional.cross_entropy(ta.movedim(ax, 1), tt if labels else tt.movedim(ax, 1))
    return ta, tt, loss


@pytest.mark.parametrize("lowering", ["auto", "array_api"])
@pytest.mark.parametrize("labels", [False, True], ids=["targets", "labels"])
@pytest.mark.parametrize("shape, axis", CASES, ids=[f"{s}-{a}" for s, a in CASES])
def test_loss_and_gradients_match_torch(shape, axis, labels, lowering):
    torch = pytest.importorskip("torch")
    g, a, t, A, T, ax = problem(shape, axis, labels)
    loss = gc.softmax_cross_entropy(a, t, axis=axis)
    wrt = [a] if labels else [a, t]
    got, *grads = gc.compile([loss, *gc.grad(loss, wrt)], lowering=lowering)(a=A, t=T)
    ta, _, tl = torch_loss(torch, A, T, ax, labels)
    tl.backward()
    np.testing.assert_allclose(got, tl.item(), rtol=1e-12)
    np.testing.assert_allclose(grads[0], ta.grad.numpy(), rtol=1e-11, atol=1e-14)
    values = {"a": A, "t": T}
    gc.check_grads(loss, wrt, values, lowering=lowering)


@pytest.mark.parametrize("shape, axis", [((4, 5), 0), ((3, 4, 5), 1)])
def test_target_gradient_matches_torch(shape, axis):
    torch = pytest.importorskip("torch")
    g, a, t, A, T, ax = problem(shape, axis, labels=False, seed=1)
    loss = gc.softmax_cross_entropy(a, t, axis=axis)
    (dt,) = gc.compile(gc.grad(loss, [t]))(a=A, t=T)
    ta, tt = torch.tensor(A), torch.tensor(T, requires_grad=True)
    torch.nn.functional.cross_entropy(ta.movedim(ax, 1), tt.movedim(ax, 1)).backward()
    np.testing.assert_allclose(dt, tt.grad.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("labels", [False, True])
def test_second_derivative_along_another_axis(labels):
    g, a, t, A, T, ax = problem((4, 3), 0, labels, seed=2)
    v = g.input("v", (4, 3))
    (da,) = gc.grad(gc.softmax_cross_entropy(a, t, axis=0), [a])
    gc.check_grads((da * v).sum(), [a], {"a": A, "t": T, "v": np.random.default_rng(3).standard_normal((4, 3))})


def test_numpy_backend_fuses_the_last_axis_only():
    g = gc.Graph("ce")
    a, t = g.input("a", ("n", 5)), g.input("t", ("n", 5))
    for axis, fused in ((-1, True), (0, False)):
        loss = gc.softmax_cross_entropy(a, t, axis=axis)
        fn = gc.compile([loss, *gc.grad(loss, [a])])
        assert ("NpRowSoftmax" in fn.source) is fused
        assert ("kept from the pass computing" in fn.explain(compiled=True)) is fused


def test_explain_names_the_class_axis():
    g = gc.Graph("ce")
    a, t = g.input("a", (5, "n")), g.input("t", ("n",), kind="int")
    text = gc.explain(gc.softmax_cross_entropy(a, t, axis=0, name="L"))
    assert "softmax_cross_entropy_" in text


@pytest.mark.parametrize("labels", [False, True])
def test_axis_survives_a_round_trip(labels):
    g, a, t, A, T, ax = problem((3, 4, 5), 1, labels, seed=4)
    loss = gc.softmax_cross_entropy(a, t, axis=1, name="L")
    outputs = [loss, *gc.grad(loss, [a])]
    buf = io.StringIO()
    gc.save_graph(outputs, buf)
    buf.seek(0)
    _, loaded = gc.load_graph(buf)
    assert loaded[0].op.axis == 1
    for x, y in zip(gc.compile(outputs)(a=A, t=T), gc.compile(loaded)(a=A, t=T)):
        np.testing.assert_array_equal(x, y)


def test_labels_out_of_range_along_another_axis():
    g, a, t, A, T, ax = problem((4, 5), 0, labels=True)
    fn = gc.compile(gc.softmax_cross_entropy(a, t, axis=0))
    with pytest.raises(gc.BindingError, match=r"integer labels must lie in \[0, 4\); found 4"):
        fn(a=A, t=np.full(5, 4))


def test_a_file_written_before_the_axis_means_the_last_axis():
    import json

    g, a, t, A, T, ax = problem((4, 5), -1, labels=True)
    loss = gc.softmax_cross_entropy(a, t)
    buf = io.StringIO()
    gc.save_graph([loss], buf)
    data = json.loads(buf.getvalue())
    entries = [e for e in data["nodes"] if e.get("op") == "softmax_cross_entropy"]
    assert len(entries) == 1 and entries[0].pop("axis") == 1
    _, (loaded,) = gc.load_graph(io.StringIO(json.dumps(data)))
    assert loaded.op.axis == 1
    np.testing.assert_array_equal(gc.compile(loaded)(a=A, t=T), gc.compile(loss)(a=A, t=T))
