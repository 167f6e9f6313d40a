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

from graphc.compiler import notation
from graphc.compiler.printing import index_text
from graphc.compiler.simplify import cse
from graphc.compiler.walk import toposort
from graphc.ops.contraction import LETTERS, Contraction
from graphc.ops.elementwise import _sympy
from graphc.ops.leaves import Constant, Delta, DimSize, Input
from graphc.ops.node import Node


def _delta_steps(adj: Node) -> list[str]:
    """The seed's derivation of a contraction adjoint: chain rule, δ per index, contraction."""
    fwd, j = adj.origin
    spec = fwd.op.spec
    target, term = fwd.inputs[j], spec.inputs[j]
    g = adj.inputs[0]
    used = set(spec.letters)
    free = "".join(next(c for c in "pqrsuvwxyz" + LETTERS if c not in used and not used.add(c)) for _ in term)
    out = spec.output
    lhs = f"∂L/∂{target.name}[{','.join(free)}]"
    chain = (f"Σ_{{{','.join(out)}}} " if out else "") + f"∂L/∂{fwd.name}[{','.join(out)}]·∂{notation.lhs(fwd).split(' ')[0]}/∂{target.name}[{','.join(free)}]"
    factors = [f"{g.name}[{','.join(out)}]" if out else g.name]
    factors += [f"{o.name}[{','.join(t)}]" for k, (t, o) in enumerate(zip(spec.inputs, fwd.inputs)) if k != j]
    factors += [f"δ[{a},{b}]" for a, b in zip(term, free)]
    summed = "".join(dict.fromkeys(out + "".join(spec.inputs)))
    deltas = f"Σ_{{{','.join(summed)}}} " + "·".join(factors)
    return [f"{lhs} = {chain}", " " * len(lhs) + f" = {deltas}"]


def _is_forward(node: Node) -> bool:
    return not node.graph.is_derived(node)


def explain(nodes, *, forward: bool = False, steps: bool = False, latex: bool = False, matrix: bool = True) -> str:
    """The derived expressions of ``nodes`` (gradients from ``grad``), one line each."""
    if hasattr(nodes, "outputs") and not isinstance(nodes, Node):  # a CompiledFunction
        nodes = nodes.outputs
    nodes: Sequence[Node] = [nodes] if isinstance(nodes, Node) else list(nodes)
    if not nodes:
        return ""
    order = toposort(cse(nodes))
    shown = [n for n in order if not isinstance(n.op, (Input, Constant, DimSize, Delta))]
    fwd = [n for n in shown if _is_forward(n)]
    bwd = [n for n in shown if not _is_forward(n)]
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
            if steps and isinstance(node.op, Contraction) and node.origin is not None \
                    and isinstance(node.origin[0].op, Contraction) and node.inputs:
                lines.extend("  " + s for s in _delta_steps(node))
                lines.append("  " + " " * (len(notation.lhs(node))) + " ⇒ " + text)
            else:
                lines.append("  " + text)
            if form and form != text.split(" = ", 1)[1]:
                lines[-1] += f"    ({notation.lhs(node).split('[')[0]} = {form})"
    if forward:
        render("forward:", fwd)
    render("backward:" if (bwd or not fwd) else "forward:", bwd if bwd else ([] if forward else fwd))
    return "\n".join(lines)
