"""Numerical stability of naive activations: graphc vs JAX autodiff of the same formula vs torch's built-in.

Each activation is written as a user would (``log(1 + exp(z))``, ``z/(1 + exp(-z))``, ...; see
``graphc.testing.naive_activations``).  For each dtype and input range the table gives the largest
error of the value and of the gradient against mpmath at 1100 digits: relative error, or, where
the true value underflows, 0 if within the dtype's smallest normal (``graphc.testing.relative_errors``).
``inf`` means a NaN or an infinity where the true value is finite.

* graphc: the formula as a ``gc.elementwise`` op, compiled (graphc rewrites it into stable forms);
* jax: ``jax.vmap(jax.grad(f))`` of the same formula lambdified to ``jax.numpy``;
* torch: the built-in (F.softplus, torch.sigmoid, F.logsigmoid, torch.tanh, F.silu, F.mish,
  F.gelu(approximate='tanh'), F.gelu, F.elu) and autograd; '-' where torch has none.

jax and torch are optional: their columns are skipped when they are not importable.

    python benchmarks/bench_stability.py [--no-peers] [--summary]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import graphc as gc  # noqa: E402
from graphc.testing import mp_reference, naive_activations, relative_errors, stability_points  # noqa: E402

# "extremes": |z| of 1e30 and the dtype's largest, and 1e-30 and the smallest normal (and 0).
RANGES = {"|z|<=30": lambda p: np.abs(p) <= 30, "|z|<=1e4": lambda p: np.abs(p) <= 1e4,
          "extremes": lambda p: (np.abs(p) > 1e4) | (np.abs(p) < 1e-20)}


def _graphc(name, build):
    fn = gc.elementwise("act", build)
    g = gc.Graph("stab"); x = g.input("x", ("n",))
    y = fn(x); (dx,) = gc.grad(gc.sum(y), [x])
    f = gc.compile([y, dx])
    return lambda pts: f(x=pts)


def _jax(name, build):
    import jax
    import jax.numpy as jnp
    import sympy as sp

    jax.config.update("jax_enable_x64", True)
    z = sp.Symbol("z", real=True)
    from jax.scipy.special import erf

    f = sp.lambdify(z, build(z), [{"erf": erf}, "jax"])
    df = jax.vmap(jax.grad(f))

    def run(pts):
        a = jnp.asarray(pts)
        return np.asarray(f(a)), np.asarray(df(a))
    return run


def _torch(name, build):
    import torch
    import torch.nn.functional as F

    fns = {"softplus": F.softplus, "softplus(-z)": lambda t: F.softplus(-t), "sigmoid": torch.sigmoid,
           "sigmoid(exp ratio)": torch.sigmoid, "log-sigmoid": F.logsigmoid, "tanh(exp ratio)": torch.tanh,
           "swish": F.silu, "mish": F.mish, "gelu(tanh)": lambda t: F.gelu(t, approximate="tanh"), "gelu(exact)": F.gelu,
           "elu": F.elu}
    if name not in fns:
        return None

    def run(pts):
        t = torch.tensor(pts, requires_grad=True)
        y = fns[name](t)
        y.sum().backward()
        return y.detach().numpy(), t.grad.numpy()
    return run


def _available(module):
    try:
        __import__(module)
        return True
    except Exception:  # noqa: BLE001 - any import failure just drops the column
        return False


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-peers", action="store_true", help="graphc only (no jax/torch columns)")
    ap.add_argument("--summary", action="store_true",
                    help="one row per activation: the worst of value and gradient for |z| <= 1e4 per dtype, "
                         "'!' where some point (extremes included) gives NaN/inf")
    args = ap.parse_args(argv)
    impls = {"graphc": _graphc}
    if not args.no_peers:
        for mod, make in (("jax", _jax), ("torch", _torch)):
            if _available(mod):
                impls[mod] = make
            else:
                print(f"({mod} not importable: column skipped)")
    if args.summary:
        head = f"{'activation':20s} " + " ".join(f"{k + ' f32/f64':>19s}" for k in impls)
    else:
        head = f"{'activation':20s} {'dtype':7s} {'range':9s} " + " ".join(f"{k + ' val/grad':>19s}" for k in impls)
    print("max error vs mpmath (relative; underflow: 0 if within the smallest normal; inf = NaN/inf)")
    print(head)
    print("-" * len(head))
    for name, build in naive_activations().items():
        runners = {k: make(name, build) for k, make in impls.items()}
        worst = {}
        for dtype in (np.float32, np.float64):
            pts = stability_points(dtype)
            ref_v, ref_d = mp_reference(build, pts)
            errs = {}
            for k, run in runners.items():
                if run is None:
                    continue
                with np.errstate(all="ignore"):
                    v, d = run(pts.copy())
                errs[k] = (relative_errors(v, ref_v, dtype), relative_errors(d, ref_d, dtype))
            inner = np.abs(pts.astype(np.float64)) <= 1e4
            for k, (ev, ed) in errs.items():  # summary: worst for |z| <= 1e4, "!" if an extreme is NaN/inf
                worst[k, dtype] = (max(float(ev[inner].max()), float(ed[inner].max())),
                                   "!" if np.isinf(np.concatenate([ev, ed])).any() else " ")
            for rname, sel in RANGES.items():
                if args.summary:
                    break
                mask = sel(pts.astype(np.float64))
                cells = []
                for k in impls:
                    if k not in errs:
                        cells.append(f"{'-':>19s}")
                        continue
                    ev, ed = (float(e[mask].max()) for e in errs[k])
                    cells.append(f"{ev:>9.1e}/{ed:<9.1e}")
                print(f"{name:20s} {np.dtype(dtype).name:7s} {rname:9s} " + " ".join(cells))
        if args.summary:
            cells = [f"{worst[k, np.float32][0]:>9.1e}{worst[k, np.float32][1]}/{worst[k, np.float64][0]:.1e}"
                     f"{worst[k, np.float64][1]}" if (k, np.float32) in worst else f"{'-':>19s}" for k in impls]
            print(f"{name:20s} " + " ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
