"""The one way passes change a graph: rebuild it bottom-up, each node replaced by what a
visitor makes of it given its (already rebuilt) inputs.  Nodes are never changed."""

from __future__ import annotations

from typing import Callable, Sequence

from graphc.compiler.walk import toposort
from graphc.ops.node import Node


def rebuild(roots: Sequence[Node], visit: Callable, inputs_of=None) -> dict[int, Node]:
    """``{id(old): new}`` for every node the roots depend on; ``visit(old, new_inputs)``
    returns the replacement of ``old`` (``old.with_inputs(new_inputs)`` to keep it).
    ``inputs_of`` orders the visits as :func:`~graphc.compiler.walk.toposort` does."""
    new: dict[int, Node] = {}
    for node in toposort(roots, inputs_of):
        with node.graph.deriving(node.derived):  # what replaces a derived node is derived too
            new[id(node)] = visit(node, [new[id(i)] for i in node.inputs])
    return new


def rewrite(outputs: Sequence[Node], visit: Callable) -> list[Node]:
    """The rebuilt outputs (see :func:`rebuild`)."""
    new = rebuild(outputs, visit)
    return [new[id(o)] for o in outputs]
