#!/usr/bin/env python
"""One training step of the book's SimpleConvNet, and (``--full-run``) its whole 20-epoch run.

Net (the book's ch. 7, graphc.models.simple_conv_net): conv 30 filters 5×5 → ReLU → max-pool
2×2 stride 2 → affine 4320→100 → ReLU → affine 100→10 → softmax cross-entropy, integer
labels, batch 100, Adam (lr 0.001), from graphc.models.init_simple_conv_params (the book's
init: 0.01·randn weights, zero biases).  Implementations:

  graphc       graphc.optim.TrainStep(net.loss, params, Adam(lr=0.001)): forward, backward
               and update in one compiled function
  torch-eager  PyTorch eager, 2 threads: F.conv2d / relu / max_pool2d / matmuls /
               cross_entropy, loss.backward(), torch.optim.Adam (its defaults, eps 1e-8);
               the images are data (no requires_grad), so no dX for them
  book-layers  the book's Convolution/Pooling (im2col/col2im), Relu, Affine, SoftmaxWithLoss
               and Adam classes (benchmarks/book_convnet.py): ``grads = net.gradient(x, t);
               optimizer.update(net.params, grads)`` as the book's Trainer does (its extra
               ``net.loss`` call after each update, for the loss curve, is not timed)
  numpy-hand   hand-tuned numpy (NumpyHandConv below): window view copied into a (N, 25, 576)
               im2col buffer, one batched GEMM forward, max-pool forward and backward by
               four strided comparisons/products, no dX for the images, preallocated buffers

Per step: every implementation runs in its own process (a worker that loads the same batches
and waits for orders on stdin); the parent runs rounds, each round asking every worker in a
freshly shuffled order for ``--lead-ms`` of untimed steps and then ``--steps`` timed ones, so
the implementations share the machine's slow and quiet periods.  Tables show the median per
step, p25–p75 and min over rounds, and graphc's time over each implementation's, by medians and
paired (the median over rounds of the two times taken in the same round).

Before timing, each implementation computes in float64, from the same params and batch, the
loss and all six gradients; they must agree with numpy-hand (loss to rtol 1e-10, gradients to
1e-8) or the benchmark stops.  The book's loss adds 1e-7 inside its log: its own loss is
compared at 1e-5 and the exact cross-entropy of its logits at 1e-10.  Three Adam steps are
then compared too (graphc and numpy-hand use the same eps 1e-8 formula; torch adds eps to
√v̂, the book uses eps 1e-7, so theirs are reported, not required to agree).

    python benchmarks/bench_conv.py                      # ~3 min: 20 rounds x 10 steps, f32 + f64
    python benchmarks/bench_conv.py --quick              # a smoke run
    python benchmarks/bench_conv.py --full-run           # graphc vs torch, 20 epochs each (many minutes)
    python benchmarks/bench_conv.py --full-run --epochs 1
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _common as C  # noqa: E402

NAMES = ("graphc", "torch-eager", "book-layers", "numpy-hand")
PARAM_NAMES = ("W1", "b1", "W2", "b2", "W3", "b3")
MUST_AGREE = ("graphc", "torch-eager", "numpy-hand")
MARK = "@@bench_conv@@"
# rows per evaluation call, for every implementation: what `graphc train-mnist --model convnet`
# uses (TrainConfig.eval_chunk // 8), where 30 feature maps of a chunk stay small
EVAL_CHUNK = 250


# --------------------------------------------------------------------------- implementations
class GraphcConv:
    """graphc's compiled ``TrainStep`` with ``Adam(lr)``."""

    name = "graphc"

    def __init__(self, params, lr=0.001):
        from graphc.models import simple_conv_net
        from graphc.optim import Adam, TrainStep

        self.net = simple_conv_net(integer_labels=True)
        self._params = {k: np.array(v, copy=True) for k, v in params.items()}
        self.fn = TrainStep(self.net.loss, self._params, Adam(lr=lr))

    def prepare(self, x, t):
        return x, t

    def step(self, b):
        return self.fn(x=b[0], t=b[1])

    def loss_and_grads(self, b):
        """graphc's derived gradients (``gc.grad`` compiled with the loss), at the current params."""
        import graphc

        nodes = [self.net.params[k] for k in PARAM_NAMES]
        fn = graphc.compile([self.net.loss, *graphc.grad(self.net.loss, nodes)])
        loss, *grads = fn(self._params, x=b[0], t=b[1])
        return float(loss), dict(zip(PARAM_NAMES, grads))

    def params(self):
        return self._params


