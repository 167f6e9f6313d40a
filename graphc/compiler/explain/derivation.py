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


def explain(nodes, *, forward: bool = False, steps: bool = False, latex: bool = False, matrix: bool = True) -> str:
    """The derived expressions of ``nodes`` (gradients from ``grad``), one line each."""
    if hasattr(nodes, "outputs") and not isinstance(nodes, Node):  # a CompiledFunction
        nodes = nodes.outputs
    nodes: Sequence[Node] = [nodes] if isinstance(nodes, Node) else list(nodes)
    if not nodes:
        return ""
    order = toposort(cse(nodes))
    shown = [n for n in order if n.op.listed]
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
    if forward:
        render("forward:", fwd)
    render("backward:" if (bwd or not fwd) else "forward:", bwd if bwd else ([] if forward else fwd))
    return "\n".join(lines)
