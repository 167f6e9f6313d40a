"""Scale-out with dask.distributed: full-batch gradients and evaluation over chunked files,
synchronous data-parallel training, and sweeps of training runs.

dask is the engine (its scheduler, its workers, its tree reductions); graphc adds what is
specific to a compiled graph: the graph travels to the workers as a graph file and is
compiled there once per worker process; each chunk of rows is one task running the whole
compiled function (never one task per einsum); what the graph sums over the batch index is
summed over the chunks with dask's tree reduction, weighted by chunk size for a mean.

The same code runs on a :class:`distributed.LocalCluster` or on a scheduler's address
(:func:`connect`).  Needs the ``dask`` extra: ``pip install "graphc[dask]"``.  ``import graphc``
does not import this package (nor dask).

* :func:`connect` -- a client of a new local cluster, or of the scheduler at an address;
* :func:`save_chunks` / :func:`open_chunks` -- arrays as one ``.npy`` file per chunk of rows,
  read back as dask arrays whose chunks the workers load from the files;
* :func:`full_batch` -- the loss and its gradients over a whole chunked data set;
* :func:`accuracy` -- a classifier's accuracy over a whole chunked data set;
* :class:`DataParallelTrainer` -- synchronous data-parallel training with one copy of the params;
* :mod:`graphc.distributed.sweep` -- ``graphc sweep``: a grid of ``train-mnist`` runs as tasks.
"""

from __future__ import annotations

try:
    import dask  # noqa: F401
    import distributed  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra is part of the test environment
    raise ImportError(f"graphc.distributed needs dask and distributed ({exc}); "
                      "install them with: pip install \"graphc[dask]\"") from exc

from graphc.distributed.batch import accuracy, full_batch
from graphc.distributed.chunks import open_chunks, save_chunks
from graphc.distributed.cluster import connect
from graphc.distributed.train import DataParallelTrainer

__all__ = ["connect", "save_chunks", "open_chunks", "full_batch", "accuracy", "DataParallelTrainer"]
