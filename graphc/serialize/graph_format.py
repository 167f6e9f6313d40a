"""The versioned graph JSON format: ``graph_to_dict``/``graph_from_dict``, ``save_graph``/``load_graph``.

``save_graph(outputs, path)`` writes every leaf of the outputs' graph and every node
the outputs depend on, inputs before users; ``load_graph(path)`` rebuilds a new
:class:`~graphc.ops.node.Graph` and returns ``(graph, outputs)``.  Format, version 1::

    {"format": "graphc-graph", "version": 1, "graph": "<graph name>",
     "leaves":  [{"id": 0, "name": "x", "op": "input" | "param", "shape": ["n", 784], "kind": "float"}, ...],
     "nodes":   [{"id": 6, "op": "einsum", "inputs": [0, 2], "shape": ["n", 50], "kind": "float",
                  "name": "matmul6", "auto_name": true, "derived": true, "origin": [5, 1], ...op fields}, ...],
     "outputs": [11, 22]}

A dim is an int (0 .. 2**40) or a dim name (a non-empty printable string); a shape has at
most 32 dims.  ``inputs`` and ``outputs`` name ids defined *earlier* in the file (leaves
first), so a file cannot describe a cycle.  ``auto_name`` (the name was generated),
``derived`` (made by ``grad``, for explain) and ``origin`` ([forward node id, operand],
for ``explain(steps=True)``) are optional.  Op fields by ``op``:

==========================  =============================================================
``constant``                ``value``: a finite number
``zeros``, ``delta``        none (the shape says it all; a delta's shape is ``[d, d]``)
``dim_size``                ``dim``: the dim name
``einsum``                  ``spec``: ``"ij,jk->ik"`` (output letters found in no input
                            broadcast; their dims come from ``shape``); ``label``: how the
                            user wrote it (``matmul``, ``sum``, ...)
``elementwise``             ``fn``: the function's name; ``symbols``: its argument symbols;
                            ``expr``: the expression; ``in_indices``; ``out_indices``
``softmax``, ``log_softmax``, ``argmax``   none
``softmax_cross_entropy``   ``integer_labels``: bool
``one_hot``                 ``classes``: a dim
==========================  =============================================================

An expression is a JSON tree, never code: ``["Symbol", "x0", {"real": true}]`` (in
``symbols``; inside ``expr`` a symbol is ``["Symbol", "x0"]``, one of ``symbols``),
``["Integer", 3]``, ``["Rational", 1, 2]``, ``["Float", "0.5", 53]`` (decimal text, bits of
precision), constants such as ``["Pi"]``, ``["BooleanTrue"]``, ``["Piecewise", [[value,
cond], ...]]`` and ``[class, arg, ...]`` for the classes in
:data:`~graphc.serialize.expressions.SYMPY_FUNCTIONS`.  Loading rebuilds it with those sympy
constructors and ``evaluate=False`` (no arithmetic on untrusted numbers); nothing is
``eval``-ed or ``sympify``-ed from text.  A Piecewise inside
a condition is refused (sympy folds those in exponential time; sympy never leaves one there).

Everything is checked; the ops re-check shapes.  Any problem raises
:class:`~graphc.errors.SerializationError` naming the node.  Limits: files of at most
``MAX_BYTES`` (64 MiB), dims up to 2**40, 32 axes, expressions 200 levels deep, integers
up to 2**64.  A custom elementwise function keeps its expression but not its
``inverse``/``derivatives`` hints (graphc's built-in functions are restored by name).

Graph files are written atomically via :func:`~graphc.serialize.atomic.atomic_write`;
expressions go through :mod:`graphc.serialize.expressions`.
"""

from __future__ import annotations

import functools
import json

import graphc.ops  # noqa: F401 - every built-in op registers its file name on import
from graphc.errors import GraphcError, SerializationError
from graphc.ops import cross_entropy, elementwise as ew, nn
from graphc.ops.graph import Graph
from graphc.ops.indices import LETTERS
from graphc.ops.leaves import Input, Param
from graphc.ops.node import KINDS, Node
from graphc.ops.registry import FILE_OPS
from graphc.serialize.atomic import atomic_write
from graphc.serialize.files import open_regular_file
from graphc.serialize.expressions import _short, expr_from_json, expr_to_json

