"""``compile``: from output nodes to a checked, specialised Python callable.

Compiling simplifies the graph, emits source once and execs it.  Calling binds
the arrays by name, checks every shape and dtype against the declaration (a
clear :class:`BindingError`, never a numpy broadcast), binds the symbolic dims,
and runs the function specialised for those dims and that dtype; specialising
builds the opt_einsum expressions (contraction paths) once and caches them, so
a call does no path search.

For numpy arrays the specialised function owns planned intermediate buffers.
Specialisations are kept per thread, so one compiled function may be called
from several threads at once and each thread gets correct results (calls that
update parameters in place still race on those parameters, as any in-place
update would).
"""

from __future__ import annotations

import builtins
import linecache
import threading
from typing import Any, Mapping, Sequence

from graphc.backends import array_api, libraries, numpy as numpy_backend
from graphc.compiler.codegen.program import Program
from graphc.compiler.explain.notation import safe
from graphc.compiler.passes import simplify
from graphc.errors import BindingError, GraphError
from graphc.ops.indices import format_shape
from graphc.ops.node import Node

_COUNTER = iter(range(1, 1 << 62))


#: The float dtypes graphc computes in.  Narrower floats are refused: constant factors that the
#: compiler moves past a product (``(x/255)·W = (x·W)/255``) overflow float16's range, and
#: optimizer constants such as Adam's eps = 1e-8 round to zero in it.
SUPPORTED_FLOATS = ("float32", "float64")


def check_float_dtype(dtype, name: str, like=None) -> None:
    """Refuse a float dtype other than float32 and float64 (any array library's), naming ``name``
    (the hint converts in the library of the array ``like`` when given)."""
    label = libraries.dtype_name(dtype)  # numpy's 'float16', torch's 'torch.bfloat16'
    if label not in SUPPORTED_FLOATS:
        raise BindingError(
            f"{name!r}: dtype {label} is not supported; graphc computes in float32 or float64 only "
            f"(in float16 or bfloat16, constant factors moved past a product can overflow and optimizer "
            f"constants such as Adam's eps round to zero); convert it, e.g. "
            f"{libraries.astype_hint(like, 'float32') if like is not None else 'X.astype(np.float32)'}"
        )


def _library_key(arrays: list) -> tuple | None:
    """What a specialisation for arrays of another library than numpy depends on: each array's
    type, shape, dtype and device.  None (checked at every call) when the arrays are not all
    of one library: the call is refused, or its numbers are converted, by ``_check``."""
    first = libraries.library_of(arrays[0])
    if any(libraries.library_of(a) != first for a in arrays):
        return None
    return tuple((type(a), tuple(a.shape), a.dtype, libraries.device(a)) for a in arrays)


