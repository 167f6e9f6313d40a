"""Index sums with affine axes: convolutions, pooling windows, shifted and strided reads,
and their adjoints, the scatter-adds.

    out[T_0(I)] += Π_k A_k[T_k(I)]      for every assignment I of the indices in their ranges

Each ``T`` is one :class:`Term` per axis, an affine expression ``s·i + d·p + c`` of index
letters (stride, dilation, offset).  With plain terms (one letter, coefficient 1, the whole
axis) this is an einsum, and :func:`affine_sum` returns an ordinary contraction.  Every
access is in range for every assignment, checked when the node is declared; padding is an
explicit :func:`graphc.ops.windows.pad` node, so nothing reads outside an array.

The derivative rule is the same index calculus as a contraction's: ∂out[T_0(I)]/∂A_j[T_j(I)]
is the product of the other operands, so the adjoint of ``A_j`` swaps its terms with the
output's, ``dA_j[T_j(I)] += dout[T_0(I)]·Π_{k≠j} A_k[T_k(I)]``.  When ``T_j`` is not plain
this is a scatter-add, the form that is always correct; :meth:`IndexSum.expression` prints it
solved for the output's indices (the gather form, ``dX[n,c,u,v] = Σ dY[n,o,u-p,v-q]·W[o,c,p,q]``
with its bounds) wherever one letter of each affine term can be solved for.

Users write such sums in the notation of the math with :func:`index_sum`::

    y = gc.index_sum("y[n,o,i,j] = x[n,c,i+p,j+q] * W[o,c,p,q]", x=x, W=W)
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Mapping, Sequence

from graphc.errors import GraphError, ShapeError, SpecError
from graphc.ops.contraction import Spec, contraction
from graphc.ops.indices import LETTERS, check_shape, format_shape
from graphc.ops.leaves import Constant, Zeros, zeros
from graphc.ops.node import Node, Op, as_node, same_graph
from graphc.ops.registry import saved_as
from graphc.ops.symbolic import indexed, sympy_module

#: The longest index_sum text accepted (parsing is bounded in time and memory).
MAX_TEXT = 2000
#: Letters a solved (gather-form) output axis is written with, in order of preference.
SOLVED = "uvwxyzrstklm" + LETTERS


# -- affine terms ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Term:
    """One axis of an access: ``Σ coefficient·letter + const`` (coefficients non-zero ints,
    letters in the order written)."""

    coeffs: tuple  # ((letter, coefficient), ...)
    const: int = 0

    @staticmethod
    def of(letter: str) -> "Term":
        return Term(((letter, 1),), 0)

    @property
    def plain(self) -> str | None:
        """The letter, when the term is just one letter."""
        if self.const == 0 and len(self.coeffs) == 1 and self.coeffs[0][1] == 1:
            return self.coeffs[0][0]
        return None

    @property
    def letters(self) -> tuple:
        return tuple(c for c, _ in self.coeffs)

    def coefficient(self, letter: str) -> int:
        return dict(self.coeffs).get(letter, 0)

    def bounds(self, ranges: Mapping) -> tuple:
        """The smallest and largest value over ``ranges`` (int ranges ≥ 1)."""
        lo = hi = self.const
        for c, a in self.coeffs:
            span = a * (ranges[c] - 1)
            lo, hi = lo + min(0, span), hi + max(0, span)
        return lo, hi

    def canonical(self) -> tuple:
        return tuple(sorted(self.coeffs)), self.const

    def renamed(self, mapping: Mapping) -> "Term":
        return Term(tuple((mapping.get(c, c), a) for c, a in self.coeffs), self.const)

    def __str__(self) -> str:
        return linear_text(list(self.coeffs), self.const)


def linear_text(coeffs: list, const, den: int = 1) -> str:
    """``2i+p-1`` for ``[(i, 2), (p, 1)], -1``; ``(u-p)/2`` with ``den=2``."""
    out = ""
    for letter, a in coeffs:
        if a == 0:
            continue
        sign = "-" if a < 0 else ("+" if out else "")
        out += sign + ("" if abs(a) == 1 else str(abs(a))) + letter
    if const or not out:
        out += (f"+{const}" if const > 0 and out else str(const))
    return f"({out})/{den}" if den != 1 else out


_TERM = re.compile(r"\s*([+-]?)\s*(\d*)\s*\*?\s*([A-Za-z]?)\s*")


def parse_term(text: str) -> Term:
    """The inverse of ``str(Term)`` (graph files): ``2i+p-1``."""
    if not isinstance(text, str) or not text or len(text) > 200:
        raise SpecError(f"index term {text!r} is not of the form 2i+p-1")
    coeffs, const, pos = {}, 0, 0
    while pos < len(text):
        m = _TERM.match(text, pos)
        if not m or m.end() == pos or not (m.group(2) or m.group(3)):
            raise SpecError(f"index term {text!r} is not of the form 2i+p-1")
        sign = -1 if m.group(1) == "-" else 1
        if pos and not m.group(1):
            raise SpecError(f"index term {text!r} is not of the form 2i+p-1")
        number = int(m.group(2)) if m.group(2) else 1
        if m.group(3):
            coeffs[m.group(3)] = coeffs.get(m.group(3), 0) + sign * number
        else:
            const += sign * number
        pos = m.end()
    return Term(tuple((c, a) for c, a in coeffs.items() if a), const)


# -- the op ----------------------------------------------------------------------------------
@saved_as("index_sum")
class IndexSum(Op):
    """``out[T_0(I)] += Π_k A_k[T_k(I)]`` over the index ranges (see the module docstring)."""

    file_fields = frozenset({"terms", "out", "ranges", "label"})

    def __init__(self, terms: tuple, out: tuple, ranges: tuple, label: str = "index_sum"):
        self.terms = terms  # per operand, one Term per axis
        self.out = out  # one Term per output axis
        self.ranges = ranges  # ((letter, dim), ...)
        self.kind_name = label

    @property
    def sizes(self) -> dict:
        return dict(self.ranges)

    def key(self):
        order: dict = {}
        for t in [*(t for ts in self.terms for t in ts), *self.out]:
            for c in t.letters:
                order.setdefault(c, LETTERS[len(order)])
        canon = lambda ts: tuple(t.renamed(order).canonical() for t in ts)  # noqa: E731
        return ("index_sum", tuple(canon(ts) for ts in self.terms), canon(self.out),
                tuple(sorted((order[c], d) for c, d in self.ranges if c in order)))

    def describe(self):
        return f"{self.kind_name} {self.text()}"

    def text(self, names: Sequence[str] | None = None) -> str:
        names = names or [f"A{k}" for k in range(len(self.terms))]
        body = " * ".join(f"{n}[{','.join(map(str, ts))}]" if ts else n for n, ts in zip(names, self.terms))
        return f"[{','.join(map(str, self.out))}] += {body}"

    @property
    def is_scatter(self) -> bool:
        return any(t.plain is None for t in self.out) or len({t.plain for t in self.out}) != len(self.out)

    def vjp(self, node: Node, g: Node, wanted):
        grads = []
        for j, want in enumerate(wanted):
            if not want:
                grads.append(None)
                continue
            others = [k for k in range(len(node.inputs)) if k != j]
            adj = affine_sum([self.out] + [self.terms[k] for k in others], [g] + [node.inputs[k] for k in others],
                             self.terms[j], node.inputs[j].shape, self.sizes, op_name=f"the adjoint of {node.name!r}")
            node.graph.set_origin(adj, node, j)
            grads.append(adj)
        return grads

    def jvp(self, node: Node, tangents):
        """Linear in each operand: the same sum with one operand replaced by its tangent, summed."""
        parts = [affine_sum(self.terms, [t if k == j else x for k, x in enumerate(node.inputs)], self.out,
                            node.shape, self.sizes, op_name=f"the tangent of {node.name!r}")
                 for j, t in enumerate(tangents) if t is not None]
        total = parts[0] if parts else None
        for part in parts[1:]:
            total = total + part
        return total

    # -- printing: the gather form where it can be solved for ---------------------------------
    def solved(self, node: Node):
        """``(letters, substitution, conditions)``: the output written with one letter per axis,
        each summed letter that an output term fixes replaced by its solution, and the bounds
        the solution must meet; None when some affine output term cannot be solved."""
        used = {c for ts in self.terms for t in ts for c in t.letters} | {c for t in self.out for c in t.letters}
        letters, subst, conditions, fresh = "", {}, [], iter(c for c in SOLVED if c not in used)
        out_letters = [t.plain for t in self.out]
        for k, t in enumerate(self.out):
            if t.plain is not None and out_letters.count(t.plain) == 1 and t.plain not in subst:
                letters += t.plain
                continue
            u = next(fresh)
            letters += u
            elsewhere = {c for m, o in enumerate(self.out) if m != k for c in o.letters}
            candidates = [(c, a) for c, a in t.coeffs if c not in elsewhere and c not in subst]
            if not candidates:
                return None
            # solve for the letter with the largest range: i in 2i+p, leaving the window letter summed
            sizes = self.sizes
            c, a = max(candidates, key=lambda ca: (abs(ca[1]) == 1, sizes[ca[0]] if isinstance(sizes[ca[0]], int)
                                                   else math.inf))
            # c = (u - Σ_{others} b·l - const) / a
            subst[c] = ([(u, 1)] + [(l, -b) for l, b in t.coeffs if l != c], -t.const, a)
            conditions.append((_substituted(Term.of(c), subst), a, sizes[c]))
        return letters, subst, conditions

    def index_letters(self, node):
        if not self.is_scatter:
            return "".join(t.plain for t in self.out)
        solved = self.solved(node)
        return solved[0] if solved else super().index_letters(node)

    def expression(self, node, name_of):
        sp = sympy_module()
        solved = self.solved(node) if self.is_scatter else ("".join(t.plain for t in self.out), {}, [])
        sizes = self.sizes
        if solved is None:  # the scatter form, written with one δ per output axis
            letters = super().index_letters(node)
            factors = [self._indexed(name_of(o), ts, {}) for o, ts in zip(node.inputs, self.terms)]
            factors += [sp.KroneckerDelta(sp.Idx(u), _idx(str(t))) for u, t in zip(letters, self.out)]
            summed = [c for c in sizes if c not in letters]
        else:
            letters, subst, _ = solved
            factors = [self._indexed(name_of(o), ts, subst) if not isinstance(o.op, Constant)
                       else sp.Float(o.op.value) for o, ts in zip(node.inputs, self.terms)]
            summed = [c for c in sizes if c not in letters and c not in subst]
        body = sp.Mul(*factors, evaluate=False) if len(factors) > 1 else factors[0]
        if not summed:
            return body
        limits = [(sp.Idx(c), 0, sp.Symbol(str(sizes[c])) - 1 if isinstance(sizes[c], str) else sizes[c] - 1)
                  for c in summed]
        return sp.Sum(body, *limits)

    @staticmethod
    def _indexed(name: str, terms: tuple, subst: dict):
        if not terms:
            return sympy_module().Symbol(name)
        if all(t.plain is not None and t.plain not in subst for t in terms):
            return indexed(name, "".join(t.plain for t in terms))
        return sympy_module().IndexedBase(name)[tuple(_idx(_substituted(t, subst)) for t in terms)]

    def conditions(self, node) -> str | None:
        """The bounds of the gather form: ``0 ≤ u-p < 24`` for each solved letter."""
        if not self.is_scatter:
            return None
        solved = self.solved(node)
        if not solved:
            return None
        parts = []
        for text, a, size in solved[2]:
            parts.append(f"0 ≤ {text} < {size}")
            if abs(a) != 1:
                parts.append(f"{abs(a)} | {text[1:text.rindex(')')]}")
        return ", ".join(parts)

    def matrix_form(self, node, name_of) -> str | None:
        """The im2col form of a convolution and its gradients: ``im2col(x)·Wᵀ``, ``dYᵀ·im2col(x)``,
        ``col2im(dY·W)``."""
        if len(node.inputs) != 2 or any(isinstance(i.op, Constant) for i in node.inputs):
            return None
        plain = [all(t.plain for t in ts) for ts in self.terms]
        names = [name_of(i) for i in node.inputs]
        if self.is_scatter and all(plain):
            shared = {c for t in self.terms[0] for c in t.letters} & {c for t in self.terms[1] for c in t.letters}
            written = {c for t in self.out for c in t.letters}
            return f"col2im({names[0]}·{names[1]})" if shared - written else None
        if self.is_scatter or plain.count(False) != 1:
            return None
        k = plain.index(False)
        image, other = names[k], names[1 - k]
        other_letters = {c for t in self.terms[1 - k] for c in t.letters}
        # position letters: the largest-range letter of each affine term (i in i+p)
        sizes = self.sizes
        positions = {max(t.letters, key=lambda c: sizes[c]) for t in self.terms[k] if t.plain is None}
        out_letters = {t.plain for t in self.out}
        if positions <= out_letters and not positions & other_letters:  # the forward: rows (n,i,j)
            return f"im2col({image})·{other}ᵀ"
        if positions <= other_letters and not positions & out_letters:  # the kernel's gradient
            return f"{other}ᵀ·im2col({image})"
        return None

    def adjoint_steps(self, adj: Node, forward_lhs: str) -> list[str] | None:
        """∂L/∂X by the chain rule, one δ per axis of X, then the δs of affine axes solved."""
        fwd, j = adj.origin
        if not isinstance(adj.op, IndexSum) or j >= len(self.terms):
            return None
        target = fwd.inputs[j]
        used = {c for ts in self.terms for t in ts for c in t.letters} | {c for t in self.out for c in t.letters}
        free = [c for c in "abcdefgh" + SOLVED if c not in used][:target.ndim]
        out_text = ",".join(map(str, self.out))
        g = adj.inputs[0]
        lhs = f"∂L/∂{target.name}[{','.join(free)}]"
        out_letters = [c for t in self.out for c in t.letters]
        chain = f"Σ_{{{','.join(dict.fromkeys(out_letters))}}} ∂L/∂{fwd.name}[{out_text}]·" \
                f"∂{fwd.name}[{out_text}]/∂{target.name}[{','.join(free)}]"
        factors = [f"{g.name}[{out_text}]"]
        factors += [f"{o.name}[{','.join(map(str, ts))}]" if ts else o.name
                    for m, (o, ts) in enumerate(zip(fwd.inputs, self.terms)) if m != j]
        factors += [f"δ[{a},{t}]" for a, t in zip(free, self.terms[j])]
        summed = ",".join(self.sizes)
        return [f"{lhs} = {chain}", " " * len(lhs) + f" = Σ_{{{summed}}} " + "·".join(factors)]

    # -- graph files -------------------------------------------------------------------------
    def fields(self, codec):
        return {"terms": [[str(t) for t in ts] for ts in self.terms], "out": [str(t) for t in self.out],
                "ranges": {c: d for c, d in self.ranges}, "label": self.kind_name}

    @classmethod
    def load(cls, graph, e, inputs, shape, name, codec):
        try:
            terms = [[parse_term(codec.str(t, "term")) for t in codec.list(ts, "terms")]
                     for ts in codec.list(e["terms"], "terms")]
            out = [parse_term(codec.str(t, "term")) for t in codec.list(e["out"], "out")]
        except SpecError as err:
            raise codec.error(str(err)) from None
        ranges = e["ranges"]
        if not isinstance(ranges, dict) or any(c not in LETTERS or len(c) != 1 for c in ranges):
            raise codec.error("ranges must map index letters to dims")
        label = codec.str(e["label"], "label")
        if not label.isidentifier():
            raise codec.error(f"label {label!r} is not an identifier")
        node = affine_sum(terms, inputs, out, shape, {c: codec.dim(d, "range") for c, d in ranges.items()},
                          name=name, label=label, exact=True)
        return node


def _idx(text: str):
    sp = sympy_module()
    return sp.Idx(text) if len(text) == 1 else sp.Idx(sp.Symbol(text, integer=True))


def _substituted(term: Term, subst: dict) -> str:
    """``term`` with each solved letter replaced by its solution, as text."""
    coeffs: dict = {}
    const = Fraction(term.const)
    for c, a in term.coeffs:
        if c in subst:
            num, k, den = subst[c]
            for l, b in num:
                coeffs[l] = coeffs.get(l, 0) + Fraction(a * b, den)
            const += Fraction(a * k, den)
        else:
            coeffs[c] = coeffs.get(c, 0) + a
    den = math.lcm(*(f.denominator for f in [*coeffs.values(), const] if isinstance(f, Fraction)), 1)
    items = [(l, int(f * den)) for l, f in coeffs.items() if f]
    return linear_text(items, int(const * den), den)


# -- declaring -------------------------------------------------------------------------------
def affine_sum(terms: Sequence, operands: Sequence[Node], out: Sequence, shape=None, sizes: Mapping | None = None,
               name: str | None = None, label: str = "index_sum", op_name: str | None = None,
               exact: bool = False) -> Node:
    """The node ``out[T_0] += Π_k operands[k][T_k]`` (terms as :class:`Term` tuples), checked:
    ranges inferred from the operands where ``sizes`` does not give them, every access in
    range.  ``shape`` is the output's (needed when an output term is not plain).  A sum with
    plain terms only is returned as an einsum contraction (unless ``exact``, for files)."""
    op_name = op_name or label
    operands = list(operands)
    graph = same_graph(op_name, operands)
    terms = [tuple(ts) for ts in terms]
    out = tuple(out)
    if len(terms) != len(operands):
        raise SpecError(f"{op_name}: {len(terms)} access(es) for {len(operands)} operand(s)")
    for node, ts in zip(operands, terms):
        if node.kind != "float":
            raise SpecError(f"{op_name}: operand {node.name!r} holds {node.kind} values; index sums take floats")
        if len(ts) != node.ndim:
            raise ShapeError(f"{op_name}: {node.name!r} has shape {format_shape(node.shape)}, rank {node.ndim}, "
                             f"but is indexed [{','.join(map(str, ts))}]")
    ranges = infer_ranges(op_name, terms, operands, out, shape, sizes or {})
    if shape is None:
        if any(t.plain is None for t in out):
            raise ShapeError(f"{op_name}: output [{','.join(map(str, out))}] is not plain letters; give its shape")
        shape = tuple(ranges[t.plain] for t in out)
    shape = check_shape(shape, op_name)
    if len(shape) != len(out):
        raise ShapeError(f"{op_name}: the output [{','.join(map(str, out))}] has {len(out)} axes but shape "
                         f"{format_shape(shape)}")
    for where, node_shape, ts in [*((f"operand {n.name!r}", n.shape, ts) for n, ts in zip(operands, terms)),
                                  ("the output", shape, out)]:
        check_access(op_name, where, node_shape, ts, ranges)
    if any(isinstance(n.op, Zeros) for n in operands) or any(r == 0 for r in ranges.values()):
        return zeros(graph, shape)
    letters = [c for ts in [*terms, out] for t in ts for c in t.letters]
    ordered = tuple((c, ranges[c]) for c in dict.fromkeys(letters))
    if not exact and _is_plain(terms, operands, out, shape, ranges):
        spec = Spec(tuple("".join(t.plain for t in ts) for ts in terms), "".join(t.plain for t in out))
        return contraction(spec, operands, name=name, sizes=ranges, op_name=op_name, label=label)
    return Node(graph, IndexSum(tuple(terms), out, ordered, label), operands, shape, "float", name)


def _is_plain(terms, operands, out, shape, ranges) -> bool:
    """Whether the sum is an einsum: plain letters only, each over its whole axis, the output's distinct."""
    outs = [t.plain for t in out]
    if None in outs or len(set(outs)) != len(outs) or any(ranges[c] != d for c, d in zip(outs, shape)):
        return False
    return all(t.plain is not None and ranges[t.plain] == d for n, ts in zip(operands, terms)
               for t, d in zip(ts, n.shape))


