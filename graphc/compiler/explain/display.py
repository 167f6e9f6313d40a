"""Rich display in notebooks: derivations typeset, nodes as their Einstein expression,
compiled functions as their signature and highlighted source.

Everything here is display only; nothing changes what is computed or printed.

* :class:`Derivation` is what :func:`graphc.explain` returns: a ``str`` (so ``print``, ``==``,
  ``.splitlines()`` and every other use see exactly the text as before) that also remembers
  which node each line came from, so Jupyter can show it typeset (``_repr_latex_``,
  ``_repr_markdown_``: ``$$\\begin{aligned} ... \\end{aligned}$$``, one row per node, built from
  the per-node LaTeX ``explain(..., latex=True)`` prints, plus the matrix forms, notes and the
  δ derivation of ``steps=True``).
* :class:`Gradients` is what :func:`graphc.grad` returns for a list of variables: a ``list``
  that renders as the derivation of its nodes.
* ``Node._repr_latex_`` / ``_repr_markdown_`` are installed on :class:`graphc.ops.node.Node`
  from here (see :func:`_install_node_display`).
* :func:`function_html` / :func:`function_markdown` (and the ``train_step_*`` pair) render a
  compiled function or a ``TrainStep``: its signature and its generated source, highlighted
  with pygments when it is installed.

User names are data, never markup: HTML is built with :func:`html.escape`, markdown puts them
in code fences, and LaTeX gets names that are not plain identifiers as escaped ``\\text``
runs (see :func:`latex_text`), so a node named ``</pre><script>`` shows as those characters.
IPython, pygments and nbformat are never imported at import time.
"""

from __future__ import annotations

import functools
import html
import re

from graphc.compiler.explain import notation
from graphc.compiler.explain.printing import index_latex
from graphc.ops.indices import format_shape
from graphc.ops.node import Node, letters_of
from graphc.ops.symbolic import indexed, sympy_module

# -- LaTeX for names ---------------------------------------------------------------------------
#: Names sympy typesets well (``W1`` as W₁, ``softmax_a`` as softmax with subscript a);
#: any other name is shown character for character (:func:`latex_text`).
_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*\Z")
#: Characters with a meaning in LaTeX (or in HTML, for front ends that parse LaTeX output as
#: HTML), written outside ``\text{}`` as math-mode symbols.
_MATH_ESCAPES = {
    "\\": r"\backslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#", "%": r"\%",
    "_": r"\_", "^": r"\hat{}", "~": r"\sim{}", "<": r"\lt{}", ">": r"\gt{}",
}
_SPECIAL = re.compile("([" + re.escape("".join(_MATH_ESCAPES)) + "])")


def latex_text(text: str) -> str:
    """``text`` shown literally in math mode: runs of ordinary characters as ``\\text{...}``,
    LaTeX's (and HTML's) special characters as escaped symbols."""
    parts = []
    for k, piece in enumerate(_SPECIAL.split(notation.safe(text))):
        if k % 2:
            parts.append(_MATH_ESCAPES[piece])
        elif piece:
            parts.append(r"\text{" + piece + "}")
    return "".join(parts)


@functools.lru_cache(maxsize=4096)
def name_latex(name: str) -> str:
    """A node's name as LaTeX: sympy's rendering for plain identifiers (as ``latex=True``
    prints them), the literal characters for anything else."""
    if _PLAIN.match(name):
        return sympy_module().latex(sympy_module().Symbol(name))
    return latex_text(name)


def _math_safe(latex: str) -> str:
    """Sympy output with ``<``/``>`` (comparisons, op names) written as ``\\lt``/``\\gt``."""
    return latex.replace("<", r"\lt{}").replace(">", r"\gt{}")


def _placeholder(k: int) -> str:
    # Capital letters only: sympy prints such a symbol unchanged (no Greek letter, no
    # ``dot``/``hat`` modifier, no digit subscript), so it can be replaced after printing.
    return "GRAPHCQZ" + "".join("ABCDEFGHIJ"[int(c)] for c in str(k)) + "QZ"


