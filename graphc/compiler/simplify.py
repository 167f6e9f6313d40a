"""Simplification and fusion passes: rewrite the graph the outputs need into an equal, cheaper one.

* ``cse``: hash-consing; structurally equal nodes (same op key, same inputs) become one.
* ``fuse_contractions``: a contraction read only by another contraction merges into it,
  giving one multi-operand einsum; transposes merge into every contraction that reads
  them, so they are never materialised.  opt_einsum then picks the order: its optimal
  path search includes the unfused order, so by its cost estimate the merged
  expression is never worse.
* ``fold_scalar_factors``: a constant multiple ``c·u`` read only by contractions is never
  made: ``(c·u)·B = c·(u·B)``, and the factor lands on the (smaller, or elementwise-read)
  product, where ``fuse_elementwise`` merges it into the expression that reads it.
* ``fuse_elementwise``: an elementwise node read only by another elementwise node is
  substituted into it (sympy composition), one expression and one pass in the code.

Passes never mutate nodes; they build new ones in the same graph.
"""

from __future__ import annotations

import itertools
import math
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


def _scalar_factor(node: Node):
    """``c`` when ``node`` is ``c·u`` elementwise over the same indices as ``u``; else None."""
    op = node.op
    if (not isinstance(op, Elementwise) or len(node.inputs) != 1 or node.kind != "float"
            or op.in_indices[0] != op.out_indices):
        return None
    c, rest = op.fn.expr.as_coeff_Mul()
    return c if rest == op.fn.symbols[0] and c.is_number and c.is_finite and c != 1 else None


def _not_larger(shape: tuple, than: tuple) -> bool:
    """Whether an array of ``shape`` surely has no more elements than one of ``than`` (dims may be symbolic)."""
    rest = list(than)
    bigger = 1
    for d in shape:
        if d in rest:
            rest.remove(d)
        elif isinstance(d, int):
            bigger *= d
        else:
            return False  # a symbolic dim only the result has: could be any size
    return bigger <= math.prod(d for d in rest if isinstance(d, int))


def fold_scalar_factors(outputs: Sequence[Node]) -> list[Node]:
    """Move constant factors off contraction operands onto their results.

    A scaled operand ``c·u`` (``x/255``, say) whose every reader is a contraction need
    not exist: each contraction reads ``u`` and its result is scaled instead.  That
    saves a pass over ``u`` as long as scaling the results costs nothing more, so each
    result must either be read by exactly one elementwise node (``fuse_elementwise``
    then merges the factor into its expression, or the numpy lowering into a fused
    update's gemm α) or be surely no larger than ``u``.  The result changes by rounding
    only: ``c·(u·B)`` and ``(c·u)·B`` round differently.
    """
    sp = _sympy()
    order = toposort(outputs)
    out_ids = {id(o) for o in outputs}
    readers: dict[int, list] = {}
    for n in order:
        for i in n.inputs:
            readers.setdefault(id(i), []).append(n)

    def result_absorbs(product: Node, operand: Node) -> bool:
        rs = readers.get(id(product), [])
        absorbed = id(product) not in out_ids and len(rs) == 1 and isinstance(rs[0].op, Elementwise)
        return absorbed or _not_larger(product.shape, operand.shape)

    folded = {id(n) for n in order
              if id(n) not in out_ids and _scalar_factor(n) is not None and readers.get(id(n))
              and all(isinstance(r.op, Contraction) and result_absorbs(r, n) for r in readers[id(n)])}

    def visit(node, inputs):
        if not isinstance(node.op, Contraction) or not any(id(i) in folded for i in node.inputs):
            return _clone(node, inputs)
        factor = sp.Integer(1)
        operands = []
        for old, new in zip(node.inputs, inputs):
            if id(old) in folded:
                factor *= _scalar_factor(old)
                new = new.inputs[0]
            operands.append(new)
        # The product is no longer the value the user named (it lacks the factor): the name
        # goes to the scaled node, which is that value.
        product = contraction(node.op.spec, operands, sizes=letter_sizes(node))
        if all(product is not o for o in operands):  # (an identity contraction returns its operand)
            product.origin = node.origin
        if factor == 1:  # factors that cancel (c and 1/c)
            return product
        y = sp.Symbol("y", real=True)
        fn = ElementwiseFn.from_expr("scale", (y,), factor * y)
        out = node.op.spec.output
        scaled = make(fn, [product], [out], out, node.shape, name=node.name)
        scaled.origin = node.origin
        return scaled

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
    """CSE, then (with ``fuse``) contraction merging, scalar folding and elementwise fusion, then CSE again."""
    outputs = cse(outputs)
    if fuse:
        outputs = fuse_contractions(outputs)
        outputs = fold_scalar_factors(outputs)
        outputs = fuse_elementwise(outputs)
        outputs = cse(outputs)
    return outputs
