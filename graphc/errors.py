"""The exceptions graphc raises.

Every error a user can cause derives from :class:`GraphcError`, so one
``except graphc.GraphcError`` catches them all.  Messages name the op, its
einsum spec or indices, and the shapes or names involved.
"""

from __future__ import annotations

__all__ = [
    "GraphcError",
    "GraphError",
    "ShapeError",
    "SpecError",
    "BindingError",
    "GradError",
    "NumericsError",
    "SerializationError",
    "DataError",
]


class GraphcError(Exception):
    """Base class of every error graphc raises on bad input.

    >>> import graphc as gc
    >>> g = gc.Graph("g"); x = g.input("x", (2,)); y = gc.Graph("h").input("y", (2,))
    >>> try:
    ...     x + y
    ... except gc.GraphcError as e:
    ...     print(type(e).__name__)
    GraphError
    """


class GraphError(GraphcError, ValueError):
    """The graph itself is malformed: mixed graphs, cycles, bad names.

    >>> import graphc as gc
    >>> g = gc.Graph("g"); x = g.input("x", (2,))
    >>> g.input("x", (3,))
    Traceback (most recent call last):
        ...
    graphc.errors.GraphError: graph 'g': the name 'x' is already taken by <x: input (2,) float>
    """


class SpecError(GraphError):
    """An einsum spec is malformed or does not fit its operands.

    >>> import graphc as gc
    >>> g = gc.Graph("g"); x = g.input("x", (2, 3))
    >>> gc.einsum("ij,jk->ik", x)
    Traceback (most recent call last):
        ...
    graphc.errors.SpecError: einsum 'ij,jk->ik': spec 'ij,jk->ik' names 2 operand(s) but 1 were given
    """


class ShapeError(GraphError):
    """Shapes disagree: at declaration time, or between arrays at call time.

    >>> import graphc as gc
    >>> g = gc.Graph("g"); x = g.input("x", ("n", 3)); W = g.param("W", (4, 2))
    >>> x @ W
    Traceback (most recent call last):
        ...
    graphc.errors.ShapeError: matmul: inner dims differ: 'x' (n, 3) @ 'W' (4, 2) (3 vs 4)
    """


class BindingError(GraphcError, ValueError):
    """A compiled function was called with missing, extra or ill-typed arrays.

    >>> import numpy as np, graphc as gc
    >>> g = gc.Graph("g"); x = g.input("x", ("n", 3))
    >>> fn = gc.compile(gc.sum(x))
    >>> fn(x=np.ones((2, 4)))
    Traceback (most recent call last):
        ...
    graphc.errors.BindingError: 'x': axis 1 must be 3 (declared shape (n, 3)), got shape (2, 4)
    """


class GradError(GraphcError, ValueError):
    """A gradient was asked for that cannot be formed.

    >>> import graphc as gc
    >>> g = gc.Graph("g"); x = g.input("x", ("n", 3))
    >>> gc.grad(gc.tanh(x, name="y"), [x])
    Traceback (most recent call last):
        ...
    graphc.errors.GradError: grad: output 'y' has shape (n, 3), not a scalar; pass seed=<node of that shape> (the cotangent), or reduce it first (e.g. .sum())
    """


class NumericsError(GraphcError, FloatingPointError):
    """``check_numerics=True`` found a NaN or Inf; the message names the node.

    >>> import numpy as np, graphc as gc
    >>> g = gc.Graph("g"); x = g.input("x", (2,))
    >>> fn = gc.compile(gc.log(x), check_numerics=True)
    >>> fn(x=np.array([1.0, np.nan]))
    Traceback (most recent call last):
        ...
    graphc.errors.NumericsError: NaN in input 'x' at index (1,)
    """


class SerializationError(GraphcError, ValueError):
    """A saved graph or state file is malformed, of an unknown version or unsafe.

    >>> import io, graphc as gc
    >>> gc.load_graph(io.BytesIO(b'{"format": "something else"}'))
    Traceback (most recent call last):
        ...
    graphc.errors.SerializationError: not a graphc graph file: format is 'something else', expected 'graphc-graph'
    """


class DataError(GraphcError, ValueError):
    """A data file is missing, truncated, malformed or fails its checksum.

    >>> import tempfile
    >>> from graphc.datasets import load_mnist
    >>> load_mnist(tempfile.mkdtemp(), download=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    graphc.errors.DataError: MNIST files missing from ...
    """
