"""The derivation page: ``explain(nodes, html=True)``, one self-contained HTML document.

The page shows what :func:`~graphc.compiler.explain.derivation.explain` prints, typeset:
each node's left- and right-hand side as presentation MathML (sympy's presentation
printer, taught graphc's index notation: ``x_{n,k}`` for ``x[n,k]``, ``Σ_k`` without
limits, Iverson brackets, whole names never split into sub- and superscripts), each in a
``<math display="block">`` that browsers with MathML Core (Chromium, Firefox, Safari)
render natively; the forward, backward and update sections as the text has them, with
matrix forms, fusion notes and (``steps=True``) the δ derivation; the graph as inline SVG
when ``graphc.compiler.explain.draw`` and Graphviz's ``dot`` are there (a note saying
what is missing otherwise); and the generated source of the compiled function.

The document needs no network: no script, stylesheet, font or image is fetched, and no
URL appears in it.  Every user-given string (node and graph names) is HTML-escaped;
sympy's MathML printer does not escape text, so the MathML is serialized here.
"""

from __future__ import annotations

import functools
import html
import re
from typing import Sequence

from graphc.compiler.explain import notation
from graphc.errors import GraphcError
from graphc.ops.node import Node, letters_of
from graphc.ops.symbolic import indexed, sympy_module

__all__ = ["page"]

_CSS = """
:root { color-scheme: light; }
body { font: 16px/1.5 "DejaVu Sans", system-ui, sans-serif; color: #1c1e21; background: #fff;
       max-width: 70rem; margin: 1.5rem auto 4rem; padding: 0 1.5rem; }
h1 { font-size: 1.55rem; margin: 0 0 .25rem; }
h2 { font-size: 1.2rem; margin: 2rem 0 .5rem; padding-bottom: .2rem; border-bottom: 2px solid #e3e6ea; }
nav a { margin-right: 1rem; color: #2557a7; }
.lead { color: #4a4f57; margin: 0 0 .75rem; }
.eq { display: flex; flex-wrap: wrap; align-items: center; column-gap: 2.5rem; row-gap: .15rem;
      padding: .45rem .25rem; border-bottom: 1px solid #f0f1f3; }
.eq math { font-size: 1.2rem; margin: 0; }
.form { color: #3d434b; font-size: .95rem; }
.note { color: #8a5a00; font-size: .9rem; }
.steps { flex: 0 0 100%; box-sizing: border-box; margin: .1rem 0 .2rem; padding: .35rem .6rem;
         background: #f7f8fa; border-left: 3px solid #c9d2e0;
         font-size: .85rem; white-space: pre; overflow-x: auto; }
pre, code, .steps { font-family: "DejaVu Sans Mono", ui-monospace, monospace; }
pre { background: #f6f8fa; border: 1px solid #e3e6ea; border-radius: 4px; padding: .8rem 1rem;
      font-size: .8rem; line-height: 1.4; overflow-x: auto; }
figure { margin: 0; overflow-x: auto; }
figure svg { max-width: 100%; height: auto; }
.missing { color: #6b3f00; background: #fff8e6; border: 1px solid #f0dca8; border-radius: 4px; padding: .5rem .8rem; }
details summary { cursor: pointer; color: #2557a7; }
"""

_ENTITY = re.compile(r"&(?:#x[0-9A-Fa-f]+|#[0-9]+|[A-Za-z][A-Za-z0-9]*);")


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


