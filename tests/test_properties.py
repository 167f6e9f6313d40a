"""Property-based tests (hypothesis).

* Random small graphs: a random sequence of ops (elementwise unary/binary with
  broadcasting, matmul, sum, transpose, einsum, softmax) over random small shapes.
  Each op is applied to graph nodes and, in parallel, to numpy arrays: the compiled
  forward value must match numpy, and ``check_grads`` must pass for every input.
* Random einsum specs: valid ones compile, match ``np.einsum`` forward and finite
  differences backward; invalid ones raise a ``GraphcError`` and nothing else.
  Arbitrary spec text over a small alphabet is also cross-checked with numpy:
  graphc accepts exactly what numpy accepts (sizes ≥ 2, so numpy's size-1
  broadcasting, which graphc refuses by design, never comes into play).
"""

from __future__ import annotations

import string

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import graphc as gc
from helpers import examples, np_softmax, softplus

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# Smooth, well-conditioned ops only: finite differences must be meaningful everywhere.
UNARY = [
    ("tanh", gc.tanh, np.tanh),
    ("sigmoid", gc.sigmoid, lambda x: 1 / (1 + np.exp(-x))),
    ("square", lambda x: x * x, np.square),
    ("neg", lambda x: -x, np.negative),
    ("exp_tanh", lambda x: gc.exp(gc.tanh(x)), lambda x: np.exp(np.tanh(x))),
    ("softplus", softplus, lambda x: np.log1p(np.exp(x))),
    ("sqrt1p", lambda x: gc.sqrt(x * x + 1.0), lambda x: np.sqrt(x * x + 1)),
    ("log1p_sq", lambda x: gc.log(1.0 + x * x), lambda x: np.log1p(x * x)),
    ("affine", lambda x: 0.5 * x - 1.5, lambda x: 0.5 * x - 1.5),
    ("cube", lambda x: x**3, lambda x: x**3),
]
BINARY = [
    ("add", lambda a, b: a + b, np.add),
    ("sub", lambda a, b: a - b, np.subtract),
    ("mul", lambda a, b: a * b, np.multiply),
    ("div", lambda a, b: a / (1.5 + gc.tanh(b)), lambda a, b: a / (1.5 + np.tanh(b))),
    ("max", lambda a, b: gc.maximum(a, b + 5.0), lambda a, b: np.maximum(a, b + 5)),  # one side wins clearly
    ("min", lambda a, b: gc.minimum(a, b - 5.0), lambda a, b: np.minimum(a, b - 5)),
]


class Builder:
    """Graph nodes and the matching numpy arrays, grown one op at a time."""

    def __init__(self, draw):
        self.draw = draw
        self.g = gc.Graph("random")
        self.seed = draw(st.integers(0, 2**32 - 1))
        # symbolic dims: every axis of size 2 is declared "p", of size 3 "q" (bound at call time)
        self.symbolic = draw(st.booleans())
        self.rng = np.random.default_rng(self.seed)
        self.pool: list[tuple] = []  # (node, array)
        self.leaves: list = []
        self.values: dict = {}
        self.ops: list[str] = []

    def __repr__(self):
        leaves = ", ".join(f"{n.name}{n.shape}" for n in self.leaves)
        return f"<graph seed={self.seed} leaves: {leaves}; ops: {' ; '.join(self.ops)}>"

    def leaf(self, shape):
        shape = tuple(SYMBOLS.get(d, d) if self.symbolic else d for d in shape)
        node = self.g.input(f"x{len(self.leaves)}", shape)
        arr = self.rng.standard_normal(tuple(SIZES.get(d, d) for d in shape))
        self.leaves.append(node)
        self.values[node.name] = arr
        self.pool.append((node, arr))
        return node, arr

    def pick(self, pred=lambda n: True):
        choices = [p for p in self.pool if pred(p[0])]
        return self.draw(st.sampled_from(choices)) if choices else None

    def add(self, name, node, arr):
        assert tuple(SIZES.get(d, d) for d in node.shape) == arr.shape, (name, node.shape, arr.shape)
        self.ops.append(name)
        self.pool.append((node, arr))


