"""The numpy backend's runtime (``rt`` in its generated code): the operations of the
array-API runtime, writing into planned buffers, and the BLAS gemm binding.
"""

from __future__ import annotations

import functools

from graphc.backends.array_api.runtime import (  # noqa: F401 - called by the generated code
    check_finite, check_labels, erf, erfc, log_softmax, materialize, normcdf, softmax, softmax_cross_entropy,
    softmax_cross_entropy_labels,
)
from graphc.backends.numpy.blas import GemmAccumulate  # noqa: F401 - called by the generated code


def np_check_labels(labels, classes: int) -> None:
    """check_labels for numpy in one reduction: viewed as unsigned, a negative label is huge."""
    import numpy as np

    if labels.size:
        unsigned = labels.view(f"u{labels.itemsize}") if labels.dtype.kind == "i" else labels
        if int(np.maximum.reduce(unsigned, axis=None)) >= classes:
            check_labels(np, labels, classes)  # raises, naming the offending label



class NpRowSoftmax:
    """Softmax, log-softmax and softmax cross-entropy over the last axis of one logits
    shape, with every temporary allocated once (the numpy lowering makes one per node in
    ``build``).

    Two choices are made here, once, because the step runs them thousands of times on
    small arrays where numpy's per-call overhead is most of the cost:

    * row sums are a matrix-vector product with a ones vector (BLAS), not ``add.reduce``
      over a short last axis, which numpy loops over row by row;
    * for a matrix with few columns, the row maximum is taken over a transposed copy,
      whose reduction runs over contiguous rows.

    ufunc methods are called with positional arguments: their keyword parsing costs
    as much as the work on arrays this small.
    """

    def __init__(self, shape: tuple, dtype):
        import numpy as np

        self.np = np
        rows = shape[:-1] + (1,)
        self.shifted = np.empty(shape, dtype)
        self.m = np.empty(rows, dtype)
        self.s = np.empty(rows, dtype)
        self.ones = np.ones((shape[-1], 1), dtype)
        self.batch = shape[0] if len(shape) > 1 else 1
        small = len(shape) == 2 and shape[-1] <= 64 and shape[0] > 1
        self.transposed = np.empty(shape[::-1], dtype) if small else None
        self.m_flat = self.m.reshape(-1)
        self.index = self.offsets = self.picked = None  # integer labels' scratch, made on first use
        # Logits below exp_limit cannot overflow a row sum of exp; row sums above s_floor keep
        # log's precision.  Between the two the shift by the row max changes nothing but rounding.
        info = np.finfo(dtype)
        self.exp_limit = float(np.log(info.max / shape[-1])) - 1.0 if shape[-1] else 0.0
        self.s_floor = float(info.tiny / info.eps)
        self.s_flat = self.s.reshape(-1)

    def _exp_unshifted(self, a, y):
        """softmax(a) into ``y`` without the shift, when that is safe; returns the row sums, or None.

        For narrow logits the shift costs more than the rest of the softmax together (a
        transposed copy, a reduction, a broadcast subtraction; benchmarks/README.md has the
        figures).  One reduction shows when exp cannot overflow; the row
        sums, checked after, when no row underflowed.  Otherwise the caller shifts.
        """
        np = self.np
        if (self.transposed is None or np.may_share_memory(a, y)  # the caller still reads a after
                or not np.maximum.reduce(a, None) < self.exp_limit):
            return None
        np.exp(a, y)
        np.dot(y, self.ones, self.s)
        if not np.minimum.reduce(self.s_flat, None) > self.s_floor:  # (also False for NaN)
            return None
        np.divide(y, self.s, y)
        return self.s

    def _shift(self, a, out):
        """``out = a - max(a)`` row by row; returns ``out``."""
        np = self.np
        if self.transposed is not None:
            np.copyto(self.transposed, a.T)
            np.maximum.reduce(self.transposed, 0, None, self.m_flat)
        else:
            np.maximum.reduce(a, -1, None, self.m, True)
        return np.subtract(a, self.m, out)

    def _exp_normalize(self, y):
        """Shifted logits in ``y`` -> softmax in ``y``; returns the row sums of exp (in ``self.s``)."""
        np = self.np
        np.exp(y, y)
        np.dot(y, self.ones, self.s)
        np.divide(y, self.s, y)
        return self.s

    def softmax(self, a, out):
        self._shift(a, out)
        self._exp_normalize(out)
        return out

    def log_softmax(self, a, out):
        np = self.np
        self._shift(a, out)
        np.exp(out, self.shifted)
        np.dot(self.shifted, self.ones, self.s)
        np.log(self.s, self.s)
        return np.subtract(out, self.s, out)

    def cross_entropy(self, a, t, y=None):
        """mean over rows of -Σ_c t·log softmax(a); leaves softmax(a) in ``y`` when given.

        -Σ_c t·(shifted - log Σexp) = Σ_n (Σ_c t)·log Σexp - Σ t·shifted: exact for any t.
        """
        np = self.np
        y = self.shifted if y is None else y
        s = self._exp_unshifted(a, y)
        if s is not None:  # y: softmax(a); Σexp(a) per row
            picked = np.vdot(t, a)
        else:
            self._shift(a, y)
            picked = np.vdot(t, y)
            s = self._exp_normalize(y)  # y: softmax(a); Σexp(a - max) per row
        s = np.log(s, self.s)
        np.dot(t, self.ones, self.m)  # Σ_c t per row (1 for one-hot rows)
        return a.dtype.type((np.vdot(self.m, s) - picked) / self.batch)

    def cross_entropy_labels(self, a, labels, y=None):
        """The same loss with integer labels: log softmax picked at each row's label."""
        np = self.np
        np_check_labels(labels, a.shape[-1])
        y = self.shifted if y is None else y
        s = self._exp_unshifted(a, y)
        logits = a if s is not None else self._shift(a, y)  # what the label picks from
        if a.ndim == 2:  # logits[n, label_n] as one take from the flat buffer, at offsets made once
            if self.index is None:
                self.index = np.empty(a.shape[0], np.intp)
                self.offsets = np.arange(a.shape[0], dtype=np.intp) * a.shape[1]
                self.picked = np.empty(a.shape[0], a.dtype)
            np.add(labels if labels.dtype != np.uint64 else labels.astype(np.intp), self.offsets, out=self.index)
            picked = np.add.reduce(np.take(logits.reshape(-1), self.index, out=self.picked, mode="clip"))
        else:
            picked = np.add.reduce(np.take_along_axis(logits, labels.reshape(labels.shape + (1,)), axis=-1), axis=None)
        if s is None:
            s = self._exp_normalize(y)
        s = np.log(s, self.s)
        return a.dtype.type((np.add.reduce(s, axis=None) - picked) / self.batch)


