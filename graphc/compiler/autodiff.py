"""Reverse mode, symbolically: from an output node to the adjoint nodes of chosen variables.

The backward graph is built from the same ops as the forward graph (each op's
``vjp`` rule makes ordinary nodes), so it can be printed, simplified, compiled
and differentiated again.  A node used several times receives one adjoint per
use; they add up (the seed's Copy node).  Adjoints are only formed for nodes on
a path from a requested variable to the output: no dX for an input nobody asked
about.  A variable the output does not depend on gets a gradient of zeros.
"""

from __future__ import annotations

from typing import Sequence

from graphc.compiler.explain.display import Gradients
from graphc.compiler.walk import toposort
from graphc.errors import GradError, GraphError
from graphc.ops.elementwise import ElementwiseFn, make
from graphc.ops.indices import format_shape
from graphc.ops.leaves import Zeros, zeros
from graphc.ops.node import Node, letters_of

_SUMS: dict[int, ElementwiseFn] = {}


def _accumulate(node: Node, parts: list[Node]) -> Node:
    """Σ of the adjoint contributions of one node, as one n-ary elementwise add."""
    parts = [p for p in parts if not isinstance(p.op, Zeros)]
    if not parts:
        return zeros(node.graph, node.shape)
    if len(parts) == 1:
        return parts[0]
    k = len(parts)
    if k not in _SUMS:
        _SUMS[k] = ElementwiseFn("add", k, lambda *xs: sum(xs[1:], xs[0]))
    idx = letters_of(node)  # the variable's own letters, so dx reads like x
    return make(_SUMS[k], parts, [idx] * k, idx, node.shape)


def grad(output: Node, wrt, seed: Node | None = None):
    """Symbolic gradient of ``output`` with respect to ``wrt`` (a node or a list of nodes).

    ``output`` must be a scalar unless ``seed`` (a node of the output's shape, the
    cotangent) is given.  Returns graph nodes, not numbers: one per ``wrt`` entry,
    each of that entry's shape (a list of them, :class:`Gradients`, for a list ``wrt``).

    >>> import graphc as gc
    >>> g = gc.Graph("grad"); x = g.input("x", ("n", 3)); W = g.param("W", (3, 2))
    >>> y = gc.matmul(x, W, name="y"); dy = g.input("dy", ("n", 2))
    >>> dx, dW = gc.grad(y, [x, W], seed=dy)
    >>> print(gc.explain([dx, dW]))
    backward:
      dx[n,i] = Σ_j dy[n,j]·W[i,j]    (dx = dy·Wᵀ)
      dW[i,j] = Σ_n dy[n,j]·x[n,i]    (dW = xᵀ·dy)
    """
    single = isinstance(wrt, Node)
    targets: Sequence[Node] = [wrt] if single else list(wrt)
    if not isinstance(output, Node):
        raise GradError(f"grad: the output must be a graph node, got {output!r}")
    if output.kind != "float":
        raise GradError(f"grad: output {output.name!r} holds {output.kind} values and has no gradient")
    for w in targets:
        if not isinstance(w, Node):
            raise GradError(f"grad: can only differentiate with respect to graph nodes, got {w!r}")
        if w.graph is not output.graph:
            raise GraphError(f"grad: {w.name!r} belongs to graph {w.graph.name!r}, output {output.name!r} to {output.graph.name!r}")
        if w.kind != "float":
            raise GradError(f"grad: {w.name!r} holds {w.kind} values; gradients exist only for floats")
    if seed is None:
        if output.shape != ():
            raise GradError(
                f"grad: output {output.name!r} has shape {format_shape(output.shape)}, not a scalar; "
                "pass seed=<node of that shape> (the cotangent), or reduce it first (e.g. .sum())"
            )
        seed = output.graph.constant(1.0)
    elif not isinstance(seed, Node) or seed.graph is not output.graph or seed.shape != output.shape:
        raise GradError(
            f"grad: seed must be a node of graph {output.graph.name!r} with the output's shape "
            f"{format_shape(output.shape)}, got {seed!r}"
        )

    with output.graph.deriving():  # every node made here is part of the backward graph
        results = _backward(output, targets, seed)
    return results[0] if single else Gradients(results)  # a list that Jupyter shows as its derivation


