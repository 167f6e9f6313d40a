"""Sympy expressions as JSON trees, and back, with whitelisted constructors only.

An expression is a JSON tree, never code: ``["Symbol", "x0", {"real": true}]`` (a symbol
with its assumptions; a symbol already declared is ``["Symbol", "x0"]``), ``["Integer", 3]``,
``["Rational", 1, 2]``, ``["Float", "0.5", 53]`` (decimal text, bits of precision), constants
such as ``["Pi"]``, ``["BooleanTrue"]``, ``["Piecewise", [[value, cond], ...]]`` and
``[class, arg, ...]`` for the classes in :data:`SYMPY_FUNCTIONS`.  :func:`expr_from_json`
rebuilds it with those sympy constructors and ``evaluate=False``; nothing is ``eval``-ed or
``sympify``-ed from text.  Limits: 200 levels deep, integers up to 2**64.  How graph files
use these trees is documented in :mod:`graphc.serialize.graph_format`.

sympy is imported lazily (on the first call), never when this module is imported.
"""

from __future__ import annotations

import functools
import re
from typing import Callable

from graphc.errors import SerializationError
from graphc.ops.symbolic import sympy_module

MAX_EXPR_DEPTH, MAX_INT = 200, 2**64


def _sp():
    return sympy_module()

# -- sympy expressions as JSON trees ---------------------------------------------------------
#: The sympy classes an expression may use, besides numbers, symbols, constants and Piecewise.
SYMPY_FUNCTIONS = ("Add Mul Pow exp log sin cos tan asin acos atan sinh cosh tanh asinh acosh atanh Abs sign "
                   "floor ceiling Max Min Heaviside erf StrictGreaterThan StrictLessThan GreaterThan LessThan "
                   "Equality Unequality And Or Not Xor ITE sigmoid softplus logcosh log1p expm1 erfc normcdf").split()


@functools.lru_cache(maxsize=None)
def _function_table() -> dict:
    from graphc.ops.stable import functions

    stable = functions()  # the stable primitives (graphc.ops.stable) are not in sympy's namespace
    return {n: stable[n] if n in stable else getattr(_sp(), n) for n in SYMPY_FUNCTIONS}


@functools.lru_cache(maxsize=None)
def _atom_table() -> dict:
    S = _sp().S
    return {"Pi": S.Pi, "Exp1": S.Exp1, "Infinity": S.Infinity, "NegativeInfinity": S.NegativeInfinity,
            "NaN": S.NaN, "ComplexInfinity": S.ComplexInfinity,
            "ImaginaryUnit": S.ImaginaryUnit, "BooleanTrue": S.true, "BooleanFalse": S.false}


def expr_to_json(expr, declared=()) -> list:
    """A sympy expression as a nested JSON list; symbols in ``declared`` are written by name only.

    >>> import sympy
    >>> from graphc.serialize import expr_from_json, expr_to_json
    >>> x = sympy.Symbol("x", real=True)
    >>> tree = expr_to_json(sympy.tanh(x) + 1, declared=[x])
    >>> tree
    ['Add', ['Integer', 1], ['tanh', ['Symbol', 'x']]]
    """
    sp = _sp()
    if isinstance(expr, sp.Symbol):
        if expr in declared:
            return ["Symbol", expr.name]
        given = getattr(expr, "_assumptions_orig", None)
        given = expr.assumptions0 if given is None else given
        return ["Symbol", expr.name, {k: bool(v) for k, v in sorted(given.items()) if v is not None}]
    if isinstance(expr, sp.Integer):
        return ["Integer", int(expr)]
    if isinstance(expr, sp.Rational):
        return ["Rational", int(expr.p), int(expr.q)]
    if isinstance(expr, sp.Float):
        from mpmath import libmp

        return ["Float", libmp.to_str(expr._mpf_, libmp.repr_dps(expr._prec)), int(expr._prec)]
    name = type(expr).__name__
    if _atom_table().get(name) is expr:
        return [name]
    if isinstance(expr, sp.Piecewise):
        return ["Piecewise", [[expr_to_json(v, declared), expr_to_json(c, declared)] for v, c in expr.args]]
    if _function_table().get(name) is type(expr):
        return [name, *(expr_to_json(a, declared) for a in expr.args)]
    raise SerializationError(f"cannot save sympy {name} ({_short(expr)}): not a class graph files support "
                             "(numbers, symbols, constants, Piecewise and serialize.SYMPY_FUNCTIONS)")


