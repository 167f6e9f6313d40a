"""Pictures of a derivation: the graph as Graphviz DOT, each node with its Einstein line.

``draw(outputs)`` returns a :class:`GraphPicture`: ``.source`` is the DOT text (built with
the ``graphviz`` Python package, ``pip install "graphc[draw]"``), ``.svg()`` runs Graphviz's
``dot`` program, ``.save(path)`` writes ``.svg``, ``.png`` or ``.dot``/``.gv``, and a notebook
shows it as SVG (or, without ``dot``, the DOT text and how to install Graphviz).

What the picture shows:

* every node labelled with its name, its op and shape, and its Einstein line
  (:func:`graphc.compiler.explain.notation.formula`), filled by kind: forward nodes blue,
  derived (gradient) nodes red, parameter updates yellow; a legend says which is which,
  and each node's SVG element has the class ``forward``, ``derived``, ``update``,
  ``input``, ``param`` or ``const``;
* inputs as ellipses, params as cylinders, constants, dim sizes and δ as small plain text;
  the requested outputs with a double border;
* fused ops (:class:`~graphc.ops.fused.Gemm`, :class:`~graphc.ops.fused.KeptSoftmax`) each
  in a dashed cluster labelled with their ``explain_note``;
* optimizer updates (a compiled step) in an ``update`` cluster, each written as
  ``W1[k,h] ← ...`` with a dashed edge labelled ``←`` to the param it overwrites.

Every user-given name reaches the DOT text only inside HTML-like labels, escaped.
``graphviz`` is imported when a picture is made, never by ``import graphc``.
"""

from __future__ import annotations

import html
import os

from graphc.compiler.explain import notation
from graphc.compiler.walk import toposort
from graphc.errors import GraphcError, GraphError
from graphc.ops.indices import format_shape
from graphc.ops.leaves import Constant, Delta, DimSize, Input, Param
from graphc.ops.node import Node

__all__ = ["draw", "GraphPicture", "DrawError", "DotNotFound"]

INSTALL_DOT = ("Graphviz's `dot` program is needed to render graph pictures and was not found on PATH: "
               "install Graphviz (e.g. `apt-get install graphviz`, `brew install graphviz`, "
               "`conda install graphviz`); the picture's DOT text is in `.source` meanwhile")
INSTALL_PACKAGE = 'graph pictures need the `graphviz` Python package: pip install "graphc[draw]"'
SUFFIXES = (".svg", ".png", ".dot", ".gv")

#: fill colours by node class, and the legend's words for them
COLOURS = {
    "forward": "#dbeafe",
    "derived": "#fee2e2",
    "update": "#fef3c7",
    "input": "#f3f4f6",
    "param": "#dcfce7",
}
LEGEND = (("forward", "forward"), ("derived", "derived (gradient)"), ("update", "update"),
          ("input", "input"), ("param", "param"))
FONT = "Helvetica,Arial,sans-serif"


class DrawError(GraphcError, RuntimeError):
    """A picture cannot be made or rendered: Graphviz (the package or ``dot``) is missing,
    ``dot`` failed, or the file suffix is unknown."""


class DotNotFound(DrawError):
    """Graphviz's ``dot`` program is not on PATH (the DOT text, ``.source``, needs no Graphviz)."""


def _graphviz():
    try:
        import graphviz
    except ImportError:
        raise DrawError(INSTALL_PACKAGE) from None
    return graphviz


def _text(value) -> str:
    """Text for an HTML-like label: non-printable characters as escapes, markup escaped."""
    text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for ch in str(value))
    return html.escape(text, quote=True)


def _html(*rows: str) -> str:
    return "<" + "<BR/>".join(rows) + ">"


# -- what to draw ----------------------------------------------------------------------------
def _program(outputs, compiled: bool):
    """``(outputs, updates, title)`` for whatever ``draw`` was given."""
    fn = getattr(outputs, "fn", None)  # a TrainStep
    if fn is not None and hasattr(fn, "program"):
        outputs = fn
    if hasattr(outputs, "program") and not isinstance(outputs, Node):  # a CompiledFunction
        program = outputs.program
        return list(program.outputs), list(program.updates), program.name
    nodes = [outputs] if isinstance(outputs, Node) else outputs
    try:
        nodes = list(nodes)
    except TypeError:
        raise GraphError(f"draw: expected a node, a list of nodes, a compiled function or a TrainStep, "
                         f"got {type(outputs).__name__}") from None
    if not nodes:
        raise GraphError("draw: no nodes given")
    bad = [n for n in nodes if not isinstance(n, Node)]
    if bad:
        raise GraphError(f"draw: outputs must be graph nodes, got {bad[0]!r}")
    if compiled:
        from graphc.compiler.compile import compile

        program = compile(nodes).program
        return list(program.outputs), list(program.updates), program.name
    from graphc.compiler.passes.simplification import cse  # as explain does: equal nodes once

    return cse(nodes), [], nodes[0].graph.name


