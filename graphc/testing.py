"""``check_grads``: compare graphc's symbolic gradients with central finite differences.

The same checker the test suite runs on every op, for users' own graphs:
``check_grads(loss, [W, b], values)`` compiles the output and its gradients,
evaluates both in float64, and raises ``AssertionError`` naming the variable and
the worst entry when they disagree.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from graphc.errors import GradError


def numerical_grad(f, values: dict, name: str, eps: float) -> np.ndarray:
    """Central differences of the scalar function ``f(values)`` with respect to ``values[name]``."""
    x = values[name]
    out = np.zeros_like(x)
    flat, gflat = x.reshape(-1), out.reshape(-1)
    for k in range(flat.size):
        orig = flat[k]
        flat[k] = orig + eps
        plus = float(f(values))
        flat[k] = orig - eps
        minus = float(f(values))
        flat[k] = orig
        gflat[k] = (plus - minus) / (2 * eps)
    return out


def check_grads(output, wrt, values: Mapping, *, eps: float = 1e-6, rtol: float = 1e-6, atol: float = 1e-8,
                seed=None, lowering: str = "auto") -> dict:
    """Assert that ``grad(output, wrt)`` matches finite differences at ``values`` (float64).

    A non-scalar ``output`` is reduced with a fixed random projection first, so every
    entry of its Jacobian is exercised.  Returns ``{name: (symbolic, numeric)}``.
    Error measure: ``|sym - num| <= atol + rtol * max(max(|num|), 1)``, per variable.
    ``lowering`` picks the backend both functions are compiled for (see :func:`graphc.compile`).

    >>> import numpy as np, graphc as gc
    >>> g = gc.Graph("check"); x = g.input("x", (3,))
    >>> report = gc.check_grads(gc.sum(gc.tanh(x)), [x], {"x": np.array([0.1, -0.5, 2.0])})
    >>> symbolic, numeric = report["x"]
    >>> bool(np.allclose(symbolic, 1 - np.tanh([0.1, -0.5, 2.0]) ** 2))
    True
    """
    from graphc.compiler import compile, grad
    from graphc.ops.contraction import sum as total
    from graphc.ops.node import Node

    nodes: Sequence[Node] = [wrt] if isinstance(wrt, Node) else list(wrt)
    rng = np.random.default_rng(0 if seed is None else seed)
    vals = {k: (np.array(v, dtype=np.float64) if np.asarray(v).dtype.kind == "f" else np.asarray(v))
            for k, v in values.items()}
    scalar = output
    if output.shape != ():
        graph = output.graph
        # One projection input per output shape, reused by later checks on the same graph.
        # (Not ``leaves.get(...) or ...``: a node has no truth value.)
        prefix = "__check_grads_projection"
        proj = next((leaf for key, leaf in graph.private.items()
                     if key.startswith(prefix) and leaf.shape == output.shape), None)
        if proj is None:  # a private input: the user's graph keeps the leaves it declared
            k = next(k for k in range(len(graph.private) + len(graph.leaves) + 1)
                     if f"{prefix}{k}__" not in graph.leaves and f"{prefix}{k}__" not in graph.private)
            proj = graph.private_input(f"{prefix}{k}__", output.shape)
        name = proj.name
        scalar = total(output * proj)
        sizes = {}
        for leaf in graph.leaves.values():
            if leaf.name in vals:
                sizes.update({d: s for d, s in zip(leaf.shape, vals[leaf.name].shape) if isinstance(d, str)})
        vals[name] = rng.standard_normal(tuple(sizes.get(d, d) for d in output.shape))
    grads = grad(scalar, nodes)
    fn = compile([scalar, *grads], name="check_grads", lowering=lowering)
    value_fn = compile(scalar, name="check_grads_value", lowering=lowering)
    feed = {k: v for k, v in vals.items() if k in output.graph.leaves or k in output.graph.private}
    symbolic = fn(feed)[1:]
    report = {}
    for node, sym in zip(nodes, symbolic):
        if node.name not in feed:
            raise GradError(f"check_grads: {node.name!r} must be an input or param with a value in `values`")
        num = numerical_grad(lambda v: value_fn(v), feed, node.name, eps)
        sym = np.asarray(sym, dtype=np.float64)
        err = np.abs(sym - num)
        tol = atol + rtol * max(float(np.max(np.abs(num), initial=0.0)), 1.0)
        if err.size and float(err.max()) > tol:
            k = np.unravel_index(int(err.argmax()), err.shape)
            raise AssertionError(
                f"check_grads: d{output.name}/d{node.name} disagrees with finite differences at {k}: "
                f"symbolic {sym[k]!r}, numeric {num[k]!r} (max error {float(err.max()):.3g} > tolerance {tol:.3g})"
            )
        report[node.name] = (sym, num)
    return report


# -- numerical stability: textbook activations written naively, against mpmath ------------------
def naive_activations() -> dict:
    """Textbook activations as a user writes them, ``name -> (z -> sympy expression)``.

    graphc rewrites each into stable forms before emitting code (:mod:`graphc.ops.stable`);
    ``tests/test_stability.py`` and ``benchmarks/bench_stability.py`` check them.
    """
    import sympy as sp

    c = sp.sqrt(2 / sp.pi)
    return {
        "softplus": lambda z: sp.log(1 + sp.exp(z)),
        "softplus(-z)": lambda z: sp.log(1 + sp.exp(-z)),
        "sigmoid": lambda z: 1 / (1 + sp.exp(-z)),
        "sigmoid(exp ratio)": lambda z: sp.exp(z) / (1 + sp.exp(z)),
        "log-sigmoid": lambda z: sp.log(1 / (1 + sp.exp(-z))),
        "tanh(exp ratio)": lambda z: (sp.exp(z) - sp.exp(-z)) / (sp.exp(z) + sp.exp(-z)),
        "swish": lambda z: z / (1 + sp.exp(-z)),
        "mish": lambda z: z * sp.tanh(sp.log(1 + sp.exp(z))),
        "gelu(tanh)": lambda z: z / 2 * (1 + sp.tanh(c * (z + sp.Rational(44715, 1000000) * z ** 3))),
        "gelu(exact)": lambda z: z / 2 * (1 + sp.erf(z / sp.sqrt(2))),
        "elu": lambda z: sp.Piecewise((z, z > 0), (sp.exp(z) - 1, True)),
        "log-cosh": lambda z: sp.log(sp.cosh(z)),
    }


def stability_points(dtype) -> np.ndarray:
    """Inputs from -1e4 to 1e4, small ones, and the dtype's extremes (largest, smallest normal)."""
    fi = np.finfo(dtype)
    mags = [float(fi.tiny), 1e-30, 1e-7, 1e-3, 0.1, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 17.0, 20.0, 30.0, 40.0,
            50.0, 88.0, 89.0, 100.0, 300.0, 700.0, 710.0, 1e3, 1e4, 1e30, float(fi.max)]
    pts = sorted({0.0, *mags, *(-m for m in mags)})
    return np.array(pts, dtype=dtype)


