"""Numerically stable forms of elementwise expressions, applied before anything is emitted.

A user writes ``log(1 + exp(z))``; numpy evaluates it as ``inf`` at z = 89 in float32 and
its derivative ``exp(z)/(1 + exp(z))`` as ``inf/inf = nan``.  :func:`stabilize` rewrites such
expressions, bottom-up, into functions that are exact to a few ulps over the whole range:

* :class:`softplus` ``log(1 + exp(u))``, emitted as ``logaddexp(0, u)``;
* :class:`sigmoid` ``1/(1 + exp(-u))``, emitted without overflow as
  ``exp(min(u, 0))/(1 + exp(-|u|))``;
* :class:`logcosh` ``log(cosh(u))``, emitted as ``|u| + softplus(-2|u|) - log 2``;
* ``log1p`` and ``expm1`` (sympy's ``codegen.cfunctions``) for ``log(1 + u)`` and ``exp(u) - 1``;
* :class:`normcdf` Φ(u) for ``(1 ± erf(u))/2`` as ``Φ(±√2·u)``, emitted as ``erfc(∓u/√2)/2`` (the
  exact GELU ``x·(1 + erf(x/√2))/2`` loses every digit of its negative tail to cancellation otherwise).

Each function carries its own ``fdiff``, so ``sympy.diff`` keeps derivatives in these terms:
softplus' = σ, σ' = σ(u)·σ(-u).  (Not σ·(1 - σ): in float32 ``1 - σ(20)`` is 0, where
σ(-20) = 2e-9 is exact; the same holds for tanh' = 1 - tanh², written 4·σ(2u)·σ(-2u).)

sympy is imported on first use.
"""

from __future__ import annotations

import functools

from graphc.ops.symbolic import sympy_module as _sympy


@functools.lru_cache(maxsize=None)
def functions() -> dict:
    """The stable primitives as sympy Function classes, by name (built once, on first use)."""
    sp = _sympy()
    from sympy.codegen.cfunctions import expm1, log1p

    class sigmoid(sp.Function):
        """The logistic function σ(u) = 1/(1 + exp(-u))."""

        @classmethod
        def eval(cls, u):
            if u.is_zero:
                return sp.Rational(1, 2)
            if u is sp.oo:
                return sp.Integer(1)
            if u is sp.S.NegativeInfinity:
                return sp.Integer(0)

        def fdiff(self, argindex=1):
            u = self.args[0]
            return sigmoid(u) * sigmoid(-u)  # σ(1-σ), exact where 1 - σ would round to 0

        def _eval_rewrite_as_exp(self, u, **kw):
            return 1 / (1 + sp.exp(-u))

        def _eval_is_real(self):
            return self.args[0].is_real

        def _eval_is_positive(self):
            return True if self.args[0].is_real else None

        def _eval_evalf(self, prec):
            return (1 / (1 + sp.exp(-self.args[0])))._eval_evalf(prec)

    class softplus(sp.Function):
        """softplus(u) = log(1 + exp(u)), without overflow for large u or underflow for small."""

        @classmethod
        def eval(cls, u):
            if u.is_zero:
                return sp.log(2)

        def fdiff(self, argindex=1):
            return sigmoid(self.args[0])

        def _eval_rewrite_as_exp(self, u, **kw):
            return sp.log(1 + sp.exp(u))

        def _eval_is_real(self):
            return self.args[0].is_real

        def _eval_is_positive(self):
            return True if self.args[0].is_real else None

        def _eval_evalf(self, prec):
            return sp.log(1 + sp.exp(self.args[0]))._eval_evalf(prec)

    class logcosh(sp.Function):
        """log cosh u, emitted as |u| + softplus(-2|u|) - log 2 (log1p(2 sinh²(u/2)) for |u| < 1)."""

        @classmethod
        def eval(cls, u):
            if u.is_zero:
                return sp.Integer(0)

        def fdiff(self, argindex=1):
            return sp.tanh(self.args[0])

        def _eval_rewrite_as_exp(self, u, **kw):
            return sp.log(sp.cosh(u))

        def _eval_is_real(self):
            return self.args[0].is_real

        def _eval_evalf(self, prec):
            return sp.log(sp.cosh(self.args[0]))._eval_evalf(prec)

    class normcdf(sp.Function):
        """Φ(u), the standard normal CDF (1 + erf(u/√2))/2, emitted as erfc(-u/√2)/2: sympy keeps
        ``erfc(-x)`` as ``2 - erfc(x)``, which is the cancellation this function avoids."""

        @classmethod
        def eval(cls, u):
            if u.is_zero:
                return sp.Rational(1, 2)

        def fdiff(self, argindex=1):
            u = self.args[0]
            return sp.exp(-u ** 2 / 2) / sp.sqrt(2 * sp.pi)

        def _eval_rewrite_as_erf(self, u, **kw):
            return (1 + sp.erf(u / sp.sqrt(2))) / 2

        def _eval_is_real(self):
            return self.args[0].is_real

        def _eval_is_positive(self):
            return True if self.args[0].is_real else None

        def _eval_evalf(self, prec):
            return (sp.erfc(-self.args[0] / sp.sqrt(2)) / 2)._eval_evalf(prec)

    return {"sigmoid": sigmoid, "softplus": softplus, "logcosh": logcosh, "log1p": log1p, "expm1": expm1,
            "normcdf": normcdf}