# Above this many elements a filled operand costs more memory than its faster loop saves.
FILL_LIMIT = 1 << 20


def filled(shape: tuple, value, dtype):
    """``value`` as a read-only array of ``shape`` (numpy's maximum/minimum are SIMD only
    between two full arrays, several times faster than against a 0-d scalar),
    or as a 0-d array for shapes above FILL_LIMIT elements."""
    import math

    import numpy as np

    full = np.full(shape if math.prod(shape) <= FILL_LIMIT else (), value, dtype=dtype)
    full.flags.writeable = False
    return full


@functools.lru_cache(maxsize=64)
def _class_indices(classes: int):
    import numpy as np

    indices = np.arange(classes)
    indices.flags.writeable = False
    return indices


def np_one_hot(labels, out):
    """One comparison against 0..C-1 written straight into ``out`` (cheaper than fill + put)."""
    import numpy as np

    np_check_labels(labels, out.shape[-1])
    return np.equal(labels.reshape(labels.shape + (1,)), _class_indices(out.shape[-1]), out=out)


# -- windows: strided reads and slice-add writes (graphc.backends.numpy.windows) --------------
def window(a, starts: tuple, axes: tuple, writeable: bool = False):
    """A strided view of ``a`` with one axis per index letter: ``axes`` holds, per letter, its
    range and ``((axis of a, coefficient), ...)``; ``starts`` the constant of each axis's term.
    Every access was checked in range when the graph was declared.  Read-only unless
    ``writeable`` (the lowering asks for that only where no two view elements share memory)."""
    from numpy.lib.stride_tricks import as_strided

    base = a[tuple(slice(s, None) for s in starts)]  # the first element read, as a view
    strides = a.strides
    return as_strided(base, tuple(size for size, _ in axes),
                      tuple(sum(c * strides[k] for k, c in uses) for _, uses in axes), writeable=writeable)


