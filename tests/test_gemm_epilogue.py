"""``α·(A·B) + b`` lowered as ``copyto(result, b)`` and one gemm with β = 1 (the numpy lowering),
and ``f(α·(A·B) + b)`` as the same followed by f in place.

Every case compares the numpy lowering with the unfused graph in float64, and says whether
the fused form was emitted (a GemmAccumulate with β = 1 and no separate add).
"""

import re

import numpy as np
import pytest
import sympy

import graphc as gc

_SPECS = ["ik,kj->ij", "ki,kj->ij", "ik,jk->ij", "ki,jk->ij"]


def _shapes(spec, m=5, n=3, k=4):
    sizes = {"i": m, "j": n, "k": k}
    return [tuple(sizes[c] for c in term) for term in spec.split("->")[0].split(",")]


def _run(outputs, feed):
    fused = gc.compile(outputs)
    got = fused(feed)
    want = gc.compile(outputs, fuse=False)(feed)
    for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    return fused.source


def _epilogue(source) -> bool:
    return "xp.copyto(" in source and ", 1.0, (" in source


@pytest.mark.parametrize("spec", _SPECS)
@pytest.mark.parametrize("form", ["P + b", "b + P", "P/4 + b", "b - P", "-2*P + b"])
def test_a_product_plus_a_row_bias_is_one_gemm(spec, form):
    rng = np.random.default_rng(0)
    g = gc.Graph("epilogue")
    sa, sb = _shapes(spec)
    A, B, b = g.input("A", sa), g.param("B", sb), g.param("b", (3,))
    P = gc.einsum(spec, A, B)
    out = {"P + b": lambda: P + b, "b + P": lambda: b + P, "P/4 + b": lambda: P / 4 + b,
           "b - P": lambda: b - P, "-2*P + b": lambda: -2 * P + b}[form]()
    # read twice (as a layer's pre-activation is, by the ReLU and its mask), so it stays one node
    source = _run([gc.relu(out), gc.sum(out * out)], {"A": rng.standard_normal(sa), "B": rng.standard_normal(sb),
                                                      "b": rng.standard_normal(3)})
    assert _epilogue(source)


def test_a_full_matrix_addend_is_copied_in_too():
    rng = np.random.default_rng(1)
    g = gc.Graph("residual")
    x, W = g.input("x", (6, 6)), g.param("W", (6, 6))
    z = gc.matmul(x, W) + x
    source = _run([gc.relu(z), gc.sum(z * z)], {"x": rng.standard_normal((6, 6)), "W": rng.standard_normal((6, 6))})
    assert _epilogue(source)  # the addend x is also the product's operand: read, never written


@pytest.mark.parametrize("case", ["product read twice", "bias scaled", "product returned"])
def test_what_is_not_fused_stays_correct(case):
    rng = np.random.default_rng(2)
    g = gc.Graph("plain")
    x, W = g.input("x", (5, 4)), g.param("W", (4, 3))
    P = gc.matmul(x, W)
    if case == "product read twice":
        b = g.param("b", (3,))
        z = P + b
        outputs = [gc.relu(z), gc.sum(z * P)]
    elif case == "bias scaled":
        b = g.param("b", (3,))
        z = P + 2 * b
        outputs = [gc.relu(z), gc.sum(z * z)]
    else:
        b = g.param("b", (3,))
        z = P + b
        outputs = [P, gc.relu(z), gc.sum(z * z)]
    source = _run(outputs, {"x": rng.standard_normal((5, 4)), "W": rng.standard_normal((4, 3)),
                            "b": rng.standard_normal(3)})
    assert not _epilogue(source)


def test_without_blas_the_same_code_runs_on_numpy(monkeypatch):
    from graphc.backends.numpy import blas

    monkeypatch.setenv("GRAPHC_BLAS", "0")
    blas.gemm_function.cache_clear()
    try:
        test_a_product_plus_a_row_bias_is_one_gemm("ik,kj->ij", "P/4 + b")
    finally:
        monkeypatch.delenv("GRAPHC_BLAS")
        blas.gemm_function.cache_clear()


def test_the_step_is_right_when_each_call_brings_a_new_batch_array():
    """x·W1 + b1 caches x's layout; a new array every call must be read again."""
    from graphc.models import init_two_layer_params, two_layer_net
    from graphc.optim import SGD, TrainStep

    rng = np.random.default_rng(3)
    net = two_layer_net(20, 6, 4)
    params = init_two_layer_params(rng, 20, 6, 4, weight_init_std=0.5, dtype=np.float64)
    copies = {k: v.copy() for k, v in params.items()}
    fast = TrainStep(net.loss, params, SGD(lr=0.1))
    generic = TrainStep(net.loss, copies, SGD(lr=0.1), lowering="array_api")
    for _ in range(4):
        x, t = rng.standard_normal((8, 20)), np.eye(4)[rng.integers(0, 4, 8)]
        np.testing.assert_allclose(fast(x=x, t=t), generic(x=x.copy(), t=t.copy()), rtol=1e-12)
    for k in params:
        np.testing.assert_allclose(params[k], copies[k], rtol=1e-12, atol=1e-15)


