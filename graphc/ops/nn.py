"""Neural-network ops that are not plain elementwise maps: softmax and its fused loss.

``softmax_cross_entropy`` is one op, as in the seed, because its gradient
fuses into ``(y - t)/N`` (integer labels: subtract 1 at the label, then divide
by N).  That rule assumes each row of ``t`` sums to 1, as one-hot labels and
probability targets do.  Every derivative rule here is built from IR nodes, so
second derivatives work.
"""

from __future__ import annotations

from graphc.errors import GraphError, ShapeError
from graphc.ops.contraction import Spec, contraction
from graphc.ops.elementwise import ElementwiseFn, _indices_like, make
from graphc.ops.leaves import dim_size
from graphc.ops.node import Node, Op, check_shape, format_shape

def _letters(node: Node) -> str:
    """The letters ``node`` is written with (explain reads consistently across ops)."""
    return _indices_like(node, node.ndim)


def _check_float(op_name: str, node: Node) -> None:
    if not isinstance(node, Node):
        raise GraphError(f"{op_name}: expected a graph node, got {node!r}")
    if node.kind != "float":
        raise GraphError(f"{op_name}: {node.name!r} holds {node.kind} values; expected floats")
    if node.ndim == 0:
        raise ShapeError(f"{op_name}: {node.name!r} is a scalar; {op_name} needs a class axis")


_SOFTMAX_VJP = ElementwiseFn("softmax_vjp", 3, lambda y, g, s: y * (g - s))
_LOG_SOFTMAX_VJP = ElementwiseFn("log_softmax_vjp", 3, lambda y, g, s: g - y * s)
# ∂/∂a of mean_n(-Σ_c t log softmax(a)) pulled back from g, with rows of t summing to 1.
_CE_GRAD = ElementwiseFn("softmax_ce_grad", 4, lambda y, t, g, n: g * (y - t) / n)
_CE_TARGET_GRAD = ElementwiseFn("softmax_ce_target_grad", 3, lambda ls, g, n: -g * ls / n)


class Softmax(Op):
    """``y[..,c] = exp(a[..,c]) / Σ_c' exp(a[..,c'])`` over the last axis."""

    kind_name = "softmax"

    def vjp(self, node, g, wanted):
        idx = _letters(node)
        s = contraction(Spec((idx, idx), idx[:-1]), [g, node])  # Σ_c g·y
        return [make(_SOFTMAX_VJP, [node, g, s], [idx, idx, idx[:-1]], idx, node.shape)]


class LogSoftmax(Op):
    """``a - log Σ_c exp(a)`` over the last axis, computed stably."""

    kind_name = "log_softmax"

    def vjp(self, node, g, wanted):
        idx = _letters(node)
        s = contraction(Spec((idx,), idx[:-1]), [g])  # Σ_c g
        y = softmax(node.inputs[0])
        return [make(_LOG_SOFTMAX_VJP, [y, g, s], [idx, idx, idx[:-1]], idx, node.shape)]


class SoftmaxCrossEntropy(Op):
    """Mean over the batch of ``-Σ_c t·log softmax(a)``; ``t`` one-hot (float) or integer labels."""

    kind_name = "softmax_ce"

    def __init__(self, integer_labels: bool):
        self.integer_labels = integer_labels

    def key(self):
        return ("softmax_ce", self.integer_labels)

    def describe(self):
        return "softmax cross-entropy" + (" (integer labels)" if self.integer_labels else "")

    def vjp(self, node, g, wanted):
        a, t = node.inputs
        idx = _letters(a)
        n = dim_size(a.graph, a.shape[0]) if a.ndim > 1 else a.graph.constant(1.0)
        grads = [None, None]
        if wanted[0]:
            target = one_hot(t, a.shape[-1]) if self.integer_labels else t
            y = softmax(a, name=f"softmax_{a.name}")
            grads[0] = make(_CE_GRAD, [y, target, g, n], [idx, idx, "", ""], idx, a.shape)
            grads[0].origin = (node, 0)
        if wanted[1] and not self.integer_labels:
            grads[1] = make(_CE_TARGET_GRAD, [log_softmax(a), g, n], [idx, "", ""], idx, a.shape)
        return grads


class OneHot(Op):
    """``t[.., c] = 1 if labels[..] == c else 0``; no gradient flows to integer labels."""

    kind_name = "one_hot"

    def __init__(self, classes):
        self.classes = classes

    def key(self):
        return ("one_hot", self.classes)

    def vjp(self, node, g, wanted):
        return [None]


class Argmax(Op):
    """Index of the largest entry along the last axis; piecewise constant, so no gradient."""

    kind_name = "argmax"

    def vjp(self, node, g, wanted):
        return [None]


def softmax(a: Node, name: str | None = None) -> Node:
    _check_float("softmax", a)
    return Node(a.graph, Softmax(), [a], a.shape, "float", name)


def log_softmax(a: Node, name: str | None = None) -> Node:
    _check_float("log_softmax", a)
    return Node(a.graph, LogSoftmax(), [a], a.shape, "float", name)


def one_hot(labels: Node, classes, name: str | None = None) -> Node:
    if not isinstance(labels, Node) or labels.kind != "int":
        raise GraphError(f"one_hot: labels must be an integer node (g.input(name, shape, kind='int')), got {labels!r}")
    (classes,) = check_shape((classes,), f"one_hot of {labels.name!r}: classes")
    if classes == 0:
        raise ShapeError(f"one_hot of {labels.name!r}: the number of classes must be positive, got 0")
    return Node(labels.graph, OneHot(classes), [labels], labels.shape + (classes,), "float", name)


def argmax(a: Node, name: str | None = None) -> Node:
    """Class predictions: argmax over the last axis (integer node)."""
    _check_float("argmax", a)
    return Node(a.graph, Argmax(), [a], a.shape[:-1], "int", name)


def softmax_cross_entropy(a: Node, t: Node, name: str | None = None) -> Node:
    """The seed's CEE_Softmax: mean over rows of ``-Σ_c t·log softmax(a)``.

    ``t`` is either float targets of ``a``'s shape (one-hot rows, or rows summing to 1)
    or integer labels of shape ``a.shape[:-1]`` (declare them with ``kind="int"``).
    """
    _check_float("softmax_cross_entropy", a)
    if not isinstance(t, Node):
        raise GraphError(f"softmax_cross_entropy: targets must be a graph node, got {t!r}")
    if t.graph is not a.graph:
        raise GraphError(f"softmax_cross_entropy: {a.name!r} and {t.name!r} belong to different graphs")
    if a.ndim > 2:
        raise ShapeError(f"softmax_cross_entropy: logits {a.name!r} {format_shape(a.shape)} must be (classes,) or (batch, classes)")
    if t.kind == "int":
        if t.shape != a.shape[:-1]:
            raise ShapeError(
                f"softmax_cross_entropy: integer labels {t.name!r} {format_shape(t.shape)} must have shape "
                f"{format_shape(a.shape[:-1])} to match logits {a.name!r} {format_shape(a.shape)}"
            )
        integer = True
    elif t.kind == "float":
        if t.shape != a.shape:
            raise ShapeError(
                f"softmax_cross_entropy: targets {t.name!r} {format_shape(t.shape)} must match logits "
                f"{a.name!r} {format_shape(a.shape)} (one-hot rows), or be integer labels of shape {format_shape(a.shape[:-1])}"
            )
        integer = False
    else:
        raise GraphError(f"softmax_cross_entropy: targets {t.name!r} hold {t.kind} values")
    return Node(a.graph, SoftmaxCrossEntropy(integer), [a, t], (), "float", name)
