"""Shared pieces of the benchmarks: environment record, data, timing helpers and the
reference training steps graphc is compared with.

Every step implementation has the same small interface so the benchmarks can run
them interleaved on identical batches:

    impl = Impl(params, lr=0.1, batch=100)   # params: dict of numpy arrays (copied)
    b = impl.prepare(x, t)                    # the batch in the impl's own array type (not timed)
    loss = impl.step(b)                       # forward + backward + SGD update, params in place
    impl.sync()                               # wait for queued work (JAX dispatches asynchronously)
    impl.params()                             # current params as numpy arrays (for checks)

torch and jax are optional: ``available_peers()`` says which are importable, and
nothing here imports them at module level.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:  # run from a checkout without installing graphc
    sys.path.insert(0, str(REPO))

THREADS = 2
PARAM_NAMES = ("W1", "b1", "W2", "b2")


# --------------------------------------------------------------------------- environment
def _blas_info() -> dict:
    try:
        import threadpoolctl
    except ImportError:
        threadpoolctl = None
    if threadpoolctl is not None:
        return {"source": "threadpoolctl", "pools": threadpoolctl.threadpool_info()}
    try:
        return {"source": "np.show_config", "config": np.show_config(mode="dicts")}
    except TypeError:  # numpy < 1.25 has no mode=
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            np.show_config()
        return {"source": "np.show_config", "text": buf.getvalue()}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def environment(peers: dict | None = None) -> dict:
    """What the numbers depend on: versions, BLAS, thread counts, OPENBLAS_* variables, graphc's commit."""
    import graphc

    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "graphc": getattr(graphc, "__version__", "?"),
        "graphc_commit": _git("rev-parse", "HEAD"),
        # The emitter is being rewritten concurrently: say whether graphc/ had uncommitted changes.
        "graphc_dirty_files": (_git("status", "--porcelain", "--", "graphc") or "").splitlines(),
        "env_vars": {k: v for k, v in sorted(os.environ.items())
                     if k.startswith(("OPENBLAS_", "OMP_", "MKL_", "XLA_", "JAX_", "GRAPHC_"))},
        "blas": _blas_info(),
        "threads": THREADS,
        # Other processes on the machine disturb every number here: the load when this was recorded.
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    for name, mod in (peers or {}).items():
        env[name] = getattr(mod, "__version__", "?")
    if peers and "torch" in peers:
        env["torch_threads"] = peers["torch"].get_num_threads()
    return env


_LIMITS = []


def set_threads(n: int) -> None:
    """Use ``n`` threads everywhere: numpy's BLAS (through threadpoolctl, when installed), torch,
    and XLA (``n == 1`` turns off its multi-threaded Eigen; call this before jax is imported).
    The default, 2, is every library's own default on the 2-core machines here."""
    global THREADS
    THREADS = n
    try:
        import threadpoolctl

        _LIMITS.append(threadpoolctl.threadpool_limits(n))
    except ImportError:
        if n != 2:
            print(f"note: threadpoolctl is not installed; numpy's BLAS keeps its default threads, not {n}")
    if n == 1 and "jax" not in sys.modules:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def available_peers(want=("torch", "jax")) -> dict:
    """Import the optional peers that are installed; set their threads. Missing ones are skipped."""
    found = {}
    if "torch" in want:
        try:
            import torch

            torch.set_num_threads(THREADS)
            found["torch"] = torch
        except ImportError:
            pass
    if "jax" in want:
        try:
            import jax

            jax.config.update("jax_enable_x64", True)  # float64 runs; float32 arrays stay float32
            jax.config.update("jax_platforms", "cpu")
            found["jax"] = jax
        except ImportError:
            pass
    return found


def write_json(path, record: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=_json_default))
    return path


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return repr(o)


# --------------------------------------------------------------------------- data
def mnist_or_synthetic(dtype=np.float32, log=print):
    """MNIST from $GRAPHC_DATA (never downloads) or, without it, random data of MNIST's shapes."""
    from graphc.datasets import load_mnist

    if os.environ.get("GRAPHC_DATA"):
        try:
            (x, t), (xt, tt) = load_mnist(normalize=True, flatten=True, one_hot_label=True, dtype=dtype,
                                          download=False)
            return x, t, "mnist"
        except Exception as exc:  # noqa: BLE001 - fall back, and say so
            log(f"note: MNIST not loaded from GRAPHC_DATA ({exc}); using synthetic data")
    else:
        log("note: GRAPHC_DATA is not set; using synthetic data of MNIST's shapes")
    rng = np.random.default_rng(12345)
    x = rng.random((60000, 784), dtype=np.float64).astype(dtype)
    t = np.eye(10, dtype=dtype)[rng.integers(0, 10, 60000)]
    return x, t, "synthetic"


