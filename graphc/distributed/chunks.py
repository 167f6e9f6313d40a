"""Arrays as one ``.npy`` file per chunk of rows, which the workers read themselves.

``save_chunks(directory, {"x": x, "t": t}, rows=10_000)`` writes ``directory/x/00000.npy``, ...
and a ``manifest.json`` listing the chunk sizes; ``open_chunks(directory)`` returns dask arrays
chunked along the rows whose tasks load those files where they run, so the data go from the
files to the workers and never through the client.  Any other dask array chunked along its
first axis (``dask.array.from_zarr``, ``from_npy_stack``) serves too.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from graphc.errors import DataError, GraphcError

FORMAT, VERSION = "graphc-chunks", 1


def save_chunks(directory, arrays: dict, rows: int) -> Path:
    """Write each array of ``arrays`` (all of one length) as ``.npy`` files of ``rows`` rows."""
    if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 1:
        raise GraphcError(f"save_chunks: rows must be a positive integer, got {rows!r}")
    if not arrays:
        raise GraphcError("save_chunks: no arrays given")
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise GraphcError(f"save_chunks: the arrays must hold one row per example, got lengths {lengths}")
    for name in arrays:
        if not isinstance(name, str) or not name or name != os.path.basename(name) or name in (".", ".."):
            raise GraphcError(f"save_chunks: array names become directory names, got {name!r}")
    total = next(iter(lengths.values()))
    starts = list(range(0, total, int(rows))) or [0]
    sizes = [min(int(rows), total - s) for s in starts]
    directory = Path(directory)
    for name, array in arrays.items():
        array = np.asarray(array)
        (directory / name).mkdir(parents=True, exist_ok=True)
        for k, (start, size) in enumerate(zip(starts, sizes)):
            np.save(directory / name / f"{k:05d}.npy", np.ascontiguousarray(array[start:start + size]))
    manifest = {"format": FORMAT, "version": VERSION, "rows": sizes,
                "arrays": {name: {"dtype": np.asarray(a).dtype.str, "shape": list(np.shape(a)[1:])}
                           for name, a in arrays.items()}}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return directory


def read_manifest(directory) -> dict:
    """The manifest of a directory written by :func:`save_chunks`, checked."""
    path = Path(directory) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: not found; write the chunks with graphc.distributed.save_chunks") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None
    sizes = manifest.get("rows") if isinstance(manifest, dict) else None
    if (not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION
            or not isinstance(sizes, list) or not all(isinstance(r, int) and r >= 0 for r in sizes)
            or not isinstance(manifest.get("arrays"), dict)):
        raise DataError(f"{path}: not a {FORMAT} manifest of version {VERSION}")
    return manifest


def chunk_file(directory, name: str, k: int) -> str:
    return str(Path(directory) / name / f"{k:05d}.npy")


def load_chunk(path: str, rows: int, dtype: str, shape: tuple) -> np.ndarray:
    """One chunk file, checked against the manifest (runs on a worker)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read this chunk on worker {_where()} ({exc}); every worker must see "
                        f"the chunk directory at the same path") from None
    if array.shape != (rows, *shape) or array.dtype != np.dtype(dtype):
        raise DataError(f"{path}: expected {np.dtype(dtype)} of shape {(rows, *shape)} (manifest), "
                        f"found {array.dtype} of shape {array.shape}")
    return array


def _where() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "(not a worker)"


def open_chunks(directory) -> dict:
    """The arrays of a :func:`save_chunks` directory as dask arrays chunked along the rows.

    Nothing is read here: each chunk is a task that loads its file on the worker that runs it.
    The directory must be at the same path on every worker (a shared filesystem, or the same
    copy on each machine).
    """
    import dask
    import dask.array as da

    directory = Path(directory).resolve()
    manifest = read_manifest(directory)
    sizes = manifest["rows"]
    out = {}
    for name, info in manifest["arrays"].items():
        shape, dtype = tuple(info["shape"]), np.dtype(info["dtype"])
        pieces = []
        for k, rows in enumerate(sizes):
            path = chunk_file(directory, name, k)
            stat = os.stat(path) if os.path.exists(path) else None
            # the key names the file and its version: a rewritten file is a new task
            token = hashlib.sha1(f"{path}:{stat and (stat.st_mtime_ns, stat.st_size)}".encode()).hexdigest()[:16]
            load = dask.delayed(load_chunk, pure=True)(path, rows, dtype.str, shape,
                                                       dask_key_name=f"graphc-chunk-{name}-{k}-{token}")
            pieces.append(da.from_delayed(load, (rows, *shape), dtype=dtype))
        out[name] = da.concatenate(pieces, axis=0) if len(pieces) > 1 else pieces[0]
    return out