FORMAT, VERSION = "graphc-graph", 1
MAX_BYTES = 64 << 20  # a graph file larger than this is refused unread
MAX_DIM, MAX_RANK = 2**40, 32


# -- graphs: saving ---------------------------------------------------------------------------
def _outputs(outputs) -> list:
    outs = [outputs] if isinstance(outputs, Node) else list(outputs)
    if not outs or not all(isinstance(o, Node) for o in outs):
        raise SerializationError(f"expected a graph node or a non-empty list of nodes, got {_short(outputs)}")
    if any(o.graph is not outs[0].graph for o in outs):
        raise SerializationError("the outputs belong to different graphs; a graph file holds one graph")
    return outs


def _op_fields(node: Node) -> dict:
    """The file's ``op`` and op fields for ``node``, from its op's registered file name and fields."""
    name = type(node.op).file_name
    if name is None or FILE_OPS.get(name) is not type(node.op):  # a subclass may mean something else
        raise SerializationError(f"cannot save node {node.name!r}: op {type(node.op).__name__} has no file format")
    return {"op": name, **node.op.fields(CODEC)}


def graph_to_dict(outputs, *, name: str | None = None) -> dict:
    """The JSON-ready dict of the module docstring: all leaves, then the outputs' nodes in topological order.

    >>> import graphc as gc
    >>> from graphc.serialize import graph_to_dict
    >>> g = gc.Graph("g"); x = g.input("x", ("n",))
    >>> d = graph_to_dict(gc.tanh(x, name="y"))
    >>> d["format"], [leaf["name"] for leaf in d["leaves"]]
    ('graphc-graph', ['x'])
    """
    from graphc.compiler.walk import toposort

    outs = _outputs(outputs)
    graph = outs[0].graph
    leaves = list(graph.leaves.values())
    leaf_ids = {id(leaf) for leaf in leaves}
    order = [n for n in toposort(outs) if id(n) not in leaf_ids]
    ids = {id(n): k for k, n in enumerate(leaves + order)}
    leaf_entries = [{"id": ids[id(n)], "name": n.name, "op": "param" if type(n.op) is Param else "input",
                     "shape": list(_shape(list(n.shape), f"leaf {n.name!r}")), "kind": n.kind} for n in leaves]
    entries = []
    for node in order:
        if type(node.op) in (Input, Param):
            raise SerializationError(f"cannot save {node.name!r}: it is not a leaf registered in graph {graph.name!r}")
        fields = _op_fields(node)
        entry = {"id": ids[id(node)], "op": fields.pop("op"), "inputs": [ids[id(i)] for i in node.inputs], **fields,
                 "shape": list(_shape(list(node.shape), f"node {node.name!r}")), "kind": node.kind, "name": node.name}
        if node.auto_named:
            entry["auto_name"] = True
        if node.derived:
            entry["derived"] = True
        if node.origin is not None and id(node.origin[0]) in ids:
            entry["origin"] = [ids[id(node.origin[0])], node.origin[1]]
        entries.append(entry)
    return {"format": FORMAT, "version": VERSION, "graph": graph.name if name is None else name,
            "leaves": leaf_entries, "nodes": entries, "outputs": [ids[id(o)] for o in outs]}


def _dumps(d: dict) -> str:
    """JSON with one leaf or node per line: diffable, and readable without a viewer."""
    def one(v):
        return json.dumps(v, ensure_ascii=False, allow_nan=False)

    lines = [one({k: d[k] for k in ("format", "version", "graph")})[:-1] + ","]
    for key in ("leaves", "nodes"):
        lines.append(f' "{key}": [' + ",".join(f"\n  {one(e)}" for e in d[key]) + "\n ],")
    lines.append(f' "outputs": {one(d["outputs"])}\n}}\n')
    return "\n".join(lines)


def save_graph(outputs, path_or_file, *, name: str | None = None) -> None:
    """Save the graph computing ``outputs`` (a node or a list) to a path (atomically) or an open file.

    >>> import os, tempfile, graphc as gc
    >>> g = gc.Graph("saved"); x = g.input("x", ("n",))
    >>> path = os.path.join(tempfile.mkdtemp(), "tanh.json")
    >>> gc.save_graph(gc.tanh(x, name="y"), path)
    >>> graph, (y,) = gc.load_graph(path)
    >>> y.name, y.shape
    ('y', ('n',))
    """
    text = _dumps(graph_to_dict(outputs, name=name))
    if hasattr(path_or_file, "write"):
        try:
            path_or_file.write(text)
        except TypeError:  # a binary file
            path_or_file.write(text.encode("utf-8"))
    else:
        atomic_write(path_or_file, lambda f: f.write(text.encode("utf-8")))


