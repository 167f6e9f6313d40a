"""Graph pictures (``gc.draw``, ``graphc draw``): the DOT text says what is forward, derived,
fused and updated, hostile names stay inside escaped labels (``dot`` still parses the text),
``dot`` renders SVG and PNG, and without ``dot`` the error says how to get it while a
notebook still shows the DOT text.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import graphc as gc
from graphc.cli import main
from graphc.compiler.explain.draw import DotNotFound, DrawError, GraphPicture
from graphc.models import init_two_layer_params, two_layer_net
from graphc.optim import SGD, TrainStep

pytest.importorskip("graphviz")
needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="Graphviz's dot is not installed (bash .ci/install-system-deps)")
PNG = b"\x89PNG\r\n\x1a\n"
SVG_NS = "{http://www.w3.org/2000/svg}"


def nodes_of(source: str) -> dict:
    """``{name: (label, attrs)}`` for the DOT text's graph nodes (name: the bold first line)."""
    found = {}
    for m in re.finditer(r"^\s*n\d+ \[label=<(.*)> (.*)\]$", source, re.M):
        label, attrs = m.groups()
        name = re.match(r"<B>(.*?)</B>", label)
        if name:
            found[name.group(1)] = (label, attrs)
    return found


def svg_texts(svg: str) -> list[str]:
    return ["".join(t.itertext()) for t in ET.fromstring(svg.encode("utf-8")).iter(f"{SVG_NS}text")]


@pytest.fixture(scope="module")
def net_grads():
    net = two_layer_net()
    return net, gc.grad(net.loss, list(net.params.values()))


@pytest.fixture(scope="module")
def mnist_step():
    net = two_layer_net(input_divisor=255, integer_labels=True)
    params = init_two_layer_params(np.random.default_rng(0))
    return TrainStep(net.loss, params, SGD(lr=0.1))


def test_forward_and_derived_nodes_with_their_einstein_lines(net_grads):
    net, grads = net_grads
    pic = gc.draw(grads)
    assert "draw" in gc.__all__ and isinstance(pic, GraphPicture)
    nodes = nodes_of(pic.source)
    label, attrs = nodes["dW1"]
    assert "class=derived" in attrs and 'fillcolor="#fee2e2"' in attrs and "shape=box" in attrs
    assert "dW1[k,h] = Σ_n dA1[n,h]·x[n,k]" in label and "(784, 50)" in label
    label, attrs = nodes["XW1"]
    assert "class=forward" in attrs and 'fillcolor="#dbeafe"' in attrs
    assert "XW1[n,h] = Σ_k x[n,k]·W1[k,h]" in label and "einsum &#x27;nk,kh-&gt;nh&#x27;" in label
    assert "h[n,h] = A1[n,h]·[A1[n,h] &gt; 0]" in nodes["h"][0]  # markup escaped
    # leaves: inputs and params drawn as their own shapes; the requested outputs doubled
    assert "class=input" in nodes["x"][1] and "shape=ellipse" in nodes["x"][1]
    assert "class=param" in nodes["W1"][1] and "shape=cylinder" in nodes["W1"][1]
    assert all("peripheries=2" in nodes[name][1] for name in ("dW1", "db1", "dW2", "db2"))
    assert "derived (gradient)" in pic.source and "forward" in pic.source  # the legend

    forward = gc.draw(grads, backward=False)
    assert "class=derived" not in forward.source and "dW1" not in forward.source
    assert {"x", "W1", "XW1", "A1", "h", "hW2", "a"} <= set(nodes_of(forward.source))
    assert set(nodes_of(gc.draw(net.loss).source)) >= {"loss", "a", "t"}