def node_latex(node: Node, names: dict | None = None) -> tuple[str, str]:
    """``(lhs, rhs)`` of the node's line, as :func:`notation.latex` prints it (``names`` maps
    node ids to display names), with names that are not plain identifiers shown literally."""
    names = dict(names or {})
    name_of = lambda n: names.get(id(n), n.name)  # noqa: E731
    literal = {}
    for n in (node, *node.inputs):
        if not _PLAIN.match(name_of(n)):
            literal.setdefault(id(n), (_placeholder(len(literal)), name_of(n)))
    names.update({i: p for i, (p, _) in literal.items()})
    sp = sympy_module()
    lhs = sp.latex(indexed(name_of(node), letters_of(node)))
    rhs = _math_safe(index_latex(notation.expression(node, names)))
    for placeholder, name in literal.values():
        lhs, rhs = lhs.replace(placeholder, latex_text(name)), rhs.replace(placeholder, latex_text(name))
    return lhs, rhs


# -- the text notation (matrix forms, the δ steps) as LaTeX -------------------------------------
_IDENT = r"(?![Σδ])[^\W\dᵀ][^\Wᵀ]*"  # a word, not Σ_/δ[ and without the transpose mark
_TEXT_OPS = [  # (pattern, kind, LaTeX) for what explain writes in text besides node names
    (re.compile(r"Σ_\{([\w,]*)\}"), "other", lambda m: r"\sum_{" + m.group(1) + "}"),
    (re.compile(r"Σ_(\w)"), "other", lambda m: r"\sum_{" + m.group(1) + "}"),
    (re.compile(r"δ\[(\w+),(\w+)\]"), "other", lambda m: r"\delta_{" + m.group(1) + " " + m.group(2) + "}"),
    (re.compile(r"(tr|diag)\("), "other", lambda m: r"\operatorname{" + m.group(1) + "}("),
    (re.compile(r"\d+(?:\.\d+)?(?:e[+-]?\d+)?"), "other", lambda m: m.group(0)),
    (re.compile("(" + _IDENT + r")(?:\[([\w,]*)\])?"), "atom", lambda m: _atom(m.group(1), m.group(2))),
    (re.compile(r"\s*=\s*"), "eq", lambda m: "="),
    (re.compile(r"\s+"), "other", lambda m: " "),
]

_SUM_OR_DELTA = re.compile(r"Σ_|δ\[\w+,\w+\]")  # Σ_n, δ[i,p]: never a name (a δ node is named δ)


def _atom(name: str, index: str | None) -> str:
    base = name_latex(name)
    return "{" + base + "}_{" + index + "}" if index else base


_SYMBOLS = {"∂": r"\partial ", "·": r"\,", "ᵀ": r"^{\top}", "⇒": r"\Rightarrow ", "←": r"\leftarrow ", "Σ": r"\sum ",
            "(": "(", ")": ")", "+": "+", "-": "-", "/": "/", ",": ",", "|": "|", "[": "[", "]": "]", "*": r"\ast "}


def text_latex(text: str, known_names, align: bool = False) -> str:
    """explain's text notation (``Σ_{n,j} dY[n,j]·x[n,i]·δ[i,p]``, ``xᵀ·dY``) as LaTeX.

    ``known_names``: the node names the text may contain (matched longest first, so any
    name, however odd, is one token); ``align``: the first ``=`` becomes ``&=``."""
    names = sorted({n for n in known_names if n}, key=len, reverse=True)
    name_re = re.compile("(" + "|".join(map(re.escape, names)) + r")(?![^\Wᵀ])(?:\[([\w,]*)\])?") if names else None
    tokens: list[tuple[str, str]] = []  # (kind, latex); kinds: atom, partial, slash, eq, other
    pos = 0
    while pos < len(text):
        m = name_re.match(text, pos) if name_re and not _SUM_OR_DELTA.match(text, pos) else None
        if m:
            tokens.append(("atom", _atom(m.group(1), m.group(2))))
            pos = m.end()
            continue
        for pattern, kind, replace in _TEXT_OPS:
            m = pattern.match(text, pos)
            if m:
                tokens.append((kind, replace(m)))
                pos = m.end()
                break
        else:
            ch = text[pos]
            kind = "partial" if ch == "∂" else "slash" if ch == "/" else "other"
            tokens.append((kind, _SYMBOLS.get(ch) or _MATH_ESCAPES.get(ch) or latex_text(ch)))
            pos += 1
    out: list[str] = []
    k, aligned = 0, not align
    while k < len(tokens):
        kinds = [t[0] for t in tokens[k:k + 5]]
        if kinds == ["partial", "atom", "slash", "partial", "atom"]:  # ∂X/∂Y as a fraction
            out.append(r"\frac{\partial " + tokens[k + 1][1] + r"}{\partial " + tokens[k + 4][1] + "}")
            k += 5
            continue
        kind, latex = tokens[k]
        if kind == "eq":
            latex = " = " if aligned else " &= "
            aligned = True
        out.append(latex)
        k += 1
    return "".join(out).strip()


