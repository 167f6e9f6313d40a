"""explain: print derived gradients the way one derives them by hand.

Each backward node is one line of Einstein notation with explicit sums,
``dW1[i,h] = Σ_n x[n,i]·dadd1[n,h]``, followed by its matrix form where it has
one (``= xᵀ·dadd1``).  ``forward=True`` prints the forward nodes first;
``steps=True`` shows, for each contraction adjoint, the chain rule with one
Kronecker δ per index and the contraction of those δs, as the seed derives the
affine layer; ``latex=True`` prints LaTeX (through sympy) instead of text.
"""

from __future__ import annotations

from typing import Sequence

from graphc.compiler.explain import notation
from graphc.compiler.explain.display import Derivation, _names_around, text_latex
from graphc.compiler.passes.simplification import cse
from graphc.compiler.walk import toposort
from graphc.ops.node import Node


def sections(nodes: Sequence[Node], updates: Sequence[tuple], *, forward: bool, steps: bool) -> tuple:
    """``(forward nodes, backward nodes)`` that a derivation of ``nodes`` lists, in order: every
    listed node they depend on, split by ``derived``, without the nodes that ``updates`` write
    (those have a section of their own); with ``forward`` and ``steps``, the forward section also
    lists each node a step cites and what it reads."""
    order = toposort(cse(list(nodes) + [n for _, n in updates]))
    written = {id(n) for _, n in updates}
    shown = [n for n in order if n.op.listed and id(n) not in written]
    fwd = [n for n in shown if not n.derived]
    if steps and forward:  # a step writes ∂L/∂F[..]·∂F[..]/∂x[..]: list each such F and what it reads
        cited = [n.origin[0] for n in shown if n.derived and n.origin is not None and n.inputs
                 and n.origin[0].op.adjoint_steps(n, notation.lhs(n.origin[0]))]
        fwd = _with_cited(fwd, cited)
    return fwd, [n for n in shown if n.derived]


def explain(nodes, *, forward: bool = False, steps: bool = False, latex: bool = False, matrix: bool = True,
            updates: Sequence[tuple] = (), html: bool = False) -> str:
    """The derived expressions of ``nodes`` (gradients from ``grad``), one line each.

    ``updates``, pairs ``(leaf, node)`` as a compiled step writes them, are listed last as
    ``W1[k,h] ← ...``.  A fused node (made by a backend's rewrites) is marked with how it runs.
    ``html=True``: one self-contained HTML page instead, typeset as MathML (``explain.page``).

    >>> import graphc as gc
    >>> g = gc.Graph("affine"); x = g.input("x", ("n", 3)); W = g.param("W", (3, 2))
    >>> y = gc.matmul(x, W, name="y")
    >>> (dW,) = gc.grad(y, [W], seed=g.input("dy", ("n", 2)))
    >>> print(gc.explain([y, dW], forward=True, steps=True))
    forward:
      y[n,j] = Σ_i x[n,i]·W[i,j]    (y = x·W)
    backward:
      ∂L/∂W[p,q] = Σ_{n,j} ∂L/∂y[n,j]·∂y[n,j]/∂W[p,q]
                 = Σ_{n,j,i} dy[n,j]·x[n,i]·δ[i,p]·δ[j,q]
              ⇒ dW[i,j] = Σ_n dy[n,j]·x[n,i]    (dW = xᵀ·dy)
    """
    if html:
        from graphc.compiler.explain.page import page

        return page(nodes, forward=forward, steps=steps, matrix=matrix, updates=updates)
    if hasattr(nodes, "outputs") and not isinstance(nodes, Node):  # a CompiledFunction
        nodes = nodes.outputs
    nodes: Sequence[Node] = [nodes] if isinstance(nodes, Node) else list(nodes)
    updates = list(updates)
    if not nodes and not updates:
        return Derivation("")
    fwd, bwd = sections(nodes, updates, forward=forward, steps=steps)
    lines: list[str] = []
    entries: list[tuple] = []  # (section, node, names, steps, matrix form, note): what Derivation typesets

    def render(section: str, group: list[Node]):
        if not group:
            return
        lines.append(section)
        for node in group:
            derivation = (node.origin[0].op.adjoint_steps(node, notation.lhs(node.origin[0]))
                          if steps and node.origin is not None and node.inputs else None)
            if latex:  # the steps too, each line typeset as the notebook shows them
                if derivation:
                    known = _names_around(node, None)
                    lines.extend("  " + text_latex(s.strip(), known) for s in derivation)
                lines.append("  " + (r"\Rightarrow\ " if derivation else "") + notation.latex(node))
                entries.append((section, node, None, derivation, None, None))
                continue
            text = notation.formula(node)
            form = notation.matrix_form(node) if matrix else None
            if derivation:
                lines.extend("  " + s for s in derivation)
                lines.append("  " + " " * (len(notation.lhs(node))) + " ⇒ " + text)
            else:
                lines.append("  " + text)
            form = form if form and form != text.split(" = ", 1)[1] else None
            if form:
                lines[-1] += f"    ({notation.lhs(node).split('[')[0]} = {form})"
            note = node.op.explain_note(node)
            if note:
                lines[-1] += f"    [{note}]"
            entries.append((section, node, None, derivation, form, note))
    if forward:
        render("forward:", fwd)
    render("backward:" if (bwd or not fwd) else "forward:", bwd if bwd else ([] if forward else fwd))
    if updates:
        lines.append("update:")
        for leaf, node in updates:
            names = {id(node): leaf.name}  # the new value is written under the leaf's name
            text = (notation.latex(node, names) if latex else notation.formula(node, names)).replace(" = ", " ← ", 1)
            form = notation.matrix_form(node, names) if matrix and not latex else None
            note = node.op.explain_note(node)
            lines.append("  " + text + (f"    ({leaf.name} ← {form})" if form else "") + (f"    [{note}]" if note else ""))
            entries.append(("update:", node, names, None, form, note))
    return Derivation("\n".join(lines), entries)  # a str; Jupyter shows it typeset


def _with_cited(fwd: list[Node], cited: list[Node]) -> list[Node]:
    """The forward lines ``fwd`` plus the forward nodes ``cited`` (and those they read) that are
    not among them, in one topological order; a node already written the same way is kept once."""
    seen = {id(n) for n in fwd}
    extra = [c for c in cited if id(c) not in seen]
    if not extra:
        return fwd
    out, texts = [], set()
    for n in toposort(fwd + extra):
        if n.derived or not n.op.listed or not n.inputs:
            continue
        text = notation.formula(n)
        if id(n) in seen or text not in texts:
            out.append(n)
            texts.add(text)
    return out
