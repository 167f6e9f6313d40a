"""sympy, imported on first use: ``import graphc`` stays light.

Elementwise functions, derivative rules and printing all build sympy
expressions; they reach sympy through :func:`sympy_module` so that nothing imports
it until a graph actually needs it.
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=None)
def sympy_module():
    """The sympy module (imported once, on the first call)."""
    import sympy

    return sympy


def symbols(n: int) -> tuple:
    """``x0, x1, ...``: the real argument symbols of an n-ary elementwise function."""
    sp = sympy_module()
    return tuple(sp.Symbol(f"x{i}", real=True) for i in range(n))


@functools.lru_cache(maxsize=4096)
def indexed(name: str, letters: str):
    """``name[letters]`` as a sympy Indexed (a plain Symbol for a scalar); sympy expressions are
    immutable, so one object serves every expression that writes it."""
    sp = sympy_module()
    if not letters:
        return sp.Symbol(name)
    return sp.IndexedBase(name)[tuple(sp.Idx(c) for c in letters)]


def number(value: float):
    """A float as the exact sympy number a person would write (``3`` not ``3.0``)."""
    sp = sympy_module()
    return sp.Integer(int(value)) if float(value).is_integer() else sp.Float(value)