# -- graphs: loading ---------------------------------------------------------------------------
def _keys(d, required: set, optional: set, where: str) -> dict:
    if not isinstance(d, dict):
        raise SerializationError(f"{where}: expected a JSON object, got {_short(d)}")
    missing, unknown = sorted(required - d.keys()), sorted(d.keys() - required - optional)
    if missing:
        raise SerializationError(f"{where}: missing field(s) {', '.join(map(repr, missing))}")
    if unknown:
        raise SerializationError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}")
    return d


def _list(v, what: str) -> list:
    if not isinstance(v, list):
        raise SerializationError(f"{what} must be a JSON list, got {_short(v)}")
    return v


def _str(v, what: str) -> str:
    if not isinstance(v, str) or not v:
        raise SerializationError(f"{what} must be a non-empty string, got {_short(v)}")
    return v


def _dim(d, where: str):
    if isinstance(d, str) and d and d.isprintable() and len(d) <= 256:
        return d
    if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= MAX_DIM:
        raise SerializationError(f"{where}: dim {_short(d)} must be an int in 0..2**40 or a printable dim name")
    return d


def _shape(v, where: str) -> tuple:
    dims = _list(v, f"{where}: shape")
    if len(dims) > MAX_RANK:
        raise SerializationError(f"{where}: shape has {len(dims)} axes; at most {MAX_RANK} are allowed")
    return tuple(_dim(d, where) for d in dims)


def _ref(i, built: dict, where: str) -> Node:
    if isinstance(i, bool) or not isinstance(i, int) or i not in built:
        raise SerializationError(f"{where}: id {_short(i)} refers to no node defined before it "
                                 "(inputs must come earlier in the file, so cycles are impossible)")
    return built[i]


def _letters(v, what: str) -> str:
    if not isinstance(v, str) or any(c not in LETTERS for c in v) or len(set(v)) != len(v):
        raise SerializationError(f"{what} must be distinct index letters, got {_short(v)}")
    return v


@functools.lru_cache(maxsize=None)
def _builtin_fns() -> dict:
    """graphc's own elementwise functions by name: loading restores them with their inverse/derivative hints."""
    return {v.name: v for mod in (ew, nn, cross_entropy) for v in vars(mod).values() if isinstance(v, ew.ElementwiseFn)}


class _Codec:
    """The serializer's toolbox, handed to each op's ``fields``/``load`` so ops import no serializer."""

    expr_to_json = staticmethod(expr_to_json)
    expr_from_json = staticmethod(expr_from_json)
    short = staticmethod(_short)
    error = SerializationError
    builtin_fns = staticmethod(_builtin_fns)

    dim = staticmethod(_dim)
    str = staticmethod(_str)
    list = staticmethod(_list)
    letters = staticmethod(_letters)


CODEC = _Codec()
_NODE_FIELDS = {"id", "op", "inputs", "shape", "kind", "name"}


def _build_node(graph: Graph, e: dict, built: dict, where: str) -> Node:
    op = e.get("op")
    if not isinstance(op, str) or op not in FILE_OPS:
        raise SerializationError(f"{where}: unknown op {_short(op)}; known ops: {', '.join(FILE_OPS)}")
    cls = FILE_OPS[op]
    arity = cls.file_arity
    _keys(e, _NODE_FIELDS | cls.file_fields, {"auto_name", "derived", "origin"} | cls.file_optional, where)
    inputs = [_ref(i, built, where) for i in _list(e["inputs"], f"{where}: inputs")]
    if (not inputs) if arity is None else len(inputs) != arity:
        raise SerializationError(f"{where}: {op} takes {'one or more' if arity is None else arity} input(s), "
                                 f"got {len(inputs)}")
    shape, name, kind = _shape(e["shape"], where), _str(e["name"], f"{where}: name"), e["kind"]
    if kind not in KINDS or any(not isinstance(e.get(f, False), bool) for f in ("auto_name", "derived")):
        raise SerializationError(f"{where}: kind must be one of {KINDS} and auto_name/derived booleans")
    try:
        with graph.deriving(e.get("derived", False)):
            node = cls.load(graph, e, inputs, shape, name, CODEC)
    except SerializationError as err:
        raise SerializationError(f"{where} ({op}): {err}") from None
    except GraphcError as err:  # the op's own shape and kind checks
        raise SerializationError(f"{where} ({op}): {type(err).__name__}: {err}") from None
    if node.shape != shape or node.kind != kind:
        raise SerializationError(f"{where} ({op}): the file says shape {list(shape)} and kind {kind!r}, "
                                 f"but the op gives {list(node.shape)} and {node.kind!r}")
    if e.get("auto_name", False):  # the name was generated: say so, so explain treats it as such
        graph.names[node.id] = (name, True)
    return node