def init_params(seed: int, dtype, hidden: int = 50) -> dict:
    from graphc.models import init_two_layer_params

    return init_two_layer_params(np.random.default_rng(seed), 784, hidden, 10, 0.01, dtype)


# --------------------------------------------------------------------------- timing
def busy_warning(threshold: float = 0.5) -> str | None:
    """A warning when other processes keep the CPUs busy (1-minute load average above ``threshold``)."""
    if not hasattr(os, "getloadavg"):
        return None
    load = os.getloadavg()[0]
    if load > threshold:
        return (f"warning: 1-minute load average is {load:.2f} on {os.cpu_count()} CPUs before the run; "
                "other processes are competing for the cores and the timings will be noisy")
    return None


def _cpu_busy_s() -> float | None:
    """CPU seconds all processes have spent busy since boot (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[:8])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None


def _own_cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class OtherLoad:
    """How many cores *other* processes kept busy while the block ran (None where /proc is missing).

    CPU time of the whole machine minus this process's own (and ``minus_s``, e.g. a child's),
    over the wall time; /proc/stat counts in 10 ms ticks, so blocks of ~0.1 s and more only.
    """

    def __enter__(self):
        self.t0, self.busy0, self.own0 = time.perf_counter(), _cpu_busy_s(), _own_cpu_s()
        self.cores = None
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self, minus_s: float = 0.0):
        wall = time.perf_counter() - self.t0
        busy = _cpu_busy_s()
        if busy is not None and self.busy0 is not None and wall > 0:
            others = (busy - self.busy0) - (_own_cpu_s() - self.own0) - minus_s
            self.cores = max(0.0, others / wall)
        return self.cores


QUIET_CORES = 0.25  # a round is "quiet" when other processes used less than this many cores


def settle(seconds: float = 0.005):
    """Sleep briefly between timed chunks of implementations that share one thread pool.

    Too short to outlast another library's spinning workers (numpy's OpenBLAS spins about
    100 ms after its last call): bench_step runs each implementation for 200 ms first instead."""
    time.sleep(seconds)


def median(xs):
    return float(np.median(np.asarray(xs, dtype=float)))


def quantiles(xs) -> dict:
    a = np.asarray(xs, dtype=float)
    return {"median": float(np.median(a)), "p25": float(np.percentile(a, 25)), "p75": float(np.percentile(a, 75)),
            "min": float(a.min()), "n": int(a.size)}


def fmt_table(headers, rows) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for k, r in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def best_gemm(a, b, out, reps: int = 200):
    """np.dot or np.matmul, whichever is faster here for this product (both write into ``out``)."""
    best, best_t = None, float("inf")
    for f in (np.dot, np.matmul):
        f(a, b, out=out)
        t = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(reps):
                f(a, b, out=out)
            t = min(t, time.perf_counter() - t0)
        if t < best_t:
            best, best_t = f, t
    return best


# --------------------------------------------------------------------------- step implementations
class GraphcStep:
    """graphc's compiled ``TrainStep`` (forward, backward and update in one generated function)."""

    name = "graphc"

    def __init__(self, params, lr=0.1, batch=100):
        from graphc.models import two_layer_net
        from graphc.optim import SGD, TrainStep

        self._params = {k: np.array(v, copy=True) for k, v in params.items()}
        W1, W2 = self._params["W1"], self._params["W2"]
        net = two_layer_net(W1.shape[0], W1.shape[1], W2.shape[1])
        self.fn = TrainStep(net.loss, self._params, SGD(lr=lr))

    def prepare(self, x, t):
        return x, t

    def step(self, b):
        return self.fn(x=b[0], t=b[1])

    def sync(self):
        pass

    def params(self):
        return self._params


