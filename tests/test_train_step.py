"""TrainStep's per-call path: after the first call it checks only the batch's shapes and dtypes."""

import threading

import numpy as np
import pytest

from graphc.errors import BindingError
from graphc.models import init_two_layer_params, two_layer_net
from graphc.optim import Adam, SGD, TrainStep
from helpers import mnist_batch


def _steps(make=SGD):
    net = two_layer_net()
    params = init_two_layer_params(np.random.default_rng(0), dtype=np.float64, weight_init_std=0.1)
    copies = {k: v.copy() for k, v in params.items()}
    return (TrainStep(net.loss, params, make()), TrainStep(net.loss, copies, make(), lowering="array_api"))


@pytest.mark.parametrize("make", [SGD, Adam])
def test_changing_batch_sizes_agree_with_the_array_api_lowering(make):
    fast, reference = _steps(make)
    rng = np.random.default_rng(1)
    for n in (8, 8, 5, 8, 5, 1):
        x, t = mnist_batch(rng, n)
        np.testing.assert_allclose(fast(x=x, t=t), reference(x=x, t=t), rtol=1e-12)
    for k in fast.params:
        np.testing.assert_allclose(fast.params[k], reference.params[k], rtol=1e-12, atol=1e-15)


def test_a_bad_batch_after_good_ones_is_still_refused():
    step, _ = _steps()
    rng = np.random.default_rng(2)
    step(x=mnist_batch(rng, 4)[0], t=mnist_batch(rng, 4)[1])
    x, t = mnist_batch(rng, 4)
    with pytest.raises(BindingError, match="has dtype float64 but .x. has float32"):
        step(x=x.astype(np.float32), t=t)
    with pytest.raises(BindingError, match="axis 1 must be 784"):
        step(x=x[:, :783], t=t)
    with pytest.raises(BindingError, match="dim 'n' is 4"):
        step(x=x, t=t[:3])
    before = {k: v.copy() for k, v in step.params.items()}
    step(x=x.tolist(), t=t)  # array-likes are converted, as on a first call
    assert any(not np.array_equal(before[k], step.params[k]) for k in before)


def test_another_thread_checks_and_specialises_for_itself():
    step, reference = _steps()
    rng = np.random.default_rng(3)
    batches = [mnist_batch(rng, 6) for _ in range(4)]
    step(x=batches[0][0], t=batches[0][1])
    reference(x=batches[0][0], t=batches[0][1])
    losses = []
    worker = threading.Thread(target=lambda: losses.extend(step(x=x, t=t) for x, t in batches[1:]))
    worker.start()
    worker.join()
    expected = [reference(x=x, t=t) for x, t in batches[1:]]
    np.testing.assert_allclose(losses, expected, rtol=1e-12)
