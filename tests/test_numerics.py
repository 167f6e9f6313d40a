"""The numerics guard: off by default (no checks in the code), on demand it names the first bad node."""

import numpy as np
import pytest

import graphc as gc
from graphc.models import init_two_layer_params, two_layer_net
from graphc.optim import SGD, TrainStep


def _log_graph():
    g = gc.Graph("numerics")
    x = g.input("x", ("n",))
    y = gc.log(x).rename("logx")
    z = (y * 2.0).rename("twice")
    return x, z.sum()


@pytest.mark.parametrize("lowering", ["auto", "array_api"])
def test_first_nan_or_inf_is_reported_with_its_node(lowering):
    x, out = _log_graph()
    fn = gc.compile(out, check_numerics=True, lowering=lowering)
    with np.errstate(divide="ignore", invalid="ignore"):
        with pytest.raises(gc.NumericsError, match=r"Inf produced by logx\[n\] = log\(x\[n\]\)"):
            fn(x=np.array([1.0, 0.0, 2.0]))
        with pytest.raises(gc.NumericsError, match=r"NaN produced by logx\[n\]"):
            fn(x=np.array([1.0, -1.0, 2.0]))
    assert fn(x=np.array([1.0, np.e])) == pytest.approx(2.0)


def test_off_by_default_the_code_has_no_checks():
    x, out = _log_graph()
    # read from the source on purpose: "no checks" means no cost, i.e. no check call is emitted
    assert "check_finite" not in gc.compile(out).source
    assert "check_finite" in gc.compile(out, check_numerics=True).source
    with np.errstate(divide="ignore"):
        assert gc.compile(out)(x=np.array([1.0, 0.0])) == -np.inf  # computed, not checked


def test_train_step_guard_names_the_diverging_node():
    net = two_layer_net()
    params = init_two_layer_params(np.random.default_rng(0), dtype=np.float64)
    params["W1"][...] = 1e308  # finite, but x·W1 overflows
    step = TrainStep(net.loss, params, SGD(lr=0.1), check_numerics=True)
    t = np.eye(10)[[0, 1, 2, 3]]
    with np.errstate(all="ignore"), pytest.raises(gc.NumericsError, match=r"Inf produced by XW1\[n,h\] = Σ_k x\[n,k\]·W1\[k,h\] at index \(0, 0\)"):
        step(x=np.ones((4, 784)), t=t)


@pytest.mark.parametrize("lowering", ["auto", "array_api"])
def test_the_guard_blames_a_bad_input_not_the_first_op_that_reads_it(lowering):
    net = two_layer_net()
    params = init_two_layer_params(np.random.default_rng(0), dtype=np.float64)
    step = TrainStep(net.loss, params, SGD(lr=0.1), check_numerics=True, lowering=lowering)
    x = np.ones((4, 784))
    x[2, 17] = np.nan
    before = {k: v.copy() for k, v in params.items()}
    with np.errstate(all="ignore"), pytest.raises(gc.NumericsError, match=r"^NaN in input 'x' at index \(2, 17\)$"):
        step(x=x, t=np.eye(10)[[0, 1, 2, 3]])
    for k, v in step.params.items():  # stopped before anything was computed or written
        np.testing.assert_array_equal(v, before[k])