class NumpyHand:
    """The fastest numpy two-layer step we know how to write.

    Preallocated C-ordered buffers, every op in place with ``out=``, exactly five GEMMs
    (x·W1, h·W2, hᵀ·da, da·W2ᵀ, xᵀ·dA1; no dX for layer 1), the softmax-CE gradient
    fused with the 1/N and the learning rate (so every gradient comes out already
    scaled by lr and each update is one subtraction).  For each GEMM, np.dot or
    np.matmul is picked by a quick timing at construction.  Assumes one-hot (or
    probability) targets whose rows sum to 1, as graphc's fused CE rule does.
    """

    name = "numpy-hand"
    # numpy calls per step other than the five GEMMs (numbered in ``step``): for the floor estimate.
    N_OTHER = 21

    def __init__(self, params, lr=0.1, batch=100, tune=True):
        self.W1, self.b1, self.W2, self.b2 = (np.array(params[k], copy=True, order="C") for k in PARAM_NAMES)
        D, H = self.W1.shape
        C = self.W2.shape[1]
        n = batch
        dt = self.W1.dtype
        e = lambda *s: np.empty(s, dt)  # noqa: E731
        self.h, self.a, self.da = e(n, H), e(n, C), e(n, C)
        self.m, self.s = e(n, 1), e(n, 1)
        self.dh, self.mask = e(n, H), np.empty((n, H), bool)
        self.dW1, self.db1, self.dW2, self.db2 = e(D, H), e(H), e(H, C), e(C)
        self.n = n
        self.scale = dt.type(lr / n)
        self.inv_n = dt.type(1.0 / n)
        if tune:  # on random operands of the step's shapes and layouts, into the step's buffers
            r = lambda *s: np.random.default_rng(0).random(s).astype(dt)  # noqa: E731
            x, W1, W2, h, da, dh = r(n, D), r(D, H), r(H, C), r(n, H), r(n, C), r(n, H)
            self.g = [best_gemm(x, W1, self.h), best_gemm(h, W2, self.a), best_gemm(h.T, da, self.dW2),
                      best_gemm(da, W2.T, self.dh), best_gemm(x.T, dh, self.dW1)]
        else:
            self.g = [np.matmul] * 5
        self.gemm_choice = [f.__name__ for f in self.g]

    def prepare(self, x, t):
        return np.ascontiguousarray(x), np.ascontiguousarray(t)

    def step(self, b):
        x, t = b
        W1, b1, W2, b2 = self.W1, self.b1, self.W2, self.b2
        h, a, da, m, s, dh, mask = self.h, self.a, self.da, self.m, self.s, self.dh, self.mask
        g1, g2, g3, g4, g5 = self.g
        g1(x, W1, out=h)                              # GEMM 1: x·W1
        np.add(h, b1, out=h)                          # 1
        np.maximum(h, 0, out=h)                       # 2   h = relu(A1); h > 0 ⇔ A1 > 0
        g2(h, W2, out=a)                              # GEMM 2: h·W2
        np.add(a, b2, out=a)                          # 3
        np.max(a, axis=1, keepdims=True, out=m)       # 4
        np.subtract(a, m, out=a)                      # 5   shifted logits
        np.exp(a, out=da)                             # 6
        np.sum(da, axis=1, keepdims=True, out=s)      # 7
        np.divide(da, s, out=da)                      # 8   softmax
        np.log(s, out=s)                              # 9
        # loss = mean_n(log Σ exp - Σ_c t·a_shifted), rows of t summing to 1
        loss = (s.sum() - np.vdot(t, a)) * self.inv_n  # 10, 11
        np.subtract(da, t, out=da)                    # 12
        np.multiply(da, self.scale, out=da)           # 13  da = lr·(y - t)/N
        g3(h.T, da, out=self.dW2)                     # GEMM 3: hᵀ·da
        g4(da, W2.T, out=dh)                          # GEMM 4: da·W2ᵀ (before W2 changes)
        np.sum(da, axis=0, out=self.db2)              # 14
        np.subtract(W2, self.dW2, out=W2)             # 15
        np.subtract(b2, self.db2, out=b2)             # 16
        np.greater(h, 0, out=mask)                    # 17
        np.multiply(dh, mask, out=dh)                 # 18  dA1
        g5(x.T, dh, out=self.dW1)                     # GEMM 5: xᵀ·dA1
        np.sum(dh, axis=0, out=self.db1)              # 19
        np.subtract(W1, self.dW1, out=W1)             # 20
        np.subtract(b1, self.db1, out=b1)             # 21
        return loss

    def predict(self, x):
        """Class predictions (argmax of the logits), for accuracy; activations in reused buffers."""
        n = len(x)
        if getattr(self, "_predict_rows", None) != n:
            self._predict_rows = n
            self._ph = np.empty((n, self.W1.shape[1]), self.W1.dtype)
            self._pa = np.empty((n, self.W2.shape[1]), self.W2.dtype)
        h, a = self._ph, self._pa
        np.dot(x, self.W1, out=h)
        np.add(h, self.b1, out=h)
        np.maximum(h, 0, out=h)
        np.dot(h, self.W2, out=a)
        np.add(a, self.b2, out=a)
        return np.argmax(a, axis=1)

    def sync(self):
        pass

    def params(self):
        return dict(zip(PARAM_NAMES, (self.W1, self.b1, self.W2, self.b2)))


