"""Softmax cross-entropy: the seed's fused loss, every rule of it in this one module.

``softmax_cross_entropy`` is one op, as in the seed, because its gradient fuses
into ``(y - t)/N`` (integer labels: subtract 1 at the label, then divide by N).
The classes lie along ``axis`` (the last by default); N counts the positions along
every other axis, over which the loss is the mean (torch's ``cross_entropy`` with
class axis 1 is ``axis=1``).
That rule assumes each row of ``t`` sums to 1, as one-hot labels and probability
targets do.  The derivative rule is built from IR nodes, so second derivatives work.
"""

from __future__ import annotations

from graphc.errors import GraphError, SerializationError, ShapeError
from graphc.ops.contraction import transpose
from graphc.ops.elementwise import ElementwiseFn, make, mul
from graphc.ops.indices import format_shape
from graphc.ops.leaves import dim_size
from graphc.ops.fused import KeptSoftmax
from graphc.ops.nn import _axis, check_float, log_softmax, one_hot, softmax
from graphc.ops.node import Node, Op, letters_of
from graphc.ops.registry import lowering, saved_as
from graphc.ops.symbolic import sympy_module

# ∂/∂a of mean_n(-Σ_c t log softmax(a)) pulled back from g, with rows of t summing to 1.
_CE_GRAD = ElementwiseFn("softmax_ce_grad", 4, lambda y, t, g, n: g * (y - t) / n)
_CE_TARGET_GRAD = ElementwiseFn("softmax_ce_target_grad", 3, lambda ls, g, n: -g * ls / n)


@saved_as("softmax_cross_entropy")
class SoftmaxCrossEntropy(Op):
    """Mean over positions of ``-Σ_c t·log softmax(a)`` along ``axis`` (non-negative; the class
    axis); ``t`` float targets of ``a``'s shape or integer labels of its shape without ``axis``."""

    kind_name = "softmax_ce"
    file_arity = 2
    file_fields = frozenset({"integer_labels"})
    file_optional = frozenset({"axis"})  # files written before the axis existed mean the last one

    def __init__(self, integer_labels: bool, axis: int = -1):
        self.integer_labels = integer_labels
        self.axis = axis

    def key(self):
        return ("softmax_ce", self.integer_labels, self.axis)

    def describe(self):
        return "softmax cross-entropy" + (" (integer labels)" if self.integer_labels else "") + f" over axis {self.axis}"

    def fused_rows(self, node) -> bool:
        """Whether the numpy backend's one-pass row kernel computes it: classes along the last
        axis of logits ``(classes,)`` or ``(batch, classes)``."""
        a = node.inputs[0]
        return a.ndim <= 2 and self.axis == a.ndim - 1

    def vjp(self, node, g, wanted):
        a, t = node.inputs
        idx = letters_of(a)
        n = a.graph.constant(1.0)
        for k, d in enumerate(a.shape):
            if k != self.axis:
                n = mul(n, dim_size(a.graph, d))
        grads = [None, None]
        if wanted[0]:
            target = t
            if self.integer_labels:  # one-hot rows, the class axis moved from last to ``axis``
                target = one_hot(t, a.shape[self.axis])
                last = a.ndim - 1
                if self.axis != last:
                    target = transpose(target, tuple(range(self.axis)) + (last,) + tuple(range(self.axis, last)))
            y = softmax(a, axis=self.axis, name=f"softmax_{a.name}")
            grads[0] = make(_CE_GRAD, [y, target, g, n], [idx, idx, "", ""], idx, a.shape)
            node.graph.set_origin(grads[0], node, 0)
        if wanted[1] and not self.integer_labels:
            grads[1] = make(_CE_TARGET_GRAD, [log_softmax(a, axis=self.axis), g, n], [idx, "", ""], idx, a.shape)
        return grads

    def expression(self, node, name_of):
        a, t = node.inputs
        sp = sympy_module()
        label = "softmax_cross_entropy" if self.axis == a.ndim - 1 else f"softmax_cross_entropy_{letters_of(a)[self.axis]}"
        return sp.Function(label)(sp.Symbol(name_of(a)), sp.Symbol(name_of(t)))

    def fields(self, codec):
        return {"integer_labels": bool(self.integer_labels), "axis": self.axis}

    @classmethod
    def load(cls, graph, e, inputs, shape, name, codec):
        axis = e.get("axis", -1)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise codec.error(f"axis must be an integer, got {codec.short(axis)}")
        node = softmax_cross_entropy(*inputs, axis=axis, name=name)
        if node.op.integer_labels is not e["integer_labels"]:
            raise SerializationError(f"integer_labels is {e['integer_labels']!r} but the targets hold "
                                     f"{inputs[1].kind} values")
        return node


