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


def _backward(output: Node, targets: Sequence[Node], seed: Node) -> list[Node]:
    order = toposort([output])
    depends = {id(w) for w in targets}
    for node in order:
        if any(id(inp) in depends for inp in node.inputs):
            depends.add(id(node))

    contributions: dict[int, list[Node]] = {id(output): [seed]}
    adjoint: dict[int, Node] = {}
    forward = {id(n) for n in order}
    for node in reversed(order):
        parts = contributions.pop(id(node), None)
        if parts is None or id(node) not in depends:
            continue
        total = _accumulate(node, parts)
        if id(total) not in forward and total.auto_named:
            total.rename(f"d{node.name}")  # a fresh adjoint: named after its variable (display only)
        adjoint[id(node)] = total
        wanted = [id(inp) in depends and inp.kind == "float" for inp in node.inputs]
        if not any(wanted) or isinstance(total.op, Zeros):
            continue
        for inp, g in zip(node.inputs, node.op.vjp(node, total, wanted)):
            if g is not None:
                contributions.setdefault(id(inp), []).append(g)

    return [adjoint[id(w)] if id(w) in adjoint else zeros(w.graph, w.shape) for w in targets]