SYMBOLS = {2: "p", 3: "q"}
SIZES = {v: k for k, v in SYMBOLS.items()}
shapes = st.lists(st.integers(1, 3), min_size=0, max_size=3).map(tuple)


def step(b: Builder):
    kind = b.draw(st.sampled_from(["unary", "binary", "matmul", "sum", "transpose", "einsum", "diagonal",
                                   "softmax", "cross_entropy", "leaf"]))
    if kind == "leaf":
        b.leaf(b.draw(shapes))
    elif kind == "unary":
        name, op, ref = b.draw(st.sampled_from(UNARY))
        x, a = b.pick()
        b.add(name, op(x), ref(a))
    elif kind == "binary":
        name, op, ref = b.draw(st.sampled_from(BINARY))
        x, a = b.pick()
        # a partner whose shape is a suffix of x's (right-aligned broadcasting), or a new leaf
        y, c = b.pick(lambda n: n.ndim <= x.ndim and x.shape[x.ndim - n.ndim:] == n.shape) if b.draw(st.booleans()) \
            else b.leaf(x.shape[b.draw(st.integers(0, x.ndim)):])
        if b.draw(st.booleans()):
            x, a, y, c = y, c, x, a
        b.add(name, op(x, y), ref(a, c))
    elif kind == "matmul":
        picked = b.pick(lambda n: n.ndim in (1, 2))
        if picked is None:
            return
        x, a = picked
        W, w = b.leaf((x.shape[-1], b.draw(st.integers(1, 3))) if b.draw(st.booleans()) else (x.shape[-1],))
        if b.draw(st.booleans()) or x.ndim != 2 or W.ndim != 2:
            b.add("matmul", x @ W, a @ w)
        else:  # from the other side, through transposes
            b.add("matmul_T", W.T @ x.T, w.T @ a.T)
    elif kind == "sum":
        x, a = b.pick()
        axes = tuple(sorted(b.draw(st.sets(st.integers(0, max(x.ndim - 1, 0)), max_size=x.ndim)))) if x.ndim else ()
        if b.draw(st.booleans()):
            b.add("sum", x.sum(axes), a.sum(axes))
        else:
            b.add("mean", x.mean(axes), a.mean(axes))
    elif kind == "transpose":
        x, a = b.pick()
        perm = tuple(b.draw(st.permutations(range(x.ndim))))
        b.add("transpose", gc.transpose(x, perm), np.transpose(a, perm))
    elif kind == "einsum":
        x, a = b.pick()
        letters = "abc"[: x.ndim]
        terms, ops, arrays = [letters], [x], [a]
        other = b.pick(lambda n: n.ndim <= 3)
        if other is not None and b.draw(st.booleans()):
            y, c = other
            # reuse x's letter where the dims agree, else a fresh one
            term = "".join(
                b.draw(st.sampled_from([l for l, d in zip(letters, x.shape) if d == dim] + ["def"[k]]))
                for k, dim in enumerate(y.shape))
            assume(len(set(term)) == len(term))
            terms.append(term)
            ops.append(y)
            arrays.append(c)
        present = sorted(set("".join(terms)))
        kept = sorted(b.draw(st.sets(st.sampled_from(present), max_size=3))) if present else []  # rank ≤ 3
        out = "".join(b.draw(st.permutations(kept)))
        spec = ",".join(terms) + "->" + out
        b.add(f"einsum {spec}", gc.einsum(spec, *ops), np.einsum(spec, *arrays))
    elif kind == "diagonal":  # a repeated index: the adjoint carries a Kronecker δ
        picked = b.pick(lambda n: n.ndim >= 2 and len(set(n.shape)) < n.ndim)
        if picked is None:
            return
        x, a = picked
        k, j = next((k, j) for k in range(x.ndim) for j in range(k + 1, x.ndim) if x.shape[k] == x.shape[j])
        term = "".join("a" if m in (k, j) else "bcd"[m] for m in range(x.ndim))
        out = "".join(b.draw(st.permutations(sorted(set(term)))))[: b.draw(st.integers(0, len(set(term))))]
        spec = f"{term}->{out}"
        b.add(f"einsum {spec}", gc.einsum(spec, x), np.einsum(spec, a))
    elif kind == "softmax":
        picked = b.pick(lambda n: n.ndim >= 1)
        if picked is None:
            return
        x, a = picked
        axis = b.draw(st.integers(-x.ndim, x.ndim - 1))
        if b.draw(st.booleans()):
            b.add(f"softmax axis {axis}", gc.softmax(x, axis=axis), np_softmax(a, axis))
        else:
            b.add(f"log_softmax axis {axis}", gc.log_softmax(x, axis=axis), np.log(np_softmax(a, axis)))
    elif kind == "cross_entropy":  # targets whose rows sum to 1, as the fused rule (y - t)/N assumes
        picked = b.pick(lambda n: n.ndim in (1, 2))
        if picked is None:
            return
        x, a = picked
        z, c = b.leaf(x.shape)
        t, tv = gc.softmax(z), np_softmax(c)
        rows = a.shape[0] if a.ndim == 2 else 1
        b.add("softmax_cross_entropy", gc.softmax_cross_entropy(x, t), -np.sum(tv * np.log(np_softmax(a))) / rows)