def mp_reference(build, points, dps: int = 1100):
    """(values, derivatives) of the naive formula at ``points`` as mpmath numbers (exact to far past float64).

    1100 digits keep ``1 + exp(-2000)`` apart from 1: whatever the formula loses beyond that
    lies below float64's smallest normal.
    """
    import mpmath
    import sympy as sp

    z = sp.Symbol("z", real=True)
    expr = build(z)
    f, df = (sp.lambdify(z, e, "mpmath") for e in (expr, sp.diff(expr, z)))
    vals, ders = [], []
    with mpmath.workdps(dps):
        for p in points:
            x = mpmath.mpf(float(p))
            vals.append(+f(x))
            ders.append(+df(x))
    return vals, ders


def relative_errors(got, ref, dtype) -> np.ndarray:
    """Per point, |got - ref|/|ref|; where the true value underflows (|ref| below the dtype's
    smallest normal ``tiny``), 0 if |got - ref| <= tiny, else |got - ref|/tiny.

    A NaN or infinite ``got`` counts as ``inf`` (unless ``ref`` itself overflows the dtype the same way).
    """
    import mpmath

    tiny, big = mpmath.mpf(float(np.finfo(dtype).tiny)), float(np.finfo(dtype).max)
    out = []
    for g, r in zip(np.asarray(got, dtype=np.float64).ravel(), ref):
        if not np.isfinite(g):
            out.append(0.0 if abs(r) > big and g == float(mpmath.sign(r)) * np.inf else np.inf)
            continue
        diff = abs(mpmath.mpf(float(g)) - r)
        if abs(r) < tiny:
            out.append(0.0 if diff <= tiny else float(diff / tiny))
        else:
            out.append(float(diff / abs(r)))
    return np.array(out)