_FLOAT_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _int(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or abs(v) > MAX_INT:
        raise SerializationError(f"{what} must be an integer of at most 2**64 in size, got {_short(v)}")
    return v


def expr_from_json(tree, declared: dict | None = None, depth: int = 0):
    """Rebuild an expression from :func:`expr_to_json`'s tree, with whitelisted constructors only.

    ``declared`` maps names to the symbols that ``["Symbol", name]`` may refer to.

    >>> import sympy
    >>> from graphc.serialize import expr_from_json, expr_to_json
    >>> x = sympy.Symbol("x", real=True)
    >>> expr_from_json(expr_to_json(x * sympy.exp(-x), declared=[x]), {"x": x})
    x*exp(-x)
    """
    sp = _sp()
    if depth > MAX_EXPR_DEPTH:
        raise SerializationError(f"expression nested deeper than {MAX_EXPR_DEPTH} levels")
    if not isinstance(tree, list) or not tree or not isinstance(tree[0], str):
        raise SerializationError(f"an expression must be a list [class, args...], got {_short(tree)}")
    name, args = tree[0], tree[1:]
    arity = {"Symbol": (1, 2), "Integer": (1,), "Rational": (2,), "Float": (2,), "Piecewise": (1,)}.get(name)
    if arity is None and not (name in _atom_table() or name in _function_table()):
        raise SerializationError(f"unknown or unsupported sympy class {name!r} in expression {_short(tree)}; "
                                 f"allowed: Symbol, Integer, Rational, Float, Piecewise, "
                                 f"{', '.join(SYMPY_FUNCTIONS)}, {', '.join(_atom_table())}")
    if arity is not None and len(args) not in arity:
        raise SerializationError(f"{name} takes {' or '.join(map(str, arity))} field(s): {_short(tree)}")
    if name == "Symbol":
        if len(args) == 1:
            if not isinstance(args[0], str) or args[0] not in (declared or {}):
                raise SerializationError(f"expression uses undeclared symbol {_short(args[0])}")
            return declared[args[0]]
        from sympy.core.assumptions import _assume_defined

        sym, given = args
        if not isinstance(sym, str) or not sym or len(sym) > 100 or not isinstance(given, dict) \
                or any(k not in _assume_defined or not isinstance(v, bool) for k, v in given.items()):
            raise SerializationError(f"bad symbol {_short(tree)}: expected ['Symbol', name, {{assumption: bool}}]")
        return _construct(lambda: sp.Symbol(sym, **given), tree)
    if name == "Integer":
        return sp.Integer(_int(args[0], "an Integer"))
    if name == "Rational":
        p, q = _int(args[0], "a Rational's numerator"), _int(args[1], "a Rational's denominator")
        if q <= 0:
            raise SerializationError(f"a Rational's denominator must be positive, got {q}")
        return sp.Rational(p, q)
    if name == "Float":
        text, prec = args
        if not isinstance(text, str) or len(text) > 1000 or not _FLOAT_TEXT.fullmatch(text) \
                or isinstance(prec, bool) or not isinstance(prec, int) or not 1 <= prec <= 4096:
            raise SerializationError(f"bad Float {_short(tree)}: expected ['Float', decimal text, precision bits]")
        return sp.Float(text, precision=prec)
    if name in _atom_table():
        if args:
            raise SerializationError(f"{name} takes no arguments: {_short(tree)}")
        return _atom_table()[name]
    if name == "Piecewise":
        pairs = args[0]
        if not isinstance(pairs, list) or not pairs or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            raise SerializationError(f"bad Piecewise {_short(tree)}: expected ['Piecewise', [[value, cond], ...]]")
        built = [tuple(expr_from_json(x, declared, depth + 1) for x in pair) for pair in pairs]
        if any(cond.has(sp.Piecewise) for _, cond in built):  # sympy would fold it: exponential time
            raise SerializationError(f"a Piecewise condition may not contain a Piecewise: {_short(tree)}")
        return _construct(lambda: sp.Piecewise(*built, evaluate=False), tree)
    built = [expr_from_json(a, declared, depth + 1) for a in args]
    return _construct(lambda: _function_table()[name](*built, evaluate=False), tree)


def _construct(make: Callable, tree):
    try:
        return make()
    except Exception as e:  # sympy's own argument checks: wrong arity, bad types, contradictions
        raise SerializationError(f"invalid expression {_short(tree)}: {type(e).__name__}: {e}") from None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
