"""Full-batch gradients and evaluation over a data set chunked along the batch index.

Each chunk of rows is one task that runs the whole compiled function on it (on the worker
that loaded the chunk); the per-chunk results are summed by dask's tree reduction
(:meth:`dask.bag.Bag.reduction`, ``split_every`` at a time), so no single place receives
every chunk's gradients at once.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from graphc.errors import BindingError, GraphcError
from graphc.ops.node import Node


def _batched(node: Node, inputs: Mapping, params: Mapping, what: str) -> tuple[str, tuple]:
    """Check that ``inputs`` are dask arrays chunked along one batch index, alike, and that every
    leaf ``node`` reads has a value; returns the batch dim's name and the chunk sizes along it."""
    import dask.array as da

    from graphc.compiler.walk import toposort

    graph = node.graph
    read = [n.name for n in toposort([node]) if n.is_leaf and n.op.kind_name in ("input", "param")]

    if not isinstance(inputs, Mapping) or not inputs:
        raise BindingError(f"{what}: inputs must map the graph's batched input names to dask arrays")
    batch_dims, chunks = {}, {}
    for name, array in inputs.items():
        leaf = graph.leaves.get(name)
        if leaf is None or leaf.op.kind_name != "input":
            raise BindingError(f"{what}: {name!r} is not an input of graph {graph.name!r}; its inputs are "
                               f"{[n for n, l in graph.leaves.items() if l.op.kind_name == 'input']}")
        if not isinstance(array, da.Array):
            raise BindingError(
                f"{what}: input {name!r} must be a dask array chunked along its rows, read by the workers "
                f"(graphc.distributed.open_chunks(directory), dask.array.from_zarr(...)), got "
                f"{type(array).__name__}; an array already in memory here can be wrapped with "
                f"dask.array.from_array(x, chunks=(rows, -1)), but then the client ships it")
        if not leaf.shape or not isinstance(leaf.shape[0], str):
            raise BindingError(f"{what}: input {name!r} is declared {leaf.shape}: graphc splits the work along a "
                               f"symbolic batch dim that comes first, such as ('n', 784)")
        if array.ndim != len(leaf.shape):
            raise BindingError(f"{what}: input {name!r} has {array.ndim} axes, but it is declared {leaf.shape}")
        for axis in range(1, array.ndim):
            if len(array.chunks[axis]) > 1:
                dim = leaf.shape[axis]
                raise BindingError(
                    f"{what}: input {name!r} is chunked along axis {axis} (declared {dim!r}, chunks {array.chunks[axis]}); "
                    f"graphc splits the work along the batch index {leaf.shape[0]!r} only, so each chunk must hold "
                    f"whole rows. Rechunk it: {name} = {name}.rechunk({{{axis}: -1}})")
        batch_dims[name], chunks[name] = leaf.shape[0], array.chunks[0]
    if len(set(batch_dims.values())) > 1:
        raise BindingError(f"{what}: the inputs' first dims differ ({batch_dims}); they must share one batch index")
    if len(set(chunks.values())) > 1:
        first = next(iter(chunks))
        other = next(n for n in chunks if chunks[n] != chunks[first])
        raise BindingError(f"{what}: inputs {first!r} and {other!r} are chunked differently along the batch index "
                           f"({chunks[first]} vs {chunks[other]}); rechunk one like the other: "
                           f"{other} = {other}.rechunk({{0: {first}.chunks[0]}})")
    dim = next(iter(batch_dims.values()))
    missing = [n for n in read if n not in inputs and n not in params]
    if missing:
        raise BindingError(f"{what}: no value for {missing}; pass params (numpy arrays) and batched inputs (dask arrays)")
    for name, value in params.items():
        leaf = graph.leaves.get(name)
        if leaf is not None and dim in leaf.shape:
            raise BindingError(f"{what}: {name!r} has the batch index {dim!r} ({leaf.shape}); pass it in inputs, "
                               f"chunked like the others")
    total = sum(chunks[next(iter(chunks))])
    if total == 0:
        raise BindingError(f"{what}: the inputs hold no rows")
    return dim, chunks[next(iter(chunks))]


def _blocks(inputs: Mapping) -> list[dict]:
    """Per chunk of rows: {input name: the delayed block}."""
    per_input = {name: a.to_delayed().reshape(-1) for name, a in inputs.items()}
    count = len(next(iter(per_input.values())))
    return [{name: blocks[k] for name, blocks in per_input.items()} for k in range(count)]


