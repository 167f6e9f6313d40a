"""Every reader -- graph JSON, .npz arrays and checkpoints, IDX files -- refuses what is not a
regular file of the promised size with a graphc error, in bounded time and memory."""

from __future__ import annotations

import io
import os
import threading
import zipfile

import numpy as np
import pytest

import graphc as gc
from graphc.datasets import read_idx
from graphc.serialize import load_arrays, load_graph, save_arrays

READERS = {
    "graph file": (load_graph, gc.SerializationError),
    "npz archive": (load_arrays, gc.SerializationError),
    "IDX file": (read_idx, gc.DataError),
}


def _finishes(fn, seconds: float = 10.0):
    """Run ``fn`` in a daemon thread; its exception (or None), failing the test if it hangs."""
    outcome = []

    def run():
        try:
            fn()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"the reader still runs after {seconds} s"
    return outcome[0]


@pytest.mark.parametrize("reader", READERS, ids=list(READERS))
def test_a_directory_is_refused_by_name(reader, tmp_path):
    read, error = READERS[reader]
    with pytest.raises(error, match="is a directory"):
        read(tmp_path)


@pytest.mark.parametrize("reader", READERS, ids=list(READERS))
def test_a_fifo_is_refused_without_blocking(reader, tmp_path):
    read, error = READERS[reader]
    path = tmp_path / "pipe"
    os.mkfifo(path)  # opening it to read would wait for a writer forever
    exc = _finishes(lambda: read(path))
    assert isinstance(exc, error) and "not a regular file" in str(exc)


@pytest.mark.parametrize("reader", READERS, ids=list(READERS))
def test_a_symlink_loop_is_refused(reader, tmp_path):
    read, error = READERS[reader]
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    with pytest.raises(error, match="symbolic-link loop"):
        read(tmp_path / "a")


@pytest.mark.parametrize("reader", READERS, ids=list(READERS))
def test_a_missing_file_is_refused_by_name(reader, tmp_path):
    read, error = READERS[reader]
    with pytest.raises(error, match="nothere: file not found"):
        read(tmp_path / "nothere")


def _npz_with_member(header_shape, data: bytes, dtype="<f8") -> bytes:
    """An .npz whose member header says ``header_shape`` of ``dtype`` but holds ``data``."""
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"descr": dtype, "fortran_order": False, "shape": header_shape})
    member.write(data)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("W.npy", member.getvalue())
    return out.getvalue()


@pytest.mark.parametrize("shape, data", [
    ((1 << 40,), b"\0" * 8),  # a header promising 8 TiB: numpy would reserve it before reading
    ((4,), b"\0" * 8),  # fewer bytes than promised
    ((1,), b"\0" * 16),  # more bytes than promised
])
def test_an_npz_member_whose_header_lies_is_refused_before_allocating(shape, data, tmp_path):
    path = tmp_path / "lying.npz"
    path.write_bytes(_npz_with_member(shape, data))
    exc = _finishes(lambda: load_arrays(path))
    assert isinstance(exc, gc.SerializationError) and "header promises" in str(exc), exc


def test_an_npz_within_its_promises_still_loads(tmp_path):
    arrays = {"W": np.arange(6.0).reshape(2, 3), "F": np.asfortranarray(np.ones((3, 2), np.float32)),
              "empty": np.zeros((0, 4)), "scalar": np.float64(3.0), "labels": np.arange(5, dtype=np.uint8)}
    for compress in (False, True):
        save_arrays(tmp_path / "ok.npz", arrays, meta={"k": 1}, compress=compress)
        loaded, meta = load_arrays(tmp_path / "ok.npz")
        assert meta == {"k": 1} and loaded.keys() == arrays.keys()
        for k, v in arrays.items():
            np.testing.assert_array_equal(loaded[k], v)
            assert loaded[k].dtype == np.asarray(v).dtype and loaded[k].flags.writeable


def test_a_truncated_npz_member_is_refused(tmp_path):
    save_arrays(tmp_path / "good.npz", {"W": np.arange(1000.0)})
    raw = (tmp_path / "good.npz").read_bytes()
    path = tmp_path / "cut.npz"
    path.write_bytes(raw[: len(raw) // 2] + raw[-200:])
    with pytest.raises(gc.SerializationError):
        load_arrays(path)


def test_an_npz_needing_an_unknown_zip_version_is_refused(tmp_path):
    """Found by the reader fuzzing: zipfile raises NotImplementedError for such members."""
    save_arrays(tmp_path / "ok.npz", {"W": np.arange(3.0)})
    raw = bytearray((tmp_path / "ok.npz").read_bytes())
    central = raw.rindex(b"PK\x01\x02")
    raw[central + 6] = 109  # "version needed to extract": 10.9, which no zipfile reads
    (tmp_path / "future.npz").write_bytes(bytes(raw))
    with pytest.raises(gc.SerializationError, match="zip file version"):
        load_arrays(tmp_path / "future.npz")


def test_an_npz_member_with_a_boolean_shape_is_refused(tmp_path):
    """Found by review: numpy's header check takes (True,) as a shape (bool is an int)."""
    path = tmp_path / "bool.npz"
    path.write_bytes(_npz_with_member((True,), b"\0" * 8))
    with pytest.raises(gc.SerializationError, match="not a tuple of counts"):
        load_arrays(path)


@pytest.mark.parametrize("reader", READERS, ids=list(READERS))
def test_a_path_with_a_nul_byte_is_refused(reader):
    read, error = READERS[reader]
    with pytest.raises(error, match="NUL byte"):
        read("a\x00b")
