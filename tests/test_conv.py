"""Convolution, pooling and padding: values and gradients against torch.autograd in float64
over many random shapes, kernels, strides, paddings and dilations (both lowerings), finite
differences, a brute-force dense-Jacobian oracle, second derivatives, and the errors a bad
declaration gets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, strategies as st

import graphc as gc

torch = pytest.importorskip("torch")
F = torch.nn.functional
LOWERINGS = ["auto", "array_api"]


def _conv_cases(count: int, seed: int) -> list:
    """Random valid conv2d configurations, each ``(N, C, O, H, W, KH, KW, stride, padding, dilation, bias)``."""
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        s, p, d = (int(v) for v in rng.integers(1, 4, 2)), (int(v) for v in rng.integers(0, 3, 2)), \
            (int(v) for v in rng.integers(1, 3, 2))
        s, p, d = tuple(s), tuple(p), tuple(d)
        H, W = (int(v) for v in rng.integers(1, 10, 2))
        KH, KW = (int(v) for v in rng.integers(1, 5, 2))
        if d[0] * (KH - 1) + 1 > H + 2 * p[0] or d[1] * (KW - 1) + 1 > W + 2 * p[1]:
            continue
        cases.append((int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(1, 4)), H, W, KH, KW,
                      s, p, d, bool(rng.integers(0, 2))))
    return cases


CONV_CASES = _conv_cases(24, 0) + [
    (2, 2, 3, 7, 8, 3, 2, (2, 3), (1, 0), (1, 1), True),   # (H + 2p - K) mod s != 0 on both axes
    (1, 3, 2, 5, 5, 1, 1, (1, 1), (0, 0), (1, 1), True),   # a 1x1 kernel
    (1, 3, 2, 5, 5, 1, 1, (2, 2), (1, 1), (1, 1), False),  # 1x1, strided, over padding
    (2, 1, 2, 4, 5, 6, 7, (1, 1), (1, 1), (1, 1), True),   # the kernel as large as the padded input
    (1, 2, 2, 9, 9, 3, 3, (2, 2), (2, 2), (2, 2), False),  # dilation, stride and padding together
]


def _conv_graph(case):
    N, C, O, H, W, KH, KW, s, p, d, bias = case
    g = gc.Graph("conv")
    x, K = g.input("x", ("n", C, H, W)), g.param("K", (O, C, KH, KW))
    b = g.param("b", (O,)) if bias else None
    y = gc.conv2d(x, K, b, stride=s, padding=p, dilation=d, name="y")
    r = g.input("r", y.shape)
    loss = (gc.tanh(y) * r).sum()
    return g, x, K, b, y, r, loss


def _torch_grads(fn, arrays: dict, wrt: list):
    tensors = {k: torch.tensor(v, requires_grad=k in wrt) for k, v in arrays.items()}
    out = fn(tensors)
    out.backward()
    return out.detach().numpy(), [tensors[k].grad.numpy() for k in wrt]


@pytest.mark.parametrize("lowering", LOWERINGS)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "N{}C{}O{}_{}x{}_k{}x{}_s{}_p{}_d{}_b{}".format(
    *c[:7], "".join(map(str, c[7])), "".join(map(str, c[8])), "".join(map(str, c[9])), int(c[10])))
def test_conv2d_and_its_gradients_match_torch(case, lowering):
    N, C, O, H, W, KH, KW, s, p, d, bias = case
    g, x, K, b, y, r, loss = _conv_graph(case)
    rng = np.random.default_rng(1)
    values = {"x": rng.standard_normal((N, C, H, W)), "K": rng.standard_normal((O, C, KH, KW)),
              "r": rng.standard_normal((N,) + y.shape[1:])}
    wrt = [x, K] + ([b] if bias else [])
    if bias:
        values["b"] = rng.standard_normal(O)
    fn = gc.compile([y, loss, *gc.grad(loss, wrt)], lowering=lowering)
    got = fn(values)

    def forward(t):
        return F.conv2d(t["x"], t["K"], t.get("b"), stride=s, padding=p, dilation=d)

    ref_y = forward({k: torch.tensor(v) for k, v in values.items()}).numpy()
    ref_loss, ref_grads = _torch_grads(lambda t: (torch.tanh(forward(t)) * t["r"]).sum(), values,
                                       [w.name for w in wrt])
    assert got[0].shape == ref_y.shape
    np.testing.assert_allclose(got[0], ref_y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got[1], ref_loss, rtol=1e-12, atol=1e-12)
    for mine, ref in zip(got[2:], ref_grads):
        np.testing.assert_allclose(mine, ref, rtol=1e-11, atol=1e-12)


def _pool_cases(count: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        k = tuple(int(v) for v in rng.integers(1, 4, 2))
        s = tuple(int(v) for v in rng.integers(1, 4, 2))
        p = tuple(int(rng.integers(0, kk // 2 + 1)) for kk in k)
        H, W = (int(v) for v in rng.integers(1, 9, 2))
        if k[0] > H + 2 * p[0] or k[1] > W + 2 * p[1]:
            continue
        cases.append((int(rng.integers(1, 3)), int(rng.integers(1, 3)), H, W, k, s, p))
    return cases


POOL_CASES = _pool_cases(20, 2) + [
    (2, 3, 24, 24, (2, 2), (2, 2), (0, 0)),  # the SimpleConvNet's pooling: windows tile the input
    (1, 2, 5, 5, (2, 2), (2, 2), (0, 0)),    # the last row and column fall outside every window
    (1, 1, 5, 6, (3, 3), (1, 1), (1, 1)),    # overlapping windows over padding
    (1, 1, 4, 4, (4, 4), (1, 1), (0, 0)),    # one window, the whole input
]
_pool_id = lambda c: "N{}C{}_{}x{}_k{}_s{}_p{}".format(*c[:4], *("".join(map(str, v)) for v in c[4:]))  # noqa: E731


@pytest.mark.parametrize("lowering", LOWERINGS)
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("case", POOL_CASES, ids=_pool_id)
def test_max_pool2d_and_its_gradient_match_torch_ties_included(case, ties, lowering):
    N, C, H, W, k, s, p = case
    g = gc.Graph("pool")
    x = g.input("x", ("n", C, H, W))
    y = gc.max_pool2d(x, k, stride=s, padding=p, name="y")
    r = g.input("r", y.shape)
    loss = (y * r).sum()
    rng = np.random.default_rng(3)
    # small integers make many windows hold their maximum twice or more (ReLU's zeros do in a convnet)
    xv = rng.integers(0, 3, (N, C, H, W)).astype(float) if ties else rng.standard_normal((N, C, H, W))
    values = {"x": xv, "r": rng.standard_normal((N,) + y.shape[1:])}
    got = gc.compile([y, *gc.grad(loss, [x])], lowering=lowering)(values)
    ref_loss, (ref_dx,) = _torch_grads(lambda t: (F.max_pool2d(t["x"], k, s, p) * t["r"]).sum(), values, ["x"])
    np.testing.assert_array_equal(got[0], F.max_pool2d(torch.tensor(xv), k, s, p).numpy())
    np.testing.assert_allclose(got[1], ref_dx, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lowering", LOWERINGS)
@pytest.mark.parametrize("case", POOL_CASES, ids=_pool_id)
def test_avg_pool2d_and_its_gradient_match_torch(case, lowering):
    N, C, H, W, k, s, p = case
    g = gc.Graph("pool")
    x = g.input("x", ("n", C, H, W))
    y = gc.avg_pool2d(x, k, stride=s, padding=p, name="y")
    r = g.input("r", y.shape)
    rng = np.random.default_rng(4)
    values = {"x": rng.standard_normal((N, C, H, W)), "r": rng.standard_normal((N,) + y.shape[1:])}
    got = gc.compile([y, *gc.grad((y * r).sum(), [x])], lowering=lowering)(values)
    ref_loss, (ref_dx,) = _torch_grads(lambda t: (F.avg_pool2d(t["x"], k, s, p) * t["r"]).sum(), values, ["x"])
    np.testing.assert_allclose(got[0], F.avg_pool2d(torch.tensor(values["x"]), k, s, p).numpy(), rtol=1e-12)
    np.testing.assert_allclose(got[1], ref_dx, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lowering", LOWERINGS)
@pytest.mark.parametrize("widths,value", [([(0, 0), (1, 2), (0, 3)], 0.0), ([(2, 0), (0, 0), (1, 1)], -1.5)])
def test_pad_and_its_gradient_match_torch(widths, value, lowering):
    g = gc.Graph("pad")
    x = g.input("x", (2, 3, 4))
    y = gc.pad(x, widths, value=value, name="y")
    r = g.input("r", y.shape)
    rng = np.random.default_rng(5)
    values = {"x": rng.standard_normal((2, 3, 4)), "r": rng.standard_normal(y.shape)}
    got = gc.compile([y, *gc.grad((gc.tanh(y) * r).sum(), [x])], lowering=lowering)(values)
    flat = tuple(v for lo_hi in reversed(widths) for v in lo_hi)  # torch lists the last axis first
    ref_loss, (ref_dx,) = _torch_grads(lambda t: (torch.tanh(F.pad(t["x"], flat, value=value)) * t["r"]).sum(),
                                       values, ["x"])
    np.testing.assert_allclose(got[0], F.pad(torch.tensor(values["x"]), flat, value=value).numpy())
    np.testing.assert_allclose(got[1], ref_dx, rtol=1e-12, atol=1e-12)


def test_max_pooling_with_padding_pads_with_minus_infinity():
    g = gc.Graph("pool")
    x = g.input("x", (1, 1, 2, 2))
    y = gc.max_pool2d(x, 2, stride=1, padding=1)
    values = -np.arange(1.0, 5.0).reshape(1, 1, 2, 2) - 100  # all far below zero: a zero padding would win
    for lowering in LOWERINGS:
        np.testing.assert_array_equal(gc.compile(y, lowering=lowering)(x=values),
                                      F.max_pool2d(torch.tensor(values), 2, 1, 1).numpy())


# -- finite differences and an oracle that shares no code with graphc -----------------------------
@pytest.mark.parametrize("lowering", LOWERINGS)
def test_a_small_convnet_passes_the_finite_difference_check(lowering):
    g = gc.Graph("convnet")
    x = g.input("x", ("n", 2, 7, 6))
    K, b = g.param("K", (3, 2, 3, 2)), g.param("b", (3,))
    h = gc.max_pool2d(gc.tanh(gc.conv2d(x, K, b, stride=(1, 2), padding=1)), 2, stride=1)
    h = gc.avg_pool2d(h, (2, 1), padding=(1, 0))
    V = g.param("V", (int(np.prod(h.shape[1:])), 2))
    loss = gc.sigmoid(h.flatten() @ V).sum()
    rng = np.random.default_rng(6)
    values = {"x": rng.standard_normal((2, 2, 7, 6)), "K": rng.standard_normal((3, 2, 3, 2)),
              "b": rng.standard_normal(3), "V": rng.standard_normal(V.shape)}
    gc.check_grads(loss, [x, K, b, V], values, lowering=lowering)


def _loop_conv(x, K, s, p, d):
    """Convolution by its definition, one output element at a time (the oracle)."""
    N, C, H, W = x.shape
    O, _, KH, KW = K.shape
    xp = np.zeros((N, C, H + 2 * p, W + 2 * p))
    xp[:, :, p:p + H, p:p + W] = x
    Ho, Wo = (H + 2 * p - d * (KH - 1) - 1) // s + 1, (W + 2 * p - d * (KW - 1) - 1) // s + 1
    y = np.zeros((N, O, Ho, Wo))
    for n, o, i, j, c, a, bb in itertools.product(range(N), range(O), range(Ho), range(Wo), range(C), range(KH),
                                                  range(KW)):
        y[n, o, i, j] += xp[n, c, s * i + d * a, s * j + d * bb] * K[o, c, a, bb]
    return y


@pytest.mark.parametrize("s,p,d", [(1, 0, 1), (2, 1, 1), (1, 1, 2), (3, 2, 1)])
def test_conv2d_adjoints_equal_the_dense_jacobian_of_a_loop_oracle(s, p, d):
    rng = np.random.default_rng(7)
    x, K = rng.standard_normal((1, 2, 5, 4)), rng.standard_normal((2, 2, 2, 2))
    y = _loop_conv(x, K, s, p, d)
    # the conv is linear in x and in K: each Jacobian column is the oracle at a basis array
    Jx = np.stack([_loop_conv(e.reshape(x.shape), K, s, p, d).ravel() for e in np.eye(x.size)], axis=1)
    JK = np.stack([_loop_conv(x, e.reshape(K.shape), s, p, d).ravel() for e in np.eye(K.size)], axis=1)
    g = gc.Graph("jac")
    xn, Kn = g.input("x", x.shape), g.input("K", K.shape)
    yn = gc.conv2d(xn, Kn, stride=s, padding=p, dilation=d)
    dy = g.input("dy", yn.shape)
    fn = gc.compile([yn, *gc.grad(yn, [xn, Kn], seed=dy)])
    for k in range(y.size):  # one output basis vector at a time: a row of each Jacobian
        seed = np.zeros(y.size)
        seed[k] = 1.0
        got_y, got_dx, got_dK = fn(x=x, K=K, dy=seed.reshape(y.shape))
        np.testing.assert_allclose(got_dx.ravel(), Jx[k], atol=1e-12)
        np.testing.assert_allclose(got_dK.ravel(), JK[k], atol=1e-12)
    np.testing.assert_allclose(got_y, y, atol=1e-12)


def test_second_derivatives_through_a_convolution_match_torch():
    g = gc.Graph("hvp")
    x = g.input("x", (2, 2, 6, 5))
    K = g.param("K", (3, 2, 3, 2))
    loss = (gc.tanh(gc.conv2d(x, K, stride=(2, 1), padding=(1, 0))) ** 2).sum()
    v = g.input("v", K.shape)
    rng = np.random.default_rng(8)
    values = {"x": rng.standard_normal(x.shape), "K": rng.standard_normal(K.shape), "v": rng.standard_normal(K.shape)}
    got = gc.compile(gc.hvp(loss, K, v))(values)
    tx, tK = torch.tensor(values["x"]), torch.tensor(values["K"], requires_grad=True)
    (dK,) = torch.autograd.grad((torch.tanh(F.conv2d(tx, tK, stride=(2, 1), padding=(1, 0))) ** 2).sum(), tK,
                                create_graph=True)
    (ref,) = torch.autograd.grad((dK * torch.tensor(values["v"])).sum(), tK)
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-11, atol=1e-12)


@given(n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 8), k=st.integers(1, 4), s=st.integers(1, 3),
       p=st.integers(0, 2), d=st.integers(1, 2), seed=st.integers(0, 2 ** 16))
def test_conv2d_gradients_match_torch_for_any_valid_shape(n, c, h, k, s, p, d, seed):
    if d * (k - 1) + 1 > h + 2 * p:
        with pytest.raises(gc.ShapeError, match="larger than the padded input"):
            _conv_graph((n, c, 2, h, h, k, k, (s, s), (p, p), (d, d), True))
        return
    test_conv2d_and_its_gradients_match_torch((n, c, 2, h, h, k, k, (s, s), (p, p), (d, d), bool(seed % 2)),
                                              "auto")


# -- the notation and the derivation --------------------------------------------------------------
def test_a_convolution_written_in_index_notation_is_conv2d():
    g = gc.Graph("conv")
    x, K = g.input("x", ("n", 2, 9, 8)), g.param("K", (3, 2, 3, 3))
    mine = gc.index_sum("y[n,o,i,j] = x[n,c,2*i+p,2*j+q] * K[o,c,p,q]", x=x, K=K)
    assert mine.shape == ("n", 3, 4, 3) and mine.name == "y"
    rng = np.random.default_rng(9)
    values = {"x": rng.standard_normal((2, 2, 9, 8)), "K": rng.standard_normal((3, 2, 3, 3))}
    np.testing.assert_allclose(gc.compile(mine)(values), gc.compile(gc.conv2d(x, K, stride=2))(values), rtol=1e-13)


def test_explain_prints_the_input_gradient_as_a_gather_with_its_bounds():
    g = gc.Graph("conv")
    x, W = g.input("X", ("n", 1, 28, 28)), g.param("W", (30, 1, 5, 5))
    Y = gc.conv2d(x, W, name="Y")
    dY = g.input("dY", Y.shape)
    dX, dW = gc.grad(Y, [x, W], seed=dY)
    text = gc.explain([Y, dX, dW], forward=True)
    assert "Y[n,o,i,j] = Σ_{c,p,q} X[n,c,i+p,j+q]·W[o,c,p,q]    (Y = im2col(X)·Wᵀ)" in text
    assert "dX[n,c,u,v] = Σ_{o,p,q} dY[n,o,u-p,v-q]·W[o,c,p,q]  (0 ≤ u-p < 24, 0 ≤ v-q < 24)    " \
           "(dX = col2im(dY·W))" in text
    assert "dW[o,c,p,q] = Σ_{n,i,j} dY[n,o,i,j]·X[n,c,i+p,j+q]    (dW = dYᵀ·im2col(X))" in text
    steps = gc.explain([dX], forward=True, steps=True)
    assert "δ[d,i+p]·δ[e,j+q]" in steps  # the δ of each shifted index, before it is solved
    latex = gc.explain([dX], latex=True)
    assert r"\quad (0 \le  u-p < 24, 0 \le  v-q < 24)" in latex


def test_a_strided_input_gradient_is_solved_for_the_window_letter():
    g = gc.Graph("conv")
    x, W = g.input("X", ("n", 1, 9, 9)), g.param("W", (2, 1, 3, 3))
    Y = gc.conv2d(x, W, stride=2, name="Y")
    (dX,) = gc.grad(Y, [x], seed=g.input("dY", Y.shape))
    assert "dX[n,c,u,v] = Σ_{o,i,j} dY[n,o,i,j]·W[o,c,u-2i,v-2j]  (0 ≤ u-2i < 3, 0 ≤ v-2j < 3)" in gc.explain(dX)


def test_a_conv_net_round_trips_through_a_graph_file(tmp_path):
    from graphc.models import simple_conv_net
    from graphc.serialize import graph_difference, load_graph, save_graph

    net = simple_conv_net(input_dim=(1, 10, 10), filters=3, kernel=3, hidden_size=5)
    grads = gc.grad(net.loss, list(net.params.values()))
    save_graph([net.loss, *grads], tmp_path / "convnet.json")
    _, loaded = load_graph(tmp_path / "convnet.json")
    assert graph_difference([net.loss, *grads], loaded) is None
    assert gc.explain(loaded[1:], forward=True) == gc.explain(grads, forward=True)


# -- bad declarations ------------------------------------------------------------------------------
@pytest.mark.parametrize("call,message", [
    (lambda x, K: gc.conv2d(x, K["big"]), r"conv2d: kernel 'big' \(2, 3, 9, 9\).*larger than the padded input 8×8"),
    (lambda x, K: gc.conv2d(x, K["ok"], padding=1, dilation=5), r"spanning 11×11 .* larger than the padded input 10×10"),
    (lambda x, K: gc.conv2d(x, K["ok"], stride=0), r"conv2d: stride must be an int ≥ 1"),
    (lambda x, K: gc.conv2d(x, K["ok"], dilation=(1, 0)), r"conv2d: dilation must be an int ≥ 1"),
    (lambda x, K: gc.conv2d(x, K["ok"], padding=-1), r"conv2d: padding must be an int ≥ 0"),
    (lambda x, K: gc.conv2d(x, K["chan"]), r"conv2d: 'x' \(n, 3, 8, 8\) has 3 channels but kernel 'chan' "
                                           r"\(2, 2, 3, 3\) expects 2"),
    (lambda x, K: gc.conv2d(x, K["ok"], K["ok"]), r"conv2d: the bias must be a float node of shape \(2,\)"),
    (lambda x, K: gc.max_pool2d(x, 9), r"max_pool2d: window \(9, 9\) is larger than the padded input 8×8"),
    (lambda x, K: gc.avg_pool2d(x, 2, stride=0), r"avg_pool2d: stride must be an int ≥ 1"),
    (lambda x, K: gc.max_pool2d(x, 2, padding=2), r"max_pool2d: padding \(2, 2\) is more than half the window"),
    (lambda x, K: gc.pad(x, -1), r"pad of 'x': negative padding"),
    (lambda x, K: gc.pad(x, [(0, 0), (1, 1)]), r"pad: widths must be one \(before, after\) pair"),
    (lambda x, K: gc.reshape(x, ("n", 7)), r"reshape of 'x': shape \(n, 7\) does not hold the elements"),
    (lambda x, K: gc.conv2d(x.flatten(), K["ok"]), r"conv2d: 'reshape\d+' has shape \(n, 192\); expected"),
])
def test_a_bad_declaration_names_the_op_and_the_shapes(call, message):
    g = gc.Graph("bad")
    x = g.input("x", ("n", 3, 8, 8))
    K = {"ok": g.param("ok", (2, 3, 3, 3)), "big": g.param("big", (2, 3, 9, 9)), "chan": g.param("chan", (2, 2, 3, 3))}
    with pytest.raises(gc.ShapeError, match=message):
        call(x, K)


@pytest.mark.parametrize("lowering", LOWERINGS)
@pytest.mark.parametrize("text,shapes,reference", [
    ("y[i] = x[4-i]", {"x": (5,)}, lambda v: v["x"][::-1]),  # a negative coefficient: the range from below
    ("y[i] = A[i,i]", {"A": (4, 4)}, lambda v: np.diag(v["A"])),  # a repeated letter: a diagonal
    ("y[i] = x[2] * x[i]", {"x": (5,)}, lambda v: v["x"][2] * v["x"]),  # a constant index
    ("y[i+p] = s[i] * w[p]", {"s": (4,), "w": (3,)}, lambda v: np.convolve(v["s"], v["w"])),  # overlapping writes
])
def test_index_sums_written_by_hand_match_numpy_and_finite_differences(text, shapes, reference, lowering):
    g = gc.Graph("hand")
    nodes = {k: g.input(k, shape) for k, shape in shapes.items()}
    y = gc.index_sum(text, shape=(6,) if text.startswith("y[i+p]") else None, **nodes)
    rng = np.random.default_rng(13)
    values = {k: rng.standard_normal(shape) for k, shape in shapes.items()}
    np.testing.assert_allclose(gc.compile(y, lowering=lowering)(values), reference(values), rtol=1e-13, atol=1e-14)
    gc.check_grads((gc.tanh(y) * y).sum(), list(nodes.values()), values, lowering=lowering)


@pytest.mark.parametrize("text,operands,message", [
    ("y[i] = x[i+p]", {}, r"'x' is not given"),
    ("y[i] = x[i*i]", {"x": (5,)}, r"'i \* i' is not an integer times an index"),
    ("y[i] = x[i**2]", {"x": (5,)}, r"index 'i \*\* 2' is not affine"),
    ("y[i] = x[i+p] * w[p]", {"x": (3,), "w": (4,)}, r"reaches 3 for i=0: the window is larger than the axis \(3\)"),
    ("y[i] = x[i+5]", {"x": (5,)}, r"indexed by i\+5, which reaches 5 for i=0"),
    ("y[i] = x[p]", {"x": (5,)}, r"output index 'i' appears in no operand; give its range"),
    ("y[i] = x[2*i] * w[i]", {"x": (5,), "w": (4,)}, r"runs from 0 to 6"),
    ("y[i] = x[ab]", {"x": (5,)}, r"'ab' is not an index letter"),
    ("y[i] = x[i] + w[i]", {"x": (5,), "w": (5,)}, r"must be a product"),
    ("y[i] = x[i]", {"x": (5,), "w": (5,)}, r"operand\(s\) w do not appear"),
])
def test_index_notation_errors_name_the_expression_and_the_index(text, operands, message):
    g = gc.Graph("bad")
    nodes = {k: g.input(k, shape) for k, shape in operands.items()}
    with pytest.raises(gc.GraphError, match=message):
        gc.index_sum(text, **nodes)


def test_forward_mode_and_the_hessian_through_conv_pool_and_pad_match_torch():
    g = gc.Graph("jvp")
    x = g.input("x", (1, 2, 6, 5))
    K = g.param("K", (2, 2, 2, 2))
    y = gc.avg_pool2d(gc.max_pool2d(gc.conv2d(x, K, padding=1), 2, stride=1), 2, padding=1).flatten()
    loss = (gc.tanh(y) ** 2).sum()
    tK = g.input("tK", K.shape)
    rng = np.random.default_rng(10)
    values = {"x": rng.standard_normal(x.shape), "K": rng.standard_normal(K.shape), "tK": rng.standard_normal(K.shape)}
    got_jvp, got_hessian = gc.compile([gc.jvp(y, K, tK), gc.hessian(loss, K)])(values)
    F = torch.nn.functional

    def f(k):
        return F.avg_pool2d(F.max_pool2d(F.conv2d(torch.tensor(values["x"]), k, padding=1), 2, 1), 2, padding=1).flatten(1)

    _, ref_jvp = torch.func.jvp(f, (torch.tensor(values["K"]),), (torch.tensor(values["tK"]),))
    ref_hessian = torch.autograd.functional.hessian(lambda k: (torch.tanh(f(k)) ** 2).sum(), torch.tensor(values["K"]))
    np.testing.assert_allclose(got_jvp, ref_jvp.numpy(), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(got_hessian, ref_hessian.numpy().reshape(got_hessian.shape), rtol=1e-10, atol=1e-11)


def test_a_conv_net_compiled_for_the_array_api_runs_on_torch_tensors():
    g = gc.Graph("torch")
    x, K = g.input("x", ("n", 2, 7, 7)), g.param("K", (3, 2, 3, 3))
    y = gc.max_pool2d(gc.relu(gc.conv2d(x, K, stride=2, padding=1)), 2, padding=1)
    loss = (y ** 2).sum()
    fn = gc.compile([loss, *gc.grad(loss, [K])], lowering="array_api")
    rng = np.random.default_rng(11)
    xv, Kv = rng.standard_normal((2, 2, 7, 7)), rng.standard_normal((3, 2, 3, 3))
    got = fn(x=torch.tensor(xv), K=torch.tensor(Kv))
    expected = gc.compile([loss, *gc.grad(loss, [K])])(x=xv, K=Kv)
    assert all(isinstance(v, torch.Tensor) for v in got)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels,filters,form", [(30, 50, "slice-adds"), (50, 10, "gather"), (64, 8, "gather")])
def test_the_input_gradient_runs_as_the_cheaper_of_gather_and_slice_adds(channels, filters, form):
    """The numpy lowering picks, from the shapes, the gather explain prints (its window: O·H·W·K²
    per image) or slice-adds (a temporary of C·I·J·K² per image, added K² times); both are exact."""
    g = gc.Graph("dx")
    x, W = g.input("x", ("n", channels, 12, 12)), g.input("W", (filters, channels, 3, 3))
    y = gc.conv2d(x, W, padding=1)
    dy = g.input("dy", y.shape)
    fn = gc.compile(gc.grad(y, [x], seed=dy))
    assert ("rt.SliceAdds" in fn.source) == (form == "slice-adds")
    rng = np.random.default_rng(12)
    values = {"x": rng.standard_normal((3, channels, 12, 12)), "W": rng.standard_normal(W.shape),
              "dy": rng.standard_normal((3,) + y.shape[1:])}
    ref = torch.nn.grad.conv2d_input(values["x"].shape, torch.tensor(values["W"]), torch.tensor(values["dy"]),
                                     padding=1).numpy()
    (got,) = fn(values)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