class SliceAdds:
    """``out[T_0] += T`` through affine output terms, as one strided slice-add per assignment of
    the loop letters (a convolution's col2im: K² adds for a K×K kernel), planned once.

    ``axes``: per output axis ``(const, coefficient of its free letter, the free letter's range
    (-1: the whole axis), ((loop position, coefficient), ...))``; ``T`` holds the loop letters at
    ``loops_in_t``, then the free letters present (in axis order); ``missing`` lists the free
    letters ``T`` lacks (it is the same along them)."""

    def __init__(self, axes: tuple, loop_ranges: tuple, loops_in_t: tuple, missing: tuple):
        import itertools

        n_free = sum(1 for _, a, _, _ in axes if a)
        t_free = tuple(None if k in missing else slice(None) for k in range(n_free))
        self.pairs = []
        for values in itertools.product(*(range(r) for r in loop_ranges)):
            index = []
            for const, a, size, uses in axes:
                start = const + sum(c * values[pos] for pos, c in uses)
                if not a:
                    index.append(start)
                elif size < 0:
                    index.append(slice(None))
                else:
                    last = start + a * (size - 1)
                    index.append(slice(start, last + 1, a) if a > 0 else slice(start, last - 1 if last else None, a))
            self.pairs.append((tuple(index), tuple(values[p] for p in loops_in_t) + t_free))

    def __call__(self, out, T) -> None:
        import numpy as np

        out.fill(0)
        add = np.add
        for out_index, t_index in self.pairs:
            target = out[out_index]
            if isinstance(target, np.ndarray):
                add(target, T[t_index], out=target)
            else:  # every axis at one index: an element, not a view
                out[out_index] += T[t_index]


def window_max(windows, n_window: int, out) -> None:
    """``out`` = the maximum of each window: ``windows`` holds the output axes then the
    ``n_window`` window axes; one ``maximum`` per window position."""
    import numpy as np

    positions = list(np.ndindex(*windows.shape[windows.ndim - n_window:]))
    np.copyto(out, windows[(Ellipsis, *positions[0])])
    for pos in positions[1:]:
        np.maximum(out, windows[(Ellipsis, *pos)], out=out)


def multiply_by_position(a, b, out, n_inner: int) -> None:
    """``out = a·b`` (broadcasting), one multiply per index of ``out``'s last ``n_inner`` axes."""
    import numpy as np

    for pos in np.ndindex(*out.shape[out.ndim - n_inner:]):
        ia = tuple(p if d != 1 else 0 for p, d in zip(pos, a.shape[a.ndim - n_inner:]))
        ib = tuple(p if d != 1 else 0 for p, d in zip(pos, b.shape[b.ndim - n_inner:]))
        np.multiply(a[(Ellipsis, *ia)], b[(Ellipsis, *ib)], out=out[(Ellipsis, *pos)])


def first_max_mask(windows, peak, out, free) -> None:
    """``out[position, ...]`` = 1 where the window reaches its maximum ``peak`` for the first
    time in row-major window order (torch's rule for max pooling's gradient, ties included),
    else 0.  ``windows``: the output axes then the window axes; ``out``: the window axes
    first; ``free``: boolean scratch of ``peak``'s shape, true while no earlier position held
    the maximum.  The comparisons run on booleans, a quarter of a float's memory traffic."""
    import numpy as np

    n_window = out.ndim - peak.ndim
    positions = list(np.ndindex(*out.shape[:n_window]))
    hit = np.empty(peak.shape, dtype=bool)
    for k, pos in enumerate(positions):
        np.equal(windows[(Ellipsis, *pos)], peak, out=hit)
        if k:
            np.logical_and(hit, free, out=hit)
        if k < len(positions) - 1:
            if k:
                np.logical_xor(free, hit, out=free)  # hit implies free: this clears the hits
            else:
                np.logical_not(hit, out=free)
        np.copyto(out[pos], hit)


def pad_into(out, a, inner: tuple, value: float) -> None:
    """``out`` = ``a`` surrounded by ``value``: ``inner`` holds ``a``'s (start, stop) per axis."""
    out.fill(value)
    out[tuple(slice(lo, hi) for lo, hi in inner)] = a
