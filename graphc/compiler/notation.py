"""Einstein notation for one node: the right-hand side of ``name[indices] = ...``.

Every node is printed as a sympy expression over indexed operands: contractions as
``Σ_k x[n,k]·W[k,h]`` (a sympy ``Sum`` of a product of ``Indexed`` terms),
elementwise nodes as their sympy expression with operands substituted, so the
same expression prints as text (``formula``) and as LaTeX (``latex``).  Matrix
forms (``dY·Wᵀ``, ``Xᵀ·dY``, ``Σ_n dY``) are recognised for contractions of
vectors and matrices.
"""

from __future__ import annotations

from graphc.compiler.printing import index_latex, index_text
from graphc.ops.contraction import Contraction, letter_sizes
from graphc.ops.elementwise import Elementwise, _sympy
from graphc.ops.leaves import Constant, Delta, DimSize, Input, Zeros
from graphc.ops.nn import Argmax, LogSoftmax, OneHot, Softmax, SoftmaxCrossEntropy

SUM = "Σ"


def safe(text: str) -> str:
    """A display name that cannot break a line of generated source (used in comments)."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def node_indices(node) -> str:
    """The index letters a node is written with on the left-hand side."""
    op = node.op
    if isinstance(op, Contraction):
        return op.spec.output
    if isinstance(op, Elementwise):
        return op.out_indices
    from graphc.ops.elementwise import _indices_like

    return _indices_like(node, node.ndim)


def _indexed(name: str, letters: str):
    sp = _sympy()
    base = sp.IndexedBase(name)
    if not letters:
        return sp.Symbol(name)
    return base[tuple(sp.Idx(c) for c in letters)]


def expression(node, names=None):
    """The sympy expression for the node's right-hand side (explicit Σ for contractions)."""
    sp = _sympy()
    names = names or {}
    name = lambda n: names.get(id(n), n.name)  # noqa: E731
    op = node.op
    if isinstance(op, Contraction):
        factors = []
        for term, operand in zip(op.spec.inputs, node.inputs):
            if isinstance(operand.op, Delta):
                factors.append(sp.KroneckerDelta(sp.Idx(term[0]), sp.Idx(term[1])))
            elif isinstance(operand.op, Constant):  # its value: explain lists no constant nodes
                factors.append(sp.Float(operand.op.value))
            elif isinstance(operand.op, DimSize):
                factors.append(sp.Symbol(f"|{operand.op.dim}|", positive=True))
            else:
                factors.append(_indexed(name(operand), term))
        body = sp.Mul(*factors, evaluate=False) if len(factors) > 1 else factors[0]
        summed = op.spec.summed
        if summed:
            sizes = letter_sizes(node)
            limits = [(sp.Idx(c), 0, sp.Symbol(str(sizes[c])) - 1 if isinstance(sizes[c], str) else sizes[c] - 1)
                      for c in summed]
            return sp.Sum(body, *limits)
        return body
    if isinstance(op, Elementwise):
        subs = {}
        for sym, operand, idx in zip(op.fn.symbols, node.inputs, op.in_indices):
            if isinstance(operand.op, Constant):
                subs[sym] = sp.Float(operand.op.value)
            elif isinstance(operand.op, DimSize):
                subs[sym] = sp.Symbol(f"|{operand.op.dim}|", positive=True)
            else:
                subs[sym] = _indexed(name(operand), idx)
        return op.fn.expr.xreplace(subs)
    letters = node_indices(node)
    f = lambda label, *args: sp.Function(label)(*args)  # noqa: E731
    if isinstance(op, (Softmax, LogSoftmax)):
        return f(op.kind_name, _indexed(name(node.inputs[0]), letters))
    if isinstance(op, SoftmaxCrossEntropy):
        a, t = node.inputs
        return f("softmax_cross_entropy", sp.Symbol(name(a)), sp.Symbol(name(t)))
    if isinstance(op, (OneHot, Argmax)):
        return f(op.kind_name, sp.Symbol(name(node.inputs[0])))
    if isinstance(op, Constant):
        return sp.Float(op.value)
    if isinstance(op, Zeros):
        return sp.Integer(0)
    if isinstance(op, DimSize):
        return sp.Symbol(f"|{op.dim}|")
    if isinstance(op, Delta):
        return sp.KroneckerDelta(sp.Idx("i"), sp.Idx("j"))
    if isinstance(op, Input):
        return sp.Symbol(op.describe())
    return f(op.kind_name, *[sp.Symbol(name(i)) for i in node.inputs])


