"""The index-notation printer: ``dA1[n,h]·[A1[n,h] > 0]`` as text (``index_text``) or LaTeX."""

from __future__ import annotations

import functools
import re

from graphc.ops.symbolic import sympy_module as _sympy


@functools.lru_cache(maxsize=None)
def _printers():
    from sympy.printing.str import StrPrinter

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

        def _print_Sum(self, expr):  # (Σ_k body) inside a larger expression; see index_text
            return f"({self.sum_text(expr)})"

        def sum_text(self, expr):  # Σ_k body, Σ_{n,k} body
            letters = ",".join(self._print(lim[0]) for lim in expr.limits)
            sub = letters if len(expr.limits) == 1 else "{" + letters + "}"
            return f"Σ_{sub} {self._print(expr.function)}"

        def _print_Equality(self, expr):  # a tie: x[i] = y[i]
            return f"{self._print(expr.lhs)} = {self._print(expr.rhs)}"

        def _print_KroneckerDelta(self, expr):  # δ[a,i], as explain writes it elsewhere
            return f"δ[{','.join(self._print(a) for a in expr.args)}]"

        def _print_Idx(self, expr):
            return self._print(expr.label)

        def _print_Indexed(self, expr):
            return f"{expr.base}[{','.join(map(str, expr.indices))}]" if expr.indices else str(expr.base)

        def _print_Float(self, expr):
            return repr(float(expr))

    return IndexPrinter({"order": "none"})


def index_text(expr) -> str:
    """Index notation; a sum is parenthesized unless it is the whole expression."""
    printer = _printers()
    if isinstance(expr, _sympy().Sum):
        return printer.sum_text(expr)
    return printer.doprint(expr)


def index_latex(expr) -> str:
    return _sympy().latex(expr)