def _role(node: Node, update_ids) -> str:
    op = node.op
    if isinstance(op, Param):
        return "param"
    if isinstance(op, Input):
        return "input"
    if isinstance(op, (Constant, DimSize, Delta)):
        return "const"
    if id(node) in update_ids:
        return "update"
    return "derived" if node.derived else "forward"


def _formula(node: Node, names=None) -> str:
    try:
        return notation.formula(node, names)
    except Exception:  # noqa: BLE001 - a picture shows what it can; the op's describe() is there
        return ""


def _small(value: str) -> str:
    return f'<FONT POINT-SIZE="10" COLOR="#4b5563">{value}</FONT>'


def _label(node: Node, role: str, leaf: Node | None) -> str:
    shape = format_shape(node.shape)
    if role in ("input", "param"):
        kind = "" if node.kind == "float" else f" {node.kind}"
        return _html(f"<B>{_text(node.name)}</B>", _small(_text(f"{role} {shape}{kind}")))
    if role == "const":
        op = node.op
        text = f"{op.value:g}" if isinstance(op, Constant) else f"|{op.dim}|" if isinstance(op, DimSize) else "δ"
        return _html(_text(text))
    names = {id(node): leaf.name} if leaf is not None else None
    line = _formula(node, names)
    if leaf is not None:
        line = line.replace(" = ", " ← ", 1)
    rows = [f"<B>{_text(node.name)}</B>", _small(_text(f"{node.op.describe()} {shape}"))]
    if line:
        rows.append(_text(line))
    return _html(*rows)


def draw(outputs, *, backward: bool = True, compiled: bool = False) -> "GraphPicture":
    """A picture of ``outputs``: a node, a list of nodes (e.g. gradients from ``grad``), a
    :class:`~graphc.CompiledFunction` or a :class:`~graphc.optim.TrainStep`.

    A compiled function or training step is drawn as compiled: its program after
    simplification and the backend's fusions, parameter updates included; ``compiled=True``
    compiles a list of nodes first and draws that program.  ``backward=False`` leaves out
    the derived (gradient) nodes and the updates computed from them.

    >>> import graphc as gc
    >>> g = gc.Graph("affine"); x = g.input("x", ("n", 3)); W = g.param("W", (3, 2))
    >>> loss = ((x @ W) ** 2).sum()
    >>> picture = gc.draw([loss, *gc.grad(loss, [W])])
    >>> picture.source.startswith("digraph") and "class=derived" in picture.source
    True
    >>> picture.save("affine.svg")  # doctest: +SKIP
    'affine.svg'
    """
    graphviz = _graphviz()
    outs, updates, title = _program(outputs, compiled)
    if not backward:
        updates = []
    update_of = {id(node): leaf for leaf, node in updates}
    order = toposort(outs + [node for _, node in updates])
    roles = {id(n): _role(n, update_of) for n in order}
    if not backward:
        kept_ops = [n for n in order if roles[id(n)] in ("forward",)]
        used = {id(i) for n in kept_ops for i in n.inputs} | {id(o) for o in outs if not o.derived}
        order = [n for n in order if roles[id(n)] == "forward" or (n.is_leaf and id(n) in used)]
    shown = {id(n) for n in order}
    out_ids = {id(o) for o in outs}
    leaf_ids = {id(leaf) for leaf, _ in updates}

    dot = graphviz.Digraph("graphc", format="svg")
    dot.attr(label=_html(f"<B>{_text(title)}</B>"), labelloc="t", fontname=FONT, rankdir="TB",
             newrank="true")
    dot.attr("node", fontname=FONT, fontsize="12", style="filled", color="#6b7280")
    dot.attr("edge", color="#6b7280", arrowsize="0.7", fontname=FONT)

    def add(g, node: Node) -> None:
        role = roles[id(node)]
        attrs = {"id": f"n{node.id}", "class": role}
        if role == "const":
            attrs.update(shape="plaintext", style="", fontsize="9", fontcolor="#6b7280")
        elif role == "input":
            attrs.update(shape="ellipse", fillcolor=COLOURS[role])
        elif role == "param":
            attrs.update(shape="cylinder", fillcolor=COLOURS[role],
                         penwidth="2" if id(node) in leaf_ids else "1")
        else:
            attrs.update(shape="box", style="rounded,filled", fillcolor=COLOURS[role])
        if id(node) in out_ids:
            attrs["peripheries"] = "2"
        label = _label(node, role, update_of.get(id(node)))
        fused = node.op.explain_note(node) if role in ("forward", "derived", "update") else None
        if fused:
            with g.subgraph(name=f"cluster_fused_{node.id}") as c:
                c.attr(label=_html(_small(_text(node.op.explain_note(node)))), style="dashed,rounded",
                       color="#9ca3af", fontname=FONT, id=f"fused_{node.id}", **{"class": "fused"})
                c.node(f"n{node.id}", label, **attrs)
        else:
            g.node(f"n{node.id}", label, **attrs)

    for node in order:
        if roles[id(node)] != "update":
            add(dot, node)
    if updates:
        with dot.subgraph(name="cluster_update") as u:
            u.attr(label=_html("<B>update</B>"), style="rounded,filled", fillcolor="#fffbeb", color="#d97706",
                   fontname=FONT, id="update", **{"class": "update"})
            for node in order:
                if roles[id(node)] == "update":
                    add(u, node)

    for node in order:
        for inp in node.inputs:
            if id(inp) in shown:
                style = {"style": "dotted"} if roles[id(inp)] == "const" else {}
                if roles[id(node)] == "derived":
                    style["color"] = "#b91c1c"
                dot.edge(f"n{inp.id}", f"n{node.id}", **style)
    for leaf, node in updates:
        if id(leaf) in shown and id(node) in shown:
            dot.edge(f"n{node.id}", f"n{leaf.id}", label="←", style="dashed", color="#d97706",
                     fontcolor="#d97706", constraint="false", **{"class": "update-edge"})

    present = {roles[id(n)] for n in order}
    cells = "".join(f'<TR><TD BGCOLOR="{COLOURS[key]}">{_text(words)}</TD></TR>' for key, words in LEGEND
                    if key in present)
    dot.node("legend", f'<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="4">{cells}</TABLE>>',
             shape="plaintext", style="", fontsize="10", id="legend", **{"class": "legend"})
    return GraphPicture(dot.source)