@st.composite
def random_graphs(draw):
    b = Builder(draw)
    b.leaf(draw(shapes))
    for _ in range(draw(st.integers(2, 8))):
        step(b)
    if not b.ops or b.pool[-1][0].is_leaf:  # end on an op, not on a fresh input
        x, a = b.pool[-1]
        b.add("tanh", gc.tanh(x), np.tanh(a))
    out, ref = b.pool[-1]
    return b, out, ref


@settings(max_examples=examples(150), **SETTINGS)
@given(random_graphs())
def test_random_graph_forward_and_gradients(case):
    b, out, ref = case
    fn = gc.compile([out, *b.leaves])  # the leaves as outputs too, so every symbolic dim is bound
    np.testing.assert_allclose(fn(b.values)[0], ref, rtol=1e-10, atol=1e-12, err_msg=" ; ".join(b.ops))
    gc.check_grads(out, b.leaves, b.values)


# -- einsum specs ------------------------------------------------------------------------
@st.composite
def valid_specs(draw, min_size=1):
    alphabet = draw(st.sampled_from(["abc", "abcd", "ijk", "aAb"]))
    sizes = {l: draw(st.integers(min_size, 3)) for l in alphabet}
    n_ops = draw(st.integers(1, 3))
    terms = [draw(st.text(alphabet, min_size=0, max_size=3)) for _ in range(n_ops)]
    present = sorted(set("".join(terms)))
    implicit = draw(st.booleans()) and draw(st.booleans())
    if implicit:
        spec = ",".join(terms)
    else:
        out = draw(st.permutations(sorted(draw(st.sets(st.sampled_from(present)))) if present else []))
        spec = ",".join(terms) + "->" + "".join(out)
    shapes = [tuple(sizes[c] for c in t) for t in terms]
    return spec, shapes


@settings(max_examples=examples(150), **SETTINGS)
@given(valid_specs(), st.integers(0, 2**32 - 1))
def test_valid_einsum_specs(case, seed):
    spec, shapes = case
    rng = np.random.default_rng(seed)
    g = gc.Graph("es")
    nodes = [g.input(f"x{k}", s) for k, s in enumerate(shapes)]
    vals = {n.name: rng.standard_normal(s) for n, s in zip(nodes, shapes)}
    out = gc.einsum(spec, *nodes)
    got = gc.compile(out)(vals)
    np.testing.assert_allclose(got, np.einsum(spec, *vals.values()), rtol=1e-10, atol=1e-12, strict=False)
    assert np.shape(got) == np.shape(np.einsum(spec, *vals.values()))
    gc.check_grads(out, nodes, vals)


