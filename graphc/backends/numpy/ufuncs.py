"""Lower one elementwise sympy expression to numpy ufunc calls that write into buffers.

``x0*(1 - x0)`` into ``b3`` becomes::

    xp.subtract(1, v2, out=b4)
    xp.multiply(v2, b4, out=b3)

Every call has ``out=``; sub-expressions go to scratch buffers the caller lends.
Scalars that are fixed once the dims are known (numbers, constants, dims and their
products) go through the caller's ``hoist``, which makes them 0-d arrays of the
step's dtype in ``build``: numpy converts a Python float on every call, which costs
more than the multiply itself on the small arrays of a training step.  When the
destination aliases an operand (an in-place update), the lowering reports a
conflict if it would write the destination before its last read of that operand,
and the caller picks another destination.
"""

from __future__ import annotations

import functools
import re

from graphc.errors import GraphError
from graphc.ops.symbolic import sympy_module as _sympy


@functools.lru_cache(maxsize=1)
def _numpy_names() -> frozenset:
    import numpy

    return frozenset(dir(numpy))

_UNARY = {"exp": "exp", "log": "log", "tanh": "tanh", "sqrt": "sqrt", "Abs": "absolute", "sin": "sin",
          "cos": "cos", "tan": "tan", "sinh": "sinh", "cosh": "cosh", "asin": "arcsin", "acos": "arccos",
          "atan": "arctan", "asinh": "arcsinh", "acosh": "arccosh", "atanh": "arctanh", "sign": "sign",
          "floor": "floor", "ceiling": "ceil", "log1p": "log1p", "expm1": "expm1"}
_RELATIONAL = {"StrictGreaterThan": "greater", "GreaterThan": "greater_equal", "StrictLessThan": "less",
               "LessThan": "less_equal", "Equality": "equal", "Unequality": "not_equal"}


def _is_bool(e) -> bool:
    return type(e).__name__ in _RELATIONAL or type(e).__name__ in ("And", "Or", "Not", "BooleanTrue", "BooleanFalse")


class Conflict(Exception):
    """The destination would be written before the aliased operand is last read."""


