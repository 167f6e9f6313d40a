"""One compiled function called from several threads at once gives each thread correct results."""

import numpy as np

import graphc as gc
from graphc.models import init_two_layer_params, two_layer_net
from threads import run_in_threads  # tests/threads.py (tests/ is on sys.path)


def test_threads_get_correct_results():
    net = two_layer_net()
    fn = gc.compile([net.loss, *gc.grad(net.loss, list(net.params.values()))])
    rng = np.random.default_rng(0)
    params = init_two_layer_params(rng, dtype=np.float64, weight_init_std=0.1)
    batches = [(rng.random((n, 784)), np.eye(10)[rng.integers(0, 10, n)]) for n in (16, 32, 16, 64)]
    expected = [fn(params, x=x, t=t) for x, t in batches]
    errors = []

    def work(k):
        x, t = batches[k]
        for _ in range(25):
            got = fn(params, x=x, t=t)
            if not all(np.array_equal(a, b) for a, b in zip(got, expected[k])):
                errors.append(k)
                return

    run_in_threads(work, len(batches))
    assert errors == []
