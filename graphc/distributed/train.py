"""Synchronous data-parallel training: one copy of the params, a shard and a compiled step per rank.

Every step: the client sends the params to the workers (inside each rank's task when they are
small, else ``scatter``, one copy per worker), each
rank computes the loss and gradients of its batch on its shard (kept on its worker, loaded there
from the chunk files), the ranks' results are summed in a tree of tasks (the last level by the client), and the client applies
the optimizer's update to its one copy of the params with a compiled :class:`graphc.optim.TrainStep`.
Each rank's result is a pure function of (params, step), so a step whose worker dies is simply
redone from the params it started with: dask reruns the rank elsewhere, and the step as a whole
is retried ``retries`` times when dask gives up.
"""

from __future__ import annotations

import numpy as np

from graphc.errors import BindingError, GraphcError
from graphc.ops.node import Node

#: Params up to this size travel inside each rank's task; larger ones are scattered first (a round
#: trip of its own, but one copy per worker rather than one per task).
INLINE_PARAMS_BYTES = 4 << 20
#: How many ranks' results one sum takes: up to this many ranks, the client adds them itself.
TREE_FAN_IN = 8


def _update_graph(params: dict):
    """``Σ_p sum(p · grad_p)``: its gradient with respect to each param is the input ``grad_p``, so a
    TrainStep of it applies the optimizer's update with the gradients it is given."""
    from graphc.ops import Graph, sum as gsum

    g = Graph("data_parallel_update")
    total = None
    for name, value in params.items():
        p = g.param(name, value.shape)
        term = gsum(p * g.input(f"grad_{name}", value.shape))
        total = term if total is None else total + term
    return total


