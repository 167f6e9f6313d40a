"""The schedule: the order a program computes its nodes in, and the facts about that
order every lowering and every backend rewrite asks for.

Updates of parameters go last, after every read of the old values (when no other
node reads an update); everything else keeps the topological order of the outputs.
"""

from __future__ import annotations

from typing import Sequence

from graphc.compiler.codegen.program import view_base
from graphc.compiler.walk import toposort
from graphc.ops.node import Node


class Schedule:
    """``order`` and, by node id: ``position``, ``last_use`` (position of the last reader),
    ``readers`` (the nodes reading it, once per operand slot); ``update_of`` (update node ->
    the leaf it is written into), ``kept`` (outputs and updates: never freed early) and
    ``read_at_end`` (leaves still read once every node has run: returned, or viewed by a
    returned value or an update, so their updates cannot be written early, in place)."""

    def __init__(self, outputs: Sequence[Node], updates: Sequence[tuple] = ()):
        self.outputs = list(outputs)
        self.updates = [(leaf, node) for leaf, node in updates if node is not leaf]
        roots = self.outputs + [node for _, node in self.updates] + [leaf for leaf, _ in self.updates]
        order = toposort(roots)
        self.update_of = {id(node): leaf for leaf, node in self.updates}
        # A value given to several targets ({W: u, W2: u}) is written into none of them in
        # place: it is computed once and copied into each (deferred_updates).
        self.shared_updates = {i for i in self.update_of if sum(id(n) == i for _, n in self.updates) > 1}
        rest = [n for n in order if id(n) not in self.update_of]
        late = [n for n in order if id(n) in self.update_of]
        if not any(id(i) in self.update_of for n in rest for i in n.inputs):
            order = rest + late
        self.order = order
        self.position = {id(n): k for k, n in enumerate(order)}
        self.last_use: dict[int, int] = {}
        self.readers: dict[int, list[Node]] = {}
        for k, node in enumerate(order):
            for i in node.inputs:
                self.last_use[id(i)] = k
                self.readers.setdefault(id(i), []).append(node)
        self.out_ids = {id(o) for o in self.outputs}
        self.kept = self.out_ids | set(self.update_of)
        self.read_at_end = {id(b) for b in map(view_base, self.outputs + [n for _, n in self.updates])
                            if b is not None}

    def readers_of(self, node: Node) -> list[Node]:
        return self.readers.get(id(node), [])

    def read_after(self, node: Node, leaf: Node) -> bool:
        """Whether a node after ``node`` reads ``leaf`` or a view of it."""
        return any(view_base(i) is leaf for n in self.order[self.position[id(node)] + 1:] for i in n.inputs)

    def update_writable_in_place(self, node: Node) -> bool:
        """Whether the update ``node`` may be written straight into its leaf's array as it is
        computed: nothing reads the leaf's old value afterwards, and the value goes to one leaf."""
        leaf = self.update_of.get(id(node))
        return (leaf is not None and id(node) not in self.shared_updates and id(leaf) in self.position
                and id(leaf) not in self.read_at_end and not self.read_after(node, leaf))
