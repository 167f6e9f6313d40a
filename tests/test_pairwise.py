"""Multi-operand contractions along opt_einsum's path, each matrix-product pair as np.dot into a buffer."""

import tracemalloc

import numpy as np
import pytest

from graphc.backends.numpy.pairwise import NpContraction

SIZES = {"a": 5, "b": 4, "c": 3, "d": 6, "i": 7, "j": 2, "k": 8, "n": 9}

SPECS = [
    "na,ab,bc,cd->nd",  # a chain: every pair a GEMM
    "ab,bc->ac", "ab,bc->ca", "ba,bc->ac", "ab,cb->ac",  # one GEMM, each orientation
    "ab,bc,ca->",  # a cyclic trace to a scalar
    "ij,ij->i", "ij,ij->",  # Hadamard sums: not GEMMs
    "nab,nbc->nac",  # batched: opt_einsum's own pair call
    "ab,bc,cd,da->a",  # a cycle with an output
    "ii->i", "iij->j",  # one operand with a repeated index
    "ab,c->abc",  # an outer product
    "ab,bc,b->ac",  # a shared index kept by a third operand
    "ab,ab,c->c",  # a scalar intermediate (Σ a·b) times a vector
]


def _operands(spec, rng, dtype=np.float64):
    terms = spec.split("->")[0].split(",")
    return [rng.standard_normal(tuple(SIZES[c] for c in t)).astype(dtype) for t in terms]


@pytest.mark.parametrize("spec", SPECS)
def test_matches_numpy_einsum(spec):
    rng = np.random.default_rng(len(spec))
    ops = _operands(spec, rng)
    k = NpContraction(spec, [o.shape for o in ops], np.float64)
    want = np.einsum(spec, *ops)
    out_shape = want.shape
    for _ in range(2):  # the second call reuses every buffer
        if out_shape:
            out = np.empty(out_shape)
            assert k(*ops, out=out) is out
            np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
        got = k(*ops)
        assert isinstance(got, np.ndarray) and got.shape == out_shape
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_a_chain_runs_as_gemms_into_c_ordered_buffers_without_allocating():
    rng = np.random.default_rng(0)
    x, A, B, C = (rng.standard_normal(s).astype(np.float32) for s in ((100, 784), (784, 256), (256, 64), (64, 10)))
    k = NpContraction("na,ab,bi,ij->nj", [x.shape, A.shape, B.shape, C.shape], np.float32)
    assert [step.gemm for step in k.steps] == [True, True, True]
    assert all(b.flags.c_contiguous for b in k.buffers if b is not None)
    out = np.empty((100, 10), np.float32)
    k(x, A, B, C, out=out)
    tracemalloc.start()
    k(x, A, B, C, out=out)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 4096  # no intermediate (the smallest is 256 x 10 floats) is allocated per call
    want = x.astype(np.float64) @ A @ B @ C
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
