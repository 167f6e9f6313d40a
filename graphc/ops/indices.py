"""Dims, shapes and index letters: the vocabulary every op and pass shares.

A shape is a tuple of dims; a dim is an ``int`` (fixed) or a ``str`` (symbolic,
bound when the compiled function is called).  Index letters are the single
letters of einsum specs; :data:`LETTERS` is the one alphabet they come from, and
:data:`READABLE` the order in which fresh indices are picked, so that every
module writes new indices the same way (``i, j, k, ...``).
"""

from __future__ import annotations

import string
from typing import Any, Iterable, Sequence, Union

from graphc.errors import ShapeError

Dim = Union[int, str]
Shape = tuple  # tuple[Dim, ...]
MAX_DIM = 2 ** 40  # no array has a larger axis; a bigger declared dim is a mistake

#: Every letter an index may be written with.
LETTERS = string.ascii_letters
#: The order fresh indices are taken in: the conventional i, j, k first.
READABLE = "ijklmnpqrstuvwxyzabcdefgho" + string.ascii_uppercase
#: The order the variable's own indices are taken in when a derivation writes ∂L/∂W[p,q].
DERIVATIVE = "pqrsuvwxyz" + LETTERS


def format_shape(shape: Sequence[Dim]) -> str:
    """``(n, 784)`` style, for error messages and explain output."""
    inner = ", ".join(str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def check_shape(shape: Iterable[Any], what: str) -> Shape:
    """Validate a user-given shape: a sequence of non-negative ints or printable dim names."""
    if isinstance(shape, (int, str)):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise ShapeError(f"{what}: shape must be a tuple of ints and dim names, got {shape!r}") from None
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, str)):
            raise ShapeError(f"{what}: dim {d!r} in shape {dims!r} is neither an int nor a dim name")
        if isinstance(d, int) and not 0 <= d <= MAX_DIM:
            raise ShapeError(f"{what}: dim {d} in shape {dims!r} is {'negative' if d < 0 else f'larger than {MAX_DIM}'}")
        if isinstance(d, str) and (not d or not d.isprintable()):
            raise ShapeError(f"{what}: dim name {d!r} in shape {dims!r} must be a non-empty printable string")
    return dims


def fresh_letter(avoid: set, order: str = READABLE) -> str:
    """The first letter of ``order`` not in ``avoid`` (which it is then added to)."""
    letter = next(c for c in order if c not in avoid)
    avoid.add(letter)
    return letter


def out_letters(rank: int) -> str:
    """The letters an array of ``rank`` axes is written with when nothing else names them."""
    return READABLE[:rank]


def letters_for(dims: Sequence[Dim], avoid: set) -> str:
    """Readable letters for fresh indices: a one-letter dim name where free, else i, j, k, ..."""
    out = ""
    for d in dims:
        if isinstance(d, str) and len(d) == 1 and d in LETTERS and d not in avoid:
            avoid.add(d)
            out += d
        else:
            out += fresh_letter(avoid)
    return out
