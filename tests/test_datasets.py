"""Tests of graphc.datasets: the IDX reader, the MNIST loader and its download path.

Everything runs offline: downloads are served by a local http.server on 127.0.0.1 or by a
replaced ``_retrieve``.  The real-data test reads $GRAPHC_DATA (CI: ../shared/mnist).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import shutil
import struct
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from graphc import datasets
from graphc.datasets import MNIST_FILES, load_mnist, read_idx, verify_mnist
from graphc.errors import DataError

CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C,
         np.float32: 0x0D, np.float64: 0x0E}
NAMES = list(MNIST_FILES)  # train images, train labels, test images, test labels


def idx_bytes(arr: np.ndarray | None = None, *, code: int | None = None,
              shape: tuple[int, ...] | None = None, payload: bytes | None = None,
              prefix: bytes = b"\0\0") -> bytes:
    """IDX bytes for ``arr``; the keyword overrides forge malformed headers or payloads."""
    if arr is not None:
        code = CODES[arr.dtype.type] if code is None else code
        shape = arr.shape if shape is None else shape
        payload = arr.astype(arr.dtype.newbyteorder(">")).tobytes() if payload is None else payload
    head = prefix + bytes([code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    return head + (payload or b"")


def write(path: Path, data: bytes) -> Path:
    """Write ``data``, gzip-compressed when the name ends with .gz."""
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def fake_mnist(directory: Path, n_train: int = 20, n_test: int = 10, raw: bool = False,
               seed: int = 0) -> dict[str, np.ndarray]:
    """Write a tiny valid MNIST set into ``directory`` and return its arrays by file name."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for (img, lbl), n in zip((NAMES[0:2], NAMES[2:4]), (n_train, n_test)):
        arrays[img] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[lbl] = rng.integers(0, 10, n, dtype=np.uint8)
    directory.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        write(directory / (name[:-3] if raw else name), idx_bytes(arr))
    return arrays


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- read_idx

@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("dtype", list(CODES))
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4), (2, 1, 3, 2), (0, 4)])
def test_read_idx_round_trip(tmp_path, suffix, dtype, shape):
    arr = (np.arange(int(np.prod(shape))) * 3 - 5).astype(dtype).reshape(shape)
    out = read_idx(write(tmp_path / f"a.idx{suffix}", idx_bytes(arr)))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert out.shape == shape
    np.testing.assert_array_equal(out, arr)


def test_read_idx_detects_gzip_by_magic(tmp_path):
    arr = np.arange(12, dtype=np.int32).reshape(3, 4)
    path = tmp_path / "no-suffix"
    path.write_bytes(gzip.compress(idx_bytes(arr)))
    np.testing.assert_array_equal(read_idx(path), arr)


def test_read_idx_accepts_str_path(tmp_path):
    arr = np.arange(5, dtype=np.uint8)
    assert read_idx(str(write(tmp_path / "a.gz", idx_bytes(arr)))).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("data, match", [
    (idx_bytes(np.zeros(3, np.uint8), prefix=b"\x01\x00"), r"start with bytes 00 00, found 01 00"),
    (idx_bytes(np.zeros(3, np.uint8), code=0x0A), r"unknown IDX dtype code 0x0A; expected one of 0x08"),
    (idx_bytes(code=0x08, shape=()), r"declares 0 dimensions; expected 1 to 4"),
    (idx_bytes(code=0x08, shape=(1,) * 5, payload=b"\0"), r"declares 5 dimensions; expected 1 to 4"),
    (b"", r"expected a 4-byte IDX magic number, found 0 bytes"),
    (b"\0\0\x08", r"expected a 4-byte IDX magic number, found 3 bytes"),
    (b"\0\0\x08\x02\0\0\0\x05", r"header truncated: expected 8 bytes of dimensions, found 4"),
    (idx_bytes(np.zeros((4, 5), np.uint8))[:-3],
     r"uint8 array of shape \(4, 5\) \(20 bytes\) but the payload holds 17 bytes \(truncated\)"),
    (idx_bytes(np.zeros(4, np.float32)) + b"xy",
     r"float32 array of shape \(4,\) \(16 bytes\) but the payload holds .*\(trailing bytes\)"),
])
def test_read_idx_malformed(tmp_path, suffix, data, match):
    path = write(tmp_path / f"bad.idx{suffix}", data)
    with pytest.raises(DataError, match=match) as info:
        read_idx(path)
    assert "bad.idx" in str(info.value)


