"""Elementwise ops: a scalar function, given as a sympy expression, mapped over aligned indices.

``Y[n,h] = A[n,h] + b[h]``: operands are aligned by index letters, broadcasting
is explicit (``b`` simply lacks the ``n``), and dims must agree exactly (no
silent size-1 stretching).  The function is a sympy expression in its operand
symbols; its partial derivatives come from ``sympy.diff`` and are rewritten in
terms of the op's own output when that is cheaper (σ' = σ(1-σ) reuses σ).  The
vector-Jacobian product of an elementwise node is again an elementwise node,
built from ``g·∂f/∂x_i``, so gradients of gradients work the same way.

sympy is imported on first use, not at ``import graphc``.
"""

from __future__ import annotations

import functools
import inspect
import itertools
from typing import Callable, Sequence

from graphc.errors import GraphError, SerializationError, ShapeError
from graphc.ops.broadcasting import align
from graphc.ops.contraction import Contraction, Spec, contraction
from graphc.ops.leaves import Constant, Zeros, constant, operand_symbol, zeros
from graphc.ops.node import Node, Op, as_node, kept_axes, same_graph
from graphc.ops.registry import saved_as
from graphc.ops.stable import sigmoid as _sigmoid, stabilize
from graphc.ops.symbolic import number, symbols as _symbols
from graphc.ops.symbolic import sympy_module as _sympy


class ElementwiseFn:
    """A scalar function of ``arity`` arguments defined by a sympy expression.

    ``build`` maps sympy symbols to the expression (called lazily, so defining a
    function costs nothing until it is used).  ``inverse`` (unary only) gives x in
    terms of the output y; with it the derivative is rewritten in y when that is
    cheaper.  ``derivatives`` overrides ``sympy.diff`` for chosen arguments (the
    maximum's tie rule, for instance).  Calling the function on nodes applies it.
    """

    def __init__(self, name: str, arity: int, build: Callable, *, inverse: Callable | None = None,
                 derivatives: dict | None = None, symbols: Sequence | None = None):
        if not isinstance(name, str) or not name:
            raise GraphError(f"an elementwise function needs a non-empty name, got {name!r}")
        self.name = name
        self.arity = arity
        self._build = build
        self._inverse = inverse
        self._derivatives = dict(derivatives or {})
        self._given_symbols = tuple(symbols) if symbols is not None else None
        self._partials: dict = {}

    @classmethod
    def from_expr(cls, name: str, symbols: Sequence, expr) -> "ElementwiseFn":
        """A function whose expression is already built over ``symbols``."""
        return cls(name, len(symbols), lambda *_: expr, symbols=symbols)

    @functools.cached_property
    def symbols(self) -> tuple:
        return self._given_symbols if self._given_symbols is not None else _symbols(self.arity)

    @functools.cached_property
    def expr(self):
        expr = stabilize(_sympy().sympify(self._build(*self.symbols)))
        extra = expr.free_symbols - set(self.symbols)
        if extra:
            raise GraphError(f"elementwise {self.name!r}: expression {expr} uses unknown symbols {sorted(map(str, extra))}")
        return expr

    def key(self) -> tuple:
        return self._key

    @functools.cached_property
    def _key(self) -> tuple:  # CSE asks for it for every node: srepr once per function
        return ("fn", self.name, _sympy().srepr(self.expr), tuple(map(str, self.symbols)))

    def partial(self, i: int):
        """(∂f/∂x_i, uses_output): the derivative, in terms of the output y where that is cheaper."""
        if i not in self._partials:
            sp = _sympy()
            x = self.symbols
            d = self._derivatives[i](*x) if i in self._derivatives else sp.diff(self.expr, x[i])
            d = _tidy(stabilize(d))
            uses_output = False
            if self._inverse is not None and self.arity == 1:
                y = sp.Symbol("y", real=True)
                dy = sp.simplify(d.subs(x[0], self._inverse(y)))
                if dy.free_symbols <= {y} and sp.count_ops(dy) < sp.count_ops(d):
                    d, uses_output = dy, True
            self._partials[i] = (d, uses_output)
        return self._partials[i]

    def __call__(self, *operands, name: str | None = None) -> Node:
        if len(operands) != self.arity:
            raise GraphError(f"{self.name}: takes {self.arity} operand(s), got {len(operands)}")
        return apply(self, operands, name=name)

    def __repr__(self) -> str:
        return f"<elementwise {self.name}>"


