"""Shared fixtures for the core test suite.

Every gradient test goes through one checker, ``graphc.check_grads`` (central
differences in float64, relative error ≤ 1e-6).  The fixtures here only build
graphs and draw values:

* ``rng``: a seeded ``numpy.random.Generator`` (deterministic per test).
* ``graph``: ``graph(*shapes)`` -> ``(g, [x0, x1, ...])``, one input per shape.
* ``values``: ``values(nodes, domain)`` -> ``{name: array}`` for those inputs.
* ``check``: ``check(build, *shapes, domain=..., ref=...)`` builds
  ``out = build(*inputs)``, compares the forward value with the numpy reference
  ``ref(*arrays)`` when given, runs ``check_grads`` on every input and returns
  ``(out, inputs, values, report)``.

Symbolic dims in shapes (``"n"``, ``"m"``, ``"b"``) are bound to the sizes in ``DIMS``.
The helpers are session-scoped (stateless functions), so hypothesis tests can use them.

Other fixtures:

* ``generated_only``: asserts that a compiled source is valid Python whose identifiers
  are all generated (no user name reaches code).
* ``affine``: ``Y = x·W + b`` with a squared loss and its gradients wrt x, W, b.
* ``no_blas``: ``GRAPHC_BLAS=0`` for one test, so every gemm takes numpy's path.
* ``x64``: JAX in its 64-bit mode for a test module (the backend tests compare in float64).

Plain helper functions shared by several test modules are in ``tests/helpers.py``.
"""

from __future__ import annotations

import ast
import os
import re

import numpy as np
import pytest
from hypothesis import settings

import graphc as gc

# Hypothesis profiles.  "ci" (the default) keeps the suite inside CI's time; "deep" runs every
# property at least 10,000 times: GRAPHC_HYPOTHESIS=deep python -m pytest tests/test_properties.py
# tests/test_fuzz_readers.py tests/test_serialize.py tests/test_fold_scalars.py -k "not slow" (see
# benchmarks/README.md for the last deep run).  A property's own ``max_examples`` is its CI size,
# through ``helpers.examples``.
settings.register_profile("ci", max_examples=150, deadline=None)
settings.register_profile("deep", max_examples=10_000, deadline=None)
settings.load_profile(os.environ.get("GRAPHC_HYPOTHESIS", "ci"))

DIMS = {"n": 5, "m": 3, "b": 2}

#: Value domains: "real" for smooth ops, "pos" for log/sqrt/div/pow, "away" keeps
#: clear of the kinks of relu/step/maximum at 0 (farther than the FD step).
DOMAINS = {
    "real": lambda rng, shape: rng.standard_normal(shape),
    "pos": lambda rng, shape: rng.uniform(0.5, 2.0, shape),
    "away": lambda rng, shape: rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 1.5, shape),
    "unit": lambda rng, shape: rng.uniform(0.1, 0.9, shape),
}

#: Identifiers the generated source may use (see graphc/compiler/emit.py).
GENERATED_NAME = re.compile(r"^[a-z]\d+$|^(xp|rt|kernels|dtype|dims|labels|device|run|build)$")


def concrete(shape) -> tuple:
    """The array shape for a declared shape: symbolic dims take their size from DIMS."""
    return tuple(DIMS[d] if isinstance(d, str) else d for d in shape)


def make_graph(*shapes, name: str = "t", prefix: str = "x"):
    g = gc.Graph(name)
    return g, [g.input(f"{prefix}{k}", shape) for k, shape in enumerate(shapes)]


def make_values(nodes, domain="real", seed: int = 0) -> dict:
    """One array per node; ``domain`` is a DOMAINS key or a tuple of keys, one per node."""
    rng = np.random.default_rng(seed)
    domains = (domain,) * len(nodes) if isinstance(domain, str) else tuple(domain)
    return {n.name: DOMAINS[d](rng, concrete(n.shape)) for n, d in zip(nodes, domains)}


def run_check(build, *shapes, domain="real", ref=None, wrt=None, seed: int = 0):
    g, nodes = make_graph(*shapes)
    vals = make_values(nodes, domain, seed)
    out = build(*nodes)
    if ref is not None:
        got = gc.compile([out, *nodes])(vals)[0]  # the inputs as outputs too: they bind every dim
        np.testing.assert_allclose(got, ref(*vals.values()), rtol=1e-12, atol=1e-12, strict=True)
    targets = nodes if wrt is None else [nodes[k] for k in wrt]
    report = gc.check_grads(out, targets, vals)
    return out, nodes, vals, report


def code_identifiers(source: str) -> tuple[set, list]:
    """(every identifier, every string literal) in ``source`` outside comments."""
    tree = ast.parse(source)
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}
    names |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    return names, strings


def assert_generated_only(source: str) -> None:
    """The compiled source is valid Python whose identifiers are all generated (no user names)."""
    names, strings = code_identifiers(source)
    foreign = sorted(n for n in names if not GENERATED_NAME.match(n))
    assert not foreign, f"user-controlled identifiers in generated code: {foreign}\n{source}"
    assert not strings, f"string literals in generated code: {strings}\n{source}"


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def graph():
    return make_graph


@pytest.fixture(scope="session")
def values():
    return make_values


@pytest.fixture(scope="session")
def check():
    return run_check


@pytest.fixture(scope="session")
def generated_only():
    return assert_generated_only


@pytest.fixture
def affine():
    """Y = x·W + b with a squared loss; gradients wrt x, W, b: ``(g, (x, W, b), loss, (dx, dW, db))``."""
    g = gc.Graph("affine")
    x, W, b = g.input("x", ("n", 3)), g.param("W", (3, 2)), g.param("b", (2,))
    Y = (x @ W + b).rename("Y")
    loss = (Y**2).sum().rename("L")
    dx, dW, db = gc.grad(loss, [x, W, b])
    return g, (x, W, b), loss, (dx, dW, db)


@pytest.fixture
def no_blas(monkeypatch):
    """``GRAPHC_BLAS=0`` for this test: no BLAS gemm is found, every gemm takes numpy's path."""
    from graphc.backends.numpy import blas

    monkeypatch.setenv("GRAPHC_BLAS", "0")
    blas.gemm_function.cache_clear()  # the lookup is cached: forget the one made with BLAS
    yield
    monkeypatch.delenv("GRAPHC_BLAS")
    blas.gemm_function.cache_clear()


@pytest.fixture(scope="module")
def x64():
    """JAX computes in float64 only in its 64-bit mode: on for this module, restored after."""
    try:
        import jax
    except ImportError:
        yield
        return
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)
