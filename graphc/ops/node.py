"""The IR's core: :class:`Op` (what a node computes) and :class:`Node` (one value in a graph).

A node knows its graph, its op, its input nodes, its shape and its element kind,
and never changes after construction: passes build new nodes instead.  Two facts
about a node are kept outside it, in its graph's side tables, because they are
display and provenance only and never affect what is computed: its display name
(:meth:`Node.rename` may set it) and, for a derived node, the forward node and
operand it is the adjoint of (``origin``, for ``explain(steps=True)``).

Two dims agree only when they are equal: a symbolic ``"n"`` never silently
matches ``100``, and a size-1 dim never stretches.  Every op checks its operands
when it is declared, so a mismatch is reported where the user made it.

The Python operators on nodes (``+``, ``@``, ``.T``, ``.sum()``) are installed by
:mod:`graphc.ops.operators`, which imports the ops they build; this module
imports no op, so ``graphc.ops`` imports as a DAG.
"""

from __future__ import annotations

import numbers
import weakref
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from graphc.errors import GraphError
from graphc.ops.indices import format_shape, letters_for, out_letters
from graphc.ops.symbolic import sympy_module

if TYPE_CHECKING:
    from graphc.ops.graph import Graph

#: Element kinds a node can hold.  Floating nodes carry gradients; integer
#: nodes are labels and indices; booleans are masks.
KINDS = ("float", "int", "bool")


class Op:
    """What a node computes.  Subclasses are small value objects, one module each, holding
    every rule of their op side by side (see :mod:`graphc.ops.registry`):

    * ``key()`` identifies the op structurally: two nodes with equal keys and equal inputs
      compute the same value (the compiler's CSE relies on it);
    * ``vjp(node, g, wanted)`` returns, for each input ``i`` with ``wanted[i]``, the node
      holding ``g`` pulled back through this op (or None for no gradient).  Rules build
      ordinary IR nodes, so the backward graph can be differentiated again;
    * ``expression(node, name_of)`` is the node's right-hand side in index notation, a sympy
      expression (text and LaTeX are printed from it); ``matrix_form`` the matrix form, if any;
    * ``fields(codec)`` and the classmethod ``load(...)`` are the op's part of the graph file format;
    * lowering rules per backend are registered with :func:`graphc.ops.registry.lowering`.
    """

    kind_name = "op"
    #: the op's name in graph files (None: not saved), the number of inputs a file entry
    #: has (None: one or more), and the entry's op fields
    file_name: str | None = None
    file_arity: int | None = None
    file_fields: frozenset = frozenset()
    file_optional: frozenset = frozenset()
    #: whether explain gives a node of this op a line of its own (constants are written inline)
    listed = True

    def key(self) -> tuple:
        return (type(self).__name__,)

    def vjp(self, node: "Node", g: "Node", wanted: Sequence[bool]) -> list:
        raise NotImplementedError(f"{type(self).__name__} has no derivative rule")

    def jvp(self, node: "Node", tangents: Sequence) -> "Node | None":
        """Forward mode: the tangent of ``node`` given its operands' (None where an operand has
        none), built from IR nodes; None for no tangent.  ``NotImplemented`` (the default)
        leaves it to :mod:`graphc.compiler.higher_order`'s rules for the core ops."""
        return NotImplemented

    def describe(self) -> str:
        return self.kind_name

    def index_letters(self, node: "Node") -> str:
        """The letters ``node`` is written with on the left of ``name[...] = ...``: by default
        its operand's when it has one of the same shape (softmax and friends), so a
        derivation reads with consistent indices."""
        if len(node.inputs) == 1 and node.inputs[0].shape == node.shape:
            return letters_of(node.inputs[0])
        return letters_for(node.shape, set())

    def expression(self, node: "Node", name_of):
        """The sympy right-hand side of ``node`` (``name_of(n)`` gives an operand's display name)."""
        sp = sympy_module()
        return sp.Function(self.kind_name)(*[sp.Symbol(name_of(i)) for i in node.inputs])

    def kept_axes(self, node: "Node") -> frozenset:
        """The axes of ``node`` that a reduction kept with ``keepdims=True`` (or a broadcast
        made of size 1): size-1 axes that stretch against any dim in an elementwise op, as
        numpy's do.  Every other size-1 axis must match exactly.  None by default."""
        return frozenset()

    def view_of(self, node: "Node") -> "Node | None":
        """The operand whose memory ``node``'s value may share (a transpose or broadcast is a
        view in every backend), or None when the value is an array of its own."""
        return None

    def adjoint_steps(self, adjoint: "Node", forward_lhs: str) -> list[str] | None:
        """``explain(steps=True)``: the lines deriving ``adjoint`` (an operand's adjoint of a
        node of this op, written ``forward_lhs``) by hand, or None to show the result only."""
        return None

    def conditions(self, node: "Node") -> str | None:
        """Where the right-hand side holds, when not everywhere: the bounds of a gather form
        (``0 ≤ u-p < 24``), a padding's border.  Printed after the formula; None by default."""
        return None

    def explain_note(self, node: "Node") -> str | None:
        """A remark explain adds to the node's line (how a fused op runs), or None."""
        return None

    def matrix_form(self, node: "Node", name_of) -> str | None:
        """``dY·Wᵀ``-style text when the node is a matrix expression; None otherwise."""
        return None

    def fields(self, codec) -> dict:
        """The op's fields in a graph file (besides inputs, shape, kind and name).  ``codec``
        is the serializer's toolbox (expressions to JSON, ...), so ops import no serializer;
        the classmethod ``load(graph, entry, inputs, shape, name, codec)`` rebuilds the node."""
        return {}


