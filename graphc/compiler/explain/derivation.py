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
from graphc.compiler.passes.simplification import cse
from graphc.compiler.walk import toposort
from graphc.ops.node import Node


def explain(nodes, *, forward: bool = False, steps: bool = False, latex: bool = False, matrix: bool = True,
            updates: Sequence[tuple] = ()) -> str:
    """The derived expressions of ``nodes`` (gradients from ``grad``), one line each.

    ``updates``, pairs ``(leaf, node)`` as a compiled step writes them, are listed last as
    ``W1[k,h] ← ...``.  A fused node (made by a backend's rewrites) is marked with how it runs.
    """
    if hasattr(nodes, "outputs") and not isinstance(nodes, Node):  # a CompiledFunction
        nodes = nodes.outputs
    nodes: Sequence[Node] = [nodes] if isinstance(nodes, Node) else list(nodes)
    updates = list(updates)
    if not nodes and not updates:
        return ""
    order = toposort(cse(nodes + [n for _, n in updates]))
    written = {id(n): leaf for leaf, n in updates}
    shown = [n for n in order if n.op.listed and id(n) not in written]
    fwd = [n for n in shown if not n.derived]
    bwd = [n for n in shown if n.derived]
    lines: list[str] = []

    def render(section: str, group: list[Node]):
        if not group:
            return
        lines.append(section)
        for node in group:
            if latex:
                lines.append("  " + notation.latex(node))
                continue
            text = notation.formula(node)
            form = notation.matrix_form(node) if matrix else None
            derivation = (node.origin[0].op.adjoint_steps(node, notation.lhs(node.origin[0]))
                          if steps and node.origin is not None and node.inputs else None)
            if derivation:
                lines.extend("  " + s for s in derivation)
                lines.append("  " + " " * (len(notation.lhs(node))) + " ⇒ " + text)
            else:
                lines.append("  " + text)
            if form and form != text.split(" = ", 1)[1]:
                lines[-1] += f"    ({notation.lhs(node).split('[')[0]} = {form})"
            note = node.op.explain_note(node)
            if note:
                lines[-1] += f"    [{note}]"
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
    return "\n".join(lines)
