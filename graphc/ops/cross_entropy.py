"""Softmax cross-entropy: the seed's fused loss, every rule of it in this one module.

``softmax_cross_entropy`` is one op, as in the seed, because its gradient fuses
into ``(y - t)/N`` (integer labels: subtract 1 at the label, then divide by N).
That rule assumes each row of ``t`` sums to 1, as one-hot labels and probability
targets do.  The derivative rule is built from IR nodes, so second derivatives work.
"""

from __future__ import annotations

from graphc.errors import GraphError, SerializationError, ShapeError
from graphc.ops.elementwise import ElementwiseFn, make
from graphc.ops.indices import format_shape
from graphc.ops.leaves import dim_size
from graphc.ops.fused import KeptSoftmax
from graphc.ops.nn import check_float, log_softmax, one_hot, softmax
from graphc.ops.node import Node, Op, letters_of
from graphc.ops.registry import lowering, saved_as
from graphc.ops.symbolic import sympy_module

# ∂/∂a of mean_n(-Σ_c t log softmax(a)) pulled back from g, with rows of t summing to 1.
_CE_GRAD = ElementwiseFn("softmax_ce_grad", 4, lambda y, t, g, n: g * (y - t) / n)
_CE_TARGET_GRAD = ElementwiseFn("softmax_ce_target_grad", 3, lambda ls, g, n: -g * ls / n)


@saved_as("softmax_cross_entropy")
class SoftmaxCrossEntropy(Op):
    """Mean over the batch of ``-Σ_c t·log softmax(a)``; ``t`` one-hot (float) or integer labels."""

    kind_name = "softmax_ce"
    file_arity = 2
    file_fields = frozenset({"integer_labels"})

    def __init__(self, integer_labels: bool):
        self.integer_labels = integer_labels

    def key(self):
        return ("softmax_ce", self.integer_labels)

    def describe(self):
        return "softmax cross-entropy" + (" (integer labels)" if self.integer_labels else "")

    def vjp(self, node, g, wanted):
        a, t = node.inputs
        idx = letters_of(a)
        n = dim_size(a.graph, a.shape[0]) if a.ndim > 1 else a.graph.constant(1.0)
        grads = [None, None]
        if wanted[0]:
            target = one_hot(t, a.shape[-1]) if self.integer_labels else t
            y = softmax(a, name=f"softmax_{a.name}")
            grads[0] = make(_CE_GRAD, [y, target, g, n], [idx, idx, "", ""], idx, a.shape)
            node.graph.set_origin(grads[0], node, 0)
        if wanted[1] and not self.integer_labels:
            grads[1] = make(_CE_TARGET_GRAD, [log_softmax(a), g, n], [idx, "", ""], idx, a.shape)
        return grads

    def expression(self, node, name_of):
        a, t = node.inputs
        sp = sympy_module()
        return sp.Function("softmax_cross_entropy")(sp.Symbol(name_of(a)), sp.Symbol(name_of(t)))

    def fields(self, codec):
        return {"integer_labels": bool(self.integer_labels)}

    @classmethod
    def load(cls, graph, e, inputs, shape, name, codec):
        node = softmax_cross_entropy(*inputs, name=name)
        if node.op.integer_labels is not e["integer_labels"]:
            raise SerializationError(f"integer_labels is {e['integer_labels']!r} but the targets hold "
                                     f"{inputs[1].kind} values")
        return node


def softmax_cross_entropy(a: Node, t: Node, name: str | None = None) -> Node:
    """The seed's CEE_Softmax: mean over rows of ``-Σ_c t·log softmax(a)``.

    ``t`` is either float targets of ``a``'s shape (one-hot rows, or rows summing to 1)
    or integer labels of shape ``a.shape[:-1]`` (declare them with ``kind="int"``).

    >>> import numpy as np, graphc as gc
    >>> g = gc.Graph("loss"); a = g.input("a", ("n", 10)); t = g.input("t", ("n", 10))
    >>> loss = gc.softmax_cross_entropy(a, t)
    >>> print(gc.explain(gc.grad(loss, [a])))
    backward:
      softmax_a[n,i] = softmax(a[n,i])
      da[n,i] = (-t[n,i] + softmax_a[n,i])/|n|
    >>> round(float(gc.compile(loss)(a=np.zeros((2, 10)), t=np.eye(10)[[3, 7]])), 4)  # log 10
    2.3026
    """
    check_float("softmax_cross_entropy", a)
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


# -- lowering, per backend ---------------------------------------------------------------------
@lowering("array_api", SoftmaxCrossEntropy)
def _array_api(node, L):
    helper = "softmax_cross_entropy_labels" if node.op.integer_labels else "softmax_cross_entropy"
    a, t = node.inputs
    return f"rt.{helper}(xp, {L.var(a)}, {L.var(t)})"


@lowering("numpy", SoftmaxCrossEntropy)
def _numpy(node, L):
    """One pass with rt.NpRowSoftmax, which also writes the softmax a KeptSoftmax reader
    (made by the numpy backend's rewrites) holds: the gradient's softmax is not computed again."""
    a, t = node.inputs
    y = next((r for r in L.schedule.readers_of(node) if isinstance(r.op, KeptSoftmax)), None)
    y_code = "None"
    if y is not None:
        y_code = L.output_buffer(y)
        L.done.add(id(y))
    method = "cross_entropy_labels" if node.op.integer_labels else "cross_entropy"
    helper = L.row_softmax(a)
    return [f"        {L.fresh_var(node)} = {helper}.{method}({L.var[id(a)]}, {L.var[id(t)]}, {y_code})"]
