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
    """Base class of every error graphc raises on bad input."""


class GraphError(GraphcError, ValueError):
    """The graph itself is malformed: mixed graphs, cycles, bad names."""


class SpecError(GraphError):
    """An einsum spec is malformed or does not fit its operands."""


class ShapeError(GraphError):
    """Shapes disagree: at declaration time, or between arrays at call time."""


class BindingError(GraphcError, ValueError):
    """A compiled function was called with missing, extra or ill-typed arrays."""


class GradError(GraphcError, ValueError):
    """A gradient was asked for that cannot be formed."""


class NumericsError(GraphcError, FloatingPointError):
    """``check_numerics=True`` found a NaN or Inf; the message names the node."""


class SerializationError(GraphcError, ValueError):
    """A saved graph or state file is malformed, of an unknown version or unsafe."""


class DataError(GraphcError, ValueError):
    """A data file is missing, truncated, malformed or fails its checksum."""
