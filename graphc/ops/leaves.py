"""Leaves: values that enter the graph instead of being computed from other nodes.

``Input`` and ``Param`` are given at call time.  ``Constant`` is a scalar known
when the graph is declared; ``DimSize`` is the size of a (possibly symbolic)
dim, known once arrays are bound; ``Delta`` is the Kronecker delta δ[i,j] that
the adjoint of a diagonal (``ii->i``) leaves behind; ``Zeros`` is what a
gradient is when the output does not depend on the variable.
"""

from __future__ import annotations

import math

from graphc.errors import GraphError
from graphc.ops.node import Dim, Graph, Node, Op


class Input(Op):
    """A value bound at every call: data or labels."""

    kind_name = "input"

    def __init__(self, name: str):
        self.name = name

    def key(self):
        return ("input", self.name)

    def describe(self):
        return "input"


class Param(Input):
    """A trainable value; the same as an input to the compiler, but optimizers update it."""

    kind_name = "param"

    def key(self):
        return ("param", self.name)

    def describe(self):
        return "param"


class Constant(Op):
    """A scalar known at declaration time; elementwise ops fold it into their expression."""

    kind_name = "const"

    def __init__(self, value: float):
        self.value = float(value)

    def key(self):
        return ("const", self.value)

    def describe(self):
        return f"const {self.value!r}"

    def vjp(self, node, g, wanted):
        return [None] * len(wanted)


class Zeros(Op):
    """An array of zeros of the node's shape (the gradient of an unrelated variable)."""

    kind_name = "zeros"

    def key(self):
        return ("zeros",)

    def vjp(self, node, g, wanted):
        return [None] * len(wanted)


class DimSize(Op):
    """The size of a dim as a scalar: an int known now, or a symbolic dim bound at call time."""

    kind_name = "size"

    def __init__(self, dim: Dim):
        self.dim = dim

    def key(self):
        return ("size", self.dim)

    def describe(self):
        return f"size of {self.dim}"

    def vjp(self, node, g, wanted):
        return [None] * len(wanted)


class Delta(Op):
    """The Kronecker delta δ[i,j] over one dim: the identity matrix."""

    kind_name = "delta"

    def key(self):
        return ("delta",)

    def vjp(self, node, g, wanted):
        return [None] * len(wanted)


def constant(graph: Graph, value: float) -> Node:
    value = float(value)
    if not math.isfinite(value):
        raise GraphError(f"graph {graph.name!r}: constant {value!r} is not finite")
    return Node(graph, Constant(value), (), (), "float", None)


def zeros(graph: Graph, shape) -> Node:
    return Node(graph, Zeros(), (), shape, "float", None)


def dim_size(graph: Graph, dim: Dim) -> Node:
    """A scalar node holding ``dim``; a constant when the dim is a fixed int."""
    if isinstance(dim, int):
        return constant(graph, dim)
    return Node(graph, DimSize(dim), (), (), "float", f"|{dim}|")


def delta(graph: Graph, dim: Dim) -> Node:
    return Node(graph, Delta(), (), (dim, dim), "float", "δ")


def is_constant(node: Node, value: float | None = None) -> bool:
    return isinstance(node.op, Constant) and (value is None or node.op.value == value)