def graph_from_dict(d) -> tuple[Graph, list[Node]]:
    """Rebuild ``(graph, outputs)`` from :func:`graph_to_dict`'s dict, checking every field.

    >>> import graphc as gc
    >>> from graphc.serialize import graph_from_dict, graph_to_dict, graphs_equal
    >>> g = gc.Graph("g"); x = g.input("x", ("n",)); y = gc.tanh(x, name="y")
    >>> graph, outputs = graph_from_dict(graph_to_dict(y))
    >>> graphs_equal(y, outputs)
    True
    """
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        got = d.get("format") if isinstance(d, dict) else d
        raise SerializationError(f"not a graphc graph file: format is {_short(got)}, expected {FORMAT!r}")
    version = d.get("version")
    if isinstance(version, bool) or version != VERSION:
        raise SerializationError(f"unsupported graph file version {_short(version)}; "
                                 f"this graphc reads version {VERSION}")
    _keys(d, {"format", "version", "graph", "leaves", "nodes", "outputs"}, set(), "the graph file")
    graph = Graph(_str(d["graph"], "the graph name"))
    built: dict[int, Node] = {}

    def new_id(e, k: int, what: str) -> int:
        nid = e.get("id") if isinstance(e, dict) else None
        if isinstance(nid, bool) or not isinstance(nid, int) or nid in built:
            raise SerializationError(f"{what} {k}: id {_short(nid)} is missing, not an int or already used")
        return nid

    for k, e in enumerate(_list(d["leaves"], "leaves")):
        nid = new_id(e, k, "leaf")
        _keys(e, {"id", "name", "op", "shape", "kind"}, set(), f"leaf {nid}")
        name = _str(e["name"], f"leaf {nid}: name")
        where, shape = f"leaf {nid} ({name!r})", _shape(e["shape"], f"leaf {nid}")
        if e["op"] not in ("input", "param") or e["kind"] not in KINDS or (e["op"] == "param" and e["kind"] != "float"):
            raise SerializationError(f"{where}: op must be 'input' or 'param' and kind one of {KINDS} "
                                     f"(float for a param), got {_short(e['op'])} and {_short(e['kind'])}")
        try:
            built[nid] = graph.param(name, shape) if e["op"] == "param" else graph.input(name, shape, e["kind"])
        except GraphcError as err:
            raise SerializationError(f"{where}: {err}") from None
    origins = []
    for k, e in enumerate(_list(d["nodes"], "nodes")):
        nid = new_id(e, k, "node")
        built[nid] = node = _build_node(graph, e, built, f"node {nid}")
        if "origin" in e:
            origins.append((nid, node, e["origin"]))
    for nid, node, origin in origins:  # may point forward in the file: resolved once all nodes exist
        if not (isinstance(origin, list) and len(origin) == 2 and isinstance(origin[1], int)
                and not isinstance(origin[1], bool)):
            raise SerializationError(f"node {nid}: origin must be [node id, operand index], got {_short(origin)}")
        fwd = _ref(origin[0], built, f"node {nid}: origin")
        if not 0 <= origin[1] < len(fwd.inputs):
            raise SerializationError(f"node {nid}: origin operand {origin[1]} is out of range for node {origin[0]}")
        graph.set_origin(node, fwd, origin[1])
    outputs = [_ref(i, built, "outputs") for i in _list(d["outputs"], "outputs")]
    if not outputs:
        raise SerializationError("outputs: a graph file names at least one output")
    return graph, outputs


