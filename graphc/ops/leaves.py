"""Leaves: values that enter the graph instead of being computed from other nodes.

``Input`` and ``Param`` are given at call time.  ``Constant`` is a scalar known
when the graph is declared; ``DimSize`` is the size of a (possibly symbolic)
dim, known once arrays are bound; ``Delta`` is the Kronecker delta δ[i,j] that
the adjoint of a diagonal (``ii->i``) leaves behind; ``Zeros`` is what a
gradient is when the output does not depend on the variable.

Input and param leaves are saved by the graph file's ``leaves`` list; the others
are ops of the ``nodes`` list like any computed node.
"""

from __future__ import annotations

import math

from graphc.errors import GraphError, SerializationError
from graphc.ops.indices import Dim
from graphc.ops.node import Node, Op
from graphc.ops.registry import saved_as
from graphc.ops.symbolic import indexed, sympy_module


class Input(Op):
    """A value bound at every call: data or labels."""

    kind_name = "input"
    listed = False

    def __init__(self, name: str):
        self.name = name

    def key(self):
        return ("input", self.name)

    def expression(self, node, name_of):
        return sympy_module().Symbol(self.describe())


class Param(Input):
    """A trainable value; the same as an input to the compiler, but optimizers update it."""

    kind_name = "param"

    def key(self):
        return ("param", self.name)


class _NoGradient(Op):
    """A leaf computed from nothing: no operand, so no gradient to pass on."""

    file_arity = 0
    listed = False

    def vjp(self, node, g, wanted):
        return [None] * len(wanted)


@saved_as("constant")
class Constant(_NoGradient):
    """A scalar known at declaration time; elementwise ops fold it into their expression."""

    kind_name = "const"
    file_fields = frozenset({"value"})

    def __init__(self, value: float):
        self.value = float(value)

    def key(self):
        return ("const", self.value)

    def describe(self):
        return f"const {self.value!r}"

    def expression(self, node, name_of):
        return sympy_module().Float(self.value)

    def array_code(self, node, shape_code, dim_code, device: str = "") -> str:
        """Code making the value with an array namespace ``xp`` in the call's ``dtype``
        (both backends make it once, when a function is specialised); ``device``: code
        for the arrays' device (``", device=device"``), where the backend places arrays."""
        return f"xp.asarray({self.value!r}, dtype=dtype{device})"

    def fields(self, codec):
        return {"value": self.value}

    @classmethod
    def load(cls, graph, e, inputs, shape, name, codec):
        v = e["value"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise SerializationError(f"value must be a finite number, got {codec.short(v)}")
        return constant(graph, v, name=name)


@saved_as("zeros")
class Zeros(_NoGradient):
    """An array of zeros of the node's shape (the gradient of an unrelated variable)."""

    kind_name = "zeros"
    listed = True  # a gradient that is zero is worth a line

    def key(self):
        return ("zeros",)

    def expression(self, node, name_of):
        return sympy_module().Integer(0)

    def array_code(self, node, shape_code, dim_code, device: str = "") -> str:
        return f"xp.zeros({shape_code(node.shape)}, dtype=dtype{device})"

    @classmethod
    def load(cls, graph, e, inputs, shape, name, codec):
        return Node(graph, Zeros(), (), shape, "float", name)


@saved_as("dim_size")
class DimSize(_NoGradient):
    """The size of a dim as a scalar: an int known now, or a symbolic dim bound at call time."""

    kind_name = "size"
    file_fields = frozenset({"dim"})

    def __init__(self, dim: Dim):
        self.dim = dim

    def key(self):
        return ("size", self.dim)

    def describe(self):
        return f"size of {self.dim}"

    def expression(self, node, name_of):
        return sympy_module().Symbol(f"|{self.dim}|", positive=True)

    def fields(self, codec):
        return {"dim": self.dim}

    @classmethod
    def load(cls, graph, e, inputs, shape, name, codec):
        dim = codec.dim(e["dim"], "dim_size")
        if not isinstance(dim, str):
            raise SerializationError(f"dim_size takes a dim name, got {dim!r} (a fixed size is a constant)")
        return Node(graph, DimSize(dim), (), (), "float", name)


@saved_as("delta")
class Delta(_NoGradient):
    """The Kronecker delta δ[i,j] over one dim: the identity matrix."""

    kind_name = "delta"

    def key(self):
        return ("delta",)

    def expression(self, node, name_of):
        sp = sympy_module()
        return sp.KroneckerDelta(sp.Idx("i"), sp.Idx("j"))

    def array_code(self, node, shape_code, dim_code, device: str = "") -> str:
        return f"xp.eye({dim_code(node.shape[0])}, dtype=dtype{device})"

    @classmethod
    def load(cls, graph, e, inputs, shape, name, codec):
        if len(shape) != 2 or shape[0] != shape[1]:
            raise SerializationError(f"a delta's shape must be [d, d], got {list(shape)}")
        return Node(graph, Delta(), (), shape, "float", name)


def constant(graph, value: float, name: str | None = None) -> Node:
    value = float(value)
    if not math.isfinite(value):
        raise GraphError(f"graph {graph.name!r}: constant {value!r} is not finite")
    return Node(graph, Constant(value), (), (), "float", name)


def zeros(graph, shape) -> Node:
    return Node(graph, Zeros(), (), shape, "float")


def dim_size(graph, dim: Dim) -> Node:
    """A scalar node holding ``dim``; a constant when the dim is a fixed int."""
    if isinstance(dim, int):
        return constant(graph, dim)
    return Node(graph, DimSize(dim), (), (), "float", f"|{dim}|")


def delta(graph, dim: Dim) -> Node:
    return Node(graph, Delta(), (), (dim, dim), "float", "δ")


def is_constant(node: Node, value: float | None = None) -> bool:
    return isinstance(node.op, Constant) and (value is None or node.op.value == value)


def operand_symbol(node: Node, letters: str, name_of):
    """How an operand appears inside another node's expression: a constant by its value,
    a dim size as ``|n|``, a δ by its indices, anything else as ``name[letters]``."""
    sp = sympy_module()
    op = node.op
    if isinstance(op, Constant):
        return sp.Float(op.value)
    if isinstance(op, DimSize):
        return sp.Symbol(f"|{op.dim}|", positive=True)
    if isinstance(op, Delta) and len(letters) == 2:
        return sp.KroneckerDelta(sp.Idx(letters[0]), sp.Idx(letters[1]))
    return indexed(name_of(node), letters)