def _tidy(expr):
    """Fold piecewise products and simplify, cheaply: the result is printed and emitted."""
    sp = _sympy()
    expr = sp.piecewise_fold(expr)
    if expr.has(sp.Piecewise):
        return stabilize(expr)
    # simplify may bring back unstable forms (1 - tanh² as cosh⁻²): stabilize after it too.
    return stabilize(sp.simplify(expr))


@saved_as("elementwise")
class Elementwise(Op):
    """``out[O] = f(A_0[I_0], ..., A_k[I_k])`` with each ``I_k`` a subset of ``O``."""

    file_fields = frozenset({"fn", "symbols", "expr", "in_indices", "out_indices"})

    def __init__(self, fn: ElementwiseFn, in_indices: Sequence[str], out_indices: str):
        self.fn = fn
        self.kind_name = fn.name if fn.name.isidentifier() else "ew"
        self.in_indices = tuple(in_indices)
        self.out_indices = out_indices

    def key(self):
        return ("ew", self.fn.key(), self.in_indices, self.out_indices)

    def describe(self):
        return f"{self.fn.name}[{','.join(self.in_indices)}->{self.out_indices}]"

    def index_letters(self, node):
        return self.out_indices

    def expression(self, node, name_of):
        """The function's sympy expression with each operand written as ``name[indices]``."""
        return self.fn.expr.xreplace({sym: operand_symbol(operand, idx, name_of)
                                      for sym, operand, idx in zip(self.fn.symbols, node.inputs, self.in_indices)})

    def fields(self, codec):
        fn = self.fn
        return {"fn": fn.name, "symbols": [codec.expr_to_json(s) for s in fn.symbols],
                "expr": codec.expr_to_json(fn.expr, declared=fn.symbols), "in_indices": list(self.in_indices),
                "out_indices": self.out_indices}

    @classmethod
    def load(cls, graph, e, inputs, shape, name, codec):
        sp, fname = _sympy(), codec.str(e["fn"], "fn")
        syms = tuple(codec.expr_from_json(s) for s in codec.list(e["symbols"], "symbols"))
        if not all(isinstance(s, sp.Symbol) for s in syms) or len({s.name for s in syms}) != len(syms):
            raise SerializationError(f"symbols must be distinct Symbols, got {codec.short(e['symbols'])}")
        ins = [codec.letters(i, "each of in_indices") for i in codec.list(e["in_indices"], "in_indices")]
        out = codec.letters(e["out_indices"], "out_indices")
        if not len(syms) == len(ins) == len(inputs):
            raise SerializationError(f"{len(inputs)} input(s) but {len(syms)} symbols and {len(ins)} in_indices")
        if len(out) != len(shape):
            raise SerializationError(f"out_indices {out!r} do not fit the shape {list(shape)}")
        dims = dict(zip(out, shape))
        for k, (idx, operand) in enumerate(zip(ins, inputs)):
            want = tuple(dims.get(c) for c in idx)
            if None in want or operand.shape != want:
                raise ShapeError(f"{fname!r}: operand {k} ({operand.name!r}) has shape {list(operand.shape)}, which "
                                 f"indices {idx!r} of output {out!r} {list(shape)} do not describe")
        expr = codec.expr_from_json(e["expr"], {s.name: s for s in syms})
        fn = codec.builtin_fns().get(fname)
        if fn is None or fn.symbols != syms or fn.expr != expr:
            fn = ElementwiseFn.from_expr(fname, syms, expr)
        kind = "bool" if isinstance(fn.expr, sp.logic.boolalg.Boolean) else "float"  # .expr checks its symbols
        return Node(graph, Elementwise(fn, ins, out), inputs, shape, kind, name)

    def kept_axes(self, node):
        """A size-1 output axis is kept when every operand carrying its letter keeps it."""
        kept = set()
        for k, c in enumerate(self.out_indices):
            carriers = [(o, idx.index(c)) for o, idx in zip(node.inputs, self.in_indices) if c in idx]
            if node.shape[k] == 1 and carriers and all(i in kept_axes(o) for o, i in carriers):
                kept.add(k)
        return frozenset(kept)

    def vjp(self, node: Node, g: Node, wanted):
        sp = _sympy()
        # The cotangent and output symbols must not clash with the function's own: a
        # derived function (a vjp) already has a "g" among its symbols, and its vjp
        # (a second derivative) needs a new, distinct one.
        taken = {str(s) for s in self.fn.symbols}
        gsym, ysym = (sp.Symbol(next(name + "'" * k for k in itertools.count() if name + "'" * k not in taken),
                                real=True) for name in ("g", "y"))
        grads = []
        for i, want in enumerate(wanted):
            if not want:
                grads.append(None)
                continue
            d, uses_output = self.fn.partial(i)
            expr = gsym * (d.subs(sp.Symbol("y", real=True), ysym) if uses_output else d)
            symbols = (gsym, *self.fn.symbols) + ((ysym,) if uses_output else ())
            operands = [g, *node.inputs] + ([node] if uses_output else [])
            indices = [self.out_indices, *self.in_indices] + ([self.out_indices] if uses_output else [])
            fn = _derived_fn(self.fn, i, symbols, expr)
            local = make(fn, operands, indices, self.out_indices, node.shape)
            # Broadcast in the forward pass becomes a sum in the backward pass.
            target = self.in_indices[i]
            if target != self.out_indices:
                local = contraction(Spec((self.out_indices,), target), [local])
            node.graph.set_origin(local, node, i)
            grads.append(local)
        return grads


