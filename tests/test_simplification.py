"""What compile keeps of a graph: only the requested gradients, each common subexpression
once, transposes folded into the contractions that read them, chains of contractions and of
elementwise ops fused.  Read from the simplified graph or the compiled program; the emitted
source only where the point is that no permuting or copying call is written.
"""

from __future__ import annotations

import ast

import numpy as np
import pytest
import sympy

import graphc as gc
from graphc.compiler.passes.simplification import simplify
from graphc.compiler.walk import toposort
from graphc.ops.contraction import Contraction
from graphc.ops.elementwise import Elementwise
from graphc.ops.fused import Gemm
from graphc.ops.leaves import Input
from helpers import explain_lines, mnist_graph, program_nodes


# -- only what is requested ------------------------------------------------------------------
def test_only_the_requested_gradient_is_built(affine):
    g, (x, W, b), loss, _ = affine
    dW = gc.grad(loss, [W])[0]
    nodes = toposort([dW])
    assert not [n for n in nodes if n.origin is not None and n.origin[0].inputs[n.origin[1]] is x]
    assert "dx" not in explain_lines(gc.explain(dW))
    assert "dx" not in {n.name for n in program_nodes(gc.compile(dW))}


def test_only_the_requested_gradient_is_compiled(affine):
    g, (x, W, b), loss, _ = affine

    def contractions(outputs):
        return sum(isinstance(n.op, Contraction) and len(n.inputs) > 1 for n in toposort(simplify(outputs)))

    dW, dx = gc.grad(loss, [W, x])
    assert contractions(gc.grad(loss, [W])) == 2  # forward x·W, then dW = xᵀ·dY
    assert contractions([dW, dx]) == 3  # ... and dx = dY·Wᵀ
    assert "dx" in explain_lines(gc.explain([dW, dx]))


def test_gradient_wrt_data_only_builds_no_weight_gradient():
    g, (x, t, W1, b1, W2, b2), loss, _ = mnist_graph()
    dx = gc.grad(loss, x)
    names = explain_lines(gc.explain(dx))
    assert "dx" in names and not {"dW1", "db1", "dW2", "db2"} & set(names)


# -- common subexpressions ------------------------------------------------------------------
def _exps(fn) -> int:
    """How many exponentials the compiled program evaluates (in elementwise nodes and gemm epilogues)."""
    exprs = [n.op.fn.expr for n in program_nodes(fn) if isinstance(n.op, Elementwise)]
    exprs += [n.op.post[1] for n in program_nodes(fn) if isinstance(n.op, Gemm) and n.op.post is not None]
    return sum(len(e.atoms(sympy.exp)) for e in exprs)


def test_the_same_expression_built_twice_is_computed_once(graph, values):
    g, (x, W) = graph(("n", 3), (3, 2))
    e1, e2 = gc.exp(x @ W).sum(), gc.exp(x @ W).sum()
    assert e1 is not e2
    fn = gc.compile([e1, e2])
    assert _exps(fn) == 1
    kept = toposort(simplify([e1, e2]))
    assert sum(isinstance(n.op, Contraction) and len(n.inputs) == 2 for n in kept) == 1
    out = fn(values([x, W]))
    assert out[0] == out[1]


def test_a_product_of_two_copies_is_a_square(graph, values):
    g, (x, W) = graph(("n", 3), (3, 2))
    fn = gc.compile(gc.exp(x @ W) * gc.exp(x @ W))
    assert _exps(fn) == 1
    vals = values([x, W])
    np.testing.assert_allclose(fn(vals), np.exp(vals["x0"] @ vals["x1"]) ** 2, rtol=1e-13)


def test_forward_values_are_shared_with_the_backward_pass(affine):
    g, (x, W, b), loss, grads = affine
    fn = gc.compile([loss, *grads])
    # the forward matmul is computed once and reused by dx, dW, db
    kept = toposort(simplify([loss, *grads]))
    assert sum(isinstance(n.op, Contraction) and len(n.inputs) == 2 for n in kept) == 3


# -- transposes are folded into contractions ----------------------------------------------
def materialised_transposes(fn) -> list:
    """Statements of the generated ``run`` that only permute or copy an array.

    Read from the source on purpose: a lowering may add a copy (for BLAS's layouts, say)
    that no graph node stands for; the point is that none is written."""
    tree = ast.parse(fn.source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            f = node.value.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in ("permute_dims", "transpose", "swapaxes", "ascontiguousarray", "copy"):
                found.append(ast.unparse(node))
    return found


@pytest.mark.parametrize("build", [
    lambda x, y: x.T @ y,
    lambda x, y: (y.T @ x).T,
    lambda x, y: gc.einsum("ij,ik->jk", x, y),
    lambda x, y: gc.transpose(gc.transpose(x)).T @ y,
], ids=["xT_y", "transposed_product", "einsum", "double_transpose"])
def test_transposes_are_not_materialised(graph, values, build):
    g, (x, y) = graph(("n", 3), ("n", 2))
    out = build(x, y)
    kept = toposort(simplify([out]))
    assert [type(n.op).__name__ for n in kept if not isinstance(n.op, Input)] == ["Contraction"]
    assert set(kept[-1].inputs) == {x, y}  # the transpose merged into the contraction
    fn = gc.compile(out)
    assert not materialised_transposes(fn), fn.source
    vals = values([x, y])
    np.testing.assert_allclose(fn(vals), vals["x0"].T @ vals["x1"], rtol=1e-13)


def test_backward_of_an_affine_layer_materialises_no_transpose(affine):
    fn = gc.compile(affine[3])
    assert not materialised_transposes(fn), fn.source


# -- chains are fused ------------------------------------------------------------------------
def test_contractions_read_only_once_are_fused(graph):
    g, (a, b, c) = graph((2, 3), (3, 4), (4, 5))
    kept = toposort(simplify([(a @ b) @ c]))
    contractions = [n for n in kept if isinstance(n.op, Contraction)]
    assert len(contractions) == 1 and len(contractions[0].inputs) == 3


def test_elementwise_chains_are_fused(graph):
    g, (x,) = graph((3,))
    kept = toposort(simplify([gc.exp(gc.tanh(x) * 2.0 + 1.0)]))
    assert sum(isinstance(n.op, Elementwise) for n in kept) == 1
