"""A new op is one module: its class holds the shape, derivative, printing and file rules,
and it registers a lowering for each backend.  This file is that module for a toy op,
``flip`` (reverse the last axis), followed by the tests that it then differentiates,
compiles on both backends, prints and saves like a built-in op."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.ops.node import Node, Op, letters_of
from graphc.ops.registry import FILE_OPS, LOWERINGS, lowering, saved_as
from graphc.ops.symbolic import indexed, sympy_module
from graphc.serialize import graph_difference, load_graph, save_graph


# -- the whole op ------------------------------------------------------------------------------
@saved_as("test_flip")
class Flip(Op):
    """``y[..., i] = x[..., N-1-i]``: the last axis reversed."""

    kind_name = "flip"
    file_arity = 1

    def vjp(self, node, g, wanted):
        return [flip(g)]  # flipping is its own inverse, and linear

    def expression(self, node, name_of):
        return sympy_module().Function("flip")(indexed(name_of(node.inputs[0]), letters_of(node)))

    @classmethod
    def load(cls, graph, e, inputs, shape, name, codec):
        return flip(inputs[0], name=name)


def flip(x: Node, name: str | None = None) -> Node:
    if x.ndim == 0:
        raise gc.ShapeError(f"flip: {x.name!r} is a scalar; it has no axis to reverse")
    return Node(x.graph, Flip(), [x], x.shape, x.kind, name)


@lowering("numpy", Flip)
def _flip_numpy(node, L):
    dest = L.output_buffer(node)  # a planned buffer, or a fresh array for an output
    return [f"        xp.copyto({dest}, xp.flip({L.var[id(node.inputs[0])]}, axis=-1))"]


@lowering("array_api", Flip)
def _flip_array_api(node, L):
    L.may_share(node)  # numpy's flip is a view of its operand: copied if returned
    return f"xp.flip({L.var(node.inputs[0])}, axis=-1)"


# -- what the op gets from the rest of graphc ----------------------------------------------------
def _net():
    g = gc.Graph("toy")
    x = g.input("x", ("n", 4))
    W = g.param("W", (4, 3))
    y = flip(x @ W, name="y")
    loss = (gc.tanh(y) * flip(y)).sum()
    return g, x, W, y, loss


def test_the_toy_op_is_registered_for_files_and_both_backends():
    assert FILE_OPS["test_flip"] is Flip
    assert Flip in LOWERINGS["numpy"] and Flip in LOWERINGS["array_api"]


@pytest.mark.parametrize("lowering_name", ["auto", "array_api"])
def test_the_toy_op_differentiates_and_compiles_on_both_backends(lowering_name):
    g, x, W, y, loss = _net()
    rng = np.random.default_rng(0)
    values = {"x": rng.standard_normal((5, 4)), "W": rng.standard_normal((4, 3))}
    gc.check_grads(loss, [x, W], values, lowering=lowering_name)  # finite differences, float64
    fn = gc.compile([y, loss], lowering=lowering_name)
    y_value, loss_value = fn(values)
    expected = (values["x"] @ values["W"])[:, ::-1]
    np.testing.assert_allclose(y_value, expected, rtol=1e-12)
    np.testing.assert_allclose(loss_value, np.sum(np.tanh(expected) * expected[:, ::-1]), rtol=1e-12)
    assert not np.shares_memory(y_value, values["x"])


def test_the_toy_op_prints_in_a_derivation_and_round_trips_through_a_file(tmp_path):
    g, x, W, y, loss = _net()
    (dW,) = gc.grad(loss, [W])
    text = gc.explain(dW, forward=True)
    assert "y[n,j] = flip(" in text
    save_graph([loss, dW], tmp_path / "toy.json")
    _, loaded = load_graph(tmp_path / "toy.json")
    assert graph_difference([loss, dW], loaded) is None


def test_the_toy_op_refuses_a_scalar_at_declaration():
    g = gc.Graph("toy")
    with pytest.raises(gc.ShapeError, match="flip: 's' is a scalar"):
        flip(g.input("s", ()))