def infer_ranges(op_name: str, terms, operands, out, shape, given: Mapping) -> dict:
    """Each letter's range: given, else the dim of an axis it indexes plainly, else the most
    that keeps an affine access in range (``i`` in ``x[i+p]``: ``H - P + 1``)."""
    ranges: dict = {}
    for c, d in given.items():
        if not isinstance(c, str) or c not in LETTERS or len(c) != 1:
            raise SpecError(f"{op_name}: {c!r} is not an index letter")
        ranges[c] = check_shape((d,), f"{op_name}: the range of {c!r}")[0]
    accesses = [(n.name, n.shape, ts) for n, ts in zip(operands, terms)]
    if shape is not None:
        accesses.append(("the output", tuple(shape), tuple(out)))
    for who, dims, ts in accesses:
        for t, d in zip(ts, dims):
            c = t.plain
            if c is None:
                continue
            if c in ranges and ranges[c] != d and c not in given:
                raise ShapeError(f"{op_name}: index {c!r} is {ranges[c]!r} in one access but {d!r} in {who} "
                                 f"{format_shape(dims)}")
            ranges.setdefault(c, d)
    progress = True
    while progress:
        progress = False
        for who, dims, ts in accesses:
            for t, d in zip(ts, dims):
                unknown = [(c, a) for c, a in t.coeffs if c not in ranges]
                if len(unknown) != 1 or not isinstance(d, int):
                    continue
                if any(not isinstance(ranges[c], int) for c in t.letters if c in ranges):
                    continue
                c, a = unknown[0]
                known = Term(tuple((l, b) for l, b in t.coeffs if l != c), t.const)
                lo, hi = known.bounds(ranges)
                if lo < 0 or hi > d - 1:
                    reach = hi if hi > d - 1 else lo
                    raise ShapeError(f"{op_name}: {who} of shape {format_shape(dims)} is indexed by {t}, which "
                                     f"reaches {reach} for {c}=0: the window is larger than the axis ({d})")
                # the most values that keep the term within 0..d-1: up from hi, or down from lo (a < 0)
                ranges[c] = (d - 1 - hi) // a + 1 if a > 0 else lo // -a + 1
                progress = True
    for who, dims, ts in accesses:
        for t in ts:
            for c in t.letters:
                if c not in ranges:
                    raise ShapeError(f"{op_name}: the range of index {c!r} cannot be inferred from {who} "
                                     f"[{','.join(map(str, ts))}]; give it with sizes={{{c!r}: ...}}")
    for t in out:
        for c in t.letters:
            if c not in ranges:
                raise ShapeError(f"{op_name}: output index {c!r} appears in no operand; give its range with "
                                 f"sizes={{{c!r}: ...}}")
    return ranges


