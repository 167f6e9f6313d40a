"""pairwise.NpContraction (opt_einsum's path run pair by pair) and rt.filled, fuzzed.

Random specs against np.einsum (diagonals, single-operand sums, size-0/1 dims, 0-d
intermediates, 6-10 operands, float32, non-contiguous operands, out=), every GEMM
orientation, out= aliasing an operand, the graph-level numpy lowering against the
array-API one (forward and gradients, symbolic dims), and the filled constants of
maximum/minimum (read-only, symbolic dims, the FILL_LIMIT switch).
"""

import itertools
import random

import numpy as np
import pytest
import sympy

import graphc as gc
from graphc.backends.numpy import runtime as rt
from graphc.backends.numpy.pairwise import NpContraction, PairSpec, _dot_call, gemm


def _random_case(rnd, n_ops, letters):
    sizes = {c: rnd.choice([0, 1, 2, 3, 4]) if rnd.random() < 0.15 else rnd.choice([1, 2, 3, 4, 5]) for c in letters}
    terms = ["".join(rnd.choice(letters) for _ in range(rnd.randint(0, 3))) for _ in range(n_ops)]
    out = [c for c in sorted(set("".join(terms))) if rnd.random() < 0.4]
    rnd.shuffle(out)
    return ",".join(terms) + "->" + "".join(out), terms, sizes


def _operand(rng, shape, dtype, style):
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
        ops = [_operand(rng, tuple(sizes[c] for c in t), dtype, rnd.randint(0, 2)) for t in terms]
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


GRAPH_SPECS = ["ij,jk,kl,lm->im", "ij,jk,ki->", "ab,bc,cd,da->a", "iij,jk,kl->il", "ij,ij,jk->k",
               "ab,ab,c->c", "ab,c,cd,->bd", "na,ab,bc,cd,de,ef->nf", "ij,jk,kl->", "ab,ba,bc->c"]


@pytest.mark.parametrize("spec", GRAPH_SPECS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_graph_numpy_lowering_matches_array_api_with_grads(spec, dtype):
    dims = {"a": "n", "i": "n", "n": "m"}  # symbolic dims on some indices
    sizes = {"a": 3, "b": 4, "c": 2, "d": 5, "e": 3, "f": 2, "i": 3, "j": 4, "k": 2, "l": 5, "m": 3, "n": 6}
    terms = spec.split("->")[0].split(",")
    g = gc.Graph("review")
    nodes = [g.param(f"p{k}", tuple(dims.get(c, sizes[c]) for c in t)) for k, t in enumerate(terms)]
    y = gc.einsum(spec, *nodes)
    loss = gc.sum(y * y) if y.shape else y * y
    outs = [y, *gc.grad(loss, nodes)]
    rng = np.random.default_rng(len(spec))
    kw = {f"p{k}": rng.standard_normal([sizes[c] for c in t]).astype(dtype) for k, t in enumerate(terms)}
    fn, ref = gc.compile(outs), gc.compile(outs, lowering="array_api")
    tol = 1e-4 if dtype == np.float32 else 1e-10
    want = np.einsum(spec, *[v.astype(np.float64) for v in kw.values()])
    for _ in range(2):
        got, exp = fn(**kw), ref(**kw)
        np.testing.assert_allclose(got[0], want, rtol=tol, atol=tol)
        for a, b in zip(got, exp):
            assert np.shape(a) == np.shape(b) and np.asarray(a).dtype == dtype
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def test_an_index_with_two_sizes_is_refused_not_broadcast():
    # Graphs bind every index to one size, so NpContraction never meets numpy's size-1
    # broadcasting; used on its own it says so instead of computing with the wrong size.
    with pytest.raises(ValueError, match="index 'i' has sizes 3 and 1"):
        NpContraction("ij,ij,jk->ik", [(3, 4), (1, 4), (4, 2)], np.float64)


# -- rt.filled: maximum/minimum against a static scalar -----------------------------------

clip = gc.elementwise("review_clip", lambda x: sympy.Min(sympy.Max(x, -1), 1))
max3 = gc.elementwise("review_max3", lambda x, y: sympy.Max(x, y, 0))


def _filled_graph():
    g = gc.Graph("fill")
    x = g.input("x", ("n", 3))
    s = g.input("s", ())
    return [gc.relu(x), clip(x), max3(gc.transpose(x), s), clip(s), gc.relu(gc.transpose(x) * 2.0)]


def _filled_expect(x, s):
    return [np.maximum(x, 0), np.clip(x, -1, 1), np.maximum(np.maximum(x.T, s), 0), np.clip(s, -1, 1),
            np.maximum(2 * x.T, 0)]


@pytest.mark.parametrize("limit", [rt.FILL_LIMIT, 0, 5])
@pytest.mark.parametrize("n", [0, 1, 4])
def test_filled_constants_match_numpy_and_are_never_written(monkeypatch, limit, n):
    monkeypatch.setattr(rt, "FILL_LIMIT", limit)
    outs = _filled_graph()
    fn, ref = gc.compile(outs), gc.compile(outs, lowering="array_api")
    assert "rt.filled(" in fn.source
    rng = np.random.default_rng(n)
    for _ in range(3):  # consts built once: results of a call written to must not leak into the next
        x, s = rng.standard_normal((n, 3)) * 2, np.asarray(rng.standard_normal() * 2)
        got = fn(x=x, s=s)
        for a, b, c in zip(got, _filled_expect(x, s), ref(x=x, s=s)):
            np.testing.assert_allclose(a, b, rtol=1e-12)
            np.testing.assert_allclose(a, c, rtol=1e-12)
            assert np.asarray(a).flags.writeable
        for a in got:
            np.asarray(a)[...] = 123.0


def test_filled_is_read_only_and_zero_d_above_the_limit():
    small = rt.filled((2, 3), 0, np.float32)
    assert small.shape == (2, 3) and small.dtype == np.float32 and not small.flags.writeable
    assert (small == 0).all()
    big = rt.filled((rt.FILL_LIMIT + 1,), -1, np.float64)
    assert big.shape == () and big == -1 and not big.flags.writeable
    assert rt.filled((rt.FILL_LIMIT,), 1, np.float64).shape == (rt.FILL_LIMIT,)
    with pytest.raises(ValueError):
        small[...] = 1