# -- Derivation ----------------------------------------------------------------------------------
def _names_around(node: Node, names: dict | None) -> set:
    """Names that explain's text for ``node`` may mention (its operands, the forward node)."""
    nodes = [node, *node.inputs]
    if node.origin is not None:
        fwd = node.origin[0]
        nodes += [fwd, *fwd.inputs]
        for inp in node.inputs:
            nodes += list(inp.inputs)
    return {(names or {}).get(id(n), n.name) for n in nodes}


def _entry_rows(section: str, node: Node, names, steps, form, note) -> list[str]:
    update = section.startswith("update")
    lhs, rhs = node_latex(node, names)
    known = _names_around(node, names)
    rows = [text_latex(line.strip(), known, align=True) for line in (steps or [])]
    row = (r"\Rightarrow\ " if steps else "") + lhs + (r" &\leftarrow " if update else " &= ") + rhs
    if form:
        name = (names or {}).get(id(node), node.name)
        arrow = r" \leftarrow " if update else " = "
        row += r" \qquad \left(" + name_latex(name) + arrow + text_latex(form, known) + r"\right)"
    if note:
        row += r" \qquad " + latex_text(f"[{note}]")
    return rows + [row]


class Derivation(str):
    """What :func:`graphc.explain` returns: the derivation's text (a ``str``, unchanged) that
    renders typeset in Jupyter.  ``entries`` are explain's lines, one per node:
    ``(section, node, names, steps, matrix form, note)``."""

    def __new__(cls, text: str = "", entries=()):
        self = super().__new__(cls, text)
        self._entries = tuple(entries)
        return self

    def __reduce__(self):  # pickles and copies as the text (the nodes stay behind)
        return (Derivation, (str(self),))

    def latex_rows(self) -> list[str]:
        """The rows of the typeset derivation (section titles, then ``lhs &= rhs`` per node)."""
        rows, section = [], None
        for entry in self._entries:
            if entry[0] != section:
                section = entry[0]
                rows.append(r"&\textbf{" + section.rstrip(":") + ":}")
            rows.extend(_entry_rows(*entry))
        return rows

    def _repr_latex_(self) -> str | None:
        if not self._entries:
            return None  # nothing typeset: the text is shown
        return "$$\\begin{aligned}\n" + " \\\\\n".join(self.latex_rows()) + "\n\\end{aligned}$$"

    def _repr_markdown_(self) -> str | None:
        return self._repr_latex_()

    def _repr_pretty_(self, p, cycle):  # IPython's text/plain: the derivation, not a quoted str
        p.text(str(self))


class Gradients(list):
    """What :func:`graphc.grad` returns for a list of variables: the gradient nodes, in order
    (a ``list``: ``dW, db = gc.grad(loss, [W, b])`` unpacks), shown as their derivation."""

    def explain(self, **kw) -> Derivation:
        from graphc.compiler.explain.derivation import explain

        return explain(list(self), **kw)

    def _repr_latex_(self) -> str | None:
        return self.explain()._repr_latex_()

    def _repr_markdown_(self) -> str | None:
        return self.explain()._repr_markdown_()


# -- nodes -------------------------------------------------------------------------------------
def _dim_latex(dim) -> str:
    return str(dim) if isinstance(dim, int) else dim if re.fullmatch(r"[A-Za-z]", dim) else (
        r"\mathit{" + dim + "}" if _PLAIN.match(dim) else latex_text(dim))


def node_math(node: Node) -> str:
    """A node as one line of LaTeX: ``{Y}_{n,j} = {b}_{j} + ...`` (its Einstein expression, as
    ``explain(..., latex=True)`` writes it); a declared leaf as ``{x}_{n,i} \\in \\mathbb{R}^{n \\times 3}``."""
    if node.op.kind_name in ("input", "param"):
        lhs = name_latex(node.name)
        if node.ndim:
            lhs = "{" + lhs + "}_{" + ",".join(letters_of(node)) + "}"
        space = r"\mathbb{Z}" if node.kind == "int" else r"\mathbb{R}"
        shape = r" \times ".join(map(_dim_latex, node.shape))
        return lhs + r" \in " + space + ("^{" + shape + "}" if shape else "") + r" \quad \text{(" + node.op.kind_name + ")}"
    lhs, rhs = node_latex(node)
    return f"{lhs} = {rhs}"


