"""The accumulating product ``c ← α·op(a)·op(b) + β·c`` (numpy's BLAS through ctypes) and its fallback."""

import numpy as np
import pytest

import graphc as gc
from graphc.backends.numpy import blas
from graphc.backends.numpy.blas import GemmAccumulate


def _reference(a, b, c, ta, tb, alpha, beta):
    return beta * c + alpha * ((a.T if ta else a) @ (b.T if tb else b))


def _operands(rng, m, n, k, ta, tb, dtype, layout):
    """a, b stored so that op(a) is (m, k) and op(b) is (k, n); ``layout`` says how they are stored."""
    def stored(rows, cols, transposed):
        shape = (cols, rows) if transposed else (rows, cols)
        x = rng.standard_normal(shape).astype(dtype)
        if layout == "fortran":
            x = np.asfortranarray(x)
        elif layout == "strided":  # every other column: BLAS cannot read it, numpy's path runs
            wide = rng.standard_normal((shape[0], 2 * shape[1])).astype(dtype)
            x = wide[:, ::2]
        elif layout == "padded":  # rows of a larger array: a leading dimension > the width
            x = rng.standard_normal((shape[0], shape[1] + 3)).astype(dtype)[:, : shape[1]]
        return x
    return stored(m, k, ta), stored(k, n, tb)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("alpha,beta", [(-1.0, 1.0), (1.0, 0.0), (-0.5, 0.9), (2.0, -1.0)])
@pytest.mark.parametrize("layout", ["c", "fortran", "strided", "padded"])
def test_gemm_accumulate_matches_numpy(dtype, ta, tb, alpha, beta, layout):
    rng = np.random.default_rng(7)
    m, n, k = 7, 5, 6
    a, b = _operands(rng, m, n, k, ta, tb, dtype, layout)
    c = rng.standard_normal((m, n)).astype(dtype)
    want = _reference(a.astype(np.float64), b.astype(np.float64), c.astype(np.float64), ta, tb, alpha, beta)
    g = GemmAccumulate(dtype, ta, tb, alpha, beta, (m, n))
    g(a, b, c)
    np.testing.assert_allclose(c, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5 if dtype == np.float32 else 1e-12)
    if layout in ("c", "fortran", "padded") and g.uses_blas:
        assert g.call is not None  # these layouts went to BLAS, not the fallback


def test_gemm_accumulate_follows_new_arrays_and_falls_back_for_aliases():
    rng = np.random.default_rng(0)
    g = GemmAccumulate(np.float64, True, False, -1.0, 1.0, (4, 3))
    for _ in range(3):  # new operand arrays each call: the cached layout must follow them
        a, b, c = rng.standard_normal((5, 4)), rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
        want = c - a.T @ b
        g(a, b, c)
        np.testing.assert_allclose(c, want, rtol=1e-12)
    # c overlapping an operand: BLAS must not run in place; numpy's path writes the product first
    big = rng.standard_normal((5, 4))
    a, c = big, big[:4, :3]
    b = rng.standard_normal((5, 3))
    want = c - a.T @ b
    g(a, b, c)
    np.testing.assert_allclose(c, want, rtol=1e-12)
    assert g.call is None


def test_gemm_accumulate_rereads_only_the_operand_that_changed():
    # The parameter c and b stay, a new a arrives each call (a step fed fresh batches): its
    # layout is read again, the others' are kept -- through C order, Fortran order, a
    # strided view numpy's path must take, and back.
    rng = np.random.default_rng(1)
    g = GemmAccumulate(np.float64, True, False, -1.0, 1.0, (4, 3))
    b, c = rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
    for make in (np.ascontiguousarray, np.asfortranarray, lambda x: np.repeat(x, 2, axis=1)[:, ::2],
                 np.ascontiguousarray, lambda x: x):
        a = make(rng.standard_normal((5, 4)))
        want = c - a.T @ b
        g(a, b, c)
        np.testing.assert_allclose(c, want, rtol=1e-12)
        assert (g.call is None) == (a.strides[1] != a.itemsize and a.strides[0] != a.itemsize) or not g.uses_blas
    if g.uses_blas:
        assert g.layouts[1] is not None and g.layouts[2] is not None


def _fed_fresh(g, operand, make, rng, shapes, calls=4):
    """Call ``g`` ``calls`` times with the same c and one operand new each time; check each result."""
    fixed = {"a": rng.standard_normal(shapes["a"]), "b": rng.standard_normal(shapes["b"])}
    c = rng.standard_normal(shapes["c"])
    for _ in range(calls):
        ops = dict(fixed)
        ops[operand] = make(rng.standard_normal(shapes[operand]))
        want = c + 0.5 * (ops["a"].T @ ops["b"])
        g(ops["a"], ops["b"], c)
        np.testing.assert_allclose(c, want, rtol=1e-12)
    return ops, c


def _read_only(x):
    x.flags.writeable = False
    return x


@pytest.mark.parametrize("operand", ["a", "b"])
@pytest.mark.parametrize("make", [np.ascontiguousarray, _read_only, lambda x: np.asfortranarray(x),
                                  lambda x: np.repeat(x, 2, axis=0)[::2]],
                         ids=["c-order", "read-only", "fortran", "every-other-row"])
