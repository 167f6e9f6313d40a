"""Plain helpers the test modules share (fixtures are in conftest.py; the seed's numpy layers,
the reference the two-layer net is compared with, are graphc.reference).

* What a compiled function runs: ``program_nodes``, ``epilogue_gemms``, ``update_gemms``,
  ``readers_of`` read the compiled program's graph (after simplification and the numpy
  backend's fusions), so tests ask whether a fusion was made without matching source text.
* Arrays: ``stored_as`` (the same values in another memory layout), ``assert_agree`` (two
  functions' results equal to rounding, shapes and dtypes equal), ``run_in_threads``.
* A user-defined op: ``softplus`` (declared with ``gc.elementwise`` from a sympy expression).
* References: ``np_softmax``, ``np_log_softmax``, ``reference_logits``.
* Reading ``explain``: ``explain_lines``.
* The MNIST-shaped net and data: ``mnist_graph``, ``mnist_batch``, and the small problem
  the checkpoint tests train on in several processes (``small_mnist``, ``checkpoint_config``).
"""

from __future__ import annotations

import re
import threading

import numpy as np
import sympy

import graphc as gc
from graphc.compiler.walk import toposort
from graphc.ops.fused import Gemm


# -- what a compiled function runs -----------------------------------------------------------
def _program(fn):
    return getattr(fn, "fn", fn).program  # a CompiledFunction, or a TrainStep / Evaluator holding one


def program_nodes(fn) -> list:
    """The nodes (leaves left out) of the program ``fn`` runs, each after its inputs: the graph
    after simplification and, on the numpy lowering, the backend's fusions."""
    prog = _program(fn)
    return [n for n in toposort(list(prog.outputs) + [node for _, node in prog.updates]) if not n.is_leaf]


def update_gemms(fn) -> dict:
    """{param name: Gemm node} for each update fused into one gemm accumulating into the param."""
    return {leaf.name: node for leaf, node in _program(fn).updates
            if isinstance(node.op, Gemm) and node.inputs[2] is leaf}


def epilogue_gemms(fn) -> list:
    """The gemm epilogues: Gemm nodes that add a product into a copy of a bias (``α·(A·B) + b``),
    and apply an elementwise function after when ``node.op.post`` is set."""
    accumulating = {id(node) for node in update_gemms(fn).values()}
    return [n for n in program_nodes(fn) if isinstance(n.op, Gemm) and id(n) not in accumulating]


def readers_of(fn, leaf_name: str) -> list:
    """The program's nodes that read the input or param named ``leaf_name``."""
    return [n for n in program_nodes(fn) if any(i.is_leaf and i.name == leaf_name for i in n.inputs)]


# -- arrays -----------------------------------------------------------------------------------
#: The layouts ``stored_as`` makes: BLAS reads C, F, padded and read-only arrays in place;
#: strided (every other entry along the last axis) and reversed (negative strides) it cannot.
LAYOUTS = ["C", "F", "strided", "padded", "readonly", "reversed"]


def stored_as(a, kind: str) -> np.ndarray:
    """A new array with the values of ``a``, stored as ``kind`` (one of LAYOUTS)."""
    a = np.asarray(a)
    if kind == "C":
        return np.array(a, order="C", copy=True)
    if kind == "F":
        return np.array(a, order="F", copy=True)
    if kind == "strided":
        wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        wide[..., ::2] = a
        return wide[..., ::2]
    if kind == "padded":  # rows of a wider array: a leading dimension larger than the width
        wide = np.zeros(a.shape[:-1] + (a.shape[-1] + 3,), a.dtype)
        wide[..., : a.shape[-1]] = a
        return wide[..., : a.shape[-1]]
    if kind == "readonly":
        a = a.copy()
        a.flags.writeable = False
        return a
    if kind == "reversed":
        return a[::-1].copy()[::-1]
    raise AssertionError(kind)


