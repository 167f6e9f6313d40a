"""The IR: a :class:`Graph` of :class:`Node` objects, each the output of one :class:`Op`.

A node knows its op, its input nodes, its shape and its element kind.  A shape is
a tuple of dims; a dim is an ``int`` (fixed) or a ``str`` (symbolic, bound when
the compiled function is called).  Two dims agree only when they are equal: a
symbolic ``"n"`` never silently matches ``100``, and a size-1 dim never
stretches.  Every op checks its operands when it is declared, so a mismatch is
reported where the user made it.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterable, Sequence, Union

from graphc.errors import GraphError, ShapeError

Dim = Union[int, str]
MAX_DIM = 2 ** 40  # no array has a larger axis; a bigger declared dim is a mistake
Shape = tuple  # tuple[Dim, ...]

#: Element kinds a node can hold.  Floating nodes carry gradients; integer
#: nodes are labels and indices; booleans are masks.
KINDS = ("float", "int", "bool")


def format_shape(shape: Sequence[Dim]) -> str:
    """``(n, 784)`` style, for error messages and explain output."""
    inner = ", ".join(str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def check_shape(shape: Iterable[Any], what: str) -> Shape:
    """Validate a user-given shape: a sequence of non-negative ints or identifier-like strs."""
    if isinstance(shape, (int, str)):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise ShapeError(f"{what}: shape must be a tuple of ints and dim names, got {shape!r}") from None
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, str)):
            raise ShapeError(f"{what}: dim {d!r} in shape {dims!r} is neither an int nor a dim name")
        if isinstance(d, int) and not 0 <= d <= MAX_DIM:
            raise ShapeError(f"{what}: dim {d} in shape {dims!r} is {'negative' if d < 0 else f'larger than {MAX_DIM}'}")
        if isinstance(d, str) and (not d or not d.isprintable()):
            raise ShapeError(f"{what}: dim name {d!r} in shape {dims!r} must be a non-empty printable string")
    return dims


class Op:
    """What a node computes.  Subclasses are small value objects.

    ``key()`` identifies the op structurally (two nodes with equal keys and equal
    inputs compute the same value; the compiler's CSE relies on it).
    ``vjp(node, g, wanted)`` returns, for each input ``i`` with ``wanted[i]``,
    the node holding ``g`` pulled back through this op (or None for no gradient).
    Rules build ordinary IR nodes, so the backward graph can be differentiated again.
    """

    kind_name = "op"
    differentiable = True

    def key(self) -> tuple:
        return (type(self).__name__,)

    def vjp(self, node: "Node", g: "Node", wanted: Sequence[bool]) -> list:
        raise NotImplementedError(f"{type(self).__name__} has no derivative rule")

    def describe(self) -> str:
        return self.kind_name


class Node:
    """One value in the graph.  Immutable once made; build new nodes with ops."""

    __slots__ = ("graph", "op", "inputs", "shape", "kind", "name", "id", "origin", "auto_named", "__weakref__")

    def __init__(self, graph: "Graph", op: Op, inputs: Sequence["Node"], shape: Shape, kind: str, name: str | None):
        if name is not None and (not isinstance(name, str) or not name):
            # e.g. ``gc.sigmoid(a, b)``: the second operand lands in ``name``.
            raise GraphError(f"{op.kind_name}: a node name must be a non-empty string, got {name!r}")
        self.graph = graph
        self.op = op
        self.inputs = tuple(inputs)
        self.shape = tuple(shape)
        self.kind = kind
        self.id = next(graph._ids)
        self.name = name if name is not None else f"{op.kind_name}{self.id}"
        self.auto_named = name is None
        # Where a derived node came from: (forward node, operand index) for a
        # vector-Jacobian product; explain(steps=True) replays the derivation.
        self.origin: tuple | None = None

    # -- introspection ---------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def is_leaf(self) -> bool:
        return not self.inputs

    def __repr__(self) -> str:
        return f"<{self.name}: {self.op.describe()} {format_shape(self.shape)} {self.kind}>"

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:  # identity: ``==`` on nodes is not elementwise
        return self is other

    def __bool__(self) -> bool:
        raise GraphError(f"node {self.name!r} has no truth value until the graph runs; compare arrays, not nodes")

    def rename(self, name: str) -> "Node":
        """Give this node a display name (used by explain and in comments, never as code)."""
        if not isinstance(name, str) or not name:
            raise GraphError(f"a node name must be a non-empty string, got {name!r}")
        self.name = name
        self.auto_named = False
        return self

    # -- operators: thin sugar over graphc.ops -----------------------------------
    def __add__(self, other):
        from graphc.ops import elementwise as ew
        return ew.add(self, other)

    def __radd__(self, other):
        from graphc.ops import elementwise as ew
        return ew.add(other, self)

    def __sub__(self, other):
        from graphc.ops import elementwise as ew
        return ew.sub(self, other)

    def __rsub__(self, other):
        from graphc.ops import elementwise as ew
        return ew.sub(other, self)

    def __mul__(self, other):
        from graphc.ops import elementwise as ew
        return ew.mul(self, other)

    def __rmul__(self, other):
        from graphc.ops import elementwise as ew
        return ew.mul(other, self)

    def __truediv__(self, other):
        from graphc.ops import elementwise as ew
        return ew.div(self, other)

    def __rtruediv__(self, other):
        from graphc.ops import elementwise as ew
        return ew.div(other, self)

    def __neg__(self):
        from graphc.ops import elementwise as ew
        return ew.neg(self)

    def __pow__(self, exponent):
        from graphc.ops import elementwise as ew
        return ew.power(self, exponent)

    def __rpow__(self, base):
        from graphc.ops import elementwise as ew
        return ew.power(base, self)

    def __matmul__(self, other):
        from graphc.ops import contraction
        return contraction.matmul(self, other)

    def __rmatmul__(self, other):
        from graphc.ops import contraction
        return contraction.matmul(other, self)

    @property
    def T(self) -> "Node":
        from graphc.ops import contraction
        return contraction.transpose(self)

    def sum(self, axis=None) -> "Node":
        from graphc.ops import contraction
        return contraction.sum(self, axis)

    def mean(self, axis=None) -> "Node":
        from graphc.ops import contraction
        return contraction.mean(self, axis)


class Graph:
    """A static computational graph: named inputs and parameters, and the nodes built on them.

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
        self.derived_ranges: list[tuple[int, int]] = []  # node ids made by grad(), for explain

    def is_derived(self, node: "Node") -> bool:
        """Whether ``node`` was made by ``grad`` (part of a backward graph)."""
        return any(lo <= node.id < hi for lo, hi in self.derived_ranges)

    def mark_derived(self, node: "Node") -> None:
        """Record ``node`` as part of a backward graph (a pass's copy of a derived node)."""
        ranges = self.derived_ranges
        if ranges and ranges[-1][1] == node.id:
            ranges[-1] = (ranges[-1][0], node.id + 1)
        else:
            ranges.append((node.id, node.id + 1))

    def __repr__(self) -> str:
        return f"<Graph {self.name!r}: {len(self.leaves)} leaves>"

    def _leaf(self, op: Op, name: str, shape, kind: str) -> Node:
        if not isinstance(name, str) or not name:
            raise GraphError(f"graph {self.name!r}: a leaf name must be a non-empty string, got {name!r}")
        if name in self.leaves:
            raise GraphError(f"graph {self.name!r}: the name {name!r} is already taken by {self.leaves[name]!r}")
        if kind not in KINDS:
            raise GraphError(f"graph {self.name!r}: {name!r} has unknown kind {kind!r}; use one of {KINDS}")
        node = Node(self, op, (), check_shape(shape, f"{op.kind_name} {name!r}"), kind, name)
        self.leaves[name] = node
        return node

    def input(self, name: str, shape, kind: str = "float") -> Node:
        """A value given at every call (data, labels).  ``kind="int"`` for integer labels."""
        from graphc.ops.leaves import Input
        return self._leaf(Input(name), name, shape, kind)

    def param(self, name: str, shape) -> Node:
        """A trainable value (weights).  Given at call time like an input; optimizers update it."""
        from graphc.ops.leaves import Param
        return self._leaf(Param(name), name, shape, "float")

    def constant(self, value: float) -> Node:
        """A scalar constant."""
        from graphc.ops.leaves import constant
        return constant(self, value)

    @property
    def inputs(self) -> list[Node]:
        from graphc.ops.leaves import Input
        return [n for n in self.leaves.values() if isinstance(n.op, Input)]

    @property
    def params(self) -> list[Node]:
        from graphc.ops.leaves import Param
        return [n for n in self.leaves.values() if isinstance(n.op, Param)]


def same_graph(op_name: str, nodes: Sequence[Node]) -> Graph:
    """The one graph all ``nodes`` belong to; mixing graphs is a declaration error."""
    graphs = {id(n.graph): n.graph for n in nodes}
    if len(graphs) != 1:
        names = ", ".join(f"{n.name!r} (graph {n.graph.name!r})" for n in nodes)
        raise GraphError(f"{op_name}: operands come from different graphs: {names}")
    return next(iter(graphs.values()))


def as_node(value: Any, graph: Graph, op_name: str) -> Node:
    """Accept a node of ``graph`` or a Python scalar (made a constant)."""
    if isinstance(value, Node):
        if value.graph is not graph:
            raise GraphError(
                f"{op_name}: operand {value.name!r} belongs to graph {value.graph.name!r}, not {graph.name!r}"
            )
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return graph.constant(float(value))
    raise GraphError(
        f"{op_name}: operand {value!r} of type {type(value).__name__} is neither a graph node nor a scalar; "
        "arrays enter a graph as g.input(...) or g.param(...)"
    )
