"""The array-API lowering of index sums with affine axes, windows, padding and reshapes.

No array library's API has strided views or scatter-adds in common, but every one has
einsum through opt_einsum, so an affine axis becomes a plain letter contracted with a
constant 0/1 *selection* tensor, ``S[i,p,u] = 1 if u = s·i + d·p + c``: a read
``x[n,c,i+p,j+q]`` is ``Σ_{u,v} x[n,c,u,v]·S[i,p,u]·S[j,q,v]``, and a write through affine
output terms (an adjoint) is the same contraction with ``u, v`` as output letters.  The
selections are made once per shape (``rt.selection``).  A product with 0 is 0 only for
finite values, so max pooling maps −∞ (its padding) to the dtype's lowest finite value
before gathering its windows and back after.
"""

from __future__ import annotations

from graphc.compiler.codegen.program import Kernel
from graphc.ops.affine import IndexSum
from graphc.ops.indices import LETTERS
from graphc.ops.leaves import Constant
from graphc.ops.registry import lowering
from graphc.ops.windows import FirstMaxMask, Pad, Reshape, WindowMax

BACKEND = "array_api"


class _Einsum:
    """One contraction being written: operand letters, argument code and shapes."""

    def __init__(self, used: set):
        self.fresh = iter(c for c in LETTERS if c not in used)
        self.terms, self.args, self.shapes = [], [], []

    def operand(self, code: str, shape, terms, sizes) -> None:
        letters = ""
        for t, d in zip(terms, shape):
            if t.plain is not None and sizes[t.plain] == d:
                letters += t.plain
            else:
                letters += self.select(t, d, sizes)
        self.terms.append(letters)
        self.args.append(code)
        self.shapes.append(tuple(shape))

    def select(self, t, d, sizes) -> str:
        """A fresh letter ``u`` for an axis of ``d`` entries, tied to the term ``t`` by a selection."""
        u = next(self.fresh)
        ranges = tuple(int(sizes[c]) for c in t.letters)
        self.terms.append("".join(t.letters) + u)
        self.args.append(f"rt.selection(xp, dtype, {ranges!r}, {tuple(a for _, a in t.coeffs)!r}, {t.const}, {d})")
        self.shapes.append(ranges + (d,))
        return u

    def call(self, L, out: str) -> str:
        L.kernels.append(Kernel(",".join(self.terms) + "->" + out, self.shapes))
        return f"k{len(L.kernels) - 1}({', '.join(self.args)})"


@lowering(BACKEND, IndexSum)
def _index_sum(node, L):
    op, sizes = node.op, node.op.sizes
    e = _Einsum({c for t in [*(t for ts in op.terms for t in ts), *op.out] for c in t.letters})
    scale = 1.0
    for o, ts in zip(node.inputs, op.terms):
        if isinstance(o.op, Constant):
            scale *= o.op.value
        else:
            e.operand(L.var(o), o.shape, ts, sizes)
    present = set("".join(e.terms))
    plain = [t.plain for t in op.out]
    out = ""
    for t, d in zip(op.out, node.shape):
        if t.plain is not None and plain.count(t.plain) == 1 and sizes[t.plain] == d and t.plain in present:
            out += t.plain
        else:
            out += e.select(t, d, sizes)
    if not e.args:
        e.args.append("xp.asarray(1.0, dtype=dtype)")
        e.terms.append("")
        e.shapes.append(())
    rhs = e.call(L, out)
    return f"({rhs}) * {scale!r}" if scale != 1.0 else rhs


def _windows(node, L, order: str) -> str:
    """The windows of a window op's operand with axes ``order``, −∞ kept finite."""
    op = node.op
    x = node.inputs[0]
    e = _Einsum(set(op.out + op.window))
    e.operand(f"rt.finite_lowest(xp, {L.var(x)})", x.shape, op.terms, op.sizes)
    return e.call(L, order)


@lowering(BACKEND, WindowMax)
def _window_max(node, L):
    axes = tuple(range(len(node.op.out), len(node.op.out) + len(node.op.window)))
    return f"rt.infinite_lowest(xp, xp.max({_windows(node, L, node.op.out + node.op.window)}, axis={axes}))"


@lowering(BACKEND, FirstMaxMask)
def _first_max_mask(node, L):
    return f"rt.first_max_mask(xp, {_windows(node, L, node.op.window + node.op.out)}, {len(node.op.window)}, dtype)"


def _number(value: float) -> str:
    """A float as code (``float('-inf')``: ``repr`` gives ``-inf``, which is no Python literal)."""
    return repr(value) if value == value and abs(value) != float("inf") else f"float('{value}')"


@lowering(BACKEND, Pad)
def _pad(node, L):
    return f"rt.pad(xp, {L.var(node.inputs[0])}, {node.op.widths!r}, {_number(node.op.value)})"


@lowering(BACKEND, Reshape)
def _reshape(node, L):
    L.may_share(node)
    return f"xp.reshape({L.var(node.inputs[0])}, {L.shape_code(node.shape)})"
