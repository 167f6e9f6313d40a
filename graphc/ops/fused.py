"""Fused ops: what a backend's rewrites turn a few nodes into, so that the fusion is
explicit in the graph (``explain`` shows it, ``fn.source`` names it) rather than
decided while code is written.  They appear only after differentiation, so they have
no derivative rule, and only in compiled programs, so they are not saved.

* :class:`Gemm` -- ``f(α·op(A)·op(B) + β·C)``: a matrix product, scaled, added to a
  third operand (a bias row, or the parameter an update writes into), and an optional
  elementwise function of the sum.  One BLAS gemm with β ≠ 0 computes the sum in place.
* :class:`KeptSoftmax` -- ``softmax(a)``, written by the pass that computes the softmax
  cross-entropy loss of ``a`` (its first input), which therefore comes first.
"""

from __future__ import annotations

from graphc.errors import GradError
from graphc.ops.contraction import Spec, bind_letters, einsum_expression, letter_sizes, matrix_product
from graphc.ops.leaves import operand_symbol
from graphc.ops.node import Node, Op, letters_of
from graphc.ops.symbolic import indexed, sympy_module


class _Fused(Op):
    def vjp(self, node, g, wanted):
        raise GradError(f"{self.describe()}: fused ops are made by the compiler after differentiation")


class Gemm(_Fused):
    """``out = post(α·einsum(spec, A, B) + β·C[c_indices])``; ``post`` is None or ``(u, expr)``,
    a sympy expression of the symbol ``u`` standing for the sum."""

    kind_name = "gemm"

    def __init__(self, spec: Spec, alpha: float, beta: float, c_indices: str, post=None):
        if matrix_product(spec) is None:
            raise ValueError(f"gemm: {spec} is not a matrix product")
        self.spec, self.alpha, self.beta, self.c_indices, self.post = spec, float(alpha), float(beta), c_indices, post

    def key(self):
        post = None if self.post is None else (str(self.post[0]), sympy_module().srepr(self.post[1]))
        return ("gemm", str(self.spec), self.alpha, self.beta, self.c_indices, post)

    def describe(self):
        return f"gemm '{self.spec}' (α = {self.alpha!r}, β = {self.beta!r})"

    def index_letters(self, node):
        return self.spec.output

    def expression(self, node, name_of):
        a, b, c = node.inputs
        product = einsum_expression(self.spec, (a, b), letter_sizes(node), name_of)
        total = _number(self.alpha) * product + _number(self.beta) * operand_symbol(c, self.c_indices, name_of)
        return total if self.post is None else self.post[1].xreplace({self.post[0]: total})

    def explain_note(self, node):
        post = "" if self.post is None else ", then f in place"
        return f"one gemm adding the product into {node.inputs[2].name}'s values{post}"

    def matrix_form(self, node, name_of):
        swap, ta, tb = matrix_product(self.spec)
        a, b, c = (name_of(i) for i in node.inputs)
        a, b = (f"{n}ᵀ" if t else n for n, t in zip((a, b), (ta, tb)))
        product = f"{b}·{a}" if swap else f"{a}·{b}"
        sign = "-" if self.alpha < 0 else "+"
        alpha = "" if abs(self.alpha) == 1.0 else f"({_number(abs(self.alpha))})·"
        beta = "" if self.beta == 1.0 else f"({_number(self.beta)})·"
        total = f"{beta}{c} {sign} {alpha}{product}"
        return total if self.post is None else f"f({total})"


def _number(value: float):
    """``value`` as a person writes it: 1/255 for the float nearest 1/255, else the float."""
    sp = sympy_module()
    exact = sp.Rational(value).limit_denominator(1 << 16)
    return exact if float(exact) == value else sp.Float(value)


class KeptSoftmax(_Fused):
    """``softmax(a)`` of the logits ``a`` (second input) whose softmax cross-entropy loss is the
    first input: the loss's pass leaves it behind, so it is not computed again."""

    kind_name = "softmax"

    def key(self):
        return ("kept_softmax",)

    def describe(self):
        return "softmax kept from the loss's pass"

    def index_letters(self, node):
        return letters_of(node.inputs[1])

    def explain_note(self, node):
        return f"kept from the pass computing {node.inputs[0].name}"

    def expression(self, node, name_of):
        return sympy_module().Function("softmax")(indexed(name_of(node.inputs[1]), letters_of(node)))


def gemm(a: Node, b: Node, c: Node, spec: Spec, alpha: float, beta: float, c_indices: str, post=None,
         shape=None, name: str | None = None) -> Node:
    """A :class:`Gemm` node (made by backend rewrites; ``shape`` is the product's)."""
    sizes = bind_letters(spec, (a, b), "gemm")
    shape = tuple(sizes[ch] for ch in spec.output) if shape is None else shape
    return Node(a.graph, Gemm(spec, alpha, beta, c_indices, post), (a, b, c), shape, "float", name)


def kept_softmax(loss: Node, logits: Node, name: str | None = None) -> Node:
    return Node(loss.graph, KeptSoftmax(), (loss, logits), logits.shape, "float", name)
