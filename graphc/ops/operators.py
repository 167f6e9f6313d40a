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


def mean(x: Node, axis=None, name: str | None = None, keepdims: bool = False) -> Node:
    """Mean over ``axis``: the sum divided by the (possibly symbolic) number of summed items.

    ``keepdims=True`` keeps each averaged axis with size 1 (see :func:`graphc.sum`), so
    ``x - x.mean(1, keepdims=True)`` centres the rows; ``name`` names the mean itself.

    >>> import graphc as gc
    >>> g = gc.Graph("mean"); x = g.input("x", ("n", 3))
    >>> print(gc.explain(gc.mean(x, 0, name="m")))
    forward:
      sum1[i] = Σ_n x[n,i]    (sum1 = Σ_n x)
      m[i] = sum1[i]/|n|
    >>> (x - gc.mean(x, 1, keepdims=True)).shape
    ('n', 3)
    """
    axes = _axes(x, axis, "mean")
    total = contraction.sum(x, axes)
    for k, a in enumerate(axes):
        total = ew.div(total, dim_size(x.graph, x.shape[a]), name=name if k == len(axes) - 1 else None)
    return contraction.keep_axes(total, axes, x.ndim) if keepdims else total


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
    "sum": lambda a, axis=None, keepdims=False, name=None: contraction.sum(a, axis, name, keepdims),
    "mean": lambda a, axis=None, keepdims=False, name=None: mean(a, axis, name, keepdims),
}
for _name, _fn in _OPERATORS.items():
    setattr(Node, _name, _fn)
Node.T = property(lambda a: contraction.transpose(a), doc="The transpose (axes reversed); never materialised.")
