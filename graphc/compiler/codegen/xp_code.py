"""Elementwise sympy expressions as Python code over an array namespace ``xp``.

``code(expr, names)`` prints calls to ``xp.<fn>`` (numpy, or any array-API namespace),
with each symbol replaced by the code of its operand.  Both backends use it: the
array-API lowering for whole expressions, the numpy lowering for functions it has
no ufunc sequence for.
"""

from __future__ import annotations

import functools

from graphc.errors import GraphError
from graphc.ops.symbolic import sympy_module as _sympy


@functools.lru_cache(maxsize=None)
def _printer():
    sp = _sympy()
    from sympy.printing.numpy import NumPyPrinter

    class XpPrinter(NumPyPrinter):
        """numpy's printer, but every function comes from the namespace ``xp``."""

        def _module_format(self, fqn, register=True):
            return "xp." + fqn.split(".")[-1]

        def _print(self, expr, **kwargs):
            # A real constant such as log(2) or sqrt(2/pi) as a Python float: ``xp.log(2)`` is a
            # float64 scalar, which would promote a float32 array (NEP 50).
            sp_ = _sympy()
            if isinstance(expr, sp_.Expr) and expr.is_number and expr.is_real and not expr.is_Rational \
                    and expr.free_symbols == set():
                return repr(float(expr))
            return super()._print(expr, **kwargs)

        def _print_Mul(self, expr):
            # The number factor last: 4*x*σ(-x) overflows at 4*x before σ(-x) = 0 can zero it,
            # while x*σ(-x)*4 does not (the numpy lowering applies scalar factors last too).
            from sympy.printing.precedence import precedence

            numbers = [a for a in expr.args if a.is_number]  # sqrt(2)/sqrt(pi) too, not only 1/2
            rest = [a for a in expr.args if not a.is_number]
            c = sp.Mul(*numbers)
            if rest and c.is_real and c not in (1, -1):
                rest = sp.Mul(*rest)
                factor = self._print(abs(c)) if abs(c).is_Rational else repr(float(abs(c)))
                body = f"{self.parenthesize(rest, precedence(expr))}*{factor}"
                return f"-{body}" if c < 0 else body
            return super()._print_Mul(expr)

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

        # sympy writes And/Or as numpy's ``logical_and.reduce((a, b))``: a ufunc method that
        # torch's, JAX's and the array API's functions do not have.  Nested binary calls instead.
        def _print_And(self, expr):
            return self._logical("logical_and", expr.args)

        def _print_Or(self, expr):
            return self._logical("logical_or", expr.args)

        def _logical(self, fn, args):
            out = self._print(args[0])
            for arg in args[1:]:
                out = f"xp.{fn}({out}, {self._print(arg)})"
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

        # The stable primitives of graphc.ops.stable.
        def _print_softplus(self, expr):
            return f"xp.logaddexp(0.0, {self._print(expr.args[0])})"

        def _print_sigmoid(self, expr):
            # exp(min(u, 0))/(1 + exp(-|u|)): neither exp overflows, and both ends are exact to an ulp.
            u = self._print(expr.args[0])
            return f"(xp.exp(xp.minimum({u}, 0.0))/(1 + xp.exp(-xp.abs({u}))))"

        def _print_logcosh(self, expr):
            # |u| + log1p(exp(-2|u|)) - log 2, which cancels for small u: there log1p(2·sinh²(u/2)).
            u = self._print(expr.args[0])
            big = f"(xp.abs({u}) + xp.logaddexp(0.0, -2*xp.abs({u})) - {float(_sympy().log(2))!r})"
            return f"xp.where(xp.abs({u}) < 1, xp.log1p(2*xp.sinh({u}/2)**2), {big})"

        def _print_erf(self, expr):  # numpy has no erf: the runtime's (rt.erf)
            return f"rt.erf(xp, {self._print(expr.args[0])})"

        def _print_erfc(self, expr):
            return f"rt.erfc(xp, {self._print(expr.args[0])})"

        def _print_normcdf(self, expr):  # graphc.ops.stable: Φ(u) as erfc(-u/√2)/2
            return f"rt.normcdf(xp, {self._print(expr.args[0])})"

        def _print_log1p(self, expr):
            return f"xp.log1p({self._print(expr.args[0])})"

        def _print_expm1(self, expr):
            return f"xp.expm1({self._print(expr.args[0])})"

        def _print_Float(self, expr):
            return repr(float(expr))

        def _print_Rational(self, expr):
            return repr(float(expr)) if expr.q != 1 else str(expr.p)

    return XpPrinter({"allow_unknown_functions": False})


def code(expr, names: dict) -> str:
    """Python source for ``expr`` with each sympy symbol replaced by the code string ``names[symbol]``."""
    sp = _sympy()
    printer = _printer()
    placeholders = {sym: sp.Symbol(f"__graphc_{k}__") for k, sym in enumerate(names)}
    try:
        text = printer.doprint(expr.xreplace(placeholders))
    except Exception as exc:  # sympy refuses functions it cannot print (DiracDelta, Derivative, ...)
        raise GraphError(f"cannot generate code for the elementwise expression {expr}: "
                         f"{type(exc).__name__}: {exc}") from None
    for sym, ph in placeholders.items():
        text = text.replace(ph.name, names[sym])
    return text