def check_access(op_name: str, who: str, dims, ts, ranges) -> None:
    """Every value of every term within its axis; a symbolic range only on whole axes."""
    for axis, (t, d) in enumerate(zip(ts, dims)):
        symbolic = [c for c in t.letters if not isinstance(ranges[c], int)]
        if symbolic or not isinstance(d, int):
            if t.plain is None or ranges[t.plain] != d:
                raise ShapeError(f"{op_name}: axis {axis} of {who} {format_shape(dims)} is indexed by {t}; an index "
                                 "of symbolic size can only run over a whole axis of the same dim")
            continue
        if any(ranges[c] == 0 for c in t.letters):
            continue
        lo, hi = t.bounds(ranges)
        if lo < 0 or hi > d - 1:
            rng = ", ".join(f"{c} < {ranges[c]}" for c in t.letters)
            raise ShapeError(f"{op_name}: axis {axis} of {who} {format_shape(dims)} is indexed by {t}, which runs "
                             f"from {lo} to {hi} ({rng}) outside 0..{d - 1}")


# -- the notation users write ------------------------------------------------------------------
def index_sum(text: str, name: str | None = None, shape=None, sizes: Mapping | None = None, **operands) -> Node:
    """A sum of products with affine indices, written as the math is:
    ``"y[n,o,i,j] = x[n,c,i+p,j+q] * W[o,c,p,q]"``.

    Letters missing from the left side are summed (Einstein's convention).  An axis may be
    indexed by ``s*i + d*p + c`` (integers s, d, c): strides, dilations and offsets.  Each
    letter's range comes from an axis it indexes plainly, else the most that keeps every
    access in range (``i`` above runs over ``H - P + 1`` values), else ``sizes``.  Every
    access is checked to be in range when the node is declared.  The left side may be
    affine too (a scatter-add), given the output's ``shape``.  Names on the right are
    the keyword arguments; numbers multiply.

    >>> import graphc as gc
    >>> g = gc.Graph("conv"); x = g.input("x", ("n", 1, 6, 6)); W = g.param("W", (2, 1, 3, 3))
    >>> y = gc.index_sum("y[n,o,i,j] = x[n,c,i+p,j+q] * W[o,c,p,q]", x=x, W=W)
    >>> y.shape
    ('n', 2, 4, 4)
    >>> print(gc.explain(y))
    forward:
      y[n,o,i,j] = Σ_{c,p,q} x[n,c,i+p,j+q]·W[o,c,p,q]    (y = im2col(x)·Wᵀ)
    """
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise SpecError(f"index_sum: the expression must be a string of at most {MAX_TEXT} characters")
    try:
        tree = ast.parse(text.replace("·", "*").replace("−", "-"), mode="exec")
    except SyntaxError:
        raise SpecError(f"index_sum {text!r}: not of the form 'y[i,j] = x[i,k] * w[k,j]'") from None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assign) or len(tree.body[0].targets) != 1:
        raise SpecError(f"index_sum {text!r}: write one assignment, 'y[i,j] = x[i,k] * w[k,j]'")
    assign = tree.body[0]
    lhs_name, out = _access(text, assign.targets[0])
    factors = _factors(text, assign.value)
    nodes, terms, scale = [], [], 1.0
    for f in factors:
        if isinstance(f, float):
            scale *= f
            continue
        ref, ts = f
        if ref not in operands:
            raise SpecError(f"index_sum {text!r}: {ref!r} is not given; pass it as {ref}=node")
        nodes.append(operands[ref])
        terms.append(ts)
    unused = set(operands) - {f[0] for f in factors if not isinstance(f, float)}
    if unused:
        raise SpecError(f"index_sum {text!r}: operand(s) {', '.join(sorted(unused))} do not appear in it")
    if not nodes:
        raise SpecError(f"index_sum {text!r}: no operand on the right side")
    graph = same_graph(f"index_sum {text!r}", [n for n in nodes if isinstance(n, Node)] or nodes)
    nodes = [as_node(n, graph, f"index_sum {text!r}") for n in nodes]
    if scale != 1.0:
        nodes.append(graph.constant(scale))
        terms.append(())
    return affine_sum(terms, nodes, out, shape, sizes, name=name or lhs_name, op_name=f"index_sum {text!r}")


