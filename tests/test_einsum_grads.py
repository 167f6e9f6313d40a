"""A battery of einsum specs: forward against ``np.einsum``, backward through ``check_grads``.

Non-scalar outputs are projected on a random tensor by ``check_grads``, so every
entry of the Jacobian is exercised.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc

SPECS = [
    ("ij,jk->ik", (2, 3), (3, 4)),  # matmul
    ("ij->ji", (2, 3)),  # transpose
    ("ii->", (3, 3)),  # trace
    ("ii->i", (3, 3)),  # diagonal
    ("ij->", (2, 3)),  # total sum
    ("ij->i", (2, 3)),  # row sums
    ("ij->j", (2, 3)),  # column sums
    ("ij,ij->", (2, 3), (2, 3)),  # Frobenius inner product
    ("ij,ij->ij", (2, 3), (2, 3)),  # Hadamard product
    ("i,j->ij", (2,), (3,)),  # outer product
    ("bij,bjk->bik", (2, 3, 4), (2, 4, 5)),  # batched matmul
    ("ij,jk,kl->il", (2, 3), (3, 4), (4, 5)),  # three-operand chain
    ("ij,jk,ki->", (2, 3), (3, 4), (4, 2)),  # cyclic trace
    ("iij->j", (3, 3, 2)),  # trace over a pair of axes
    ("ijk->kji", (2, 3, 4)),  # 3-D permutation
    ("i,i->", (3,), (3,)),  # dot
    ("ij,j->i", (2, 3), (3,)),  # matvec
    ("i,ij->j", (2,), (2, 3)),  # vecmat
    ("iji->j", (3, 2, 3)),  # diagonal of non-adjacent axes
    ("iii->i", (3, 3, 3)),
    ("iii->", (3, 3, 3)),
    ("ii,i->i", (3, 3), (3,)),
    ("ij,ji->ij", (2, 3), (3, 2)),
    ("ij,ji->", (2, 3), (3, 2)),
    ("iij,jk->ik", (3, 3, 2), (2, 4)),
    ("ab,bc,cd,de->ae", (2, 3), (3, 2), (2, 3), (3, 2)),  # four operands
    ("nh,hc->nc", ("n", 4), (4, 3)),  # symbolic dim
    ("bnh,hc->bnc", ("b", "n", 4), (4, 3)),
    ("i->", (4,)),
    ("i->i", (4,)),
    (",i->i", (), (3,)),  # scalar operand
    ("i,->i", (3,), ()),
    ("->", ()),
    ("Ab,bC->AC", (2, 3), (3, 2)),  # upper-case letters
    ("ij,jk", (2, 3), (3, 4)),  # numpy's implicit output: 'ik'
    ("ii", (3, 3)),  # implicit: trace
    ("ji", (2, 3)),  # implicit: output sorted, so a transpose
]

@pytest.mark.parametrize("case", SPECS, ids=[s[0] for s in SPECS])
def test_einsum(graph, values, case):
    spec, *shapes = case
    g, nodes = graph(*shapes)
    vals = values(nodes)
    out = gc.einsum(spec, *nodes)
    got = gc.compile([out, *nodes])(vals)[0]
    np.testing.assert_allclose(got, np.einsum(spec, *vals.values()), rtol=1e-12, atol=1e-12, strict=True)
    gc.check_grads(out, nodes, vals)


def test_same_tensor_passed_twice(rng):
    g = gc.Graph("twice")
    A = g.input("A", (2, 3))
    vals = {"A": rng.standard_normal((2, 3))}
    out = gc.einsum("ij,ij->", A, A)
    assert gc.compile(out)(vals) == pytest.approx((vals["A"] ** 2).sum(), rel=1e-14)
    gc.check_grads(out, [A], vals)
    np.testing.assert_allclose(gc.compile(gc.grad(out, A))(vals), 2 * vals["A"], rtol=1e-14)


@pytest.mark.parametrize("spec", ["ij,jk->ik", "ij,kj->ik", "ji,jk->ik", "ij,ji->", "ij,jk,ki->"])
def test_same_square_tensor_in_every_slot(rng, spec):
    g = gc.Graph("twice")
    A = g.input("A", (3, 3))
    vals = {"A": rng.standard_normal((3, 3))}
    k = spec.count(",") + 1
    out = gc.einsum(spec, *[A] * k)
    np.testing.assert_allclose(gc.compile(out)(vals), np.einsum(spec, *[vals["A"]] * k), rtol=1e-12)
    gc.check_grads(out, [A], vals)


def test_einsum_with_a_scalar_constant_operand(check):
    check(lambda x: gc.einsum("ij,->ij", x, 2.5), (2, 3), ref=lambda x: 2.5 * x)


def test_einsum_of_einsums(check):
    check(lambda a, b, c: gc.einsum("ik,k->i", gc.einsum("ij,jk->ik", a, b), gc.einsum("kj->k", c)),
          (2, 3), (3, 4), (4, 5), ref=lambda a, b, c: (a @ b) @ c.sum(1))


def test_contraction_followed_by_nonlinearity_and_contraction(check):
    check(lambda x, W, V: gc.einsum("nh,hc->nc", gc.tanh(gc.einsum("ni,ih->nh", x, W)), V).sum(),
          ("n", 3), (3, 4), (4, 2))


def test_einsum_spec_spaces_are_ignored(check):
    check(lambda a, b: gc.einsum(" ij , jk -> ik ", a, b), (2, 3), (3, 4), ref=np.matmul)


# Regression: the numpy lowering once looked a temporary node up by a recycled id().
def test_broadcast_of_a_scalar_held_in_a_planned_buffer():
    g = gc.Graph("bcast")
    x = g.input("x", (2,))
    out = gc.einsum("a,->", x, x.sum() / 2.0)  # Σ_a x[a] · mean(x) = (Σx)²/2
    dx = gc.compile(gc.grad(out, x))(x=np.array([1.0, 2.0]))
    np.testing.assert_allclose(dx, [3.0, 3.0])
