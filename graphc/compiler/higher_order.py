"""Higher order: forward mode (``jvp``), Hessian-vector products (``hvp``) and whole Hessians
(``hessian``), all symbolic, all made of the ordinary ops, so they print, compile and
differentiate like any other node.

* ``jvp`` pushes tangents forward, one rule per op, by the same Kronecker-δ calculus as the
  reverse rules: a contraction's tangent replaces one operand by its tangent in turn and sums
  (``∂out[O] = Σ_j einsum(spec, A_0, .., ∂A_j, ..)``); an elementwise node's is
  ``Σ_i ∂f/∂x_i·∂x_i`` (the partials ``grad`` uses); softmax's Jacobian is symmetric, so its
  tangent is its vjp of the tangent; log_softmax's is ``∂a − Σ_c y·∂a``; an op with a scalar
  output (softmax cross-entropy) contracts its gradient with the tangents; any other op gives
  its own (``Op.jvp``: an index sum is linear in each operand, max pooling passes the tangent
  at each window's first maximum).
* ``hvp(f, x, v)`` is ``grad(Σ grad(f, x)·v, x)``.
* ``hessian(f, x)`` differentiates every component of the gradient at once: the Hessian-vector
  product is linear in ``v``, so replacing ``v[K]`` by the Kronecker δ ``δ[K,J]`` (one δ per
  axis of x) and carrying the new indices ``J`` through every node that read ``v`` gives
  ``H[I,J] = ∂²f/∂x[I]∂x[J]``.  The δs contract away where they meet a sum, so the result
  reads the way a person writes it, e.g. ``Σ_h h[n,h]·δ[h,p]·δ[c,q] = h[n,p]·δ[c,q]``.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

from graphc.compiler.autodiff import _accumulate, grad
from graphc.compiler.explain.display import Gradients
from graphc.compiler.passes import simplify
from graphc.compiler.walk import toposort
from graphc.errors import GradError, GraphError
from graphc.ops.affine import IndexSum, Term, affine_sum
from graphc.ops.contraction import Contraction, Spec, contraction, letter_sizes
from graphc.ops.contraction import sum as sum_
from graphc.ops.elementwise import SUB, Elementwise, _derived_fn, make, mul
from graphc.ops.indices import LETTERS, format_shape, fresh_letter
from graphc.ops.leaves import Constant, Delta, DimSize, Input, Zeros, delta, zeros
from graphc.ops.nn import LogSoftmax, Softmax, softmax
from graphc.ops.node import Node, letters_of
from graphc.ops.symbolic import sympy_module
from graphc.ops.windows import Pad, Reshape, pad, reshape

#: The most entries ``hessian`` accepts for its variable (the Hessian has the square of it).
HESSIAN_MAX_ENTRIES = 4096


# -- argument checks ------------------------------------------------------------------------
def _check_output(fn: str, output, scalar: bool) -> None:
    if not isinstance(output, Node):
        raise GradError(f"{fn}: the output must be a graph node, got {output!r}")
    if output.kind != "float":
        raise GradError(f"{fn}: output {output.name!r} holds {output.kind} values and has no derivative")
    if scalar and output.shape != ():
        raise GradError(f"{fn}: output {output.name!r} has shape {format_shape(output.shape)}, not a scalar; "
                        "reduce it first (e.g. .sum())")


def _check_pairs(fn: str, output: Node, wrt, others, what: str) -> tuple[bool, list, list]:
    """``wrt`` and its tangents/vectors as two equal-length lists of nodes, checked."""
    single = isinstance(wrt, Node)
    targets = [wrt] if single else list(wrt) if isinstance(wrt, (list, tuple)) else None
    if targets is None or not targets:
        raise GradError(f"{fn}: wrt must be a node or a non-empty list of nodes, got {wrt!r}")
    if single:
        vecs = [others] if isinstance(others, Node) else None
    else:
        vecs = list(others) if isinstance(others, (list, tuple)) else None
    if vecs is None or len(vecs) != len(targets):
        raise GradError(f"{fn}: give one {what} per variable, as {'a node' if single else 'a list of nodes'}: "
                        f"{len(targets)} variable(s), got {others!r}")
    for w, v in zip(targets, vecs):
        for role, node in (("variable", w), (what, v)):
            if not isinstance(node, Node):
                raise GradError(f"{fn}: every {role} must be a graph node, got {node!r}")
            if node.graph is not output.graph:
                raise GraphError(f"{fn}: {role} {node.name!r} belongs to graph {node.graph.name!r}, "
                                 f"output {output.name!r} to {output.graph.name!r}")
            if node.kind != "float":
                raise GradError(f"{fn}: {role} {node.name!r} holds {node.kind} values; "
                                "derivatives exist only for floats")
        if v.shape != w.shape:
            raise GradError(f"{fn}: the {what} for {w.name!r} must have its shape {format_shape(w.shape)}, "
                            f"but {v.name!r} has shape {format_shape(v.shape)}")
    return single, targets, vecs


# -- forward mode ---------------------------------------------------------------------------
def jvp(output: Node, wrt, tangents):
    """Forward mode: the directional derivative ``Σ_k ∂output/∂wrt_k · tangents_k``, a node of
    the output's shape (the Jacobian-vector product), derived rule by rule in index notation.

    ``wrt`` is a node or a list of nodes, ``tangents`` a node (or list) of the same shape(s);
    any float output, scalar or not.  The tangent of a node ``y`` is printed as ``∂y``.

    >>> import graphc as gc
    >>> g = gc.Graph("jvp"); x = g.input("x", ("n", 3)); W = g.param("W", (3, 2))
    >>> y = gc.matmul(x, W, name="y"); V = g.input("V", (3, 2))
    >>> print(gc.explain(gc.jvp(y, W, V)))
    backward:
      ∂y[n,j] = Σ_i x[n,i]·V[i,j]    (∂y = x·V)
    """
    _check_output("jvp", output, scalar=False)
    _, targets, tans = _check_pairs("jvp", output, wrt, tangents, "tangent")
    with output.graph.deriving():
        t = _forward(output, targets, tans)
    return simplify([t])[0]


def _forward(output: Node, targets: Sequence[Node], tans: Sequence[Node]) -> Node:
    tangent: dict[int, Node] = {}
    for w, t in zip(targets, tans):
        if id(w) in tangent:  # the same variable twice: its tangents add
            t = _accumulate(w, [tangent[id(w)], t])
        tangent[id(w)] = t
    wanted = set(tangent)
    for node in toposort([output]):
        if id(node) in wanted or node.kind != "float":
            continue
        ins = [tangent.get(id(i)) for i in node.inputs]
        if all(t is None for t in ins):
            continue
        t = _jvp_rule(node, ins)
        if t is None or isinstance(t.op, Zeros):
            continue
        if t.auto_named and t.derived and not t.is_leaf:
            t.rename(f"∂{node.name}")  # display only, as grad's d-names
        tangent[id(node)] = t
    result = tangent.get(id(output))
    return result if result is not None else zeros(output.graph, output.shape)


def _jvp_rule(node: Node, ins: list) -> Node | None:
    op = node.op
    own = op.jvp(node, ins)  # an op that carries its own forward rule
    if own is not NotImplemented:
        return own
    if isinstance(op, Contraction):
        sizes = letter_sizes(node)
        parts = [contraction(op.spec, [t if k == j else x for k, x in enumerate(node.inputs)], sizes=sizes)
                 for j, t in enumerate(ins) if t is not None]
        return _accumulate(node, parts)
    if isinstance(op, Elementwise):
        return _accumulate(node, [_elementwise_part(node, i, t) for i, t in enumerate(ins) if t is not None])
    if isinstance(op, Softmax):  # ∂y = y·(∂a − Σ_c y·∂a): the vjp, as the Jacobian is symmetric
        return op.vjp(node, ins[0], [True])[0]
    if isinstance(op, LogSoftmax):  # ∂y = ∂a − Σ_c softmax(a)·∂a
        idx = letters_of(node)
        y = softmax(node.inputs[0], axis=op.axis)
        s = contraction(Spec((idx, idx), op._reduced(idx)), [y, ins[0]])
        return make(SUB, [ins[0], s], [idx, op._reduced(idx)], idx, node.shape)
    if isinstance(op, (Input, Constant, Zeros, Delta, DimSize)):
        return None
    if node.shape == ():
        # A scalar output (softmax cross-entropy): its gradient contracted with the tangents.
        wanted = [t is not None and x.kind == "float" for x, t in zip(node.inputs, ins)]
        grads = op.vjp(node, node.graph.constant(1.0), wanted)
        parts = [contraction(Spec((letters_of(x),) * 2, ""), [gr, t])
                 for x, gr, t in zip(node.inputs, grads, ins) if gr is not None and t is not None]
        return _accumulate(node, parts)
    raise GradError(f"jvp: {op.describe()} ({node.name!r}) has no forward-mode rule")



def _elementwise_part(node: Node, i: int, t: Node) -> Node:
    """``∂f/∂x_i·t_i`` for operand ``i`` of an elementwise node: the same derived function as
    its vjp (``g·∂f/∂x_i``), with the tangent at the operand's indices in place of ``g``."""
    sp = sympy_module()
    op = node.op
    taken = {str(s) for s in op.fn.symbols}
    gsym, ysym = (sp.Symbol(next(name + "'" * k for k in itertools.count() if name + "'" * k not in taken),
                            real=True) for name in ("g", "y"))
    d, uses_output = op.fn.partial(i)
    expr = gsym * (d.subs(sp.Symbol("y", real=True), ysym) if uses_output else d)
    symbols = (gsym, *op.fn.symbols) + ((ysym,) if uses_output else ())
    fn = _derived_fn(op.fn, i, symbols, expr)
    operands = [t, *node.inputs] + ([node] if uses_output else [])
    indices = [op.in_indices[i], *op.in_indices] + ([op.out_indices] if uses_output else [])
    return make(fn, operands, indices, op.out_indices, node.shape)


