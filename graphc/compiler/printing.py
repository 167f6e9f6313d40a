"""sympy printers: elementwise expressions as array-namespace code, and as index notation.

``code(expr, names)`` turns an elementwise expression into Python that calls
``xp.<fn>`` (numpy, or any array-API namespace).  ``index_text`` and
``index_latex`` print the same expression with operands as indexed tensors,
``dA1[n,h]·[A1[n,h] > 0]``, for explain.
"""

from __future__ import annotations

import functools
import re

from graphc.errors import GraphError
from graphc.ops.elementwise import _sympy


@functools.lru_cache(maxsize=None)
def _printers():
    sp = _sympy()
    from sympy.printing.numpy import NumPyPrinter
    from sympy.printing.str import StrPrinter

    class XpPrinter(NumPyPrinter):
        """numpy's printer, but every function comes from the namespace ``xp``."""

        def _module_format(self, fqn, register=True):
            return "xp." + fqn.split(".")[-1]

        def _print_Piecewise(self, expr):
            # Nested xp.where, the last branch being the default.  All-number branches
            # would give an integer or float64 array: cast to the call's float dtype.
            if all(value.is_number for value, _ in expr.args):
                if len(expr.args) == 2 and expr.args[0][0] == 1 and expr.args[1] == (0, True):
                    return f"xp.astype({self._print(expr.args[0][1])}, dtype)"
                return f"xp.astype({self._print_Piecewise_where(expr)}, dtype)"
            return self._print_Piecewise_where(expr)

        def _print_Piecewise_where(self, expr):
            *branches, (last, cond) = expr.args
            out = self._print(last) if cond == sp.true else f"xp.where({self._print(cond)}, {self._print(last)}, xp.nan)"
            for value, cond in reversed(branches):
                out = f"xp.where({self._print(cond)}, {self._print(value)}, {out})"
            return out

        def _print_Max(self, expr):
            out = self._print(expr.args[0])
            for arg in expr.args[1:]:
                out = f"xp.maximum({out}, {self._print(arg)})"
            return out

        def _print_Min(self, expr):
            out = self._print(expr.args[0])
            for arg in expr.args[1:]:
                out = f"xp.minimum({out}, {self._print(arg)})"
            return out

        def _print_Pow(self, expr, rational=False):
            base, e = expr.args
            if e.is_Integer and e < 0:
                inner = self._print(base ** (-e)) if e != -1 else self.parenthesize(base, 100)
                return f"1/({inner})" if e != -1 else f"1/{inner}"
            if e == sp.Rational(1, 2):
                return f"xp.sqrt({self._print(base)})"
            return super()._print_Pow(expr, rational=rational)

        def _print_Float(self, expr):
            return repr(float(expr))

        def _print_Rational(self, expr):
            return repr(float(expr)) if expr.q != 1 else str(expr.p)

    class IndexPrinter(StrPrinter):
        """Index notation: products with '·', Iverson brackets for 0/1 piecewise functions."""

        printmethod = "_graphc_index_str"  # bypass Indexed._sympystr, which adds spaces

        def _print_Mul(self, expr):
            return re.sub(r"(?<!\*)\*(?!\*)", "·", super()._print_Mul(expr))

        def _print_Piecewise(self, expr):
            if len(expr.args) == 2 and expr.args[1] == (0, True):
                value, cond = expr.args[0]
                bracket = f"[{self._print(cond)}]"
                return bracket if value == 1 else f"{self.parenthesize(value, 50)}·{bracket}"
            parts = [f"{self._print(v)} if {self._print(c)}" for v, c in expr.args[:-1]]
            return "(" + " else ".join(parts + [self._print(expr.args[-1][0])]) + ")"

        def _print_KroneckerDelta(self, expr):  # δ[a,i], as explain writes it elsewhere
            return f"δ[{','.join(self._print(a) for a in expr.args)}]"

        def _print_Idx(self, expr):
            return self._print(expr.label)

        def _print_Indexed(self, expr):
            return f"{expr.base}[{','.join(map(str, expr.indices))}]" if expr.indices else str(expr.base)

        def _print_Float(self, expr):
            return repr(float(expr))

    return XpPrinter({"allow_unknown_functions": False}), IndexPrinter({"order": "none"})


def code(expr, names: dict) -> str:
    """Python source for ``expr`` with each sympy symbol replaced by the code string ``names[symbol]``."""
    sp = _sympy()
    printer, _ = _printers()
    placeholders = {sym: sp.Symbol(f"__graphc_{k}__") for k, sym in enumerate(names)}
    try:
        text = printer.doprint(expr.xreplace(placeholders))
    except Exception as exc:  # sympy refuses functions it cannot print (DiracDelta, Derivative, ...)
        raise GraphError(f"cannot generate code for the elementwise expression {expr}: "
                         f"{type(exc).__name__}: {exc}") from None
    for sym, ph in placeholders.items():
        text = text.replace(ph.name, names[sym])
    return text


def index_text(expr) -> str:
    return _printers()[1].doprint(expr)


def index_latex(expr) -> str:
    return _sympy().latex(expr)