def test_read_idx_raw_reports_exact_trailing_count(tmp_path):
    path = write(tmp_path / "pad.idx", idx_bytes(np.zeros(4, np.uint8)) + b"xyz")
    with pytest.raises(DataError, match=r"\(4 bytes\) but the payload holds 7 bytes"):
        read_idx(path)


def test_read_idx_refuses_header_over_cap(tmp_path):
    path = write(tmp_path / "huge.idx.gz",
                 idx_bytes(code=0x0E, shape=(60000, 2**20, 2**20), payload=b"\0" * 64))
    t0 = time.perf_counter()
    with pytest.raises(DataError, match=r"huge\.idx\.gz: header promises a float64 array of "
                                        r"shape \(60000, 1048576, 1048576\).*above the 2147483648"):
        read_idx(path)
    assert time.perf_counter() - t0 < 1.0
    with pytest.raises(DataError, match=r"above the 10-byte limit"):
        read_idx(write(tmp_path / "small.idx", idx_bytes(np.zeros(11, np.uint8))), max_bytes=10)


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_read_idx_lying_header_does_not_allocate(tmp_path, suffix):
    """A header promising a billion items over a 10-byte payload fails fast and small."""
    path = write(tmp_path / f"liar.idx{suffix}",
                 idx_bytes(code=0x08, shape=(1000, 1000, 1000), payload=b"\1" * 10))
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(DataError, match=r"\(1000000000 bytes\) but the payload holds 10 bytes "
                                            r"\(truncated\)"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 2.0
    assert peak < 4 * 2**20, f"peak traced allocation {peak} bytes"


def test_read_idx_gzip_bomb_is_bounded(tmp_path):
    """100 promised bytes followed by 64 MB of zeros: reads 101 bytes, never the bomb."""
    path = tmp_path / "bomb.idx.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(idx_bytes(np.zeros(100, np.uint8)))
        zeros = bytes(2**20)
        for _ in range(64):
            f.write(zeros)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"holds at least 101 bytes \(trailing bytes\)"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"peak traced allocation {peak} bytes"


def test_read_idx_corrupt_gzip(tmp_path):
    good = gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32)))
    garbled = tmp_path / "garbled.gz"
    garbled.write_bytes(good[:12] + bytes(b ^ 0x5A for b in good[12:-8]) + good[-8:])
    with pytest.raises(DataError, match=r"garbled\.gz: corrupt or unreadable gzip stream"):
        read_idx(garbled)
    cut = tmp_path / "cut.gz"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"cut\.gz: corrupt or unreadable gzip stream \(EOFError"):
        read_idx(cut)
    notgz = tmp_path / "notgz.gz"
    notgz.write_bytes(b"\0\0\x08\x01\0\0\0\x01x")
    with pytest.raises(DataError, match=r"notgz\.gz: corrupt or unreadable gzip stream"):
        read_idx(notgz)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nothere\.gz: file not found"):
        read_idx(tmp_path / "nothere.gz")


# --------------------------------------------------------------------------- load_mnist

@pytest.mark.parametrize("raw", [False, True])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("flatten", [True, False])
@pytest.mark.parametrize("one_hot", [True, False])
def test_load_mnist_options(tmp_path, raw, normalize, flatten, one_hot):
    arrays = fake_mnist(tmp_path, raw=raw)
    (x, t), (xt, tt) = load_mnist(tmp_path, normalize=normalize, flatten=flatten,
                                  one_hot_label=one_hot, download=False)
    for xs, ts, img, lbl, n in ((x, t, *NAMES[0:2], 20), (xt, tt, *NAMES[2:4], 10)):
        assert xs.shape == ((n, 784) if flatten else (n, 1, 28, 28))
        assert xs.dtype == (np.float32 if normalize else np.uint8)
        want = arrays[img].reshape(xs.shape)
        np.testing.assert_allclose(xs, want / 255 if normalize else want, rtol=1e-6)
        if one_hot:
            assert ts.shape == (n, 10) and ts.dtype == np.float32
            np.testing.assert_array_equal(ts.argmax(1), arrays[lbl])
            np.testing.assert_array_equal(ts.sum(1), 1)
        else:
            assert ts.shape == (n,) and ts.dtype == np.int64
            np.testing.assert_array_equal(ts, arrays[lbl])


def test_load_mnist_dtype_and_env(tmp_path, monkeypatch):
    fake_mnist(tmp_path)
    monkeypatch.setenv("GRAPHC_DATA", str(tmp_path))
    (x, t), _ = load_mnist(dtype=np.float64, one_hot_label=True, download=False)
    assert x.dtype == t.dtype == np.float64 and 0 <= x.min() and x.max() <= 1
    with pytest.raises(DataError, match=r"normalize=True needs a floating dtype, got int32"):
        load_mnist(dtype=np.int32)


