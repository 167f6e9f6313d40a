"""Optimizers as graph nodes: each update rule is one elementwise sympy expression.

An optimizer turns (param, gradient, state) into new values of the param and of
its state, as ordinary elementwise nodes.  ``TrainStep`` compiles the forward
pass, the backward pass and these updates into one function that writes the new
values into the parameter and state arrays in place (numpy, torch, CuPy) and returns
the loss; ``TrainStep.apply`` is the same step as a pure function, returning the new
values instead (any library; JAX's arrays cannot be written, and ``jax.jit`` compiles it).

Hyperparameters are folded into the generated code as constants (decided once);
only Adam's bias-corrected step size changes per step and is passed in as a scalar.
"""

from __future__ import annotations

import math
import threading
from types import MappingProxyType
from dataclasses import dataclass, field
from typing import ClassVar, Mapping, Sequence

import numpy as np

from graphc.errors import BindingError, GraphError
from graphc.ops.indices import format_shape
from graphc.ops.elementwise import ElementwiseFn, make
from graphc.ops.indices import out_letters
from graphc.ops.symbolic import sympy_module as _sympy
from graphc.ops.node import Node


def _rule(name: str, arity: int, build) -> ElementwiseFn:
    return ElementwiseFn(name, arity, build)


@dataclass
class Optimizer:
    """Base class: ``slots`` names the per-parameter state arrays (initialised to zeros)."""

    slots: ClassVar[tuple] = ()
    scalars: ClassVar[tuple] = ()  # names of per-step scalar inputs, filled by ``scalar_values``

    @property
    def grad_scale(self) -> float:
        """The factor the backward pass is seeded with.  The backward pass is linear in its
        seed, so an update that only ever uses ``lr·g`` gets it for free: the constant folds
        into the first gradient expression (``da = lr·(y - t)/N``), not one pass per parameter."""
        return 1.0

    def update(self, p: Node, g: Node, state: Sequence[Node], scalars: Sequence[Node]) -> list[Node]:
        """New values: [param, *state], as nodes of ``p``'s shape."""
        raise NotImplementedError

    def scalar_values(self, step: int) -> list[float]:
        return []

    def scalar_arrays(self, xp, t) -> list:
        """``scalar_values`` for a step number held in a 0-d float array ``t`` of namespace ``xp``
        (1 at the first step): what :meth:`TrainStep.apply` passes, where the count is part of
        the state and may be traced by ``jax.jit``."""
        if self.scalars:
            raise NotImplementedError(f"{type(self).__name__} has per-step scalars {self.scalars}: define "
                                      "scalar_arrays(xp, t) to use it with TrainStep.apply")
        return []


def _apply(fn: ElementwiseFn, nodes: Sequence[Node], like: Node) -> Node:
    idx = out_letters(like.ndim)
    return make(fn, list(nodes), [idx if n.ndim else "" for n in nodes], idx, like.shape)


@dataclass
class SGD(Optimizer):
    """``p ← p - lr·g`` (the seed's update); ``g`` arrives already scaled by lr (grad_scale).

    >>> import numpy as np, graphc as gc
    >>> from graphc.optim import SGD, TrainStep
    >>> g = gc.Graph("fit"); x = g.input("x", ("n", 2)); w = g.param("w", (2,))
    >>> w0 = np.zeros(2)
    >>> step = TrainStep(gc.mean((x @ w - 1.0) ** 2), {"w": w0}, SGD(lr=0.5))
    >>> float(step(x=np.eye(2))), w0  # the loss before the step; w0 updated in place
    (1.0, array([0.5, 0.5]))
    """

    lr: float = 0.1

    @property
    def grad_scale(self) -> float:
        return self.lr

    def update(self, p, g, state, scalars):
        return [_apply(_rule("sgd", 2, lambda p, g: p - g), [p, g], p)]


