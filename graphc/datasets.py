"""MNIST for graphc: a strict IDX reader and a checksum-checked, offline-friendly loader.

``load_mnist`` mirrors ``dataset.mnist.load_mnist`` of "Deep Learning from Scratch" so the
examples read the same.  The files are looked up in ``path``, else ``$GRAPHC_DATA``, else a
per-user cache; only missing files are downloaded (with ``pooch``, imported lazily, and only
into ``path`` or the cache), and every failure is one :class:`~graphc.errors.DataError` that
says which file, what was expected and what was found.  ``read_idx`` validates the header
before it allocates anything, so a lying or hostile file cannot make it exhaust memory.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import re
import zlib
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt

from graphc.errors import DataError
from graphc.serialize.files import open_regular_file

__all__ = ["MIRRORS", "MNIST_FILES", "load_mnist", "read_idx", "verify_mnist"]

#: Public mirrors of the original files, tried in order.
MIRRORS: list[str] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]
#: Canonical file name -> sha256 of the original gzip file.
MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
#: Largest payload read_idx accepts by default (bytes); MNIST's biggest file is 47 MB.
MAX_BYTES = 2**31

_DTYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
           0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049  # 0x00000803 (uint8, 3 dims), 0x00000801 (uint8, 1 dim)
_CHUNK = 1 << 20


def read_idx(path: str | os.PathLike[str], *, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a native-endian array.

    The header is checked before the payload is read, and at most the promised number of
    bytes plus one is ever decompressed, so a truncated, padded, lying or gzip-bomb file
    raises :class:`DataError` instead of allocating unbounded memory.
    """
    return _read_idx(Path(path), max_bytes)


def _read_idx(path: Path, max_bytes: int = MAX_BYTES, expect: int | None = None) -> np.ndarray:
    """As read_idx; ``expect`` rejects any other magic number before reading the payload."""
    gz = path.name.endswith(".gz")
    try:
        with open_regular_file(path, DataError, "IDX file") as raw:
            gz = gz or raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            if not gz:
                return _parse(path, raw, os.fstat(raw.fileno()).st_size, max_bytes, expect)
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                return _parse(path, stream, None, max_bytes, expect)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as exc:
        kind = "gzip stream" if gz else "file"
        raise DataError(f"{path}: corrupt or unreadable {kind} "
                        f"({type(exc).__name__}: {exc})") from exc