class DataParallelTrainer:
    """Train ``loss`` on the rows saved in ``data`` (:func:`~graphc.distributed.save_chunks`) with
    ``ranks`` workers, each on its shard, ``batch_size`` rows per rank and step.

    The chunk files are dealt to the ranks in turn (rank ``r`` holds chunks ``r, r + ranks, ...``);
    at step ``s`` rank ``r`` draws its rows with replacement from a generator seeded by
    ``(seed, r, s)``, so :meth:`global_batch` can name the rows of a step.  The result is that of
    one process training on those global batches (``TrainStep`` on the concatenated rows), up to
    the order of the sums.  ``params`` (numpy arrays) are the one copy, updated in place by
    :meth:`step`.  ``reduce`` says how the loss combines rows (``"auto"``: found from the data, as
    :func:`~graphc.distributed.full_batch` does).
    """

    def __init__(self, client, loss: Node, params: dict, optimizer, data, batch_size: int, *,
                 ranks: int | None = None, seed: int = 0, retries: int = 3, reduce: str = "auto",
                 timeout: float = 300.0):
        from pathlib import Path

        from graphc.distributed.chunks import read_manifest
        from graphc.distributed.worker import GraphSpec, probe_kind
        from graphc.optim import TrainStep

        if not isinstance(loss, Node) or loss.shape != () or loss.kind != "float":
            raise GraphcError(f"DataParallelTrainer: loss must be a scalar float node, got {loss!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise GraphcError(f"DataParallelTrainer: batch_size must be a positive integer, got {batch_size!r}")
        if reduce not in ("auto", "mean", "sum"):
            raise GraphcError(f"DataParallelTrainer: reduce must be 'auto', 'mean' or 'sum', got {reduce!r}")
        self.client, self.loss, self.optimizer = client, loss, optimizer
        self.directory = str(Path(data).resolve())
        manifest = read_manifest(self.directory)
        graph = loss.graph
        self.names = tuple(n for n in manifest["arrays"] if n in graph.leaves
                           and graph.leaves[n].op.kind_name == "input")
        missing = [n for n, leaf in graph.leaves.items() if leaf.op.kind_name == "input" and n not in self.names
                   and not n.startswith("__")]
        if missing or not self.names:
            raise BindingError(f"DataParallelTrainer: {self.directory} holds {list(manifest['arrays'])}, but the "
                               f"graph's inputs {missing or list(graph.leaves)} must all be there")
        ranks = len(client.ncores()) if ranks is None else ranks
        sizes = manifest["rows"]
        if isinstance(ranks, bool) or not isinstance(ranks, int) or not 1 <= ranks <= len(sizes):
            raise GraphcError(f"DataParallelTrainer: ranks must lie in 1..{len(sizes)} (the chunk files, one shard "
                              f"each at least), got {ranks!r}; write the data in more chunks with save_chunks")
        self.ranks, self.batch_size, self.seed, self.retries, self.timeout = ranks, batch_size, seed, retries, timeout
        self.shards = [list(range(r, len(sizes), ranks)) for r in range(ranks)]
        starts = np.concatenate([[0], np.cumsum(sizes)])
        self._rows = [np.concatenate([np.arange(starts[k], starts[k + 1]) for k in chunks]) for chunks in self.shards]
        params_of_graph = [p.name for p in graph.params]
        unknown = [n for n in params if n not in graph.leaves]
        if unknown:
            raise BindingError(f"DataParallelTrainer: {unknown} are not leaves of graph {graph.name!r}")
        self.params = params
        self.trained = tuple(n for n in params if n in params_of_graph)
        self.spec = GraphSpec(loss, "grads", self.trained)
        if reduce == "auto":
            reduce = self._retry(lambda attempt: client.submit(
                probe_kind, self.spec, self.directory, self.shards[0][0], self.names, params,
                pure=False).result(timeout=timeout), "finding how the loss combines rows")
        self.reduce = reduce
        self._step = TrainStep(_update_graph({n: params[n] for n in self.trained}),
                               {n: params[n] for n in self.trained}, optimizer)
        self.step_count = 0
        self._workers: list = []

    @property
    def state(self):
        """The optimizer's state arrays (the one copy, on the client)."""
        return self._step.state

    def global_batch(self, step: int) -> np.ndarray:
        """The rows (indices into the saved arrays, in file order) that step ``step`` trains on."""
        from graphc.distributed.worker import batch_rows

        return np.concatenate([rows[batch_rows(self.seed, r, step, len(rows), self.batch_size)]
                               for r, rows in enumerate(self._rows)])

    def _retry(self, run, what: str):
        from graphc.distributed.cluster import lost_worker_errors

        lost = lost_worker_errors()
        for attempt in range(self.retries + 1):
            try:
                return run(attempt)
            except GraphcError:
                raise
            except lost as exc:
                last = exc
                try:  # a nanny restarts a dead worker: wait for one before redoing the step
                    self.client.wait_for_workers(1, timeout=self.timeout)
                except (OSError, TimeoutError):
                    pass
        raise GraphcError(f"{what}: workers were lost {self.retries + 1} times in a row (last: {type(last).__name__}: "
                          f"{last}); the params are those of the last completed step ({self.step_count}). Check the "
                          f"workers' logs and memory, then call step() again or raise retries") from None

    def _gradients(self, attempt: int) -> dict:
        from distributed import wait

        from graphc.distributed.worker import add_results, rank_grads

        client, step = self.client, self.step_count
        weight = self.batch_size / (self.batch_size * self.ranks) if self.reduce == "mean" else 1.0
        # The params, from the client's synchronized copy: small ones travel inside each rank's
        # task (no round trip of their own); large ones are scattered, one copy per worker.
        params = {n: np.array(v) for n, v in self.params.items()}
        if sum(v.nbytes for v in params.values()) > INLINE_PARAMS_BYTES:
            sent = client.scatter([params], broadcast=True, hash=False)[0]
            cancel = [sent]
        else:
            sent, cancel = params, []
        if attempt or not self._workers:  # asked of the scheduler again after a loss: a restarted worker
            self._workers = sorted(client.ncores())  # has a new address (a stale one is only a placement hint)
            if not self._workers:
                client.wait_for_workers(1, timeout=self.timeout)
                self._workers = sorted(client.ncores())
        workers = self._workers
        futures = [client.submit(rank_grads, self.spec, self.directory, chunks, self.names, r, step, self.seed,
                                 self.batch_size, weight, sent, workers=[workers[r % len(workers)]],
                                 allow_other_workers=True, pure=False,
                                 key=f"graphc-rank-{self.spec.token}-{step}-{attempt}-{r}")
                   for r, chunks in enumerate(self.shards)]
        level, made = futures, list(futures)
        while len(level) > TREE_FAN_IN:  # a tree of sums on the workers, TREE_FAN_IN at a time
            level = [client.submit(add_results, level[i:i + TREE_FAN_IN], pure=False)
                     for i in range(0, len(level), TREE_FAN_IN)]
            made += level
        try:  # the last level's few results come straight to the client: no extra hop through a worker
            wait(level, timeout=self.timeout)
            results = client.gather(level)
        finally:
            client.cancel(made + cancel)
        return add_results(results)

    def step(self) -> float:
        """One synchronous step on every rank; returns the global batch's loss (before the update)."""
        result = self._retry(self._gradients, f"step {self.step_count}")
        self._step(**{f"grad_{n}": result["grads"][n] for n in self.trained})
        self.step_count += 1
        return result["loss"]

    def run(self, steps: int) -> list[float]:
        """``steps`` steps; their losses."""
        return [self.step() for _ in range(steps)]

    def close(self) -> None:
        """Free the shards and compiled functions the workers keep for this trainer."""
        from graphc.distributed.worker import forget

        try:
            self.client.run(forget, self.spec.token)
        except (OSError, TimeoutError):
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
