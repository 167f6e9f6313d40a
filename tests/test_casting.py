"""RowCaster: both ways of filling the buffer write exactly the cast values; it takes the cheaper."""

from collections import deque

import numpy as np
import pytest

from graphc.backends.numpy.casting import RowCaster
from graphc.errors import BindingError, GraphcError


def _rows(n, width=37, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, width), dtype=np.uint8)


def _force(caster, way):
    """Make ``way`` look cheaper, so that calls off the probe take it."""
    other = "straight" if way == "block" else "block"
    caster.timings[way], caster.timings[other] = deque([1e-9] * 3, maxlen=3), deque([1e-6] * 3, maxlen=3)


@pytest.mark.parametrize("way", ["straight", "block"])
@pytest.mark.parametrize("own", [0, 1, 17, 40])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_both_ways_write_the_exact_cast(way, own, dtype):
    caster = RowCaster((37,), dtype)
    caster.block = np.empty((7, 37), dtype)  # blocks that do not divide the rows
    _force(caster, way)
    out = np.full((50, 37), np.nan, dtype)
    for seed, n in enumerate((40, 40, 23)):  # shorter calls into the same buffer too
        rows = _rows(n, seed=seed)
        caster.calls = 1  # off the probe
        got = caster(rows, out[:n], own=min(own, n))
        assert np.shares_memory(got, out)
        np.testing.assert_array_equal(got, rows.astype(dtype))
    assert np.isnan(out[40:]).all()  # nothing written past the rows


def test_it_takes_the_way_that_cost_less_and_times_it():
    caster = RowCaster((37,), np.float32)
    _force(caster, "block")
    caster.calls = 1
    caster(_rows(10), np.empty((10, 37), np.float32))
    assert len(caster.timings["block"]) == 3 and caster.timings["block"][-1] != 1e-9
    assert list(caster.timings["straight"]) == [1e-6] * 3


def test_it_tries_the_other_way_every_probe_every_calls():
    caster = RowCaster((37,), np.float32)
    _force(caster, "straight")
    forced = {"straight": [1e-9] * 3, "block": [1e-6] * 3}
    tried = []
    for _ in range(2 * RowCaster.PROBE_EVERY):
        _force(caster, "straight")
        caster(_rows(10), np.empty((10, 37), np.float32))
        tried += [way for way, timings in caster.timings.items() if list(timings) != forced[way]]
    assert tried.count("block") == 2 and tried.count("straight") == 2 * RowCaster.PROBE_EVERY - 2


def test_one_slow_timing_does_not_switch_the_way():
    caster = RowCaster((37,), np.float32)
    caster.timings["straight"] = deque([1e-9, 1e-3, 1e-9], maxlen=3)  # one call held up
    caster.timings["block"] = deque([2e-9] * 3, maxlen=3)
    assert caster.cost("straight") < caster.cost("block")
    caster.timings["straight"] = deque([1e-9, 1e-3], maxlen=3)  # of two timings, the lower
    assert caster.cost("straight") == 1e-9


def test_the_first_calls_go_straight_in_until_the_block_is_timed():
    caster = RowCaster((37,), np.float32)
    caster(_rows(5), np.empty((5, 37), np.float32))
    assert len(caster.timings["straight"]) == 1 and not caster.timings["block"]


def test_own_rows_only_need_no_timing():
    caster = RowCaster((37,), np.float32)
    out = np.empty((5, 37), np.float32)
    np.testing.assert_array_equal(caster(_rows(5), out, own=5), _rows(5).astype(np.float32))
    assert not caster.timings["straight"] and not caster.timings["block"]


@pytest.mark.parametrize("way", ["straight", "block"])
@pytest.mark.parametrize("n_rows, out_shape, out_dtype, own", [
    (5, (10, 37), np.float32, 0),  # out longer than the rows
    (1, (10, 37), np.float32, 0),  # one row, which numpy would broadcast
    (11, (10, 37), np.float32, 0),  # rows longer than out
    (5, (5, 36), np.float32, 0),  # another row width
    (5, (5, 37), np.float64, 0),  # another dtype than the caster's: the block way would round twice
    (1, (1, 37), np.float32, 5),  # own beyond the rows
    (5, (5, 37), np.float32, -1),
])
def test_a_mismatched_call_is_refused_whichever_way_is_due(way, n_rows, out_shape, out_dtype, own):
    caster = RowCaster((37,), np.float32)
    _force(caster, way)
    caster.calls = 1
    out = np.full(out_shape, np.nan, out_dtype)
    with pytest.raises(BindingError, match=r"RowCaster: rows \(\d+, 37\) cast into out"):
        caster(_rows(n_rows), out, own=own)
    assert np.isnan(out).all()  # nothing written


def test_a_caster_can_probe_less_often():
    caster = RowCaster((37,), np.float32, probe_every=64)
    _force(caster, "straight")
    forced = {"straight": [1e-9] * 3, "block": [1e-6] * 3}
    tried = []
    for _ in range(128):
        _force(caster, "straight")
        caster(_rows(10), np.empty((10, 37), np.float32))
        tried += [way for way, timings in caster.timings.items() if list(timings) != forced[way]]
    assert tried.count("block") == 2 and RowCaster.PROBE_EVERY == 16


@pytest.mark.parametrize("probe_every", [0, 1, -4, 2.5, True])
def test_a_bad_probe_interval_is_refused(probe_every):
    with pytest.raises(GraphcError, match="probe_every must be an integer of at least 2"):
        RowCaster((37,), np.float32, probe_every=probe_every)
