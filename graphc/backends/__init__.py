"""Backends: one package each, holding what turns a simplified graph into code for one
kind of array.

* :mod:`graphc.backends.numpy`: numpy arrays, with planned buffers, ``out=`` everywhere,
  BLAS gemm fusions and pairwise contraction execution;
* :mod:`graphc.backends.array_api`: any array-API library (torch, JAX, CuPy, dask) through
  array-api-compat, one plain statement per node.

A backend is a lowering context class and its per-op rules, registered with
:func:`graphc.ops.registry.lowering` under the backend's name, plus the runtime module
(``rt`` in the generated code) and the rewrites it runs before lowering.

:mod:`graphc.backends.libraries` recognises the array libraries; its converters are here:
``asarrays(arrays, "torch", device="cuda")`` makes a dict of numpy arrays into another
library's, ``to_numpy(a)`` brings one back.
"""

from graphc.backends.libraries import asarrays, to_numpy

__all__ = ["asarrays", "to_numpy"]
