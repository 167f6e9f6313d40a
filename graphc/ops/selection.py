"""Comparisons (bool masks) and ``where``: sympy relational and Piecewise expressions.

``a > b`` is an elementwise op whose expression is a sympy relation, so its node holds
bool values (a mask) and takes no gradient.  ``where(cond, a, b)`` is the Piecewise
``a if cond else b``: the comparison ``cond`` is written into the Piecewise (its operands
become where's), so the derivative is sympy's: the gradient flows to the chosen branch
only, and none to the operands of the comparison.  The condition must be a comparison
node (a bool input cannot be a Piecewise condition in the printers yet).
"""

from __future__ import annotations

from typing import Sequence

from graphc.errors import GraphError
from graphc.ops.broadcasting import align
from graphc.ops.elementwise import Elementwise, ElementwiseFn, make
from graphc.ops.node import Node, as_node, same_graph
from graphc.ops.symbolic import sympy_module


def _compare(name: str, a, b, node_name=None) -> Node:
    given = [o for o in (a, b) if isinstance(o, Node)]
    if not given:
        raise GraphError(f"{name}: at least one operand must be a graph node, got {(a, b)!r}")
    graph = same_graph(name, given)
    nodes = [as_node(o, graph, name) for o in (a, b)]
    for n in nodes:
        if n.kind != "float":
            raise GraphError(f"{name}: operand {n.name!r} holds {n.kind} values; comparisons take floats")
    nodes, in_indices, out, shape = align(name, nodes)
    fn = _RELATIONS[name]
    return make(fn, nodes, in_indices, out, shape, name=node_name)


def _relation(name, op):
    return ElementwiseFn(name, 2, op)


_RELATIONS = {
    "greater": _relation("greater", lambda a, b: a > b),
    "greater_equal": _relation("greater_equal", lambda a, b: a >= b),
    "less": _relation("less", lambda a, b: a < b),
    "less_equal": _relation("less_equal", lambda a, b: a <= b),
}


def greater(a, b, name: str | None = None) -> Node:
    """``a > b`` elementwise, a bool mask (also ``a > b`` on nodes); no gradient flows through it.

    >>> import numpy as np, graphc as gc
    >>> g = gc.Graph("cmp"); x = g.input("x", (3,))
    >>> gc.compile(x > 0)(x=np.array([-1.0, 0.0, 2.0]))
    array([False, False,  True])
    """
    return _compare("greater", a, b, name)


def greater_equal(a, b, name: str | None = None) -> Node:
    """``a >= b`` elementwise, a bool mask (also ``a >= b`` on nodes).

    >>> import numpy as np, graphc as gc
    >>> g = gc.Graph("cmp"); x = g.input("x", (3,))
    >>> gc.compile(gc.greater_equal(x, 0))(x=np.array([-1.0, 0.0, 2.0]))
    array([False,  True,  True])
    """
    return _compare("greater_equal", a, b, name)


def less(a, b, name: str | None = None) -> Node:
    """``a < b`` elementwise, a bool mask (also ``a < b`` on nodes).

    >>> import numpy as np, graphc as gc
    >>> g = gc.Graph("cmp"); x = g.input("x", (3,))
    >>> gc.compile(x < 0)(x=np.array([-1.0, 0.0, 2.0]))
    array([ True, False, False])
    """
    return _compare("less", a, b, name)


def less_equal(a, b, name: str | None = None) -> Node:
    """``a <= b`` elementwise, a bool mask (also ``a <= b`` on nodes).

    >>> import numpy as np, graphc as gc
    >>> g = gc.Graph("cmp"); x = g.input("x", (3,))
    >>> gc.compile(x <= 0)(x=np.array([-1.0, 0.0, 2.0]))
    array([ True,  True, False])
    """
    return _compare("less_equal", a, b, name)


def where(cond: Node, a, b, name: str | None = None) -> Node:
    """``a`` where ``cond`` holds, else ``b`` (numpy's ``where``): a sympy Piecewise.

    The gradient flows to the chosen branch only: ``∂/∂a = [cond]``, ``∂/∂b = [not cond]``;
    none flows into a comparison's operands.  Shapes follow the elementwise rule (exact dims;
    kept axes stretch).

    >>> import numpy as np, graphc as gc
    >>> g = gc.Graph("where"); x = g.input("x", ("n",))
    >>> y = gc.where(x > 0, x, 0.1 * x, name="y")  # leaky ReLU
    >>> fn = gc.compile([y, *gc.grad(y.sum(), [x])])
    >>> fn(x=np.array([-2.0, 3.0]))
    (array([-0.2,  3. ]), array([0.1, 1. ]))
    """
    sp = sympy_module()
    if not isinstance(cond, Node) or cond.kind != "bool" or not isinstance(cond.op, Elementwise):
        raise GraphError(f"where: the condition must be a comparison node such as x > 0, got {cond!r}")
    graph = cond.graph
    branches = [as_node(v, graph, "where") for v in (a, b)]
    for n in branches:
        if n.kind != "float":
            raise GraphError(f"where: branch {n.name!r} holds {n.kind} values; the branches take floats")
    nodes, in_indices, out, shape = align("where", [cond, *branches])
    cond_node, cond_idx = nodes[0], in_indices[0]
    sa, sb = sp.Symbol("a", real=True), sp.Symbol("b", real=True)
    op = cond_node.op
    rename = dict(zip(op.out_indices, cond_idx))
    syms = [sp.Symbol(f"c{k}", real=True) for k in range(len(op.fn.symbols))]
    condition = op.fn.expr.xreplace(dict(zip(op.fn.symbols, syms)))
    operands = list(cond_node.inputs)
    indices = ["".join(rename[c] for c in idx) for idx in op.in_indices]
    fn = ElementwiseFn.from_expr("where", (*syms, sa, sb), sp.Piecewise((sa, condition), (sb, True)))
    return make(fn, [*operands, *nodes[1:]], [*indices, *in_indices[1:]], out, shape, name=name)


def _operators() -> dict:
    return {
        "__gt__": lambda a, b: greater(a, b),
        "__ge__": lambda a, b: greater_equal(a, b),
        "__lt__": lambda a, b: less(a, b),
        "__le__": lambda a, b: less_equal(a, b),
    }


for _name, _fn in _operators().items():
    setattr(Node, _name, _fn)

__all__: Sequence[str] = ("greater", "greater_equal", "less", "less_equal", "where")
