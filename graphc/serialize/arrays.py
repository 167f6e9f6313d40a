"""Arrays in ``.npz`` archives, saved atomically and loaded without ever unpickling.

``save_arrays(path, {"W1": ..., ...}, meta={...})`` writes an ``.npz`` archive (meta as
JSON in the string entry ``"__meta__"``); ``load_arrays(path)`` reads it back without
ever unpickling.  :func:`save_arrays` replaces its target atomically via
:func:`~graphc.serialize.atomic.atomic_write`.
"""

from __future__ import annotations

import json
import zipfile
from typing import Any

import numpy as np

from graphc.errors import SerializationError
from graphc.serialize.atomic import atomic_write

META_KEY = "__meta__"


def save_arrays(path, arrays: dict, *, meta: dict | None = None, compress: bool = False) -> None:
    """Write ``arrays`` (name -> array) and JSON ``meta`` to an ``.npz`` archive, atomically.

    Object arrays are refused: they could only be stored as pickles, which are code.
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


def load_arrays(path) -> tuple[dict, Any]:
    """Read ``save_arrays``' archive (a path or an open binary file): ``(arrays, meta)``; never unpickles.

    ``meta`` is None when none was saved.  A file that is not an ``.npz`` archive, or holds
    an object (pickled) array, raises :class:`SerializationError`.
    """
    f = path if hasattr(path, "read") else open(path, "rb")
    try:
        try:
            archive = np.load(f, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise SerializationError(f"{path!r} is not an .npz archive of plain arrays: {e}") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise SerializationError(f"{path!r} holds a single .npy array, not an .npz archive")
        arrays = {}
        with archive:
            for key in archive.files:
                try:
                    arrays[key] = archive[key]
                    if not isinstance(arrays[key], np.ndarray):  # numpy hands other members over as bytes
                        raise SerializationError(f"{path!r}: member {key!r} is not an .npy array")
                except ValueError as e:  # object arrays: numpy refuses before unpickling anything
                    raise SerializationError(f"{path!r}: array {key!r} cannot be loaded safely: {e}") from None
                except (OSError, EOFError, zipfile.BadZipFile) as e:
                    raise SerializationError(f"{path!r}: array {key!r} is damaged: {e}") from None
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