class GemmOnly:
    """Only the five GEMMs of a step, np.matmul into preallocated C-ordered outputs: the floor's core."""

    name = "gemm-only"

    def __init__(self, params, lr=0.1, batch=100):
        W1, W2 = params["W1"], params["W2"]
        D, H = W1.shape
        C = W2.shape[1]
        dt = W1.dtype
        rng = np.random.default_rng(1)
        self.W1, self.W2 = np.array(W1), np.array(W2)
        self.h = rng.random((batch, H)).astype(dt)
        self.a = np.empty((batch, C), dt)
        self.da = rng.random((batch, C)).astype(dt)
        self.dh, self.dW1, self.dW2 = np.empty((batch, H), dt), np.empty((D, H), dt), np.empty((H, C), dt)

    def prepare(self, x, t):
        return np.ascontiguousarray(x)

    def step(self, x):
        mm = np.matmul
        mm(x, self.W1, out=self.h)
        mm(self.h, self.W2, out=self.a)
        mm(self.h.T, self.da, out=self.dW2)
        mm(self.da, self.W2.T, out=self.dh)
        mm(x.T, self.dh, out=self.dW1)

    def sync(self):
        pass


class SeedStep:
    """The seed's step: ``grad = network.gradient(x, t)`` then ``params[key] -= lr * grad[key]``.

    Returns the loss the forward pass inside ``gradient`` computed (the seed's second
    ``network.loss`` call after the update, for its loss curve, is not part of a step).
    Note: float32 data times the int32 ReLU mask makes dW1/db1 float64, as in the seed.
    """

    name = "seed-layers"

    def __init__(self, params, lr=0.1, batch=100):
        from graphc import reference

        self.net = reference.TwoLayerNet({k: np.array(v, copy=True) for k, v in params.items()})
        self.lr = lr

    def prepare(self, x, t):
        return x, t

    def step(self, b):
        grad = self.net.gradient(*b)
        for key in PARAM_NAMES:
            self.net.params[key] -= self.lr * grad[key]
        return self.net.last_layer.loss

    def predict(self, x):
        return np.argmax(self.net.predict(x), axis=1)

    def sync(self):
        pass

    def params(self):
        return self.net.params


class OptEinsumNaive:
    """Plain numpy with one ``opt_einsum.contract_expression`` per product; no buffers, no fusion."""

    name = "opt_einsum-naive"

    def __init__(self, params, lr=0.1, batch=100):
        import opt_einsum as oe

        self.p = {k: np.array(v, copy=True) for k, v in params.items()}
        D, H = self.p["W1"].shape
        C = self.p["W2"].shape[1]
        n = batch
        self.fwd1 = oe.contract_expression("nk,kh->nh", (n, D), (D, H))
        self.fwd2 = oe.contract_expression("nh,hc->nc", (n, H), (H, C))
        self.dW2 = oe.contract_expression("nh,nc->hc", (n, H), (n, C))
        self.dh = oe.contract_expression("nc,hc->nh", (n, C), (H, C))
        self.dW1 = oe.contract_expression("nk,nh->kh", (n, D), (n, H))
        self.lr = lr

    def prepare(self, x, t):
        return x, t

    def step(self, b):
        x, t = b
        p, lr = self.p, self.lr
        n = x.shape[0]
        A1 = self.fwd1(x, p["W1"]) + p["b1"]
        h = np.maximum(A1, 0)
        a = self.fwd2(h, p["W2"]) + p["b2"]
        shifted = a - a.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        s = e.sum(axis=1, keepdims=True)
        loss = -np.sum(t * (shifted - np.log(s))) / n
        da = (e / s - t) / n
        dW2 = self.dW2(h, da)
        db2 = da.sum(axis=0)
        dA1 = self.dh(da, p["W2"]) * (A1 > 0)
        dW1 = self.dW1(x, dA1)
        db1 = dA1.sum(axis=0)
        p["W1"] -= lr * dW1
        p["b1"] -= lr * db1
        p["W2"] -= lr * dW2
        p["b2"] -= lr * db2
        return loss

    def sync(self):
        pass

    def params(self):
        return self.p