def _compute(client, collection, what: str):
    """Run on the cluster; a worker lost more often than dask retries becomes a GraphcError,
    and whatever is still queued is cancelled."""
    from distributed import KilledWorker

    future = client.compute(collection)
    try:
        return future.result()
    except KilledWorker as exc:
        raise GraphcError(
            f"{what}: a worker died running {exc.task!r} every time dask retried it (dask's "
            f"distributed.scheduler.allowed-failures); the task is probably too big for a worker's memory "
            f"or crashes it: use smaller chunks, more memory per worker, and see the worker's log") from None
    finally:
        future.cancel()


def full_batch(client, loss: Node, wrt: Sequence, params: Mapping, inputs: Mapping, *, reduce: str = "auto",
               split_every: int = 8) -> tuple[float, dict]:
    """``(loss, {name: gradient})`` over every row of ``inputs``, on the cluster of ``client``.

    ``loss`` is a scalar node; ``wrt`` the params (nodes or names) to differentiate it with
    respect to; ``params`` numpy arrays for every non-batched leaf; ``inputs`` dask arrays
    chunked along the batch index (:func:`~graphc.distributed.open_chunks`).  ``reduce``:
    how the loss combines rows, ``"mean"`` (chunks weighted by their share of the rows),
    ``"sum"``, or ``"auto"``: found from the first rows of the first chunk (and an error when
    the loss is neither, e.g. the square of a mean).  Equal to the compiled function on all
    rows at once, up to the order of the sums.
    """
    import dask
    import dask.bag as db

    from graphc.distributed.worker import GraphSpec, add_results, chunk_grads, reduction_kind

    if not isinstance(loss, Node) or loss.shape != () or loss.kind != "float":
        raise GraphcError(f"full_batch: loss must be a scalar float node, got {loss!r}")
    names = [w.name if isinstance(w, Node) else w for w in wrt]
    bad = [n for n in names if not isinstance(n, str) or n not in loss.graph.leaves]
    if bad or not names:
        raise GraphcError(f"full_batch: wrt must name leaves of graph {loss.graph.name!r}, got {list(wrt)!r}")
    if reduce not in ("auto", "mean", "sum"):
        raise GraphcError(f"full_batch: reduce must be 'auto', 'mean' or 'sum', got {reduce!r}")
    params = {k: np.asarray(v) for k, v in params.items()}
    _, chunks = _batched(loss, inputs, params, "full_batch")
    spec = GraphSpec(loss, "grads", tuple(names))
    total = sum(chunks)
    params_d = dask.delayed(params, traverse=False)
    blocks = _blocks(inputs)
    kind = dask.delayed(reduction_kind)(spec, params_d, blocks[0]) if reduce == "auto" else reduce
    parts = [dask.delayed(chunk_grads)(spec, params_d, kind, total, b) for b in blocks]
    summed = db.from_delayed(parts).reduction(add_results, add_results, split_every=split_every)
    result = _compute(client, summed, "full_batch")
    return result["loss"], result["grads"]


def accuracy(client, logits: Node, params: Mapping, x, labels, *, input: str = "x", chunk: int = 2_000,
             dtype=np.float32, split_every: int = 8) -> float:
    """The fraction of rows of ``x`` (a dask array chunked along its rows) whose ``argmax(logits)``
    is ``labels``' entry: each chunk counted on a worker by a :class:`graphc.evaluate.Evaluator`
    (``chunk`` rows a call, uint8 images cast as it does), the counts summed by a tree reduction."""
    import dask
    import dask.array as da
    import dask.bag as db

    from graphc.distributed.worker import GraphSpec, chunk_correct

    if not isinstance(labels, da.Array) or labels.ndim != 1:
        raise BindingError(f"accuracy: labels must be a 1-d dask array of class indices, got "
                           f"{type(labels).__name__} of shape {getattr(labels, 'shape', None)} (one-hot rows? "
                           f"pass t.argmax(axis=1))")
    params = {k: np.asarray(v) for k, v in params.items()}
    _, chunks = _batched(logits, {input: x}, params, "accuracy")
    if labels.chunks[0] != chunks:
        labels = labels.rechunk({0: chunks})
    if labels.shape[0] != x.shape[0]:
        raise BindingError(f"accuracy: {x.shape[0]} inputs but {labels.shape[0]} labels")
    spec = GraphSpec(logits, "predict", (input,))
    params_d = dask.delayed(params, traverse=False)
    xs, ls = x.to_delayed().reshape(-1), labels.to_delayed().reshape(-1)
    parts = [dask.delayed(chunk_correct)(spec, params_d, int(chunk), np.dtype(dtype).str, xb, lb)
             for xb, lb in zip(xs, ls)]
    correct = db.from_delayed(parts).reduction(sum, sum, split_every=split_every)
    return _compute(client, correct, "accuracy") / sum(chunks)
