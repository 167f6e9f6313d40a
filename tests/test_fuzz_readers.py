"""Fuzzing every reader: random bytes and mutated valid files fed to the graph-file, .npz and
IDX readers give the reader's graphc error (or a successful load), never another exception,
in bounded time.  Run deep with ``GRAPHC_HYPOTHESIS=deep`` (see conftest.py)."""

from __future__ import annotations

import gzip
import io
import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphc as gc
from graphc.datasets import read_idx
from graphc.serialize import graph_to_dict, load_arrays, load_graph, save_arrays
from helpers import examples

SETTINGS = dict(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _valid_graph_bytes() -> bytes:
    g = gc.Graph("fuzz")
    x, W, b = g.input("x", ("n", 3)), g.param("W", (3, 2)), g.param("b", (2,))
    t = g.input("t", ("n",), kind="int")
    loss = gc.softmax_cross_entropy(gc.tanh(x @ W + b), t)
    grads = gc.grad(loss, [W, b])
    buf = io.StringIO()
    gc.save_graph([loss, *grads], buf)
    return buf.getvalue().encode("utf-8")


def _valid_npz_bytes() -> bytes:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        save_arrays(Path(d) / "a.npz", {"W": np.arange(12.0).reshape(3, 4), "n": np.arange(5, dtype=np.uint8)},
                    meta={"k": [1, 2]})
        return (Path(d) / "a.npz").read_bytes()


def _valid_idx_bytes() -> bytes:
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    return b"\0\0\x08\x03" + b"".join(int(n).to_bytes(4, "big") for n in data.shape) + data.tobytes()


VALID = {"graph": _valid_graph_bytes(), "npz": _valid_npz_bytes(), "idx": _valid_idx_bytes(),
         "idx.gz": gzip.compress(_valid_idx_bytes())}
READ = {"graph": (lambda p: load_graph(p), gc.SerializationError),
        "npz": (lambda p: load_arrays(p), gc.SerializationError),
        "idx": (lambda p: read_idx(p), gc.DataError),
        "idx.gz": (lambda p: read_idx(p), gc.DataError)}


def _read(kind: str, raw: bytes, tmp_path) -> None:
    read, error = READ[kind]
    path = tmp_path / f"case.{kind}"
    path.write_bytes(raw)
    try:
        read(path)
    except error:
        pass  # the reader's own error: what bad input must give


@st.composite
def mutations(draw, original: bytes):
    """``original`` with a few bytes flipped, cut, inserted or repeated."""
    raw = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "truncate", "repeat"]))
        at = draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == "flip" and raw:
            raw[at] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del raw[at:at + draw(st.integers(1, 16))]
        elif op == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "truncate":
            del raw[at:]
        elif op == "repeat":
            raw[at:at] = raw[at:at + draw(st.integers(1, 64))]
    return bytes(raw)


@settings(**SETTINGS)
@given(kind=st.sampled_from(sorted(VALID)), raw=st.binary(max_size=512))
def test_random_bytes_give_the_readers_error(kind, raw, tmp_path):
    _read(kind, raw, tmp_path)


@settings(**SETTINGS)
@given(data=st.data(), kind=st.sampled_from(sorted(VALID)))
def test_mutated_valid_files_give_the_readers_error_or_load(data, kind, tmp_path):
    _read(kind, data.draw(mutations(VALID[kind])), tmp_path)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                          max_size=4), max_leaves=12)


@settings(**SETTINGS)
@given(data=st.data())
def test_graph_files_with_a_field_replaced_give_a_serialization_error(data, tmp_path):
    """A valid graph dict with one field anywhere replaced by arbitrary JSON: loaded or refused by name."""
    d = json.loads(VALID["graph"])
    entry = data.draw(st.sampled_from([d] + d["leaves"] + d["nodes"]))
    key = data.draw(st.sampled_from(sorted(entry)))
    entry[key] = data.draw(JSON_VALUES)
    try:
        raw = json.dumps(d).encode()
    except ValueError:  # a NaN float: not JSON
        return
    _read("graph", raw, tmp_path)


def test_the_valid_files_themselves_load(tmp_path):
    for kind, raw in VALID.items():
        path = tmp_path / f"ok.{kind}"
        path.write_bytes(raw)
        READ[kind][0](path)
    assert graph_to_dict(load_graph(tmp_path / "ok.graph")[1])["format"] == "graphc-graph"
