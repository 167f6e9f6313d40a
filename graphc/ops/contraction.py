"""Contractions: every product-and-sum of tensors, written as an einsum spec.

``out[O] = Σ_{letters not in O} Π_k A_k[I_k]``.  Matmul, transpose, trace,
diagonal, outer products, batched products and sums over axes are all of this
form.  Internally one generalisation is allowed that user specs may not use: an
output letter absent from every operand, which broadcasts (it appears in the
adjoint of an index that was summed out, the seed's ``B = 1·b``).  Repeated
output letters are never needed: the adjoint of ``ii->i`` carries an explicit
Kronecker-delta operand instead.

The derivative rule is the seed's index calculus: ∂out[O]/∂A_j[P] is the product
of the other operands with one δ per index of A_j; contracting the δs renames
indices, which amounts to swapping the output term with operand j's term.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from graphc.errors import GraphError, ShapeError, SpecError
from graphc.ops.indices import DERIVATIVE, LETTERS, check_shape, fresh_letter, format_shape, letters_for
from graphc.ops.leaves import Delta, Zeros, constant, delta, operand_symbol, zeros
from graphc.ops.node import Node, Op, as_node, kept_axes, same_graph
from graphc.ops.registry import saved_as
from graphc.ops.symbolic import sympy_module


@dataclass(frozen=True)
class Spec:
    """A parsed einsum spec: one index string per operand and one for the output."""

    inputs: tuple
    output: str

    def __str__(self) -> str:
        return ",".join(self.inputs) + "->" + self.output

    @property
    def letters(self) -> set:
        return set("".join(self.inputs)) | set(self.output)

    @property
    def summed(self) -> str:
        """Letters contracted away, in order of first appearance."""
        seen = []
        for ch in "".join(self.inputs):
            if ch not in self.output and ch not in seen:
                seen.append(ch)
        return "".join(seen)

    def canonical(self) -> str:
        """The spec with letters renamed by first appearance: equal for equal contractions."""
        mapping: dict = {}
        for ch in "".join(self.inputs) + self.output:
            mapping.setdefault(ch, LETTERS[len(mapping)])
        return str(Spec(tuple("".join(mapping[c] for c in t) for t in self.inputs), "".join(mapping[c] for c in self.output)))


def expand_ellipsis(spec: str, shapes: Sequence, op_name: str = "einsum") -> str:
    """``spec`` with each ``...`` replaced by explicit letters, numpy's way, for operands of
    ``shapes``: an operand's ``...`` stands for the axes its letters do not name; these line
    up from the right across operands (an operand with fewer of them lacks the leading ones,
    and dims must then agree exactly, as everywhere in graphc).  The output's ``...`` (first,
    in implicit mode) takes all of them; an explicit output must keep them, as numpy requires."""
    text = spec.replace(" ", "")
    lhs, arrow, rhs = text.partition("->")
    terms = lhs.split(",")
    for term in terms + ([rhs] if arrow else []):
        if term.count("...") > 1 or term.replace("...", "").count("."):
            raise SpecError(f"{op_name}: spec {spec!r}: write an ellipsis as one '...' per operand or output")
    if "..." not in text:
        return text
    if len(terms) != len(shapes):
        raise SpecError(f"{op_name}: spec {spec!r} names {len(terms)} operand(s) but {len(shapes)} were given")
    used = set(text) & set(LETTERS)
    spans = []
    for k, (term, shape) in enumerate(zip(terms, shapes)):
        named = len(term.replace("...", ""))
        if "..." not in term:
            spans.append(0)
        elif named > len(shape):
            raise ShapeError(f"{op_name}: operand {k} has shape {format_shape(shape)}, rank {len(shape)}, but its "
                             f"indices {term!r} name {named} axes besides the ellipsis")
        else:
            spans.append(len(shape) - named)
    covered = "".join(fresh_letter(used) for _ in range(max(spans)))
    if arrow and "..." not in rhs and covered:
        raise SpecError(f"{op_name}: spec {spec!r}: the ellipsis covers {len(covered)} axis(es) but the output has "
                        "no '...' for them (numpy's rule: write '...' in the output, or sum them with another einsum)")
    new_terms = [t.replace("...", covered[len(covered) - n:]) for t, n in zip(terms, spans)]
    if arrow:
        out = rhs.replace("...", covered)
    else:  # implicit mode: the ellipsis axes first, then the letters seen once, sorted
        joined = "".join(t.replace("...", "") for t in terms)
        out = covered + "".join(sorted(c for c in set(joined) if joined.count(c) == 1))
    return ",".join(new_terms) + "->" + out


def parse_spec(spec: str, n_operands: int, op_name: str = "einsum") -> Spec:
    """Parse a user's einsum spec (numpy's rules; ``...`` expanded first by :func:`expand_ellipsis`)
    and check it against the operand count."""
    if not isinstance(spec, str):
        raise SpecError(f"{op_name}: the spec must be a string like 'ij,jk->ik', got {spec!r}")
    text = spec.replace(" ", "")
    if text.count("->") > 1:
        raise SpecError(f"{op_name}: spec {spec!r} has more than one '->'")
    if "." in text:
        raise SpecError(f"{op_name}: spec {spec!r}: an ellipsis ('...') needs the operands' shapes (einsum expands it)")
    lhs, arrow, rhs = text.partition("->")
    terms = tuple(lhs.split(","))
    for term in terms + ((rhs,) if arrow else ()):
        bad = [c for c in term if c not in LETTERS]
        if bad:
            raise SpecError(f"{op_name}: spec {spec!r}: {bad[0]!r} is not an index letter (use a-z, A-Z)")
    if len(terms) != n_operands:
        raise SpecError(f"{op_name}: spec {spec!r} names {len(terms)} operand(s) but {n_operands} were given")
    if not arrow:  # numpy's implicit mode: letters seen once, sorted
        joined = "".join(terms)
        rhs = "".join(sorted(c for c in set(joined) if joined.count(c) == 1))
    if len(set(rhs)) != len(rhs):
        raise SpecError(f"{op_name}: spec {spec!r}: output {rhs!r} repeats an index")
    missing = [c for c in rhs if c not in "".join(terms)]
    if missing:
        raise SpecError(f"{op_name}: spec {spec!r}: output index {missing[0]!r} appears in no operand "
                        "(to repeat an operand along a new axis, use gc.broadcast_to(x, shape, axes=...))")
    return Spec(terms, rhs)


def bind_letters(spec: Spec, operands: Sequence[Node], op_name: str) -> dict:
    """Map each letter to its dim, checking ranks and that a letter has one size everywhere."""
    sizes: dict = {}
    where: dict = {}
    for k, (term, node) in enumerate(zip(spec.inputs, operands)):
        if len(term) != node.ndim:
            raise ShapeError(
                f"{op_name} '{spec}': operand {k} ({node.name!r}) has shape {format_shape(node.shape)}, "
                f"rank {node.ndim}, but its indices {term!r} need rank {len(term)}"
            )
        for letter, dim in zip(term, node.shape):
            if letter in sizes and sizes[letter] != dim:
                other_k, other = where[letter]
                raise ShapeError(
                    f"{op_name} '{spec}': index {letter!r} is {sizes[letter]!r} in operand {other_k} "
                    f"({other.name!r}, shape {format_shape(other.shape)}) but {dim!r} in operand {k} "
                    f"({node.name!r}, shape {format_shape(node.shape)})"
                )
            sizes[letter] = dim
            where.setdefault(letter, (k, node))
    return sizes


@saved_as("einsum")
class Contraction(Op):
    """``out = einsum(spec, *inputs)``, possibly broadcasting to output letters found in no input."""

    file_fields = frozenset({"spec", "label"})

    def __init__(self, spec: Spec, label: str = "einsum"):
        self.spec = spec
        self.kind_name = label  # how the user wrote it (matmul, sum, ...): names nodes, not semantics

    def key(self):
        return ("einsum", self.spec.canonical())

    def describe(self):
        return f"einsum '{self.spec}'"

    def index_letters(self, node):
        return self.spec.output

    def kept_axes(self, node):
        """Size-1 output axes found in no operand (``keepdims=True``, ``broadcast_to``), and the
        kept axes of a single operand carried through (a transpose of a kept axis)."""
        spec, kept = self.spec, set()
        present = set("".join(spec.inputs))
        for k, c in enumerate(spec.output):
            if node.shape[k] != 1:
                continue
            if c not in present:
                kept.add(k)
            elif len(spec.inputs) == 1 and spec.inputs[0].count(c) == 1:
                operand = node.inputs[0]
                if spec.inputs[0].index(c) in kept_axes(operand):
                    kept.add(k)
        return frozenset(kept)

    def view_of(self, node):
        if len(node.inputs) != 1:
            return None
        term, out = self.spec.inputs[0], self.spec.output
        if len(set(term)) != len(term) or not set(term) <= set(out):  # a sum or a diagonal: a new array
            return None
        return node.inputs[0]

    def vjp(self, node: Node, g: Node, wanted):
        sizes = letter_sizes(node)
        ins, out = self.spec.inputs, self.spec.output
        grads = []
        for j, want in enumerate(wanted):
            if not want:
                grads.append(None)
                continue
            others = [k for k in range(len(ins)) if k != j]
            terms = [out] + [ins[k] for k in others]
            operands = [g] + [node.inputs[k] for k in others]
            # A repeated index of operand j (a diagonal in the forward pass) survives as a
            # δ between two free indices: give the repeat a fresh letter tied by a delta operand.
            target, used = "", set(sizes)
            for letter in ins[j]:
                if letter in target:
                    fresh = fresh_letter(used, LETTERS)
                    sizes[fresh] = sizes[letter]
                    terms.append(letter + fresh)
                    operands.append(delta(node.graph, sizes[letter]))
                    letter = fresh
                target += letter
            adj = contraction(Spec(tuple(terms), target), operands, sizes=sizes)
            node.graph.set_origin(adj, node, j)
            grads.append(adj)
        return grads

    def adjoint_steps(self, adj: Node, forward_lhs: str) -> list[str] | None:
        """The seed's derivation of a contraction adjoint: the chain rule, one δ per index, and
        their contraction (``adj`` is the adjoint node, ``forward_lhs`` how the forward node is written)."""
        if not isinstance(adj.op, Contraction):
            return None
        fwd, j = adj.origin
        spec = self.spec
        target, term = fwd.inputs[j], spec.inputs[j]
        g = adj.inputs[0]
        used = set(spec.letters)
        free = "".join(fresh_letter(used, DERIVATIVE) for _ in term)
        out = spec.output
        lhs = f"∂L/∂{target.name}[{','.join(free)}]"
        chain = (f"Σ_{{{','.join(out)}}} " if out else "") + \
            f"∂L/∂{fwd.name}{f'[{chr(44).join(out)}]' if out else ''}·∂{forward_lhs}/∂{target.name}[{','.join(free)}]"
        factors = [f"{g.name}[{','.join(out)}]" if out else g.name]
        factors += [f"{o.name}[{','.join(t)}]" for k, (t, o) in enumerate(zip(spec.inputs, fwd.inputs)) if k != j]
        factors += [f"δ[{a},{b}]" for a, b in zip(term, free)]
        summed = "".join(dict.fromkeys(out + "".join(spec.inputs)))
        deltas = f"Σ_{{{','.join(summed)}}} " + "·".join(factors)
        return [f"{lhs} = {chain}", " " * len(lhs) + f" = {deltas}"]

    # -- printing -----------------------------------------------------------------------
    def expression(self, node: Node, name_of):
        """``Σ_k x[n,k]·W[k,h]``: a sympy Sum over the summed letters of a product of indexed operands."""
        return einsum_expression(self.spec, node.inputs, letter_sizes(node), name_of)

    def matrix_form(self, node: Node, name_of) -> str | None:
        """``dY·Wᵀ``, ``xᵀ·dA``, ``Σ_n dY``, ``tr(A)``: for contractions of vectors and matrices."""
        spec = self.spec
        if any(isinstance(i.op, Delta) for i in node.inputs):
            return None
        if any(len(t) > 2 for t in spec.inputs) or len(spec.output) > 2:
            return None
        names = [name_of(i) for i in node.inputs]
        if len(spec.inputs) == 1:
            term, out, a = spec.inputs[0], spec.output, names[0]
            if len(set(term)) < len(term):
                return f"tr({a})" if not out else f"diag({a})"
            if term == out:
                return a
            if sorted(term) == sorted(out):
                return f"{a}ᵀ"
            summed = [c for c in term if c not in out]
            if "".join(c for c in term if c in out) == out and summed:
                return f"Σ_{','.join(summed)} {a}" if out else f"Σ {a}"
            return None
        plan = matrix_product(spec)
        if plan is None:
            return None
        swap, ta, tb = plan
        a, b = (f"{n}ᵀ" if t else n for n, t in zip(names, (ta, tb)))
        return f"{b}·{a}" if swap else f"{a}·{b}"

    # -- graph files ----------------------------------------------------------------------
    def fields(self, codec):
        return {"spec": str(self.spec), "label": self.kind_name}

    @classmethod
    def load(cls, graph, e, inputs, shape, name, codec):
        text, label = codec.str(e["spec"], "spec"), codec.str(e["label"], "label")
        lhs, arrow, out = text.partition("->")
        terms = tuple(lhs.split(","))
        if not arrow or len(terms) != len(inputs) or any(c not in LETTERS for c in lhs.replace(",", "") + out) \
                or len(set(out)) != len(out) or len(out) != len(shape) or not label.isidentifier():
            raise codec.error(f"einsum spec {text!r} (label {label!r}) is not an explicit spec over letters for "
                              f"{len(inputs)} operand(s) with distinct output letters matching shape {list(shape)}")
        spec = Spec(terms, out)
        for operand in inputs:
            if operand.kind != "float":
                raise GraphError(f"{label} '{spec}': operand {operand.name!r} holds {operand.kind} values")
        sizes = bind_letters(spec, inputs, f"{label} '{spec}'")  # the op's own rank and dim checks
        for c, d in zip(out, shape):
            if sizes.get(c, d) != d:
                raise ShapeError(f"{label} '{spec}': output index {c!r} is {sizes[c]!r} in the operands "
                                 f"but {d!r} in the shape")
        return Node(graph, Contraction(spec, label), inputs, shape, "float", name)


def einsum_expression(spec: Spec, operands: Sequence[Node], sizes: Mapping, name_of):
    """``Σ_k x[n,k]·W[k,h]`` for ``spec`` over ``operands``: a sympy Sum (over the summed
    letters, whose ranges come from ``sizes``) of a product of indexed operands."""
    sp = sympy_module()
    factors = [operand_symbol(o, t, name_of) for t, o in zip(spec.inputs, operands)]
    body = sp.Mul(*factors, evaluate=False) if len(factors) > 1 else factors[0]
    if not spec.summed:
        return body
    limits = [(sp.Idx(c), 0, sp.Symbol(str(sizes[c])) - 1 if isinstance(sizes[c], str) else sizes[c] - 1)
              for c in spec.summed]
    return sp.Sum(body, *limits)


def matrix_product(spec) -> tuple | None:
    """For a two-operand matrix product, ``(swap, transpose_a, transpose_b)``; else None.

    ``spec`` has ``inputs`` (two index strings) and ``output``.  The product is
    ``op(a)·op(b)``, or ``op(b)·op(a)`` when ``swap``, where ``op`` transposes the operands
    flagged.  None when the spec is not one matrix product of operands of rank ≤ 2 over
    exactly one summed index.  The BLAS lowering calls gemm from it; explain prints it.
    """
    if len(spec.inputs) != 2:
        return None
    (ta, tb), out = spec.inputs, spec.output
    if any(len(set(t)) != len(t) for t in (ta, tb, out)) or len(ta) > 2 or len(tb) > 2:
        return None
    shared = set(ta) & set(tb)
    summed = shared - set(out)
    if shared != summed or len(summed) != 1 or not set(ta + tb) - summed >= set(out):
        return None
    (s,) = summed
    fa, fb = ta.replace(s, ""), tb.replace(s, "")
    if set(fa + fb) != set(out):
        return None
    if out == fa + fb:  # out = A(fa, s) · B(s, fb)
        return False, len(ta) == 2 and ta != fa + s, len(tb) == 2 and tb != s + fb
    if out == fb + fa:  # out = B(fb, s) · A(s, fa)
        return True, len(ta) == 2 and ta != s + fa, len(tb) == 2 and tb != fb + s
    return None


def letter_sizes(node: Node) -> dict:
    """Letter -> dim for a contraction node, output-only (broadcast) letters included."""
    spec = node.op.spec
    sizes = {}
    for term, operand in zip(spec.inputs, node.inputs):
        sizes.update(zip(term, operand.shape))
    sizes.update(zip(spec.output, node.shape))
    return sizes


def _eliminate_deltas(spec: Spec, operands: list) -> tuple:
    """Contract away each δ[a,b] that has a summed index: Σ_b δ[a,b] f(b) = f(a)."""
    changed = True
    while changed:
        changed = False
        for k, node in enumerate(operands):
            if not isinstance(node.op, Delta):
                continue
            a, b = spec.inputs[k]
            rest = [t for i, t in enumerate(spec.inputs) if i != k]
            for keep, drop in ((a, b), (b, a)):
                if drop in spec.output or keep == drop:
                    continue
                # Σ_drop δ[keep,drop]·(...drop...) = (...keep...)
                terms = tuple(t.replace(drop, keep) for t in rest)
                spec = Spec(terms, spec.output)
                operands = operands[:k] + operands[k + 1:]
                changed = True
                break
            if changed:
                break
    return spec, operands


def contraction(spec: Spec, operands: Sequence[Node], name: str | None = None,
                sizes: Mapping | None = None, op_name: str = "einsum", label: str | None = None) -> Node:
    """Make a contraction node; checks shapes, contracts deltas and drops identities."""
    operands = list(operands)
    graph = same_graph(op_name, operands)
    for node in operands:
        if node.kind != "float":
            raise SpecError(f"{op_name} '{spec}': operand {node.name!r} holds {node.kind} values; contractions take floats")
    letter_dims = bind_letters(spec, operands, op_name)
    for letter in spec.output:
        if letter not in letter_dims:
            if sizes is None or letter not in sizes:
                raise SpecError(f"{op_name} '{spec}': output index {letter!r} appears in no operand")
            letter_dims[letter] = sizes[letter]
    shape = tuple(letter_dims[c] for c in spec.output)
    if any(isinstance(n.op, Zeros) for n in operands):
        return zeros(graph, shape)
    spec, operands = _eliminate_deltas(spec, operands)
    if not operands:  # every operand was a δ contracted away: Σ_b δ[a,b] = 1 for each a
        spec, operands = Spec(("",), spec.output), [constant(graph, 1.0)]
    if len(operands) == 1 and spec.inputs[0] == spec.output:
        return operands[0]
    return Node(graph, Contraction(spec, label or op_name.split(" ")[0]), operands, shape, "float", name)


# -- the user-facing constructors -------------------------------------------------

def einsum(spec: str, *operands: Node, name: str | None = None) -> Node:
    """``einsum("nh,hc->nc", h, W2)``: any contraction in numpy's einsum notation.

    >>> import graphc as gc
    >>> g = gc.Graph("einsum"); h = g.input("h", ("n", 50)); W2 = g.param("W2", (50, 10))
    >>> print(gc.explain(gc.einsum("nh,hc->nc", h, W2, name="a")))
    forward:
      a[n,c] = Σ_h h[n,h]·W2[h,c]    (a = h·W2)

    ``...`` works as in numpy: it names the axes an operand's letters do not, lined up from
    the right across operands, with graphc's exact dims (a size-1 dim does not stretch):

    >>> A = g.input("A", ("b", 3, 4)); B = g.input("B", ("b", 4, 5))
    >>> gc.einsum("...ij,...jk->...ik", A, B).shape
    ('b', 3, 5)
    """
    if not operands:
        raise SpecError(f"einsum '{spec}': no operands given")
    graph = same_graph("einsum", [o for o in operands if isinstance(o, Node)] or list(operands))
    nodes = [as_node(o, graph, f"einsum '{spec}'") for o in operands]
    op_name = "einsum"  # contraction's errors add the spec: "einsum 'ij,jk->ik': ..."
    if isinstance(spec, str) and "." in spec and spec.count("->") <= 1:
        op_name = f"einsum '{spec}' as"  # "einsum '...ij,...jk' as 'aij,ajk->aik': ..."
        spec = expand_ellipsis(spec, [n.shape for n in nodes], f"einsum '{spec}'")
    return contraction(parse_spec(spec, len(nodes), f"einsum '{spec}'"), nodes, name=name, op_name=op_name)


def matmul(a, b, name: str | None = None) -> Node:
    """``a @ b`` with numpy's rules for 1-D and batched operands (batch dims must match exactly).

    >>> import graphc as gc
    >>> g = gc.Graph("matmul"); x = g.input("x", ("n", 3)); W = g.param("W", (3, 2))
    >>> print(gc.explain(gc.matmul(x, W, name="y")))
    forward:
      y[n,j] = Σ_i x[n,i]·W[i,j]    (y = x·W)
    """
    graph = same_graph("matmul", [x for x in (a, b) if isinstance(x, Node)])
    a, b = as_node(a, graph, "matmul"), as_node(b, graph, "matmul")
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"matmul: operands must have rank ≥ 1, got {a.name!r} {format_shape(a.shape)} "
                         f"@ {b.name!r} {format_shape(b.shape)}; use * for scalars")
    if (a.ndim > 2 or b.ndim > 2) and (a.ndim != b.ndim or a.shape[:-2] != b.shape[:-2]):
        raise ShapeError(f"matmul: batch dims differ: {a.name!r} {format_shape(a.shape)} @ {b.name!r} {format_shape(b.shape)}")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else -1]:
        raise ShapeError(
            f"matmul: inner dims differ: {a.name!r} {format_shape(a.shape)} @ {b.name!r} {format_shape(b.shape)} "
            f"({a.shape[-1]!r} vs {b.shape[-2 if b.ndim > 1 else -1]!r})"
        )
    avoid: set = set()
    batch = letters_for(a.shape[:-2], avoid) if a.ndim > 2 else ""
    rows = letters_for(a.shape[-2:-1], avoid) if a.ndim > 1 else ""
    inner = letters_for((a.shape[-1],), avoid)
    cols = letters_for(b.shape[-1:], avoid) if b.ndim > 1 else ""
    ta = batch + rows + inner
    tb = batch + inner + cols if b.ndim > 1 else inner
    return contraction(Spec((ta, tb), batch + rows + cols), [a, b], name=name, op_name="matmul")


def transpose(x: Node, axes: Sequence[int] | None = None, name: str | None = None) -> Node:
    """Permute axes (reverse them by default).  Never materialised: later contractions fold it in.

    >>> import graphc as gc
    >>> g = gc.Graph("transpose"); W = g.param("W", (3, 2))
    >>> gc.transpose(W).shape, W.T.shape
    ((2, 3), (2, 3))
    """
    axes = tuple(range(x.ndim))[::-1] if axes is None else tuple(axes)
    if sorted(axes) != list(range(x.ndim)):
        raise ShapeError(f"transpose: axes {axes} are not a permutation of the {x.ndim} axes of {x.name!r} {format_shape(x.shape)}")
    letters = letters_for(x.shape, set())
    return contraction(Spec((letters,), "".join(letters[a] for a in axes)), [x], name=name, op_name="transpose")


def _axes(x: Node, axis, op_name: str) -> tuple:
    if axis is None:
        return tuple(range(x.ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    norm = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, int) or not -x.ndim <= a < x.ndim:
            raise ShapeError(f"{op_name}: axis {a!r} is out of range for {x.name!r} of shape {format_shape(x.shape)}")
        norm.append(a % x.ndim)
    if len(set(norm)) != len(norm):
        raise ShapeError(f"{op_name}: repeated axis in {axis!r} for {x.name!r}")
    return tuple(norm)


def sum(x: Node, axis=None, name: str | None = None, keepdims: bool = False) -> Node:  # noqa: A001 - mirrors numpy
    """Sum over ``axis`` (all axes by default): the contraction ``ij->j`` and friends.

    ``keepdims=True`` keeps each summed axis with size 1, as numpy does; such a kept axis
    stretches against any dim in an elementwise op (``x - x.sum(1, keepdims=True)``), where
    other size-1 dims must match exactly.

    >>> import graphc as gc
    >>> g = gc.Graph("sum"); x = g.input("x", ("n", 3))
    >>> print(gc.explain(gc.sum(x, 0, name="s")))
    forward:
      s[i] = Σ_n x[n,i]    (s = Σ_n x)
    >>> gc.sum(x, 1, keepdims=True).shape, (x - x.sum(1, keepdims=True)).shape
    (('n', 1), ('n', 3))
    """
    axes = _axes(x, axis, "sum")
    letters = letters_for(x.shape, set())
    out = "".join(c for i, c in enumerate(letters) if i not in axes)
    total = contraction(Spec((letters,), out), [x], name=name, op_name="sum")
    return keep_axes(total, axes, x.ndim) if keepdims else total


def keep_axes(x: Node, axes: Sequence[int], rank: int) -> Node:
    """``x`` with a size-1 axis inserted at each of ``axes`` (positions in the result, of
    ``rank`` axes): a contraction whose new output letters appear in no operand.  Such axes
    are kept axes (:meth:`Op.kept_axes`), which stretch in elementwise ops."""
    letters = letters_for(x.shape, set())
    used, rest, out, sizes = set(letters), iter(letters), "", {}
    for k in range(rank):
        if k in axes:
            c = fresh_letter(used)
            sizes[c] = 1
            out += c
        else:
            out += next(rest)
    return contraction(Spec((letters,), out), [x], sizes=sizes, op_name="keepdims")


def drop_kept_axes(x: Node, axes: Sequence[int]) -> Node:
    """``x`` without its kept (size-1) ``axes``: the same contraction without those output
    letters when they are broadcast letters of ``x``'s own spec (a ``keepdims`` reduction
    becomes the plain one), else a sum over them (a reshape)."""
    letters = letters_for(x.shape, set())
    if isinstance(x.op, Contraction):
        spec = x.op.spec
        present = set("".join(spec.inputs))
        if all(spec.output[a] not in present for a in axes):
            out = "".join(c for k, c in enumerate(spec.output) if k not in axes)
            return contraction(Spec(spec.inputs, out), list(x.inputs), sizes=letter_sizes(x),
                               op_name=x.op.kind_name)
    out = "".join(c for k, c in enumerate(letters) if k not in axes)
    return contraction(Spec((letters,), out), [x], op_name="squeeze")


def broadcast_to(x: Node, shape, axes: Sequence[int] | None = None, name: str | None = None) -> Node:
    """``x`` repeated along new axes to ``shape``: an explicit broadcast, never a copy in memory.

    ``x``'s axes become the trailing axes of ``shape`` (numpy's rule), or the axes ``axes``
    (increasing) of it; each must have the same dim there, except that a size-1 axis of ``x``
    stretches, as in numpy, since the call says so.  The derivative of a broadcast is a sum.

    >>> import graphc as gc
    >>> g = gc.Graph("broadcast"); x = g.input("x", ("n", 3)); mu = x.mean(1)
    >>> centred = x - gc.broadcast_to(mu, ("n", 3), axes=(0,))
    >>> print(gc.explain(gc.broadcast_to(g.param("b", (3,)), ("n", 3), name="B")))
    forward:
      B[n,i] = b[i]
    """
    if not isinstance(x, Node):
        raise GraphError(f"broadcast_to: {x!r} is not a graph node")
    shape = check_shape(shape, "broadcast_to")
    if x.ndim > len(shape):
        raise ShapeError(f"broadcast_to: {x.name!r} {format_shape(x.shape)} has more axes than the target "
                         f"shape {format_shape(shape)}")
    if axes is None:
        axes = tuple(range(len(shape) - x.ndim, len(shape)))
    else:
        try:
            axes = tuple(axes)
        except TypeError:
            axes = (axes,)
        if len(axes) != x.ndim or any(isinstance(a, bool) or not isinstance(a, int) or not -len(shape) <= a < len(shape)
                                      for a in axes):
            raise ShapeError(f"broadcast_to: axes {axes!r} must name one axis of the target shape "
                             f"{format_shape(shape)} for each of the {x.ndim} axes of {x.name!r} {format_shape(x.shape)}")
        axes = tuple(a % len(shape) for a in axes)
        if any(b <= a for a, b in zip(axes, axes[1:])):
            raise ShapeError(f"broadcast_to: axes {axes!r} must be increasing (use transpose to reorder {x.name!r})")
    out = letters_for(shape, set())
    used, term = set(out), ""
    for i, a in enumerate(axes):
        if x.shape[i] == shape[a]:
            term += out[a]
        elif x.shape[i] == 1:  # stretches: a sum over a size-1 axis feeding a broadcast letter
            term += fresh_letter(used)
        else:
            raise ShapeError(f"broadcast_to: axis {i} of {x.name!r} {format_shape(x.shape)} is {x.shape[i]!r} but "
                             f"axis {a} of the target shape {format_shape(shape)} is {shape[a]!r}; dims must agree "
                             "(or be 1 in the operand)")
    return contraction(Spec((term,), out), [x], name=name, sizes=dict(zip(out, shape)), op_name="broadcast_to")


def trace(x: Node, name: str | None = None) -> Node:
    """Σ_i x[i,i].

    >>> import graphc as gc
    >>> g = gc.Graph("trace"); A = g.input("A", (3, 3))
    >>> print(gc.explain(gc.trace(A, name="t")))
    forward:
      t = Σ_i A[i,i]    (t = tr(A))
    """
    return einsum("ii->", x, name=name)


def diagonal(x: Node, name: str | None = None) -> Node:
    """x[i,i] as a vector.

    >>> import graphc as gc
    >>> g = gc.Graph("diagonal"); A = g.input("A", (3, 3))
    >>> print(gc.explain(gc.diagonal(A, name="d")))
    forward:
      d[i] = A[i,i]    (d = diag(A))
    """
    return einsum("ii->i", x, name=name)


def outer(a: Node, b: Node, name: str | None = None) -> Node:
    """a[i]·b[j].

    >>> import graphc as gc
    >>> g = gc.Graph("outer"); u = g.input("u", ("n",)); v = g.input("v", (4,))
    >>> print(gc.explain(gc.outer(u, v, name="o")))
    forward:
      o[i,j] = u[i]·v[j]
    """
    return einsum("i,j->ij", a, b, name=name)
