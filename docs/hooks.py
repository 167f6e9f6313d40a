"""mkdocs hooks: graphc writes the derivations on these pages while the site is built.

Nothing on the derivation guide or the op reference is typed by hand: the text comes from
running graphc at build time, so the pages cannot drift from the code.

* A fenced block opened with ```` ```python exec ```` is run (one namespace per page, with
  ``gc`` = graphc and ``np`` = numpy already imported) and shown followed by what it printed.
  An exception stops the build.
* ``<!-- graphc:readme Section title -->`` inserts the body of that ``##`` section of README.md.
* ``<!-- graphc:include path/to/file.md -->`` inserts a Markdown file of the repository, its
  headings moved one level down.
* graphc's docstrings use reST roles (``:func:`graphc.explain```); on the API pages the role
  is dropped and the name shown as code.
* ``<!-- graphc:op-reference -->`` writes the op reference: every op class registered for graph
  files (``graphc.ops.registry.FILE_OPS``) and every built-in elementwise function, each with
  what graphc prints for a small graph using it.

An op registered without an example below is a warning, so ``mkdocs build --strict`` fails
until the reference covers it.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import re
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # build from a checkout without installing graphc
    sys.path.insert(0, str(ROOT))

log = logging.getLogger("mkdocs.plugins.graphc_docs")

_EXEC_BLOCK = re.compile(r"^```python exec\n(.*?)^```\n", re.S | re.M)
_MARKER = re.compile(r"^<!-- graphc:([a-z-]+)\s*(.*?)\s*-->\n", re.M)
_RST_ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|attr|data|exc|obj|const):(<code[^>]*>)~?")


# -- running code ------------------------------------------------------------------------------
def _namespace() -> dict:
    import numpy as np

    import graphc as gc

    return {"gc": gc, "np": np, "__name__": "__graphc_docs__"}


def run(code: str, namespace: dict) -> str:
    """Run ``code`` in ``namespace`` and return what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<docs>", "exec"), namespace)
    return out.getvalue().rstrip("\n")


def shown(code: str, output: str) -> str:
    """The code as a Python block and its output as a text block."""
    text = f"```python\n{code.rstrip()}\n```\n"
    if output:
        text += f"\n```text\n{output}\n```\n"
    return text


# -- README and other files --------------------------------------------------------------------
def _lines_outside_fences(text: str):
    """(line, inside_fence) for each line of Markdown ``text``."""
    fence = None
    for line in text.splitlines():
        stripped = line.lstrip()
        if fence is None and stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
            yield line, True
        elif fence is not None:
            if stripped.startswith(fence):
                fence = None
            yield line, True
        else:
            yield line, False


def readme_section(title: str) -> str:
    """The body of README.md's ``## title`` section, up to the next ``#``/``##`` heading."""
    body: list[str] | None = None
    for line, fenced in _lines_outside_fences((ROOT / "README.md").read_text(encoding="utf-8")):
        if not fenced and re.match(r"#{1,2} ", line):
            if body is not None:
                break
            if line[line.index(" ") + 1:].strip() == title:
                body = []
            continue
        if body is not None:
            body.append(line)
    if body is None:
        raise ValueError(f"README.md has no section '## {title}'")
    return "\n".join(body).strip() + "\n"


def include(path: str) -> str:
    """A Markdown file of the repository with its headings one level down."""
    lines = []
    for line, fenced in _lines_outside_fences((ROOT / path).read_text(encoding="utf-8")):
        lines.append("#" + line if not fenced and re.match(r"#{1,5} ", line) else line)
    return "\n".join(lines).strip() + "\n"


