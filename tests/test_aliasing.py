"""Aliasing: in-place updates, views and outputs.  Every lowering computes with the values of
this call: an update reads the old values of every target (its own too, through a view),
outputs hold this call's values, and returned arrays never share memory with inputs.
"""

import numpy as np
import pytest

import graphc as gc
from graphc.optim import SGD, TrainStep

LOWERINGS = ["auto", "array_api"]


def _w_m():
    g = gc.Graph("alias")
    s = g.input("s", ())
    W = g.param("W", (3, 3))
    M = g.param("M", (3, 3))
    rng = np.random.default_rng(0)
    return s, W, M, rng.standard_normal((3, 3)), rng.standard_normal((3, 3))


@pytest.mark.parametrize("lowering", LOWERINGS)
def test_update_does_not_clobber_a_view_read_by_a_later_update(lowering):
    s, W, M, w, m = _w_m()
    fn = gc.compile([s], updates={W: W * 2.0, M: M + W.T}, lowering=lowering)
    w0, m0 = w.copy(), m.copy()
    fn(s=np.float64(0.0), W=w, M=m)
    np.testing.assert_allclose(w, 2 * w0)
    np.testing.assert_allclose(m, m0 + w0.T)


@pytest.mark.parametrize("lowering", LOWERINGS)
@pytest.mark.parametrize("which", ["swap", "copy_of_updated"])
def test_updates_read_the_old_values_of_other_targets(lowering, which):
    s, W, M, w, m = _w_m()
    updates = {W: M, M: W} if which == "swap" else {W: W * 2.0, M: W * 1.0}
    w0, m0 = w.copy(), m.copy()
    gc.compile([s], updates=updates, lowering=lowering)(s=np.float64(0.0), W=w, M=m)
    if which == "swap":
        np.testing.assert_array_equal(w, m0)
        np.testing.assert_array_equal(m, w0)
    else:
        np.testing.assert_allclose(w, 2 * w0)
        np.testing.assert_allclose(m, w0)


def test_a_step_whose_loss_reads_its_param_transposed_updates_it_from_the_old_values():
    rng = np.random.default_rng(14)
    w0 = rng.standard_normal((4, 4))
    g = gc.Graph("tied")
    W = g.param("W", (4, 4))
    step = TrainStep(gc.sum(W * W.T), {"W": w0.copy()}, SGD(lr=0.1))
    step()
    np.testing.assert_allclose(step.params["W"], w0 - 0.2 * w0.T, rtol=1e-12)


@pytest.mark.parametrize("lowering", LOWERINGS)
def test_outputs_hold_this_calls_values_even_when_updated(lowering):
    s, W, M, w, m = _w_m()
    w0 = w.copy()
    out_w, out_w1, out_wt = gc.compile([W, W + 1.0, W.T], updates={W: W * 2.0}, lowering=lowering)(W=w)
    np.testing.assert_array_equal(out_w, w0)
    np.testing.assert_array_equal(out_w1, w0 + 1)
    np.testing.assert_array_equal(out_wt, w0.T)
    np.testing.assert_allclose(w, 2 * w0)


@pytest.mark.parametrize("lowering", LOWERINGS)
def test_a_scalar_updated_in_place_is_read_before_it_is_written(lowering):
    f = gc.elementwise("f", lambda a, b: a * (a + b))
    g = gc.Graph("scalar")
    s = g.param("s", ())
    t = g.input("t", ())
    value = np.array(1.5)
    gc.compile([t], updates={s: f(s, t)}, lowering=lowering)(s=value, t=np.array(2.0))
    assert value == pytest.approx(1.5 * 3.5)


@pytest.mark.parametrize("lowering", LOWERINGS)
def test_an_update_target_need_not_be_read(lowering):
    g = gc.Graph("target")
    W = g.param("W", (3, 3))
    v = g.param("v", (3,))
    w, out = np.arange(9.0).reshape(3, 3), np.zeros(3)
    gc.compile([W.sum()], updates={v: gc.diagonal(W)}, lowering=lowering)(W=w, v=out)
    np.testing.assert_array_equal(out, np.diag(w))


@pytest.mark.parametrize("lowering", LOWERINGS)
def test_a_broadcast_gradient_has_the_full_shape_and_is_a_fresh_array(lowering):
    g = gc.Graph("bcast")
    x = g.input("x", ("n", 3))
    b = g.input("b", (3,))
    (dx,) = gc.grad((x * b).sum(), [x])
    bv = np.arange(3.0)
    got = gc.compile(dx, lowering=lowering)(x=np.ones((4, 3)), b=bv)
    np.testing.assert_array_equal(got, np.broadcast_to(bv, (4, 3)))
    got[...] = 7  # writeable and not a view of b
    np.testing.assert_array_equal(bv, np.arange(3.0))


@pytest.mark.parametrize("lowering", LOWERINGS)
def test_a_diagonal_output_does_not_share_memory_with_its_input(lowering):
    g = gc.Graph("diag")
    W = g.input("W", (3, 3))
    w = np.arange(9.0).reshape(3, 3)
    d = gc.compile(gc.diagonal(W), lowering=lowering)(W=w)
    assert not np.shares_memory(d, w)
