"""What runs on the workers.  Graphs travel as graph files (JSON, :mod:`graphc.serialize`) and are
compiled once per worker process: the compiled functions, and a trainer's shards, are kept in a
per-process cache keyed on a token (the hash of the graph file and what was asked of it)."""

from __future__ import annotations

import hashlib
import json
import threading

import numpy as np

from graphc.errors import GraphcError

_CACHE: dict = {}
_LOCK = threading.RLock()  # a build may itself look up the cache (a shard compiles its function)


class GraphSpec:
    """A graph's ``outputs[0]`` and what to compile of it, as a picklable graph file and a token."""

    def __init__(self, node, purpose: str, wrt: tuple = ()):
        from graphc.errors import SerializationError
        from graphc.serialize.graph_format import graph_to_dict

        try:
            self.graph = graph_to_dict([node])
        except SerializationError as exc:
            raise GraphcError(f"graphc.distributed sends graphs to the workers as graph files, and this one cannot "
                              f"be written as one: {exc}") from None
        self.purpose, self.wrt = purpose, tuple(wrt)
        text = json.dumps([self.graph, purpose, self.wrt], sort_keys=True)
        self.token = hashlib.sha256(text.encode()).hexdigest()[:24]

    def node(self):
        from graphc.serialize.graph_format import graph_from_dict

        return graph_from_dict(self.graph)[1][0]


def cached(key, build):
    """``_CACHE[key]``, built once per worker process by ``build()``."""
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = build()
        return _CACHE[key]


def forget(token: str) -> int:
    """Drop everything cached under ``token`` (run on every worker by ``client.run``)."""
    with _LOCK:
        keys = [k for k in _CACHE if k == token or (isinstance(k, tuple) and k[0] == token)]
        for k in keys:
            del _CACHE[k]
    return len(keys)


def loss_and_grads_fn(spec: GraphSpec):
    """The compiled ``[loss, *grads]`` of the spec, with the wrt names in order."""
    def build():
        from graphc.compiler import compile, grad

        loss = spec.node()
        wrt = [loss.graph.leaves[name] for name in spec.wrt]
        return compile([loss, *grad(loss, wrt)], name=f"{loss.graph.name}_chunk")
    return cached((spec.token, "grads"), build)


def loss_fn(spec: GraphSpec):
    def build():
        from graphc.compiler import compile

        loss = spec.node()
        return compile(loss, name=f"{loss.graph.name}_loss")
    return cached((spec.token, "loss"), build)


def _feed(fn, params: dict, blocks: dict) -> dict:
    """params and the chunk's inputs by name; integer images for a float input are cast to the
    params' float type (exactly: uint8 pixels fit any float)."""
    dtype = next((v.dtype for v in params.values() if getattr(v, "dtype", None) is not None
                  and v.dtype.kind == "f"), None)
    feed = dict(params)
    graph = fn.graph
    for name, block in blocks.items():
        leaf = graph.leaves.get(name)
        if leaf is not None and leaf.kind == "float" and block.dtype.kind != "f" and dtype is not None:
            block = block.astype(dtype)
        feed[name] = block
    return feed


def reduction_kind(spec: GraphSpec, params: dict, blocks: dict, rows: int = 4) -> str:
    """``"mean"`` or ``"sum"``: how the scalar loss combines the rows, tested on the first rows.

    The loss of the first ``rows`` rows together is compared with the losses of each row alone:
    their sum (a sum over the batch), their mean (a mean over it), or neither, in which case the
    loss does not split into chunks (it is not a sum or mean of per-row terms).
    """
    fn = loss_fn(spec)
    size = min(len(b) for b in blocks.values())
    k = min(rows, size)
    if k < 2:
        raise GraphcError(f"the first chunk holds {size} row(s); graphc needs two rows to tell whether the loss "
                          f"is a sum or a mean over the batch: pass reduce='mean' or reduce='sum'")
    whole = float(fn(_feed(fn, params, {n: b[:k] for n, b in blocks.items()})))
    each = [float(fn(_feed(fn, params, {n: b[i:i + 1] for n, b in blocks.items()}))) for i in range(k)]
    dtype = next(iter(params.values())).dtype if params else np.dtype(np.float64)
    rtol = 1e-9 if dtype == np.float64 else 1e-4
    scale = max(abs(whole), *map(abs, each), 1e-300)
    is_sum = abs(whole - sum(each)) <= rtol * scale * k
    is_mean = abs(whole - sum(each) / k) <= rtol * scale
    loss = spec.node().name
    if is_sum and is_mean:
        raise GraphcError(f"cannot tell whether loss {loss!r} sums or averages over the batch: it is zero on the "
                          f"first {k} rows; pass reduce='mean' or reduce='sum'")
    if not (is_sum or is_mean):
        raise GraphcError(f"loss {loss!r} is neither a sum nor a mean of per-row terms over the batch (on the first "
                          f"{k} rows: {whole!r} together, {each!r} one by one), so it cannot be split into chunks; "
                          f"make it a sum or mean over the batch index, or evaluate it in one process")
    return "sum" if is_sum else "mean"