class Node:
    """One value in the graph; immutable (see the module docstring for what lives beside it).

    >>> import graphc as gc
    >>> g = gc.Graph("node"); x = g.input("x", ("n", 3))
    >>> y = (2 * x).rename("y")
    >>> y.name, y.shape, y.kind
    ('y', ('n', 3), 'float')
    """

    __slots__ = ("graph", "op", "inputs", "shape", "kind", "id", "derived", "__weakref__")
    # numpy defers to the node's operators (np.float32(2) * x is x's __rmul__), never
    # wrapping a node in an object array
    __array_ufunc__ = None

    def __init__(self, graph: "Graph", op: Op, inputs: Sequence["Node"], shape, kind: str,
                 name: str | None = None, *, derived: bool | None = None):
        if name is not None and (not isinstance(name, str) or not name):
            # e.g. ``gc.sigmoid(a, b)``: the second operand lands in ``name``.
            raise GraphError(f"{op.kind_name}: a node name must be a non-empty string, got {name!r}")
        init = object.__setattr__
        init(self, "graph", graph)
        init(self, "op", op)
        init(self, "inputs", tuple(inputs))
        init(self, "shape", tuple(shape))
        init(self, "kind", kind)
        init(self, "id", graph.new_id())
        # Made by grad (part of a backward graph): explain sections it so.
        init(self, "derived", graph.deriving_now if derived is None else bool(derived))
        if name is not None:
            graph.names[self.id] = (name, False)

    def __setattr__(self, attr, value):
        raise AttributeError(f"graph nodes are immutable: cannot set {attr!r} of {self!r}; build a new node")

    # -- display name and provenance: the graph's side tables -----------------------------
    @property
    def name(self) -> str:
        entry = self.graph.names.get(self.id)
        return entry[0] if entry is not None else f"{self.op.kind_name}{self.id}"

    @property
    def auto_named(self) -> bool:
        """Whether the name was generated (``matmul6``) rather than given."""
        entry = self.graph.names.get(self.id)
        return entry is None or entry[1]

    def rename(self, name: str) -> "Node":
        """Give this node a display name (used by explain and in comments, never as code)."""
        if not isinstance(name, str) or not name:
            raise GraphError(f"a node name must be a non-empty string, got {name!r}")
        self.graph.names[self.id] = (name, False)
        return self

    def with_inputs(self, inputs: Sequence["Node"]) -> "Node":
        """This node reading ``inputs`` instead (itself when they are its own): the same op,
        shape, kind, name, provenance and derived flag.  How passes rebuild a graph."""
        inputs = tuple(inputs)
        if len(inputs) == len(self.inputs) and all(a is b for a, b in zip(inputs, self.inputs)):
            return self
        new = Node(self.graph, self.op, inputs, self.shape, self.kind, derived=self.derived)
        new.copy_display(self)
        return new

    def copy_display(self, other: "Node") -> None:
        """Give this node ``other``'s name and origin (side tables only; a rebuilt node's label)."""
        graph = self.graph
        graph.names[self.id] = graph.names.get(other.id, (other.name, True))  # a generated name stays generated
        if other.origin is not None:
            graph.set_origin(self, *other.origin)

    @property
    def origin(self) -> tuple | None:
        """``(forward node, operand index)`` when this node is that operand's adjoint."""
        return self.graph.origins.get(self.id)

    # -- introspection ---------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def is_leaf(self) -> bool:
        return not self.inputs

    def __repr__(self) -> str:
        return f"<{self.name}: {self.op.describe()} {format_shape(self.shape)} {self.kind}>"

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:  # identity: ``==`` on nodes is not elementwise
        return self is other

    def __bool__(self) -> bool:
        raise GraphError(f"node {self.name!r} has no truth value until the graph runs; compare arrays, not nodes")


_KEPT: "weakref.WeakKeyDictionary[Node, frozenset]" = weakref.WeakKeyDictionary()


def kept_axes(node: Node) -> frozenset:
    """``node.op.kept_axes(node)``, remembered per node: an op asks its operands', so a long
    elementwise chain of size-1 axes (an EMA over ``(1, H)`` states) is walked once, never
    recursively from its end."""
    if 1 not in node.shape:
        return frozenset()
    got = _KEPT.get(node)
    if got is None:
        got = _KEPT[node] = node.op.kept_axes(node)
    return got


def letters_of(node: Node) -> str:
    """The index letters ``node`` is written with: its op's choice, when that is one distinct
    letter per axis, else ``i, j, k, ...``."""
    letters = node.op.index_letters(node)
    rank = node.ndim
    return letters if len(letters) == rank and len(set(letters)) == rank else out_letters(rank)


def same_graph(op_name: str, nodes: Sequence[Node]):
    """The one graph all ``nodes`` belong to; mixing graphs is a declaration error."""
    graphs = {id(n.graph): n.graph for n in nodes}
    if len(graphs) != 1:
        names = ", ".join(f"{n.name!r} (graph {n.graph.name!r})" for n in nodes)
        raise GraphError(f"{op_name}: operands come from different graphs: {names}")
    return next(iter(graphs.values()))


def as_node(value: Any, graph, op_name: str) -> Node:
    """Accept a node of ``graph`` or a real scalar -- Python's, numpy's, a 0-d array -- made a constant."""
    if isinstance(value, Node):
        if value.graph is not graph:
            raise GraphError(
                f"{op_name}: operand {value.name!r} belongs to graph {value.graph.name!r}, not {graph.name!r}"
            )
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):  # numpy scalars too
        return graph.constant(float(value))
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "fiu":  # a 0-d array
        return graph.constant(float(value))
    raise GraphError(
        f"{op_name}: operand {value!r} of type {type(value).__name__} is neither a graph node nor a scalar; "
        "arrays enter a graph as g.input(...) or g.param(...)"
    )
