"""Simplification and fusion passes: rewrite the graph the outputs need into an equal, cheaper one.

* ``cse``: hash-consing; structurally equal nodes (same op key, same inputs) become one.
* ``fuse_contractions``: a contraction read only by another contraction merges into it,
  giving one multi-operand einsum; transposes merge into every contraction that reads
  them, so they are never materialised.  opt_einsum then picks the order: its optimal
  path search includes the unfused order, so by its cost estimate the merged
  expression is never worse.
* ``fuse_elementwise``: an elementwise node read only by another elementwise node is
  substituted into it (sympy composition), one expression and one pass in the code.

Passes never mutate nodes; they build new ones in the same graph.
"""

from __future__ import annotations

import itertools
from typing import Sequence

from graphc.compiler.walk import toposort, use_counts
from graphc.ops.contraction import LETTERS, Contraction, Spec, contraction, letter_sizes
from graphc.ops.elementwise import Elementwise, ElementwiseFn, _sympy, make
from graphc.ops.leaves import Input
from graphc.ops.node import Node


def _clone(node: Node, inputs: Sequence[Node]) -> Node:
    if all(a is b for a, b in zip(inputs, node.inputs)):
        return node
    new = Node(node.graph, node.op, inputs, node.shape, node.kind, node.name)
    new.origin = node.origin
    if node.graph.is_derived(node):  # explain sections the copy as the original: backward
        node.graph.mark_derived(new)
    return new


def _rewrite(outputs: Sequence[Node], visit) -> list[Node]:
    """Rebuild bottom-up: ``visit(old, new_inputs)`` returns the replacement of ``old``."""
    new: dict[int, Node] = {}
    for node in toposort(outputs):
        new[id(node)] = visit(node, [new[id(i)] for i in node.inputs])
    return [new[id(o)] for o in outputs]


def cse(outputs: Sequence[Node]) -> list[Node]:
    canon: dict = {}

    def visit(node, inputs):
        if isinstance(node.op, Input):
            return node
        key = (node.op.key(), tuple(id(i) for i in inputs), node.shape, node.kind)
        if key not in canon:
            canon[key] = _clone(node, inputs)
        return canon[key]

    return _rewrite(outputs, visit)


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
        merged.origin = node.origin
        return merged

    return _rewrite(outputs, visit)


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
        for k, (sym, new, idx) in enumerate(zip(op.fn.symbols, inputs, op.in_indices)):
            if k not in fusable:
                fresh = sp.Symbol(f"f{next(counter)}", real=True)
                subs[sym] = fresh
                symbols.append(fresh); operands.append(new); indices.append(idx)
                continue
            inner = new.op
            letter = dict(zip(inner.out_indices, idx))
            inner_subs = {}
            for isym, inode, iidx in zip(inner.fn.symbols, new.inputs, inner.in_indices):
                fresh = sp.Symbol(f"f{next(counter)}", real=True)
                inner_subs[isym] = fresh
                symbols.append(fresh); operands.append(inode)
                indices.append("".join(letter[c] for c in iidx))
            subs[sym] = inner.fn.expr.xreplace(inner_subs)
        expr = sp.piecewise_fold(op.fn.expr.xreplace(subs))
        fn = ElementwiseFn.from_expr(f"{op.fn.name}∘", tuple(symbols), expr)
        fused = make(fn, operands, indices, op.out_indices, node.shape, name=node.name)
        fused.origin = node.origin
        return fused

    return _rewrite(outputs, visit)


def simplify(outputs: Sequence[Node], fuse: bool = True) -> list[Node]:
    """CSE, then (with ``fuse``) contraction merging and elementwise fusion, then CSE again."""
    outputs = cse(outputs)
    if fuse:
        outputs = fuse_contractions(outputs)
        outputs = fuse_elementwise(outputs)
        outputs = cse(outputs)
    return outputs
