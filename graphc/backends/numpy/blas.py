"""Accumulating matrix products, ``C ← α·A·B + β·C``, in numpy's own BLAS.

numpy's ``dot`` always writes ``C = A·B``; an update such as ``W ← W - xᵀ·dA``
then needs a second pass over W (and a gradient buffer the size of W), which for a
wide layer costs as much as a good part of the product itself: W leaves the caches
of the cores that wrote the product, and the subtraction reads it back.  BLAS gemm
takes ``β`` and does the update inside the product.  numpy does not expose it, so
this module finds the ``cblas_?gemm`` of the BLAS numpy is linked against and calls
it through ctypes.

It uses *numpy's* BLAS only: the library must already be loaded in this process (by
numpy), so the calls share numpy's thread pool.  A second OpenBLAS (scipy's, say)
would start its own threads, and two pools spinning on two cores slow each other down
by an order of magnitude.  When no such library is found, when ``GRAPHC_BLAS=0``, or
for arrays BLAS cannot address (a non-unit inner stride), ``GemmAccumulate`` computes
the same thing with ``np.dot`` into a scratch buffer and ufuncs.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
import weakref

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


@functools.lru_cache(maxsize=1)
def _loaded_libraries() -> frozenset:
    """Paths of the shared libraries mapped into this process (Linux); empty elsewhere."""
    try:
        with open("/proc/self/maps") as maps:
            return frozenset(line.split(None, 5)[5].strip() for line in maps if len(line.split(None, 5)) == 6)
    except OSError:
        return frozenset()


def _candidates() -> list[str]:
    """numpy's bundled BLAS (the wheels' ``numpy.libs`` / ``.dylibs``), then any loaded BLAS."""
    here = os.path.dirname(np.__file__)
    paths = []
    for pattern in ("../numpy.libs/*openblas*", ".dylibs/*openblas*", "../numpy.libs/*blas*"):
        paths += sorted(glob.glob(os.path.join(here, pattern)))
    paths = [os.path.realpath(p) for p in paths]
    loaded = _loaded_libraries()
    paths += sorted(p for p in loaded if "blas" in os.path.basename(p).lower() or "mkl_rt" in os.path.basename(p))
    if loaded:  # on Linux: only a library numpy has already loaded (no second thread pool)
        paths = [p for p in paths if p in loaded]
    return list(dict.fromkeys(paths))


# (symbol pattern, integer type): scipy-openblas 64-bit and 32-bit builds, then plain cblas.
_SYMBOLS = (("scipy_cblas_{}gemm64_", ctypes.c_int64), ("scipy_cblas_{}gemm", ctypes.c_int32),
            ("cblas_{}gemm64_", ctypes.c_int64), ("cblas_{}gemm", ctypes.c_int32))


class Gemm:
    """One ``cblas_?gemm`` and its argument types.

    ``arguments`` converts the 14 arguments to ctypes values once; the function has no
    ``argtypes``, so a call with converted values skips ctypes' per-call conversion
    (a third of the cost of a small product).
    """

    def __init__(self, fn, int_t, real_t):
        fn.argtypes, fn.restype = None, None
        self.fn, self.int_t, self.real_t = fn, int_t, real_t

    def arguments(self, order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) -> tuple:
        i, r, p = self.int_t, self.real_t, ctypes.c_void_p
        return (i(order), i(ta), i(tb), i(m), i(n), i(k), r(alpha), p(a), i(lda), p(b), i(ldb), r(beta), p(c),
                i(ldc))


def _bind(lib, char: str) -> Gemm | None:
    for pattern, int_t in _SYMBOLS:
        if int_t is ctypes.c_int32 and "ILP64" in os.environ.get("MKL_INTERFACE_LAYER", "").upper():
            continue  # mkl_rt switched to 64-bit integers under the plain names: a 32-bit call would crash
        fn = getattr(lib, pattern.format(char), None)
        if fn is not None:
            return Gemm(fn, int_t, ctypes.c_float if char == "s" else ctypes.c_double)
    return None


def _works(gemm: Gemm, dtype) -> bool:
    """One small product with transposes and β, checked against numpy."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 3)).astype(dtype), rng.standard_normal((4, 5)).astype(dtype)
    c = rng.standard_normal((3, 4)).astype(dtype)
    want = 0.5 * c - 2.0 * (a.T @ b.T)
    gemm.fn(*gemm.arguments(_ROW_MAJOR, _TRANS, _TRANS, 3, 4, 5, -2.0, a.ctypes.data, 3, b.ctypes.data, 5, 0.5,
                            c.ctypes.data, 4))
    return bool(np.allclose(c, want, rtol=1e-5 if dtype == np.float32 else 1e-12))