def sigmoid(u):
    return functions()["sigmoid"](u)


def softplus(u):
    return functions()["softplus"](u)


def _const_term(add, value):
    """``add`` minus the constant ``value`` if ``add`` has it as a term, else None."""
    sp = _sympy()
    if isinstance(add, sp.Add) and value in add.args:
        return add - value
    return None


def _exp_arg(e):
    sp = _sympy()
    return e.args[0] if isinstance(e, sp.exp) else None


def _rule(e):
    """One rewrite at the root of ``e`` (its arguments are already stable), or None."""
    sp = _sympy()
    fn = functions()
    log1p, expm1 = fn["log1p"], fn["expm1"]
    if isinstance(e, sp.log):
        a = e.args[0]
        rest = _const_term(a, 1)
        if rest is not None:
            u = _exp_arg(rest)
            if u is not None:
                return softplus(u)  # log(1 + exp(u)) → softplus(u)
            return log1p(rest)  # log(1 + u) → log1p(u)
        if isinstance(a, fn["sigmoid"]):
            return -softplus(-a.args[0])  # log σ(u) → -softplus(-u)
        if isinstance(a, sp.Pow) and a.exp == -1 and isinstance(a.base, fn["sigmoid"]):
            return softplus(-a.base.args[0])  # log(1/σ(u)) → softplus(-u)
        if isinstance(a, sp.cosh):
            return fn["logcosh"](a.args[0])  # log cosh u → logcosh(u), whose derivative is tanh u
        if isinstance(a, sp.Pow) and isinstance(a.base, sp.Add):
            return None
    if isinstance(e, sp.Pow) and e.exp.is_Integer and e.exp < 0:
        base, k = e.base, -e.exp
        rest = _const_term(base, 1)
        if rest is not None:
            u = _exp_arg(rest)
            if u is not None:
                return sigmoid(-u) ** k  # 1/(1 + exp(-u)) → σ(u)
        if isinstance(base, sp.cosh) and k % 2 == 0:
            u = base.args[0]  # sech² u = 4 σ(2u) σ(-2u)
            return (4 * sigmoid(2 * u) * sigmoid(-2 * u)) ** (k // 2)
    if isinstance(e, sp.Add):
        terms = list(e.args)
        # exp(u) - 1 → expm1(u)
        if -1 in terms:
            for t in terms:
                if isinstance(t, sp.exp):
                    terms.remove(-1)
                    terms.remove(t)
                    return sp.Add(expm1(t.args[0]), *terms)
        sig = fn["sigmoid"]
        # 1 - σ(u) → σ(-u)
        if 1 in terms:
            for t in terms:
                if isinstance(t, sp.Mul) and len(t.args) == 2 and t.args[0] == -1 and isinstance(t.args[1], sig):
                    terms.remove(1)
                    terms.remove(t)
                    return sp.Add(sig(-t.args[1].args[0]), *terms)
        # σ(u) - σ(u)² (a derivative of a quotient, summed) → σ(u)·(1 - σ(u)), then the rule above
        if any(t.has(sig) for t in terms):
            factored = sp.factor_terms(e)
            if factored != e and isinstance(factored, sp.Mul):
                return factored
        # 1 ± erf(u) → 2·Φ(±√2·u): no cancellation where erf(u) is near ∓1 (the exact GELU's tail)
        if 1 in terms:
            for t in terms:
                sign, f = (1, t) if isinstance(t, sp.erf) else (-1, t.args[1]) if (
                    isinstance(t, sp.Mul) and len(t.args) == 2 and t.args[0] == -1 and isinstance(t.args[1], sp.erf)) \
                    else (0, None)
                if sign:
                    terms.remove(1)
                    terms.remove(t)
                    return sp.Add(2 * fn["normcdf"](sign * sp.sqrt(2) * f.args[0]), *terms)
        # 1 ± tanh(u) → 2σ(±2u);  1 - tanh(u)² → 4σ(2u)σ(-2u)
        if 1 in terms:
            for t in terms:
                u = _tanh_arg(t)
                if u is not None:
                    sign = 1 if isinstance(t, sp.tanh) else -1
                    terms.remove(1)
                    terms.remove(t)
                    return sp.Add(2 * sigmoid(2 * sign * u), *terms)
                if isinstance(t, sp.Mul) and t.args[0] == -1 and len(t.args) == 2 and isinstance(t.args[1], sp.Pow) \
                        and t.args[1].exp == 2 and isinstance(t.args[1].base, sp.tanh):
                    u = t.args[1].base.args[0]
                    terms.remove(1)
                    terms.remove(t)
                    return sp.Add(4 * sigmoid(2 * u) * sigmoid(-2 * u), *terms)
    if isinstance(e, sp.Mul):
        sig = fn["sigmoid"]
        # exp(j·u)·σ(-u)^k → σ(u)^j·σ(-u)^(k-j) for 1 <= j <= k  (exp(u)^j/(1 + exp(u))^k after the
        # 1/(1 + exp) rule; sympy merges exp(u)·exp(u) into exp(2u))
        for f in e.args:
            if isinstance(f, sp.exp):
                for h in e.args:
                    s_, k = (h.base, h.exp) if isinstance(h, sp.Pow) and h.exp.is_Integer and h.exp > 0 else (h, 1)
                    if isinstance(s_, sig):
                        j = sp.simplify(-f.args[0] / s_.args[0])
                        if j.is_Integer and 1 <= j <= k:
                            return e / (f * h) * sig(-s_.args[0]) ** j * s_ ** (k - j)
        return _quotient(e)
    return None


def _tanh_arg(t):
    sp = _sympy()
    if isinstance(t, sp.tanh):
        return t.args[0]
    if isinstance(t, sp.Mul) and len(t.args) == 2 and t.args[0] == -1 and isinstance(t.args[1], sp.tanh):
        return t.args[1].args[0]
    return None


def _quotient(e):
    """A ratio of sums of exponentials that equals σ(u) or tanh(u) (times the other factors)."""
    sp = _sympy()
    num, den = sp.fraction(e)
    if not (den.has(sp.exp) and num.has(sp.exp)) or den.is_number:
        return None
    args = {a.args[0] for a in (num + den).atoms(sp.exp)}
    if len(args) > 2:
        return None
    for a in args:
        for u in (a, -a, a / 2, -a / 2):
            for target in (sp.tanh(u), 1 / (1 + sp.exp(-u))):
                try:
                    rest = sp.simplify((num / (den * target)).rewrite(sp.exp))
                except Exception:  # noqa: BLE001 - a failed simplification is just no match
                    return None
                if not rest.has(sp.exp) and not rest.has(sp.tanh):
                    stable = sp.tanh(u) if target.func is sp.tanh else sigmoid(u)
                    return rest * stable
    return None


def stabilize(expr):
    """``expr`` with every sub-expression the rules know replaced by its stable form (bottom-up)."""
    sp = _sympy()
    if not isinstance(expr, sp.Basic) or expr.is_Atom or not expr.args:
        return expr
    if isinstance(expr, sp.Piecewise):
        return sp.Piecewise(*[(stabilize(v), c) for v, c in expr.args])
    if isinstance(expr, (sp.logic.boolalg.Boolean,)) and not isinstance(expr, sp.Expr):
        return expr
    if isinstance(expr, sp.Indexed) or isinstance(expr, sp.Idx):
        return expr
    args = tuple(stabilize(a) for a in expr.args)
    e = expr.func(*args) if args != expr.args else expr
    for _ in range(8):
        new = _rule(e)
        if new is None or new == e:
            break
        e = stabilize(new) if new.args and not isinstance(new, type(e)) else new
    return e