# -- Hessian-vector products ----------------------------------------------------------------
def hvp(output: Node, wrt, vectors, *, simplified: bool = True):
    """The Hessian-vector product ``H·v = grad(Σ grad(output, wrt)·v, wrt)`` of a scalar output:
    one node per variable, of its shape (a list for a list ``wrt``, mixed second derivatives
    included).  ``vectors`` must not depend on ``wrt``.

    >>> import graphc as gc
    >>> g = gc.Graph("hvp"); x = g.input("x", (3,)); v = g.input("v", (3,))
    >>> f = (x * x * x).sum()
    >>> print(gc.explain(gc.hvp(f, x, v)))
    backward:
      Hv_x[i] = 6·v[i]·x[i]
    """
    _check_output("hvp", output, scalar=True)
    single, targets, vecs = _check_pairs("hvp", output, wrt, vectors, "vector")
    with output.graph.deriving():
        gs = grad(output, targets)
    if single:  # H is symmetric: H·v is the vjp of the gradient with v as its seed
        results = [grad(gs[0], targets[0], seed=vecs[0])]
    else:
        with output.graph.deriving():
            dot = _accumulate(output, [sum_(mul(gw, v)) for gw, v in zip(gs, vecs)])
        results = list(grad(dot, targets))
    for w, r in zip(targets, results):
        if not r.is_leaf:
            r.rename(f"Hv_{w.name}")
    if simplified:
        results = simplify(results)
    return results[0] if single else Gradients(results)


