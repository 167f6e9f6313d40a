"""The backend battery: every op family, with its gradients, on every installed array library,
compared with the numpy lowering in float64.

Test ids are ``test_op_family[<backend>-<family>]``, a matrix backend × op family:

* backends: ``numpy`` (the array-API lowering run on numpy arrays), ``torch`` (CPU),
  ``torch-cuda``, ``jax`` (eager), ``jax-jit`` (the compiled function called inside
  ``jax.jit``, so XLA compiles the whole call), ``dask`` (arrays in several chunks), ``cupy``;
* families: what ``FAMILIES`` builds, from contractions with traces, diagonals and repeated
  operands to the two-layer net of ``graphc.models``.

Each family's float outputs are projected on random cotangents into one scalar, whose gradient
with respect to every float input is compiled with the outputs; every result must be an array
of the backend's library (on its device), float64 where the reference is, and equal the numpy
lowering's to 1e-12.  A backend whose library (or GPU) is absent is skipped, saying so; that is
the only skip.
"""

from __future__ import annotations

import functools
import sys

import numpy as np
import pytest
import sympy

import graphc as gc
from graphc.backends import asarrays
from graphc.backends.libraries import library_of, to_numpy
from graphc.models import two_layer_net

RTOL = ATOL = 1e-12


# -- backends -----------------------------------------------------------------------------------
def _torch(device):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    pytest.importorskip("array_api_compat", reason="array-api-compat is not installed")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device for torch on this machine")
    return lambda a: torch.asarray(a, device=device)


def _jax():
    jnp = pytest.importorskip("jax.numpy", reason="jax is not installed")
    pytest.importorskip("array_api_compat", reason="array-api-compat is not installed")
    return jnp.asarray


