"""Python operators on nodes (``+ - * / ** @``, ``.T``, ``.sum()``, ``.mean()``) and ``mean``.

They are sugar over the ops' constructor functions, installed on :class:`Node`
here, after every op they build is imported, so the op modules import one
another in one direction only.
"""

from __future__ import annotations

from graphc.ops import contraction, elementwise as ew
from graphc.ops.contraction import _axes
from graphc.ops.leaves import dim_size
from graphc.ops.node import Node


def mean(x: Node, axis=None, name: str | None = None) -> Node:
    """Mean over ``axis``: the sum divided by the (possibly symbolic) number of summed items.

    >>> import graphc as gc
    >>> g = gc.Graph("mean"); x = g.input("x", ("n", 3))
    >>> print(gc.explain(gc.mean(x, 0, name="m")))
    forward:
      sum1[i] = Σ_n x[n,i]    (sum1 = Σ_n x)
      m[i] = sum1[i]/|n|
    """
    axes = _axes(x, axis, "mean")
    total = contraction.sum(x, axes)
    for k, a in enumerate(axes):
        total = ew.div(total, dim_size(x.graph, x.shape[a]), name=name if k == len(axes) - 1 else None)
    return total


_OPERATORS = {
    "__add__": lambda a, b: ew.add(a, b),
    "__radd__": lambda a, b: ew.add(b, a),
    "__sub__": lambda a, b: ew.sub(a, b),
    "__rsub__": lambda a, b: ew.sub(b, a),
    "__mul__": lambda a, b: ew.mul(a, b),
    "__rmul__": lambda a, b: ew.mul(b, a),
    "__truediv__": lambda a, b: ew.div(a, b),
    "__rtruediv__": lambda a, b: ew.div(b, a),
    "__pow__": lambda a, b: ew.power(a, b),
    "__rpow__": lambda a, b: ew.power(b, a),
    "__matmul__": lambda a, b: contraction.matmul(a, b),
    "__rmatmul__": lambda a, b: contraction.matmul(b, a),
    "__neg__": lambda a: ew.neg(a),
    "sum": lambda a, axis=None: contraction.sum(a, axis),
    "mean": lambda a, axis=None: mean(a, axis),
}
for _name, _fn in _OPERATORS.items():
    setattr(Node, _name, _fn)
Node.T = property(lambda a: contraction.transpose(a), doc="The transpose (axes reversed); never materialised.")