def _no_duplicates(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise SerializationError(f"duplicate key in a JSON object: {sorted(k for k in set(keys) if keys.count(k) > 1)}")
    return dict(pairs)


def _no_constant(name: str):
    raise SerializationError(f"not a graph file: {name} is not a JSON number")


def load_graph(path_or_file) -> tuple[Graph, list[Node]]:
    """Read a graph file (a path or an open file) and rebuild ``(graph, outputs)``; never executes code.

    >>> import io, graphc as gc
    >>> g = gc.Graph("saved"); x = g.input("x", ("n", 3)); W = g.param("W", (3, 2))
    >>> buffer = io.BytesIO()
    >>> gc.save_graph(gc.matmul(x, W, name="y"), buffer)
    >>> graph, (y,) = gc.load_graph(io.BytesIO(buffer.getvalue()))
    >>> print(gc.explain(y))
    forward:
      y[n,j] = Σ_i x[n,i]·W[i,j]    (y = x·W)
    """
    if hasattr(path_or_file, "read"):
        raw = path_or_file.read(MAX_BYTES + 1)
    else:
        with open_regular_file(path_or_file, SerializationError, "graph file", MAX_BYTES) as f:
            raw = f.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise SerializationError(f"graph file is larger than {MAX_BYTES} bytes; refusing to read it")
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        d = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError as e:
        raise SerializationError(f"not a graph file: not UTF-8 text ({e})") from None
    except json.JSONDecodeError as e:
        raise SerializationError(f"not a graph file: not JSON ({e})") from None
    except RecursionError:
        raise SerializationError("not a graph file: JSON nested too deeply") from None
    return graph_from_dict(d)


# -- structural equality ------------------------------------------------------------------------
def _signature(n: Node) -> tuple:
    op = n.op
    spec = str(op.spec) if hasattr(op, "spec") else None
    return (type(op).__name__, op.key(), op.kind_name, spec, n.shape, n.kind, n.name, n.auto_named, len(n.inputs))


def graph_difference(a, b) -> str | None:
    """The first structural difference between two graphs' outputs (a node or a list each), or None.

    Equal means: the same leaves (names, input/param, shapes, kinds, in order), the same
    outputs, and node by node the same op with equal fields, shape, kind, name and wiring,
    including which nodes are shared.  Node ids and the graph's name are not compared.

    >>> import graphc as gc
    >>> from graphc.serialize import graph_difference
    >>> g, h = gc.Graph("g"), gc.Graph("h")
    >>> print(graph_difference(gc.tanh(g.input("x", ("n",))), gc.tanh(h.input("x", ("n",)))))
    None
    >>> print(graph_difference(g.input("u", (2,)), h.input("u", (3,))))  # doctest: +ELLIPSIS
    the leaves differ: ...
    """
    a, b = _outputs(a), _outputs(b)
    leaves = [[(n.name, type(n.op).__name__, n.shape, n.kind) for n in o[0].graph.leaves.values()] for o in (a, b)]
    if leaves[0] != leaves[1]:
        return f"the leaves differ: {leaves[0]} vs {leaves[1]}"
    if len(a) != len(b):
        return f"{len(a)} outputs vs {len(b)}"
    forward: dict = {}
    backward: dict = {}
    stack = list(zip(a, b))
    while stack:
        x, y = stack.pop()
        if forward.get(id(x), y) is not y or backward.get(id(y), x) is not x:
            return f"{x!r} and {y!r} are shared differently in the two graphs"
        if id(x) in forward:
            continue
        forward[id(x)], backward[id(y)] = y, x
        if _signature(x) != _signature(y):
            return f"{x!r} differs from {y!r}: {_signature(x)} vs {_signature(y)}"
        stack.extend(zip(x.inputs, y.inputs))
    return None


def graphs_equal(a, b) -> bool:
    """Whether two graphs' outputs are structurally equal (see :func:`graph_difference`).

    >>> import graphc as gc
    >>> from graphc.serialize import graphs_equal
    >>> g, h = gc.Graph("g"), gc.Graph("h")
    >>> graphs_equal(gc.tanh(g.input("x", ("n",))), gc.tanh(h.input("x", ("n",))))
    True
    >>> graphs_equal(gc.tanh(g.input("u", ("n",))), gc.exp(h.input("u", ("n",))))
    False
    """
    return graph_difference(a, b) is None
