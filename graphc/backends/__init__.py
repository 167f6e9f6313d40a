"""Backends: one package each, holding what turns a simplified graph into code for one
kind of array.

* :mod:`graphc.backends.numpy`: numpy arrays, with planned buffers, ``out=`` everywhere,
  BLAS gemm fusions and pairwise contraction execution;
* :mod:`graphc.backends.array_api`: any array-API library (torch, JAX, CuPy, dask) through
  array-api-compat, one plain statement per node.

A backend is a lowering context class and its per-op rules, registered with
:func:`graphc.ops.registry.lowering` under the backend's name, plus the runtime module
(``rt`` in the generated code) and the rewrites it runs before lowering.
"""