def _access(text: str, node) -> tuple:
    if not isinstance(node, ast.Subscript) or not isinstance(node.value, ast.Name):
        raise SpecError(f"index_sum {text!r}: expected name[indices], got {ast.unparse(node)!r}")
    items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
    return node.value.id, tuple(_term(text, e) for e in items)


def _factors(text: str, node) -> list:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        return _factors(text, node.left) + _factors(text, node.right)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return [float(node.value)]
    if isinstance(node, ast.Name):
        return [(node.id, ())]
    if isinstance(node, ast.Subscript):
        return [_access(text, node)]
    raise SpecError(f"index_sum {text!r}: the right side must be a product of name[indices] and numbers, "
                    f"not {ast.unparse(node)!r}")


def _term(text: str, node) -> Term:
    coeffs: dict = {}
    const = 0

    def walk(n, sign):
        nonlocal const
        if isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Add, ast.Sub)):
            walk(n.left, sign)
            walk(n.right, sign if isinstance(n.op, ast.Add) else -sign)
        elif isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            walk(n.operand, -sign)
        elif isinstance(n, ast.Constant) and type(n.value) is int:
            const += sign * n.value
        elif isinstance(n, ast.Name):
            add(n.id, sign)
        elif isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mult):
            a, b = (n.left, n.right) if isinstance(n.left, ast.Constant) else (n.right, n.left)
            if not (isinstance(a, ast.Constant) and type(a.value) is int and isinstance(b, ast.Name)):
                raise SpecError(f"index_sum {text!r}: {ast.unparse(n)!r} is not an integer times an index")
            add(b.id, sign * a.value)
        else:
            raise SpecError(f"index_sum {text!r}: index {ast.unparse(n)!r} is not affine (s*i + d*p + c)")

    def add(letter, a):
        if len(letter) != 1 or letter not in LETTERS:
            raise SpecError(f"index_sum {text!r}: {letter!r} is not an index letter (use a single letter a-z, A-Z)")
        coeffs[letter] = coeffs.get(letter, 0) + a

    walk(node, 1)
    return Term(tuple((c, a) for c, a in coeffs.items() if a), const)


