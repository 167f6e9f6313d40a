"""Derivations where people look: the rich displays Jupyter uses, and the example notebook.

``gc.explain`` returns a ``str`` that Jupyter typesets (``_repr_latex_``/``_repr_markdown_``);
a node renders as its Einstein expression; ``gc.grad(loss, [W, b])`` is a list rendering as
its derivation; a compiled function or ``TrainStep`` renders as its signature and highlighted
source.  User names are data: HTML is escaped, LaTeX gets them literally, markdown fences
them.  ``examples/derivations.ipynb`` is committed without outputs and executed here with
nbclient and ipykernel, and its rich outputs are checked.
"""

from __future__ import annotations

import ast
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc.compiler.explain import notation
from graphc.compiler.explain.display import Derivation, Gradients, latex_text
from graphc.models import init_two_layer_params, two_layer_net
from graphc.optim import SGD, Adam, TrainStep

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "derivations.ipynb"
HOSTILE = "</pre><script>alert(1)</script>"


def _seeded_affine():
    """The seed's affine layer: Y = X·W + b, differentiated with the upstream gradient dY as seed."""
    g = gc.Graph("affine")
    X, W, b = g.input("X", ("n", 3)), g.param("W", (3, 2)), g.param("b", (2,))
    XW = (X @ W).rename("XW")
    Y = (XW + b).rename("Y")
    dY = g.input("dY", ("n", 2))
    return Y, gc.grad(Y, [X, W, b], seed=dY)


def _mnist_step(optimizer=None):
    net = two_layer_net(input_divisor=255, integer_labels=True)
    return TrainStep(net.loss, init_two_layer_params(np.random.default_rng(0)), optimizer or SGD(lr=0.1))


# -- derivations ---------------------------------------------------------------------------------
def test_the_affine_derivation_typesets_with_its_matrix_forms():
    _, grads = _seeded_affine()
    text = gc.explain(grads, steps=True)
    assert isinstance(text, Derivation) and isinstance(text, str)
    latex = text._repr_latex_()
    assert latex.startswith("$$\\begin{aligned}\n") and latex.endswith("\n\\end{aligned}$$")
    assert r"&\textbf{backward:}" in latex
    # the seed's three results, each with its matrix form
    assert r"\Rightarrow\ {dX}_{n,i} &= \sum_{j} {W}_{i,j} {dY}_{n,j} \qquad \left(dX = dY\,W^{\top}\right)" in latex
    assert r"\Rightarrow\ {dW}_{i,j} &= \sum_{n} {X}_{n,i} {dY}_{n,j} \qquad \left(dW = X^{\top}\,dY\right)" in latex
    assert r"{db}_{j} &= \sum_{n} {dY}_{n,j} \qquad \left(db = \sum_{n} dY\right)" in latex
    # the δ steps: chain rule, then the δs, aligned on "="
    assert (r"\frac{\partial L}{\partial {W}_{p,q}} &= \sum_{n,j} \frac{\partial L}{\partial {XW}_{n,j}}\,"
            r"\frac{\partial {XW}_{n,j}}{\partial {W}_{p,q}}") in latex
    assert r"&= \sum_{n,j,i} {dY}_{n,j}\,{X}_{n,i}\,\delta_{i p}\,\delta_{j q}" in latex
    assert "Σ" not in latex and "·" not in latex and "ᵀ" not in latex
    assert text._repr_markdown_() == latex  # $$...$$: typeset by markdown renderers too


def test_a_derivation_is_the_same_text_as_before():
    _, grads = _seeded_affine()
    text = gc.explain(grads)
    assert str(text) == (
        "backward:\n"
        "  dX[n,i] = Σ_j dY[n,j]·W[i,j]    (dX = dY·Wᵀ)\n"
        "  dW[i,j] = Σ_n dY[n,j]·X[n,i]    (dW = Xᵀ·dY)\n"
        "  db[j] = Σ_n dY[n,j]    (db = Σ_n dY)"
    )
    assert text == str(text) and text.splitlines()[0] == "backward:" and type(text.upper()) is str
    assert pickle.loads(pickle.dumps(text)) == text  # pickles as its text, without the nodes
    assert gc.explain([]) == "" and gc.explain([])._repr_latex_() is None