class TorchConv:
    """PyTorch eager: functional forward, ``loss.backward()``, ``torch.optim.Adam``."""

    name = "torch-eager"

    def __init__(self, params, lr=0.001):
        import torch

        self.torch = torch
        self.F = torch.nn.functional
        self.p = {k: torch.from_numpy(np.array(params[k], copy=True)).requires_grad_() for k in PARAM_NAMES}
        self.opt = torch.optim.Adam(list(self.p.values()), lr=lr)

    def prepare(self, x, t):
        return self.torch.from_numpy(np.ascontiguousarray(x)), self.torch.from_numpy(np.asarray(t, np.int64))

    def logits(self, x):
        p, F = self.p, self.F
        h = F.max_pool2d(F.relu(F.conv2d(x, p["W1"], p["b1"])), 2).flatten(1)
        return F.relu(h @ p["W2"] + p["b2"]) @ p["W3"] + p["b3"]

    def step(self, b):
        loss = self.F.cross_entropy(self.logits(b[0]), b[1])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def loss_and_grads(self, b):
        for v in self.p.values():
            v.grad = None
        loss = self.F.cross_entropy(self.logits(b[0]), b[1])
        loss.backward()
        grads = {k: v.grad.numpy().copy() for k, v in self.p.items()}
        for v in self.p.values():
            v.grad = None
        return float(loss.detach()), grads

    def predict(self, x):
        with self.torch.no_grad():
            return self.logits(self.torch.from_numpy(x)).argmax(dim=1).numpy()

    def params(self):
        return {k: v.detach().numpy() for k, v in self.p.items()}


class BookConv:
    """The book's ``SimpleConvNet.gradient`` + its ``Adam.update`` (benchmarks/book_convnet.py)."""

    name = "book-layers"

    def __init__(self, params, lr=0.001):
        import book_convnet

        self.net = book_convnet.SimpleConvNet({k: np.array(v, copy=True) for k, v in params.items()})
        self.opt = book_convnet.Adam(lr=lr)

    def prepare(self, x, t):
        return x, t

    def step(self, b):
        grads = self.net.gradient(*b)
        self.opt.update(self.net.params, grads)
        return self.net.last_layer.loss

    def loss_and_grads(self, b):
        grads = self.net.gradient(*b)
        return float(self.net.last_layer.loss), {k: np.array(v) for k, v in grads.items()}

    def exact_loss(self, b):
        """The cross-entropy of the book's own logits without its +1e-7 (float64 log-sum-exp)."""
        a = np.asarray(self.net.predict(b[0]), np.float64)
        m = a.max(axis=1, keepdims=True)
        lse = np.log(np.exp(a - m).sum(axis=1)) + m[:, 0]
        return float(np.mean(lse - a[np.arange(len(a)), b[1]]))

    def params(self):
        return self.net.params


