"""Simplification and fusion passes: rewrite the graph the outputs need into an equal, cheaper one.

* ``cse``: hash-consing; structurally equal nodes (same op key, same inputs) become one.
* ``fuse_contractions``: a contraction read only by another contraction merges into it,
  giving one multi-operand einsum; transposes merge into every contraction that reads
  them, so they are never materialised.  opt_einsum then picks the order: its optimal
  path search includes the unfused order, so by its cost estimate the merged
  expression is never worse.
* ``fold_scalar_factors``: a constant multiple ``c·u`` read only by contractions is never
  made: ``(c·u)·B = c·(u·B)``, when the products are together no larger than ``u``; the
  factor lands on each product, where ``fuse_elementwise`` merges it into the expression
  that reads it.
* ``fuse_elementwise``: an elementwise node read only by another elementwise node is
  substituted into it (sympy composition), one expression and one pass in the code.

Passes never mutate nodes; they build new ones in the same graph.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from typing import Sequence

from graphc.compiler.passes.rewrite import rewrite
from graphc.compiler.walk import toposort, use_counts
from graphc.ops.contraction import Contraction, Spec, contraction, letter_sizes
from graphc.ops.elementwise import Elementwise, ElementwiseFn, make
from graphc.ops.indices import LETTERS
from graphc.ops.leaves import Input
from graphc.ops.node import Node
from graphc.ops.symbolic import sympy_module as _sympy


def _clone(node: Node, inputs: Sequence[Node]) -> Node:
    return node.with_inputs(inputs)


def cse(outputs: Sequence[Node]) -> list[Node]:
    canon: dict = {}

    def visit(node, inputs):
        if isinstance(node.op, Input):
            return node
        key = (node.op.key(), tuple(id(i) for i in inputs), node.shape, node.kind)
        if key not in canon:
            canon[key] = _clone(node, inputs)
        return canon[key]

    return rewrite(outputs, visit)


def _is_permutation(node: Node) -> bool:
    return (isinstance(node.op, Contraction) and len(node.inputs) == 1
            and sorted(node.op.spec.inputs[0]) == sorted(node.op.spec.output)
            and len(set(node.op.spec.output)) == len(node.op.spec.output))


def fuse_contractions(outputs: Sequence[Node]) -> list[Node]:
    order = toposort(outputs)
    uses = use_counts(order, outputs)
    out_ids = {id(o) for o in outputs}

    def mergeable(old: Node, new: Node) -> bool:
        if not isinstance(new.op, Contraction) or id(old) in out_ids:
            return False
        spec = new.op.spec
        if set(spec.output) - set("".join(spec.inputs)):  # broadcasts: not an einsum operand
            return False
        return uses[id(old)] == 1 or _is_permutation(new)

    def visit(node, inputs):
        if not isinstance(node.op, Contraction):
            return _clone(node, inputs)
        if not any(mergeable(o, n) for o, n in zip(node.inputs, inputs)):
            return _clone(node, inputs)
        terms, operands = [], []
        used = set(node.op.spec.letters)
        fresh = (c for c in LETTERS if c not in used)
        for term, old, new in zip(node.op.spec.inputs, node.inputs, inputs):
            if not mergeable(old, new):
                terms.append(term)
                operands.append(new)
                continue
            inner = new.op.spec  # the rebuilt operand (it may have merged already)
            rename = dict(zip(inner.output, term))
            for letter in inner.summed:
                rename[letter] = next(fresh)
            terms.extend("".join(rename[c] for c in t) for t in inner.inputs)
            operands.extend(new.inputs)
        # sizes: an output letter this node broadcasts to stays in no operand after the merge.
        merged = contraction(Spec(tuple(terms), node.op.spec.output), operands, name=node.name,
                             sizes=letter_sizes(node))
        if node.origin is not None:
            node.graph.set_origin(merged, *node.origin)
        return merged

    return rewrite(outputs, visit)


def _scalar_factor(node: Node):
    """``c`` when ``node`` is ``c·u`` elementwise over the same indices as ``u``; else None."""
    op = node.op
    if (not isinstance(op, Elementwise) or len(node.inputs) != 1 or node.kind != "float"
            or op.in_indices[0] != op.out_indices):
        return None
    c, rest = op.fn.expr.as_coeff_Mul()
    return c if rest == op.fn.symbols[0] and c.is_number and c.is_finite and c != 1 else None


def _size_term(shape: tuple) -> tuple:
    """(the symbolic dims as a multiset, the product of the fixed ones)."""
    return Counter(d for d in shape if not isinstance(d, int)), math.prod(d for d in shape if isinstance(d, int))


def _no_larger(shapes: Sequence[tuple], than: tuple) -> bool:
    """Whether arrays of ``shapes`` together have no more elements than one of ``than``.

    Symbolic dims count as larger than any fixed size (what a graph leaves symbolic is
    its batch): a result lacking one of the operand's symbolic dims is smaller, one
    with a symbolic dim the operand lacks is larger.
    """
    top_dims, top = _size_term(than)
    lead, lower = 0, False
    for shape in shapes:
        dims, size = _size_term(shape)
        if dims - top_dims:
            return False
        if dims == top_dims:
            lead += size
        else:
            lower = True
    return lead < top or (lead == top and not lower)


# Combined factors outside this range are left alone: folding 1e200·1e200 into one
# constant would overflow where the unfused order does not (and 1e-200·1e-200 underflow).
_FACTOR_RANGE = (2.0 ** -60, 2.0 ** 60)


def fold_scalar_factors(outputs: Sequence[Node]) -> list[Node]:
    """Move constant factors off contraction operands onto their results.

    A scaled operand ``c·u`` (``x/255``, say) whose every reader is a contraction need
    not exist: each contraction reads ``u`` and its result is scaled instead.  That
    trades a pass over ``u`` for one over each result, so it is done when the results
    together are no larger than ``u`` (see ``_no_larger``).  A result read by one
    elementwise node gets the factor inside that node's expression (``fuse_elementwise``),
    and an update ``W - α·(A·B)`` that the numpy lowering fuses takes it into the gemm's
    α, for free.

    The values change by rounding: ``c·(u·B)`` and ``(c·u)·B`` round differently.  In
    float16 the product ``u·B`` can overflow where ``(c·u)·B`` with ``c < 1`` does not.
    """
    sp = _sympy()
    order = toposort(outputs)
    out_ids = {id(o) for o in outputs}
    readers: dict[int, list] = {}
    for n in order:
        for i in n.inputs:
            readers.setdefault(id(i), []).append(n)

    def foldable(n: Node) -> bool:
        rs = readers.get(id(n), [])
        return (id(n) not in out_ids and _scalar_factor(n) is not None and bool(rs)
                and all(isinstance(r.op, Contraction) for r in rs)
                and _no_larger([r.shape for r in {id(r): r for r in rs}.values()], n.shape))

    folded = {id(n) for n in order if foldable(n)}

    def visit(node, inputs):
        if not isinstance(node.op, Contraction) or not any(id(i) in folded for i in node.inputs):
            return _clone(node, inputs)
        factor = sp.Integer(1)
        for old in node.inputs:
            if id(old) in folded:
                factor *= _scalar_factor(old)
        if not _FACTOR_RANGE[0] <= abs(float(factor)) <= _FACTOR_RANGE[1]:
            return _clone(node, inputs)
        operands = [new.inputs[0] if id(old) in folded else new for old, new in zip(node.inputs, inputs)]
        product = contraction(node.op.spec, operands, sizes=letter_sizes(node))
        fresh = all(product is not o for o in operands)  # (an identity contraction returns its operand)
        if fresh and node.origin is not None:
            node.graph.set_origin(product, *node.origin)
        name = None if node.auto_named else node.name
        if float(factor) == 1.0:  # factors that cancel (c and 1/c): the product is the named value
            if fresh and name is not None:
                product.rename(name)
            return product
        # The product is no longer the value the user named (it lacks the factor): the name
        # goes to the scaled node, which is that value.
        y = sp.Symbol("y", real=True)
        fn = ElementwiseFn.from_expr("scale", (y,), factor * y)
        out = node.op.spec.output
        scaled = make(fn, [product], [out], out, node.shape, name=name)
        if node.origin is not None:
            node.graph.set_origin(scaled, *node.origin)
        return scaled

    return rewrite(outputs, visit)


def fuse_elementwise(outputs: Sequence[Node]) -> list[Node]:
    sp = _sympy()
    order = toposort(outputs)
    uses = use_counts(order, outputs)
    out_ids = {id(o) for o in outputs}
    counter = itertools.count()

    def visit(node, inputs):
        if not isinstance(node.op, Elementwise):
            return _clone(node, inputs)
        fusable = [k for k, old in enumerate(node.inputs)
                   if isinstance(old.op, Elementwise) and uses[id(old)] == 1 and id(old) not in out_ids
                   and isinstance(inputs[k].op, Elementwise)]
        if not fusable:
            return _clone(node, inputs)
        op = node.op
        subs, symbols, operands, indices = {}, [], [], []
        seen: dict = {}  # one symbol per (operand, indices): the stable rules must see x and x as one

        def operand(n, idx):
            if (id(n), idx) not in seen:
                seen[id(n), idx] = sp.Symbol(f"f{next(counter)}", real=True)
                symbols.append(seen[id(n), idx]); operands.append(n); indices.append(idx)
            return seen[id(n), idx]

        for k, (sym, new, idx) in enumerate(zip(op.fn.symbols, inputs, op.in_indices)):
            if k not in fusable:
                subs[sym] = operand(new, idx)
                continue
            inner = new.op
            letter = dict(zip(inner.out_indices, idx))
            inner_subs = {}
            for isym, inode, iidx in zip(inner.fn.symbols, new.inputs, inner.in_indices):
                inner_subs[isym] = operand(inode, "".join(letter[c] for c in iidx))
            subs[sym] = inner.fn.expr.xreplace(inner_subs)
        expr = sp.piecewise_fold(op.fn.expr.xreplace(subs))
        fn = ElementwiseFn.from_expr(f"{op.fn.name}∘", tuple(symbols), expr)
        fused = make(fn, operands, indices, op.out_indices, node.shape, name=node.name)
        if node.origin is not None:
            node.graph.set_origin(fused, *node.origin)
        return fused

    return rewrite(outputs, visit)


def stabilize_chains(outputs: Sequence[Node], depth: int = 6) -> list[Node]:
    """Rewrite chains of elementwise nodes that are unstable only together (issue 14).

    ``gc.log(1 + gc.exp(x))`` is three nodes, each harmless alone; composed, the expression is
    ``log(1 + exp(x))``, which :func:`graphc.ops.stable.stabilize` turns into softplus(x).  Each
    elementwise node's expression is composed with its elementwise producers (up to ``depth``
    levels, whatever their other uses: those keep their own nodes) and replaced by the stable
    composition when one of the rules fired on it.
    """
    sp = _sympy()
    from graphc.ops.stable import stabilize

    def visit(node, inputs):
        if not isinstance(node.op, Elementwise) or node.kind != "float":
            return _clone(node, inputs)
        leaves: dict = {}

        def leaf(n, idx):
            key = (id(n), idx)
            if key not in leaves:
                leaves[key] = (sp.Symbol(f"s{len(leaves)}", real=True), n, idx)
            return leaves[key][0]

        def compose(n, letters, level):
            op = n.op
            if level == 0 or not isinstance(op, Elementwise) or n.kind != "float":
                return leaf(n, letters)
            letter = dict(zip(op.out_indices, letters))
            return op.fn.expr.xreplace({sym: compose(i, "".join(letter[c] for c in idx), level - 1)
                                        for sym, i, idx in zip(op.fn.symbols, n.inputs, op.in_indices)})

        op = node.op
        composed = op.fn.expr.xreplace({sym: compose(i, idx, depth - 1)
                                        for sym, i, idx in zip(op.fn.symbols, inputs, op.in_indices)})
        if not any(isinstance(i.op, Elementwise) for i in inputs) or not composed.has(sp.exp, sp.log, sp.tanh):
            return _clone(node, inputs)
        stable = stabilize(composed)
        if stable == composed:
            return _clone(node, inputs)
        used = [v for v in leaves.values() if v[0] in stable.free_symbols]
        fn = ElementwiseFn.from_expr(f"{op.fn.name}∘", tuple(v[0] for v in used), stable)
        out = make(fn, [v[1] for v in used], [v[2] for v in used], op.out_indices, node.shape,
                   name=None if node.auto_named else node.name)
        if node.origin is not None:
            node.graph.set_origin(out, *node.origin)
        return out

    return rewrite(outputs, visit)


def _is_relu_mask(node: Node, g: Node, x: Node) -> bool:
    """Whether ``node`` is ``g·[x > 0]`` (ReLU's adjoint) of its two operands ``g`` and ``x``, at
    the same indices."""
    op = node.op
    if not isinstance(op, Elementwise) or len(node.inputs) != 2 or node.inputs[0] is not g \
            or node.inputs[1] is not x or op.in_indices[0] != op.in_indices[1] != op.out_indices:
        return False
    sp = _sympy()
    s0, s1 = op.fn.symbols
    return op.fn.expr == sp.Piecewise((s0, s1 > 0), (0, True))


def relu_mask_before_max_pool(outputs: Sequence[Node]) -> list[Node]:
    """``scatter(dP·mask)·[C > 0]`` → ``scatter(dP·[P > 0]·mask)`` for max pooling after a ReLU,
    ``P = max_window relu(C)``: the mask picks in each window an entry equal to P, which is
    positive exactly where C is there, so ReLU's adjoint applies to the pooled gradient, a
    window's size times fewer entries, and C is no longer read."""
    from graphc.ops.affine import IndexSum, affine_sum
    from graphc.ops.elementwise import RELU
    from graphc.ops.windows import FirstMaxMask

    order = toposort(outputs)
    uses = use_counts(order, outputs)
    out_ids = {id(o) for o in outputs}

    def visit(node, inputs):
        if isinstance(node.op, Elementwise) and len(node.inputs) == 2:
            scatter, pre = node.inputs
            if isinstance(scatter.op, IndexSum) and len(scatter.inputs) == 2 and uses[id(scatter)] == 1 \
                    and id(scatter) not in out_ids and _is_relu_mask(node, scatter, pre):
                g, mask = scatter.inputs
                relu_out = mask.inputs[0] if isinstance(mask.op, FirstMaxMask) else None
                g_terms = scatter.op.terms[0]
                if relu_out is not None and isinstance(relu_out.op, Elementwise) and relu_out.op.fn is RELU \
                        and relu_out.inputs[0] is pre and all(t.plain for t in g_terms):
                    peak = mask.inputs[1]
                    idx = "".join(t.plain for t in g_terms)
                    g_new = inputs[0].inputs[0] if inputs[0] is not scatter else g
                    masked = make(node.op.fn, [g_new, peak], [idx, idx], idx, g.shape, name=f"{g.name}_relu")
                    new = affine_sum(scatter.op.terms, [masked, mask], scatter.op.out, scatter.shape,
                                     scatter.op.sizes, label=scatter.op.kind_name)
                    new.copy_display(node)
                    return new
        return _clone(node, inputs)

    return rewrite(outputs, visit)


def simplify(outputs: Sequence[Node], fuse: bool = True) -> list[Node]:
    """CSE, then (with ``fuse``) contraction merging, scalar folding, ReLU's adjoint moved before
    max pooling's, elementwise fusion, then CSE again."""
    outputs = cse(outputs)
    if fuse:
        outputs = relu_mask_before_max_pool(outputs)
        outputs = fuse_contractions(outputs)
        outputs = fold_scalar_factors(outputs)
        outputs = stabilize_chains(outputs)
        outputs = fuse_elementwise(outputs)
        outputs = cse(outputs)
    return outputs
