"""The numpy backend's rewrites: patterns that one call does better than several, made
explicit fused nodes (:mod:`graphc.ops.fused`) before lowering, so ``explain`` and
``fn.source`` show them and the lowering only writes code for them.

* **gemm updates**: an update ``P ← β·P + α·(A·B)`` of a matrix parameter by a product
  read nowhere else becomes ``Gemm(A, B, P)``, lowered as one BLAS gemm accumulating
  into the parameter: the gradient never exists and P is not read again.
* **gemm epilogues**: ``α·(A·B) + b``, or ``f(α·(A·B) + b)`` (a layer's activation),
  with ``b`` of the result's shape or a row, becomes ``Gemm(A, B, b, post=f)``: b copied
  into the result, one gemm with β = 1 adds the product, f runs in place after.  The
  bias add and any scaling are then no separate pass over the result.
* **softmax kept with its loss**: the softmax of the logits whose softmax cross-entropy
  is computed (the gradient reads it) becomes ``KeptSoftmax(loss, logits)``: the loss's
  pass writes it.

Each rewrite decides on the schedule of the graph it is given (:class:`Schedule`) and
rebuilds the graph once.
"""

from __future__ import annotations

from graphc.compiler.codegen.program import view_base
from graphc.compiler.codegen.schedule import Schedule
from graphc.compiler.passes.rewrite import rebuild
from graphc.compiler.walk import toposort
from graphc.ops.contraction import Contraction, matrix_product
from graphc.ops.cross_entropy import SoftmaxCrossEntropy
from graphc.ops.elementwise import Elementwise
from graphc.ops.fused import gemm, kept_softmax
from graphc.ops.nn import Softmax
from graphc.ops.symbolic import sympy_module


def fuse(outputs: list, updates: list, gemms: bool = True) -> tuple[list, list]:
    """``(outputs, updates)`` with the fusions above applied (gemm ones only with ``gemms``)."""
    outputs, updates = keep_softmax_with_loss(outputs, updates)
    if gemms:
        outputs, updates = fuse_gemms(outputs, updates)
    return outputs, updates


def _apply(outputs: list, updates: list, visit, inputs_of=None) -> tuple[list, list]:
    new = rebuild(list(outputs) + [n for _, n in updates] + [leaf for leaf, _ in updates], visit, inputs_of)
    return [new[id(o)] for o in outputs], [(new[id(leaf)], new[id(n)]) for leaf, n in updates]


def keep_softmax_with_loss(outputs: list, updates: list) -> tuple[list, list]:
    """Each ``softmax(a)`` that does not feed ``softmax_cross_entropy(a, t)`` becomes that loss's kept softmax."""
    order = toposort(list(outputs) + [n for _, n in updates])
    losses = {id(n.inputs[0]): n for n in order if isinstance(n.op, SoftmaxCrossEntropy)}
    pairs: dict[int, object] = {}
    for node in order:
        # (the loss's pass computes the softmax along the last axis)
        loss = (losses.get(id(node.inputs[0])) if isinstance(node.op, Softmax) and node.op.axis == node.ndim - 1
                else None)
        if loss is not None and not loss.op.fused_rows(loss):  # the helper path keeps no softmax
            loss = None
        if loss is not None and id(loss) not in {id(v) for v in pairs.values()} \
                and node not in toposort([loss]):  # the loss must not depend on the softmax
            pairs[id(node)] = loss
    if not pairs:
        return outputs, updates
    made: dict[int, object] = {}

    def visit(node, inputs):
        if id(node) in pairs:
            new = kept_softmax(made[id(pairs[id(node)])], inputs[0])
            new.copy_display(node)
            return new
        new = node.with_inputs(inputs)
        made[id(node)] = new
        return new

    # the kept softmax will read its loss: visit the loss first
    return _apply(outputs, updates, visit, lambda n: n.inputs + ((pairs[id(n)],) if id(n) in pairs else ()))


def _affine(expr, s_prod, s_bias) -> tuple | None:
    """(α, c) when ``expr`` is ``c·(α·s_prod + s_bias)`` for nonzero real numbers α and c, else None."""
    sp = sympy_module()
    expr = sp.expand(expr)
    a, c = expr.coeff(s_prod), expr.coeff(s_bias)
    if (a.is_number and a.is_real and a != 0 and c.is_number and c.is_real and c != 0
            and sp.expand(expr - a * s_prod - c * s_bias) == 0):
        return float(a / c), c  # c stays a sympy number: c·u is put back into the expression exactly
    return None


def _is_matrix_product(node) -> bool:
    return isinstance(node.op, Contraction) and matrix_product(node.op.spec) is not None and node.ndim == 2