def _read_upto(stream: IO[bytes], n: int) -> bytearray:
    """Read at most ``n`` bytes in chunks, so memory grows only with data actually present."""
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(min(_CHUNK, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def _parse(path: Path, stream: IO[bytes], file_size: int | None, max_bytes: int,
           expect: int | None) -> np.ndarray:
    head = _read_upto(stream, 4)
    if len(head) < 4:
        raise DataError(f"{path}: expected a 4-byte IDX magic number, found {len(head)} bytes")
    magic, (code, ndim) = int.from_bytes(head, "big"), head[2:4]
    if head[:2] != b"\0\0":
        raise DataError(f"{path}: not an IDX file: expected the magic number to start with "
                        f"bytes 00 00, found {head[:2].hex(' ')}")
    if expect is not None and magic != expect:
        raise DataError(f"{path}: expected IDX magic {expect} (0x{expect:08X}), "
                        f"found {magic} (0x{magic:08X})")
    if code not in _DTYPES:
        raise DataError(f"{path}: unknown IDX dtype code 0x{code:02X}; expected one of "
                        + ", ".join(f"0x{c:02X}" for c in _DTYPES))
    if not 1 <= ndim <= 4:
        raise DataError(f"{path}: IDX header declares {ndim} dimensions; expected 1 to 4")
    raw_dims = _read_upto(stream, 4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(f"{path}: header truncated: expected {4 * ndim} bytes of dimensions, "
                        f"found {len(raw_dims)}")
    shape = tuple(int.from_bytes(raw_dims[i:i + 4], "big") for i in range(0, 4 * ndim, 4))
    dtype = _DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    what = f"{dtype.name} array of shape {shape} ({expected} bytes)"
    if expected > max_bytes:
        raise DataError(f"{path}: header promises a {what}, above the {max_bytes}-byte "
                        "limit; refusing to allocate it")
    if file_size is not None and file_size - 4 - 4 * ndim != expected:
        found = file_size - 4 - 4 * ndim
        raise DataError(f"{path}: header promises a {what} but the payload holds {found} "
                        f"bytes ({'truncated' if found < expected else 'trailing bytes'})")
    data = _read_upto(stream, expected + 1)
    if len(data) != expected:
        found = f"{len(data)} bytes (truncated)" if len(data) < expected else \
            f"at least {len(data)} bytes (trailing bytes)"
        raise DataError(f"{path}: header promises a {what} but the payload holds {found}")
    arr = np.frombuffer(data, dtype=dtype).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open_regular_file(path, DataError, "MNIST file") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _default_dir() -> Path:
    """The per-user cache (pooch's choice of OS cache dir, else ~/.cache)."""
    try:
        import pooch
    except ImportError:
        return Path.home() / ".cache" / "graphc" / "mnist"
    return Path(pooch.os_cache("graphc")) / "mnist"


def _data_dir(path: str | os.PathLike[str] | None) -> tuple[Path, bool]:
    """Return the directory to use and whether graphc may download into it."""
    if path is not None:
        return Path(path).expanduser(), True
    if os.environ.get("GRAPHC_DATA"):
        return Path(os.environ["GRAPHC_DATA"]).expanduser(), False
    return _default_dir(), True


def _find(directory: Path, name: str) -> Path | None:
    """The canonical .gz file, else its un-gzipped twin, else None."""
    for candidate in (directory / name, directory / name[:-3]):
        if candidate.is_file():
            return candidate
    return None


def _retrieve(url: str, known_hash: str, path: Path, fname: str) -> str:
    """Download one file with pooch (hash-checked); a seam that tests replace."""
    import pooch

    return pooch.retrieve(url, known_hash=known_hash, path=path, fname=fname,
                          progressbar=False)


def _missing_error(directory: Path, names: list[str], why: str) -> DataError:
    return DataError(
        f"MNIST files missing from {directory}: {', '.join(names)} ({why}). Download them "
        f"(e.g. from {MIRRORS[0]}) and put them in {directory}, or set GRAPHC_DATA to a "
        "directory that holds them.")


def _download(directory: Path, names: list[str]) -> None:
    """Fetch each missing file from the first mirror that serves it with the right hash."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _missing_error(directory, names, f"cannot create the directory: {exc}") from exc
    for i, name in enumerate(names):
        target, failures, mismatches = directory / name, [], []
        for mirror in MIRRORS:
            url = mirror + name
            try:
                _retrieve(url, "sha256:" + MNIST_FILES[name], directory, name)
                got = _sha256(target) if target.is_file() else None
            except ImportError as exc:
                raise _missing_error(directory, names[i:], "pooch is not installed; "
                                     "pip install 'graphc[train]' to download") from exc
            except Exception as exc:  # network, HTTP status, hash mismatch, disk: try the next
                target.unlink(missing_ok=True)
                m = re.search(r"but got ([0-9a-fA-F]{64})", str(exc))
                if m or "hash" in str(exc).lower():
                    mismatches.append(f"{url}: got {m.group(1) if m else 'a different hash'}")
                failures.append(f"{url}: {type(exc).__name__}: {exc}")
                continue
            if got == MNIST_FILES[name]:
                break
            target.unlink(missing_ok=True)
            if got is None:
                failures.append(f"{url}: no file was written")
            else:
                mismatches.append(f"{url}: got {got}")
        else:
            if mismatches:
                raise DataError(f"{name} failed its checksum: expected sha256 "
                                f"{MNIST_FILES[name]}; " + "; ".join(mismatches)
                                + f". No file was kept in {directory}.")
            raise _missing_error(directory, names[i:],
                                 "download failed: " + "; ".join(failures))


def verify_mnist(path: str | os.PathLike[str] | None = None) -> Path:
    """Check the four canonical .gz files in ``path`` (default as load_mnist) against sha256.

    Returns the directory; raises one DataError naming every missing or mismatched file.
    """
    directory = _data_dir(path)[0]
    problems = []
    for name, want in MNIST_FILES.items():
        file = directory / name
        if not file.is_file():
            problems.append(f"{name}: missing")
        elif (got := _sha256(file)) != want:
            problems.append(f"{name}: expected sha256 {want}, got {got}")
    if problems:
        raise DataError(f"MNIST check failed in {directory}: " + "; ".join(problems))
    return directory


def _load_split(images_file: Path, labels_file: Path) -> tuple[np.ndarray, np.ndarray]:
    images = _read_idx(images_file, expect=_IMAGES_MAGIC)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{images_file}: expected images of shape (N, 28, 28), "
                        f"found {images.shape}")
    labels = _read_idx(labels_file, expect=_LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(f"{images_file.name} holds {len(images)} images but "
                        f"{labels_file.name} holds {len(labels)} labels; they must agree")
    if labels.size and int(labels.max()) > 9:
        bad = int(np.argmax(labels > 9))
        raise DataError(f"{labels_file}: labels must lie in 0..9, found {labels[bad]} "
                        f"at index {bad}")
    return images, labels


def load_mnist(path: str | os.PathLike[str] | None = None, *, normalize: bool = True,
               flatten: bool = True, one_hot_label: bool = False,
               dtype: npt.DTypeLike = np.float32, download: bool = True,
               verify: bool = False) -> tuple[tuple[np.ndarray, np.ndarray],
                                              tuple[np.ndarray, np.ndarray]]:
    """Return ``((x_train, t_train), (x_test, t_test))`` as in "Deep Learning from Scratch".

    normalize: images as ``dtype`` in [0, 1] (else uint8 0..255); flatten: (N, 784) (else
    (N, 1, 28, 28)); one_hot_label: labels (N, 10) of ``dtype`` (else int64 (N,)).  Files come
    from ``path``, else ``$GRAPHC_DATA``, else the user cache; missing ones are downloaded
    into ``path`` or the cache (never into GRAPHC_DATA) when ``download``.  ``verify``
    checks canonical .gz files found on disk against their sha256.

    >>> from graphc.datasets import load_mnist
    >>> (x_train, t_train), (x_test, t_test) = load_mnist()  # from $GRAPHC_DATA, else the cache
    >>> x_train.shape, x_train.dtype, t_train[:5]
    ((60000, 784), dtype('float32'), array([5, 0, 4, 1, 9]))
    >>> x_test.shape, float(x_test.min()), float(x_test.max())
    ((10000, 784), 0.0, 1.0)
    """
    dtype = np.dtype(dtype)
    if normalize and not np.issubdtype(dtype, np.floating):
        raise DataError(f"normalize=True needs a floating dtype, got {dtype}")
    directory, may_download = _data_dir(path)
    missing = [name for name in MNIST_FILES if _find(directory, name) is None]
    if missing:
        if not download:
            raise _missing_error(directory, missing, "download=False")
        if not may_download:
            raise _missing_error(directory, missing, "graphc never downloads into "
                                 "GRAPHC_DATA; unset it to use the cache, or pass path=")
        _download(directory, missing)
    files = {name: _find(directory, name) or directory / name for name in MNIST_FILES}
    for name, file in files.items() if verify else ():
        if file.name == name and (got := _sha256(file)) != MNIST_FILES[name]:
            raise DataError(f"{file}: expected sha256 {MNIST_FILES[name]}, got {got}")
    names = list(MNIST_FILES)
    out = []
    for images_name, labels_name in (names[0:2], names[2:4]):
        images, labels = _load_split(files[images_name], files[labels_name])
        x = np.divide(images, 255, dtype=dtype) if normalize else images
        x = x.reshape(len(x), 784) if flatten else x.reshape(len(x), 1, 28, 28)
        t = np.eye(10, dtype=dtype)[labels] if one_hot_label else labels.astype(np.int64)
        out.append((x, t))
    return tuple(out)