@pytest.mark.parametrize("name, data, match", [
    (NAMES[0], idx_bytes(np.zeros((20, 28, 27), np.uint8)),
     r"train-images-idx3-ubyte\.gz: expected images of shape \(N, 28, 28\), found \(20, 28, 27\)"),
    (NAMES[2], idx_bytes(np.zeros((10, 14, 14), np.uint8)),
     r"t10k-images-idx3-ubyte\.gz: expected images of shape \(N, 28, 28\), found \(10, 14, 14\)"),
    (NAMES[0], idx_bytes(np.zeros(20, np.uint8)),
     r"train-images-idx3-ubyte\.gz: expected IDX magic 2051 \(0x00000803\), found 2049 \(0x00000801\)"),
    (NAMES[3], idx_bytes(np.zeros(10, np.int16)),
     r"t10k-labels-idx1-ubyte\.gz: expected IDX magic 2049 \(0x00000801\), found 2817"),
    (NAMES[1], idx_bytes(np.zeros(19, np.uint8)),
     r"train-images-idx3-ubyte\.gz holds 20 images but train-labels-idx1-ubyte\.gz holds "
     r"19 labels"),
    (NAMES[3], idx_bytes(np.array([0, 1, 2, 3, 4, 5, 6, 7, 12, 9], np.uint8)),
     r"t10k-labels-idx1-ubyte\.gz: labels must lie in 0\.\.9, found 12 at index 8"),
])
def test_load_mnist_rejects_bad_files(tmp_path, name, data, match):
    fake_mnist(tmp_path)
    write(tmp_path / name, data)
    with pytest.raises(DataError, match=match):
        load_mnist(tmp_path, download=False)


def test_load_mnist_verify(tmp_path):
    fake_mnist(tmp_path)
    load_mnist(tmp_path, download=False)  # verify defaults to False: fakes load
    with pytest.raises(DataError, match=rf"train-images-idx3-ubyte\.gz: expected sha256 "
                                        rf"{MNIST_FILES[NAMES[0]]}, got {sha256(tmp_path / NAMES[0])}"):
        load_mnist(tmp_path, download=False, verify=True)
    with pytest.raises(DataError) as info:
        verify_mnist(tmp_path)
    assert all(f"{n}: expected sha256 {MNIST_FILES[n]}" in str(info.value) for n in NAMES)
    (tmp_path / NAMES[3]).unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: missing"):
        verify_mnist(tmp_path)


def test_verify_passes_with_matching_hashes(tmp_path, monkeypatch):
    fake_mnist(tmp_path)
    for name in NAMES:
        monkeypatch.setitem(MNIST_FILES, name, sha256(tmp_path / name))
    assert verify_mnist(tmp_path) == tmp_path
    load_mnist(tmp_path, download=False, verify=True)


# --------------------------------------------------------------------------- offline errors

def no_retrieve(*args):
    pytest.fail(f"must not download: {args}")


def assert_missing_message(err: DataError, directory: Path, names=NAMES) -> None:
    msg = str(err)
    assert f"MNIST files missing from {directory}" in msg
    assert all(n in msg for n in names)
    assert f"put them in {directory}" in msg and "GRAPHC_DATA" in msg