class CompiledFunction:
    """A compiled graph function.  Call it with arrays by name: ``fn(x=X, W=W)`` or ``fn({"x": X})``.

    ``source`` is the generated Python; ``args`` the names it reads; ``explain()``
    prints what it computes.  It returns a tuple, or a single array when compiled
    from a single node.

    >>> import numpy as np, graphc as gc
    >>> g = gc.Graph("double"); x = g.input("x", ("n",))
    >>> fn = gc.compile(gc.mul(x, 2.0, name="y"))
    >>> fn(x=np.array([1.0, 2.0])), fn.args
    (array([2., 4.]), ['x'])
    >>> print(fn.explain())
    forward:
      y[n] = 2·x[n]
    """

    def __init__(self, outputs: Sequence[Node], single: bool, name: str, fuse: bool = True,
                 updates: Mapping | None = None, check_numerics: bool = False, lowering: str = "auto"):
        self.outputs = list(outputs)
        self._single = single
        graph = outputs[0].graph
        self.graph = graph
        targets = list((updates or {}).keys())
        # With the numerics guard every node keeps its own check: nothing is fused away.
        simplified = simplify(self.outputs + [updates[t] for t in targets], fuse=fuse and not check_numerics)
        self._simplified = (simplified[: len(self.outputs)], list(zip(targets, simplified[len(self.outputs):])))
        self._name = name
        # numpy arrays run the buffer-planned lowering; other array libraries the array-API one.
        self._check_numerics = check_numerics
        self._generic: Program | None = None
        self._generic_lock = threading.Lock()
        self._builds: dict[str, Any] = {}
        if lowering == "array_api":
            self.program = self._generic_program()
        elif lowering == "auto":
            self.program = numpy_backend.lower(*self._simplified[:1], name, self._simplified[1], check_numerics, fuse)
            self._builds["numpy"] = self._exec(self.program)
        else:
            raise GraphError(f"compile: lowering must be 'auto' or 'array_api', got {lowering!r}")
        self._updated = {leaf.name for leaf, _ in self.program.updates}
        self._updated_positions = [k for k, leaf in enumerate(self.program.args) if leaf.name in self._updated]
        self.source = self.program.source
        self._local = threading.local()  # per-thread specialisations: their buffers are not shared
        self.args = [leaf.name for leaf in self.program.args]

    @staticmethod
    def _exec(program: Program):
        filename = f"<graphc:{safe(program.name).replace(chr(0), '')}:{next(_COUNTER)}>"
        linecache.cache[filename] = (len(program.source), None, program.source.splitlines(True), filename)
        namespace: dict[str, Any] = {}
        exec(builtins.compile(program.source, filename, "exec"), namespace)  # noqa: S102 - our own generated source
        return namespace["build"]

    @property
    def generic_source(self) -> str:
        """The array-API lowering (used for non-numpy arrays): no buffers, no ``out=``."""
        return self._generic_program().source

    def _generic_program(self) -> Program:
        with self._generic_lock:  # two threads' first non-numpy calls must not both build it
            if self._generic is None:
                program = array_api.lower(self._simplified[0], self._name, self._simplified[1], self._check_numerics)
                self._builds["generic"] = self._exec(program)
                self._generic = program  # published last, once its build exists
        return self._generic

    def __repr__(self) -> str:
        return f"<CompiledFunction {self.program.name}({', '.join(map(repr, self.args))}) -> {len(self.outputs)} output(s)>"

    def _repr_html_(self) -> str:  # Jupyter: the signature and the highlighted source
        from graphc.compiler.explain.display import function_html

        return function_html(self)

    def _repr_markdown_(self) -> str:
        from graphc.compiler.explain.display import function_markdown

        return function_markdown(self)

    # -- binding ---------------------------------------------------------------------
    def _bind(self, args: tuple, kwargs: dict) -> list:
        """The arrays in argument order, from keywords or one mapping (graph leaves not read are allowed)."""
        if args:
            if len(args) != 1 or not isinstance(args[0], Mapping):
                raise BindingError(f"{self.program.name}: pass arrays by name, fn(x=...) or fn({{'x': ...}})")
            feed = {**args[0], **kwargs} if kwargs else args[0]
        else:
            feed = kwargs
        try:
            arrays = [feed[a] for a in self.args]
        except KeyError:
            missing = [a for a in self.args if a not in feed]
            raise BindingError(f"{self.program.name}: missing input(s) {missing}; this function reads {self.args}") from None
        if len(feed) != len(arrays):
            known = {**self.graph.leaves, **self.graph.private}
            extra = [k for k in feed if k not in known]
            if extra:
                raise BindingError(
                    f"{self.program.name}: unknown input(s) {extra}; the graph {self.graph.name!r} declares {list(known)}"
                )
        return arrays

    def _library(self, arrays: list) -> tuple:
        """``(library, xp, device)`` of this call: the arrays must all come from one library
        (and one device); Python numbers, lists and numpy scalars are made arrays of it."""
        import numpy as np

        first = None
        groups: dict[str, list] = {}  # library -> names of its arrays, in argument order
        for leaf, value in zip(self.program.args, arrays):
            if hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, np.generic):
                lib = libraries.library_of(value)
                groups.setdefault(lib, []).append((leaf.name, value))
                if first is None:
                    first = (lib, leaf.name, value)
        if len(groups) > 1:
            raise BindingError(self._mixed(groups))
        if first is None or first[0] == "numpy":
            return "numpy", np, None
        lib, name, value = first
        xp, dev = libraries.namespace(value), libraries.device(value)
        if dev is not None:
            for leaf, other in zip(self.program.args, arrays):
                if hasattr(other, "shape") and not isinstance(other, np.generic):
                    where = libraries.device(other)
                    if where is not None and where != dev:
                        raise BindingError(f"{self.program.name}: {name!r} is on {dev} but {leaf.name!r} is on "
                                           f"{where}; all arrays of one call must be on one device")
        return lib, xp, dev

    def _mixed(self, groups: dict) -> str:
        """The message for a call with arrays of several libraries: which are which, and a conversion."""
        parts = []
        for named in groups.values():
            # a train step's own inputs (the optimizer's state) are not the user's to name
            shown = [n for n, _ in named if n not in self.graph.private] or [n for n, _ in named]
            names = ", ".join(repr(n) for n in shown)
            parts.append(f"{names} {'are' if len(named) > 1 else 'is'} "
                         f"{libraries.describe(named[0][1], plural=len(named) > 1)}")
        # numpy arrays are usually the ones to convert (data read from files), else the fewest
        libs = sorted(groups, key=lambda lib: (lib != "numpy", len(groups[lib])))
        source, target = libs[0], libs[-1]
        names = [n for n, _ in groups[source] if n not in self.graph.private] or [n for n, _ in groups[source]]
        feed = "{" + ", ".join(f"{n!r}: ..." for n in names[:3]) + (", ...}" if len(names) > 3 else "}")
        return (f"{self.program.name}: arrays of {len(groups)} libraries in one call: {'; '.join(parts)}; all arrays "
                f"of one call must come from one library: convert them, e.g. with "
                f"graphc.backends.asarrays({feed}, {target!r})")

    def _check(self, arrays: list) -> tuple:
        import numpy as np

        lib, xp, dev = self._library(arrays)
        bound: dict[str, tuple] = {}
        float_dtype, float_from = None, None
        checked = []
        for leaf, value in zip(self.program.args, arrays):
            if not hasattr(value, "shape") or not hasattr(value, "dtype") or (lib != "numpy" and isinstance(value, np.generic)):
                try:
                    value = np.asarray(value)
                except Exception as exc:  # noqa: BLE001 - any conversion failure is the user's input
                    raise BindingError(f"{leaf.name!r}: cannot make an array of {type(value).__name__}: {exc}") from None
                if lib != "numpy":  # a number or list given with torch/JAX/... arrays: made one of theirs
                    value = xp.asarray(value, device=dev) if dev is not None else xp.asarray(value)
            shape = tuple(value.shape)
            if len(shape) != leaf.ndim:
                raise BindingError(
                    f"{leaf.name!r}: expected an array of shape {format_shape(leaf.shape)} "
                    f"(rank {leaf.ndim}), got shape {format_shape(shape)}"
                )
            for axis, (want, got) in enumerate(zip(leaf.shape, shape)):
                if isinstance(want, int):
                    if got != want:
                        raise BindingError(
                            f"{leaf.name!r}: axis {axis} must be {want} (declared shape {format_shape(leaf.shape)}), "
                            f"got shape {format_shape(shape)}"
                        )
                elif want in bound and bound[want][0] != got:
                    first_size, first_name = bound[want]
                    raise BindingError(
                        f"dim {want!r} is {first_size} in {first_name!r} but {got} in {leaf.name!r} "
                        f"(shape {format_shape(shape)}, declared {format_shape(leaf.shape)})"
                    )
                else:
                    bound.setdefault(want, (got, leaf.name))
            kind = getattr(value.dtype, "kind", None)
            if not getattr(value.dtype, "isnative", True):  # BLAS and out= take native byte order only
                raise BindingError(
                    f"{leaf.name!r}: dtype {value.dtype.str} is stored in non-native byte order; "
                    f"convert it (e.g. X.astype(X.dtype.newbyteorder('=')))"
                )
            if kind is None:  # a non-numpy array library: ask its namespace
                kind = "f" if xp.isdtype(value.dtype, "real floating") else "i" if xp.isdtype(value.dtype, "integral") else "?"
            if leaf.kind == "float":
                if kind != "f":
                    raise BindingError(
                        f"{leaf.name!r}: expected a floating-point array, got dtype {value.dtype}; "
                        f"convert it explicitly (e.g. {libraries.astype_hint(value, 'float32')})"
                    )
                check_float_dtype(value.dtype, leaf.name, like=value)
                if float_dtype is None:
                    float_dtype, float_from = value.dtype, leaf.name
                elif value.dtype != float_dtype:
                    want = libraries.dtype_name(float_dtype)
                    raise BindingError(
                        f"{leaf.name!r} has dtype {value.dtype} but {float_from!r} has {float_dtype}; "
                        f"all float inputs of one call must share a dtype (convert, e.g. "
                        f"{libraries.astype_hint(value, want)})"
                    )
            if leaf.kind == "int" and kind not in ("i", "u"):
                raise BindingError(f"{leaf.name!r}: expected an integer array of labels, got dtype {value.dtype}")
            if leaf.name in self._updated and not libraries.mutable(value):
                raise BindingError(self._immutable(leaf.name, value))
            checked.append(value)
        if float_dtype is None:
            float_dtype = np.dtype(np.float64) if lib == "numpy" else xp.float64
        dims = tuple(bound[d][0] for d in self.program.dims)
        return checked, dims, float_dtype, xp, dev

    @staticmethod
    def _immutable(name: str, value) -> str:
        if libraries.library_of(value) in ("numpy", "torch", "cupy"):
            return f"{name!r} is updated in place, so it must be a writeable numpy array (or torch tensor)"
        return (f"{name!r} is updated in place, but it is {libraries.describe(value)}, which cannot be written "
                "in place; for a train step use TrainStep.apply(params, state, batch), which returns the new "
                "params and state")

    def _specialise(self, dims: tuple, dtype, xp, device=None):
        import opt_einsum

        from graphc.backends.numpy.pairwise import NpContraction

        program = self.program if xp.__name__ == "numpy" else self._generic_program()
        build = self._builds["generic" if program is self._generic else "numpy"]
        size = dict(zip(program.dims, dims))
        concrete = lambda shape: tuple(size[d] if isinstance(d, str) else d for d in shape)  # noqa: E731
        if program is self._generic:  # any array library: opt_einsum's own executor
            kernels = [opt_einsum.contract_expression(k.spec, *map(concrete, k.shapes), optimize="auto")
                       for k in program.kernels]
            return build(xp, array_api.runtime, kernels, dtype, dims, program.labels, device)
        # numpy: opt_einsum's path, each pairwise product into a buffer made here
        kernels = [NpContraction(k.spec, list(map(concrete, k.shapes)), dtype) for k in program.kernels]
        return build(xp, numpy_backend.runtime, kernels, dtype, dims, program.labels)

    def __call__(self, *args, **kwargs):
        return self.call_arrays(self._bind(args, kwargs))

    def call_arrays(self, arrays: list, trusted_updates: bool = False):
        """Call with the arrays in ``self.args`` order (what ``__call__`` does after binding names).

        ``trusted_updates`` skips the per-call writeable check of in-place targets, for a
        caller that owns them (TrainStep).  Shapes and dtypes are always checked.
        """
        run, arrays = self.specialised(arrays)
        if not trusted_updates:
            for k in self._updated_positions:
                if not libraries.mutable(arrays[k]):
                    raise BindingError(self._immutable(self.args[k], arrays[k]))
        results = run(*arrays)
        return results[0] if self._single else results

    def specialised(self, arrays: list) -> tuple:
        """``(run, arrays)``: the function specialised for these arrays' shapes and dtypes
        (checked the first time they are seen in this thread), which takes the arrays in
        ``self.args`` order and returns a tuple of results, and the arrays to give it
        (array-likes converted).  For callers that hold some arrays fixed (TrainStep)."""
        numpy = not arrays or type(arrays[0]).__module__ == "numpy"
        try:
            # the type too: a JAX or dask array has a numpy dtype, and must not reuse numpy's run
            key = tuple((type(a), a.shape, a.dtype) for a in arrays) if numpy else _library_key(arrays)
        except AttributeError:
            key = None
        cache = getattr(self._local, "runs", None)
        if cache is None:
            cache = self._local.runs = {}
        run = cache.get(key) if key is not None else None
        if run is None:
            arrays, dims, dtype, xp, device = self._check(arrays)
            run = self._specialise(dims, dtype, xp, device)
            if key is not None:
                cache[key] = run
        return run, arrays

    def explain(self, compiled: bool = False, **kw) -> str:
        """What this function computes, as :func:`graphc.explain` prints it; with ``compiled=True``,
        the program as compiled for numpy arrays instead: after simplification and the backend's
        fusions (gemm nodes, the softmax kept with its loss), updates included, forward and backward."""
        from graphc.compiler.explain import explain

        if not compiled:
            return explain(self.outputs, **kw)
        kw.setdefault("forward", True)
        return explain(list(self.program.outputs), updates=self.program.updates, **kw)