class UfuncLowering:
    """Emit statements computing ``expr`` into ``dest``.

    ``atoms`` maps each symbol to the code of its operand (a variable or a view);
    ``scratch(kind)`` lends a buffer of the output's shape (``kind`` 'float' or 'bool')
    and ``release(name)`` returns it; ``alias`` is the symbol whose operand *is* ``dest``.
    ``static`` are the symbols whose operands are fixed per build (constants, dims), and
    ``hoist(code)`` returns the name of a build-time value for a static scalar's code;
    ``fill(code)`` that of an array of the output's shape filled with it (or the scalar).
    """

    def __init__(self, atoms: dict, scratch, release, alias=None, dest_kind: str = "float", scalars=(),
                 static=(), hoist=None, fill=None):
        self.dest_kind = dest_kind
        self.scalars = set(scalars)  # symbols whose operands are 0-d: folded as Python scalars
        self.static = set(static)
        self.hoist = hoist or (lambda code: code)
        self.fill = fill or self.hoist
        self.atoms = atoms
        self.scratch = scratch
        self.release = release
        self.alias = alias
        self.lines: list[str] = []
        self.dest_written = False
        self.dest = None

    # -- operands -----------------------------------------------------------------------
    def _literal(self, e) -> str | None:
        sp = _sympy()
        if e in self.atoms:
            if e == self.alias and self.dest_written:
                raise Conflict(str(e))
            return self.atoms[e]
        if e.is_Integer:
            return str(int(e))
        if e.is_number and e.is_real:  # 1/2, pi, exp(1), ...
            return repr(float(e))
        if e in (sp.true, sp.false):
            return str(bool(e))
        return None

    def _operand(self, e, temps: list, kind: str = "float", into: str | None = None) -> str:
        """Code for ``e``: a literal or atom, else computed into ``into`` or a scratch buffer.

        ``into`` is the destination itself, offered to an operation's first operand: any
        read of an aliased operand after that write raises Conflict, so it stays safe.
        """
        lit = self._literal(e)
        if lit is not None:
            return self.hoist(lit) if self._is_static(e) else lit
        if into is not None and kind == ("bool" if _is_bool(e) else "float") == self.dest_kind:
            self._compute(e, into)
            return into
        buf = self.scratch("bool" if _is_bool(e) else kind)
        temps.append(buf)
        self._compute(e, buf)
        return buf

    def _emit(self, text: str, dest: str) -> None:
        self.lines.append(text)
        if dest == self.dest:
            self.dest_written = True

    # -- expressions ----------------------------------------------------------------------
    def lower(self, expr, dest: str) -> list[str]:
        self.dest = dest
        lit = self._literal(expr)
        if lit is not None:
            self._emit(f"xp.copyto({dest}, {self.hoist(lit) if self._is_static(expr) else lit})", dest)
        else:
            self._compute(expr, dest)
        return self.lines

    def _compute(self, e, dest: str) -> None:
        sp = _sympy()
        temps: list[str] = []
        name = type(e).__name__
        if isinstance(e, sp.Add):
            self._chain(e.args, "add", "subtract", dest, temps)
        elif isinstance(e, sp.Mul):
            self._mul(e, dest, temps)
        elif isinstance(e, sp.Pow):
            self._pow(e, dest, temps)
        elif name in _UNARY:
            x = self._operand(e.args[0], temps, into=dest)
            self._emit(f"xp.{_UNARY[name]}({x}, out={dest})", dest)
        elif name == "softplus":  # graphc.ops.stable: log(1 + exp(u)) without overflow
            x = self._operand(e.args[0], temps, into=dest)
            self._emit(f"xp.logaddexp({self.hoist('0')}, {x}, out={dest})", dest)
        elif name == "sigmoid":  # exp(min(u, 0))/(1 + exp(-|u|)): no overflow, exact at both ends
            u = self._operand(e.args[0], temps)
            t = self.scratch("float")
            temps.append(t)
            self._emit(f"xp.absolute({u}, out={t})", t)
            self._emit(f"xp.negative({t}, out={t})", t)
            self._emit(f"xp.exp({t}, out={t})", t)
            self._emit(f"xp.add({t}, {self.hoist('1')}, out={t})", t)
            self._emit(f"xp.minimum({u}, {self.fill('0')}, out={dest})", dest)
            self._emit(f"xp.exp({dest}, out={dest})", dest)
            self._emit(f"xp.divide({dest}, {t}, out={dest})", dest)
        elif name in _RELATIONAL:
            a, b = (self._operand(arg, temps) for arg in e.args)
            self._emit(f"xp.{_RELATIONAL[name]}({a}, {b}, out={dest})", dest)
        elif isinstance(e, (sp.Max, sp.Min)):
            fn = "maximum" if isinstance(e, sp.Max) else "minimum"
            # numpy's SIMD maximum/minimum loops need two full arrays: against a scalar they run
            # several times slower, so a static scalar operand becomes a filled array (``fill``).
            args = [self.fill(self._literal(a)) if self._is_static(a) else self._operand(a, temps) for a in e.args]
            self._emit(f"xp.{fn}({args[0]}, {args[1]}, out={dest})", dest)
            for a in args[2:]:
                self._emit(f"xp.{fn}({dest}, {a}, out={dest})", dest)
        elif isinstance(e, sp.Piecewise):
            self._piecewise(e, dest, temps)
        elif isinstance(e, (sp.And, sp.Or)):
            fn = "logical_and" if isinstance(e, sp.And) else "logical_or"
            args = [self._operand(a, temps, "bool") for a in e.args]
            self._emit(f"xp.{fn}({args[0]}, {args[1]}, out={dest})", dest)
            for a in args[2:]:
                self._emit(f"xp.{fn}({dest}, {a}, out={dest})", dest)
        else:  # anything else: print it against xp (allocates a temporary) and copy it in
            from graphc.compiler.codegen.xp_code import code

            if self.alias in e.free_symbols and self.dest_written:
                raise Conflict(str(self.alias))
            text = code(e, {sym: self.atoms[sym] for sym in e.free_symbols})
            missing = sorted(set(re.findall(r"xp\.(\w+)", text)) - _numpy_names())
            if missing:
                raise GraphError(f"no numpy function for {missing[0]!r} in the elementwise expression {e}")
            self._emit(f"xp.copyto({dest}, {text})", dest)
        for t in temps:
            self.release(t)

    def _chain(self, terms, op: str, inverse_op: str, dest: str, temps: list) -> None:
        """a + b - c ... as a left fold; the aliased operand goes first so it is read before writes."""
        pos, neg = [], []
        for t in terms:
            if op == "add" and t.could_extract_minus_sign():
                neg.append(-t)
            else:
                pos.append(t)
        pos.sort(key=lambda t: (t != self.alias, t.is_number or t in self.atoms))
        if not pos:  # -(a + b): negate the sum of the negated terms
            self._chain(neg, op, inverse_op, dest, temps)
            self._emit(f"xp.negative({dest}, out={dest})", dest)
            return
        codes = [self._operand(pos[0], temps, into=dest)] + [self._operand(t, temps) for t in pos[1:2]]
        if len(codes) == 1:
            first = codes[0]
            if not neg:
                if first != dest:
                    self._emit(f"xp.copyto({dest}, {first})", dest)
                return
            second = self._operand(neg.pop(0), temps)
            self._emit(f"xp.{inverse_op}({first}, {second}, out={dest})", dest)
        else:
            self._emit(f"xp.{op}({codes[0]}, {codes[1]}, out={dest})", dest)
        for t in pos[2:]:
            self._emit(f"xp.{op}({dest}, {self._operand(t, temps)}, out={dest})", dest)
        for t in neg:
            self._emit(f"xp.{inverse_op}({dest}, {self._operand(t, temps)}, out={dest})", dest)

    def _is_static(self, e) -> bool:
        """A number or a build-time scalar (not a bool, not a per-call input)."""
        return (bool(e.is_number) and e.is_real) or (e in self.static and e in self.scalars)

    def _is_scalar(self, f) -> bool:
        # The aliased operand is never folded into the scalar factor: that factor is applied
        # last, after the destination (which *is* the aliased operand) has been written.
        return bool(f.is_number) or (f in self.atoms and f in self.scalars and f != self.alias)

    def _mul(self, e, dest: str, temps: list) -> None:
        """Products and quotients; all scalar factors (numbers, dims, 0-d inputs) fold into one multiply."""
        sp = _sympy()
        num, den = [], []
        for f in e.args:
            if isinstance(f, sp.Pow) and f.exp.is_Number and f.exp < 0:
                den.append(f.base ** (-f.exp))
            elif f.is_Rational and not f.is_Integer:
                num.append(sp.Integer(f.p))
                den.append(sp.Integer(f.q))
            else:
                num.append(f)
        arrays = [f for f in num if not self._is_scalar(f)]
        array_den = [f for f in den if not self._is_scalar(f)]
        scalar_num = [self._literal(f) for f in num if self._is_scalar(f) and f != 1]
        scalar_den = [self._literal(f) for f in den if self._is_scalar(f)]
        static = all(self._is_static(f) for f in num + den if self._is_scalar(f))
        scale, op = None, "multiply"
        if scalar_num:
            scale = "*".join(scalar_num)
            if scalar_den:
                scale = f"({scale})/({'*'.join(scalar_den)})"
        elif scalar_den:  # x/n: one divide
            scale, op = "*".join(scalar_den), "divide"
            if len(scalar_den) > 1:
                scale = f"({scale})"
        if not arrays:
            if op == "divide" and scale is not None:
                scale = f"1/{scale}"
            hoisted = scale if scale is None or not static else self.hoist(scale)
            numerator = hoisted or self.hoist("1")
            if array_den:
                first = self._operand(array_den.pop(0), temps)
                self._emit(f"xp.divide({numerator}, {first}, out={dest})", dest)
                for f in array_den:
                    self._emit(f"xp.divide({dest}, {self._operand(f, temps)}, out={dest})", dest)
            else:
                self._emit(f"xp.copyto({dest}, {numerator})", dest)
            return
        if scale is not None and static:
            scale = self.hoist(scale)
        arrays.sort(key=lambda f: (f != self.alias, f in self.atoms))  # compute into dest first
        codes = [self._operand(arrays[0], temps, into=dest)] + [self._operand(f, temps) for f in arrays[1:2]]
        if len(codes) == 2:
            self._emit(f"xp.multiply({codes[0]}, {codes[1]}, out={dest})", dest)
        elif scale is not None:
            self._emit(f"xp.{op}({codes[0]}, {scale}, out={dest})", dest)
            scale = None
        elif array_den:
            self._emit(f"xp.divide({codes[0]}, {self._operand(array_den.pop(0), temps)}, out={dest})", dest)
        elif codes[0] != dest:
            self._emit(f"xp.copyto({dest}, {codes[0]})", dest)
        for f in arrays[2:]:
            self._emit(f"xp.multiply({dest}, {self._operand(f, temps)}, out={dest})", dest)
        for f in array_den:
            self._emit(f"xp.divide({dest}, {self._operand(f, temps)}, out={dest})", dest)
        if scale is not None:
            self._emit(f"xp.{op}({dest}, {scale}, out={dest})", dest)

    def _pow(self, e, dest: str, temps: list) -> None:
        sp = _sympy()
        base, exp = e.args
        x = self._operand(base, temps, into=dest)
        if exp == 2:
            self._emit(f"xp.square({x}, out={dest})", dest)
        elif exp == sp.Rational(1, 2):
            self._emit(f"xp.sqrt({x}, out={dest})", dest)
        elif exp == -1:
            self._emit(f"xp.divide({self.hoist('1')}, {x}, out={dest})", dest)
        else:
            self._emit(f"xp.power({x}, {self._operand(exp, temps)}, out={dest})", dest)

    def _piecewise(self, e, dest: str, temps: list) -> None:
        sp = _sympy()
        args = e.args
        if len(args) == 2 and args[1] == (0, True):  # value·[cond]: one multiply by the mask
            value, cond = args[0]
            if isinstance(cond, sp.StrictGreaterThan) and cond.args == (value, 0):  # relu: one pass
                self._emit(f"xp.maximum({self._operand(value, temps)}, {self.fill('0')}, out={dest})", dest)
                return
            mask = self._operand(cond, temps, "bool")
            if value == 1:
                self._emit(f"xp.copyto({dest}, {mask})", dest)
            else:
                self._emit(f"xp.multiply({self._operand(value, temps)}, {mask}, out={dest})", dest)
            return
        # General case: fill with the default, then overwrite branch by branch, last first.
        (default, _), branches = args[-1], args[:-1]
        self._emit(f"xp.copyto({dest}, {self._operand(default, temps)})", dest)
        for value, cond in reversed(branches):
            mask = self._operand(cond, temps, "bool")
            self._emit(f"xp.copyto({dest}, {self._operand(value, temps)}, where={mask})", dest)
