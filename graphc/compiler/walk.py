"""Graph traversal shared by the passes: topological order and use counts.

Nodes get their inputs when they are made and never change, so a graph built
through the API cannot contain a cycle; the walk is iterative so that deep
graphs (hundreds of layers) do not hit Python's recursion limit.
"""

from __future__ import annotations

from typing import Iterable

from graphc.ops.node import Node


def toposort(outputs: Iterable[Node], inputs_of=None) -> list[Node]:
    """Every node the outputs depend on, each after its inputs, in a deterministic order.

    ``inputs_of(node)``, when given, replaces ``node.inputs`` (a rewrite that will add an
    input orders the nodes as the rewritten graph will need them)."""
    order: list[Node] = []
    done: set[int] = set()
    for root in outputs:
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if id(node) in done:
                continue
            if expanded:
                done.add(id(node))
                order.append(node)
                continue
            stack.append((node, True))
            for inp in reversed(node.inputs if inputs_of is None else inputs_of(node)):
                if id(inp) not in done:
                    stack.append((inp, False))
    return order


def use_counts(order: Iterable[Node], outputs: Iterable[Node] = ()) -> dict[int, int]:
    """How many times each node is read (as an operand, or as a requested output)."""
    counts: dict[int, int] = {}
    for node in order:
        for inp in node.inputs:
            counts[id(inp)] = counts.get(id(inp), 0) + 1
    for out in outputs:
        counts[id(out)] = counts.get(id(out), 0) + 1
    return counts
