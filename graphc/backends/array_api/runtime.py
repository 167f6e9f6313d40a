"""The array-API backend's runtime (``rt`` in its generated code): the few helpers that
are not one array-namespace function.

Each takes the array namespace ``xp`` first, so the generated code stays free of
numpy and the same source runs on any array-API library.
"""

from __future__ import annotations

import functools
import math

from graphc.backends.libraries import device, is_traced, library_of
from graphc.errors import BindingError, GraphcError, NumericsError


def softmax(xp, a, axis: int = -1):
    e = xp.exp(a - xp.max(a, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


def log_softmax(xp, a, axis: int = -1):
    shifted = a - xp.max(a, axis=axis, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


def _positions(a, axis: int) -> int:
    """How many class rows ``a`` holds along ``axis``: the product of its other dims."""
    count = 1
    for k, d in enumerate(a.shape):
        if k != axis % a.ndim:
            count *= d
    return count


def softmax_cross_entropy(xp, a, t, axis: int = -1):
    """mean over positions of -Σ_c t·log softmax(a) along axis, stable for large logits."""
    return -xp.sum(t * log_softmax(xp, a, axis)) / _positions(a, axis)


def check_labels(xp, labels, classes: int) -> None:
    """Labels outside [0, classes) are refused, except inside ``jax.jit``, where values cannot
    be read (JAX then clamps an out-of-range index, as its take_along_axis does)."""
    if is_traced(labels):
        return
    if labels.size and (bool(xp.any(labels < 0)) or bool(xp.any(labels >= classes))):
        bad = int(xp.min(labels)) if bool(xp.any(labels < 0)) else int(xp.max(labels))
        raise BindingError(f"integer labels must lie in [0, {classes}); found {bad}")


def softmax_cross_entropy_labels(xp, a, labels, axis: int = -1):
    """The same loss with integer labels: pick log softmax at each position's label."""
    check_labels(xp, labels, a.shape[axis])
    ls = log_softmax(xp, a, axis)
    axis %= a.ndim
    where = xp.expand_dims(labels, axis=axis)
    if hasattr(xp, "take_along_axis"):
        picked = xp.take_along_axis(ls, where, axis=axis)
    else:  # dask has no take_along_axis: a mask of each position's label, the same sum
        shape = tuple(a.shape[axis] if k == axis else 1 for k in range(a.ndim))
        classes = xp.reshape(xp.arange(a.shape[axis], device=device(labels)), shape)
        picked = xp.where(where == classes, ls, xp.zeros((), dtype=ls.dtype, device=device(ls)))
    return -xp.sum(picked) / _positions(a, axis)


def one_hot(xp, labels, classes: int, dtype):
    check_labels(xp, labels, classes)
    classes_range = xp.arange(classes, device=device(labels)) if xp.__name__ != "numpy" else xp.arange(classes)
    return xp.astype(xp.reshape(labels, labels.shape + (1,)) == classes_range, dtype)


def check_finite(xp, a, where: str, given: bool = False) -> None:
    """The numerics guard (compile(..., check_numerics=True)): stop at the first NaN or Inf,
    naming where it is (``given``: in an input, else produced by the node ``where``) and the
    index of the first such entry in row-major order."""
    if is_traced(a):
        raise GraphcError("check_numerics=True reads every value, which jax.jit does not allow: call the "
                          "function outside jax.jit to find the first NaN or Inf, or compile it without the guard")
    if bool(xp.all(xp.isfinite(a))):
        return
    first = tuple(int(i[0]) for i in xp.nonzero(~xp.isfinite(a))) if a.ndim else ()
    bad = "NaN" if bool(xp.isnan(a[first] if first else a)) else "Inf"
    at = f" at index {first}" if first else ""
    raise NumericsError(f"{bad} in {where}{at}" if given else f"{bad} produced by {where}{at}")


def materialize(xp, a):
    """A fresh, writeable array for results that would otherwise be views of inputs."""
    return xp.asarray(a, copy=True)


@functools.lru_cache(maxsize=None)
def _scipy_special():
    try:
        from scipy import special
    except ImportError:
        return None
    return special


def _numpy_special(a, name: str, scalar):
    """``name`` on a numpy array: scipy's where installed, else ``math.<name>`` element by
    element (exact to float64's precision, but a Python call per element)."""
    import numpy as np

    a = np.asarray(a)
    special = _scipy_special()
    out = getattr(special, name)(a) if special is not None else np.frompyfunc(scalar, 1, 1)(a)
    return np.asarray(out, dtype=a.dtype)


def _special_function(xp, a, name: str, scalar):
    """``name`` (erf or erfc) elementwise, in ``a``'s own library: torch's own function, JAX's
    and CuPy's scipy.special, for dask each block through numpy's (scipy's, or math's)."""
    own = getattr(xp, name, None)
    if own is not None:
        return own(a)
    lib = library_of(a)
    if lib == "jax":
        from jax.scipy import special

        return getattr(special, name)(a)
    if lib == "cupy":
        from cupyx.scipy import special

        return getattr(special, name)(a)
    if lib == "dask":
        return a.map_blocks(_numpy_special, name, scalar, dtype=a.dtype)
    if lib != "numpy":
        raise GraphcError(f"{name} is not available for arrays of {lib} (namespace {xp.__name__})")
    return _numpy_special(a, name, scalar)


def erf(xp, a):
    """The error function, elementwise (see ``_special_function`` for where it comes from)."""
    return _special_function(xp, a, "erf", math.erf)


def erfc(xp, a):
    """1 - erf(a), elementwise, without the cancellation of computing it that way."""
    return _special_function(xp, a, "erfc", math.erfc)


def normcdf(xp, a):
    """Φ(a), the standard normal CDF, as erfc(-a/√2)/2: accurate in both tails."""
    return erfc(xp, -a / math.sqrt(2)) / 2


# -- windows (graphc.backends.array_api.windows) ------------------------------------------------
@functools.lru_cache(maxsize=256)
def _selection(ranges: tuple, coeffs: tuple, const: int, size: int):
    import numpy as np

    value = np.full(ranges, const, dtype=np.int64)
    for k, (r, a) in enumerate(zip(ranges, coeffs)):
        value = value + a * np.arange(r).reshape((r,) + (1,) * (len(ranges) - k - 1))
    chosen = value[..., None] == np.arange(size)
    chosen.flags.writeable = False
    return chosen


def selection(xp, dtype, ranges: tuple, coeffs: tuple, const: int, size: int):
    """``S[letters..., u] = 1 if u = const + Σ coeff·letter`` (an affine axis as a plain one)."""
    return xp.asarray(_selection(ranges, coeffs, const, size), dtype=dtype)


def finite_lowest(xp, a):
    """``a`` with −∞ replaced by the dtype's lowest finite value (a 0/1 selection keeps it exact)."""
    lowest = xp.finfo(a.dtype).min
    return xp.where(a == -math.inf, xp.asarray(lowest, dtype=a.dtype), a)


def infinite_lowest(xp, a):
    """The inverse of :func:`finite_lowest`."""
    lowest = xp.finfo(a.dtype).min
    return xp.where(a == lowest, xp.asarray(-math.inf, dtype=a.dtype), a)


def first_max_mask(xp, windows, n_window: int, dtype):
    """1 at the first maximum of each window (row-major window order), 0 elsewhere; the
    window axes come first."""
    shape = tuple(windows.shape)
    size = math.prod(shape[:n_window])
    first = xp.argmax(xp.reshape(windows, (size, -1)), axis=0)
    mask = xp.astype(xp.reshape(first, (1, -1)) == xp.reshape(xp.arange(size), (size, 1)), dtype)
    return xp.reshape(mask, shape)


def pad(xp, a, widths: tuple, value: float):
    """``a`` surrounded by ``value``, ``widths`` one (before, after) pair per axis."""
    for axis, (lo, hi) in enumerate(widths):
        if not (lo or hi):
            continue
        parts = []
        for n in (lo, hi):
            shape = list(a.shape)
            shape[axis] = n
            parts.append(xp.full(tuple(shape), value, dtype=a.dtype) if n else None)
        a = xp.concat([p for p in (parts[0], a, parts[1]) if p is not None], axis=axis)
    return a
