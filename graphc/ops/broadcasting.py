"""How elementwise operands line up: numpy's right-aligned rule with exact dims.

Dims must agree exactly -- a size-1 dim does not stretch -- except a *kept* axis
(:meth:`graphc.ops.node.Op.kept_axes`: a ``keepdims=True`` reduction's or a
broadcast's size-1 axis), which stretches against any dim as in numpy: the
operand is used without that axis (an elementwise chain is rebuilt without it, a
keepdims reduction becomes the plain one) and the elementwise op broadcasts it by index
letters.  A mismatch raises a ShapeError whose hint is a ``gc.broadcast_to`` call
that works.
"""

from __future__ import annotations

import itertools
from typing import Sequence

from graphc.errors import ShapeError
from graphc.ops.contraction import drop_kept_axes
from graphc.ops.indices import format_shape, out_letters
from graphc.ops.node import Node, kept_axes, letters_of


def align(op_name: str, nodes: Sequence[Node]) -> tuple:
    """``(nodes, in_indices, out_indices, shape)`` for an elementwise op over ``nodes``."""
    rank = max(n.ndim for n in nodes)
    kept = [kept_axes(n) for n in nodes]
    shape: list = [None] * rank
    owner: list = [None] * rank
    for n, kp in zip(nodes, kept):
        for i, dim in enumerate(n.shape):
            k = rank - n.ndim + i
            if i in kp:
                continue
            if shape[k] is None:
                shape[k], owner[k] = dim, n
            elif shape[k] != dim:
                o = owner[k]
                raise ShapeError(
                    f"{op_name}: index {out_letters(rank)[k]!r} (axis {k - rank}) is {shape[k]!r} in {o.name!r} "
                    f"{format_shape(o.shape)} but {dim!r} in {n.name!r} {format_shape(n.shape)}; "
                    f"dims must agree exactly{_hint(o, n, nodes)}"
                )
    shape = [1 if d is None else d for d in shape]  # an axis every operand keeps stays kept
    out = letters_of(max(nodes, key=lambda n: n.ndim))
    used, in_indices = [], []
    for n, kp in zip(nodes, kept):
        off = rank - n.ndim
        drop = sorted(i for i in kp if shape[off + i] != 1)
        in_indices.append("".join(out[off + i] for i in range(n.ndim) if i not in drop))
        used.append(_drop(n, drop) if drop else n)
    return used, in_indices, out, tuple(shape)


def _drop(n: Node, drop: Sequence[int]) -> Node:
    """``n`` without its kept axes ``drop``.  An elementwise node is rebuilt from its operands
    without those axes (so layer norm's ``sqrt(var + eps)`` is a vector, and a comparison,
    which no contraction may read, stays a mask); a contraction drops the output letters."""
    op = n.op
    if not hasattr(op, "in_indices"):  # not elementwise
        return drop_kept_axes(n, drop)
    from graphc.ops.elementwise import make  # elementwise imports this module

    letters = {op.out_indices[i] for i in drop}
    inputs = [_drop(o, [k for k, c in enumerate(idx) if c in letters]) if letters & set(idx) else o
              for o, idx in zip(n.inputs, op.in_indices)]
    in_indices = ["".join(c for c in idx if c not in letters) for idx in op.in_indices]
    out = "".join(c for c in op.out_indices if c not in letters)
    return make(op.fn, inputs, in_indices, out, tuple(d for k, d in enumerate(n.shape) if k not in drop))


def _hint(a: Node, b: Node, nodes: Sequence[Node]) -> str:
    """`` (to broadcast 'mu' explicitly: gc.broadcast_to(mu, ('n', 5), axes=(0,)), ...)``, or ''."""
    for small, big in sorted([(a, b), (b, a)], key=lambda pair: pair[0].ndim - pair[1].ndim):
        if small.ndim > big.ndim:
            return ""
        target = max((n for n in nodes if n is not small), key=lambda n: n.ndim).shape
        fits = [axes for axes in itertools.combinations(range(len(target)), small.ndim)
                if all(d == target[k] or d == 1 for d, k in zip(small.shape, axes))]
        if fits:
            break
    else:
        return ""
    trailing = tuple(range(len(target) - small.ndim, len(target)))
    axes = trailing if trailing in fits else fits[0]
    call = f"gc.broadcast_to({small.name}, {tuple(target)!r}" + ("" if axes == trailing else f", axes={axes!r}") + ")"
    return (f" (to broadcast {small.name!r} along the other axes, write {call}; a reduction can "
            "keep its axes with keepdims=True)")
