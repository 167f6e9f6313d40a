"""Which array library an array comes from, and what graphc needs from that library.

A compiled function takes arrays of one library per call: numpy's go to the numpy
backend, every other library's (torch, JAX, CuPy, dask) to the array-API backend
through array-api-compat.  This module names the library of an array
(:func:`library_of`), finds its array namespace and device (:func:`namespace`,
:func:`device`), says which ``pip install`` adds a missing library, how to convert an
array to another dtype in its own library (:func:`astype_hint`), and converts arrays
between numpy and the other libraries (:func:`asarrays`, :func:`to_numpy`).

Nothing here imports an optional library at import time: a library is imported only
when an array of it is seen, or when :func:`asarrays` is asked for it.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Mapping

from graphc.errors import BindingError, GraphcError

#: library -> the pip command that installs it with what graphc needs to run it
INSTALL = {
    "torch": 'pip install "graphc[torch]"',
    "jax": 'pip install "graphc[jax]"',
    "dask": 'pip install "graphc[dask]"',
    "cupy": "pip install cupy-cuda12x array-api-compat  (the CuPy wheel matching your CUDA)",
}
#: library -> the module its arrays' namespace is imported from
_MODULES = {"numpy": "numpy", "torch": "torch", "jax": "jax.numpy", "dask": "dask.array", "cupy": "cupy"}
#: what the arrays of each library are called in messages
_KIND = {"numpy": "a numpy array", "torch": "a torch tensor", "jax": "a JAX array", "dask": "a dask array",
         "cupy": "a CuPy array"}


def library_of(value: Any) -> str:
    """The library ``value`` comes from: ``"numpy"``, ``"torch"``, ``"jax"`` (JAX arrays and
    the tracers ``jax.jit`` passes), ``"dask"``, ``"cupy"``, or the top-level module of its type."""
    root = type(value).__module__.split(".", 1)[0]
    return "jax" if root == "jaxlib" else root


def describe(value: Any, plural: bool = False) -> str:
    """``value`` as messages name it: "a torch tensor", "a JAX array", ... (``plural``: "torch tensors")."""
    lib = library_of(value)
    kind = _KIND.get(lib, f"an array of {lib} ({type(value).__name__})")
    return kind.split(" ", 1)[1] + "s" if plural else kind


def install_hint(library: str) -> str:
    return INSTALL.get(library, f"pip install {library} array-api-compat")


def namespace(value: Any):
    """The array namespace for ``value``: numpy itself for numpy arrays and scalars, else
    array-api-compat's namespace for its library (a :class:`BindingError` saying what to
    install when array-api-compat is missing or does not know the library)."""
    import numpy as np

    if isinstance(value, (np.ndarray, np.generic)):
        return np
    lib = library_of(value)
    try:
        import array_api_compat
    except ImportError:
        raise BindingError(
            f"{describe(value)} needs the optional package array-api-compat, which graphc uses for every array "
            f"library but numpy: {install_hint(lib)}"
        ) from None
    try:
        return array_api_compat.array_namespace(value)
    except TypeError as exc:
        raise BindingError(
            f"graphc cannot compute with {describe(value)}: array-api-compat {array_api_compat.__version__} does "
            f"not support it ({exc}); graphc runs numpy, torch, JAX, CuPy and dask arrays"
        ) from None


def device(value: Any):
    """The device ``value`` lives on, as its library names it; None for numpy, and where the
    library does not say (a JAX tracer inside ``jax.jit``: XLA places the values itself)."""
    if library_of(value) == "numpy":
        return None
    try:
        import array_api_compat

        return array_api_compat.device(value)
    except Exception:  # noqa: BLE001 - no device to pin: the library's default is right
        return None


def is_traced(value: Any) -> bool:
    """Whether ``value`` is a JAX tracer (inside ``jax.jit``): it has a shape and a dtype but
    no values, so nothing may read them (label range checks, the numerics guard)."""
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(value, jax.core.Tracer)


def mutable(value: Any) -> bool:
    """Whether ``value`` can be written in place (``a[...] = b``): writeable numpy arrays, torch
    tensors and CuPy arrays; JAX arrays are immutable and a dask array is a lazy expression."""
    lib = library_of(value)
    if lib == "numpy":
        flags = getattr(value, "flags", None)
        return bool(getattr(flags, "writeable", False))
    return lib in ("torch", "cupy")


def astype_hint(value: Any, dtype: str) -> str:
    """How to convert an array of ``value``'s library to ``dtype`` ("float32"), as code."""
    lib = library_of(value)
    return {"torch": f"X.to(torch.{dtype})", "jax": f"X.astype(jnp.{dtype})", "cupy": f"X.astype(cupy.{dtype})"}.get(
        lib, f"X.astype(np.{dtype})")


def dtype_name(dtype: Any) -> str:
    """A dtype's short name in any library: numpy's 'float32', torch's torch.float32 -> 'float32'."""
    return str(dtype).rsplit(".", 1)[-1]


def require(library: str):
    """Import ``library``'s array namespace module, or say which ``pip install`` adds it."""
    if library not in _MODULES:
        raise GraphcError(f"unknown array library {library!r}; graphc runs {sorted(_MODULES)}")
    try:
        module = importlib.import_module(_MODULES[library])
        if library != "numpy":
            import array_api_compat  # noqa: F401 - graphc computes with it for every other library
    except ImportError as exc:
        raise GraphcError(f"{library} arrays need {exc.name or library}, which is not installed: "
                          f"{install_hint(library)}") from None
    return module


def asarrays(arrays: Mapping[str, Any], library: str, device: Any = None) -> dict:
    """The arrays of ``arrays`` (numpy arrays, or anything numpy can read) as arrays of
    ``library`` (``"numpy"``, ``"torch"``, ``"jax"``, ``"dask"``, ``"cupy"``) with the same
    dtypes, on ``device`` where given (``"cuda"`` for torch).  A float64 array for JAX needs
    JAX's 64-bit mode (``jax.config.update("jax_enable_x64", True)``): without it JAX would
    silently store float32, and that is refused here.

    >>> import numpy as np
    >>> from graphc.backends.libraries import asarrays
    >>> asarrays({"w": [1.0, 2.0]}, "numpy")
    {'w': array([1., 2.])}
    """
    import numpy as np

    module = require(library)
    out = {}
    for name, value in arrays.items():
        a = np.asarray(to_numpy(value))
        if library == "numpy":
            out[name] = a
        elif library == "torch":
            out[name] = module.asarray(a, device=device)
        elif library == "jax":
            import jax

            if a.dtype == np.float64 and not jax.config.jax_enable_x64:
                raise GraphcError(f"{name!r} is float64, which JAX stores as float32 unless its 64-bit mode is on: "
                                  "call jax.config.update('jax_enable_x64', True) first, or convert to float32")
            out[name] = jax.device_put(a, device) if device is not None else module.asarray(a)
        elif library == "dask":
            out[name] = module.from_array(a)
        else:  # cupy
            with module.cuda.Device(device if device is not None else module.cuda.Device().id):
                out[name] = module.asarray(a)
    return out


def to_numpy(value: Any):
    """A numpy array with the values of ``value`` (copied from the GPU, computed for dask).

    >>> from graphc.backends import asarrays, to_numpy
    >>> to_numpy(asarrays({"w": [1.0, 2.0]}, "numpy")["w"])
    array([1., 2.])
    """
    lib = library_of(value)
    if lib == "torch":
        return value.detach().cpu().numpy()
    if lib == "dask":
        return value.compute()
    if lib == "cupy":
        return value.get()
    import numpy as np

    return np.asarray(value)