def test_compiled_step_shows_fused_gemms_and_updates(mnist_step):
    pic = gc.draw(mnist_step)
    source = pic.source
    assert gc.draw(mnist_step.fn).source == source
    clusters = dict(re.findall(r"subgraph (cluster_\w+) \{\n\s*(.*)", source))
    fused = {name: attrs for name, attrs in clusters.items() if name.startswith("cluster_fused_")}
    notes = [re.search(r"COLOR=\"#4b5563\">(.*?)</FONT>", attrs).group(1) for attrs in fused.values()]
    for target in ("b1", "b2", "W1", "W2"):  # two gemm epilogues, two gemm updates
        assert f"one gemm adding the product into {target}&#x27;s values" in notes
    assert "kept from the pass computing loss" in notes  # the softmax kept with its loss
    assert len(fused) == 5

    # the update cluster holds the four updates, each written into its param with a dashed ←
    update = source[source.index("subgraph cluster_update"):]
    nodes = nodes_of(source)
    written = {}
    for name, (label, attrs) in nodes.items():
        m = re.search(r"(\w+)\[[\w,]+\] ← ", label)
        if m:
            node_id = re.search(r"id=(n\d+)", attrs).group(1)
            assert "class=update" in attrs and f"{node_id} [" in update
            written[m.group(1)] = node_id
    assert sorted(written) == ["W1", "W2", "b1", "b2"]
    assert "W1[k,h] ← -(Σ_n dA1[n,h]·x[n,k])/255 + W1[k,h]" in source
    for param, node_id in written.items():
        param_id = re.search(r"id=(n\d+)", nodes[param][1]).group(1)
        edge = re.search(rf"^\s*{node_id} -> {param_id} \[(.*)\]$", source, re.M)
        assert edge and 'label="←"' in edge.group(1) and "style=dashed" in edge.group(1)
    # the backward part is derived, the forward products forward
    assert "class=derived" in nodes["dA1"][1] and "class=forward" in nodes["A1"][1]

    forward = gc.draw(mnist_step, backward=False).source
    assert "cluster_update" not in forward and "class=derived" not in forward and "←" not in forward
    assert "cluster_fused_" in forward  # the forward gemms are still fused

    net = two_layer_net(input_divisor=255)
    grads = gc.grad(net.loss, list(net.params.values()))
    compiled = gc.draw([net.loss, *grads], compiled=True).source
    assert "one gemm adding the product into b1&#x27;s values" in compiled
    assert "one gemm" not in gc.draw([net.loss, *grads]).source


HOSTILE = ['"<b>', "}{", "a\\", "&amp;", "]]>", "x\ny\x00\x07", "graph", "-->", "<<B>x</B>>", "\ud800", "n0"]


def hostile_graph():
    g = gc.Graph('<g>"\\')
    x = g.input(HOSTILE[0], ("}{", 3))
    W = g.param(HOSTILE[1], (3, 2))
    z = (x @ W).rename(HOSTILE[2])
    for name in HOSTILE[3:]:
        z = gc.relu(z).rename(name) if name != "]]>" else (z * 2.0).rename(name)
    loss = z.sum().rename("}{ loss")
    (dW,) = gc.grad(loss, [W])
    dW.rename("d<W>&")
    return loss, dW


@needs_dot
def test_hostile_names_are_escaped_and_the_dot_text_parses():
    loss, dW = hostile_graph()
    pic = gc.draw([loss, dW])
    for text in ('"<b>', "<<B>x</B>>", "d<W>&"):
        assert text not in pic.source
    assert "&quot;&lt;b&gt;" in pic.source and "&lt;&lt;B&gt;x&lt;/B&gt;&gt;" in pic.source
    assert "\x00" not in pic.source and "x\\ny\\x00\\x07" in pic.source  # control characters as escapes
    texts = svg_texts(pic.svg())  # dot parsed the text, and the SVG is well-formed XML
    for name in ('"<b>', "}{", "a\\", "&amp;", "]]>", "-->", "<<B>x</B>>", "d<W>&", "\\ud800", '<g>"\\'):
        assert name in texts, name
    assert any(t.startswith("d<W>&[") and " = Σ_" in t for t in texts)
    gc.draw(gc.compile([loss, dW])).svg()