def _sum_text(expr) -> str:
    """Σ_{n,k} style for sympy Sums, the rest through the index printer."""
    sp = _sympy()
    if isinstance(expr, sp.Sum):
        letters = ",".join(str(lim[0]) for lim in expr.limits)
        sub = letters if len(expr.limits) == 1 else "{" + letters + "}"
        return f"{SUM}_{sub} {index_text(expr.function)}"
    return index_text(expr)


def lhs(node, names=None) -> str:
    name = (names or {}).get(id(node), node.name)
    letters = node_indices(node)
    return f"{name}[{','.join(letters)}]" if letters else name


def formula(node, names=None) -> str:
    """``name[idx] = rhs`` in Einstein notation with explicit sums."""
    return f"{lhs(node, names)} = {_sum_text(expression(node, names))}"


def latex(node, names=None) -> str:
    sp = _sympy()
    left = _indexed((names or {}).get(id(node), node.name), node_indices(node))
    return f"{sp.latex(left)} = {index_latex(expression(node, names))}"


def matrix_form(node, names=None) -> str | None:
    """``dY·Wᵀ``-style form for a contraction of vectors and matrices, when it is one."""
    op = node.op
    if not isinstance(op, Contraction) or any(isinstance(i.op, Delta) for i in node.inputs):
        return None
    name = lambda n: (names or {}).get(id(n), n.name)  # noqa: E731
    spec = op.spec
    if any(len(t) > 2 for t in spec.inputs) or len(spec.output) > 2:
        return None
    if len(spec.inputs) == 1:
        term, out, a = spec.inputs[0], spec.output, name(node.inputs[0])
        if len(set(term)) < len(term):
            return f"tr({a})" if not out else f"diag({a})"
        if term == out:
            return a
        if sorted(term) == sorted(out):
            return f"{a}ᵀ"
        summed = [c for c in term if c not in out]
        kept = "".join(c for c in term if c in out)
        if kept == out and summed:
            return f"{SUM}_{','.join(summed)} {a}" if out else f"{SUM} {a}"
        return None
    if len(spec.inputs) != 2:
        return None
    (ta, tb), out = spec.inputs, spec.output
    shared = set(ta) & set(tb)
    summed = [c for c in shared if c not in out]
    if len(summed) != 1 or shared - set(summed) or len(set(ta)) < len(ta) or len(set(tb)) < len(tb):
        return None
    s = summed[0]
    a, b = name(node.inputs[0]), name(node.inputs[1])
    fa, fb = ta.replace(s, ""), tb.replace(s, "")
    if set(fa + fb) != set(out) or len(fa) + len(fb) != len(out):
        return None
    # Orient a as (free, s) and b as (s, free): a·b has indices fa+fb.
    left = a if ta.endswith(s) or len(ta) == 1 else f"{a}ᵀ"
    right = b if tb.startswith(s) or len(tb) == 1 else f"{b}ᵀ"
    if len(ta) == 1 and len(tb) == 1:
        return f"{a}·{b}"
    if fa + fb == out:
        return f"{left}·{right}"
    if fb + fa == out:  # (a·b)ᵀ = bᵀ·aᵀ
        left = b if tb.endswith(s) or len(tb) == 1 else f"{b}ᵀ"
        right = a if ta.startswith(s) or len(ta) == 1 else f"{a}ᵀ"
        return f"{left}·{right}"
    return None