# -- whole Hessians -------------------------------------------------------------------------
def hessian(output: Node, x: Node, name: str | None = None) -> Node:
    """The Hessian ``H[I,J] = ∂²output/∂x[I]∂x[J]`` of a scalar output, a node of shape
    ``x.shape + x.shape``, for an ``x`` of fixed dims with at most 4096 entries.

    It is derived symbolically: the Hessian-vector product with ``v[K]`` replaced by the
    Kronecker δ ``δ[K,J]``, whose indices ``J`` every node reading ``v`` then carries.

    >>> import graphc as gc
    >>> g = gc.Graph("hess"); A = g.input("A", ("n", 3)); w = g.param("w", (3,))
    >>> f = ((A @ w) ** 2).sum() / 2
    >>> print(gc.explain(gc.hessian(f, w, name="H")))
    backward:
      H[i,p] = Σ_n A[n,p]·A[n,i]    (H = Aᵀ·A)
    >>> u = g.param("u", (3,)); y = gc.exp(u, name="y")
    >>> print(gc.explain(gc.hessian((u * y).sum(), u, name="Hu")))
    backward:
      Hu[i,p] = (u[i]·δ[i,p] + δ[i,p])·y[i] + y[i]·δ[i,p]
    """
    _check_output("hessian", output, scalar=True)
    if not isinstance(x, Node):
        raise GradError(f"hessian: x must be a graph node (one variable), got {x!r}; "
                        "for several variables use hvp")
    _check_pairs("hessian", output, x, x, "variable")
    if any(not isinstance(d, int) for d in x.shape):
        raise GradError(f"hessian: {x.name!r} has shape {format_shape(x.shape)} with a symbolic dim; "
                        "the Hessian needs fixed dims (use hvp for large or symbolic variables)")
    size = math.prod(x.shape)
    if size > HESSIAN_MAX_ENTRIES:
        raise GradError(f"hessian: {x.name!r} has {size} entries, more than {HESSIAN_MAX_ENTRIES}: its Hessian "
                        f"would hold {size * size} numbers; use hvp (Hessian-vector products) instead")
    graph = output.graph
    v = Node(graph, Input(f"v_{x.name}"), (), x.shape, "float", f"v_{x.name}", derived=False)  # never bound
    hv = hvp(output, x, v, simplified=False)
    with graph.deriving():
        H = _batch_delta(hv, v)
    if H is None or isinstance(H.op, Zeros):
        H = zeros(graph, x.shape + x.shape)
    if any(n is v for n in toposort([H])):
        raise GradError(f"hessian: internal error: the Hessian of {output.name!r} still reads its direction")
    H.rename(name or f"H_{x.name}")
    return simplify([H])[0]


