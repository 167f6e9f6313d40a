"""Einstein notation for one node: the right-hand side of ``name[indices] = ...``.

Each op prints itself (``Op.expression``): contractions as a sympy ``Sum`` of a
product of ``Indexed`` operands, elementwise nodes as their sympy expression with
operands substituted, and so on, so the same expression prints as text
(``formula``) and as LaTeX (``latex``).  Matrix forms (``dY·Wᵀ``, ``Xᵀ·dY``,
``Σ_n dY``) come from ``Op.matrix_form``.
"""

from __future__ import annotations

from graphc.compiler.explain.printing import index_latex, index_text
from graphc.ops.node import letters_of
from graphc.ops.symbolic import indexed, sympy_module


def safe(text: str) -> str:
    """A display name that cannot break a line of generated source (used in comments)."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _name_of(names):
    return lambda n: (names or {}).get(id(n), n.name)


def expression(node, names=None):
    """The sympy expression for the node's right-hand side (explicit Σ for contractions)."""
    return node.op.expression(node, _name_of(names))


def lhs(node, names=None) -> str:
    name = _name_of(names)(node)
    letters = letters_of(node)
    return f"{name}[{','.join(letters)}]" if letters else name


def formula(node, names=None) -> str:
    """``name[idx] = rhs`` in Einstein notation with explicit sums, and where it holds when
    not everywhere (``(0 ≤ u-p < 24)``)."""
    cond = node.op.conditions(node)
    return f"{lhs(node, names)} = {index_text(expression(node, names))}" + (f"  ({cond})" if cond else "")


def latex(node, names=None) -> str:
    left = indexed(_name_of(names)(node), letters_of(node))
    cond = node.op.conditions(node)
    where = ""
    if cond:
        tex = cond.replace("≤", r"\le ").replace(" | ", r" \mid ").replace("−", "-")
        where = rf"\quad ({tex})"
    return f"{sympy_module().latex(left)} = {index_latex(expression(node, names))}{where}"


def matrix_form(node, names=None) -> str | None:
    """``dY·Wᵀ``-style form, when the node has one."""
    return node.op.matrix_form(node, _name_of(names))