def test_offline_download_false(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_retrieve", no_retrieve)
    with pytest.raises(DataError, match=r"download=False") as info:
        load_mnist(tmp_path, download=False)
    assert_missing_message(info.value, tmp_path)


def test_offline_no_network(tmp_path, monkeypatch):
    calls = []

    def no_network(url, known_hash, path, fname):
        calls.append(url)
        raise ConnectionError(f"cannot reach {url}")

    monkeypatch.setattr(datasets, "_retrieve", no_network)
    target = tmp_path / "cache"
    with pytest.raises(DataError, match=r"download failed: .*ConnectionError") as info:
        load_mnist(target)
    assert_missing_message(info.value, target)
    # each mirror tried once for the first file, then it stops instead of timing out 8 times
    assert calls == [m + NAMES[0] for m in datasets.MIRRORS]
    assert list(target.iterdir()) == []


def test_never_downloads_into_graphc_data(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_retrieve", no_retrieve)
    monkeypatch.setenv("GRAPHC_DATA", str(tmp_path))
    with pytest.raises(DataError, match=r"never downloads into GRAPHC_DATA") as info:
        load_mnist()
    assert_missing_message(info.value, tmp_path)


def test_default_cache_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("GRAPHC_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(DataError) as info:
        load_mnist(download=False)
    assert_missing_message(info.value, tmp_path / "graphc" / "mnist")


def test_download_fetches_only_missing_files(tmp_path, monkeypatch):
    source = tmp_path / "source"
    fake_mnist(source)
    for name in NAMES:
        monkeypatch.setitem(MNIST_FILES, name, sha256(source / name))
    target = tmp_path / "target"
    target.mkdir()
    for name in NAMES[:2] + NAMES[3:]:
        shutil.copy(source / name, target / name)
    calls = []

    def fake_retrieve(url, known_hash, path, fname):
        calls.append((url, known_hash, path, fname))
        return str(shutil.copy(source / fname, path / fname))

    monkeypatch.setattr(datasets, "_retrieve", fake_retrieve)
    (x, _), (xt, _) = load_mnist(target)
    assert calls == [(datasets.MIRRORS[0] + NAMES[2], "sha256:" + MNIST_FILES[NAMES[2]],
                      target, NAMES[2])]
    assert x.shape == (20, 784) and xt.shape == (10, 784)


def test_download_rechecks_hash_of_retrieved_file(tmp_path, monkeypatch):
    """Even a retriever that skips the check cannot leave a wrong file behind."""
    def sloppy(url, known_hash, path, fname):
        (path / fname).write_bytes(b"not mnist")

    monkeypatch.setattr(datasets, "_retrieve", sloppy)
    with pytest.raises(DataError, match=rf"{NAMES[0]} failed its checksum: expected sha256 "
                                        rf"{MNIST_FILES[NAMES[0]]}; .*got "
                                        rf"{hashlib.sha256(b'not mnist').hexdigest()}"):
        load_mnist(tmp_path)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- local HTTP mirror

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def http_mirror(tmp_path, monkeypatch):
    """Serve tmp_path/'served' at http://127.0.0.1:PORT/ from a thread; shut down afterwards."""
    root = tmp_path / "served"
    root.mkdir()
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_checksum_mismatch_leaves_nothing(tmp_path, monkeypatch, http_mirror):
    root, url = http_mirror
    for name in NAMES:
        (root / name).write_bytes(b"definitely not " + name.encode())
    monkeypatch.setattr(datasets, "MIRRORS", [url])
    cache = tmp_path / "cache"
    bad = hashlib.sha256(b"definitely not " + NAMES[0].encode()).hexdigest()
    with pytest.raises(DataError) as info:
        load_mnist(cache)
    msg = str(info.value)
    assert f"{NAMES[0]} failed its checksum" in msg
    assert f"expected sha256 {MNIST_FILES[NAMES[0]]}" in msg and f"got {bad}" in msg
    assert f"No file was kept in {cache}" in msg
    assert list(cache.iterdir()) == []  # neither the bad file nor a pooch temporary


def test_download_from_local_mirror_with_fallback(tmp_path, monkeypatch, http_mirror):
    root, url = http_mirror
    arrays = fake_mnist(root)
    for name in NAMES:
        monkeypatch.setitem(MNIST_FILES, name, sha256(root / name))
    monkeypatch.setattr(datasets, "MIRRORS", [url + "missing/", url])  # first one 404s
    cache = tmp_path / "cache"
    (x, t), _ = load_mnist(cache, normalize=False)
    np.testing.assert_array_equal(x.reshape(20, 28, 28), arrays[NAMES[0]])
    np.testing.assert_array_equal(t, arrays[NAMES[1]])
    assert sorted(p.name for p in cache.iterdir()) == sorted(NAMES)
    verify_mnist(cache)


# --------------------------------------------------------------------------- real MNIST

def test_real_mnist():
    directory = os.environ.get("GRAPHC_DATA")
    if not directory:
        pytest.skip("GRAPHC_DATA is not set (CI points it at ../shared/mnist with the real files)")
    assert verify_mnist() == Path(directory)
    (x, t), (xt, tt) = load_mnist(normalize=True, flatten=True, one_hot_label=True,
                                  download=False)
    assert x.shape == (60000, 784) and xt.shape == (10000, 784)
    assert t.shape == (60000, 10) and tt.shape == (10000, 10)
    assert x.dtype == t.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0 and 0.0 <= xt.min() and xt.max() <= 1.0
    np.testing.assert_array_equal(t.sum(1), 1)
    (_, labels), (_, test_labels) = load_mnist(download=False)
    assert set(np.unique(labels)) == set(range(10)) == set(np.unique(test_labels))
    assert labels[:5].tolist() == [5, 0, 4, 1, 9] and test_labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert np.bincount(labels).tolist()[:2] == [5923, 6742]
