"""NpRowSoftmax's cross-entropies: the unshifted fast path where it is safe, the shifted one elsewhere.

Both must give the float64 reference loss and softmax; the fast path must be the one taken
for ordinary logits (the step's) and must not be taken where exp would overflow or a row
would underflow.
"""

import numpy as np
import pytest

from graphc.backends.numpy.runtime import NpRowSoftmax
from helpers import np_log_softmax


def _reference(a, t):
    """The float64 loss and softmax."""
    log_y = np_log_softmax(a.astype(np.float64))
    return float(-(t * log_y).sum() / len(a)), np.exp(log_y)


def _logits(case, rng, n=50, c=10):
    a = rng.standard_normal((n, c)) * 3
    if case == "huge":  # exp(a) overflows: the shift is needed
        a[3] += 1e4
    elif case == "a row far below":  # every exp of that row underflows
        a[7] -= 1e4
    elif case == "at the limit":
        a[:] = 0.0
    return a


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("case, fast", [("ordinary", True), ("huge", False), ("a row far below", False),
                                        ("at the limit", True)])
@pytest.mark.parametrize("labels", [False, True])
def test_cross_entropy_matches_the_reference_on_either_path(monkeypatch, dtype, rtol, case, fast, labels):
    rng = np.random.default_rng(0)
    a = _logits(case, rng)
    helper = NpRowSoftmax(a.shape, dtype)
    if case == "at the limit":
        a[:] = helper.exp_limit - 0.5  # the largest logits the fast path takes: no overflow
    a = a.astype(dtype)
    lab = rng.integers(0, a.shape[1], len(a))
    t = np.eye(a.shape[1], dtype=dtype)[lab]
    shifted = []
    real_shift = helper._shift
    monkeypatch.setattr(helper, "_shift", lambda *args: shifted.append(1) or real_shift(*args))
    y = np.empty_like(a)
    loss = helper.cross_entropy_labels(a, lab, y) if labels else helper.cross_entropy(a, t, y)
    want_loss, want_y = _reference(a, t)
    assert bool(shifted) is not fast
    assert np.isfinite(loss) and loss.dtype == dtype
    np.testing.assert_allclose(float(loss), want_loss, rtol=rtol * 10)
    np.testing.assert_allclose(y, want_y, rtol=rtol * 10, atol=rtol * 1e-3)


def test_nan_logits_still_give_nan():
    helper = NpRowSoftmax((4, 3), np.float64)
    a = np.zeros((4, 3))
    a[2, 1] = np.nan
    assert np.isnan(helper.cross_entropy(a, np.eye(3)[[0, 1, 2, 0]], np.empty_like(a)))


def test_softmax_written_over_its_own_logits_takes_the_shifted_path():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((8, 5))
    t = np.eye(5)[rng.integers(0, 5, 8)]
    want_loss, want_y = _reference(a, t)
    helper = NpRowSoftmax(a.shape, np.float64)
    loss = helper.cross_entropy(a, t, a)  # y is a: the loss must still read the logits
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-12)
    np.testing.assert_allclose(a, want_y, rtol=1e-12)
