"""The derivation page (``explain(..., html=True)``): one self-contained HTML document, checked
as text (no URL, no script, escaped names, every section) and in a real browser: headless
Chromium lays out every ``<math>`` element natively with a non-zero size, none overlapping,
and a screenshot of the page is not blank.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import types

import pytest

import graphc as gc
from graphc.errors import GraphcError
from graphc.models import two_layer_net

#: Measures every <math> element after layout and writes the counts onto <body> (the test
#: adds it to its copy of the page; the page itself has no script).
MEASURE = """<script>
(function () {
  const maths = Array.from(document.querySelectorAll("math"));
  const rects = maths.map(m => m.getBoundingClientRect());
  let overlaps = 0;
  for (let i = 0; i < rects.length; i++)
    for (let j = i + 1; j < rects.length; j++) {
      const a = rects[i], b = rects[j];
      if (a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom) overlaps++;
    }
  const body = document.body;
  body.setAttribute("data-math-count", maths.length);
  body.setAttribute("data-laid-out", rects.filter(r => r.width > 0 && r.height > 0).length);
  body.setAttribute("data-overlaps", overlaps);
  body.setAttribute("data-math-display", maths.length ? getComputedStyle(maths[0]).display : "");
  body.setAttribute("data-overflow", document.documentElement.scrollWidth > window.innerWidth ? 1 : 0);
})();
</script>
"""
CHROMIUM_TIMEOUT = 60


def _two_layer_grads():
    net = two_layer_net()
    return net, gc.grad(net.loss, list(net.params.values()))


def _chromium():
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("the chromium program is not installed (bash .ci/install-system-deps installs it)")
    return exe


def _run_chromium(exe, tmp_path, *args):
    return subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600", *args],
        capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT, check=False)


def _listed(nodes) -> int:
    """How many lines the text derivation has for ``nodes`` with the forward section."""
    return sum(1 for line in gc.explain(nodes, forward=True).splitlines() if line.startswith("  "))


# -- the document ------------------------------------------------------------------------------
def test_page_is_one_self_contained_document():
    net, grads = _two_layer_grads()
    html = gc.explain(grads, forward=True, html=True)
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "http://" not in html and "https://" not in html  # no URL at all, not even namespaces
    assert "<script" not in html and "<link" not in html and "<img" not in html and "@import" not in html
    assert html.count('<math display="block">') == _listed(grads) == 13  # one per line of the text
    for section in ("forward", "backward", "graph", "source", "text"):
        assert f'<section id="{section}">' in html
    assert "<pre><code># graphc: two_layer_net" in html  # the compiled function's source
    # the MathML speaks graphc's notation: dW1_{k,h} = Σ_n dA1_{n,h}·x_{n,k}
    assert re.search(r'<msub><mi mathvariant="normal">dW1</mi><mrow><mi>k</mi><mo separator="true">,</mo>'
                     r'<mi>h</mi></mrow></msub><mo>=</mo><mrow><munder><mo [^>]*>∑</mo><mrow><mi>n</mi></mrow>'
                     r'</munder>', html)
    assert "idx" not in html and "piecewise" not in html  # sympy's defaults, replaced
    assert "δ" not in html  # steps only when asked
    assert gc.explain(grads, forward=False, html=True).count("<math") == _listed(grads) - 5
    assert '<section id="forward">' not in gc.explain(grads, html=True)


def test_steps_and_matrix_forms_on_the_page():
    _, grads = _two_layer_grads()
    html = gc.explain(grads, forward=True, steps=True, html=True)
    assert html.count('<div class="steps">') == 3  # dh, dW1, dW2: the contraction adjoints
    assert "δ[k,p]·δ[h,q]" in html
    assert '<span class="form">dW1 = xᵀ·dA1</span>' in html


def test_user_given_names_are_escaped():
    g = gc.Graph('</title><script>alert("g")</script>')
    x = g.input("x<b>", ("n", 3))
    W = g.param('W"&amp;', (3, 2))
    Y = (x @ W).rename("Y</math><script>")
    loss = (Y ** 2).sum().rename("L&<i>")
    html = gc.explain(gc.grad(loss, [W]), forward=True, steps=True, html=True)
    assert "<script" not in html and "</math><script>" not in html and "<b>" not in html and "<i>" not in html
    assert "&lt;/title&gt;&lt;script&gt;" in html  # the title and heading, escaped
    assert '<mi mathvariant="normal">x&lt;b&gt;</mi>' in html  # in the MathML
    assert '<mi mathvariant="normal">W"&amp;amp;</mi>' in html
    assert "W&quot;&amp;amp;" in html  # in attributes and the text
    assert html.count("<math") == html.count("</math>")


def test_a_compiled_step_with_its_updates():
    import numpy as np

    from graphc.models import init_two_layer_params
    from graphc.optim import SGD, TrainStep

    net = two_layer_net(input_divisor=255, integer_labels=True)
    step = TrainStep(net.loss, init_two_layer_params(np.random.default_rng(0)), SGD(lr=0.1))
    html = step.fn.explain(compiled=True, html=True)
    assert '<section id="update">' in html and html.count("<mo>←</mo>") == 4
    assert "one gemm adding the product into W1&#x27;s values" in html
    fn = gc.compile([net.loss])
    html = gc.explain(fn, html=True)  # a compiled function: its own source
    assert html.count("<pre><code>") == 1 and f"<pre><code>{fn.source.splitlines()[0]}" in html


def _fake_draw(monkeypatch, svg=None, error=None):
    module = types.ModuleType("graphc.compiler.explain.draw")

    class Picture:
        def svg(self):
            if error is not None:
                raise error
            return svg

    module.draw = lambda outputs, *, backward=True: Picture()
    monkeypatch.setitem(sys.modules, "graphc.compiler.explain.draw", module)


def test_dots_svg_is_inlined_without_prolog_comments_or_namespace_urls(monkeypatch):
    svg = ('<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n'
           '<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN"\n "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n'
           '<!-- Generated by graphviz version 2.43.0 (0)\n -->\n'
           '<svg width="62pt" height="44pt" viewBox="0.00 0.00 62.00 44.00" xmlns="http://www.w3.org/2000/svg" '
           'xmlns:xlink="http://www.w3.org/1999/xlink">\n<!-- W1 -->\n<g id="node1" class="node"><title>W1</title>'
           '<text x="27" y="-14.3">W1</text></g>\n</svg>\n')
    _fake_draw(monkeypatch, svg=svg)
    _, grads = _two_layer_grads()
    html = gc.explain(grads, html=True)
    assert '<figure><svg width="62pt" height="44pt" viewBox="0.00 0.00 62.00 44.00">' in html
    assert "http" not in html and "<?xml" not in html and "<!--" not in html and "DOCTYPE svg" not in html


def test_without_graphviz_the_page_says_so(monkeypatch):
    _fake_draw(monkeypatch, error=GraphcError("Graphviz's `dot` program is needed ... was not found on PATH"))
    _, grads = _two_layer_grads()
    html = gc.explain(grads, html=True)
    assert '<p class="missing">No graph picture: Graphviz&#x27;s `dot` program is needed' in html
    assert "<svg" not in html
    monkeypatch.setitem(sys.modules, "graphc.compiler.explain.draw", None)  # the module itself missing
    html = gc.explain(grads, html=True)
    assert "The graph picture needs graphc&#x27;s drawing module" in html and "<svg" not in html
    assert "<pre><code>" in html  # the rest of the page is there


def test_real_picture_when_dot_is_installed():
    pytest.importorskip("graphviz")
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed (bash .ci/install-system-deps installs it)")
    _, grads = _two_layer_grads()
    html = gc.explain(grads, forward=True, html=True)
    assert "<figure><svg " in html and "</svg></figure>" in html
    assert "http://" not in html and "https://" not in html


# -- in a real browser -------------------------------------------------------------------------
def test_page_in_headless_chromium(tmp_path):
    exe = _chromium()
    _, grads = _two_layer_grads()
    html = gc.explain(grads, forward=True, steps=True, html=True)
    path = tmp_path / "derivation.html"
    path.write_text(html.replace("</body>", MEASURE + "</body>"), encoding="utf-8")

    dom = _run_chromium(exe, tmp_path, "--dump-dom", path.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body, dom.stdout[:2000]
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))
    assert int(attrs["math-count"]) == _listed(grads) == 13
    assert int(attrs["laid-out"]) == 13, attrs  # every <math> has a non-zero width and height
    assert attrs["math-display"] == "block math", attrs  # laid out natively as MathML
    assert attrs["overlaps"] == "0", attrs
    assert attrs["overflow"] == "0", attrs  # nothing wider than the window

    shot = tmp_path / "derivation.png"
    run = _run_chromium(exe, tmp_path, f"--screenshot={shot}", path.as_uri())
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (1600, 1200)
    grey = pixels[..., :3].mean(axis=-1)
    assert grey.std() > 0.05  # not one colour
    assert (grey < 0.5).mean() > 0.005  # a fair amount of dark ink: text was drawn