def _node_repr_latex(self: Node) -> str:
    return "$$" + node_math(self) + "$$"


def _install_node_display() -> None:
    """Give :class:`Node` its notebook display from here, not in ``graphc/ops/node.py``.

    Installed from the compiler side because the IR imports in one direction only: ``graphc.ops``
    never imports ``graphc.compiler``, not even lazily inside a method, and Node's display needs
    the compiler's notation.  It is the pattern ``graphc.ops.operators`` uses for ``+``/``@``.
    The methods are always there: ``graphc/__init__`` imports this module (through
    ``graphc.compiler.explain``), and importing any ``graphc.*`` module runs it first."""
    Node._repr_latex_ = _node_repr_latex
    Node._repr_markdown_ = _node_repr_latex


_install_node_display()


# -- compiled functions and training steps -----------------------------------------------------
def _leaf_text(leaf: Node) -> str:
    return f"{notation.safe(leaf.name)}: {format_shape(leaf.shape)}" + ("" if leaf.kind == "float" else f" {leaf.kind}")


def function_signature(fn) -> list[str]:
    """A compiled function's signature, as plain text lines: ``name(x: (n, 784), ...) -> loss: ()``,
    then the leaves it updates in place."""
    program = fn.program
    outputs = ", ".join(_leaf_text(o) for o in fn.outputs)
    lines = [f"{notation.safe(program.name)}({', '.join(_leaf_text(a) for a in program.args)}) -> "
             + (outputs if len(fn.outputs) == 1 else f"({outputs})")]
    if program.updates:
        lines.append("updates in place: " + ", ".join(notation.safe(leaf.name) for leaf, _ in program.updates))
    return lines


def train_step_signature(step) -> list[str]:
    """A ``TrainStep``'s signature: the inputs it is called with, the loss it returns, the params
    it updates in place and the optimizer."""
    fn = step.fn
    held = set(step.params) | {n for n in fn.args if n in fn.graph.private}
    inputs = [a for a in fn.program.args if a.name not in held]
    params = ", ".join(f"{notation.safe(k)} {format_shape(v.shape)} {v.dtype}" for k, v in step.params.items())
    lines = [f"{notation.safe(fn.program.name)}({', '.join(map(_leaf_text, inputs))}) -> {_leaf_text(step.loss)}",
             f"updates in place: {params}", f"optimizer: {notation.safe(repr(step.optimizer))}"]
    if step.state:
        lines.append("optimizer state: " + ", ".join(notation.safe(k) for k in step.state))
    return lines


def highlight_html(source: str) -> str:
    """``source`` as highlighted HTML (pygments, inline styles) or, without pygments, an escaped ``<pre>``."""
    try:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import PythonLexer
    except ImportError:
        return "<pre>" + html.escape(source) + "</pre>"
    return highlight(source, PythonLexer(), HtmlFormatter(noclasses=True))


def _html(kind: str, lines: list[str], source: str) -> str:
    head = "<br>".join(f"<code>{html.escape(line)}</code>" for line in lines)
    count = source.count("\n") + 1
    return (f'<div class="graphc-{kind}"><b>{html.escape(kind)}</b> {head}'
            f"<details><summary>generated source ({count} lines)</summary>{highlight_html(source)}</details></div>")


def _fence(text: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _markdown(kind: str, lines: list[str], source: str) -> str:
    sig, src = "\n".join(lines), source.rstrip("\n")
    f1, f2 = _fence(sig), _fence(src)
    return f"**{kind}**\n\n{f1}text\n{sig}\n{f1}\n\n{f2}python\n{src}\n{f2}\n"


def function_html(fn) -> str:
    return _html("CompiledFunction", function_signature(fn), fn.source)


def function_markdown(fn) -> str:
    return _markdown("CompiledFunction", function_signature(fn), fn.source)


def train_step_html(step) -> str:
    return _html("TrainStep", train_step_signature(step), step.source)


def train_step_markdown(step) -> str:
    return _markdown("TrainStep", train_step_signature(step), step.source)