# -- the op reference --------------------------------------------------------------------------
# One small graph per op registered for graph files, in a fresh graph ``g``; each prints what
# graphc makes of it.  The code is shown on the page above its output.
OP_EXAMPLES = {
    "constant": """\
a = g.input("a", ("n",)); dy = g.input("dy", ("n",))
y = gc.mul(a, g.constant(2.0), name="y")     # also what 2 * a makes
print(gc.explain([y, *gc.grad(y, [a], seed=dy)], forward=True))
""",
    "zeros": """\
a = g.input("a", ("n",)); b = g.input("b", ("n",))
s = gc.sum(a, name="s")
print(gc.explain(gc.grad(s, [b])))            # s does not depend on b
""",
    "dim_size": """\
a = g.input("a", ("n",))
m = gc.mean(a, name="m")                      # the sum divided by |n|, bound at call time
print(gc.explain([m, *gc.grad(m, [a])], forward=True))
""",
    "delta": """\
A = g.input("A", ("n", "n"))
tr = gc.trace(A, name="tr")                   # the gradient of a trace is the identity δ
print(gc.explain([tr, *gc.grad(tr, [A])], forward=True, steps=True))
""",
    "einsum": """\
x = g.input("x", ("n", "k")); W = g.input("W", ("k", "h")); dy = g.input("dy", ("n", "h"))
y = gc.einsum("nk,kh->nh", x, W, name="y")
print(gc.explain([y, *gc.grad(y, [x, W], seed=dy)], forward=True, steps=True))
""",
    "elementwise": """\
A = g.input("A", ("n", "h")); b = g.input("b", ("h",)); dy = g.input("dy", ("n", "h"))
y = gc.tanh(A + b, name="y")                  # b is broadcast over n explicitly
print(gc.explain([y, *gc.grad(y, [A, b], seed=dy)], forward=True))
""",
    "index_sum": """\
x = g.input("x", ("n", 1, 6, 6)); W = g.input("W", (2, 1, 3, 3)); dy = g.input("dy", ("n", 2, 4, 4))
y = gc.index_sum("y[n,o,i,j] = x[n,c,i+p,j+q] * W[o,c,p,q]", x=x, W=W)   # what gc.conv2d makes
print(gc.explain([y, *gc.grad(y, [x, W], seed=dy)], forward=True, steps=True))
""",
    "window_max": """\
x = g.input("x", ("n", 3, 4, 4)); dy = g.input("dy", ("n", 3, 2, 2))
y = gc.max_pool2d(x, 2, name="y")             # the gradient goes to each window's first maximum
print(gc.explain([y, *gc.grad(y, [x], seed=dy)], forward=True))
""",
    "first_max_mask": """\
x = g.input("x", ("n", 3, 5, 5)); dy = g.input("dy", ("n", 3, 2, 2))
y = gc.max_pool2d(x, 3, stride=2, name="y")   # overlapping windows: the mask is a scatter's operand
print(gc.explain(gc.grad(y, [x], seed=dy)))
""",
    "pad": """\
x = g.input("x", ("n", 1, 4, 4)); dy = g.input("dy", ("n", 1, 6, 6))
y = gc.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1)], name="y")   # its adjoint is a shifted read
print(gc.explain([y, *gc.grad(y, [x], seed=dy)], forward=True))
""",
    "reshape": """\
x = g.input("x", ("n", 2, 3, 3)); dy = g.input("dy", ("n", 18))
y = gc.flatten(x, name="y")                   # reshape(x, ("n", -1))
print(gc.explain([y, *gc.grad(y, [x], seed=dy)], forward=True))
""",
    "softmax": """\
a = g.input("a", ("n", "c")); dy = g.input("dy", ("n", "c"))
y = gc.softmax(a, name="y")                   # over the last axis
print(gc.explain([y, *gc.grad(y, [a], seed=dy)], forward=True))
""",
    "log_softmax": """\
a = g.input("a", ("n", "c")); dy = g.input("dy", ("n", "c"))
y = gc.log_softmax(a, name="y")               # over the last axis
print(gc.explain([y, *gc.grad(y, [a], seed=dy)], forward=True))
""",
    "one_hot": """\
labels = g.input("labels", ("n",), kind="int")
t = gc.one_hot(labels, 10, name="t")
print(gc.explain(t))
try:
    gc.grad(gc.sum(t), [labels])
except gc.GradError as e:
    print("GradError:", e)
""",
    "argmax": """\
a = g.input("a", ("n", "c"))
k = gc.argmax(a, name="k")
print(gc.explain(k))
try:
    gc.grad(k, [a], seed=g.input("dk", ("n",)))
except gc.GradError as e:
    print("GradError:", e)
""",
    "softmax_cross_entropy": """\
a = g.input("a", ("n", "c")); t = g.input("t", ("n", "c"))
L = gc.softmax_cross_entropy(a, t, name="L")
print(gc.explain([L, *gc.grad(L, [a])], forward=True))
labels = g.input("labels", ("n",), kind="int")      # integer labels
L2 = gc.softmax_cross_entropy(a, labels, name="L2")
print(gc.explain(gc.grad(L2, [a])))
""",
}

# The small graph for each built-in elementwise function f: y = f(a[, b]) over one index n.
ELEMENTWISE_EXAMPLE = """\
a = g.input("a", ("n",)); b = g.input("b", ("n",)); dy = g.input("dy", ("n",))
operands = [a, b][:f.arity]
y = f(*operands, name="y")
grads = gc.grad(y, operands, seed=dy)
print(gc.explain([y, *grads], forward=True))
if y in operands:
    print(f"y is {y.name} itself: no node is made")
for x, dx in zip(operands, grads):
    if dx is dy:
        print(f"d{x.name} is dy itself: the gradient passes on unchanged")
"""