@dataclass
class Momentum(Optimizer):
    """``v ← μ·v - lr·g;  p ← p + v``; ``g`` arrives already scaled by lr (grad_scale).

    >>> import numpy as np, graphc as gc
    >>> from graphc.optim import Momentum, TrainStep
    >>> g = gc.Graph("fit"); x = g.input("x", ("n", 2)); w = g.param("w", (2,))
    >>> w0 = np.zeros(2)
    >>> step = TrainStep(gc.mean((x @ w - 1.0) ** 2), {"w": w0}, Momentum(lr=0.5, momentum=0.5))
    >>> for _ in range(2):
    ...     _ = step(x=np.eye(2))
    >>> w0, step.state["w.velocity"]
    (array([1., 1.]), array([0.5, 0.5]))
    """

    lr: float = 0.1
    momentum: float = 0.9
    slots: ClassVar[tuple] = ("velocity",)

    @property
    def grad_scale(self) -> float:
        return self.lr

    def update(self, p, g, state, scalars):
        mu = self.momentum
        (v,) = state
        v_new = _apply(_rule("momentum_v", 2, lambda v, g: mu * v - g), [v, g], p)
        p_new = _apply(_rule("momentum_p", 2, lambda p, v: p + v), [p, v_new], p)
        return [p_new, v_new]


@dataclass
class Adam(Optimizer):
    """Adam (Kingma & Ba): moments m, v; step size ``lr·√(1-β2ᵗ)/(1-β1ᵗ)`` passed per step.

    >>> import numpy as np, graphc as gc
    >>> from graphc.optim import Adam, TrainStep
    >>> g = gc.Graph("fit"); x = g.input("x", ("n", 2)); w = g.param("w", (2,))
    >>> w0 = np.zeros(2)
    >>> step = TrainStep(gc.mean((x @ w - 1.0) ** 2), {"w": w0}, Adam(lr=0.01))
    >>> _ = step(x=np.eye(2))
    >>> np.round(w0, 6)  # the first step moves each entry by about lr
    array([0.01, 0.01])
    """

    lr: float = 0.001
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    slots: ClassVar[tuple] = ("m", "v")
    scalars: ClassVar[tuple] = ("lr_t",)

    def update(self, p, g, state, scalars):
        b1, b2, eps = self.beta1, self.beta2, self.eps
        c1, c2 = round(1 - b1, 15), round(1 - b2, 15)  # 0.1, not 0.09999999999999998, in the source
        sp = _sympy()
        m, v = state
        (lr_t,) = scalars
        m_new = _apply(_rule("adam_m", 2, lambda m, g: b1 * m + c1 * g), [m, g], p)
        v_new = _apply(_rule("adam_v", 2, lambda v, g: b2 * v + c2 * g ** 2), [v, g], p)
        p_new = _apply(_rule("adam_p", 4, lambda p, m, v, lr: p - lr * m / (sp.sqrt(v) + eps)),
                       [p, m_new, v_new, lr_t], p)
        return [p_new, m_new, v_new]

    def scalar_values(self, step: int) -> list[float]:
        t = step + 1
        return [self.lr * math.sqrt(1 - self.beta2 ** t) / (1 - self.beta1 ** t)]

    def scalar_arrays(self, xp, t) -> list:
        return [self.lr * xp.sqrt(1 - self.beta2 ** t) / (1 - self.beta1 ** t)]


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "adam": Adam}


def make_optimizer(name: str, **hyper) -> Optimizer:
    """The optimizer named ``name`` (``"sgd"``, ``"momentum"`` or ``"adam"``) with its hyperparameters.

    >>> from graphc.optim import make_optimizer
    >>> make_optimizer("momentum", lr=0.05)
    Momentum(lr=0.05, momentum=0.9)
    """
    try:
        return OPTIMIZERS[name](**hyper)
    except KeyError:
        raise GraphError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}") from None