def _dask():
    da = pytest.importorskip("dask.array", reason="dask[array] is not installed")
    pytest.importorskip("array_api_compat", reason="array-api-compat is not installed")
    # several chunks along the first axis, so reductions and contractions cross chunk borders
    return lambda a: da.from_array(a, chunks=tuple(max(1, -(-d // 2)) for d in a.shape) or ())


def _cupy():
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
    pytest.importorskip("array_api_compat", reason="array-api-compat is not installed")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no device")
    except Exception:  # noqa: BLE001 - CuPy without a driver raises its own errors
        pytest.skip("no CUDA device for CuPy on this machine")
    return cupy.asarray


#: backend -> (library its results must come from, converter maker, call inside jax.jit)
BACKENDS = {
    "numpy": ("numpy", lambda: np.asarray, False),
    "torch": ("torch", lambda: _torch("cpu"), False),
    "torch-cuda": ("torch", lambda: _torch("cuda"), False),
    "jax": ("jax", _jax, False),
    "jax-jit": ("jax", _jax, True),
    "dask": ("dask", _dask, False),
    "cupy": ("cupy", _cupy, False),
}


def run_on(backend: str, fn, feed: dict):
    """``fn`` called on ``feed`` converted to ``backend``'s arrays; results as numpy arrays,
    after checking that each is an array of that library."""
    library, make, jit = BACKENDS[backend]
    convert = make()
    arrays = {k: convert(v) for k, v in feed.items()}
    if jit:
        import jax

        results = jax.jit(lambda a: fn(a))(arrays)
    else:
        results = fn(arrays)
    results = results if isinstance(results, tuple) else (results,)
    for r in results:
        assert library_of(r) == library, f"a result is {type(r).__name__}, not an array of {library}"
        if backend == "torch-cuda":
            assert r.device.type == "cuda"
    return [to_numpy(r) for r in results]


# -- op families --------------------------------------------------------------------------------
softplus = gc.elementwise("softplus_b", lambda u: sympy.log(1 + sympy.exp(u)))
log_sigmoid = gc.elementwise("log_sigmoid_b", lambda u: sympy.log(1 / (1 + sympy.exp(-u))))
logaddexp = gc.elementwise("logaddexp_b", lambda u, v: sympy.log(sympy.exp(u) + sympy.exp(v)))
clamp = gc.elementwise("clamp_b", lambda u: sympy.Min(sympy.Max(u, -0.5), 0.5))
max3 = gc.elementwise("max3_b", lambda u, v: sympy.Max(u, v, 0))


def _einsum_matmul(g):
    x, W, v = g.input("x", ("n", 4)), g.param("W", (4, 3)), g.input("v", (3,))
    return [x @ W, gc.einsum("nk,kh,h->n", x, W, v), gc.matmul(W, v)]


def _einsum_traces(g):
    A, B = g.input("A", (4, 4)), g.input("B", (4, 4, 3))
    return [gc.trace(A), gc.einsum("ii->", A * A), gc.einsum("iij->j", B), gc.einsum("ij,ji->", A, A)]


def _einsum_diagonals(g):
    A, B, C = g.input("A", (4, 4)), g.input("B", (4, 4, 3)), g.input("C", (3, 2))
    return [gc.diagonal(A), gc.einsum("iij,jk->ik", B, C), gc.einsum("ii,ij->ij", A, A)]


def _einsum_repeated(g):
    x, W = g.input("x", ("n", 4)), g.param("W", (4, 4))
    return [gc.einsum("ni,ni->n", x, x), gc.einsum("ni,ij,nj->n", x, W, x), gc.einsum("ij,jk,kl->il", W, W, W),
            gc.einsum("ab,ab,c->c", W, W, x.sum(0))]


def _einsum_outer_transpose(g):
    a, b, T = g.input("a", (3,)), g.input("b", ("n",)), g.input("T", (2, 3, 4))
    return [gc.outer(a, b), gc.transpose(T, (2, 0, 1)), gc.einsum("i,j->ji", a, b), gc.einsum("ijk->kji", T),
            gc.broadcast_to(a, (2, 3))]


def _broadcasting(g):
    x, b, s = g.input("x", ("n", 3)), g.param("b", (3,)), g.input("s", ())
    mu = x.mean(1, keepdims=True)
    return [x + b, x * s, (x - mu) / s, gc.broadcast_to(x.sum(1), ("n", 3), axes=(0,)) * b, b - x]


def _arithmetic(g):
    x, y = g.input("x", ("n", 3)), g.input("y", ("n", 3))  # y > 0 (see FEEDS)
    return [gc.add(x, y), gc.sub(x, y), gc.mul(x, y), gc.div(x, y), gc.neg(x), y ** x, x ** 3, y ** 0.5,
            2.0 ** x, 1.0 / y, gc.power(y, 1.5)]


def _unary(g):
    x, y = g.input("x", ("n", 3)), g.input("y", ("n", 3))
    return [gc.exp(x), gc.log(y), gc.sqrt(y), gc.tanh(x), gc.sigmoid(x), gc.relu(x), gc.step(x) * x]


def _stable(g):
    x, y = g.input("x", ("n", 3)), g.input("y", ("n", 3))  # x with entries of ±60 (see FEEDS)
    return [softplus(x), log_sigmoid(x), logaddexp(x, y), gc.sigmoid(x) * x, gc.log(gc.sigmoid(x))]


def _erf_gelu(g):
    x = g.input("x", ("n", 3))
    return [gc.erf(x), gc.gelu(x), gc.gelu(x, approximate="tanh")]


def _maximum_minimum(g):
    x, y = g.input("x", ("n", 3)), g.input("y", ("n", 3))  # ties between x and y (see FEEDS)
    return [gc.maximum(x, y), gc.minimum(x, y), gc.maximum(x, 0.3 * x), gc.maximum(x, 0.0), clamp(x),
            max3(x, y), gc.maximum(x, y) * x]


def _comparisons_where(g):
    x, y = g.input("x", ("n", 3)), g.input("y", ("n", 3))
    return [gc.greater(x, y), gc.less_equal(x, 0.5), x >= y, x < y, gc.where(x > y, x * y, y - x),
            gc.where(x <= 0.0, gc.exp(x), x + 1.0)]


def _reductions(g):
    x, T = g.input("x", ("n", 3)), g.input("T", (2, 3, 4))
    return [x.sum(), x.mean(), x.sum(0), x.mean(1), x.sum(1, keepdims=True), x.mean(0, keepdims=True),
            T.sum((0, 2)), T.mean((1, 2), keepdims=True), T.mean(), gc.mean(x * x)]


def _full_mean(g):  # the user's report: a full mean's gradient is 1/|n|, a number made from a dim
    x = g.input("x", ("n", 3))
    return [x.mean(), *gc.grad(x.mean(), [x]), *gc.grad(x.mean(0).sum(), [x]), *gc.grad(x.mean() * 2.0, [x])]


def _softmax(g):
    a = g.input("a", ("n", 4))
    return [gc.softmax(a), gc.log_softmax(a), gc.softmax(a, axis=0), gc.log_softmax(a, axis=0)]


def _cross_entropy(g):
    a, t = g.input("a", ("n", 4)), g.input("t", ("n", 4))
    labels = g.input("labels", ("n",), kind="int")
    return [gc.softmax_cross_entropy(a, t), gc.softmax_cross_entropy(a, labels),
            gc.softmax_cross_entropy(a, t, axis=0)]


def _one_hot_argmax(g):
    a, labels = g.input("a", ("n", 4)), g.input("labels", ("n",), kind="int")
    return [gc.one_hot(labels, 4) * a, gc.argmax(a), gc.one_hot(labels, 4)]


def _conv_pool(g):
    x, K, b = g.input("x", ("n", 2, 7, 6)), g.param("K", (3, 2, 3, 2)), g.param("b", (3,))
    y = gc.conv2d(x, K, b, stride=(2, 1), padding=1, dilation=(1, 2))
    return [y, gc.max_pool2d(gc.relu(y), 2, stride=1, padding=1), gc.avg_pool2d(y, (2, 1), padding=(1, 0)),
            gc.conv2d(x, K).flatten()]


def _index_sum_pad(g):  # the notation itself, a scatter written by hand, padding with -inf, a reshape
    x, w = g.input("x", ("n", 8)), g.input("w", (3,))
    s = gc.index_sum("s[n,i] = x[n,2*i+p] * w[p] * 0.5", x=x, w=w)
    scatter = gc.index_sum("y[n,2*i+p] = s[n,i] * w[p]", s=s, w=w, shape=("n", 8))
    return [s, scatter, gc.pad(x, [(0, 0), (1, 2)], value=-1.5), x.reshape(("n", 2, 4)),
            gc.max_pool2d(gc.pad(x.reshape(("n", 1, 2, 4)), [(0, 0), (0, 0), (1, 1), (0, 0)], value=float("-inf")),
                          (2, 2))]


def _two_layer_net(g):
    return None  # built by _net_outputs: graphc.models makes its own graph


def _two_layer_net_labels(g):
    return None


def _hvp(g):
    x, v, W = g.input("x", ("n", 3)), g.input("v", (3, 2)), g.param("W", (3, 2))
    f = (gc.tanh(x @ W) ** 2).sum()
    return list(gc.hvp(f, [W], [v])) + [f]


FAMILIES = {
    "einsum_matmul": _einsum_matmul, "einsum_traces": _einsum_traces, "einsum_diagonals": _einsum_diagonals,
    "einsum_repeated": _einsum_repeated, "einsum_outer_transpose": _einsum_outer_transpose,
    "broadcasting": _broadcasting, "arithmetic": _arithmetic, "unary": _unary, "stable": _stable,
    "erf_gelu": _erf_gelu, "maximum_minimum": _maximum_minimum, "comparisons_where": _comparisons_where,
    "reductions": _reductions, "full_mean": _full_mean, "softmax": _softmax, "cross_entropy": _cross_entropy,
    "one_hot_argmax": _one_hot_argmax, "hvp": _hvp, "conv_pool": _conv_pool, "index_sum_pad": _index_sum_pad,
    "two_layer_net": _two_layer_net,
    "two_layer_net_labels": _two_layer_net_labels,
}


def _value(rng, leaf, family):
    shape = tuple({"n": 5}.get(d, d) for d in leaf.shape)
    if leaf.kind == "int":
        return rng.integers(0, 4, shape)
    if leaf.name == "y" and family in ("arithmetic", "unary"):
        return rng.uniform(0.5, 2.0, shape)
    if leaf.name == "x" and family == "stable":
        return rng.choice([-60.0, -1.0, 0.5, 60.0], shape)  # exp(±60) overflows nothing in stable forms
    if leaf.name == "y" and family == "maximum_minimum":
        return np.zeros(shape)  # filled in _feed: equal to x in places
    if leaf.name == "s":
        return np.asarray(1.5)
    return rng.standard_normal(shape)


def _feed(leaves, family, rng):
    feed = {leaf.name: _value(rng, leaf, family) for leaf in leaves}
    if family == "maximum_minimum":  # ties: the gradient is split evenly there, on every backend
        feed["y"] = np.where(rng.random(feed["x"].shape) < 0.4, feed["x"], rng.standard_normal(feed["x"].shape))
    return feed


def _graph_and_outputs(family):
    if family.startswith("two_layer_net"):
        net = two_layer_net(input_size=12, hidden_size=5, output_size=4, integer_labels=family.endswith("labels"))
        return net.graph, [net.logits, net.loss]
    g = gc.Graph(family)
    return g, FAMILIES[family](g)


@functools.lru_cache(maxsize=None)
def compiled_family(family):
    """The family's function (outputs, then the gradient of their random projection with respect
    to every float leaf) and a feed of numpy float64 values."""
    g, outs = _graph_and_outputs(family)
    rng = np.random.default_rng(len(family))
    floats = [o for o in outs if o.kind == "float"]
    cotangents = [g.input(f"cot{k}", o.shape) for k, o in enumerate(floats)]
    wrt = [leaf for leaf in list(g.inputs) + list(g.params)
           if leaf.kind == "float" and not leaf.name.startswith("cot")]
    # one gradient per output (its projection on a random cotangent): summing the projections
    # first would have the simplifier fuse every output's derivative into one expression
    grads = [d for o, c in zip(floats, cotangents) for d in gc.grad(gc.sum(o * c) if o.shape else o * c, wrt)]
    fn = gc.compile([*outs, *grads], lowering="array_api")
    feed = _feed(list(g.inputs) + list(g.params), family, rng)
    return fn, {k: v for k, v in feed.items() if k in fn.args}, gc.compile([*outs, *grads])


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_op_family(backend, family, x64):
    fn, feed, reference = compiled_family(family)
    want = reference(feed)
    got = run_on(backend, fn, feed)
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want)):
        b = np.asarray(b)
        assert a.shape == b.shape, f"result {k}: shape {a.shape}, expected {b.shape}"
        assert a.dtype == b.dtype, f"result {k}: dtype {a.dtype}, expected {b.dtype}"
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=f"result {k} of {family} on {backend}")


# -- what a call with arrays of other libraries refuses ---------------------------------------------
def _affine():
    g = gc.Graph("affine")
    x, W = g.input("x", ("n", 3)), g.param("W", (3, 2))
    loss = gc.mean((x @ W) ** 2)
    return gc.compile([loss, *gc.grad(loss, [W])])


def test_arrays_of_two_libraries_in_one_call_are_named():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    jnp = pytest.importorskip("jax.numpy", reason="jax is not installed")
    fn = _affine()
    x, W = np.ones((4, 3)), np.ones((3, 2))
    with pytest.raises(gc.BindingError, match=r"arrays of 2 libraries in one call: 'x' is a numpy array; 'W' is a "
                                              r"torch tensor; .*graphc\.backends\.asarrays\(\{'x': \.\.\.\}, 'torch'\)"):
        fn(x=x, W=torch.from_numpy(W))
    with pytest.raises(gc.BindingError, match=r"'x' is a JAX array; 'W' is a torch tensor"):
        fn(x=jnp.asarray(x, dtype=jnp.float32), W=torch.ones(3, 2))
    fn(x=torch.from_numpy(x), W=torch.from_numpy(W))  # the same function, once the arrays agree
    with pytest.raises(gc.BindingError, match=r"'x' is a torch tensor; 'W' is a numpy array"):
        fn(x=torch.from_numpy(x), W=W)  # a specialisation seen before is not reused for a mixed call


def test_numbers_given_with_torch_tensors_become_tensors():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    pytest.importorskip("array_api_compat", reason="array-api-compat is not installed")
    g = gc.Graph("scaled")
    x, s = g.input("x", (3,)), g.input("s", ())
    out = gc.compile(x * s)(x=torch.ones(3, dtype=torch.float64), s=2.0)
    assert isinstance(out, torch.Tensor) and out.tolist() == [2.0, 2.0, 2.0]


def test_dtype_mismatches_name_the_libraries_conversion():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    pytest.importorskip("array_api_compat", reason="array-api-compat is not installed")
    fn = _affine()
    with pytest.raises(gc.BindingError, match=r"'W' has dtype torch\.float32 but 'x' has torch\.float64; .*"
                                              r"X\.to\(torch\.float64\)"):
        fn(x=torch.ones(4, 3, dtype=torch.float64), W=torch.ones(3, 2, dtype=torch.float32))
    with pytest.raises(gc.BindingError, match=r"'x': dtype bfloat16 is not supported.*X\.to\(torch\.float32\)"):
        fn(x=torch.ones(4, 3, dtype=torch.bfloat16), W=torch.ones(3, 2, dtype=torch.bfloat16))
    with pytest.raises(gc.BindingError, match=r"'x': expected a floating-point array, got dtype torch\.int64; .*"
                                              r"X\.to\(torch\.float32\)"):
        fn(x=torch.ones(4, 3, dtype=torch.int64), W=torch.ones(3, 2))


def test_arrays_on_two_devices_are_named():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    pytest.importorskip("array_api_compat", reason="array-api-compat is not installed")
    fn = _affine()  # torch's "meta" device stands for a GPU here: no data, a device of its own
    with pytest.raises(gc.BindingError, match=r"'x' is on cpu but 'W' is on meta; all arrays of one call must be "
                                              r"on one device"):
        fn(x=torch.ones(4, 3, dtype=torch.float64), W=torch.ones(3, 2, dtype=torch.float64, device="meta"))


def test_a_missing_array_api_compat_says_what_to_install(monkeypatch):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    monkeypatch.setitem(sys.modules, "array_api_compat", None)  # what an import finds when it is not installed
    with pytest.raises(gc.BindingError, match=r'a torch tensor needs the optional package array-api-compat.*'
                                              r'pip install "graphc\[torch\]"'):
        _affine()(x=torch.ones(4, 3, dtype=torch.float64), W=torch.ones(3, 2, dtype=torch.float64))


@pytest.mark.parametrize("library, hint", [("torch", r'pip install "graphc\[torch\]"'),
                                           ("jax", r'pip install "graphc\[jax\]"'),
                                           ("dask", r'pip install "graphc\[dask\]"'),
                                           ("cupy", r"pip install cupy-cuda12x array-api-compat")])
def test_a_library_that_is_not_installed_says_what_to_install(monkeypatch, library, hint):
    for name in {"torch": ["torch"], "jax": ["jax", "jax.numpy"], "dask": ["dask", "dask.array"],
                 "cupy": ["cupy"]}[library]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(gc.GraphcError, match=rf"{library} arrays need .*, which is not installed: {hint}"):
        asarrays({"w": np.ones(2)}, library)


def test_in_place_updates_of_jax_arrays_and_the_guard_inside_jit_are_refused(x64):
    jax = pytest.importorskip("jax", reason="jax is not installed")
    pytest.importorskip("array_api_compat", reason="array-api-compat is not installed")
    g = gc.Graph("decay")
    w = g.param("w", (3,))
    fn = gc.compile(gc.sum(w * w), updates={w: w * 0.5})
    with pytest.raises(gc.BindingError, match=r"'w' is updated in place, but it is a JAX array, which cannot be "
                                              r"written in place; .*TrainStep\.apply"):
        fn(w=jax.numpy.ones(3))
    guarded = gc.compile(gc.log(w), check_numerics=True)
    with pytest.raises(gc.GraphcError, match=r"check_numerics=True reads every value, which jax\.jit does not allow"):
        jax.jit(lambda a: guarded(w=a))(jax.numpy.ones(3))
    with pytest.raises(gc.NumericsError, match=r"NaN produced by"):  # outside jit the guard works
        guarded(w=jax.numpy.asarray([1.0, -1.0, 2.0]))


def test_numbers_with_tensors_are_converted_at_every_call():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    pytest.importorskip("array_api_compat", reason="array-api-compat is not installed")
    g = gc.Graph("scaled_again")
    x, s = g.input("x", (3,)), g.input("s", ())
    fn = gc.compile(x * s)
    for value in (np.float64(2.0), np.float64(3.0)):  # the second call must not reuse the first's arrays
        out = fn(x=torch.ones(3, dtype=torch.float64), s=value)
        assert isinstance(out, torch.Tensor) and out.tolist() == [float(value)] * 3