def _doc_summary(obj) -> str:
    """The first paragraph of ``obj``'s docstring, on one line."""
    doc = inspect.getdoc(obj) or ""
    return " ".join(doc.split("\n\n", 1)[0].split())


def _names_used(code) -> set:
    """The global names a function's code reads, nested code (a generator expression) included."""
    names = set(code.co_names)
    for const in code.co_consts:
        if inspect.iscode(const):
            names |= _names_used(const)
    return names


def _elementwise_functions():
    """(constant name, ElementwiseFn, public function or None) for each built-in function."""
    from graphc.ops import elementwise as ew

    found = []
    for name, value in vars(ew).items():
        if isinstance(value, ew.ElementwiseFn) and not name.startswith("_"):
            public = None
            for fname, fn in vars(ew).items():
                if (inspect.isfunction(fn) and not fname.startswith("_") and fn.__module__ == ew.__name__
                        and name in _names_used(fn.__code__)):
                    public = fn
                    break
            found.append((name, value, public))
    return found


def op_reference() -> str:
    import graphc as gc
    from graphc.compiler.explain.printing import index_text
    from graphc.ops.registry import FILE_OPS

    parts = [
        "## Ops in graph files\n",
        "Each op class registered for graph files (`graphc.ops.registry.FILE_OPS`, file name → class), "
        "with its description and what graphc prints for a small graph using it: the index expression "
        "(`forward:`) and the derivative rule as `gc.grad` derives it (`backward:`).\n",
    ]
    for file_name, cls in FILE_OPS.items():
        parts.append(f"### `{file_name}`\n")
        parts.append(f"`{cls.__module__}.{cls.__qualname__}`: {_doc_summary(cls)}\n")
        code = OP_EXAMPLES.get(file_name)
        if code is None:
            log.warning("op reference: FILE_OPS has %r (%s) but docs/hooks.py has no example graph for it; "
                        "add one to OP_EXAMPLES", file_name, cls.__qualname__)
            continue
        ns = _namespace()
        ns["g"] = gc.Graph(file_name)
        parts.append(shown(code, run(code, ns)))

    parts += [
        "## Elementwise functions\n",
        "The built-in scalar functions (`ElementwiseFn` objects in `graphc.ops.elementwise`): the sympy "
        "expression f over its argument symbols, each partial derivative as graphc uses it "
        "(`ElementwiseFn.partial(i)`; written in the output y = f(...) where that is cheaper), and what "
        "`gc.explain` prints for `y = f(a[, b])` with the incoming gradient `dy`, made by:\n",
        f"```python\n{ELEMENTWISE_EXAMPLE.rstrip()}\n```\n",
    ]
    for const_name, fn, public in _elementwise_functions():
        parts.append(f"### `{fn.name}`\n")
        if public is not None:
            where = f"gc.{public.__name__}" if getattr(gc, public.__name__, None) is public \
                else f"{public.__module__}.{public.__name__}"
            args = ", ".join(list(inspect.signature(public).parameters)[:fn.arity])
            summary = _doc_summary(public)
            parts.append(f"`{where}({args})`" + (f": {summary}" if summary else "") + "\n")
        names = ", ".join(map(str, fn.symbols))
        rows = [f"- f({names}) = `{index_text(fn.expr)}`"]
        for i, x in enumerate(fn.symbols):
            d, uses_output = fn.partial(i)
            rows.append(f"- ∂f/∂{x} = `{index_text(d)}`" + (" (y = f(...))" if uses_output else ""))
        parts.append("\n".join(rows) + "\n")
        ns = _namespace()
        ns.update(g=gc.Graph(fn.name), f=fn)
        parts.append(f"```text\n{run(ELEMENTWISE_EXAMPLE, ns)}\n```\n")
    return "\n".join(parts)


# -- the hook ----------------------------------------------------------------------------------
def on_page_markdown(markdown: str, page, config, files) -> str:
    namespace = _namespace()

    def execute(match: re.Match) -> str:
        code = textwrap.dedent(match.group(1))
        try:
            output = run(code, namespace)
        except Exception as e:
            raise RuntimeError(f"{page.file.src_path}: a `python exec` block failed:\n{code}") from e
        return shown(code, output)

    def marker(match: re.Match) -> str:
        kind, arg = match.group(1), match.group(2)
        if kind == "readme":
            return readme_section(arg)
        if kind == "include":
            return include(arg)
        if kind == "op-reference":
            return op_reference()
        log.warning("%s: unknown marker graphc:%s", page.file.src_path, kind)
        return match.group(0)

    markdown = _MARKER.sub(marker, markdown)
    return _EXEC_BLOCK.sub(execute, markdown)


def on_page_content(html: str, page, config, files) -> str:
    return _RST_ROLE.sub(r"\1", html)
