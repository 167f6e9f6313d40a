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


def _rational(value: float):
    """``value`` as an integer, or as a small fraction (1/3) when it is one to the last bit and has
    no short decimal form; else None (the float is printed as written)."""
    from fractions import Fraction

    if value.is_integer() and abs(value) < 2 ** 53:
        return _sympy().Integer(int(value))
    if len(repr(value)) <= 6:  # a short decimal (2.5, 0.25, 1e-05) reads best as written
        return None
    frac = Fraction(value).limit_denominator(1000)
    if abs(frac.numerator) <= 1000 and float(frac) == value:
        return _sympy().Rational(frac.numerator, frac.denominator)
    return None


def exact(expr):
    """``expr`` with each float that is a small fraction written as that fraction: ``1/3`` not
    ``0.3333333333333333``, and a factor ``1.0`` gone (display only; the code keeps the float)."""
    sp = _sympy()
    floats = expr.atoms(sp.Float) if isinstance(expr, sp.Basic) else ()
    swap = {f: r for f in floats if (r := _rational(float(f))) is not None}
    return expr.xreplace(swap) if swap else expr


def index_text(expr) -> str:
    """Index notation; a sum is parenthesized unless it is the whole expression."""
    printer = _printers()
    expr = exact(expr)
    if isinstance(expr, _sympy().Sum):
        return printer.sum_text(expr)
    return printer.doprint(expr)


@functools.lru_cache(maxsize=None)
def _latex_printer():
    from sympy.printing.latex import LatexPrinter

    class IndexLatexPrinter(LatexPrinter):
        """LaTeX with a sum written over its index only (``\\sum_{n}``): the bound is the dim,
        which may share the index's letter, so ``\\sum_{n=0}^{n - 1}`` would read wrong."""

        def _print_Sum(self, expr):
            letters = ",".join(self._print(lim[0]) for lim in expr.limits)
            body = self._print(expr.function)
            if expr.function.is_Add:
                body = rf"\left({body}\right)"
            return rf"\sum_{{{letters}}} {body}"

        def _print_Float(self, expr):  # 1e-05 as 10^{-5}, not 1.0 \cdot 10^{-5}
            mantissa, _, exponent = repr(float(expr)).partition("e")
            if not exponent:
                return mantissa
            power = rf"10^{{{int(exponent)}}}"
            return power if mantissa in ("1", "1.0") else rf"{mantissa} \cdot {power}"

    return IndexLatexPrinter()


def index_latex(expr) -> str:
    return _latex_printer().doprint(exact(expr))