@functools.lru_cache(maxsize=None)
def gemm_function(dtype) -> Gemm | None:
    """numpy's ``cblas_sgemm``/``cblas_dgemm`` for ``dtype``, or None."""
    dtype = np.dtype(dtype)
    if os.environ.get("GRAPHC_BLAS", "1") == "0" or dtype not in (np.float32, np.float64):
        return None
    char = "s" if dtype == np.float32 else "d"
    for path in _candidates():
        try:
            gemm = _bind(ctypes.CDLL(path), char)
            if gemm is not None and _works(gemm, dtype):
                return gemm
        except (OSError, ValueError, TypeError, AttributeError):  # not loadable, or not what it claims
            continue
    return None


# The thread-count getter of numpy's OpenBLAS: the scipy-openblas wheels' names, then the plain ones.
_THREAD_COUNT_SYMBOLS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
                         "openblas_get_num_threads64_", "openblas_get_num_threads")


@functools.lru_cache(maxsize=1)
def _thread_count_function():
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _THREAD_COUNT_SYMBOLS:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.argtypes, fn.restype = [], ctypes.c_int
                return fn
    return None


def blas_threads() -> int | None:
    """How many threads numpy's BLAS splits a product over now, or None when it cannot be asked."""
    fn = _thread_count_function()
    return int(fn()) if fn is not None else None


_CHAR = ctypes.c_char


def _address(array) -> int:
    """The address of ``array``'s first element.

    ``ctypes.c_char.from_buffer`` reads it faster than ``array.ctypes.data`` (a step's
    hot path reads it for every new batch), but only from a writable C-contiguous array, which is what a
    step is usually fed; anything else goes through ``ctypes.data``.
    """
    if array.flags.c_contiguous and array.flags.writeable:
        try:
            return ctypes.addressof(_CHAR.from_buffer(array))
        except (TypeError, ValueError, BufferError):  # an empty array, or an exporter that refuses
            pass
    return array.ctypes.data


def _layout(m):
    """(pointer, flag, ld) for the logical matrix ``m`` (rows x cols), or None if BLAS cannot read it."""
    item = m.itemsize
    rows, cols = m.shape
    rs, cs = m.strides
    if (cs == item or cols == 1) and rs % item == 0 and rs // item >= max(cols, 1):
        return m.ctypes.data, _NO_TRANS, rs // item
    if (rs == item or rows == 1) and cs % item == 0 and cs // item >= max(rows, 1):
        return m.ctypes.data, _TRANS, cs // item
    return None


