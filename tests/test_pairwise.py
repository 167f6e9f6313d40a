"""pairwise.NpContraction: a multi-operand contraction run along opt_einsum's path, each
matrix-product pair as np.dot into a planned buffer.

Named specs and random ones (diagonals, single-operand sums, size-0/1 dims, 0-d
intermediates, 6-10 operands, float32, non-contiguous operands, out=) against np.einsum,
every GEMM orientation, out= aliasing an operand, no allocation per call on a chain of
GEMMs, and an index given two sizes refused.  The graph-level numpy lowering of such
contractions is compared with the array-API one in test_lowerings.py.
"""

import itertools
import random
import tracemalloc

import numpy as np
import pytest

from graphc.backends.numpy.pairwise import NpContraction, PairSpec, _dot_call, gemm

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


# -- random specs -------------------------------------------------------------------------
def _random_case(rnd, n_ops, letters):
    sizes = {c: rnd.choice([0, 1, 2, 3, 4]) if rnd.random() < 0.15 else rnd.choice([1, 2, 3, 4, 5]) for c in letters}
    terms = ["".join(rnd.choice(letters) for _ in range(rnd.randint(0, 3))) for _ in range(n_ops)]
    out = [c for c in sorted(set("".join(terms))) if rnd.random() < 0.4]
    rnd.shuffle(out)
    return ",".join(terms) + "->" + "".join(out), terms, sizes


def _random_operand(rng, shape, dtype, style):
    a = np.asarray(rng.standard_normal(shape), dtype=dtype)
    if style == 1 and a.ndim:
        return a[::-1]  # negative stride
    if style == 2 and a.ndim >= 2:
        return np.asfortranarray(a)
    return a


@pytest.mark.parametrize("n_ops,letters,seed", [(n, "abcde", s) for n in (1, 2, 3, 4, 5, 7) for s in range(3)]
                         + [(n, "abcdefg", s) for n in (8, 10) for s in range(3)])
def test_random_specs_match_numpy_einsum(n_ops, letters, seed):
    rnd, rng = random.Random(seed * 100 + n_ops), np.random.default_rng(seed)
    for _ in range(25):
        spec, terms, sizes = _random_case(rnd, n_ops, letters)
        dtype = rnd.choice([np.float64, np.float32])
        ops = [_random_operand(rng, tuple(sizes[c] for c in t), dtype, rnd.randint(0, 2)) for t in terms]
        want = np.einsum(spec, *[o.astype(np.float64) for o in ops])
        tol = 2e-3 if dtype == np.float32 else 1e-10
        k = NpContraction(spec, [o.shape for o in ops], dtype)
        for _ in range(2):  # buffers reused
            got = k(*ops)
            assert isinstance(got, np.ndarray) and got.shape == want.shape and got.dtype == dtype, spec
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=spec)
            if want.shape:
                out = np.full(want.shape, np.nan, dtype)
                assert k(*ops, out=out) is out
                np.testing.assert_allclose(out, want, rtol=tol, atol=tol, err_msg=spec)


def test_every_gemm_plan_matches_einsum():
    sz = {"a": 2, "b": 3, "c": 4}
    terms = ["".join(t) for r in range(3) for t in itertools.permutations("abc", r)]
    rng, seen = np.random.default_rng(0), 0
    for ta, tb, out in itertools.product(terms, terms, terms):
        plan = gemm(PairSpec((ta, tb), out)) if set(out) <= set(ta + tb) else None
        if plan is None:
            continue
        A = rng.standard_normal([sz[c] for c in ta])[..., ::-1]  # non-contiguous views too
        B = rng.standard_normal([sz[c] for c in tb])
        want = np.einsum(f"{ta},{tb}->{out}", A, B)
        got = _dot_call(plan)(A, B, out=np.empty(want.shape) if want.shape else None)
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=f"{ta},{tb}->{out}")
        seen += 1
    assert seen > 50


@pytest.mark.parametrize("spec", ["ij,jk,kl->il", "ij,jk,kl->li", "ij,ij,jk->ik"])
def test_out_aliasing_an_operand_of_the_last_pair(spec):
    rng = np.random.default_rng(1)
    terms = spec.split("->")[0].split(",")
    ops = [rng.standard_normal((4, 4)) for _ in terms]
    want = np.einsum(spec, *ops)
    k = NpContraction(spec, [o.shape for o in ops], np.float64)
    for which in range(len(ops)):
        copies = [o.copy() for o in ops]
        k(*copies, out=copies[which])
        np.testing.assert_allclose(copies[which], want, rtol=1e-12, err_msg=f"{spec} out=operand {which}")


def test_scalar_intermediates_and_results_are_fresh_arrays():
    rng = np.random.default_rng(2)
    a, b, c = rng.standard_normal(5), rng.standard_normal(5), rng.standard_normal((3, 2))
    k = NpContraction("i,i,jk->jk", [a.shape, b.shape, c.shape], np.float32)
    np.testing.assert_allclose(k(a.astype(np.float32), b.astype(np.float32), c.astype(np.float32)),
                               (a @ b) * c, rtol=1e-5)
    s = NpContraction("i,i,i->", [a.shape] * 3, np.float64)
    r1 = s(a, b, a)
    r2 = s(b, b, b)
    assert r1.shape == () and r1 is not r2
    np.testing.assert_allclose([r1, r2], [np.sum(a * b * a), np.sum(b ** 3)], rtol=1e-12)


def test_an_index_with_two_sizes_is_refused_not_broadcast():
    # Graphs bind every index to one size, so NpContraction never meets numpy's size-1
    # broadcasting; used on its own it says so instead of computing with the wrong size.
    with pytest.raises(ValueError, match="index 'i' has sizes 3 and 1"):
        NpContraction("ij,ij,jk->ik", [(3, 4), (1, 4), (4, 2)], np.float64)