# -- MathML ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _printer_class():
    sympy_module()
    from sympy.core.function import UndefinedFunction
    from sympy.printing.mathml import MathMLPresentationPrinter
    from sympy.printing.precedence import PRECEDENCE

    class IndexMathML(MathMLPresentationPrinter):
        """Presentation MathML in graphc's index notation; names are marked as user text."""

        def __init__(self):
            super().__init__({"order": "old", "mul_symbol": "dot"})
            self.user_text: dict[int, object] = {}  # id -> text node holding a user-given name

        def _el(self, tag, *children, text=None, user=False, **attrs):
            el = self.dom.createElement(tag)
            for key, value in attrs.items():
                el.setAttribute(key.rstrip("_"), value)
            if text is not None:
                node = self.dom.createTextNode(str(text))
                if user:
                    self.user_text[id(node)] = node
                el.appendChild(node)
            for child in children:
                el.appendChild(child)
            return el

        def _name(self, name):  # a node's name: upright, as an identifier (index letters stay italic)
            return self._el("mi", text=name, user=True, mathvariant="normal")

        def _letter(self, name):
            return self._el("mi", text=name, user=True)

        def _indices(self, items):
            row = self._el("mrow")
            for k, item in enumerate(items):
                if k:
                    row.appendChild(self._el("mo", text=",", separator="true"))
                row.appendChild(self._print(item))
            return row

        def _print_Symbol(self, sym, style="plain"):
            return self._name(sym.name)

        def _print_Idx(self, e):
            return self._letter(str(e.label))

        def _print_IndexedBase(self, e):
            return self._name(str(e.label))

        def _print_Indexed(self, e):
            base = self._name(str(e.base.label))
            return self._el("msub", base, self._indices(e.indices)) if e.indices else base

        def _print_KroneckerDelta(self, e):
            return self._el("msub", self._el("mi", text="δ"), self._indices(e.args))

        def _print_Function(self, e):
            user = isinstance(e.func, UndefinedFunction)
            name = type(e).__name__ if user else self.mathml_tag(e)
            return self._el("mrow", self._el("mi", text=name, user=user), self._paren_comma_separated(*e.args))

        def _print_Float(self, e):
            return self._el("mn", text=repr(float(e)))

        def sum_row(self, e):  # Σ_{n,k} body, as the text writes it
            letters = self._indices([lim[0] for lim in e.limits])
            sigma = self._el("munder", self._el("mo", text="∑", largeop="true", movablelimits="false"), letters)
            return self._el("mrow", sigma, self.parenthesize(e.function, PRECEDENCE["Mul"], strict=True))

        def _print_Sum(self, e):  # inside a larger expression: parenthesized, as in the text
            return self._el("mrow", self._l_paren(), self.sum_row(e), self._r_paren())

        def _bracket(self, cond):  # the Iverson bracket [cond]: 1 where cond holds, else 0
            return self._el("mrow", self._el("mo", text="[", stretchy="false"), self._print(cond),
                            self._el("mo", text="]", stretchy="false"))

        def _print_Piecewise(self, e):
            if len(e.args) == 2 and e.args[1] == (0, True):
                value, cond = e.args[0]
                if value == 1:
                    return self._bracket(cond)
                return self._el("mrow", self.parenthesize(value, PRECEDENCE["Mul"]),
                                self._el("mo", text="·"), self._bracket(cond))
            table = self._el("mtable", columnalign="left")
            for value, cond in e.args:
                when = (self._el("mtext", text="otherwise") if cond == True  # noqa: E712 - sympy's true
                        else self._el("mrow", self._el("mtext", text="if\u00a0"), self._print(cond)))
                table.appendChild(self._el("mtr", self._el("mtd", self._print(value)), self._el("mtd", when)))
            return self._el("mrow", self._el("mo", text="{"), table)

    return IndexMathML


def _serialize(node, user: dict, out: list) -> None:
    """Write a minidom tree as HTML: user text escaped; sympy's text keeps its entities
    (``&#x2211;``, ``&InvisibleTimes;``) and has every other ``& < >`` escaped."""
    if node.nodeType == node.TEXT_NODE:
        data = node.data
        if id(node) in user and user[id(node)] is node:
            out.append(html.escape(data, quote=False))
        elif data == "-" and node.parentNode is not None and node.parentNode.tagName == "mo":
            out.append("\u2212")  # a minus sign, not a hyphen
        else:
            pieces = _ENTITY.split(data)
            found = _ENTITY.findall(data)
            out.append("".join(html.escape(p, quote=False) + (found[k] if k < len(found) else "")
                               for k, p in enumerate(pieces)))
        return
    tag = node.tagName
    attrs = "".join(f' {k}="{_esc(v)}"' for k, v in node.attributes.items())
    out.append(f"<{tag}{attrs}>")
    for child in node.childNodes:
        _serialize(child, user, out)
    out.append(f"</{tag}>")


def _mathml(expr, top: bool = False) -> str:
    printer = _printer_class()()
    tree = printer.sum_row(expr) if top and isinstance(expr, sympy_module().Sum) else printer._print(expr)
    out: list[str] = []
    _serialize(tree, printer.user_text, out)
    return "".join(out)


def math_equation(node: Node, names=None, arrow: bool = False) -> str:
    """``<math display="block">lhs = rhs</math>`` for one node (``←`` for an update)."""
    name = (names or {}).get(id(node), node.name)
    left = _mathml(indexed(name, letters_of(node)))
    right = _mathml(notation.expression(node, names), top=True)
    return (f'<math display="block"><mrow>{left}<mo>{"←" if arrow else "="}</mo>{right}</mrow></math>')


# -- the page ----------------------------------------------------------------------------------
def _inline_svg(svg: str) -> str:
    """dot's SVG, fit for inlining into HTML: no XML prolog, doctype, comments or namespace URLs."""
    start = svg.find("<svg")
    svg = svg[start:] if start >= 0 else svg
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.S)
    svg = re.sub(r'\s+xmlns(?::\w+)?="[^"]*"', "", svg)
    return svg.strip()


def _picture(nodes) -> tuple[str | None, str | None]:
    """(inline SVG, None) or (None, why there is no picture)."""
    try:
        from graphc.compiler.explain.draw import draw
    except ImportError as exc:
        return None, f"The graph picture needs graphc's drawing module and Graphviz ({exc})."
    try:
        return _inline_svg(draw(nodes, backward=True).svg()), None
    except GraphcError as exc:
        return None, f"No graph picture: {exc}"  # dot (or the graphviz package) is missing


