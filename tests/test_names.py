"""Hostile names: user names reach comments and messages only, never code.

Each name is used for an input, a param, intermediate nodes, the graph and the
compiled function.  The graph must compile, run and agree with numpy; the
generated source must be valid Python whose identifiers are all generated; and
a name that would create a file if it were ever executed must not create it.
"""

from __future__ import annotations

import ast
import os
import tempfile

import numpy as np
import pytest

import graphc as gc

SENTINEL = os.path.join(tempfile.gettempdir(), "graphc_pwned_sentinel")

HOSTILE = [
    'quote"inside', "quote'inside", '"""', "'''", "back\\slash", "trailing\\",
    "new\nline", "carriage\rreturn", "\u2028line_separator", "tab\tname", "nul\x00byte",
    "# comment", "a#b", "x = 1", ") + (", "\n    import os\n",
    "class", "lambda", "def", "return", "None", "True", "import",
    "__import__", "__builtins__", "__class__", "__dict__",
    f'os.system("touch {SENTINEL}")',
    f'__import__("os").system("touch {SENTINEL}")',
    f"\nopen({SENTINEL!r}, 'w')\n",
    f"{{open({SENTINEL!r}, 'w')}}",
    "Δx", "日本", "ñ", "x\u0301", "emoji🙂",
    "a0", "a1", "v0", "v1", "d0", "k0", "xp", "rt", "kernels", "dtype", "run", "build", "np", "numpy", "self",
    " ", "x y", "{}", "%s", "{0}", "\\n", "-", "1abc",
]


def name_id(name: str) -> str:
    return ascii(name.replace(SENTINEL, "SENTINEL"))


@pytest.fixture(autouse=True)
def no_sentinel():
    if os.path.exists(SENTINEL):
        os.remove(SENTINEL)
    yield
    assert not os.path.exists(SENTINEL), "a name was executed as code"


def build_net(name: str):
    g = gc.Graph(name)
    x = g.input(name, ("n", 3))
    W = g.param(name + "W", (3, 2))
    b = g.param(name + "b", (2,))
    h = gc.tanh(x @ W + b).rename(name + "_h")
    loss = (h**2).sum().rename(name)
    dW, dx, db = gc.grad(loss, [W, x, b])
    dW.rename(name + "_dW")
    return g, (x, W, b), loss, (dW, dx, db)


def reference(X, W, b):
    h = np.tanh(X @ W + b)
    dz = 2 * h * (1 - h**2)
    return (h**2).sum(), X.T @ dz, dz @ W.T, dz.sum(0)


@pytest.mark.parametrize("name", HOSTILE, ids=name_id)
def test_hostile_name_compiles_runs_and_stays_out_of_code(name, rng, generated_only):
    g, (x, W, b), loss, grads = build_net(name)
    fn = gc.compile([loss, *grads], name=name if "\x00" not in name else "nul")
    generated_only(fn.source)
    X, Wv, bv = rng.standard_normal((4, 3)), rng.standard_normal((3, 2)), rng.standard_normal(2)
    got = fn({name: X, name + "W": Wv, name + "b": bv})
    for a, r in zip(got, reference(X, Wv, bv)):
        np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-14)
    assert fn.args == [name, name + "W", name + "b"]
    # explain prints the names (escaped where they would break a line) and runs nothing
    for kw in ({}, {"steps": True}, {"latex": True}, {"forward": True}):
        assert isinstance(gc.explain(grads, **kw), str)


@pytest.mark.parametrize("name", HOSTILE, ids=name_id)
def test_hostile_name_in_check_grads(name, rng):
    g, (x, W, b), loss, grads = build_net(name)
    gc.check_grads(loss, [W, b], {name: rng.standard_normal((2, 3)), name + "W": rng.standard_normal((3, 2)),
                                  name + "b": rng.standard_normal(2)})


@pytest.mark.parametrize("name", ["new\nline", "carriage\rreturn", "\u2028sep", "nul\x00byte", 'q"uote'])
def test_comments_cannot_be_broken_out_of(name):
    g = gc.Graph("g")
    x = g.input(name, (3,))
    fn = gc.compile(gc.exp(x).rename(name + "y"), name="f")
    for line in fn.source.splitlines():
        code, _, comment = line.partition("#")
        assert name not in code
    assert fn.source.splitlines() == fn.source.rstrip("\n").split("\n")  # no stray line breaks


@pytest.mark.parametrize("name", ['os.system("touch PWNED")', "__import__", "日本", "nul\x00byte"])
def test_hostile_names_appear_in_error_messages_safely(name):
    g = gc.Graph("g")
    x = g.input(name, ("n", 3))
    fn = gc.compile(gc.exp(x))
    with pytest.raises(gc.BindingError) as info:
        fn({name: np.ones((2, 4))})
    assert repr(name) in str(info.value)
    with pytest.raises(gc.BindingError, match="missing input"):
        fn({})


