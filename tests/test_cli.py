"""``graphc explain FILE.json``: the derivation of any saved graph, from the command line.

Saved gradients are explained with their forward section; otherwise the first scalar float
output is the loss, differentiated with respect to ``--wrt`` or every param.  Bad files and
bad requests end with ``graphc: error: ...`` and exit status 2, never a traceback.
"""

from __future__ import annotations

import pytest

import graphc as gc
from graphc.cli import main
from graphc.models import two_layer_net


@pytest.fixture
def net():
    return two_layer_net()


@pytest.fixture
def loss_file(net, tmp_path):
    path = tmp_path / "loss.json"
    gc.save_graph([net.loss], path)
    return str(path)


def _explain(capsys, *args):
    status = main(["explain", *map(str, args)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return status, out, err


def test_explain_a_saved_loss_wrt_every_param(capsys, net, loss_file):
    status, out, err = _explain(capsys, loss_file)
    assert status == 0 and err == ""
    assert out == gc.explain(gc.grad(net.loss, list(net.params.values())), forward=True) + "\n"
    assert out.startswith("forward:\n  XW1[n,h] = Σ_k x[n,k]·W1[k,h]") and "\nbackward:\n" in out
    assert "  dW1[k,h] = Σ_n dA1[n,h]·x[n,k]    (dW1 = xᵀ·dA1)" in out


def test_explain_saved_gradients_as_saved(capsys, net, tmp_path):
    dW2, = gc.grad(net.loss, [net.params["W2"]])
    path = tmp_path / "grads.json"
    gc.save_graph([net.loss, dW2], path)
    status, out, _ = _explain(capsys, path)
    assert status == 0
    assert out == gc.explain([dW2], forward=True) + "\n"  # only what was saved, forward section first
    assert "dW2[h,c] = Σ_n da[n,c]·h[n,h]" in out and "dW1" not in out and "db1" not in out
    status, out, _ = _explain(capsys, path, "--wrt", "b1")  # --wrt differentiates the loss anew
    assert status == 0 and "db1[h] = Σ_n dA1[n,h]" in out and "dW2" not in out


def test_wrt_names_the_leaves(capsys, loss_file):
    status, out, _ = _explain(capsys, loss_file, "--wrt", " W2, b2 ")
    assert status == 0
    assert "dW2[h,c]" in out and "db2[c]" in out and "dW1" not in out and "db1" not in out
    status, out, _ = _explain(capsys, loss_file, "--wrt", "x")  # an input is a leaf too
    assert status == 0 and "dx[n,k] = Σ_h dA1[n,h]·W1[k,h]" in out


@pytest.mark.parametrize("wrt, unknown", [("W3", "'W3'"), ("W1,bias,h", "'bias', 'h'")])
def test_unknown_wrt_names_list_the_leaves(capsys, loss_file, wrt, unknown):
    status, out, err = _explain(capsys, loss_file, "--wrt", wrt)
    assert status == 2 and out == ""
    assert err == (f"graphc: error: --wrt: unknown leaf name(s) {unknown}; graph 'two_layer_net' has the leaves "
                   "x, t, W1, b1, W2, b2\n")


def test_wrt_with_no_names(capsys, loss_file):
    status, _, err = _explain(capsys, loss_file, "--wrt", ",")
    assert status == 2 and "--wrt: no leaf names given" in err


def test_steps(capsys, loss_file):
    status, out, _ = _explain(capsys, loss_file, "--steps")
    assert status == 0
    assert "∂L/∂W1[p,q] = Σ_{n,h} ∂L/∂XW1[n,h]·∂XW1[n,h]/∂W1[p,q]" in out
    assert "⇒ dW1[k,h] = Σ_n dA1[n,h]·x[n,k]" in out


def test_latex(capsys, loss_file):
    status, out, _ = _explain(capsys, loss_file, "--latex")
    assert status == 0 and r"\sum_{n}" in out and "Σ" not in out and "·" not in out


def test_html_writes_the_page(capsys, loss_file, tmp_path):
    target = tmp_path / "derivation.html"
    status, out, err = _explain(capsys, loss_file, "--steps", "--html", target)
    assert status == 0
    assert out.startswith("forward:") and "<math" not in out  # stdout keeps the text
    assert err == f"graphc: wrote {target}\n"
    html = target.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.count('<math display="block">') == 13
    assert '<div class="steps">' in html and "http://" not in html and "https://" not in html
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left
    status, _, err = _explain(capsys, loss_file, "--html", tmp_path / "missing" / "page.html")
    assert status == 2 and err.startswith("graphc: error: cannot write ") and "No such file or directory" in err


@pytest.mark.parametrize("content, message", [
    (None, "file not found"),
    ("{", "not a graph file: not JSON"),
    (b"\xff\xfe", "not UTF-8"),
    ('{"format": "something else"}', ""),
    ("[]", ""),
])
def test_bad_files_exit_2_without_traceback(capsys, tmp_path, content, message):
    path = tmp_path / "bad.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    status, out, err = _explain(capsys, path)
    assert status == 2 and out == ""
    assert err.startswith(f"graphc: error: {path}: ") and message in err and err.count("\n") == 1


def test_a_directory_is_not_a_graph_file(capsys, tmp_path):
    status, _, err = _explain(capsys, tmp_path)
    assert status == 2 and err == f"graphc: error: {tmp_path}: is a directory, not a graph file\n"


def test_nothing_to_differentiate(capsys, net, tmp_path):
    path = tmp_path / "logits.json"
    gc.save_graph([net.logits], path)
    status, out, err = _explain(capsys, path)
    assert status == 2 and out == ""
    assert err == (f"graphc: error: {path}: nothing to explain: no saved gradients and no scalar float output to "
                   "differentiate (outputs: a (n, 10) float)\n")


def test_a_graph_without_params_needs_wrt(capsys, tmp_path):
    g = gc.Graph("squares")
    x = g.input("x", ("n",))
    path = tmp_path / "squares.json"
    gc.save_graph([(x * x).sum().rename("L")], path)
    status, _, err = _explain(capsys, path)
    assert status == 2 and "has no params to differentiate 'L'" in err and "--wrt" in err and "(leaves: x)" in err
    status, out, _ = _explain(capsys, path, "--wrt", "x")
    assert status == 0 and "dx[" in out


def test_explain_mnist_is_still_there(capsys):
    assert main(["explain-mnist"]) == 0
    assert capsys.readouterr().out.startswith("forward:\n  XW1[n,h]")
