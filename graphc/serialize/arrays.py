"""Arrays in ``.npz`` archives, saved atomically and loaded without ever unpickling.

``save_arrays(path, {"W1": ..., ...}, meta={...})`` writes an ``.npz`` archive (meta as
JSON in the string entry ``"__meta__"``); ``load_arrays(path)`` reads it back without
ever unpickling.  :func:`save_arrays` replaces its target atomically via
:func:`~graphc.serialize.atomic.atomic_write`.
"""

from __future__ import annotations

import json
import struct
import zipfile
import zlib
from typing import Any

import numpy as np

from graphc.errors import SerializationError
from graphc.serialize.atomic import atomic_write
from graphc.serialize.files import open_regular_file

META_KEY = "__meta__"


def save_arrays(path, arrays: dict, *, meta: dict | None = None, compress: bool = False) -> None:
    """Write ``arrays`` (name -> array) and JSON ``meta`` to an ``.npz`` archive, atomically.

    Object arrays are refused: they could only be stored as pickles, which are code.

    >>> import os, tempfile, numpy as np
    >>> from graphc.serialize import load_arrays, save_arrays
    >>> path = os.path.join(tempfile.mkdtemp(), "params.npz")
    >>> save_arrays(path, {"b": np.arange(3.0)}, meta={"step": 600})
    >>> load_arrays(path)
    ({'b': array([0., 1., 2.])}, {'step': 600})
    """
    if not isinstance(arrays, dict):
        raise SerializationError(f"arrays must be a dict of name -> array, got {type(arrays).__name__}")
    items = {}
    for key, value in arrays.items():
        if not isinstance(key, str) or not key or key == META_KEY or "\x00" in key:
            raise SerializationError(f"array names must be non-empty strings other than {META_KEY!r}, got {key!r}")
        items[key] = np.asarray(value)
        if items[key].dtype.hasobject:
            raise SerializationError(f"array {key!r} holds Python objects (dtype object), "
                                     "which cannot be saved without pickle")
    if meta is not None and not isinstance(meta, dict):
        raise SerializationError(f"meta must be a dict or None, got {type(meta).__name__}")
    try:
        items[META_KEY] = np.array(json.dumps(meta))
    except (TypeError, ValueError) as e:
        raise SerializationError(f"meta is not JSON-serialisable: {e}") from None

    def write(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
            for key, arr in items.items():
                with z.open(key + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, arr, allow_pickle=False)

    atomic_write(path, write)


#: the most bytes ``load_arrays`` reads out of one archive, all members together
MAX_BYTES = 1 << 34
#: what ``zipfile`` raises on a damaged or hostile archive (its own errors, and the ones it lets
#: through from parsing fields it does not check: versions, extra fields, names, sizes)
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, zlib.error,
               NotImplementedError, RuntimeError, struct.error, UnicodeDecodeError, OverflowError)


def _read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, key: str, budget: int) -> np.ndarray:
    """One ``.npy`` member, its header checked against the member's size before any array is made."""
    with z.open(info) as member:
        try:
            version = np.lib.format.read_magic(member)
            readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in readers:
                raise ValueError(f".npy format version {version} is not read here")
            shape, fortran, dtype = readers[version](member, max_header_size=10000)
        except (ValueError, EOFError, OSError, SyntaxError, TypeError) as e:
            raise SerializationError(f"{where}: not a plain .npy array ({e})") from None
        if dtype.hasobject:  # refused before anything could be unpickled
            raise SerializationError(f"{where}: array {key!r} cannot be loaded safely: it holds Python objects "
                                     f"(dtype {dtype}), which load only through pickle")
        if not all(type(n) is int and n >= 0 for n in shape):  # (True,) passes numpy's own check
            raise SerializationError(f"{where}: the header's shape {shape!r} is not a tuple of counts")
        count = 1
        for n in shape:
            count *= n
        needed = count * dtype.itemsize
        data = info.file_size - member.tell()
        if needed != data:
            raise SerializationError(f"{where}: the header promises {needed} bytes of {dtype} {shape}, "
                                     f"but the member holds {data}")
        if needed > budget:
            raise SerializationError(f"{where}: {needed} bytes would pass the reader's limit of {MAX_BYTES} bytes")
        raw = bytearray(needed)  # writeable, so the array needs no copy
        got = member.readinto(raw)
        if got != needed or member.read(1):
            raise SerializationError(f"{where}: damaged: the data do not match the header's {needed} bytes")
    return np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def load_arrays(path) -> tuple[dict, Any]:
    """Read ``save_arrays``' archive (a path or an open binary file): ``(arrays, meta)``; never unpickles.

    ``meta`` is None when none was saved.  A file that is not an ``.npz`` archive, holds an
    object (pickled) array, or whose members' headers promise other sizes than the members
    hold raises :class:`SerializationError`, before any array is allocated; so do paths that
    are not regular files.  At most ``MAX_BYTES`` are read.

    >>> import io, numpy as np
    >>> from graphc.serialize import load_arrays, save_arrays
    >>> buffer = io.BytesIO()
    >>> np.savez(buffer, W=np.eye(2))
    >>> arrays, meta = load_arrays(io.BytesIO(buffer.getvalue()))
    >>> arrays["W"], meta
    (array([[1., 0.],
           [0., 1.]]), None)
    """
    f = path if hasattr(path, "read") else open_regular_file(path, SerializationError, ".npz archive")
    arrays = {}
    try:
        try:
            if f.read(6) == b"\x93NUMPY":
                raise SerializationError(f"{path!r} holds a single .npy array, not an .npz archive")
            f.seek(0)
            z = zipfile.ZipFile(f)
        except _ZIP_ERRORS as e:
            raise SerializationError(f"{path!r} is not an .npz archive of plain arrays: {e}") from None
        with z:
            budget = MAX_BYTES
            for info in z.infolist():
                where = f"{path!r}: member {info.filename!r}"
                if not info.filename.endswith(".npy") or info.is_dir():
                    raise SerializationError(f"{where} is not an .npy array")
                key = info.filename[:-4]
                if key in arrays:
                    raise SerializationError(f"{where} appears twice")
                try:
                    arrays[key] = _read_member(z, info, where, key, budget)
                except _ZIP_ERRORS as e:
                    raise SerializationError(f"{where} is damaged: {e}") from None
                budget -= arrays[key].nbytes
    finally:
        if f is not path:
            f.close()
    raw = arrays.pop(META_KEY, None)
    if raw is None:
        return arrays, None
    try:
        if raw.dtype.kind != "U" or raw.shape != ():
            raise ValueError(f"it is a {raw.dtype} array of shape {raw.shape}, not a JSON string")
        return arrays, json.loads(str(raw[()]))
    except (ValueError, RecursionError) as e:
        raise SerializationError(f"{path!r}: entry {META_KEY!r} is not valid JSON meta: {e}") from None
