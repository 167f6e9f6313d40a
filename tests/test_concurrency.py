"""One compiled function called from several threads at once gives each thread correct results:
the two-layer net's gradients, a fused gemm update on each thread's own arrays, and a gemm
epilogue fed batches of different sizes and layouts.  (TrainStep and Evaluator, which keep
per-thread state of their own, are tested from threads in test_train_step.py and test_evaluate.py.)
"""

import numpy as np

import graphc as gc
from graphc.models import init_two_layer_params, two_layer_net
from helpers import run_in_threads, stored_as


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


def test_fused_update_from_several_threads_each_with_its_own_arrays():
    g = gc.Graph("threads")
    W, X, V = g.param("W", (30, 20)), g.input("X", ("n", 30)), g.input("V", ("n", 20))
    fn = gc.compile(gc.sum(X), updates={W: 0.99 * W - 0.01 * gc.matmul(X.T, V)})
    rng = np.random.default_rng(7)
    jobs = [(rng.standard_normal((30, 20)), rng.standard_normal((n, 30)), rng.standard_normal((n, 20)))
            for n in (8, 16, 8, 32)]
    expected = []
    for w, x, v in jobs:
        w = w.copy()
        for _ in range(20):
            w = 0.99 * w - 0.01 * x.T @ v
        expected.append(w)
    errors = []

    def work(j):
        w, x, v = jobs[j]
        for _ in range(20):
            fn(W=w, X=x, V=v)
        if not np.allclose(w, expected[j], rtol=1e-10, atol=1e-12):
            errors.append(j)

    run_in_threads(work, len(jobs))
    assert errors == []


def test_a_gemm_epilogue_from_threads_with_different_batches_and_layouts():
    rng = np.random.default_rng(8)
    g = gc.Graph("threads")
    x, W, b = g.input("x", ("n", 16)), g.param("W", (16, 8)), g.param("b", (8,))
    z = gc.matmul(x, W) / 3 + b
    outputs = [z, gc.relu(z), gc.sum(z * z)]
    fn, ref = gc.compile(outputs), gc.compile(outputs, lowering="array_api")
    Wv, bv = rng.standard_normal((16, 8)), rng.standard_normal(8)
    xs = [stored_as(rng.standard_normal((n, 16)), kind)
          for n, kind in zip((4, 9, 4, 17, 1, 9), ("C", "F", "padded", "strided", "C", "reversed"))]
    expected = [ref(x=np.array(a), W=Wv, b=bv) for a in xs]
    errors = []

    def work(k):
        for _ in range(60):
            got = fn(x=xs[k], W=Wv, b=bv)
            if not all(np.allclose(p, q, rtol=1e-12) for p, q in zip(got, expected[k])):
                errors.append(k)
                return

    run_in_threads(work, len(xs))
    assert errors == []