def chunk_grads(spec: GraphSpec, params: dict, kind: str, total: int, blocks: dict) -> list:
    """The loss and gradients of one chunk of rows, weighted so that the chunks' results add up to
    the whole set's: by ``rows / total`` for a mean, by 1 for a sum.  A one-item list (a dask bag
    partition)."""
    fn = loss_and_grads_fn(spec)
    rows = len(next(iter(blocks.values())))
    values = fn(_feed(fn, params, blocks))
    weight = rows / total if kind == "mean" else 1.0
    loss, grads = values[0], values[1:]
    return [{"loss": float(loss) * weight, "grads": {n: g * weight for n, g in zip(spec.wrt, grads)}}]


def add_results(items) -> dict:
    """Sum of ``{"loss": float, "grads": {name: array}}`` results, in order (a tree node's work)."""
    items = list(items)
    total = {"loss": items[0]["loss"], "grads": {n: np.array(g, copy=True) for n, g in items[0]["grads"].items()}}
    for item in items[1:]:
        total["loss"] += item["loss"]
        for n, g in item["grads"].items():
            total["grads"][n] += g
    return total


def chunk_correct(spec: GraphSpec, params: dict, chunk: int, dtype: str, x: np.ndarray, labels: np.ndarray) -> list:
    """How many rows of ``x`` the classifier gets right (a one-item list: a dask bag partition)."""
    def build():
        from graphc.evaluate import Evaluator

        return Evaluator(spec.node(), chunk, np.dtype(dtype), input=spec.wrt[0])
    evaluator = cached((spec.token, "evaluator", chunk, dtype), build)
    if len(x) == 0:
        return [0]
    return [int(round(evaluator.accuracy(params, x, labels) * len(x)))]


class Shard:
    """A rank's rows, loaded on its worker from the chunk files, and the compiled loss and gradients."""

    def __init__(self, spec: GraphSpec, directory: str, chunks: list, names: tuple):
        from graphc.distributed.chunks import chunk_file, load_chunk, read_manifest

        manifest = read_manifest(directory)
        sizes = manifest["rows"]
        self.arrays = {}
        for name in names:
            info = manifest["arrays"][name]
            parts = [load_chunk(chunk_file(directory, name, k), sizes[k], info["dtype"], tuple(info["shape"]))
                     for k in chunks]
            self.arrays[name] = np.concatenate(parts) if len(parts) > 1 else parts[0]
        self.rows = len(next(iter(self.arrays.values())))
        self.fn = loss_and_grads_fn(spec)


def batch_rows(seed: int, rank: int, step: int, rows: int, batch: int) -> np.ndarray:
    """The rows of its shard that ``rank`` trains on at ``step``: drawn with replacement, as
    ``train_mnist`` draws, from a generator seeded by (seed, rank, step), so any worker that
    redoes the step draws the same rows."""
    return np.random.default_rng([seed, rank, step]).integers(0, rows, batch)


def rank_grads(spec: GraphSpec, directory: str, chunks: list, names: tuple, rank: int, step: int, seed: int,
               batch: int, weight: float, params: dict) -> dict:
    """One rank's weighted loss and gradients at ``step``, on rows of its shard.  The shard is
    loaded (from the files) the first time this worker process serves the rank."""
    shard = cached((spec.token, "shard", directory, tuple(chunks)), lambda: Shard(spec, directory, chunks, names))
    idx = batch_rows(seed, rank, step, shard.rows, batch)
    blocks = {name: np.take(a, idx, axis=0) for name, a in shard.arrays.items()}
    values = shard.fn(_feed(shard.fn, params, blocks))
    return {"loss": float(values[0]) * weight, "grads": {n: g * weight for n, g in zip(spec.wrt, values[1:])}}


def first_rows(directory: str, chunk: int, names: tuple, rows: int = 4) -> dict:
    """The first rows of a chunk (for :func:`reduction_kind`)."""
    from graphc.distributed.chunks import chunk_file, load_chunk, read_manifest

    manifest = read_manifest(directory)
    out = {}
    for name in names:
        info = manifest["arrays"][name]
        out[name] = load_chunk(chunk_file(directory, name, chunk), manifest["rows"][chunk], info["dtype"],
                               tuple(info["shape"]))[:rows]
    return out


def probe_kind(spec: GraphSpec, directory: str, chunk: int, names: tuple, params: dict) -> str:
    return reduction_kind(spec, params, first_rows(directory, chunk, names))
