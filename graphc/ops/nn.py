"""Softmax and log-softmax over the last axis, one-hot labels and argmax.

Each op's rules sit together in its class: shape (its constructor function),
derivative (``vjp``, built from IR nodes, so second derivatives work), printing,
graph-file fields, and its lowering for each backend (``@lowering``).  The fused
softmax cross-entropy loss is :mod:`graphc.ops.cross_entropy`.
"""

from __future__ import annotations

from graphc.errors import GraphError, ShapeError
from graphc.ops.contraction import Spec, contraction
from graphc.ops.elementwise import ElementwiseFn, make
from graphc.ops.indices import check_shape
from graphc.ops.node import Node, Op, letters_of
from graphc.ops.registry import lowering, saved_as
from graphc.ops.symbolic import indexed, sympy_module


def check_float(op_name: str, node: Node) -> None:
    """A float node with a class axis, or a declaration error naming ``op_name``."""
    if not isinstance(node, Node):
        raise GraphError(f"{op_name}: expected a graph node, got {node!r}")
    if node.kind != "float":
        raise GraphError(f"{op_name}: {node.name!r} holds {node.kind} values; expected floats")
    if node.ndim == 0:
        raise ShapeError(f"{op_name}: {node.name!r} is a scalar; {op_name} needs a class axis")


_SOFTMAX_VJP = ElementwiseFn("softmax_vjp", 3, lambda y, g, s: y * (g - s))
_LOG_SOFTMAX_VJP = ElementwiseFn("log_softmax_vjp", 3, lambda y, g, s: g - y * s)


class _RowOp(Op):
    """An op over the last axis of its one operand, printed as ``f(a[n,c])``."""

    file_arity = 1

    def expression(self, node, name_of):
        return sympy_module().Function(self.kind_name)(indexed(name_of(node.inputs[0]), letters_of(node)))

    @classmethod
    def load(cls, graph, e, inputs, shape, name, codec):
        return cls.build(inputs[0], name=name)


@saved_as("softmax")
class Softmax(_RowOp):
    """``y[..,c] = exp(a[..,c]) / Σ_c' exp(a[..,c'])`` over the last axis."""

    kind_name = "softmax"

    def vjp(self, node, g, wanted):
        idx = letters_of(node)
        s = contraction(Spec((idx, idx), idx[:-1]), [g, node])  # Σ_c g·y
        return [make(_SOFTMAX_VJP, [node, g, s], [idx, idx, idx[:-1]], idx, node.shape)]

    @staticmethod
    def build(a, name=None):
        return softmax(a, name=name)


@saved_as("log_softmax")
class LogSoftmax(_RowOp):
    """``a - log Σ_c exp(a)`` over the last axis, computed stably."""

    kind_name = "log_softmax"

    def vjp(self, node, g, wanted):
        idx = letters_of(node)
        s = contraction(Spec((idx,), idx[:-1]), [g])  # Σ_c g
        y = softmax(node.inputs[0])
        return [make(_LOG_SOFTMAX_VJP, [y, g, s], [idx, idx, idx[:-1]], idx, node.shape)]

    @staticmethod
    def build(a, name=None):
        return log_softmax(a, name=name)


@saved_as("one_hot")
class OneHot(Op):
    """``t[.., c] = 1 if labels[..] == c else 0``; no gradient flows to integer labels."""

    kind_name = "one_hot"
    file_arity = 1
    file_fields = frozenset({"classes"})

    def __init__(self, classes):
        self.classes = classes

    def key(self):
        return ("one_hot", self.classes)

    def vjp(self, node, g, wanted):
        return [None]

    def fields(self, codec):
        return {"classes": self.classes}

    @classmethod
    def load(cls, graph, e, inputs, shape, name, codec):
        return one_hot(inputs[0], codec.dim(e["classes"], "classes"), name=name)


@saved_as("argmax")
class Argmax(Op):
    """Index of the largest entry along the last axis; piecewise constant, so no gradient."""

    kind_name = "argmax"
    file_arity = 1

    def vjp(self, node, g, wanted):
        return [None]

    @classmethod
    def load(cls, graph, e, inputs, shape, name, codec):
        return argmax(inputs[0], name=name)


def softmax(a: Node, name: str | None = None) -> Node:
    """``exp(a) / Σ_c exp(a)`` over the last axis (computed with the row maximum subtracted)."""
    check_float("softmax", a)
    return Node(a.graph, Softmax(), [a], a.shape, "float", name)


def log_softmax(a: Node, name: str | None = None) -> Node:
    """``a - log Σ_c exp(a)`` over the last axis, computed stably."""
    check_float("log_softmax", a)
    return Node(a.graph, LogSoftmax(), [a], a.shape, "float", name)


def one_hot(labels: Node, classes, name: str | None = None) -> Node:
    """``labels`` (an integer node) as one-hot float rows of ``classes`` entries."""
    if not isinstance(labels, Node) or labels.kind != "int":
        raise GraphError(f"one_hot: labels must be an integer node (g.input(name, shape, kind='int')), got {labels!r}")
    (classes,) = check_shape((classes,), f"one_hot of {labels.name!r}: classes")
    if classes == 0:
        raise ShapeError(f"one_hot of {labels.name!r}: the number of classes must be positive, got 0")
    return Node(labels.graph, OneHot(classes), [labels], labels.shape + (classes,), "float", name)


def argmax(a: Node, name: str | None = None) -> Node:
    """Class predictions: argmax over the last axis (integer node)."""
    check_float("argmax", a)
    return Node(a.graph, Argmax(), [a], a.shape[:-1], "int", name)


# -- lowering, per backend ---------------------------------------------------------------------
@lowering("array_api", Softmax, LogSoftmax)
def _row_array_api(node, L):
    return f"rt.{node.op.kind_name}(xp, {L.var(node.inputs[0])})"


@lowering("numpy", Softmax, LogSoftmax)
def _row_numpy(node, L):
    # rt.NpRowSoftmax holds the scratch for these logits' shape, made once in build()
    dest = L.output_buffer(node)
    return [f"        {L.row_softmax(node)}.{node.op.kind_name}({L.var[id(node.inputs[0])]}, {dest})"]


@lowering("array_api", OneHot)
def _one_hot_array_api(node, L):
    return f"rt.one_hot(xp, {L.var(node.inputs[0])}, {L.dim_code(node.op.classes)}, dtype)"


@lowering("numpy", OneHot)
def _one_hot_numpy(node, L):
    dest = L.output_buffer(node)
    return [f"        rt.np_one_hot({L.var[id(node.inputs[0])]}, out={dest})"]


@lowering("array_api", Argmax)
def _argmax_array_api(node, L):
    return f"xp.argmax({L.var(node.inputs[0])}, axis=-1)"


@lowering("numpy", Argmax)
def _argmax_numpy(node, L):
    return [f"        {L.fresh_var(node)} = xp.argmax({L.var[id(node.inputs[0])]}, axis=-1)"]