class NumpyHandConv:
    """The fastest numpy SimpleConvNet step we could write (NCHW, the params' own layout).

    Forward: the (N, C, H, W) images' 5×5 window view (``sliding_window_view``) copied into an
    im2col buffer laid out (N, C·K·K, Ho·Wo), so that one batched GEMM ``W1 (O, CKK) @ col[n]``
    writes the convolution straight in NCHW; bias and ReLU in place; 2×2 max pooling as three
    ``np.maximum`` of strided views, recording which of each pair won (first maximum wins a
    tie, as torch).  Backward: the pooled gradient masked by ReLU once (on 4320 values per
    image, not 17280), routed to the winners by four products into strided views of the
    conv-gradient buffer (every element written, no zeroing); dW1 as one batched GEMM against
    the im2col buffer summed over the batch; no dX for the images.  Everything into
    preallocated buffers; Adam in place with eps 1e-8 (graphc's formula).
    """

    name = "numpy-hand"

    def __init__(self, params, lr=0.001, batch=100, beta1=0.9, beta2=0.999, eps=1e-8):
        self.p = {k: np.array(params[k], copy=True, order="C") for k in PARAM_NAMES}
        W1, W2, W3 = self.p["W1"], self.p["W2"], self.p["W3"]
        dt = W1.dtype
        O, Cin, K, _ = W1.shape
        hidden, classes = W3.shape
        side = int(round((W2.shape[0] // O) ** 0.5)) * 2 + K - 1  # input height (= width)
        Ho = side - K + 1
        if Ho % 2:
            raise ValueError("NumpyHandConv: the conv output must have an even side (2×2 pooling)")
        Hp = Ho // 2
        n = batch
        e = lambda *s: np.empty(s, dt)  # noqa: E731
        self.dims = (n, Cin, side, K, O, Ho, Hp)
        self.col = e(n, Cin * K * K, Ho * Ho)
        self.c = e(n, O, Ho * Ho)
        self.pooled = e(n, O, Hp, Hp)
        self.m1, self.m2 = e(n, O, Hp, Hp), e(n, O, Hp, Hp)
        self.s1, self.s2, self.s = (np.empty((n, O, Hp, Hp), bool) for _ in range(3))
        self.A2, self.a, self.da = e(n, hidden), e(n, classes), e(n, classes)
        self.mx, self.sm = e(n, 1), e(n, 1)
        self.mask_h, self.mask_p = np.empty((n, hidden), bool), np.empty((n, O * Hp * Hp), bool)
        self.dh, self.dp = e(n, hidden), e(n, O * Hp * Hp)
        self.top, self.bot = e(n, O, Hp, Hp), e(n, O, Hp, Hp)
        self.dc = e(n, O, Ho * Ho)
        self.dW1n = e(n, O, Cin * K * K)
        self.g = {k: np.empty_like(v) for k, v in self.p.items()}
        self.m = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.v = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.tmp = {k: np.empty_like(v) for k, v in self.p.items()}
        self.rows = np.arange(n)
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.c1, self.c2 = dt.type(1 - beta1), dt.type(1 - beta2)
        self.inv_n = dt.type(1.0 / n)
        self.iter = 0

    def prepare(self, x, t):
        return np.ascontiguousarray(x), np.asarray(t, np.int64)

    def _forward_backward(self, x, t):
        n, Cin, side, K, O, Ho, Hp = self.dims
        p, g = self.p, self.g
        col, c = self.col, self.c
        # forward: im2col from the window view (one strided copy), conv as one batched GEMM into NCHW
        windows = np.lib.stride_tricks.sliding_window_view(x, (K, K), axis=(2, 3))  # (n, C, Ho, Ho, K, K)
        np.copyto(col.reshape(n, Cin, K, K, Ho, Ho), windows.transpose(0, 1, 4, 5, 2, 3))
        np.matmul(p["W1"].reshape(O, -1), col, out=c)
        np.add(c, p["b1"][:, None], out=c)
        np.maximum(c, 0, out=c)
        c6 = c.reshape(n, O, Hp, 2, Hp, 2)
        a00, a01, a10, a11 = c6[:, :, :, 0, :, 0], c6[:, :, :, 0, :, 1], c6[:, :, :, 1, :, 0], c6[:, :, :, 1, :, 1]
        np.maximum(a00, a01, out=self.m1)
        np.greater(a01, a00, out=self.s1)               # right beats left only if strictly larger
        np.maximum(a10, a11, out=self.m2)
        np.greater(a11, a10, out=self.s2)
        np.maximum(self.m1, self.m2, out=self.pooled)
        np.greater(self.m2, self.m1, out=self.s)        # bottom row beats top only if strictly larger
        flat = self.pooled.reshape(n, -1)
        A2, a, da = self.A2, self.a, self.da
        np.dot(flat, p["W2"], out=A2)
        np.add(A2, p["b2"], out=A2)
        np.maximum(A2, 0, out=A2)                       # h
        np.dot(A2, p["W3"], out=a)
        np.add(a, p["b3"], out=a)
        # softmax cross-entropy with integer labels
        np.max(a, axis=1, keepdims=True, out=self.mx)
        np.subtract(a, self.mx, out=a)
        np.exp(a, out=da)
        np.sum(da, axis=1, keepdims=True, out=self.sm)
        np.divide(da, self.sm, out=da)
        loss = (np.log(self.sm).sum() - a[self.rows, t].sum()) * self.inv_n
        da[self.rows, t] -= 1
        np.multiply(da, self.inv_n, out=da)
        # backward
        np.dot(A2.T, da, out=g["W3"])
        np.sum(da, axis=0, out=g["b3"])
        np.dot(da, p["W3"].T, out=self.dh)
        np.greater(A2, 0, out=self.mask_h)
        np.multiply(self.dh, self.mask_h, out=self.dh)
        np.dot(flat.T, self.dh, out=g["W2"])
        np.sum(self.dh, axis=0, out=g["b2"])
        np.dot(self.dh, p["W2"].T, out=self.dp)
        np.greater(flat, 0, out=self.mask_p)           # ReLU's gradient at each window's winner
        np.multiply(self.dp, self.mask_p, out=self.dp)
        dp = self.dp.reshape(n, O, Hp, Hp)
        top, bot = self.top, self.bot
        np.multiply(dp, self.s, out=bot)
        np.subtract(dp, bot, out=top)
        d6 = self.dc.reshape(n, O, Hp, 2, Hp, 2)
        np.multiply(top, self.s1, out=d6[:, :, :, 0, :, 1])
        np.subtract(top, d6[:, :, :, 0, :, 1], out=d6[:, :, :, 0, :, 0])
        np.multiply(bot, self.s2, out=d6[:, :, :, 1, :, 1])
        np.subtract(bot, d6[:, :, :, 1, :, 1], out=d6[:, :, :, 1, :, 0])
        np.matmul(self.dc, col.transpose(0, 2, 1), out=self.dW1n)
        np.sum(self.dW1n, axis=0, out=g["W1"].reshape(O, -1))
        np.sum(self.dc, axis=(0, 2), out=g["b1"])
        return loss

    def step(self, b):
        loss = self._forward_backward(*b)
        self.iter += 1
        lr_t = self.lr * np.sqrt(1.0 - self.beta2 ** self.iter) / (1.0 - self.beta1 ** self.iter)
        dt = self.p["W1"].dtype.type
        lr_t, eps = dt(lr_t), dt(self.eps)
        for k, p in self.p.items():
            g, m, v, tmp = self.g[k], self.m[k], self.v[k], self.tmp[k]
            np.subtract(g, m, out=tmp)                 # m += (1-β1)(g - m)
            np.multiply(tmp, self.c1, out=tmp)
            np.add(m, tmp, out=m)
            np.multiply(g, g, out=tmp)                 # v += (1-β2)(g² - v)
            np.subtract(tmp, v, out=tmp)
            np.multiply(tmp, self.c2, out=tmp)
            np.add(v, tmp, out=v)
            np.sqrt(v, out=tmp)                        # p -= lr_t·m / (√v + eps)
            np.add(tmp, eps, out=tmp)
            np.divide(m, tmp, out=tmp)
            np.multiply(tmp, lr_t, out=tmp)
            np.subtract(p, tmp, out=p)
        return loss

    def loss_and_grads(self, b):
        loss = self._forward_backward(*b)
        return float(loss), {k: v.copy() for k, v in self.g.items()}

    def params(self):
        return self.p


CLASSES = {"graphc": GraphcConv, "torch-eager": TorchConv, "book-layers": BookConv, "numpy-hand": NumpyHandConv}


def make_impl(name, params, lr, batch=100):
    if name == "torch-eager":
        C.available_peers(("torch",))  # sets torch's threads to C.THREADS
    if name == "numpy-hand":
        return NumpyHandConv(params, lr=lr, batch=batch)
    return CLASSES[name](params, lr=lr)


# --------------------------------------------------------------------------- data
def load_data(dtype, log=print):
    """MNIST from $GRAPHC_DATA as (N, 1, 28, 28) images in [0, 1] and int64 labels, or random
    data of those shapes when it is missing.  Returns (x_train, t_train, x_test, t_test, source)."""
    from graphc.datasets import load_mnist

    if os.environ.get("GRAPHC_DATA"):
        try:
            (x, t), (xt, tt) = load_mnist(normalize=True, flatten=False, one_hot_label=False, dtype=dtype,
                                          download=False)
            return x, t, xt, tt, "mnist"
        except Exception as exc:  # noqa: BLE001 - fall back, and say so
            log(f"note: MNIST not loaded from GRAPHC_DATA ({exc}); using random data")
    else:
        log("note: GRAPHC_DATA is not set; using random data of MNIST's shapes")
    rng = np.random.default_rng(12345)
    x = rng.random((60000, 1, 28, 28)).astype(dtype)
    xt = rng.random((10000, 1, 28, 28)).astype(dtype)
    return x, rng.integers(0, 10, 60000), xt, rng.integers(0, 10, 10000), "random"


def init_params(seed, dtype):
    from graphc.models import init_simple_conv_params

    return init_simple_conv_params(np.random.default_rng(seed), dtype=np.dtype(dtype))


# --------------------------------------------------------------------------- per-step worker (child)
def worker(name: str, dtype: str, batches_path: str, lr: float, seed: int, threads: int) -> None:
    """A worker process: builds one implementation, then serves orders read from stdin, one a line:
    ``run LEAD_MS STEPS`` (untimed steps for LEAD_MS, then STEPS timed ones; answers µs per step),
    ``check PATH`` (float64 loss, gradients and 3 Adam steps from the init, saved to PATH), ``quit``."""
    C.set_threads(threads)
    data = np.load(batches_path)
    xs, ts = data["x"].astype(dtype), data["t"]
    params = init_params(seed, dtype)
    impl = make_impl(name, params, lr, batch=xs.shape[1])
    prepared = [impl.prepare(x, t) for x, t in zip(xs, ts)]
    k = 0

    def steps(count):
        nonlocal k
        for _ in range(count):
            impl.step(prepared[k % len(prepared)])
            k += 1

    print(MARK + json.dumps({"ready": True}), flush=True)
    cpu_mark = C._own_cpu_s()
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        if cmd[0] == "run":
            lead_ms, count = float(cmd[1]), int(cmd[2])
            end = time.perf_counter() + lead_ms / 1e3
            while time.perf_counter() < end:
                steps(1)
            t0 = time.perf_counter()
            steps(count)
            us = (time.perf_counter() - t0) / count * 1e6
            # This worker's CPU (all its threads) since its last answer, so that the time its BLAS
            # threads spin after answering counts as its own: for the parent's measure of other load.
            cpu = C._own_cpu_s()
            print(MARK + json.dumps({"us": us, "cpu_s": cpu - cpu_mark}), flush=True)
            cpu_mark = cpu
        elif cmd[0] == "check":
            b = prepared[0]
            loss, grads = impl.loss_and_grads(b)
            out = {"loss": np.array(loss), **{f"g_{k}": np.asarray(v) for k, v in grads.items()}}
            if name == "book-layers":
                out["exact_loss"] = np.array(impl.exact_loss(b))
            losses = [float(impl.step(p)) for p in prepared[:3]]
            out["step_losses"] = np.array(losses)
            out.update({f"p_{k}": np.asarray(v) for k, v in impl.params().items()})
            np.savez(cmd[1], **out)
            print(MARK + json.dumps({"saved": cmd[1]}), flush=True)


class Worker:
    """The parent's handle on one worker process."""

    def __init__(self, name, dtype, batches_path, args):
        code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import bench_conv as b; "
                f"b.worker({name!r}, {dtype!r}, {batches_path!r}, {args.lr!r}, {args.seed}, {args.threads})")
        self.name = name
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        self._read()

    def _read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        raise SystemExit(f"bench_conv: the {self.name} worker exited (status {self.proc.wait()})")

    def ask(self, order: str) -> dict:
        self.proc.stdin.write(order + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait(timeout=60)


# --------------------------------------------------------------------------- check (parent)
def _rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = float(np.max(np.abs(b))) or 1.0
    return float(np.max(np.abs(a - b)) / scale)


def check(names, batches_path, args, log=print) -> dict:
    """Float64 loss, gradients and 3 Adam steps of every implementation, each in its worker,
    compared with numpy-hand's (errors relative to the largest entry of each array)."""
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            w = Worker(name, "float64", batches_path, args)
            path = os.path.join(tmp, f"{name}.npz")
            w.ask(f"check {path}")
            w.close()
            with np.load(path) as f:
                res[name] = {k: f[k] for k in f.files}
    ref = res["numpy-hand"]
    report, rows, bad = {}, [], []
    for name, r in res.items():
        loss_tol = 1e-5 if name == "book-layers" else 1e-10  # the book's +1e-7 inside the log
        loss_err = _rel_err(r["loss"], ref["loss"])
        grad_err = max(_rel_err(r[f"g_{k}"], ref[f"g_{k}"]) for k in PARAM_NAMES)
        exact_err = _rel_err(r["exact_loss"], ref["loss"]) if "exact_loss" in r else None
        steps_err = max(_rel_err(r[f"p_{k}"], ref[f"p_{k}"]) for k in PARAM_NAMES)
        ok = loss_err <= loss_tol and grad_err <= 1e-8 and (exact_err is None or exact_err <= 1e-10)
        report[name] = {"ok": ok, "loss": float(r["loss"]), "loss_rel_err": loss_err, "loss_tol": loss_tol,
                        "exact_loss_rel_err": exact_err, "grad_max_rel_err": grad_err,
                        "params_after_3_adam_steps_max_rel_err": steps_err,
                        "step_losses": r["step_losses"].tolist()}
        rows.append((name, "ok" if ok else "MISMATCH", f"{float(r['loss']):.15f}", f"{loss_err:.1e}",
                     f"{exact_err:.1e}" if exact_err is not None else "", f"{grad_err:.1e}", f"{steps_err:.1e}"))
        if not ok:
            bad.append(name)
    log("check: float64, same init and batch, vs numpy-hand (errors relative to each array's largest entry)")
    log(C.fmt_table(["impl", "result", "loss", "loss err", "exact-CE err", "6 grads err", "after 3 Adam steps"],
                    rows))
    log("(loss: rtol 1e-10, the book's own loss 1e-5 for its +1e-7 in the log and its logits' exact CE 1e-10; "
        "gradients 1e-8; after 3 Adam steps reported only: torch adds eps to sqrt(v_hat), the book's eps is 1e-7)")
    log("")
    if any(n in MUST_AGREE for n in bad):
        raise SystemExit(f"bench_conv: {bad} disagree with numpy-hand; not timing a wrong implementation")
    return {"results": report, "failed": bad}


# --------------------------------------------------------------------------- per-step timing (parent)
def measure(names, dtype, batches_path, args, log=print) -> dict:
    workers = []
    try:
        for name in names:
            workers.append(Worker(name, dtype, batches_path, args))
        for _ in range(args.warmup):
            for w in workers:
                w.ask(f"run {args.lead_ms} {args.steps}")
        times = {w.name: [] for w in workers}
        others = []
        order_rng = np.random.default_rng(args.seed + 1)
        for _ in range(args.rounds):
            load = C.OtherLoad().__enter__()
            workers_cpu = 0.0
            for k in order_rng.permutation(len(workers)):
                w = workers[k]
                r = w.ask(f"run {args.lead_ms} {args.steps}")
                times[w.name].append(r["us"] / 1e3)
                workers_cpu += r["cpu_s"]
            others.append(load.close(minus_s=workers_cpu))  # cores used by processes not of this benchmark
    finally:
        for w in workers:
            w.close()
    stats = {n: C.quantiles(ts) for n, ts in times.items()}
    g = times["graphc"]
    ratio = {n: stats["graphc"]["median"] / s["median"] for n, s in stats.items()}
    paired = {n: C.median([a / b for a, b in zip(g, ts)]) for n, ts in times.items()}
    paired_lo_hi = {n: (min(a / b for a, b in zip(g, ts)), max(a / b for a, b in zip(g, ts))) for n, ts in times.items()}
    quiet = [k for k, c in enumerate(others) if c is not None and c < C.QUIET_CORES]
    quiet_med = {n: (C.median([ts[k] for k in quiet]) if len(quiet) >= 3 else None) for n, ts in times.items()}
    quiet_paired = {n: (C.median([g[k] / ts[k] for k in quiet]) if len(quiet) >= 3 else None) for n, ts in times.items()}
    na = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    rows = [(n, f"{s['median']:.2f}", f"{s['p25']:.2f}-{s['p75']:.2f}", f"{s['min']:.2f}", na(quiet_med[n]),
             f"{ratio[n]:.2f}", f"{paired[n]:.2f}", f"{paired_lo_hi[n][0]:.2f}-{paired_lo_hi[n][1]:.2f}",
             na(quiet_paired[n])) for n, s in stats.items()]
    log(f"{dtype}, batch {args.batch}: {args.rounds} rounds x {args.steps} steps, each impl in its own process, "
        "median ms/step (order shuffled each round)")
    log(C.fmt_table(["impl", "ms/step", "p25-p75", "min", "quiet med", "graphc / impl", "paired", "paired range",
                     "quiet paired"], rows))
    busy = [c for c in others if c is not None]
    if busy:
        log(f"other processes used {C.median(busy):.2f} cores (median over rounds); {len(quiet)}/{len(others)} rounds "
            f"were quiet (< {C.QUIET_CORES} cores): 'quiet med' and 'quiet paired' are medians over those")
    log("")
    return {"dtype": dtype, "ms_per_step": stats, "graphc_over_impl": ratio, "paired_graphc_over_impl": paired,
            "paired_range": paired_lo_hi, "quiet_rounds": quiet, "quiet_median_ms": quiet_med,
            "quiet_paired_graphc_over_impl": quiet_paired, "samples_ms": times, "other_cores_per_round": others}


def targets(results, log=print) -> dict:
    out = {}
    for r in results:
        if r["dtype"] != "float32":
            continue
        p = r["paired_graphc_over_impl"]
        if "torch-eager" in p:
            out["graphc_over_torch_f32"] = p["torch-eager"]
            log(f"target graphc <= 1.0x torch eager per step in float32 (aim 0.8x): {p['torch-eager']:.2f}x "
                f"({'met' if p['torch-eager'] <= 1.0 else 'NOT met'})")
        if "book-layers" in p:
            speedup = 1 / p["book-layers"]
            out["book_over_graphc_f32"] = speedup
            log(f"target graphc >= 3x faster than the book's layers in float32: {speedup:.1f}x "
                f"({'met' if speedup >= 3 else 'NOT met'})")
    return out


# --------------------------------------------------------------------------- --full-run
def full_child(name: str, epochs: int, seed: int, lr: float, threads: int, batch: int = 100) -> None:
    """One whole training run (its own process): prints one JSON line after MARK."""
    C.set_threads(threads)
    dt = np.dtype(np.float32)
    x_train, t_train, x_test, t_test, source = load_data(dt, log=lambda s: None)
    params = init_params(seed, dt)
    rng = np.random.default_rng(seed + 1)  # the batches: the same draws for every implementation
    impl = make_impl(name, params, lr)
    if name == "graphc":
        from graphc.evaluate import Evaluator

        evaluator = Evaluator(impl.net.logits, chunk=EVAL_CHUNK)
        accuracy = lambda x, t: evaluator.accuracy(impl.params(), x, t)  # noqa: E731
    else:
        def accuracy(x, t):
            hits = sum(int(np.count_nonzero(impl.predict(x[s:s + EVAL_CHUNK]) == t[s:s + EVAL_CHUNK]))
                       for s in range(0, len(x), EVAL_CHUNK))
            return hits / len(x)
    iters = epochs * (len(x_train) // batch)
    x_batch = np.empty((batch,) + x_train.shape[1:], dt)
    t_batch = np.empty(batch, np.int64)
    losses = np.empty(iters)
    t0 = time.perf_counter()
    for i in range(iters):
        idx = rng.integers(0, len(x_train), batch)
        np.take(x_train, idx, axis=0, out=x_batch)
        np.take(t_train, idx, out=t_batch)
        losses[i] = float(impl.step(impl.prepare(x_batch, t_batch)))
    loop_s = time.perf_counter() - t0
    hwm_train = _vm_hwm_mib()
    t0 = time.perf_counter()
    train_acc, test_acc = accuracy(x_train, t_train), accuracy(x_test, t_test)
    eval_s = time.perf_counter() - t0
    out = {"data": source, "iters": iters, "loop_s": loop_s, "eval_s": eval_s, "train_acc": train_acc,
           "test_acc": test_acc, "peak_train_mib": hwm_train, "last_100_loss": float(losses[-100:].mean()), "final_loss": float(losses[-1])}
    print(MARK + json.dumps(out), flush=True)


def _vm_hwm_mib():
    """This process's peak resident memory so far (VmHWM, Linux /proc), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def run_full_child(name, args) -> dict:
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import bench_conv as b; "
            f"b.full_child({name!r}, {args.epochs}, {args.seed}, {args.lr!r}, {args.threads})")
    with tempfile.TemporaryFile(mode="w+") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        wall = time.perf_counter() - t0
        out.seek(0)
        text = out.read()
    lines = [ln for ln in text.splitlines() if ln.startswith(MARK)]
    if os.waitstatus_to_exitcode(status) != 0 or not lines:
        raise SystemExit(f"bench_conv: the {name} full run failed:\n{text[-3000:]}")
    res = json.loads(lines[-1][len(MARK):])
    res["process_s"] = wall
    res["peak_rss_mib"] = usage.ru_maxrss / 1024  # Linux: KiB; the child's peak resident set (ru_maxrss)
    return res


def full_run(args, log=print) -> dict:
    names = ["graphc", "torch-eager"]
    runs = {n: [] for n in names}
    log(f"full run: {args.epochs} epoch(s) x 600 iterations, batch 100, Adam lr {args.lr}, float32, "
        f"{args.repeats} repeat(s), each run its own process, alternating")
    for rep in range(args.repeats):
        for name in (names if rep % 2 == 0 else names[::-1]):
            r = run_full_child(name, args)
            runs[name].append(r)
            log(f"  repeat {rep + 1} {name:<12} loop {r['loop_s']:7.1f} s  eval {r['eval_s']:5.1f} s  "
                f"process {r['process_s']:7.1f} s  peak {r['peak_rss_mib']:5.0f} MiB (training {r['peak_train_mib']:.0f})  "
                f"train acc {r['train_acc']:.4f}  test acc {r['test_acc']:.4f}", flush=True)
    rows, summary = [], {}
    for n in names:
        rs = runs[n]
        s = {k: C.median([r[k] for r in rs]) for k in ("loop_s", "eval_s", "process_s", "peak_rss_mib",
                                                          "peak_train_mib")}
        s.update({"loop_range": (min(r["loop_s"] for r in rs), max(r["loop_s"] for r in rs)),
                  "ratio_loop_graphc_over": C.median([g["loop_s"] / r["loop_s"] for g, r in zip(runs["graphc"], rs)]),
                  "train_acc": rs[-1]["train_acc"], "test_acc": rs[-1]["test_acc"],
                  "last_100_loss": rs[-1]["last_100_loss"], "data": rs[-1]["data"]})
        summary[n] = s
        rows.append((n, f"{s['loop_s']:.1f}", f"{s['loop_range'][0]:.1f}-{s['loop_range'][1]:.1f}",
                     f"{s['ratio_loop_graphc_over']:.2f}", f"{s['eval_s']:.1f}", f"{s['process_s']:.1f}",
                     f"{s['peak_rss_mib']:.0f}", f"{s['peak_train_mib']:.0f}", f"{s['train_acc']:.4f}", f"{s['test_acc']:.4f}",
                     f"{s['last_100_loss']:.4f}"))
    log("")
    log(f"SimpleConvNet, {args.epochs} epoch(s), data: {summary['graphc']['data']}; medians of {args.repeats} run(s)")
    log(C.fmt_table(["impl", "loop s", "range", "graphc / impl", "eval s", "process s", "peak MiB (ru_maxrss)",
                     "peak MiB training", "train acc", "test acc", "loss (last 100)"], rows))
    return {"summary": summary, "runs": runs}


# --------------------------------------------------------------------------- main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 3 rounds x 3 steps")
    p.add_argument("--rounds", type=int, default=20, help="rounds; each runs every impl once (default 20)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per impl per round (default 10)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument("--lead-ms", type=float, default=200.0,
                   help="untimed steps of an implementation before each of its timed chunks, in ms (default 200)")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--dtypes", default="float32,float64", help="comma-separated (default float32,float64)")
    p.add_argument("--impls", default=",".join(NAMES), help=f"comma-separated subset of {','.join(NAMES)}")
    p.add_argument("--no-check", action="store_true", help="skip the float64 agreement check")
    p.add_argument("--full-run", action="store_true", help="the whole training run, graphc vs torch, instead")
    p.add_argument("--epochs", type=int, default=20, help="--full-run: epochs of 600 iterations (default 20)")
    p.add_argument("--repeats", type=int, default=1, help="--full-run: runs of each (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=C.THREADS, help="threads for BLAS and torch (default 2)")
    p.add_argument("--json", default=None, help="where to write results (default benchmarks/bench_conv[_full].json)")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.warmup, args.lead_ms = min(args.rounds, 3), min(args.steps, 3), 0, 50.0
    json_path = args.json or str(HERE / ("bench_conv_full.json" if args.full_run else "bench_conv.json"))
    warning = C.busy_warning()
    if warning:
        print(warning)
    record = {"benchmark": "bench_conv", "args": vars(args), "busy_warning": warning,
              "environment": C.environment()}
    try:
        import importlib.metadata

        record["environment"]["torch"] = importlib.metadata.version("torch")
    except Exception:  # noqa: BLE001 - torch is optional
        pass
    if args.full_run:
        record["full_run"] = full_run(args)
    else:
        names = [n for n in args.impls.split(",") if n]
        unknown = set(names) - set(NAMES)
        if unknown or "graphc" not in names:
            p.error(f"--impls: choose among {NAMES}, graphc included (got {names})")
        import importlib.util

        if "torch-eager" in names and importlib.util.find_spec("torch") is None:
            print("note: torch is not installed; torch-eager is skipped")
            names.remove("torch-eager")
        x, t, _, _, source = load_data(np.float64)
        rng = np.random.default_rng(args.seed + 2)
        idx = rng.integers(0, len(x), (16, args.batch))  # 16 different batches, cycled
        print(f"data: {source} (16 batches of {args.batch}, the same in every worker); threads: {args.threads}")
        record["data"] = source
        with tempfile.TemporaryDirectory() as tmp:
            batches_path = os.path.join(tmp, "batches.npz")
            np.savez(batches_path, x=x[idx], t=t[idx])
            del x, t
            gc.collect()
            if not args.no_check:
                check_names = names if "numpy-hand" in names else names + ["numpy-hand"]
                record["check"] = check(check_names, batches_path, args)
            record["results"] = [measure(names, d, batches_path, args) for d in args.dtypes.split(",")]
        record["targets"] = targets(record["results"])
    record["loadavg_end"] = os.getloadavg()
    path = C.write_json(json_path, record)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