class TorchStep:
    """PyTorch eager: forward by hand, ``loss.backward()``, SGD under ``torch.no_grad()``."""

    name = "torch-eager"

    def __init__(self, params, lr=0.1, batch=100):
        import torch

        self.torch = torch
        self.F = torch.nn.functional
        self.p = {k: torch.from_numpy(np.array(v, copy=True)).requires_grad_() for k, v in params.items()}
        self.lr = lr

    def prepare(self, x, t):
        return self.torch.from_numpy(np.ascontiguousarray(x)), self.torch.from_numpy(np.ascontiguousarray(t))

    def step(self, b):
        x, t = b
        p = self.p
        h = self.torch.relu(x @ p["W1"] + p["b1"])
        a = h @ p["W2"] + p["b2"]
        loss = self.F.cross_entropy(a, t)  # probability (one-hot) targets, mean over the batch
        loss.backward()
        with self.torch.no_grad():
            for v in p.values():
                v.sub_(v.grad, alpha=self.lr)
                v.grad = None
        return loss.detach()

    def predict(self, x):
        x = self.torch.from_numpy(np.ascontiguousarray(x))
        with self.torch.no_grad():
            p = self.p
            a = self.torch.relu(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
            return a.argmax(dim=1).numpy()

    def sync(self):
        pass

    def params(self):
        return {k: v.detach().numpy() for k, v in self.p.items()}


class JaxStep:
    """JAX: the whole step (value_and_grad + SGD) under one ``jax.jit``, params donated."""

    name = "jax-jit"

    def __init__(self, params, lr=0.1, batch=100):
        import warnings

        import jax
        import jax.numpy as jnp

        self.jax = jax
        warnings.filterwarnings("ignore", message=".*donated buffers were not usable.*")

        def loss_fn(p, x, t):
            h = jax.nn.relu(x @ p["W1"] + p["b1"])
            a = h @ p["W2"] + p["b2"]
            return -jnp.sum(t * jax.nn.log_softmax(a, axis=-1)) / x.shape[0]

        def step(p, x, t):
            loss, g = jax.value_and_grad(loss_fn)(p, x, t)
            return jax.tree_util.tree_map(lambda v, d: v - lr * d, p, g), loss

        def predict(p, x):
            return jnp.argmax(jax.nn.relu(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"], axis=1)

        self._step = jax.jit(step, donate_argnums=0)
        self._predict = jax.jit(predict)
        self.p = {k: jnp.asarray(np.array(v, copy=True)) for k, v in params.items()}
        self._last = None

    def prepare(self, x, t):
        # Batches are put on the device before timing, as the other impls get theirs ready-made.
        return self.jax.device_put(np.ascontiguousarray(x)), self.jax.device_put(np.ascontiguousarray(t))

    def step(self, b):
        self.p, loss = self._step(self.p, *b)
        self._last = loss
        return loss

    def predict(self, x):
        return np.asarray(self._predict(self.p, x))

    def sync(self):
        self.jax.block_until_ready(self.p)

    def params(self):
        return {k: np.asarray(v) for k, v in self.p.items()}


def make_impls(params, lr, batch, peers, include=("graphc", "numpy-hand", "seed-layers", "opt_einsum-naive")):
    impls = []
    classes = {"graphc": GraphcStep, "numpy-hand": NumpyHand, "seed-layers": SeedStep,
               "opt_einsum-naive": OptEinsumNaive}
    for name in include:
        impls.append(classes[name](params, lr=lr, batch=batch))
    if "torch" in peers:
        impls.append(TorchStep(params, lr=lr, batch=batch))
    if "jax" in peers:
        impls.append(JaxStep(params, lr=lr, batch=batch))
    return impls
