"""The :class:`Graph`: named leaves, and the side tables that describe its nodes."""

from __future__ import annotations

import contextlib
import itertools

from graphc.errors import GraphError
from graphc.ops.indices import check_shape
from graphc.ops.leaves import Input, Param, constant
from graphc.ops.node import KINDS, Node


class Graph:
    """A static computational graph: named inputs and parameters, and the nodes built on them.

    Besides its leaves, a graph keeps two side tables about its nodes, which never
    change what a node computes: ``names`` (node id -> (display name, whether the name
    was generated)) and ``origins`` (node id -> (forward node, operand index) for
    adjoints, written once); and ``private``, the inputs library components add for their
    own compiled functions (see :meth:`private_input`), apart from the declared leaves.

    >>> g = Graph("affine")
    >>> x = g.input("x", ("n", 3)); W = g.param("W", (3, 2)); b = g.param("b", (2,))
    >>> y = x @ W + b
    """

    def __init__(self, name: str = "graph"):
        if not isinstance(name, str):
            raise GraphError(f"a graph name must be a string, got {name!r}")
        self.name = name
        self._ids = itertools.count()
        self.leaves: dict[str, Node] = {}
        self.names: dict[int, tuple[str, bool]] = {}
        self.origins: dict[int, tuple[Node, int]] = {}
        self.private: dict[str, Node] = {}
        self._deriving: list[bool] = []

    def __repr__(self) -> str:
        return f"<Graph {self.name!r}: {len(self.leaves)} leaves>"

    def new_id(self) -> int:
        return next(self._ids)

    # -- provenance ---------------------------------------------------------------------
    @property
    def deriving_now(self) -> bool:
        """Whether nodes made now are part of a backward graph (see :meth:`deriving`)."""
        return bool(self._deriving) and self._deriving[-1]

    @contextlib.contextmanager
    def deriving(self, derived: bool = True):
        """Nodes made inside are marked ``derived`` (``grad`` wraps its rules in this; a pass
        rebuilding a node wraps its rebuild in ``deriving(node.derived)``)."""
        self._deriving.append(derived)
        try:
            yield
        finally:
            self._deriving.pop()

    def set_origin(self, node: Node, forward: Node, operand: int) -> None:
        """Record that ``node`` is the adjoint of ``forward``'s operand ``operand`` (first record wins)."""
        self.origins.setdefault(node.id, (forward, operand))

    # -- leaves ---------------------------------------------------------------------------
    def _leaf(self, op, name: str, shape, kind: str) -> Node:
        if not isinstance(name, str) or not name:
            raise GraphError(f"graph {self.name!r}: a leaf name must be a non-empty string, got {name!r}")
        if name in self.leaves or name in self.private:
            taken = self.leaves[name] if name in self.leaves else self.private[name]
            raise GraphError(f"graph {self.name!r}: the name {name!r} is already taken by {taken!r}")
        if kind not in KINDS:
            raise GraphError(f"graph {self.name!r}: {name!r} has unknown kind {kind!r}; use one of {KINDS}")
        node = Node(self, op, (), check_shape(shape, f"{op.kind_name} {name!r}"), kind, name, derived=False)
        self.leaves[name] = node
        return node

    def input(self, name: str, shape, kind: str = "float") -> Node:
        """A value given at every call (data, labels).  ``kind="int"`` for integer labels."""
        return self._leaf(Input(name), name, shape, kind)

    def param(self, name: str, shape) -> Node:
        """A trainable value (weights).  Given at call time like an input; optimizers update it."""
        return self._leaf(Param(name), name, shape, "float")

    def private_input(self, name: str, shape) -> Node:
        """An input leaf that a library component adds to compile its own functions (an
        optimizer's state and step size): bound by name like any input, but not one of the
        graph's declared ``leaves``, so ``inputs``, ``params`` and ``save_graph`` never show it.
        The same name gives the same leaf back."""
        leaf = self.private.get(name)
        if leaf is None:
            if name in self.leaves:
                raise GraphError(f"graph {self.name!r}: the name {name!r} is already taken by {self.leaves[name]!r}")
            leaf = Node(self, Input(name), (), check_shape(shape, f"input {name!r}"), "float", name, derived=False)
            self.private[name] = leaf
        elif leaf.shape != tuple(shape):
            raise GraphError(f"graph {self.name!r}: private input {name!r} exists with shape {leaf.shape}")
        return leaf

    def constant(self, value: float) -> Node:
        """A scalar constant."""
        return constant(self, value)

    @property
    def inputs(self) -> list[Node]:
        return [n for n in self.leaves.values() if type(n.op) is Input]

    @property
    def params(self) -> list[Node]:
        return [n for n in self.leaves.values() if isinstance(n.op, Param)]