def _source(fn, nodes, updates) -> tuple[str | None, str | None]:
    if fn is not None:
        return fn.source, None
    from graphc.compiler.compile import compile as compile_graph

    try:
        return compile_graph(list(nodes), updates=dict(updates) if updates else None).source, None
    except GraphcError as exc:
        return None, f"These nodes do not compile on their own: {exc}"


def page(nodes, *, forward: bool = False, steps: bool = False, matrix: bool = True,
         updates: Sequence[tuple] = (), title: str | None = None) -> str:
    """The derivation of ``nodes`` (gradients, or a compiled function) as one HTML document;
    the arguments mean what they mean to :func:`~graphc.compiler.explain.explain`."""
    from graphc.compiler.explain.derivation import explain, sections

    fn = None
    if hasattr(nodes, "outputs") and not isinstance(nodes, Node):  # a CompiledFunction
        fn, nodes = nodes, nodes.outputs
    nodes = [nodes] if isinstance(nodes, Node) else list(nodes)
    updates = list(updates)
    every = nodes + [n for _, n in updates]
    fwd, bwd = sections(nodes, updates, forward=forward, steps=steps) if every else ([], [])
    sections: list[tuple[str, str, list]] = []  # (id, heading, rows)
    if forward and fwd:
        sections.append(("forward", "Forward", fwd))
    if bwd:
        sections.append(("backward", "Backward", bwd))
    elif not forward and fwd:
        sections.append(("forward", "Forward", fwd))

    def row(node: Node) -> str:
        parts = ['<div class="eq">']
        derivation = (node.origin[0].op.adjoint_steps(node, notation.lhs(node.origin[0]))
                      if steps and node.origin is not None and node.inputs else None)
        if derivation:
            parts.append(f'<div class="steps">{_esc(chr(10).join(derivation))}</div>')
        parts.append(math_equation(node))
        form = notation.matrix_form(node) if matrix else None
        if form and form != notation.formula(node).split(" = ", 1)[1]:
            parts.append(f'<span class="form">{_esc(notation.lhs(node).split("[")[0])} = {_esc(form)}</span>')
        note = node.op.explain_note(node)
        if note:
            parts.append(f'<span class="note">{_esc(note)}</span>')
        parts.append("</div>")
        return "".join(parts)

    def update_row(leaf, node) -> str:
        names = {id(node): leaf.name}
        parts = ['<div class="eq">', math_equation(node, names, arrow=True)]
        form = notation.matrix_form(node, names) if matrix else None
        if form:
            parts.append(f'<span class="form">{_esc(leaf.name)} ← {_esc(form)}</span>')
        note = node.op.explain_note(node)
        if note:
            parts.append(f'<span class="note">{_esc(note)}</span>')
        parts.append("</div>")
        return "".join(parts)

    graph = every[0].graph.name if every else ""
    heading = title if title is not None else f"Derivation of {graph}" if graph else "Derivation"
    requested = ", ".join(n.name for n in nodes)
    body = [f"<h1>{_esc(heading)}</h1>"]
    if requested:
        body.append(f'<p class="lead">Outputs: {_esc(requested)}'
                    + (f"; updates: {_esc(', '.join(leaf.name for leaf, _ in updates))}" if updates else "") + "</p>")
    links = [(sid, h) for sid, h, _ in sections] + ([("update", "Update")] if updates else [])
    links += [("graph", "Graph"), ("source", "Generated source"), ("text", "As text")]
    body.append("<nav>" + "".join(f'<a href="#{sid}">{h}</a>' for sid, h in links) + "</nav>")
    for sid, h, group in sections:
        body.append(f'<section id="{sid}"><h2>{h}</h2>')
        body.extend(row(n) for n in group)
        body.append("</section>")
    if updates:
        body.append('<section id="update"><h2>Update</h2>')
        body.extend(update_row(leaf, n) for leaf, n in updates)
        body.append("</section>")
    svg, why = _picture(fn if fn is not None else every)
    body.append('<section id="graph"><h2>Graph</h2>')
    body.append(f"<figure>{svg}</figure>" if svg else f'<p class="missing">{_esc(why)}</p>')
    body.append("</section>")
    source, why = _source(fn, nodes, updates)
    body.append('<section id="source"><h2>Generated source</h2>')
    body.append(f"<pre><code>{_esc(source)}</code></pre>" if source is not None
                else f'<p class="missing">{_esc(why)}</p>')
    body.append("</section>")
    text = str(explain(fn if fn is not None else nodes, forward=forward, steps=steps, matrix=matrix, updates=updates))
    body.append('<section id="text"><h2>As text</h2><details><summary>The derivation as '
                f"<code>graphc.explain</code> prints it</summary><pre>{_esc(text)}</pre></details></section>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_esc(heading)} · graphc</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