def _batch_delta(hv: Node, v: Node) -> Node | None:
    """``hv`` with ``v[K]`` replaced by ``δ[K,J]``: each node that reads ``v`` gets the batch axes
    ``J`` (v's shape) appended; contractions take the δs as operands, so they contract away."""
    graph, batch_shape = v.graph, v.shape
    r = len(batch_shape)
    new: dict[int, Node] = {}
    for node in toposort([hv]):
        if node is v or not any(id(i) in new or i is v for i in node.inputs):
            continue
        op = node.op
        if isinstance(op, Contraction):
            spec = op.spec
            used = set(spec.letters)
            J = "".join(fresh_letter(used, "pqrsuvwxyz" + LETTERS) for _ in range(r))
            sizes = {**letter_sizes(node), **dict(zip(J, batch_shape))}
            terms, operands = [], []
            for term, inp in zip(spec.inputs, node.inputs):
                if inp is v:  # v[K] -> Π δ[k_a, j_a]
                    for k, j, d in zip(term, J, batch_shape):
                        terms.append(k + j)
                        operands.append(delta(graph, d))
                elif id(inp) in new:
                    terms.append(term + J)
                    operands.append(new[id(inp)])
                else:
                    terms.append(term)
                    operands.append(inp)
            out = contraction(Spec(tuple(terms), spec.output + J), operands, sizes=sizes)
        elif isinstance(op, Elementwise):
            used = set(op.out_indices) | set("".join(op.in_indices))
            J = "".join(fresh_letter(used, "pqrsuvwxyz" + LETTERS) for _ in range(r))
            operands, indices = [], []
            for idx, inp in zip(op.in_indices, node.inputs):
                if inp is v:
                    inp = _delta_tensor(graph, batch_shape, used)
                    operands.append(inp)
                    indices.append(idx + J)
                elif id(inp) in new:
                    operands.append(new[id(inp)])
                    indices.append(idx + J)
                else:
                    operands.append(inp)
                    indices.append(idx)
            out = make(op.fn, operands, indices, op.out_indices + J, node.shape + batch_shape)
        elif isinstance(op, IndexSum):  # the batch letters J as plain terms of the operands that carry them
            used = {c for ts in [*op.terms, op.out] for t in ts for c in t.letters}
            J = "".join(fresh_letter(used, "pqrsuvwxyz" + LETTERS) for _ in range(r))
            extra = tuple(Term.of(j) for j in J)
            terms, operands = [], []
            for ts, inp in zip(op.terms, node.inputs):
                if inp is v:
                    terms.append(ts + extra)
                    operands.append(_delta_tensor(graph, batch_shape, used))
                elif id(inp) in new:
                    terms.append(ts + extra)
                    operands.append(new[id(inp)])
                else:
                    terms.append(ts)
                    operands.append(inp)
            out = affine_sum(terms, operands, op.out + extra, node.shape + batch_shape,
                             {**op.sizes, **dict(zip(J, batch_shape))}, label=op.kind_name)
        elif isinstance(op, (Reshape, Pad)) and id(node.inputs[0]) in new:  # acts on the leading axes alone
            inner = new[id(node.inputs[0])]
            out = reshape(inner, node.shape + batch_shape) if isinstance(op, Reshape) \
                else pad(inner, op.widths + ((0, 0),) * r, value=op.value)
        else:
            raise GradError(f"hessian: the Hessian-vector product passes {op.describe()} ({node.name!r}), "
                            "which cannot carry the Hessian's extra indices; use hvp")
        if out.auto_named and node.derived and not out.is_leaf and not node.auto_named:
            out.rename(f"{node.name}_H")
        new[id(node)] = out
    if hv is v:
        return _delta_tensor(graph, batch_shape, set())
    return new.get(id(hv))


def _delta_tensor(graph, shape, used: set) -> Node:
    """``E[K,J] = Π_a δ[k_a,j_a]``: the identity over an array of ``shape``, as a node."""
    letters = set()
    K = "".join(fresh_letter(letters) for _ in shape)
    J = "".join(fresh_letter(letters) for _ in shape)
    return contraction(Spec(tuple(k + j for k, j in zip(K, J)), K + J), [delta(graph, d) for d in shape])
