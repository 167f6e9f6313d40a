"""graphc.serialize: graph files round-trip exactly, bad files fail cleanly, arrays never unpickle."""

from __future__ import annotations

import builtins
import copy
import io
import json
import os
import pickle
import stat
import sys
import zipfile

import numpy as np
import pytest
import sympy
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import graphc as gc
from graphc import serialize
from graphc.errors import SerializationError
from graphc.ops import elementwise as ew
from graphc.serialize import (
    atomic_write, expr_from_json, expr_to_json, graph_difference, graph_from_dict, graph_to_dict, graphs_equal,
    load_arrays, load_graph, save_arrays, save_graph,
)
from helpers import examples, mnist_graph


# -- fixtures: the MNIST net, its gradient, and a graph using every op ------------------------------
def mnist(integer_labels: bool = False):
    """The MNIST net's loss and its gradients wrt W1, b1, W2, b2 (graph named 'mnist')."""
    _, _, loss, grads = mnist_graph(integer_labels)
    return loss, grads


def mnist_arrays(integer_labels: bool, n: int = 7, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    return {"x": rng.normal(size=(n, 784)), "t": labels if integer_labels else np.eye(10)[labels],
            "W1": rng.normal(size=(784, 50)) * 0.05, "b1": rng.normal(size=50), "W2": rng.normal(size=(50, 10)),
            "b2": rng.normal(size=10)}


def zoo():
    """A graph whose outputs and gradients use every op kind the file format knows."""
    g = gc.Graph("zoo")
    X, v = g.input("X", (4, 4)), g.input("v", ("n", 4))
    lab = g.input("lab", ("n",), kind="int")
    P, u, unrelated = g.param("P", (4, 4)), g.param("u", (4,)), g.param("unrelated", (3,))
    softplus = gc.elementwise("softplus", lambda a: sympy.log(1 + sympy.exp(a)))
    greater = gc.elementwise("greater", lambda a, b: a > b)
    scaled = gc.elementwise("scaled", lambda a: sympy.Float("0.125") * a + sympy.Rational(1, 3) * a ** 3 + sympy.pi)
    y = gc.trace(X @ P) + gc.diagonal(P).sum() + (v @ P).mean()
    z = (gc.sigmoid(v) * gc.tanh(v) + gc.exp(v) / gc.sqrt(gc.maximum(v, 0.5) + 1.0)
         - gc.log(softplus(v)) ** 2 + gc.step(v) * 0.25 + scaled(v))
    loss = (y + z.sum() + gc.softmax_cross_entropy(gc.log_softmax(v @ P + u), lab)
            + (gc.softmax(v) * gc.one_hot(lab, 4)).sum())
    grads = gc.grad(loss, [P, u, unrelated])
    return [loss, gc.argmax(v), greater(v, u), *grads, g.constant(3.0)]


def zoo_arrays(seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    return {"X": rng.normal(size=(4, 4)), "v": np.abs(rng.normal(size=(5, 4))), "lab": rng.integers(0, 4, 5),
            "P": rng.normal(size=(4, 4)), "u": rng.normal(size=4)}


def roundtrip(outputs, via: str = "dict"):
    if via == "dict":
        return graph_from_dict(json.loads(json.dumps(graph_to_dict(outputs))))
    buf = io.StringIO() if via == "text" else io.BytesIO()
    save_graph(outputs, buf)
    buf.seek(0)
    return load_graph(buf)


def assert_same_results(a, b, arrays):
    fa, fb = gc.compile(a), gc.compile(b)
    assert fa.source == fb.source  # the whole program, compared as text: the loaded graph compiles to the same code
    ra, rb = fa(**arrays), fb(**arrays)
    for x, y in zip(ra, rb):
        assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True)


# -- round trips --------------------------------------------------------------------------------------
@pytest.mark.parametrize("integer_labels", [False, True])
@pytest.mark.parametrize("which", ["forward", "gradient", "both"])
def test_mnist_roundtrip_is_structurally_equal_and_computes_identically(tmp_path, integer_labels, which):
    loss, grads = mnist(integer_labels)
    outputs = {"forward": [loss], "gradient": grads, "both": [loss, *grads]}[which]
    save_graph(outputs, tmp_path / "net.json")
    graph, loaded = load_graph(tmp_path / "net.json")
    assert graph.name == "mnist" and len(loaded) == len(outputs)
    assert graph_difference(outputs, loaded) is None
    assert [n.name for n in graph.params] == ["W1", "b1", "W2", "b2"]
    assert_same_results(outputs, loaded, mnist_arrays(integer_labels))


@pytest.mark.parametrize("via", ["dict", "text", "bytes"])
def test_every_op_roundtrips(via):
    outputs = zoo()
    _, loaded = roundtrip(outputs, via)
    assert graph_difference(outputs, loaded) is None
    assert_same_results(outputs, loaded, zoo_arrays())


def test_file_lists_every_op_and_nodes_after_their_inputs():
    d = graph_to_dict(zoo())
    ops = {e["op"] for e in d["nodes"]}
    assert ops == {"constant", "zeros", "delta", "dim_size", "einsum", "elementwise", "softmax", "log_softmax",
                   "softmax_cross_entropy", "one_hot", "argmax"}
    defined = {leaf["id"] for leaf in d["leaves"]}
    for e in d["nodes"]:
        assert set(e["inputs"]) <= defined
        defined.add(e["id"])
    assert any(e["op"] == "einsum" and e["spec"].startswith("->") for e in d["nodes"])  # broadcast kept


def test_gradient_metadata_survives_so_explain_reads_the_same():
    loss, grads = mnist()
    graph, loaded = roundtrip(grads, "text")
    assert gc.explain(loaded, forward=True, steps=True) == gc.explain(grads, forward=True, steps=True)
    assert all(n.derived for n in loaded)


def test_builtin_functions_come_back_with_their_derivative_rules():
    g = gc.Graph("m")
    a, b = g.input("a", (3,)), g.input("b", (3,))
    out = gc.maximum(a, b).sum()
    _, (loaded,) = roundtrip(out)
    assert loaded.inputs[0].op.fn is ew.MAXIMUM
    # The tie rule (half the gradient to each side) is a derivative override, not sympy's diff.
    same = {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([1.0, 0.0, 5.0])}
    lg = loaded.graph
    want = gc.compile(gc.grad(out, [a, b]))(**same)
    got = gc.compile(gc.grad(loaded, [lg.leaves["a"], lg.leaves["b"]]))(**same)
    assert all(np.array_equal(x, y) for x, y in zip(want, got))
    assert want[1][0] == 0.5  # the tie at index 0: half reaches b


def test_name_override_and_graph_difference_reports_changes():
    loss, grads = mnist()
    graph, loaded = graph_from_dict(graph_to_dict(loss, name="renamed"))
    assert graph.name == "renamed" and graphs_equal(loss, loaded)
    other, _ = mnist(integer_labels=True)
    assert "leaves differ" in graph_difference(loss, other)
    assert not graphs_equal(grads, grads[::-1])


# -- expressions ------------------------------------------------------------------------------------
_x, _y = sympy.Symbol("x0", real=True), sympy.Symbol("x1", real=True)
_atoms = st.sampled_from([_x, _y, sympy.Integer(0), sympy.Integer(-3), sympy.Rational(2, 7), sympy.Float(0.1),
                          sympy.Float("1.5e-300"), sympy.Float("0.1", 40), sympy.pi, sympy.E, sympy.oo, sympy.nan,
                          sympy.zoo, sympy.I])
_unary = [sympy.exp, sympy.log, sympy.tanh, sympy.Abs, sympy.sin, sympy.atanh, sympy.sign, sympy.floor]
_binary = [sympy.Add, sympy.Mul, sympy.Pow, sympy.Max, sympy.Min]
_relations = [sympy.StrictGreaterThan, sympy.LessThan, sympy.Unequality, sympy.Equality]


def _build(t):
    f, *args = t
    try:  # unevaluated: any structure, in any argument order, must survive exactly
        return f(*args, evaluate=False)
    except Exception:  # sympy refuses some combinations (comparisons with nan)
        return args[0]


# Unevaluated construction is cheap and arbitrary; evaluated sympy arithmetic on random trees can
# run for minutes, so evaluated expressions are covered by every built-in function's derivatives below.
_plain = st.recursive(_atoms, lambda sub: st.one_of(  # no Piecewise: sympy folds one inside a condition
    st.tuples(st.sampled_from(_unary), sub).map(_build),
    st.tuples(st.sampled_from(_binary), sub, sub).map(_build)), max_leaves=6)
_boolean = st.recursive(
    st.one_of(st.just(sympy.true), st.tuples(st.sampled_from(_relations), _plain, _plain).map(_build)
              .filter(lambda e: e.is_Relational)),
    lambda sub: st.one_of(st.tuples(st.sampled_from([sympy.And, sympy.Or, sympy.Xor]), sub, sub).map(_build),
                          sub.map(lambda b: sympy.Not(b, evaluate=False))), max_leaves=4)
_numeric = st.recursive(_plain, lambda sub: st.one_of(
    st.tuples(st.sampled_from(_binary), sub, sub).map(_build),
    st.tuples(st.just(lambda v, c, w, evaluate: sympy.Piecewise((v, c), (w, True), evaluate=evaluate)),
              sub, _boolean, sub).map(_build)), max_leaves=6)


def _rebuildable(expr) -> bool:
    """sympy's invariant ``e.func(*e.args) == e`` (unevaluated), which the codec relies on.

    Random unevaluated trees can break it: Or(Or(a, b), c) may keep a contradiction that
    Or(a, b, c) simplifies away.  Expressions that ops build always satisfy it.
    """
    for sub in sympy.preorder_traversal(expr):
        if sub.args and not isinstance(sub, sympy.functions.elementary.piecewise.ExprCondPair):
            try:
                again = sub.func(*sub.args, evaluate=False)
            except TypeError:
                again = sub.func(*sub.args)
            if again != sub:
                return False
    return True


@settings(max_examples=examples(200), deadline=None)
@given(st.one_of(_numeric, _boolean))
def test_expressions_roundtrip_exactly(expr):
    assume(_rebuildable(expr))
    tree = json.loads(json.dumps(expr_to_json(expr, declared=(_x,))))
    back = expr_from_json(tree, {"x0": _x})
    assert back == expr and type(back) is type(expr)  # Basic.__eq__: same classes and args, in order
    assert expr_to_json(back, declared=(_x,)) == tree


_FNS = [v for mod in (ew, gc.ops.nn, gc.ops.cross_entropy) for v in vars(mod).values() if isinstance(v, ew.ElementwiseFn)]


@pytest.mark.parametrize("fn", _FNS, ids=lambda f: f.name)
def test_builtin_expressions_and_their_derivatives_roundtrip(fn):
    exprs = [fn.expr] + [fn.partial(i)[0] for i in range(fn.arity)]
    for expr in exprs:
        declared = tuple(expr.free_symbols)
        tree = json.loads(json.dumps(expr_to_json(expr, declared)))
        assert sympy.srepr(expr_from_json(tree, {s.name: s for s in declared})) == sympy.srepr(expr)


def test_symbol_assumptions_and_float_precision_roundtrip():
    s = sympy.Symbol("s", positive=True, integer=True)
    f = sympy.Float("0.1", 40)
    for expr in (s, f, sympy.Float(1e300) * s, sympy.S.true, sympy.And(s > 1, sympy.Not(s < 5))):
        assert expr_from_json(json.loads(json.dumps(expr_to_json(expr)))) == expr


def test_unsupported_sympy_classes_are_refused_when_saving():
    with pytest.raises(SerializationError, match="cannot save sympy"):
        expr_to_json(sympy.Function("f")(_x))


# -- bad files ---------------------------------------------------------------------------------------
def _base() -> dict:
    return graph_to_dict(mnist()[1])


def _node(d, op, k=0):
    return [e for e in d["nodes"] if e["op"] == op][k]


def _chain(depth):
    tree = ["Symbol", "x0"]
    for _ in range(depth):
        tree = ["exp", tree]
    return tree


def _nested_piecewise(depth):
    """Piecewise inside conditions: sympy folds these in exponential time (minutes at depth 8)."""
    tree = ["Symbol", "x0"]
    for k in range(depth):
        cond = ["StrictGreaterThan", tree, ["Integer", k]]
        tree = ["Piecewise", [[tree, cond], [["Symbol", "x1"], ["BooleanTrue"]]]]
    return tree


def _cycle(d):
    a, b = d["nodes"][0], d["nodes"][1]
    a["inputs"] = [b["id"]]
    b["inputs"] = [a["id"]]


def _leaf_named(name):
    return lambda d: next(e for e in d["leaves"] if e["name"] == name)


def _on(target, /, **fields):
    """A mutation: update the leaf named ``target``, or else the first node of op ``target``, with ``fields``."""
    def mutate(d):
        leaves = [e for e in d["leaves"] if e["name"] == target]
        (leaves[0] if leaves else _node(d, target)).update(fields)
    return mutate


def _first(**fields):
    return lambda d: d["nodes"][0].update(fields)


def _labels_flag(d):
    node = _node(d, "softmax")
    node.pop("axis", None)
    node.update(op="softmax_cross_entropy", integer_labels=True, shape=[],
                inputs=[node["inputs"][0], _leaf_named("t")(d)["id"]])


BAD = {  # name: (mutation of a valid file dict, words the message must contain)
    "format": (lambda d: d.update(format="onnx"), "not a graphc graph file"),
    "no format": (lambda d: d.pop("format"), "not a graphc graph file"),
    "version 2": (lambda d: d.update(version=2), "unsupported graph file version 2"),
    "version text": (lambda d: d.update(version="1"), "unsupported graph file version"),
    "version bool": (lambda d: d.update(version=True), "unsupported graph file version"),
    "missing nodes": (lambda d: d.pop("nodes"), "missing field(s) 'nodes'"),
    "unknown top field": (lambda d: d.update(extra=1), "unknown field(s) 'extra'"),
    "unknown op": (_first(op="conv2d"), "unknown op 'conv2d'"),
    "missing node field": (lambda d: d["nodes"][0].pop("shape"), "missing field(s) 'shape'"),
    "unknown node field": (_first(code="rm -rf"), "unknown field(s) 'code'"),
    "forward reference": (lambda d: d["nodes"][0].update(inputs=[d["nodes"][-1]["id"]]), "no node defined before"),
    "dangling input": (_first(inputs=[999]), "id 999 refers to no node"),
    "self loop": (lambda d: d["nodes"][0].update(inputs=[d["nodes"][0]["id"]]), "no node defined before"),
    "cycle": (_cycle, "cycles are impossible"),
    "duplicate id": (lambda d: d["nodes"][1].update(id=d["nodes"][0]["id"]), "already used"),
    "bool id": (_first(id=True), "not an int"),
    "not an object": (lambda d: d["nodes"].append([1, 2]), "id None is missing"),
    "negative dim": (_on("W1", shape=[-784, 50]), "dim -784"),
    "huge dim": (_on("W1", shape=[2**40 + 1, 50]), "0..2**40"),
    "float dim": (_on("W1", shape=[784.0, 50]), "dim 784.0"),
    "bool dim": (_on("W1", shape=[True, 50]), "dim True"),
    "empty dim name": (_on("x", shape=["", 784]), "dim ''"),
    "too many axes": (_on("b1", shape=[1] * 33), "33 axes"),
    "shape not a list": (_on("b1", shape="50"), "shape must be a JSON list"),
    "leaf name number": (_on("W1", name=5), "name must be a non-empty string"),
    "node name null": (_first(name=None), "name must be a non-empty string"),
    "graph name number": (lambda d: d.update(graph=3), "graph name must be a non-empty string"),
    "duplicate leaf name": (_on("b1", name="W1"), "already taken"),
    "int param": (_on("W1", kind="int"), "float for a param"),
    "leaf op": (_on("W1", op="constant"), "op must be 'input' or 'param'"),
    "bad kind": (_first(kind="complex"), "kind must be one of"),
    "shapes disagree": (_on("W1", shape=[700, 50]), "ShapeError"),
    "stored shape wrong": (_on("softmax", shape=["n", 11]), "the file says shape"),
    "stored kind wrong": (_on("softmax", kind="int"), "kind 'int'"),
    "arity": (_on("softmax", inputs=[]), "softmax takes 1 input(s), got 0"),
    "spec letters": (_on("einsum", spec="n1,hc->nc"), "is not an explicit spec"),
    "spec operands": (_on("einsum", spec="nc->nc"), "is not an explicit spec"),
    "spec rank": (_on("einsum", spec="ncx,hc->nh"), "rank"),
    "einsum label": (_on("einsum", label="x; import os"), "label"),
    "in_indices": (_on("elementwise", in_indices=["nj", "q"]), "do not describe"),
    "out_indices": (_on("elementwise", out_indices="ncc"), "distinct index letters"),
    "symbols count": (lambda d: _node(d, "elementwise")["symbols"].pop(), "2 input(s) but 1 symbols"),
    "import in expr": (_on("elementwise", expr=["__import__", "os"]), "unsupported sympy class '__import__'"),
    "eval in expr": (_on("elementwise", expr=["eval", ["Symbol", "x0"]]), "unsupported sympy class 'eval'"),
    "string expr": (_on("elementwise", expr="x0 + 1"), "must be a list"),
    "undeclared symbol": (_on("elementwise", expr=["Symbol", "zz"]), "undeclared symbol 'zz'"),
    "foreign symbol": (_on("elementwise", expr=["Symbol", "zz", {"real": True}]), "unknown symbols"),
    "bad assumption": (_on("elementwise", symbols=[["Symbol", "x0", {"__class__": True}], ["Symbol", "x1", {}]]),
                       "bad symbol"),
    "deep expr": (_on("elementwise", expr=_chain(250)), "nested deeper than 200"),
    "bad arity expr": (_on("elementwise", expr=["exp", ["Symbol", "x0"], ["Integer", 1]]), "invalid expression"),
    "bad float": (_on("elementwise", expr=["Float", "nan", 53]), "bad Float"),
    "huge integer": (_on("elementwise", expr=["Integer", 10**30]), "at most 2**64"),
    "zero denominator": (_on("elementwise", expr=["Rational", 1, 0]), "denominator must be positive"),
    "bad piecewise": (_on("elementwise", expr=["Piecewise", [[["Integer", 1]]]]), "bad Piecewise"),
    "piecewise in condition": (_on("elementwise", expr=_nested_piecewise(12)), "may not contain a Piecewise"),
    "dim_size int": (_on("dim_size", dim=5), "dim_size takes a dim name"),
    "labels flag": (_labels_flag, "integer_labels is True"),
    "bad origin": (lambda d: next(e for e in d["nodes"] if "origin" in e).update(origin=[0, 99]), "out of range"),
    "no outputs": (lambda d: d.update(outputs=[]), "at least one output"),
    "unknown output": (lambda d: d.update(outputs=[12345]), "outputs: id 12345"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_raise_serialization_error_naming_the_problem(tmp_path, case):
    mutate, words = BAD[case]
    d = copy.deepcopy(_base())
    mutate(d)
    with pytest.raises(SerializationError) as info:
        graph_from_dict(d)
    assert words in str(info.value)
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(SerializationError) as info2:
        load_graph(tmp_path / "bad.json")
    assert str(info2.value) == str(info.value)


def test_node_errors_name_the_node_id():
    d = _base()
    _leaf_named("W2")(d).update(shape=[51, 10])
    first_user = next(e for e in d["nodes"] if _leaf_named("W2")(d)["id"] in e["inputs"])
    with pytest.raises(SerializationError, match=rf"^node {first_user['id']} \(einsum\): ShapeError"):
        graph_from_dict(d)


def test_extra_constant_cases():
    g = gc.Graph("c")
    d = graph_to_dict(g.constant(2.5))
    assert d["nodes"][0]["value"] == 2.5
    for bad in (float("inf"), "2.5", True, None):
        e = copy.deepcopy(d)
        e["nodes"][0]["value"] = bad
        with pytest.raises(SerializationError, match="finite number"):
            graph_from_dict(e)


@pytest.mark.parametrize("text, words", [
    (b"{oops", "not JSON"),
    (b"\xff\xfe garbage", "not UTF-8"),
    (b"[1, 2]", "not a graphc graph file"),
    (b'{"format": "graphc-graph", "format": "graphc-graph"}', "duplicate key"),
    (b'{"format": "graphc-graph", "version": NaN}', "NaN is not a JSON number"),
    (b"[" * 200_000 + b"]" * 200_000, "JSON nested too deeply"),
])
def test_unparseable_files(tmp_path, text, words):
    (tmp_path / "g.json").write_bytes(text)
    with pytest.raises(SerializationError, match=words):
        load_graph(tmp_path / "g.json")


def test_huge_files_are_refused_unread(tmp_path, monkeypatch):
    path = tmp_path / "huge.json"
    with open(path, "wb") as f:
        f.truncate(serialize.MAX_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(SerializationError, match="larger than 67108864 bytes"):
        load_graph(path)
    monkeypatch.setattr(serialize.graph_format, "MAX_BYTES", 100)
    with pytest.raises(SerializationError, match="larger than 100 bytes"):
        load_graph(io.StringIO(" " * 101))


def test_loading_never_evaluates_text(tmp_path, monkeypatch):
    save_graph(zoo(), tmp_path / "zoo.json")

    def forbidden(*args, **kwargs):
        raise AssertionError("loading must not eval or exec")

    real_sympify = sympy.sympify

    def sympify_objects_only(a, *args, **kwargs):
        return forbidden() if isinstance(a, str) else real_sympify(a, *args, **kwargs)

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    monkeypatch.setattr(sympy, "sympify", sympify_objects_only)
    _, loaded = load_graph(tmp_path / "zoo.json")
    monkeypatch.undo()
    assert graph_difference(zoo(), loaded) is None


def test_saving_refuses_foreign_ops_and_mixed_graphs():
    class Custom(gc.ops.Op):
        kind_name = "custom"

    g = gc.Graph("g")
    x = g.input("x", (2,))
    node = gc.Node(g, Custom(), [x], (2,), "float", None)
    with pytest.raises(SerializationError, match="op Custom has no file format"):
        graph_to_dict(node)
    with pytest.raises(SerializationError, match="different graphs"):
        graph_to_dict([x, gc.Graph("h").input("y", (1,))])
    with pytest.raises(SerializationError, match="non-empty list of nodes"):
        graph_to_dict([])


# -- atomic writes --------------------------------------------------------------------------------------
def test_atomic_write_leaves_only_the_target(tmp_path):
    loss, grads = mnist()
    save_graph([loss, *grads], tmp_path / "g.json")
    save_graph(loss, tmp_path / "g.json")  # replacing an existing file
    save_arrays(tmp_path / "s.npz", {"a": np.arange(3)})
    assert sorted(os.listdir(tmp_path)) == ["g.json", "s.npz"]
    assert len(load_graph(tmp_path / "g.json")[1]) == 1


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "state.bin"
    path.write_bytes(b"old contents")

    def half(f):
        f.write(b"new, half-writ")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(path, half)
    assert path.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["state.bin"]
    atomic_write(path, lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["state.bin"]


def test_failed_saves_do_not_touch_the_target(tmp_path):
    path = tmp_path / "s.npz"
    save_arrays(path, {"a": np.ones(2)})
    before = path.read_bytes()
    with pytest.raises(SerializationError):
        save_arrays(path, {"a": np.ones(2), "b": np.array([object()], dtype=object)})
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["s.npz"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_atomic_write_keeps_permissions(tmp_path):
    path = tmp_path / "g.json"
    path.write_text("{}")
    os.chmod(path, 0o640)
    save_graph(mnist()[0], path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


# -- arrays ----------------------------------------------------------------------------------------------
def test_arrays_roundtrip_with_meta(tmp_path):
    arrays = {"W1": np.arange(12, dtype=np.float32).reshape(3, 4), "step": np.array(7), "mask": np.array([True, False]),
              "empty": np.zeros((0, 3)), "file": np.ones(1), "allow_pickle": np.ones(2), "opt/m/W1": np.full(2, 0.5)}
    meta = {"epoch": 3, "lr": 0.1, "names": ["W1"]}
    for compress in (False, True):
        save_arrays(tmp_path / "s.npz", arrays, meta=meta, compress=compress)
        got, got_meta = load_arrays(tmp_path / "s.npz")
        assert got_meta == meta and got.keys() == arrays.keys()
        for k in arrays:
            assert got[k].dtype == arrays[k].dtype and np.array_equal(got[k], arrays[k])
    save_arrays(tmp_path / "s.npz", {"a": np.ones(1)})
    assert load_arrays(tmp_path / "s.npz")[1] is None
    with open(tmp_path / "s.npz", "rb") as f:
        assert np.array_equal(load_arrays(f)[0]["a"], np.ones(1))


def test_plain_numpy_archives_load_without_meta(tmp_path):
    np.savez(tmp_path / "p.npz", a=np.arange(3))
    arrays, meta = load_arrays(tmp_path / "p.npz")
    assert meta is None and np.array_equal(arrays["a"], np.arange(3))


class _Payload:
    """Unpickling this makes a directory: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickled_object_arrays_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    np.savez(tmp_path / "evil.npz", W=np.ones(2), evil=np.array([_Payload(marker)], dtype=object))
    with pytest.raises(SerializationError, match="'evil' cannot be loaded safely"):
        load_arrays(tmp_path / "evil.npz")
    assert not marker.exists()
    # The payload is live: numpy with pickles allowed would have run it.
    np.load(tmp_path / "evil.npz", allow_pickle=True)["evil"]
    assert marker.exists()


def test_raw_pickles_and_other_files_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "p.npz").write_bytes(pickle.dumps(_Payload(marker)))
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.save(tmp_path / "one.npy", np.ones(3))
    np.savez(tmp_path / "meta.npz", __meta__=np.arange(3))
    with zipfile.ZipFile(tmp_path / "text.npz", "w") as z:
        z.writestr("notes.txt", "not an array")
    for name, words in [("p.npz", "not an .npz archive"), ("junk.npz", "not an .npz archive"),
                        ("one.npy", "single .npy array"), ("meta.npz", "not valid JSON meta"),
                        ("text.npz", "'notes.txt' is not an .npy array")]:
        with pytest.raises(SerializationError, match=words):
            load_arrays(tmp_path / name)
    assert not marker.exists()


@pytest.mark.parametrize("arrays, meta, words", [
    ({1: np.ones(1)}, None, "array names must be non-empty strings"),
    ({"__meta__": np.ones(1)}, None, "array names"),
    ({"o": np.array([{}], dtype=object)}, None, "dtype object"),
    ({"a": np.ones(1)}, {"f": object()}, "not JSON-serialisable"),
    ({"a": np.ones(1)}, [1, 2], "meta must be a dict"),
    ([np.ones(1)], None, "arrays must be a dict"),
])
def test_save_arrays_refuses_what_it_cannot_store_safely(tmp_path, arrays, meta, words):
    with pytest.raises(SerializationError, match=words):
        save_arrays(tmp_path / "s.npz", arrays, meta=meta)
    assert not (tmp_path / "s.npz").exists() and os.listdir(tmp_path) == []


def test_a_softmax_keeps_its_axis_and_a_file_without_one_means_the_last(tmp_path):
    g = gc.Graph("ax")
    a = g.input("a", (3, 4))
    out = [gc.softmax(a, axis=0), gc.log_softmax(a)]
    d = graph_to_dict(out)
    _, loaded = graph_from_dict(d)
    assert [n.op.axis for n in loaded] == [0, 1] and graphs_equal(out, loaded)
    for entry in d["nodes"]:  # as written before softmax had an axis
        entry.pop("axis", None)
    _, old = graph_from_dict(d)
    assert [n.op.axis for n in old] == [1, 1]