def compile(outputs, name: str | None = None, fuse: bool = True, updates: Mapping | None = None,  # noqa: A001
            check_numerics: bool = False, lowering: str = "auto") -> CompiledFunction:
    """Compile output node(s) into a callable.  ``outputs``: a node or a sequence of nodes.

    ``updates`` maps input/param leaves to nodes of the same shape: after computing the
    outputs, the function writes each node's value into that leaf's array in place
    (how optimizers update parameters inside the compiled step).

    ``check_numerics=True`` checks every computed value and raises
    :class:`~graphc.NumericsError` at the first NaN or Inf, naming the node and its
    Einstein expression (nodes are not fused then, so each is checked on its own).
    Off by default: the generated code then has no checks at all.

    ``lowering``: ``"auto"`` runs numpy arrays through the buffer-planned numpy lowering
    and other arrays (torch, jax, cupy, ...) through the array-API lowering;
    ``"array_api"`` uses the array-API lowering for every array.

    >>> import numpy as np, graphc as gc
    >>> g = gc.Graph("fit"); x = g.input("x", ("n", 2)); w = g.param("w", (2,))
    >>> loss = ((x @ w) ** 2).sum()
    >>> fn = gc.compile([loss, *gc.grad(loss, [w])])
    >>> value, dw = fn(x=np.eye(2), w=np.array([1.0, 2.0]))
    >>> float(value), dw
    (5.0, array([2., 4.]))
    """
    single = isinstance(outputs, Node)
    outs = [outputs] if single else list(outputs)
    if not outs:
        raise GraphError("compile: no outputs given")
    for o in outs:
        if not isinstance(o, Node):
            raise GraphError(f"compile: outputs must be graph nodes, got {o!r}")
        if o.graph is not outs[0].graph:
            raise GraphError(f"compile: outputs {outs[0].name!r} and {o.name!r} belong to different graphs")
    for leaf, node in (updates or {}).items():
        if not isinstance(leaf, Node) or not leaf.is_leaf or leaf.op.kind_name not in ("input", "param"):
            raise GraphError(f"compile: update target {leaf!r} must be an input or param leaf")
        if not isinstance(node, Node) or node.graph is not leaf.graph or node.shape != leaf.shape:
            raise GraphError(f"compile: the update of {leaf.name!r} must be a node of its graph with shape "
                             f"{format_shape(leaf.shape)}, got {node!r}")
    return CompiledFunction(outs, single, name or outs[0].graph.name, fuse=fuse, updates=updates,
                            check_numerics=check_numerics, lowering=lowering)
