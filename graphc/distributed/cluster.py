"""A dask client: of a new local cluster, or of a running scheduler at an address."""

from __future__ import annotations

import asyncio
import logging
import os

from graphc.errors import GraphcError

def lost_worker_errors() -> tuple:
    """dask's failures that mean a worker (or the connection to it) went away, not bad input."""
    from distributed import KilledWorker
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError

    return KilledWorker, FutureCancelledError, CommClosedError, OSError, TimeoutError


def connect(scheduler: str | None = None, *, workers: int | None = None, threads_per_worker: int = 1,
            timeout: float = 10.0, processes: bool = True):
    """A :class:`distributed.Client`; ``client.close()`` also ends a cluster started here.

    ``scheduler=None`` starts a :class:`~distributed.LocalCluster` of ``workers`` processes
    (default: one per core) with ``threads_per_worker`` threads each; dask's nanny runs each
    worker's BLAS on one thread (``OMP_NUM_THREADS=1``), so workers do not compete for cores.
    Otherwise ``scheduler`` is the address a ``dask scheduler`` printed (``tcp://host:8786``);
    when none answers within ``timeout`` seconds this raises a :class:`~graphc.GraphcError`
    that names the address, and nothing is left running.
    """
    from distributed import Client

    if scheduler is None:
        count = workers if workers is not None else os.cpu_count() or 1
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise GraphcError(f"connect: workers must be a positive integer, got {workers!r}")
        return Client(n_workers=count, threads_per_worker=threads_per_worker, processes=processes,
                      dashboard_address=":0", silence_logs=logging.ERROR)
    if not isinstance(scheduler, str) or not scheduler:
        raise GraphcError(f"connect: scheduler must be an address such as 'tcp://127.0.0.1:8786', got {scheduler!r}")
    try:
        # Knock first: a Client that cannot connect leaves its IO-loop thread running (and dask's
        # scheduler setting changed), so it is made only once something answers at the address.
        asyncio.run(_knock(scheduler, timeout))
        return Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise GraphcError(
            f"no dask scheduler answered at {scheduler} within {timeout:g} s ({type(exc).__name__}: {exc}). "
            f"Start one with `dask scheduler` and workers with `dask worker {scheduler}`, check the host and "
            f"port, or leave the address out to run on a local cluster") from None


async def _knock(address: str, timeout: float) -> None:
    from distributed.comm import connect as comm_connect

    comm = await comm_connect(address, timeout=timeout)
    await comm.close()