_FUNCTIONS = {"relu": gc.relu, "tanh": gc.tanh, "sigmoid": gc.sigmoid, "exp": gc.exp,
              "square": lambda z: z * z,
              "exp(z) + z": lambda z: gc.exp(z) + z}  # reads z after writing: the gemm writes a scratch


@pytest.mark.parametrize("spec", _SPECS)
@pytest.mark.parametrize("f", list(_FUNCTIONS))
def test_a_function_of_a_product_plus_a_bias_runs_in_place_after_the_gemm(spec, f):
    """f(α·P + b) read once is one fused elementwise node: the gemm makes α·P + b, f follows."""
    rng = np.random.default_rng(4)
    g = gc.Graph("layer")
    sa, sb = _shapes(spec)
    A, B, b = g.input("A", sa), g.param("B", sb), g.param("b", (3,))
    out = _FUNCTIONS[f](gc.einsum(spec, A, B) / 4 + b)
    source = _run([gc.sum(out * out)], {"A": rng.standard_normal(sa), "B": rng.standard_normal(sb),
                                        "b": rng.standard_normal(3)})
    assert _epilogue(source)
    run = source.split("def run")[1]
    assert len(re.findall(r"\ba2\b", run)) == 2  # the bias (a2) is read once, by the copy into the gemm's result


@pytest.mark.parametrize("case", ["bias read again", "product read again"])
def test_a_function_that_reads_the_bias_or_product_again_is_not_an_epilogue(case):
    rng = np.random.default_rng(5)
    g = gc.Graph("layer")
    x, W, b = g.input("x", (5, 4)), g.param("W", (4, 3)), g.param("b", (3,))
    P = gc.matmul(x, W)
    out = gc.relu(P + b) * b if case == "bias read again" else gc.relu(P + b) * P
    source = _run([gc.sum(out * out)], {"x": rng.standard_normal((5, 4)), "W": rng.standard_normal((4, 3)),
                                        "b": rng.standard_normal(3)})
    assert not _epilogue(source)


def test_the_evaluation_graph_adds_the_first_bias_inside_its_gemm():
    """argmax(relu(x·W1/255 + b1)·W2 + b2): no divide or add pass over the hidden layer."""
    from graphc.evaluate import Evaluator
    from graphc.models import init_two_layer_params, two_layer_net

    rng = np.random.default_rng(6)
    params = init_two_layer_params(rng, 20, 6, 4, weight_init_std=0.5)
    evaluator = Evaluator(two_layer_net(20, 6, 4, input_divisor=255).logits, 16)
    x = rng.integers(0, 256, (16, 20)).astype(np.float32)
    pred = evaluator.fn(params, x=x)
    p = {k: v.astype(np.float64) for k, v in params.items()}
    want = (np.maximum(x / 255.0 @ p["W1"] + p["b1"], 0) @ p["W2"] + p["b2"]).argmax(axis=1)
    np.testing.assert_array_equal(pred, want)
    run = evaluator.fn.source.split("def run")[1]
    assert "xp.divide(" not in run and "xp.add(" not in run and run.count("xp.copyto(") == 2


@pytest.mark.parametrize("name, fn", [
    ("softsign", lambda x: x / (1 + sympy.Abs(x))),
    ("softplus", lambda x: sympy.log(1 + sympy.exp(x))),
    ("sin_plus_cos", lambda x: sympy.sin(x) + sympy.cos(x)),  # in place it would read x after writing:
    ("exp_plus_square", lambda x: sympy.exp(x) + x ** 2),  # the gemm then writes a scratch buffer
])
def test_a_user_function_of_a_product_plus_a_bias_gets_the_epilogue(name, fn):
    rng = np.random.default_rng(7)
    g = gc.Graph("layer")
    x, W, b = g.input("x", (5, 4)), g.param("W", (4, 3)), g.param("b", (3,))
    out = gc.elementwise(name, fn)(gc.matmul(x, W) / 4 + b)
    source = _run([gc.sum(out * out)], {"x": rng.standard_normal((5, 4)), "W": rng.standard_normal((4, 3)),
                                        "b": rng.standard_normal(3)})
    assert _epilogue(source)


def test_an_f_numpy_lacks_is_reported_with_the_users_terms():
    """The symbol standing for the sum is named after it, so the error shows the expression."""
    erf = gc.elementwise("erf", lambda z: sympy.erf(z))
    g = gc.Graph("erf")
    x, W, b = g.input("x", (5, 4)), g.param("W", (4, 3)), g.param("b", (3,))
    out = erf(gc.matmul(x, W) / 4 + b)
    with pytest.raises(gc.GraphError, match=r"no numpy function for 'erf' in the elementwise expression "
                                             r"erf\(\(\w+/4 \+ \w+\)\)"):
        gc.compile([out])(x=np.ones((5, 4)), W=np.ones((4, 3)), b=np.ones(3))
