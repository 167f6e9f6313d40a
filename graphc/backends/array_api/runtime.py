"""The array-API backend's runtime (``rt`` in its generated code): the few helpers that
are not one array-namespace function.

Each takes the array namespace ``xp`` first, so the generated code stays free of
numpy and the same source runs on any array-API library.
"""

from __future__ import annotations

from graphc.errors import BindingError, NumericsError


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
    if labels.size and (bool(xp.any(labels < 0)) or bool(xp.any(labels >= classes))):
        bad = int(xp.min(labels)) if bool(xp.any(labels < 0)) else int(xp.max(labels))
        raise BindingError(f"integer labels must lie in [0, {classes}); found {bad}")


def softmax_cross_entropy_labels(xp, a, labels, axis: int = -1):
    """The same loss with integer labels: pick log softmax at each position's label."""
    check_labels(xp, labels, a.shape[axis])
    ls = log_softmax(xp, a, axis)
    picked = xp.take_along_axis(ls, xp.expand_dims(labels, axis=axis % a.ndim), axis=axis)
    return -xp.sum(picked) / _positions(a, axis)


def one_hot(xp, labels, classes: int, dtype):
    check_labels(xp, labels, classes)
    return xp.astype(xp.reshape(labels, labels.shape + (1,)) == xp.arange(classes), dtype)


def check_finite(xp, a, where: str, given: bool = False) -> None:
    """The numerics guard (compile(..., check_numerics=True)): stop at the first NaN or Inf,
    naming where it is (``given``: in an input, else produced by the node ``where``) and the
    index of the first such entry in row-major order."""
    if bool(xp.all(xp.isfinite(a))):
        return
    first = tuple(int(i[0]) for i in xp.nonzero(~xp.isfinite(a))) if a.ndim else ()
    bad = "NaN" if bool(xp.isnan(a[first] if first else a)) else "Inf"
    at = f" at index {first}" if first else ""
    raise NumericsError(f"{bad} in {where}{at}" if given else f"{bad} produced by {where}{at}")


def materialize(xp, a):
    """A fresh, writeable array for results that would otherwise be views of inputs."""
    return xp.asarray(a, copy=True)