@needs_dot
def test_svg_png_and_dot_files(tmp_path, net_grads):
    pic = gc.draw(net_grads[1])
    svg = pic.svg()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    texts = svg_texts(svg)
    assert "dW1" in texts and "dW1[k,h] = Σ_n dA1[n,h]·x[n,k]" in texts
    root = ET.fromstring(svg.encode("utf-8"))
    classes = {g.get("class") for g in root.iter(f"{SVG_NS}g")}
    assert {"node forward", "node derived", "node param", "node input"} <= classes
    assert pic._repr_svg_() == svg and pic._repr_html_() is None and pic._repr_markdown_() is None

    assert pic.save(tmp_path / "g.svg") == str(tmp_path / "g.svg")
    assert (tmp_path / "g.svg").read_text(encoding="utf-8") == svg
    pic.save(tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes().startswith(PNG)
    pic.save(tmp_path / "g.PNG")
    assert (tmp_path / "g.PNG").read_bytes().startswith(PNG)
    for suffix in (".dot", ".gv"):
        pic.save(tmp_path / f"g{suffix}")
        assert (tmp_path / f"g{suffix}").read_text(encoding="utf-8") == pic.source
    with pytest.raises(DrawError, match=r"suffix '\.pdf'.*\.svg, \.png, \.dot, \.gv"):
        pic.save(tmp_path / "g.pdf")
    with pytest.raises(DrawError, match="suffix"):
        pic.save(tmp_path / "g")
    with pytest.raises(DrawError, match="cannot write"):
        pic.save(tmp_path / "missing" / "g.dot")


def test_without_dot_the_error_says_how_to_install_it_and_notebooks_show_the_dot_text(tmp_path, monkeypatch,
                                                                                      net_grads):
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot on PATH
    pic = gc.draw(net_grads[1])  # the DOT text needs no Graphviz
    for render in (pic.svg, lambda: pic.save(tmp_path / "g.svg"), lambda: pic.save(tmp_path / "g.png")):
        with pytest.raises(DotNotFound) as err:
            render()
        assert isinstance(err.value, gc.GraphcError)
        assert "apt-get install graphviz" in str(err.value) and ".source" in str(err.value)
    assert not (tmp_path / "g.svg").exists()
    pic.save(tmp_path / "g.dot")
    assert (tmp_path / "g.dot").read_text(encoding="utf-8") == pic.source

    assert pic._repr_svg_() is None
    page = pic._repr_html_()
    assert "apt-get install graphviz" in page and "<pre>" in page and "dW1[k,h] = Σ_n" in page
    assert "<B>dW1</B>" not in page and "&lt;B&gt;dW1&lt;/B&gt;" in page  # the DOT text, escaped
    markdown = pic._repr_markdown_()
    assert "apt-get install graphviz" in markdown and "```dot\n" in markdown and pic.source in markdown
    IPython = pytest.importorskip("IPython")
    shown, _ = IPython.core.formatters.DisplayFormatter().format(pic)  # what a notebook gets: no traceback
    assert "image/svg+xml" not in shown and "apt-get install graphviz" in shown["text/html"]


def test_markdown_fence_outlasts_backticks_in_names(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    g = gc.Graph("fences")
    x = g.input("````x", (2,))
    markdown = gc.draw((x * 2.0).rename("y"))._repr_markdown_()
    assert "`````dot\n" in markdown and markdown.rstrip().endswith("`````")


def test_missing_graphviz_package_names_the_extra(monkeypatch, net_grads):
    monkeypatch.setitem(sys.modules, "graphviz", None)
    with pytest.raises(DrawError, match=r'pip install "graphc\[draw\]"'):
        gc.draw(net_grads[1])


def test_import_graphc_does_not_import_graphviz():
    code = "import sys, graphc; graphc.draw; assert 'graphviz' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bad_arguments():
    with pytest.raises(gc.GraphError, match="draw"):
        gc.draw(3)
    with pytest.raises(gc.GraphError, match="no nodes"):
        gc.draw([])


@needs_dot
def test_cli_draws_a_saved_graph_with_its_gradients(tmp_path, capsys):
    net = two_layer_net()
    path = tmp_path / "net.json"
    gc.save_graph([net.loss], path)
    out = tmp_path / "net.svg"
    assert main(["draw", str(path), "-o", str(out)]) == 0
    texts = svg_texts(out.read_text(encoding="utf-8"))
    assert {"loss", "XW1", "dW1", "db2", "W1", "x"} <= set(texts)
    assert "graphc: wrote" in capsys.readouterr().err

    dot = tmp_path / "net.dot"
    assert main(["draw", str(path), "-o", str(dot), "--no-backward"]) == 0
    text = dot.read_text(encoding="utf-8")
    assert "class=derived" not in text and "<B>loss</B>" in text

    grads = gc.grad(net.loss, [net.params["W2"]])  # saved gradients are drawn as saved
    gc.save_graph([net.loss, *grads], path)
    assert main(["draw", str(path), "-o", str(dot)]) == 0
    names = set(nodes_of(dot.read_text(encoding="utf-8")))
    assert "dW2" in names and "dW1" not in names


@pytest.mark.parametrize("content", [b"{", b'{"format": "graphc-graph", "version": 99}', b"\xff\xfe"])
def test_cli_bad_file_exits_2_without_a_traceback(tmp_path, capsys, content):
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    assert main(["draw", str(bad), "-o", str(tmp_path / "x.svg")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("graphc: error: ") and "Traceback" not in err
    assert not (tmp_path / "x.svg").exists()


def test_cli_missing_file_unknown_suffix_and_no_dot(tmp_path, capsys, monkeypatch):
    assert main(["draw", str(tmp_path / "nope.json"), "-o", str(tmp_path / "x.svg")]) == 2
    assert "file not found" in capsys.readouterr().err
    net = two_layer_net()
    path = tmp_path / "net.json"
    gc.save_graph([net.loss], path)
    assert main(["draw", str(path), "-o", str(tmp_path / "x.pdf")]) == 2
    assert "suffix" in capsys.readouterr().err
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["draw", str(path), "-o", str(tmp_path / "x.svg")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("graphc: error: ") and "apt-get install graphviz" in err and "OUT.dot" in err
    assert "Traceback" not in err