def _labels(order: list[Node]) -> dict:
    """A readable label for each generated-name forward node of ``order``: its op and the
    nearest user-named node that reads it (``tanh_h`` for the tanh inside ``h``), for naming
    its adjoint ``dtanh_h``; nodes with no named reader keep their own name."""
    readers: dict[int, list[Node]] = {}
    for n in order:
        for i in n.inputs:
            readers.setdefault(id(i), []).append(n)
    labels: dict[int, str] = {}
    taken = {n.name for n in order if not n.auto_named}
    for n in reversed(order):
        if not n.auto_named:
            continue
        near = None
        for r in readers.get(id(n), []):
            near = r.name if not r.auto_named else labels.get(id(r), "").partition("_")[2] or None
            if near:
                break
        if near:
            label, k = f"{n.op.kind_name}_{near}", 1
            while label in taken:
                k += 1
                label = f"{n.op.kind_name}{k}_{near}"
            taken.add(label)
            labels[id(n)] = label
    return labels


def _name_adjoint(node: Node, parts: list[Node], total: Node, forward: set, label: str | None = None) -> None:
    """Name ``node``'s adjoint ``d<node>`` and what it is made of after it (display only): the
    contributions of its uses ``d<node>_1``, ``d<node>_2``, ... and the nodes a rule made on
    the way to one (the term before a broadcast's sum, say) ``d<node>_pre``, so no derived
    node is left with a generated name like ``ew34``."""
    def fresh(n: Node) -> bool:
        return n.derived and n.auto_named and id(n) not in forward

    base = f"d{label or node.name}"
    if fresh(total):
        total.rename(base)
    distinct = list({id(p): p for p in parts if p is not total}.values())
    for k, part in enumerate(distinct, start=1):
        if fresh(part):
            part.rename(f"{base}_{k}" if len(distinct) > 1 else base)
    for part in distinct or [total]:
        inner, stack = [], list(part.inputs)
        while stack:
            n = stack.pop()
            if fresh(n) and n.inputs and all(n is not m for m in inner):
                inner.append(n)
                stack.extend(n.inputs)
        for j, n in enumerate(inner, start=1):
            n.rename(f"{part.name}_pre" + (str(j) if len(inner) > 1 else ""))


def _backward(output: Node, targets: Sequence[Node], seed: Node) -> list[Node]:
    order = toposort([output])
    depends = {id(w) for w in targets}
    for node in order:
        if any(id(inp) in depends for inp in node.inputs):
            depends.add(id(node))

    contributions: dict[int, list[Node]] = {id(output): [seed]}
    adjoint: dict[int, Node] = {}
    forward = {id(n) for n in order}
    labels = _labels(order)
    for n in order:  # the forward node is written with its label too (a generated name still)
        if id(n) in labels:
            n.graph.names[n.id] = (labels[id(n)], True)
    for node in reversed(order):
        parts = contributions.pop(id(node), None)
        if parts is None or id(node) not in depends:
            continue
        total = _accumulate(node, parts)
        _name_adjoint(node, parts, total, forward, labels.get(id(node)))
        adjoint[id(node)] = total
        wanted = [id(inp) in depends and inp.kind == "float" for inp in node.inputs]
        if not any(wanted) or isinstance(total.op, Zeros):
            continue
        for inp, g in zip(node.inputs, node.op.vjp(node, total, wanted)):
            if g is not None:
                contributions.setdefault(id(inp), []).append(g)

    return [adjoint[id(w)] if id(w) in adjoint else zeros(w.graph, w.shape) for w in targets]