@pytest.mark.parametrize("name", ["n", "x0", "d0", "__check_grads_projection0__"])
def test_names_that_look_like_dims_or_internals(name, rng):
    g = gc.Graph("g")
    x = g.input(name, ("n", 3))
    y = g.input(name + "_", ("n", 3))
    out = gc.sigmoid(x) * y
    vals = {name: rng.standard_normal((4, 3)), name + "_": rng.standard_normal((4, 3))}
    gc.check_grads(out, [x, y], vals)


@pytest.mark.parametrize("dim", ["class", "xp", "a0", "Δ", "日本", 'os.system("x")', "n m", "d0"])
def test_hostile_symbolic_dim_names(dim, rng, generated_only):
    g = gc.Graph("g")
    x, W = g.input("x", (dim, 3)), g.param("W", (3, 2))
    loss = (x @ W).mean()
    fn = gc.compile([loss, gc.grad(loss, W)])
    generated_only(fn.source)
    X, Wv = rng.standard_normal((4, 3)), rng.standard_normal((3, 2))
    got = fn(x=X, W=Wv)
    np.testing.assert_allclose(got[0], (X @ Wv).mean(), rtol=1e-13)
    np.testing.assert_allclose(got[1], X.T @ np.full((4, 2), 1 / 8), rtol=1e-13)


def test_function_name_with_a_nul_byte():
    g = gc.Graph("nul\x00graph")
    x = g.input("x", (3,))
    fn = gc.compile(gc.exp(x))  # the graph's name is the default function name
    np.testing.assert_allclose(fn(x=np.zeros(3)), np.ones(3))


def test_user_defined_op_with_a_hostile_name(rng, generated_only):
    import sympy
    f = gc.elementwise('os.system("touch ' + SENTINEL + '")', lambda v: sympy.log(1 + sympy.exp(v)))
    g = gc.Graph("g")
    x = g.input("x", (3,))
    fn = gc.compile([f(x), gc.grad(f(x).sum(), x)])
    generated_only(fn.source)
    X = rng.standard_normal(3)
    y, dx = fn(x=X)
    np.testing.assert_allclose(y, np.log1p(np.exp(X)), rtol=1e-13)
    np.testing.assert_allclose(dx, 1 / (1 + np.exp(-X)), rtol=1e-13)
    assert isinstance(gc.explain(gc.grad(f(x).sum(), x), forward=True), str)


def test_the_payloads_would_create_the_sentinel_if_executed():
    # The sentinel check above has teeth: executing the payload names does create the file.
    for payload in HOSTILE:
        if SENTINEL in payload:
            exec(payload.strip(), {"os": os})  # noqa: S102 - our own payload, to prove the check works
            assert os.path.exists(SENTINEL), payload
            os.remove(SENTINEL)


@pytest.mark.parametrize("name", [n for n in HOSTILE if SENTINEL in n or n in ('"""', "new\nline", "nul\x00byte", "Δx")],
                         ids=name_id)
def test_hostile_names_with_check_numerics(name):
    g = gc.Graph("g")
    x = g.input(name, (3,))
    y = gc.log(x).rename(name + "_log")
    fn = gc.compile(y, check_numerics=True)
    np.testing.assert_allclose(fn({name: np.ones(3)}), np.zeros(3))
    with pytest.raises(gc.NumericsError) as info, np.errstate(invalid="ignore"):
        fn({name: -np.ones(3)})
    assert gc.compiler.explain.safe(name + "_log") in str(info.value) or name + "_log" in str(info.value)


def test_check_numerics_keeps_user_names_out_of_code(generated_only):
    g = gc.Graph("g")
    x = g.input("inputs_qq", (3,))
    fn = gc.compile(gc.exp(x).rename("hidden_qq"), check_numerics=True)
    generated_only(fn.source)


DISTINCT = ["inputs_qq", "weights_qq", "bias_qq", "loss_qq", "hidden_qq"]


def test_source_is_valid_python_without_user_names(generated_only):
    g = gc.Graph("graph_qq")
    x, W, b = g.input("inputs_qq", ("batch_qq", 3)), g.param("weights_qq", (3, 2)), g.param("bias_qq", (2,))
    h = gc.tanh(x @ W + b).rename("hidden_qq")
    loss = gc.softmax(h).sum().rename("loss_qq")
    fn = gc.compile([loss, *gc.grad(loss, [x, W, b])], name="fn_qq")
    ast.parse(fn.source)
    generated_only(fn.source)
    code = "\n".join(line.split("#", 1)[0] for line in fn.source.splitlines())  # no '#' in generated code
    for name in DISTINCT + ["graph_qq", "batch_qq", "fn_qq"]:
        assert name not in code
    assert "weights_qq" in fn.source  # ...but the comments name them, for the reader