_DERIVED: dict = {}


def _derived_fn(fn: ElementwiseFn, i: int, symbols, expr) -> ElementwiseFn:
    """One function object per (fn, argument): keeps CSE keys stable and sympy work cached."""
    key = (id(fn), i)
    if key not in _DERIVED:
        suffix = "'" if fn.arity == 1 else f"'{i}"
        _DERIVED[key] = (fn, ElementwiseFn.from_expr(f"{fn.name}{suffix}", symbols, _tidy(expr)))
    return _DERIVED[key][1]


def constant_value(node: Node) -> float | None:
    """The value of a node that is one number everywhere (a constant, zeros, a broadcast constant)."""
    op = node.op
    if isinstance(op, Constant):
        return op.value
    if isinstance(op, Zeros):
        return 0.0
    if isinstance(op, Contraction) and all(t == "" for t in op.spec.inputs):
        values = [constant_value(i) for i in node.inputs]
        if all(v is not None for v in values):
            out = 1.0
            for v in values:
                out *= v
            return out
    return None


def make(fn: ElementwiseFn, operands: Sequence[Node], in_indices: Sequence[str], out_indices: str,
         shape, name: str | None = None) -> Node:
    """Build an elementwise node, folding scalar constants and zeros into the expression.

    Operands that the (folded) expression no longer uses are dropped; an expression
    that reduces to one operand with the output's indices returns that operand.
    """
    sp = _sympy()
    graph = same_graph(fn.name, operands)
    expr, subs = fn.expr, {}
    for k, (sym, node, idx) in enumerate(zip(fn.symbols, operands, in_indices)):
        value = constant_value(node)
        if value is None:
            continue
        covered = "".join(i for j, (n2, i) in enumerate(zip(operands, in_indices))
                          if j != k and constant_value(n2) is None)
        if not idx or all(c in covered for c in idx):  # folding it keeps the output's shape
            subs[sym] = number(value)
    if subs:
        expr = _tidy(expr.subs(subs))
    keep = [k for k, sym in enumerate(fn.symbols) if sym in expr.free_symbols]
    if not keep:  # the expression folded to a number
        value = float(expr)
        if not shape:
            return constant(graph, value)
        if value == 0.0:
            return zeros(graph, shape)
        # One nonzero number everywhere: broadcast the constant to the shape.  (Keeping an
        # operand with ``value + 0*x`` does not work: sympy folds it back to a bare number,
        # and the emitted code returned a scalar instead of an array of this shape.)
        return contraction(Spec(("",), out_indices), [constant(graph, value)], name=name,
                           sizes=dict(zip(out_indices, shape)))
    if len(keep) == 1 and expr == fn.symbols[keep[0]] and in_indices[keep[0]] == out_indices:
        return operands[keep[0]]
    if subs or len(keep) != len(operands):
        symbols = tuple(fn.symbols[k] for k in keep)
        fn = ElementwiseFn.from_expr(fn.name, symbols, expr)
        operands = [operands[k] for k in keep]
        in_indices = [in_indices[k] for k in keep]
    # A comparison or logical expression is a mask.  (A bare sympy Symbol is a Boolean
    # too, by class; it is also an Expr, which no comparison is: an x1 broadcast is a float.)
    kind = "bool" if isinstance(expr, sp.logic.boolalg.Boolean) and not isinstance(expr, sp.Expr) else "float"
    return Node(graph, Elementwise(fn, in_indices, out_indices), operands, shape, kind, name)