def _break(draw, spec: str, shapes: list) -> tuple:
    """One way to make a valid spec/operand combination invalid."""
    lhs, arrow, rhs = spec.partition("->")
    terms = lhs.split(",")
    how = draw(st.sampled_from(["out_missing", "out_repeat", "operand_count", "bad_char", "rank", "size",
                                "ellipsis", "two_arrows"]))
    if how == "out_missing":
        spec = lhs + "->" + rhs + "z"
    elif how == "out_repeat":
        present = "".join(terms)
        assume(present)
        spec = lhs + "->" + (rhs or present[0]) * 2
    elif how == "operand_count":
        shapes = shapes + [(2,)] if draw(st.booleans()) or len(shapes) == 1 else shapes[:-1]
    elif how == "bad_char":
        bad = draw(st.sampled_from(["1", "-", "Ω", "_", "!", "#"]))
        spec = bad + spec
    elif how == "rank":
        k = draw(st.integers(0, len(shapes) - 1))
        shapes = list(shapes)
        shapes[k] = shapes[k] + (2,)
    elif how == "size":
        # a letter used twice gets two different sizes
        letters = [c for c in set(lhs) if c != "," and lhs.count(c) > 1]
        assume(letters)
        c = draw(st.sampled_from(sorted(letters)))
        k = next(i for i, t in enumerate(terms) if c in t)
        j = len(terms[k]) - 1 - terms[k][::-1].index(c) if terms[k].count(c) > 1 else None
        shapes = [list(s) for s in shapes]
        if j is not None:
            shapes[k][j] += 1
        else:
            k2 = next(i for i, t in enumerate(terms) if c in t and i != k)
            shapes[k2][terms[k2].index(c)] += 1
        shapes = [tuple(s) for s in shapes]
    elif how == "ellipsis":  # a broken ellipsis ('...' itself is valid numpy, and graphc's)
        spec = ".." + spec
    elif how == "two_arrows":
        spec = spec + "->" if arrow else spec + "->->"
    return spec, shapes


@settings(max_examples=examples(150), **SETTINGS)
@given(st.data())
def test_invalid_einsum_specs_raise_a_graphc_error(data):
    spec, shapes = data.draw(valid_specs(min_size=2))
    spec, shapes = _break(data.draw, spec, shapes)
    g = gc.Graph("bad")
    nodes = [g.input(f"x{k}", s) for k, s in enumerate(shapes)]
    with pytest.raises(gc.GraphcError):
        gc.einsum(spec, *nodes)


SPEC_TEXT = st.text(alphabet="abc,->", min_size=0, max_size=9)


@settings(max_examples=examples(150), **SETTINGS)
@given(SPEC_TEXT, st.lists(st.lists(st.integers(2, 3), max_size=3), min_size=1, max_size=3))
def test_arbitrary_spec_text_agrees_with_numpy(spec, shape_lists):
    shapes = [tuple(s) for s in shape_lists]
    arrays = [np.arange(1, int(np.prod(s)) + 1, dtype=float).reshape(s) / 7 for s in shapes]
    try:
        expected = np.einsum(spec, *arrays)
    except Exception:  # noqa: BLE001 - numpy's many error types
        expected = None
    g = gc.Graph("text")
    nodes = [g.input(f"x{k}", s) for k, s in enumerate(shapes)]
    try:
        out = gc.einsum(spec, *nodes)
    except gc.GraphcError:
        assert expected is None, f"graphc rejected {spec!r} {shapes} that numpy accepts"
        return
    assert expected is not None, f"graphc accepted {spec!r} {shapes} that numpy rejects"
    got = gc.compile([out, *nodes])({n.name: a for n, a in zip(nodes, arrays)})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert np.shape(got) == np.shape(expected)


@settings(max_examples=examples(150), **SETTINGS)
@given(st.text(alphabet=string.ascii_letters[:6] + ",->. 1", max_size=12), st.integers(1, 3))
def test_einsum_never_raises_anything_but_graphc_errors(spec, n_ops):
    g = gc.Graph("any")
    nodes = [g.input(f"x{k}", (2,) * k) for k in range(n_ops)]
    try:
        gc.einsum(spec, *nodes)
    except gc.GraphcError:
        pass