def assert_agree(got, want, dtype=np.float64) -> None:
    """``got`` and ``want`` (an array or a tuple of them, as compiled functions return) have the
    same number of results, each of the same shape and dtype and equal to rounding in ``dtype``."""
    tol = 2e-4 if np.dtype(dtype) == np.float32 else 1e-10
    got, want = (r if isinstance(r, tuple) else (r,) for r in (got, want))
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def run_in_threads(work, n: int) -> None:
    """Run ``work(k)`` for k in 0..n-1, one thread each, and wait for all of them."""
    threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


# -- a user-defined op ----------------------------------------------------------------------------
softplus = gc.elementwise("softplus", lambda x: sympy.log(1 + sympy.exp(x)))


# -- references -------------------------------------------------------------------------------
def np_softmax(a, axis: int = -1):
    e = np.exp(a - a.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def np_log_softmax(a):
    """Shifted before the exponential, so accurate for logits tens apart too."""
    shifted = a - a.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def reference_logits(params, x):
    """The two-layer net's logits on images ``x``/255, in float64 numpy."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    h = np.maximum(np.asarray(x, np.float64) / 255.0 @ p["W1"] + p["b1"], 0)
    return h @ p["W2"] + p["b2"]


# -- reading explain --------------------------------------------------------------------------------
def explain_lines(text: str) -> dict:
    """{lhs name: line} for the lines of an ``explain`` output."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"\s+([^\s\[=]+)(\[[^\]]*\])? = ", line)
        if m:
            out[m.group(1)] = line
    return out


# -- the MNIST-shaped net and data ----------------------------------------------------------------
def mnist_graph(integer_labels: bool = False, name: str = "mnist"):
    """The two-layer MNIST net declared by hand (second layer as an einsum):
    ``(graph, (x, t, W1, b1, W2, b2), loss, gradients wrt W1, b1, W2, b2)``."""
    g = gc.Graph(name)
    x = g.input("x", ("n", 784))
    t = g.input("t", ("n",), kind="int") if integer_labels else g.input("t", ("n", 10))
    W1, b1 = g.param("W1", (784, 50)), g.param("b1", (50,))
    W2, b2 = g.param("W2", (50, 10)), g.param("b2", (10,))
    h = gc.relu(x @ W1 + b1)
    a = gc.einsum("nh,hc->nc", h, W2) + b2
    loss = gc.softmax_cross_entropy(a, t)
    return g, (x, t, W1, b1, W2, b2), loss, gc.grad(loss, [W1, b1, W2, b2])


def mnist_batch(rng, n: int = 32, integer: bool = False, dtype=np.float64):
    """Random images in [0, 1) of 784 pixels and labels (one-hot, or class indices with ``integer``)."""
    x = rng.random((n, 784)).astype(dtype)
    labels = rng.integers(0, 10, n)
    return x, (labels if integer else np.eye(10, dtype=dtype)[labels])


def small_mnist():
    """A small MNIST-shaped problem, the same in every process: ((x, t), (x_test, t_test))."""
    rng = np.random.default_rng(123)
    x = rng.random((600, 784), dtype=np.float32)
    t = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 600)]
    return (x, t), (x[:200], t[:200])


def checkpoint_config(out, iters, checkpoint_every=0, optimizer="momentum"):
    """The TrainConfig of the checkpoint tests: ``small_mnist`` in batches of 20, resuming from ``out``."""
    from graphc.train import TrainConfig

    return TrainConfig(iters=iters, batch_size=20, lr=0.05, optimizer=optimizer, seed=7, out=str(out),
                       checkpoint_every=checkpoint_every, resume=True, progress=False, plot=False, eval_chunk=128)


def examples(ci: int) -> int:
    """A property's number of examples: ``ci`` in the default profile, at least the deep profile's
    10,000 under ``GRAPHC_HYPOTHESIS=deep`` (profiles are registered in conftest.py)."""
    import os

    return max(ci, 10_000) if os.environ.get("GRAPHC_HYPOTHESIS") == "deep" else ci