# -- the picture ------------------------------------------------------------------------------
class GraphPicture:
    """A graph picture: ``.source`` (DOT text), ``.svg()``, ``.save(path)``; shown in notebooks."""

    def __init__(self, source: str):
        self.source = source
        self._svg: str | None = None

    def __repr__(self) -> str:
        return f"<GraphPicture: {self.source.count(chr(10))} lines of DOT; .svg(), .save(path), .source>"

    def _pipe(self, fmt: str, encoding: str | None = None):
        graphviz = _graphviz()
        try:
            data = graphviz.pipe("dot", fmt, self.source.encode("utf-8"), quiet=True)
        except graphviz.ExecutableNotFound:
            raise DotNotFound(INSTALL_DOT) from None
        except graphviz.CalledProcessError as exc:
            err = exc.stderr.decode("utf-8", "replace") if isinstance(exc.stderr, bytes) else str(exc.stderr or "")
            raise DrawError(f"Graphviz's dot failed ({exc.returncode}): {err.strip()}") from None
        return data.decode(encoding) if encoding else data

    def svg(self) -> str:
        """The picture as SVG text (runs Graphviz's ``dot``)."""
        if self._svg is None:
            self._svg = self._pipe("svg", encoding="utf-8")
        return self._svg

    def png(self) -> bytes:
        """The picture as PNG bytes (runs Graphviz's ``dot``)."""
        return self._pipe("png")

    def save(self, path) -> str:
        """Write the picture to ``path``: ``.svg``, ``.png``, or ``.dot``/``.gv`` (the DOT text)."""
        from graphc.serialize.atomic import atomic_write

        path = os.fspath(path)
        suffix = os.path.splitext(path)[1].lower()
        if suffix not in SUFFIXES:
            raise DrawError(f"{path}: cannot tell the picture format from the suffix {suffix or '(none)'!r}; "
                            f"use one of {', '.join(SUFFIXES)}")
        data = (self.svg().encode("utf-8") if suffix == ".svg" else self.png() if suffix == ".png"
                else self.source.encode("utf-8"))
        try:
            atomic_write(path, lambda f: f.write(data))
        except OSError as exc:
            raise DrawError(f"{path}: cannot write the picture ({exc.strerror or exc})") from None
        return path

    # -- notebooks: SVG when dot is there, else the DOT text and how to get dot -----------------
    def _notebook_svg(self) -> tuple[str | None, str | None]:
        try:
            return self.svg(), None
        except DrawError as exc:
            return None, str(exc)

    def _repr_svg_(self):
        return self._notebook_svg()[0]

    def _repr_html_(self):
        svg, why = self._notebook_svg()
        if svg is not None:
            return None
        return (f"<p><b>graphc</b>: {html.escape(why)}</p>"
                f"<pre><code class=\"language-dot\">{html.escape(self.source)}</code></pre>")

    def _repr_markdown_(self):
        svg, why = self._notebook_svg()
        if svg is not None:
            return None
        longest = max((len(run) for run in self.source.split("\n") for run in _backtick_runs(run)), default=0)
        fence = "`" * max(3, longest + 1)
        return f"**graphc**: {why}\n\n{fence}dot\n{self.source}\n{fence}\n"


def _backtick_runs(line: str) -> list[str]:
    runs, run = [], ""
    for ch in line:
        if ch == "`":
            run += ch
        elif run:
            runs.append(run)
            run = ""
    return runs + ([run] if run else [])