def softmax_cross_entropy(a: Node, t: Node, axis: int = -1, name: str | None = None) -> Node:
    """The seed's CEE_Softmax: the mean over positions of ``-Σ_c t·log softmax(a)`` along ``axis``.

    The classes lie along ``axis`` (the last by default); the mean is over every other axis
    (for ``(batch, classes)`` logits, over the batch; torch's ``cross_entropy`` on
    ``(batch, classes, ...)`` is ``axis=1``).  ``t`` is either float targets of ``a``'s shape
    (rows summing to 1 along ``axis``, such as one-hot rows) or integer labels of ``a``'s
    shape without ``axis`` (declare them with ``kind="int"``).

    >>> import numpy as np, graphc as gc
    >>> g = gc.Graph("loss"); a = g.input("a", ("n", 10)); t = g.input("t", ("n", 10))
    >>> loss = gc.softmax_cross_entropy(a, t)
    >>> print(gc.explain(gc.grad(loss, [a])))
    backward:
      softmax_a[n,i] = softmax(a[n,i])
      da[n,i] = (-t[n,i] + softmax_a[n,i])/|n|
    >>> round(float(gc.compile(loss)(a=np.zeros((2, 10)), t=np.eye(10)[[3, 7]])), 4)  # log 10
    2.3026
    >>> b = g.input("b", (10, "n")); labels = g.input("labels", ("n",), kind="int")
    >>> round(float(gc.compile(gc.softmax_cross_entropy(b, labels, axis=0))(b=np.zeros((10, 2)), labels=np.array([3, 7]))), 4)
    2.3026
    """
    check_float("softmax_cross_entropy", a)
    if not isinstance(t, Node):
        raise GraphError(f"softmax_cross_entropy: targets must be a graph node, got {t!r}")
    if t.graph is not a.graph:
        raise GraphError(f"softmax_cross_entropy: {a.name!r} and {t.name!r} belong to different graphs")
    axis = _axis("softmax_cross_entropy", a, axis)
    positions = a.shape[:axis] + a.shape[axis + 1:]
    if t.kind == "int":
        if t.shape != positions:
            raise ShapeError(
                f"softmax_cross_entropy: integer labels {t.name!r} {format_shape(t.shape)} must have shape "
                f"{format_shape(positions)} to match logits {a.name!r} {format_shape(a.shape)} with classes along axis {axis}"
            )
        integer = True
    elif t.kind == "float":
        if t.shape != a.shape:
            raise ShapeError(
                f"softmax_cross_entropy: targets {t.name!r} {format_shape(t.shape)} must match logits "
                f"{a.name!r} {format_shape(a.shape)} (one-hot rows), or be integer labels of shape {format_shape(positions)}"
            )
        integer = False
    else:
        raise GraphError(f"softmax_cross_entropy: targets {t.name!r} hold {t.kind} values")
    return Node(a.graph, SoftmaxCrossEntropy(integer, axis), [a, t], (), "float", name)


# -- lowering, per backend ---------------------------------------------------------------------
@lowering("array_api", SoftmaxCrossEntropy)
def _array_api(node, L):
    helper = "softmax_cross_entropy_labels" if node.op.integer_labels else "softmax_cross_entropy"
    a, t = node.inputs
    return f"rt.{helper}(xp, {L.var(a)}, {L.var(t)}, axis={node.op.axis})"


@lowering("numpy", SoftmaxCrossEntropy)
def _numpy(node, L):
    """One pass with rt.NpRowSoftmax, which also writes the softmax a KeptSoftmax reader
    (made by the numpy backend's rewrites) holds: the gradient's softmax is not computed again."""
    a, t = node.inputs
    if not node.op.fused_rows(node):  # classes along another axis: the array-API helper
        helper = "softmax_cross_entropy_labels" if node.op.integer_labels else "softmax_cross_entropy"
        return [f"        {L.fresh_var(node)} = rt.{helper}(xp, {L.var[id(a)]}, {L.var[id(t)]}, axis={node.op.axis})"]
    y = next((r for r in L.schedule.readers_of(node) if isinstance(r.op, KeptSoftmax)), None)
    y_code = "None"
    if y is not None:
        y_code = L.output_buffer(y)
        L.done.add(id(y))
    method = "cross_entropy_labels" if node.op.integer_labels else "cross_entropy"
    helper = L.row_softmax(a)
    return [f"        {L.fresh_var(node)} = {helper}.{method}({L.var[id(a)]}, {L.var[id(t)]}, {y_code})"]