def _gemm_updates(s: Schedule) -> dict:
    """Updates of a matrix leaf by a linear rule on one matrix product read nowhere else:
    update node id -> (product, α, β)."""
    sp = sympy_module()
    targets = {id(leaf) for leaf, _ in s.updates}
    found = {}
    for leaf, node in s.updates:
        if (not isinstance(node.op, Elementwise) or len(node.inputs) != 2 or node.ndim != 2
                or not s.update_writable_in_place(node)):
            continue
        k = [i is leaf for i in node.inputs]
        if sum(k) != 1 or any(idx != node.op.out_indices for idx in node.op.in_indices):
            continue
        s_leaf, s_prod = (node.op.fn.symbols[j] for j in (k.index(True), k.index(False)))
        prod = node.inputs[k.index(False)]
        if (not _is_matrix_product(prod) or len({id(r) for r in s.readers_of(prod)}) != 1 or id(prod) in s.kept
                or any(view_base(i) is not None and id(view_base(i)) in targets for i in prod.inputs)):
            continue
        expr = sp.expand(node.op.fn.expr)
        beta, alpha = expr.coeff(s_leaf), expr.coeff(s_prod)
        if (alpha.is_number and beta.is_number and alpha.is_real and beta.is_real and alpha != 0
                and sp.expand(expr - beta * s_leaf - alpha * s_prod) == 0):
            found[id(node)] = (prod, float(alpha), float(beta))
    return found


def _gemm_epilogues(s: Schedule, taken: set) -> dict:
    """``α·(A·B) + b``, or ``f(α·(A·B) + b)``, of a matrix product read nowhere else, ``b`` of the
    result's shape or a row (``f`` an elementwise function of that sum alone):
    node id -> (product, α, b, (u, f(u)) or None)."""
    sp = sympy_module()
    # where each parameter's update is computed: from there on it may hold the new value
    updated_at = {id(leaf): s.position[id(node)] for leaf, node in s.updates}
    found = {}
    for node in s.order:
        op = node.op
        if (not isinstance(op, Elementwise) or len(node.inputs) != 2 or node.ndim != 2 or node.kind != "float"
                or id(node) in s.update_of or node.inputs[0] is node.inputs[1]):
            continue
        for j in (0, 1):
            prod, bias = node.inputs[j], node.inputs[1 - j]
            if (not _is_matrix_product(prod) or len(s.readers_of(prod)) != 1 or id(prod) in s.kept
                    or id(prod) in taken
                    # the fused node reads the product's operands where the sum stood: a parameter
                    # among them whose update comes earlier may already hold its new value
                    or any(updated_at.get(id(view_base(i)), len(s.order)) < s.position[id(node)]
                           for i in prod.inputs)
                    or op.in_indices[j] != op.out_indices
                    or op.in_indices[1 - j] not in (op.out_indices, op.out_indices[-1:])):
                continue
            s_prod, s_bias = op.fn.symbols[j], op.fn.symbols[1 - j]
            affine = _affine(op.fn.expr, s_prod, s_bias)
            if affine is not None and affine[1] == 1:
                found[id(node)] = (prod, affine[0], bias, None)
                break
            # f(α·P + b), f elementwise (a relu, a tanh): the gemm makes u = α·P + b, f(u) follows.
            # sympy may hold a multiple of u (a sigmoid's 1/(1 + exp(-b - P))): c·u is replaced.
            for sub in sp.preorder_traversal(op.fn.expr):
                if isinstance(sub, sp.Add) and sub != op.fn.expr and sub.free_symbols == {s_prod, s_bias}:
                    affine = _affine(sub, s_prod, s_bias)
                    if affine is None:
                        continue
                    # named after the sum it stands for: an error about f then shows the user's terms
                    u = sp.Symbol(f"({sp.sstr(sub / affine[1])})", real=True)
                    post = op.fn.expr.xreplace({sub: affine[1] * u})
                    if post.free_symbols == {u}:
                        found[id(node)] = (prod, affine[0], bias, (u, post))
                        break
            if id(node) in found:
                break
    return found


def fuse_gemms(outputs: list, updates: list) -> tuple[list, list]:
    """Gemm updates and gemm epilogues (see the module docstring) as :class:`~graphc.ops.fused.Gemm` nodes."""
    s = Schedule(outputs, updates)
    accumulate = _gemm_updates(s)
    epilogues = _gemm_epilogues(s, {id(p) for p, _, _ in accumulate.values()})
    if not accumulate and not epilogues:
        return outputs, updates
    new: dict[int, object] = {}

    def operands(prod):
        return [new[id(i)] for i in prod.inputs]

    def visit(node, inputs):
        if id(node) in accumulate:
            prod, alpha, beta = accumulate[id(node)]
            leaf = s.update_of[id(node)]
            spec = prod.op.spec
            fused = gemm(*operands(prod), new[id(leaf)], spec, alpha, beta, spec.output, shape=node.shape)
        elif id(node) in epilogues:
            prod, alpha, bias, post = epilogues[id(node)]
            spec, op = prod.op.spec, node.op
            letter = dict(zip(op.out_indices, spec.output))
            c_indices = "".join(letter[c] for c in op.in_indices[node.inputs.index(bias)])
            fused = gemm(*operands(prod), new[id(bias)], spec, alpha, 1.0, c_indices, post, shape=node.shape)
        else:
            fused = node.with_inputs(inputs)
            new[id(node)] = fused
            return fused
        fused.copy_display(node)
        new[id(node)] = fused
        return fused

    return _apply(outputs, updates, visit)
