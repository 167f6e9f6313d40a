"""Cast uint8 rows (raw pixels) into the float buffer that the products read next.

The cast itself is cheap; where it writes is not.  The products read their input on
every core (BLAS splits their rows, and the columns of a transposed operand, over its
threads), so the buffer's lines sit in the other cores' caches when the next rows are
cast in.  On hosts whose cores do not share a cache, the cast's element-wise stores
then first fetch each line back from the core that holds it; a plain copy writes
whole lines and skips that.  So there are two ways to fill the buffer:

* straight in: one pass, the cheapest when the cores share a cache;
* through a block: cast into a small buffer that stays in this core's L2 and that
  no other core reads, then copy it over: two passes, the cheapest when they do not.

Which is cheaper changes while a job runs (a virtual machine's cores move between
the host's dies), so ``RowCaster`` times the way it takes every time, tries the
other one every ``PROBE_EVERY`` calls, and takes the one whose cost per row over its
last three timings (the median, so that one call held up by an interrupt does not
switch it) is lower.  Both write the same values.

Neither fixed way is cheaper in both states; timing both keeps the caster near the
cheaper one in each, as ``benchmarks/README.md`` shows (whole training runs and casting
probes in both machine states).
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from graphc.errors import BindingError, GraphcError


class RowCaster:
    """``caster(rows, out)`` writes ``rows`` cast to ``out``'s dtype into ``out`` and returns it.

    ``out`` has ``rows``' shape and the caster's dtype (the block's: both ways then round
    once, to the same values).  ``own``: how many leading rows are this thread's own
    (read by its share of the products alone): always cast straight in, as no other core
    holds them.
    """

    PROBE_EVERY = 16
    BLOCK_BYTES = 3 << 18  # a block this size stays in one core's L2

    def __init__(self, row_shape: tuple, dtype, probe_every: int | None = None):
        if probe_every is not None:  # a caster called every step can look less often
            if isinstance(probe_every, bool) or not isinstance(probe_every, (int, np.integer)) or probe_every < 2:
                raise GraphcError(f"RowCaster: probe_every must be an integer of at least 2, got {probe_every!r}")
            self.PROBE_EVERY = int(probe_every)
        row_bytes = max(int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize, 1)
        self.block = np.empty((max(self.BLOCK_BYTES // row_bytes, 1),) + tuple(row_shape), dtype)
        self.block.fill(0)  # its pages mapped now, not inside the first timing of the block way
        self.timings = {"straight": deque(maxlen=3), "block": deque(maxlen=3)}  # seconds per row, newest last
        self.calls = 0

    def __call__(self, rows: np.ndarray, out: np.ndarray, own: int = 0) -> np.ndarray:
        if out.shape != rows.shape or out.dtype != self.block.dtype or not 0 <= own <= len(rows):
            raise BindingError(f"RowCaster: rows {rows.shape} cast into out {out.shape} {out.dtype} with own={own}; "
                               f"out must have the rows' shape and dtype {self.block.dtype}, and 0 <= own <= "
                               f"{len(rows)}")
        if own:
            np.copyto(out[:own], rows[:own])
        rest = len(rows) - own
        if rest <= 0:
            return out
        way = "block" if self.timings["block"] and self.cost("block") < self.cost("straight") else "straight"
        if self.calls % self.PROBE_EVERY == self.PROBE_EVERY // 2:  # now and then, the other way
            way = "block" if way == "straight" else "straight"
        self.calls += 1
        t0 = time.perf_counter()
        if way == "straight":
            np.copyto(out[own:], rows[own:])
        else:
            block = self.block
            for s in range(own, len(rows), len(block)):
                part = rows[s:s + len(block)]
                np.copyto(block[: len(part)], part)
                np.copyto(out[s:s + len(part)], block[: len(part)])
        self.timings[way].append((time.perf_counter() - t0) / rest)
        return out

    def cost(self, way: str) -> float:
        """Seconds per row ``way`` took lately: the median of its last timings (of two, the lower)."""
        recent = sorted(self.timings[way])
        return recent[(len(recent) - 1) // 2]