def apply(fn: ElementwiseFn, operands: Sequence, name: str | None = None) -> Node:
    """Apply ``fn`` with numpy's right-aligned broadcasting, but exact dims (only kept axes stretch: ``broadcasting``)."""
    given = [o for o in operands if isinstance(o, Node)]
    if not given:
        raise GraphError(f"{fn.name}: at least one operand must be a graph node, got {operands!r}")
    graph = same_graph(fn.name, given)
    nodes = [as_node(o, graph, fn.name) for o in operands]
    for n in nodes:
        if n.kind != "float":
            raise GraphError(f"{fn.name}: operand {n.name!r} holds {n.kind} values; elementwise ops take floats")
    nodes, in_indices, out, shape = align(fn.name, nodes)  # exact dims; kept axes stretch
    return make(fn, nodes, in_indices, out, shape, name=name)


def elementwise(name: str, build: Callable, arity: int | None = None, **kw) -> ElementwiseFn:
    """Define a new elementwise op from a sympy expression; its gradient comes from ``sympy.diff``.

    >>> import sympy
    >>> softplus = elementwise("softplus", lambda x: sympy.log(1 + sympy.exp(x)))
    >>> # softplus(node) is now a graph op with a derived gradient.
    """
    if arity is None:
        # Operands are the parameters without defaults (``lambda x, k=2: x**k`` takes one).
        arity = sum(1 for p in inspect.signature(build).parameters.values()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    return ElementwiseFn(name, arity, build, **kw)


# -- the built-in functions ------------------------------------------------------------
def _pw(value, cond):
    sp = _sympy()
    return sp.Piecewise((value, cond), (0, True))


ADD = ElementwiseFn("add", 2, lambda a, b: a + b)  # gradient distributor
SUB = ElementwiseFn("sub", 2, lambda a, b: a - b)
MUL = ElementwiseFn("mul", 2, lambda a, b: a * b)  # swap multiplier
DIV = ElementwiseFn("div", 2, lambda a, b: a / b)
NEG = ElementwiseFn("neg", 1, lambda a: -a)
POW = ElementwiseFn("pow", 2, lambda a, b: a ** b)
COPY = ElementwiseFn("copy", 1, lambda a: a)  # fan-out: adjoints of every use add up
EXP = ElementwiseFn("exp", 1, lambda a: _sympy().exp(a), inverse=lambda y: _sympy().log(y))
LOG = ElementwiseFn("log", 1, lambda a: _sympy().log(a))
SQRT = ElementwiseFn("sqrt", 1, lambda a: _sympy().sqrt(a), inverse=lambda y: y ** 2)
# tanh' = 4σ(2a)σ(-2a) (graphc.ops.stable), not 1 - y²: in float32 1 - tanh(10)² is 0, not 8e-9.
TANH = ElementwiseFn("tanh", 1, lambda a: _sympy().tanh(a))
# σ' = σ(a)·σ(-a) (from the stable sigmoid's fdiff), not σ(1 - σ): 1 - σ rounds to 0 for large a.
SIGMOID = ElementwiseFn("sigmoid", 1, lambda a: _sigmoid(a))
RELU = ElementwiseFn("relu", 1, lambda a: _pw(a, a > 0))
STEP = ElementwiseFn("step", 1, lambda a: _pw(1, a > 0))  # zero gradient almost everywhere
ERF = ElementwiseFn("erf", 1, lambda a: _sympy().erf(a))
# x·(1 + erf(x/√2))/2 = x·Φ(x); graphc.ops.stable writes it through Φ, exact in the negative tail
GELU = ElementwiseFn("gelu", 1, lambda a: a * (1 + _sympy().erf(a / _sympy().sqrt(2))) / 2)
# torch's approximate="tanh": x/2·(1 + tanh(√(2/π)·(x + 0.044715·x³))), made stable by graphc.ops.stable
GELU_TANH = ElementwiseFn("gelu_tanh", 1, lambda a: a / 2 * (1 + _sympy().tanh(
    _sympy().sqrt(2 / _sympy().pi) * (a + _sympy().Rational(44715, 1000000) * a ** 3))))
# The seed's gradient router: on a tie both sides receive the gradient.

def _tie_split(x, y):
    """∂max(x, y)/∂x with torch's tie rule: 1 where x wins, 1/2 at a tie, 0 where y wins."""
    sp = _sympy()
    return sp.Piecewise((1, x > y), (sp.Rational(1, 2), sp.Eq(x, y)), (0, True))


# At a tie the gradient is split evenly between the two sides, as torch.maximum/minimum do
# (leaky ReLU written maximum(x, 0.3·x) then has gradient 0.65 at 0, the mean of its slopes).
MAXIMUM = ElementwiseFn("maximum", 2, lambda a, b: _sympy().Piecewise((a, a >= b), (b, True)),
                        derivatives={0: lambda a, b: _tie_split(a, b), 1: lambda a, b: _tie_split(b, a)})
MINIMUM = ElementwiseFn("minimum", 2, lambda a, b: _sympy().Piecewise((a, a <= b), (b, True)),
                        derivatives={0: lambda a, b: _tie_split(b, a), 1: lambda a, b: _tie_split(a, b)})


def add(a, b, name=None):
    """``a + b`` elementwise; a lower-rank operand is broadcast over the leading dims, explicitly.

    >>> import graphc as gc
    >>> g = gc.Graph("add"); x = g.input("x", ("n", 3)); b = g.param("b", (3,))
    >>> y = gc.add(x, b, name="y"); dy = g.input("dy", ("n", 3))
    >>> dx, db = gc.grad(y, [x, b], seed=dy)
    >>> print(gc.explain([y, db], forward=True))
    forward:
      y[n,i] = b[i] + x[n,i]
    backward:
      db[i] = Σ_n dy[n,i]    (db = Σ_n dy)
    >>> dx is dy  # the gradient passes on unchanged
    True
    """
    return apply(ADD, (a, b), name)


def sub(a, b, name=None):
    """``a - b`` elementwise (also ``a - b`` on nodes).

    >>> import graphc as gc
    >>> g = gc.Graph("sub"); a = g.input("a", ("n",)); b = g.input("b", ("n",))
    >>> y = gc.sub(a, b, name="y")
    >>> print(gc.explain([y, *gc.grad(y, [a, b], seed=g.input("dy", ("n",)))], forward=True))
    forward:
      y[n] = -b[n] + a[n]
    backward:
      db[n] = -dy[n]
    """
    return apply(SUB, (a, b), name)


def mul(a, b, name=None):
    """``a·b`` elementwise (also ``a * b`` on nodes): each operand's gradient is the other times the incoming one.

    >>> import graphc as gc
    >>> g = gc.Graph("mul"); a = g.input("a", ("n",)); b = g.input("b", ("n",))
    >>> y = gc.mul(a, b, name="y")
    >>> print(gc.explain([y, *gc.grad(y, [a, b], seed=g.input("dy", ("n",)))], forward=True))
    forward:
      y[n] = a[n]·b[n]
    backward:
      da[n] = b[n]·dy[n]
      db[n] = a[n]·dy[n]
    """
    return apply(MUL, (a, b), name)


def div(a, b, name=None):
    """``a / b`` elementwise (also ``a / b`` on nodes).

    >>> import graphc as gc
    >>> g = gc.Graph("div"); a = g.input("a", ("n",)); b = g.input("b", ("n",))
    >>> y = gc.div(a, b, name="y")
    >>> print(gc.explain([y, *gc.grad(y, [a, b], seed=g.input("dy", ("n",)))], forward=True))
    forward:
      y[n] = a[n]/b[n]
    backward:
      da[n] = dy[n]/b[n]
      db[n] = -a[n]·dy[n]/b[n]**2
    """
    return apply(DIV, (a, b), name)


def neg(a, name=None):
    """``-a`` elementwise (also ``-a`` on nodes).

    >>> import graphc as gc
    >>> g = gc.Graph("neg"); a = g.input("a", ("n",)); dy = g.input("dy", ("n",))
    >>> y = gc.neg(a, name="y")
    >>> print(gc.explain([y, *gc.grad(y, [a], seed=dy)], forward=True))
    forward:
      y[n] = -a[n]
    backward:
      da[n] = -dy[n]
    """
    return apply(NEG, (a,), name)


def power(a, exponent, name=None):
    """``a ** exponent`` elementwise; ``exponent`` a node or a number (also ``a ** k`` on nodes).

    >>> import graphc as gc
    >>> g = gc.Graph("power"); a = g.input("a", ("n",)); dy = g.input("dy", ("n",))
    >>> y = gc.power(a, 3, name="y")
    >>> print(gc.explain([y, *gc.grad(y, [a], seed=dy)], forward=True))
    forward:
      y[n] = a[n]**3
    backward:
      da[n] = 3·a[n]**2·dy[n]
    """
    return apply(POW, (a, exponent), name)


def exp(a, name=None):
    """``exp(a)`` elementwise; its derivative reuses the output: ``da = dy·y``.

    >>> import graphc as gc
    >>> g = gc.Graph("exp"); a = g.input("a", ("n",)); dy = g.input("dy", ("n",))
    >>> y = gc.exp(a, name="y")
    >>> print(gc.explain([y, *gc.grad(y, [a], seed=dy)], forward=True))
    forward:
      y[n] = exp(a[n])
    backward:
      da[n] = dy[n]·y[n]
    """
    return apply(EXP, (a,), name)


def log(a, name=None):
    """The natural logarithm elementwise.

    >>> import graphc as gc
    >>> g = gc.Graph("log"); a = g.input("a", ("n",)); dy = g.input("dy", ("n",))
    >>> y = gc.log(a, name="y")
    >>> print(gc.explain([y, *gc.grad(y, [a], seed=dy)], forward=True))
    forward:
      y[n] = log(a[n])
    backward:
      da[n] = dy[n]/a[n]
    """
    return apply(LOG, (a,), name)


def sqrt(a, name=None):
    """The square root elementwise; its derivative is written in the output.

    >>> import graphc as gc
    >>> g = gc.Graph("sqrt"); a = g.input("a", ("n",)); dy = g.input("dy", ("n",))
    >>> y = gc.sqrt(a, name="y")
    >>> print(gc.explain([y, *gc.grad(y, [a], seed=dy)], forward=True))
    forward:
      y[n] = sqrt(a[n])
    backward:
      da[n] = dy[n]/(2·Abs(y[n]))
    """
    return apply(SQRT, (a,), name)


def tanh(a, name=None):
    """``tanh(a)`` elementwise; its derivative 1 - tanh² is written 4·σ(2a)·σ(-2a), exact where 1 - y² rounds to 0.

    >>> import graphc as gc
    >>> g = gc.Graph("tanh"); a = g.input("a", ("n",)); dy = g.input("dy", ("n",))
    >>> y = gc.tanh(a, name="y")
    >>> print(gc.explain([y, *gc.grad(y, [a], seed=dy)], forward=True))
    forward:
      y[n] = tanh(a[n])
    backward:
      da[n] = 4·dy[n]·sigmoid(-2·a[n])·sigmoid(2·a[n])
    """
    return apply(TANH, (a,), name)


def sigmoid(a, name=None):
    """The logistic function ``σ(a) = 1/(1 + exp(-a))`` elementwise, emitted without overflow; σ' = σ(a)·σ(-a).

    >>> import graphc as gc
    >>> g = gc.Graph("sigmoid"); a = g.input("a", ("n",)); dy = g.input("dy", ("n",))
    >>> y = gc.sigmoid(a, name="y")
    >>> print(gc.explain([y, *gc.grad(y, [a], seed=dy)], forward=True))
    forward:
      y[n] = sigmoid(a[n])
    backward:
      da[n] = dy[n]·sigmoid(-a[n])·sigmoid(a[n])
    """
    return apply(SIGMOID, (a,), name)


def relu(a, name=None):
    """``max(a, 0)`` elementwise: ``relu(0) = 0``, with gradient 0 there (the seed's Relu).

    >>> import graphc as gc
    >>> g = gc.Graph("relu"); a = g.input("a", ("n",)); dy = g.input("dy", ("n",))
    >>> y = gc.relu(a, name="y")
    >>> print(gc.explain([y, *gc.grad(y, [a], seed=dy)], forward=True))
    forward:
      y[n] = a[n]·[a[n] > 0]
    backward:
      da[n] = dy[n]·[a[n] > 0]
    """
    return apply(RELU, (a,), name)


def step(a, name=None):
    """``[a > 0]`` elementwise: 1 where positive, else 0; its gradient is 0 everywhere.

    >>> import graphc as gc
    >>> g = gc.Graph("step"); a = g.input("a", ("n",)); dy = g.input("dy", ("n",))
    >>> y = gc.step(a, name="y")
    >>> print(gc.explain([y, *gc.grad(y, [a], seed=dy)], forward=True))
    forward:
      y[n] = [a[n] > 0]
    backward:
      da[n] = 0
    """
    return apply(STEP, (a,), name)


def erf(a, name=None):
    """The error function ``erf(a) = 2/√π·∫₀ᵃ exp(-t²) dt`` elementwise; its derivative
    ``2/√π·exp(-a²)`` comes from sympy.  numpy has no erf: the numpy backend uses scipy's when
    scipy is installed, else ``math.erf`` element by element (exact, but slow on big arrays).

    >>> import graphc as gc, numpy as np
    >>> g = gc.Graph("erf"); a = g.input("a", ("n",))
    >>> float(gc.compile(gc.erf(a))(a=np.array([0.5]))[0])  # doctest: +ELLIPSIS
    0.5204998778...
    """
    return apply(ERF, (a,), name)


def gelu(a, approximate: str = "none", name=None):
    """GELU, ``a·Φ(a)`` (Φ the normal CDF), as torch's ``gelu``: ``approximate="none"`` is exact
    (computed through erfc, accurate in the negative tail), ``"tanh"`` the tanh approximation.

    >>> import graphc as gc, numpy as np
    >>> g = gc.Graph("gelu"); x = g.input("x", ("n",))
    >>> fn = gc.compile([gc.gelu(x), gc.gelu(x, approximate="tanh")])
    >>> [round(float(v[0]), 6) for v in fn(x=np.array([1.0]))]
    [0.841345, 0.841192]
    """
    if approximate not in ("none", "tanh"):
        raise GraphError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return apply(GELU if approximate == "none" else GELU_TANH, (a,), name)


def maximum(a, b, name=None):
    """The larger of ``a`` and ``b`` elementwise; at a tie each side gets half the gradient (torch's rule).

    >>> import graphc as gc
    >>> g = gc.Graph("m"); x = g.input("x", (3,))
    >>> leaky = gc.maximum(x, 0.3 * x)
    """
    return apply(MAXIMUM, (a, b), name)


def minimum(a, b, name=None):
    """The smaller of ``a`` and ``b`` elementwise; at a tie each side gets half the gradient (torch's rule).

    >>> import graphc as gc
    >>> g = gc.Graph("minimum"); a = g.input("a", ("n",)); b = g.input("b", ("n",))
    >>> y = gc.minimum(a, b, name="y")
    >>> print(gc.explain([y, *gc.grad(y, [a, b], seed=g.input("dy", ("n",)))], forward=True))
    forward:
      y[n] = (a[n] if a[n] <= b[n] else b[n])
    backward:
      da[n] = (dy[n] if a[n] < b[n] else dy[n]/2 if a[n] = b[n] else 0)
      db[n] = (dy[n] if a[n] > b[n] else dy[n]/2 if a[n] = b[n] else 0)
    """
    return apply(MINIMUM, (a, b), name)


def copy(a, n: int = 2) -> tuple:
    """The seed's Copy node: a tuple of ``n`` uses of ``a`` whose gradients add up.

    No node is made: each use is ``a`` itself, since graphc already adds up the adjoints
    of every use of a node.  ``n`` is an integer ≥ 1; ``a`` a float node.

    >>> import graphc as gc
    >>> g = gc.Graph("copy"); a = g.input("a", ("n",))
    >>> a1, a2 = gc.copy(a)
    >>> a1 is a2 is a
    True
    >>> print(gc.explain(gc.grad(gc.sum(a1 * a2), [a])))
    backward:
      da[n] = 2·a[n]
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise GraphError(f"copy: n is the number of uses, an integer ≥ 1; got {n!r}")
    return (apply(COPY, (a,)),) * n  # apply checks ``a`` and folds the identity away