def test_text_plain_in_ipython_is_the_derivation_not_a_quoted_string():
    pretty = pytest.importorskip("IPython.lib.pretty")
    _, grads = _seeded_affine()
    text = gc.explain(grads)
    assert pretty.pretty(text) == str(text)
    assert repr(text) == repr(str(text))  # repr() itself is str's


def test_compiled_training_step_derivation_typesets_updates_and_notes():
    step = _mnist_step()
    latex = step.fn.explain(compiled=True)._repr_latex_()
    for section in ("forward", "backward", "update"):
        assert rf"&\textbf{{{section}:}}" in latex
    assert r"{W_{1}}_{k,h} &\leftarrow" in latex
    assert r"\text{[one gemm adding the product into W1's values]}" in latex
    assert r"\gt{} 0" in latex  # relu's bracket, with no raw '>' left for an HTML parser
    assert "<" not in latex and ">" not in latex


def test_hostile_names_are_shown_literally_in_latex():
    g = gc.Graph("h")
    x, W = g.input(HOSTILE, ("n", 3)), g.param("W&$%#_^~{}\\", (3, 2))
    y = (x @ W).rename("y")
    grads = gc.grad((y * y).sum(), [x, W])
    latex = gc.explain(grads, steps=True, forward=True)._repr_latex_()
    assert "<" not in latex and ">" not in latex and "$" not in latex.strip("$").replace(r"\$", "")
    assert latex_text(HOSTILE) in latex
    assert r"{\text{W}\&\$\%\#\_\hat{}\sim{}\{\}\backslash{}}_{i,j}" in latex
    assert "<" not in x._repr_latex_() and "&" not in y._repr_latex_().replace(r"\&", "")


# -- nodes and gradient lists ---------------------------------------------------------------------
def test_a_node_renders_as_its_einstein_expression():
    Y, _ = _seeded_affine()
    assert Y._repr_latex_() == f"$${notation.latex(Y)}$$" == "$${Y}_{n,j} = {XW}_{n,j} + {b}_{j}$$"
    assert Y._repr_markdown_() == Y._repr_latex_()
    X = Y.graph.leaves["X"]
    assert X._repr_latex_() == r"$${X}_{n,i} \in \mathbb{R}^{n \times 3} \quad \text{(input)}$$"
    labels = gc.Graph("l").input("t", ("n",), kind="int")
    assert r"\in \mathbb{Z}^{n}" in labels._repr_latex_()


def test_the_ir_never_imports_the_compiler():
    """Node's display is installed from graphc.compiler.explain.display, not imported by graphc.ops."""
    for path in (ROOT / "graphc" / "ops").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):  # module level or inside a function
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.startswith("graphc.compiler") for n in names), path


def test_grad_of_a_list_is_a_list_that_renders_as_its_derivation():
    Y, grads = _seeded_affine()
    assert isinstance(grads, Gradients) and isinstance(grads, list) and len(grads) == 3
    dX, dW, db = grads
    assert [n.name for n in grads] == ["dX", "dW", "db"]
    assert grads._repr_latex_() == gc.explain([dX, dW, db])._repr_latex_()
    assert r"{dW}_{i,j} &= \sum_{n}" in grads._repr_markdown_()
    assert grads.explain(steps=True) == gc.explain(grads, steps=True)
    single = gc.grad((Y * Y).sum(), Y.graph.leaves["W"])
    assert isinstance(single, gc.Node)  # a single variable still gets a node
    fn = gc.compile([*grads])  # still usable everywhere a list is
    assert len(fn.outputs) == 3


# -- compiled functions and training steps -----------------------------------------------------
def test_a_compiled_function_shows_its_signature_and_highlighted_source():
    pytest.importorskip("pygments")
    _, grads = _seeded_affine()
    fn = gc.compile(list(grads))
    page = fn._repr_html_()
    assert "affine(X: (n, 3), W: (3, 2), dY: (n, 2)) -&gt; (dX: (n, 3), dW: (3, 2), db: (2,))" in page
    assert "<details><summary>generated source" in page and "<span style=" in page  # pygments, inline styles
    md = fn._repr_markdown_()
    assert "```text\naffine(X: (n, 3), W: (3, 2), dY: (n, 2)) -> (dX: (n, 3), dW: (3, 2), db: (2,))\n```" in md
    assert "```python\n" + fn.source.rstrip("\n") + "\n```" in md