class GemmAccumulate:
    """``c ← alpha·op(a)·op(b) + beta·c`` for 2-D arrays, op = transpose where the flag says.

    Made once per fused update in ``build`` (the numpy lowering decides where); the
    shapes are those of that specialisation.  An operand's layout is read when a new
    array object arrives (only its address, when it is stored like the one it replaces,
    as in a step fed a fresh batch each call) and kept while the same object comes back
    (numpy never moves an array's data; an array whose strides are reassigned in place,
    through the deprecated ``ndarray.strides`` setter, is not noticed).  BLAS runs when
    ``c`` is row-major (any row stride) and ``a``, ``b`` have a unit stride along one
    axis; otherwise, when ``c`` overlaps an operand, or when no BLAS was found,
    ``np.dot`` into a scratch buffer and ufuncs compute the same thing.
    """

    def __init__(self, dtype, transpose_a: bool, transpose_b: bool, alpha: float, beta: float, shape: tuple):
        self.dtype = np.dtype(dtype)
        self.gemm = gemm_function(self.dtype)
        self.ta, self.tb = transpose_a, transpose_b
        self.alpha, self.beta = float(alpha), float(beta)
        self.m, self.n = shape
        self.bound = (None, None, None)  # weak references to the arrays the cached call is for
        self.layouts = (None, None, None)  # their (pointer, flag, ld) as ctypes values
        self.stored = (None, None)  # (shape, strides, dtype) of the a and b the call was made for
        self.call = None  # the BLAS arguments for them, or None: use numpy
        self.fixed = None  # (k, and the arguments that do not depend on the arrays)
        self.scratch = None
        # numpy fallback constants, in the step's dtype (a Python float is converted every call)
        self.alpha_0d, self.beta_0d = np.asarray(alpha, self.dtype), np.asarray(beta, self.dtype)

    def __call__(self, a, b, c) -> None:
        ra, rb, rc = self.bound
        # The step passes the same buffers and parameters call after call: their layout is
        # worked out once (``.ctypes.data`` alone costs about a microsecond).
        if ra is None or ra() is not a or rb() is not b or rc() is not c:
            self._rebind(a, b, c)
        if self.call is None:
            self._numpy(a, b, c)
        else:
            self.gemm.fn(*self.call)

    def _rebind(self, a, b, c) -> None:
        old, cached = self.bound, self.layouts
        if self.call is not None and old[2]() is c:  # the common case first: a new batch array
            if old[1]() is b and self._repoint(0, a, c):
                self.bound = (weakref.ref(a), old[1], old[2])
                return
            if old[0]() is a and self._repoint(1, b, c):
                self.bound = (old[0], weakref.ref(b), old[2])
                return
        self.bound = (weakref.ref(a), weakref.ref(b), weakref.ref(c))
        self.call = None
        if self.gemm is None:
            return
        # Only an array that changed is looked at again: a step fed a new batch array each
        # call (``step(x=x_train[idx])``) re-reads that one alone, not the parameter.
        la = cached[0] if old[0] is not None and old[0]() is a else self._slot(a.T if self.ta else a)
        lb = cached[1] if old[1] is not None and old[1]() is b else self._slot(b.T if self.tb else b)
        lc = cached[2] if old[2] is not None and old[2]() is c else self._slot(c)
        self.layouts = (la, lb, lc)
        k = b.shape[1] if self.tb else b.shape[0]
        if (la is None or lb is None or lc is None or lc[1].value != _NO_TRANS or 0 in (self.m, self.n, k)
                or np.may_share_memory(c, a) or np.may_share_memory(c, b)):  # numpy's path copes with these
            return
        if self.fixed is None or self.fixed[0] != k:  # the arguments no array changes, as ctypes values
            i, r = self.gemm.int_t, self.gemm.real_t
            self.fixed = (k, i(_ROW_MAJOR), i(self.m), i(self.n), i(k), r(self.alpha), r(self.beta))
        _, order, m, n, kk, alpha, beta = self.fixed
        self.call = (order, la[1], lb[1], m, n, kk, alpha, la[0], la[2], lb[0], lb[2], beta, lc[0], lc[2])
        self.stored = ((a.shape, a.strides, a.dtype), (b.shape, b.strides, b.dtype))

    # Where operand k's pointer sits in ``self.call``.
    _POINTER_AT = (7, 9)

    def _repoint(self, k: int, array, c) -> bool:
        """Operand ``k`` (0: a, 1: b) is a new array stored like the one the call was made for
        (a step fed a fresh batch each call): only its address changes in the call.  False,
        and nothing changed, when it is stored otherwise or overlaps ``c``."""
        if (array.shape, array.strides, array.dtype) != self.stored[k] or np.may_share_memory(c, array):
            return False
        pointer = ctypes.c_void_p(_address(array))
        at = self._POINTER_AT[k]
        self.call = self.call[:at] + (pointer,) + self.call[at + 1:]
        layouts = list(self.layouts)
        layouts[k] = (pointer,) + layouts[k][1:]
        self.layouts = tuple(layouts)
        return True

    def _slot(self, matrix):
        """``_layout`` of one operand as ctypes values (pointer, flag, ld), or None."""
        layout = _layout(matrix)
        if layout is None:
            return None
        i = self.gemm.int_t
        return ctypes.c_void_p(layout[0]), i(layout[1]), i(layout[2])

    def _numpy(self, a, b, c) -> None:
        if self.scratch is None:
            self.scratch = np.empty((self.m, self.n), self.dtype)
        np.dot(a.T if self.ta else a, b.T if self.tb else b, out=self.scratch)
        if self.beta != 1.0:
            np.multiply(c, self.beta_0d, out=c)
        if self.alpha == -1.0:
            np.subtract(c, self.scratch, out=c)
        else:
            if self.alpha != 1.0:
                np.multiply(self.scratch, self.alpha_0d, out=self.scratch)
            np.add(c, self.scratch, out=c)

    @property
    def uses_blas(self) -> bool:
        return self.gemm is not None
