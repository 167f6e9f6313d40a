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
from graphc.ops.indices import check_shape, format_shape
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


class _AxisOp(Op):
    """An op along one axis (``axis``, non-negative) of its one operand: ``f(a[n,c])`` for the
    last axis, ``f_c(a[n,c])`` (the axis's letter as a subscript) for any other."""

    file_arity = 1
    file_optional = frozenset({"axis"})  # files written before the axis existed mean the last one

    def __init__(self, axis: int):
        self.axis = axis

    def key(self):
        return (self.kind_name, self.axis)

    def describe(self):
        return f"{self.kind_name} over axis {self.axis}"

    def expression(self, node, name_of):
        letters = letters_of(node)
        label = self.kind_name if self.axis == node.ndim - 1 else f"{self.kind_name}_{letters[self.axis]}"
        return sympy_module().Function(label)(indexed(name_of(node.inputs[0]), letters))

    def fields(self, codec):
        return {"axis": self.axis}

    @classmethod
    def load(cls, graph, e, inputs, shape, name, codec):
        axis = e.get("axis", -1)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise codec.error(f"axis must be an integer, got {codec.short(axis)}")
        return cls.build(inputs[0], axis=axis, name=name)

    def _reduced(self, idx: str) -> str:
        """The letters without the axis's: what a sum over the axis keeps."""
        return idx[:self.axis] + idx[self.axis + 1:]


@saved_as("softmax")
class Softmax(_AxisOp):
    """``y[..,c,..] = exp(a[..,c,..]) / Σ_c' exp(a[..,c',..])`` along ``axis``."""

    kind_name = "softmax"

    def vjp(self, node, g, wanted):
        idx = letters_of(node)
        s = contraction(Spec((idx, idx), self._reduced(idx)), [g, node])  # Σ_c g·y
        return [make(_SOFTMAX_VJP, [node, g, s], [idx, idx, self._reduced(idx)], idx, node.shape)]

    @staticmethod
    def build(a, axis=-1, name=None):
        return softmax(a, axis=axis, name=name)


@saved_as("log_softmax")
class LogSoftmax(_AxisOp):
    """``a - log Σ_c exp(a)`` along ``axis``, computed stably."""

    kind_name = "log_softmax"

    def vjp(self, node, g, wanted):
        idx = letters_of(node)
        s = contraction(Spec((idx,), self._reduced(idx)), [g])  # Σ_c g
        y = softmax(node.inputs[0], axis=self.axis)
        return [make(_LOG_SOFTMAX_VJP, [y, g, s], [idx, idx, self._reduced(idx)], idx, node.shape)]

    @staticmethod
    def build(a, axis=-1, name=None):
        return log_softmax(a, axis=axis, name=name)


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


def _axis(op_name: str, a: Node, axis) -> int:
    if isinstance(axis, Node):  # softmax(a, b): a second operand where the axis goes
        raise GraphError(f"{op_name}: takes one operand; the axis must be an integer, got node {axis.name!r}")
    if isinstance(axis, bool) or not isinstance(axis, int) or not -a.ndim <= axis < a.ndim:
        raise ShapeError(f"{op_name}: axis {axis!r} is out of range for {a.name!r} of shape {format_shape(a.shape)}")
    return axis % a.ndim


def softmax(a: Node, axis: int = -1, name: str | None = None) -> Node:
    """``exp(a) / Σ_c exp(a)`` along ``axis`` (the last by default), computed with the maximum
    along it subtracted.

    >>> import graphc as gc
    >>> g = gc.Graph("s"); scores = g.input("scores", ("q", "k"))
    >>> attention = gc.softmax(scores, axis=1)
    """
    check_float("softmax", a)
    return Node(a.graph, Softmax(_axis("softmax", a, axis)), [a], a.shape, "float", name)


def log_softmax(a: Node, axis: int = -1, name: str | None = None) -> Node:
    """``a - log Σ_c exp(a)`` along ``axis`` (the last by default), computed stably.

    >>> import numpy as np, graphc as gc
    >>> g = gc.Graph("log_softmax"); a = g.input("a", ("n", 3))
    >>> fn = gc.compile(gc.log_softmax(a))
    >>> np.exp(fn(a=np.array([[0.0, 0.0, np.log(2.0)]])))
    array([[0.25, 0.25, 0.5 ]])
    """
    check_float("log_softmax", a)
    return Node(a.graph, LogSoftmax(_axis("log_softmax", a, axis)), [a], a.shape, "float", name)


def one_hot(labels: Node, classes, name: str | None = None) -> Node:
    """``labels`` (an integer node) as one-hot float rows of ``classes`` entries.

    >>> import numpy as np, graphc as gc
    >>> g = gc.Graph("one_hot"); labels = g.input("labels", ("n",), kind="int")
    >>> gc.compile(gc.one_hot(labels, 4))(labels=np.array([2, 0]))
    array([[0., 0., 1., 0.],
           [1., 0., 0., 0.]])
    """
    if not isinstance(labels, Node) or labels.kind != "int":
        raise GraphError(f"one_hot: labels must be an integer node (g.input(name, shape, kind='int')), got {labels!r}")
    (classes,) = check_shape((classes,), f"one_hot of {labels.name!r}: classes")
    if classes == 0:
        raise ShapeError(f"one_hot of {labels.name!r}: the number of classes must be positive, got 0")
    return Node(labels.graph, OneHot(classes), [labels], labels.shape + (classes,), "float", name)


def argmax(a: Node, name: str | None = None) -> Node:
    """Class predictions: argmax over the last axis (integer node).

    >>> import numpy as np, graphc as gc
    >>> g = gc.Graph("argmax"); a = g.input("a", ("n", 3))
    >>> gc.compile(gc.argmax(a))(a=np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]]))
    array([1, 0])
    """
    check_float("argmax", a)
    return Node(a.graph, Argmax(), [a], a.shape[:-1], "int", name)


# -- lowering, per backend ---------------------------------------------------------------------
@lowering("array_api", Softmax, LogSoftmax)
def _row_array_api(node, L):
    return f"rt.{node.op.kind_name}(xp, {L.var(node.inputs[0])}, axis={node.op.axis})"


@lowering("numpy", Softmax, LogSoftmax)
def _row_numpy(node, L):
    dest = L.output_buffer(node)
    a = L.var[id(node.inputs[0])]
    if node.op.axis != node.ndim - 1:  # along another axis: the array-API helper, copied into place
        return [f"        xp.copyto({dest}, rt.{node.op.kind_name}(xp, {a}, axis={node.op.axis}))"]
    # rt.NpRowSoftmax holds the scratch for these logits' shape, made once in build()
    return [f"        {L.row_softmax(node)}.{node.op.kind_name}({a}, {dest})"]


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