def test_a_train_step_shows_its_inputs_params_and_optimizer():
    step = _mnist_step(Adam())
    page = step._repr_html_()
    assert "two_layer_net_train_step(x: (n, 784), t: (n,) int) -&gt; loss: ()" in page
    assert "updates in place: W1 (784, 50) float32, b1 (50,) float32" in page
    assert "optimizer: Adam(lr=0.001" in page and "optimizer state: W1.m, W1.v" in page
    assert "__lr_t__" not in page.split("<details>")[0]  # private inputs are the step's, not the caller's
    md = step._repr_markdown_()
    assert md.startswith("**TrainStep**") and "two_layer_net_train_step(x: (n, 784), t: (n,) int) -> loss: ()" in md


def test_html_escapes_hostile_names_with_and_without_pygments(monkeypatch):
    g = gc.Graph(HOSTILE)
    x = g.input(HOSTILE, ("n", 3))
    w = g.param("w", (3,))
    fn = gc.compile(((x @ w) ** 2).sum().rename("``` <b>"))
    for blocked in (False, True):
        if blocked:  # no pygments: an escaped <pre>
            monkeypatch.setitem(sys.modules, "pygments", None)
        page = fn._repr_html_()
        assert "<script>" not in page and "</pre><script>" not in page and "<b>``` " not in page
        assert "&lt;/pre&gt;&lt;script&gt;" in page
        assert page.count("<pre") == page.count("</pre>") == 1
        if blocked:
            assert "<pre>" in page and "<span" not in page
    md = fn._repr_markdown_()  # names stay inside fences longer than any backtick run in them
    assert "\n````text\n" in md and "\n````python\n" in md


def test_import_graphc_stays_light():
    code = "import sys, graphc; print(sorted(m for m in ('IPython', 'pygments', 'nbformat', 'nbclient') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


# -- the example notebook --------------------------------------------------------------------------
def test_the_notebook_is_committed_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


def _kernel(tmp_path, monkeypatch) -> str:
    """The ``python3`` kernel (ipykernel's own spec); installed into a temp prefix when no spec is found."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        from ipykernel.kernelspec import install

        install(prefix=str(tmp_path / "kernel"), kernel_name="python3")
        monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "kernel" / "share" / "jupyter"))
    return "python3"


def test_the_notebook_executes_and_shows_typeset_derivations(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    # the kernel imports this checkout's graphc
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, kernel_name=_kernel(tmp_path, monkeypatch), timeout=60,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    latex = [o.data["text/latex"] for o in outputs if "text/latex" in o.get("data", {})]
    html = [o.data["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    printed = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")

    assert "$${Y}_{n,j} = {XW}_{n,j} + {b}_{j}$$" in latex  # a node
    steps = next(t for t in latex if r"\delta_{" in t)  # gc.explain(grads, steps=True)
    for line in (r"\left(dX = dY\,W^{\top}\right)", r"\left(dW = X^{\top}\,dY\right)",
                 r"{db}_{j} &= \sum_{n} {dY}_{n,j} \qquad \left(db = \sum_{n} dY\right)",
                 r"\frac{\partial L}{\partial {W}_{p,q}} &= \sum_{n,j}"):
        assert line in steps
    assert "(dX = dY·Wᵀ)" in printed and "⇒ dW[i,j] = Σ_n dY[n,j]·X[n,i]    (dW = Xᵀ·dY)" in printed
    assert any(r"{dW_{1}}_{k,h} &= \sum_{n}" in t and r"&\textbf{forward:}" in t for t in latex)  # the MNIST net
    compiled = next(t for t in latex if r"&\textbf{update:}" in t)  # step.fn.explain(compiled=True)
    assert r"{W_{1}}_{k,h} &\leftarrow" in compiled and "one gemm adding the product into W1's values" in compiled
    assert any("<b>TrainStep</b>" in h and "two_layer_net_train_step(x: (n, 784), t: (n,) int) -&gt; loss: ()" in h
               for h in html)
    loss = float(outputs[-1].data["text/plain"])
    assert abs(loss - np.log(10)) < 0.2