@dataclass
class TrainStep:
    """One compiled step: forward, backward and the optimizer's update.

    ``params`` maps param names to arrays of their declared shapes (float32 or float64, one
    dtype, one library; checked here): numpy arrays or torch tensors (CPU or CUDA), which
    ``step(x=..., t=...)`` updates in place, returning the loss; or JAX (or dask) arrays,
    which cannot be written, for :meth:`apply`.  A param of the graph left out of ``params``
    is frozen: it is read like an input and given at every call.  ``state`` holds the
    optimizer's arrays (zeros unless given), updated in place too.  The step adds no leaf to
    the user's graph: the optimizer's inputs are private to it.

    ``params, state, loss = step.apply(params, state, batch)`` is the same step as a pure
    function, for every library: nothing is written, the new params and state are returned
    (``state = step.init_state()`` to start; it counts the steps).  With JAX arrays it can be
    compiled whole: ``jax.jit(step.apply)``.

    >>> import numpy as np, graphc as gc
    >>> from graphc.optim import SGD, TrainStep
    >>> g = gc.Graph("fit"); x = g.input("x", ("n", 3)); w = g.param("w", (3,))
    >>> step = TrainStep(((x @ w) ** 2).mean(), {"w": np.ones(3)}, SGD(lr=0.1))
    >>> float(step(x=np.eye(3)))  # the loss before the update: mean((x·w)²) with w = 1
    1.0
    >>> params, state, loss = step.apply({"w": np.ones(3)}, step.init_state(), {"x": np.eye(3)})
    >>> float(loss), params["w"], int(state["step"])  # the same step, written nowhere
    (1.0, array([0.93333333, 0.93333333, 0.93333333]), 1)
    """

    loss: Node
    params: dict
    optimizer: Optimizer
    state: dict = field(default_factory=dict)
    step_count: int = 0
    lowering: str = "auto"  # see graphc.compile
    check_numerics: bool = False  # stop at the first NaN/Inf, naming the node (see graphc.compile)

    def __post_init__(self):
        from graphc.compiler import compile, grad

        graph = self.loss.graph
        if not isinstance(self.params, Mapping):
            raise BindingError(f"TrainStep: params must map param names to numpy arrays, got "
                               f"{type(self.params).__name__} (torch tensors and JAX arrays work too)")
        nodes = [graph.leaves.get(name) for name in self.params]
        bad = [name for name, n in zip(self.params, nodes) if n is None or n.op.kind_name != "param"]
        if bad:
            raise GraphError(f"TrainStep: {bad} are not params of graph {graph.name!r}; params: {[p.name for p in graph.params]}")
        self._library, self._xp, self._device = self._check_params(nodes)
        opt = self.optimizer
        scale = opt.grad_scale
        grads = grad(self.loss, nodes, seed=None if scale == 1.0 else graph.constant(scale))
        scalar_nodes = [self._leaf(graph, f"__{s}__", ()) for s in opt.scalars]
        updates = {}
        self._slot_keys: list[str] = []
        for node, g in zip(nodes, grads):
            value = self.params[node.name]
            slots = []
            for slot in opt.slots:
                key = f"{node.name}.{slot}"
                leaf = self._leaf(graph, f"__{key}__", node.shape)
                self.state.setdefault(key, np.zeros_like(value) if self._library == "numpy" else self._xp.zeros_like(value))
                slots.append(leaf)
                self._slot_keys.append(key)
            new = opt.update(node, g, slots, scalar_nodes)
            for leaf, value_node in zip([node, *slots], new):
                updates[leaf] = value_node
        self._updates = updates  # what apply returns: the new params, then the new state, in this order
        self._functional = None
        self._scalar_names = [n.name for n in scalar_nodes]
        self._state_feed = {f"__{k}__": v for k, v in self.state.items()}  # the same arrays, by leaf name
        self._template: list | None = None
        self._local = threading.local()  # per thread: input shapes and dtypes -> checked specialisation
        self._dtype = next(iter(self.params.values())).dtype if self.params else np.dtype(np.float64)
        self._numpy = self._library == "numpy"
        # The step holds these arrays (and updates them in place): they cannot be swapped out.
        self.params = MappingProxyType(dict(self.params))
        self.state = MappingProxyType(self.state)
        self.fn = compile(self.loss, name=f"{graph.name}_train_step", updates=updates, lowering=self.lowering,
                          check_numerics=self.check_numerics)
        self._scalar_slots = [self.fn.args.index(n) for n in self._scalar_names if n in self.fn.args]

    @staticmethod
    def _leaf(graph, name: str, shape):
        """The optimizer's input leaf ``name``, private to the library: the user's graph keeps
        the leaves it declared (and ``save_graph`` writes only those); reused by later steps."""
        return graph.private_input(name, shape)

    def _check_params(self, nodes) -> tuple:
        """Each param an array of float32 or float64 of one library, all of one dtype, of its
        declared shape (a symbolic dim one size across them); a numpy array writeable, since the
        step updates it in place.  Returns the params' ``(library, namespace, device)``."""
        from graphc.backends import libraries
        from graphc.compiler.compile import check_float_dtype

        sizes: dict = {}
        first = None
        for node in nodes:
            name, value = node.name, self.params[node.name]
            if not hasattr(value, "shape") or not hasattr(value, "dtype") or isinstance(value, np.generic):
                raise BindingError(f"TrainStep: param {name!r} must be a numpy array (or a torch tensor, a JAX "
                                   f"array), got {type(value).__name__}")
            if first is not None and libraries.library_of(value) != libraries.library_of(self.params[first]):
                raise BindingError(f"TrainStep: param {name!r} is {libraries.describe(value)} but {first!r} is "
                                   f"{libraries.describe(self.params[first])}; all params of one step must come "
                                   "from one library")
            xp = np if isinstance(value, np.ndarray) else libraries.namespace(value)
            floating = value.dtype.kind == "f" if xp is np else xp.isdtype(value.dtype, "real floating")
            if not floating:
                raise BindingError(f"TrainStep: param {name!r} must hold floats, got dtype {value.dtype}")
            check_float_dtype(value.dtype, name, like=value)
            if xp is np and not value.flags.writeable:
                raise BindingError(f"TrainStep: param {name!r} is read-only; the step updates it in place")
            if getattr(value, "requires_grad", False):  # torch would refuse the in-place update
                raise BindingError(f"TrainStep: param {name!r} is a torch tensor that requires grad; graphc derives "
                                   f"the gradients itself and updates the tensor in place: pass {name}.detach()")
            if first is not None and value.dtype != self.params[first].dtype:
                raise BindingError(f"TrainStep: param {name!r} has dtype {value.dtype} but {first!r} has "
                                   f"{self.params[first].dtype}; all params of one step share a dtype")
            if first is not None and libraries.device(value) != libraries.device(self.params[first]):
                raise BindingError(f"TrainStep: param {name!r} is on {libraries.device(value)} but {first!r} is on "
                                   f"{libraries.device(self.params[first])}; all params of one step share a device")
            first = first or name
            declared = node.shape
            fits = value.ndim == len(declared) and all(
                got == want if isinstance(want, int) else sizes.setdefault(want, got) == got
                for want, got in zip(declared, value.shape))
            if not fits:
                raise BindingError(f"TrainStep: param {name!r} has shape {tuple(value.shape)}, but it is declared "
                                   f"{format_shape(declared)}" + (f" (dims so far: {sizes})" if sizes else ""))
        if first is None:
            return "numpy", np, None
        value = self.params[first]
        return libraries.library_of(value), libraries.namespace(value), libraries.device(value)

    @property
    def source(self) -> str:
        return self.fn.source

    def _repr_html_(self) -> str:  # Jupyter: the signature, the params it updates, the highlighted source
        from graphc.compiler.explain.display import train_step_html

        return train_step_html(self)

    def _repr_markdown_(self) -> str:
        from graphc.compiler.explain.display import train_step_markdown

        return train_step_markdown(self)

    def __call__(self, inputs: Mapping | None = None, **kw) -> float:
        """One step on a batch given by name (``step(x=xb, t=tb)``); returns the loss.

        The parameter and state arrays are read from ``params``/``state`` and updated in
        place; put new values into them with ``a[...] = value`` (entries cannot be replaced).
        """
        if inputs:
            kw = {**inputs, **kw}
        run = None
        if self._template is not None and kw.keys() == self._input_names:
            # The arrays of the last call, with this call's inputs put in their slots.
            args = self._template.copy()
            key = []
            for name, k in self._input_slots:
                args[k] = value = kw[name]
                key.append((value.shape, value.dtype) if type(value) is np.ndarray else None)
            # The step holds the params and state (their shapes and dtypes cannot change), so
            # the inputs' shapes and dtypes pick the specialisation checked on an earlier call.
            runs = getattr(self._local, "runs", None)
            run = runs.get(tuple(key)) if runs is not None else None
        else:
            args = self._bind(kw)
        if self._scalar_slots:
            for k, value in zip(self._scalar_slots, self.optimizer.scalar_values(self.step_count)):
                args[k] = np.asarray(value, dtype=self._dtype) if self._numpy else self._scalar(value)
        if run is not None:
            loss = run(*args)[0]
        else:  # checks everything, as a plain call does; then remembered for these inputs
            loss = self.fn.call_arrays(args, trusted_updates=self._template is not None)
            if self._template is None:
                self._template = args
            if all(type(kw[name]) is np.ndarray for name, _ in self._input_slots):
                runs = getattr(self._local, "runs", None)
                if runs is None:
                    runs = self._local.runs = {}
                runs[tuple((kw[name].shape, kw[name].dtype) for name, _ in self._input_slots)] = \
                    self.fn.specialised(args)[0]
        self.step_count += 1
        return loss

    def _scalar(self, value: float):
        """A per-step scalar (Adam's step size) as a 0-d array of the params' library and device."""
        if self._device is None:
            return self._xp.asarray(value, dtype=self._dtype)
        return self._xp.asarray(value, dtype=self._dtype, device=self._device)

    def _bind(self, kw: dict) -> list:
        """The slow path: every name checked, as the compiled function's own binding does."""
        from graphc.backends import libraries

        if self.params and not libraries.mutable(next(iter(self.params.values()))):
            value = next(iter(self.params.values()))
            raise BindingError(f"TrainStep: the params are {libraries.describe(value, plural=True)}, which cannot be "
                               "updated in place; call params, state, loss = step.apply(params, state, batch) instead (with "
                               "state = step.init_state() at the start), which returns the new values")
        feed = {**self.params, **self._state_feed}
        feed.update(kw)
        if len(feed) != len(self.params) + len(self._state_feed) + len(kw):
            taken = sorted(set(kw) & (set(self.params) | set(self._state_feed)))
            raise BindingError(f"TrainStep: {taken} are held by the step (params or optimizer state); do not pass them")
        for name in self._scalar_names:
            feed[name] = np.zeros((), dtype=self._dtype) if self._numpy else self._scalar(0.0)
        args = self.fn._bind((feed,), {})
        self._input_names = set(kw)
        self._input_slots = [(name, self.fn.args.index(name)) for name in kw if name in self.fn.args]
        return args

    # -- the pure step ----------------------------------------------------------------------------
    def init_state(self) -> dict:
        """A fresh optimizer state for :meth:`apply`: the optimizer's arrays at zero, like each
        param (``"W1.m"``, ...), and ``"step"``, the number of steps taken (0)."""
        state = {}
        for key in self._slot_keys:
            value = self.params[key.rsplit(".", 1)[0]]
            state[key] = np.zeros_like(value) if self._numpy else self._xp.zeros_like(value)
        state["step"] = np.asarray(0) if self._numpy else (
            self._xp.asarray(0) if self._device is None else self._xp.asarray(0, device=self._device))
        return state

    def apply(self, params: Mapping, state: Mapping, batch: Mapping | None = None, **inputs) -> tuple:
        """One step as a pure function: ``params, state, loss = step.apply(params, state, batch)``.

        ``params`` maps the step's param names to arrays, ``state`` is what :meth:`init_state`
        or the previous ``apply`` returned, ``batch`` the inputs by name (or as keywords).
        Returns new dicts of params and state and the loss before the update; no array given
        is written.  Any array library works; with JAX arrays the whole step can be compiled,
        ``jax.jit(step.apply)``.
        """
        from graphc.backends import libraries
        from graphc.compiler import compile

        feed = {**(batch or {}), **inputs}
        names = list(self.params)
        if set(params) != set(names):
            raise BindingError(f"TrainStep.apply: params must hold exactly {names}; missing "
                               f"{[n for n in names if n not in params]}, unknown {[n for n in params if n not in names]}")
        expected = [*self._slot_keys, "step"]
        if set(state) != set(expected):
            raise BindingError(f"TrainStep.apply: state must hold exactly {expected} (start from step.init_state()); "
                               f"missing {[k for k in expected if k not in state]}, unknown "
                               f"{[k for k in state if k not in expected]}")
        taken = sorted(set(feed) & set(names))
        if taken:
            raise BindingError(f"TrainStep.apply: {taken} are params; give them in params, not in the batch")
        if self._functional is None:
            self._functional = compile([self.loss, *self._updates.values()], name=f"{self.loss.graph.name}_apply",
                                       lowering=self.lowering, check_numerics=self.check_numerics)
        feed.update(params)
        feed.update({f"__{k}__": state[k] for k in self._slot_keys})
        if self._scalar_names:
            first = params[names[0]]
            xp = np if isinstance(first, np.ndarray) else libraries.namespace(first)
            t = xp.astype(state["step"], first.dtype) + 1
            for name, value in zip(self._scalar_names, self.optimizer.scalar_arrays(xp, t)):
                feed[name] = value
        results = self._functional(feed)
        new = dict(zip([leaf.name for leaf in self._updates], results[1:]))
        new_params = {name: new[name] for name in names}
        new_state = {key: new[f"__{key}__"] for key in self._slot_keys}
        new_state["step"] = state["step"] + 1
        return new_params, new_state, results[0]
