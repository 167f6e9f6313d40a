"""Accuracy of a classifier graph over a whole data set, in large chunks.

``Evaluator(logits, chunk)`` compiles ``argmax(logits)`` once (accuracy needs no
softmax) and counts the correct predictions chunk by chunk.  uint8 inputs (raw
pixels) are cast to float chunk by chunk into a reused buffer, exactly; a net made
for them (``two_layer_net(input_divisor=255)``) scales them itself.
"""

from __future__ import annotations

import threading

import numpy as np

from graphc.backends.numpy.casting import RowCaster
from graphc.errors import GraphcError


class Evaluator:
    """Accuracy over a whole set with a compiled ``argmax(logits)``, ``chunk`` rows a call.

    >>> import numpy as np, graphc as gc
    >>> from graphc.evaluate import Evaluator
    >>> g = gc.Graph("linear"); x = g.input("x", ("n", 2)); W = g.param("W", (2, 3))
    >>> evaluator = Evaluator(x @ W, chunk=2)
    >>> x_set = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    >>> evaluator.accuracy({"W": np.eye(2, 3)}, x_set, labels=np.array([0, 1, 1]))
    0.6666666666666666
    """

    def __init__(self, logits, chunk: int = 2_000, dtype=np.float32, input: str = "x"):
        from graphc.compiler import compile
        from graphc.ops import argmax

        if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
            raise GraphcError(f"Evaluator: chunk must be a positive integer, got {chunk!r}")
        self.fn = compile(argmax(logits), name="predict")
        self.chunk = int(chunk)
        self.dtype = np.dtype(dtype)
        self.input = input
        # Per thread (so that threads can share an evaluator, as they can a compiled function):
        # the buffer a uint8 chunk is cast into for the products, and its caster.
        self._local = threading.local()

    def accuracy(self, params: dict, x: np.ndarray, labels: np.ndarray) -> float:
        """The fraction of rows of ``x`` whose predicted class is ``labels``' entry."""
        if np.ndim(labels) != 1:
            raise GraphcError(f"Evaluator.accuracy: labels must hold one class index per row, got shape "
                              f"{np.shape(labels)} (one-hot rows? pass labels.argmax(axis=1))")
        if len(x) != len(labels):
            raise GraphcError(f"Evaluator.accuracy: {len(x)} inputs but {len(labels)} labels")
        if len(x) == 0:
            raise GraphcError("Evaluator.accuracy: the set is empty")
        correct = 0
        for start in range(0, len(x), self.chunk):
            rows = x[start:start + self.chunk]
            if rows.dtype == np.uint8:
                rows = self._cast(rows)
            pred = self.fn(params, **{self.input: rows})
            correct += int(np.count_nonzero(pred == labels[start:start + self.chunk]))
        return correct / len(x)

    def _cast(self, rows: np.ndarray) -> np.ndarray:
        from graphc.backends.numpy.blas import blas_threads

        local = self._local
        buffer = getattr(local, "buffer", None)
        if (buffer is None or buffer.shape[1:] != rows.shape[1:] or len(buffer) < len(rows)
                or buffer.dtype != self.dtype):
            buffer = local.buffer = np.empty((max(self.chunk, len(rows)),) + rows.shape[1:], self.dtype)
            local.caster = RowCaster(rows.shape[1:], self.dtype)
        # BLAS gives this thread the first rows of each product (graphc.backends.numpy.casting says why that matters).
        own = -(-len(rows) // (blas_threads() or 1))
        return local.caster(rows, buffer[: len(rows)], own=own)
