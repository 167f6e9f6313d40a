"""The documentation: the site builds warning-free and shows what graphc derives today, and every
public function and class has a docstring with an example that passes as a doctest.

The site (``mkdocs.yml``, ``docs/``) is built once per session with ``mkdocs build --strict``
into a temporary folder; ``docs/hooks.py`` prints the derivation guide and the op reference by
running graphc during that build, so the checks below compare the pages with graphc itself.
"""

from __future__ import annotations

import doctest
import html
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import graphc
import graphc.backends
import graphc.datasets
import graphc.evaluate
import graphc.optim
import graphc.serialize

ROOT = Path(__file__).resolve().parent.parent


# -- the site ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        pytest.importorskip(module, reason="the docs extra is not installed (pip install -e '.[docs]')")
    site_dir = tmp_path_factory.mktemp("docs") / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(site_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    assert "WARNING" not in proc.stderr, proc.stderr
    return site_dir


def page_text(site: Path, page: str) -> str:
    """A page's text as a reader sees it: tags dropped, entities decoded."""
    path = site / page / "index.html" if page else site / "index.html"
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8")))


def page_ids(site: Path, page: str) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', (site / page / "index.html").read_text(encoding="utf-8")))


def test_derivation_guide_shows_what_graphc_derives(site):
    text = page_text(site, "derivations")
    # The affine layer, as graphc prints it in this process.
    g = graphc.Graph("affine")
    X, W, b = g.input("X", ("n", "d")), g.param("W", ("d", "p")), g.param("b", ("p",))
    Y = graphc.add(graphc.matmul(X, W, name="XW"), b, name="Y")
    grads = graphc.grad(Y, [X, W, b], seed=g.input("dY", ("n", "p")))
    derived = graphc.explain([Y, *grads], forward=True, steps=True)
    for line in derived.splitlines():
        assert line.strip() in text, f"the guide lacks {line.strip()!r}"
    for form in ("(dX = dY·Wᵀ)", "(dW = Xᵀ·dY)", "(db = Σ_n dY)", "True True True"):
        assert form in text
    # Softmax cross-entropy: (y - t)/N, step by step and fused; the two-layer net.
    assert re.search(r"da\[n,(\w)\] = \(-t\[n,\1\] \+ softmax_a\[n,\1\]\)/\|n\|", text)
    assert re.search(r"dy\[n,(\w)\] = dlogy\[n,\1\]/y\[n,\1\]", text)
    assert "dW1" in text and "(dW1 = xᵀ·dA1)" in text and "(dW2 = hᵀ·da)" in text
    # Layer norm: every adjoint named after a variable, with x's letters (n, D).
    assert "dxc[n,D] = dxc_1[n,D] + dxc_2[n,D] + dxc_3[n,D]" in text and "dx[n,D] = dx_1[n,D] + dx_2[n,D]" in text
    assert "[one gemm adding the product into W1's values]" in text
    assert "Traceback" not in text


def test_op_reference_covers_the_registry(site):
    from graphc.ops import elementwise as ew
    from graphc.ops.registry import FILE_OPS

    text, ids = page_text(site, "ops"), page_ids(site, "ops")
    own = {name: cls for name, cls in FILE_OPS.items() if cls.__module__.startswith("graphc.")}  # not tests' toys
    assert len(own) >= 11
    for name, cls in own.items():
        assert name in ids, f"no section for FILE_OPS[{name!r}]"
        assert f"{cls.__module__}.{cls.__qualname__}" in text
    builtins = [fn for key, fn in vars(ew).items() if isinstance(fn, ew.ElementwiseFn) and not key.startswith("_")]
    assert len(builtins) >= 15
    for fn in builtins:
        assert fn.name in ids, f"no section for the elementwise function {fn.name!r}"
    assert "dx[n,k] = Σ_h dy[n,h]·W[k,h]    (dx = dy·Wᵀ)" in text  # einsum's rule, derived
    assert "da[n] = dy[n]·[a[n] > 0]" in text  # relu's
    assert "GradError: grad: 'labels' holds int values" in text


def test_api_pages_document_every_public_name(site):
    ids = page_ids(site, "api/graphc")
    # A name is documented under graphc.NAME, or where it is defined when a module of the same
    # name shadows it for the renderer (graphc.compile is graphc.compiler.compile.compile).
    missing = [name for name in graphc.__all__ if f"graphc.{name}" not in ids
               and f"{getattr(graphc, name).__module__}.{name}" not in ids]
    assert not missing, f"not on the API page: {missing}"
    for page, module, names in [("api/optim", "graphc.optim", OPTIM), ("api/evaluate", "graphc.evaluate", ["Evaluator"]),
                                ("api/datasets", "graphc.datasets", ["load_mnist"]),
                                ("api/backends", "graphc.backends.libraries", BACKENDS)]:
        ids = page_ids(site, page)
        assert not [n for n in names if f"{module}.{n}" not in ids], page
    ids = page_ids(site, "api/serialize")
    assert not [n for n, _ in SERIALIZE if f"graphc.serialize.{n}" not in ids]
    text = page_text(site, "api/graphc")
    assert ":func:" not in text and ">>> g = gc.Graph" in text  # roles dropped, examples shown as code


def test_home_and_performance_include_the_readmes(site):
    home = page_text(site, "")
    assert "graphc train-mnist" in home and "The API in brief" in home
    assert "mkdocs build --strict" in home
    perf = page_text(site, "performance")
    assert "one training step, float32" in perf  # README's table
    assert "bench_step.py" in perf and "bench_compile.py" in perf  # benchmarks/README.md


# -- docstrings with examples ------------------------------------------------------------------
MNIST_PRESENT = bool(os.environ.get("GRAPHC_DATA")) and all(
    (Path(os.environ["GRAPHC_DATA"]) / f).exists() for f in graphc.datasets.MNIST_FILES)
OPTIM = ["SGD", "Momentum", "Adam", "TrainStep", "make_optimizer"]
BACKENDS = ["asarrays", "to_numpy"]
SERIALIZE = [(n, getattr(graphc.serialize, n)) for n in graphc.serialize.__all__
             if inspect.isfunction(getattr(graphc.serialize, n)) or inspect.isclass(getattr(graphc.serialize, n))]


def public_api() -> list[tuple[str, object]]:
    objs = [(f"graphc.{n}", getattr(graphc, n)) for n in graphc.__all__]
    objs = [(n, o) for n, o in objs if inspect.isfunction(o) or inspect.isclass(o) or callable(o)]
    objs += [(f"graphc.optim.{n}", getattr(graphc.optim, n)) for n in OPTIM]
    objs += [(f"graphc.serialize.{n}", o) for n, o in SERIALIZE]
    objs += [(f"graphc.backends.{n}", getattr(graphc.backends, n)) for n in BACKENDS]
    objs += [("graphc.datasets.load_mnist", graphc.datasets.load_mnist),
             ("graphc.evaluate.Evaluator", graphc.evaluate.Evaluator)]
    return objs


def test_public_api_is_listed():
    names = [n for n, _ in public_api()]
    assert len(names) >= 60 and len(set(names)) == len(names)


@pytest.mark.parametrize("name, obj", public_api(), ids=[n for n, _ in public_api()])
def test_docstring_has_an_example_that_runs(name, obj):
    doc = inspect.getdoc(obj) if (inspect.isfunction(obj) or inspect.isclass(obj)) else obj.__doc__
    assert doc and doc.strip(), f"{name} has no docstring"
    assert ">>>" in doc, f"{name}'s docstring has no example (>>>)"
    if name == "graphc.datasets.load_mnist" and not MNIST_PRESENT:
        pytest.skip("its example reads the real MNIST files: GRAPHC_DATA is not set to a folder holding them")
    module = inspect.getmodule(obj)
    tests = doctest.DocTestFinder(recurse=False).find(obj, name, module=module)
    examples = [ex for t in tests for ex in t.examples]
    assert examples, f"{name}: doctest found no example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    cwd = os.getcwd()
    try:
        for t in tests:
            runner.run(t, out=report.append)
    finally:
        os.chdir(cwd)
    assert runner.failures == 0, "".join(report)