def test_a_fresh_operand_stored_like_the_last_is_only_repointed(operand, make):
    # A step fed a new batch array every call: the call keeps everything but that operand's
    # address, which must be the new array's, whichever way its address is read.
    g = GemmAccumulate(np.float64, True, False, 0.5, 1.0, (4, 3))
    ops, c = _fed_fresh(g, operand, make, np.random.default_rng(2), {"a": (5, 4), "b": (5, 3), "c": (4, 3)})
    if g.uses_blas:
        k = "ab".index(operand)
        assert g.call[GemmAccumulate._POINTER_AT[k]].value == ops[operand].ctypes.data
        assert g.layouts[k][0].value == ops[operand].ctypes.data


def test_a_fresh_operand_stored_otherwise_or_overlapping_c_is_read_again():
    rng = np.random.default_rng(3)
    g = GemmAccumulate(np.float64, True, False, 0.5, 1.0, (4, 3))
    b = rng.standard_normal((5, 3))
    big = rng.standard_normal((6, 4))
    c = big[1:5, :3]  # c is part of a larger array
    for a in (rng.standard_normal((5, 4)),                 # C order: BLAS
              np.asfortranarray(rng.standard_normal((5, 4))),  # same shape, other strides: read again
              rng.standard_normal((5, 4)).astype(np.float32).astype(np.float64),
              big[:5].copy()):
        want = c + 0.5 * (a.T @ b)
        g(a, b, c)
        np.testing.assert_allclose(c, want, rtol=1e-12)
    # A new a with the last one's shape and strides that overlaps c: numpy's path, not BLAS in place.
    holder = np.zeros((6, 4))
    a, c2 = holder[:5], holder[1:5, :3]
    g(rng.standard_normal((5, 4)), b, c2)  # binds c2 with a C-ordered a of these strides
    holder[:5] = rng.standard_normal((5, 4))
    want = c2 + 0.5 * (a.T @ b)
    g(a, b, c2)
    np.testing.assert_allclose(c2, want, rtol=1e-12)
    assert g.call is None


def test_gemm_accumulate_without_blas(monkeypatch):
    g = GemmAccumulate(np.float32, False, True, 0.5, 2.0, (3, 2))
    g.gemm = None  # as on a numpy whose BLAS was not found
    rng = np.random.default_rng(1)
    a, b, c = (rng.standard_normal(s).astype(np.float32) for s in ((3, 4), (2, 4), (3, 2)))
    want = 2.0 * c + 0.5 * (a @ b.T)
    g(a, b, c)
    np.testing.assert_allclose(c, want, rtol=1e-5)


def test_blas_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("GRAPHC_BLAS", "0")
    blas.gemm_function.cache_clear()
    try:
        assert blas.gemm_function(np.float32) is None
    finally:
        monkeypatch.delenv("GRAPHC_BLAS")
        blas.gemm_function.cache_clear()


def test_numpys_own_blas_is_found_with_the_pypi_wheels():
    # The wheels numpy ships on PyPI (what CI installs) bundle scipy-openblas: the fused update
    # must run there, or the step silently loses what the fusion is for.  Other builds (conda's
    # MKL, Accelerate) may or may not expose cblas; the fallback is tested above.
    name = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    if name != "scipy-openblas":
        pytest.skip(f"numpy is linked against {name}, not the wheels' scipy-openblas")
    assert blas.gemm_function(np.float32) is not None and blas.gemm_function(np.float64) is not None


def _step_both_ways(updates_of, shapes, seed=0):
    """Run one compiled update with both lowerings (fresh copies) and return both results."""
    rng = np.random.default_rng(seed)
    values = {k: rng.standard_normal(s) for k, s in shapes.items()}
    results = []
    for lowering in ("auto", "array_api"):
        g = gc.Graph("update")
        leaves = {k: g.param(k, s) for k, s in shapes.items()}
        out, updates = updates_of(leaves)
        fn = gc.compile(out, updates=updates, lowering=lowering)
        feed = {k: v.copy() for k, v in values.items()}
        got = fn(**feed)
        results.append((got, feed, fn.source))
    return results


@pytest.mark.parametrize("case", ["reads_itself", "product_returned", "operand_updated_too", "plain"])
def test_fused_updates_agree_with_the_array_api_lowering(case):
    shapes = {"W": (4, 4), "X": (4, 4), "V": (4, 4)}

    def updates_of(p):
        W, X, V = p["W"], p["X"], p["V"]
        if case == "reads_itself":  # W ← W - 0.1·W·X: the product reads the target
            prod = gc.matmul(W, X)
            return gc.sum(W), {W: W - 0.1 * prod}
        if case == "product_returned":  # the product is also an output: it must exist
            prod = gc.matmul(X, V)
            return prod, {W: W - prod}
        if case == "operand_updated_too":  # X is updated as well: the product must read the old X
            prod = gc.matmul(X, V)
            return gc.sum(W), {W: W - prod, X: X * 2.0}
        prod = gc.matmul(X.T, V)
        return gc.sum(W), {W: 0.9 * W - 0.5 * prod}

    (fast, fast_feed, source), (generic, generic_feed, _) = _step_both_ways(updates_of, shapes)
    np.testing.assert_allclose(fast, generic, rtol=1e-12)
    for k in shapes:
        np.testing.assert_allclose(fast_feed[k], generic_feed[k], rtol=1e-12, atol=1e-14)
    assert ("GemmAccumulate" in source) == (case == "plain")
