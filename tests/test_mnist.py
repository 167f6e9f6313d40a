"""The flagship job: the two-layer net against the seed's numpy layers (gradients and an SGD
step), the pixel net that divides by 255 inside its products, training on uint8 or float
images, and short training runs on the real MNIST files ($GRAPHC_DATA).
"""

import os
import re
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc.models import init_two_layer_params, two_layer_net
from graphc.ops.fused import Gemm
from helpers import mnist_batch, readers_of, update_gemms
from graphc.reference import TwoLayerNet

DATA = os.environ.get("GRAPHC_DATA")
needs_mnist_files = pytest.mark.skipif(not DATA or not Path(DATA, "train-images-idx3-ubyte.gz").exists(),
                                       reason="set GRAPHC_DATA to the MNIST files (CI sets it to ../shared/mnist)")


@pytest.mark.parametrize("integer", [False, True], ids=["one_hot", "integer_labels"])
def test_compiled_gradients_equal_seed_backprop(integer):
    """graphc's derived gradients equal the seed's hand-written backprop (bug fixed) to 1e-10 in float64."""
    rng = np.random.default_rng(1)
    net = two_layer_net(integer_labels=integer)
    params = init_two_layer_params(rng, dtype=np.float64, weight_init_std=0.1)
    params["b1"] = 0.1 * rng.standard_normal(50)  # exercise the bias gradients with nonzero values
    x, t = mnist_batch(rng, integer=integer)
    names = list(net.params)
    fn = gc.compile([net.loss, *gc.grad(net.loss, [net.params[k] for k in names])])
    loss, *grads = fn(params, x=x, t=t)
    reference = TwoLayerNet({k: v.copy() for k, v in params.items()})
    expected = reference.gradient(x, t)
    for name, got in zip(names, grads):
        np.testing.assert_allclose(got, expected[name], rtol=1e-10, atol=1e-12, err_msg=name)
    # The seed's loss adds 1e-7 inside the log; graphc's is the exact log-softmax.
    assert loss == pytest.approx(reference.loss(x, t), abs=1e-5)


def test_seed_integer_label_bug_is_caught():
    """With the seed's '= 1' bug the reference disagrees with graphc: the comparison above has teeth."""
    rng = np.random.default_rng(2)
    net = two_layer_net(integer_labels=True)
    params = init_two_layer_params(rng, dtype=np.float64, weight_init_std=0.1)
    x, t = mnist_batch(rng, integer=True)
    fn = gc.compile(gc.grad(net.loss, [net.params["W2"]]))
    (got,) = fn(params, x=x, t=t)
    buggy = TwoLayerNet({k: v.copy() for k, v in params.items()}, seed_bug=True).gradient(x, t)["W2"]
    assert not np.allclose(got, buggy, rtol=1e-3)


def test_train_step_matches_numpy_sgd():
    """One compiled SGD step updates the params exactly as p -= lr * grad (float64)."""
    from graphc.optim import SGD, TrainStep

    rng = np.random.default_rng(3)
    net = two_layer_net()
    params = init_two_layer_params(rng, dtype=np.float64, weight_init_std=0.1)
    before = {k: v.copy() for k, v in params.items()}
    x, t = mnist_batch(rng)
    step = TrainStep(net.loss, params, SGD(lr=0.1))
    step(x=x, t=t)
    expected = TwoLayerNet({k: v.copy() for k, v in before.items()}).gradient(x, t)
    for k in params:
        np.testing.assert_allclose(params[k], before[k] - 0.1 * expected[k], rtol=1e-10, atol=1e-13, err_msg=k)


@needs_mnist_files
def test_short_mnist_run_learns(tmp_path):
    """2,000 seed iterations on the real files.  Measured (float32): test accuracy 0.9359, 0.9365, 0.9369 at seeds 0, 1, 2."""
    from graphc.train import TrainConfig, train_mnist

    result = train_mnist(TrainConfig(iters=2000, seed=0, data=DATA, out=str(tmp_path), progress=False), log=lambda s: None)
    assert result.test_acc >= 0.93
    assert result.train_acc >= 0.93
    assert (tmp_path / "params.npz").exists() and (tmp_path / "curves.png").exists()
    saved = np.load(tmp_path / "params.npz", allow_pickle=False)
    assert saved["W1"].shape == (784, 50) and saved["W1"].dtype == np.float32


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_the_pixel_net_equals_the_net_on_normalized_images(dtype, rtol):
    """two_layer_net(input_divisor=255) on raw pixels: the seed's net on pixels/255, up to rounding."""
    rng = np.random.default_rng(6)
    pixels = rng.integers(0, 256, (20, 784)).astype(dtype)
    t = np.eye(10, dtype=dtype)[rng.integers(0, 10, 20)]
    params = init_two_layer_params(rng, dtype=dtype, weight_init_std=0.1)
    params["b1"] += dtype(0.05)
    results = []
    for net, x in ((two_layer_net(input_divisor=255), pixels), (two_layer_net(), pixels / dtype(255))):
        grads = gc.grad(net.loss, [net.params[k] for k in ("W1", "b1", "W2", "b2")])
        results.append(gc.compile([net.logits, net.loss, *grads])(params, x=x, t=t))
    for got, want in zip(*results):  # entries near zero after cancellation: an error on the array's scale
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * float(np.abs(want).max()))


def test_the_pixel_nets_step_never_scales_the_images():
    """The division by 255 is folded into the first products: the step reads x with BLAS only."""
    from graphc.optim import SGD, TrainStep

    net = two_layer_net(input_divisor=255)
    step = TrainStep(net.loss, init_two_layer_params(np.random.default_rng(0)), SGD(lr=0.1))
    step(x=np.zeros((100, 784), np.float32), t=np.full((100, 10), 0.1, np.float32))
    # x is read by two gemms only: x·W1 + b1 (α = 1/255) and the W1 update (α = -1/255)
    readers = readers_of(step, "x")
    assert len(readers) == 2 and all(isinstance(n.op, Gemm) for n in readers)
    forward, update = sorted(readers, key=lambda n: n.op.alpha, reverse=True)
    assert update is update_gemms(step)["W1"]
    assert (forward.op.alpha, forward.op.beta) == (1 / 255, 1.0)
    assert (update.op.alpha, update.op.beta) == (-1 / 255, 1.0)


def test_gradients_of_the_pixel_net_match_finite_differences():
    net = two_layer_net(8, 5, 3, input_divisor=255)
    rng = np.random.default_rng(7)
    values = {"x": rng.integers(0, 256, (4, 8)).astype(float), "t": np.eye(3)[rng.integers(0, 3, 4)],
              **init_two_layer_params(rng, 8, 5, 3, weight_init_std=0.5, dtype=np.float64)}
    values["b1"] = rng.standard_normal(5)
    gc.check_grads(net.loss, list(net.params.values()), values)


@pytest.mark.parametrize("divisor", [0, -255, "255", float("nan")])
def test_a_bad_input_divisor_is_refused_at_declaration(divisor):
    with pytest.raises(gc.GraphError, match="input_divisor must be a positive number"):
        two_layer_net(input_divisor=divisor)


def _synthetic_mnist(rng, n_train=300, n_test=70):
    images = [rng.integers(0, 256, (n, 784), dtype=np.uint8) for n in (n_train, n_test)]
    labels = [np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)] for n in (n_train, n_test)]
    return images, labels


def test_training_on_uint8_images_matches_training_on_normalized_ones():
    """The pixel path (gather uint8, cast, the net divides inside its products) agrees to rounding."""
    from graphc.train import TrainConfig, train_mnist

    rng = np.random.default_rng(5)
    (x, x_test), (t, t_test) = _synthetic_mnist(rng)
    config = TrainConfig(iters=30, batch_size=20, out=None, progress=False, plot=False, eval_chunk=64)
    as_u8 = train_mnist(config, log=lambda s: None, data=((x, t), (x_test, t_test)))
    normalized = [np.divide(a, 255, dtype=np.float32) for a in (x, x_test)]
    as_float = train_mnist(config, log=lambda s: None, data=((normalized[0], t), (normalized[1], t_test)))
    for k in as_u8.params:
        np.testing.assert_allclose(as_u8.params[k], as_float.params[k], rtol=1e-4, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(as_u8.history["loss"], as_float.history["loss"], rtol=1e-5)
    assert as_u8.history["train_acc"] == as_float.history["train_acc"]


@needs_mnist_files
def test_uint8_and_float_images_train_alike_on_the_real_files():
    from graphc.train import TrainConfig, train_mnist

    runs = [train_mnist(TrainConfig(iters=200, data=DATA, out=None, progress=False, plot=False, images=images),
                        log=lambda s: None) for images in ("float", "uint8")]
    for k in runs[0].params:  # 200 SGD steps apart by rounding: measured 1.5e-7 at most
        np.testing.assert_allclose(runs[1].params[k], runs[0].params[k], rtol=1e-4, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(runs[1].history["loss"], runs[0].history["loss"], rtol=1e-4)
    for key in ("train_acc", "test_acc"):
        np.testing.assert_allclose(runs[1].history[key], runs[0].history[key], atol=1e-3)


def test_unknown_image_storage_is_refused():
    from graphc.errors import GraphcError
    from graphc.train import TrainConfig, train_mnist

    with pytest.raises(GraphcError, match="images must be 'float' or 'uint8', got 'u8'"):
        train_mnist(TrainConfig(images="u8", out=None, progress=False), log=lambda s: None, data=((None, None), (None, None)))


def test_training_keeps_uint8_images_by_default():
    from graphc.train import TrainConfig

    assert TrainConfig().images == "uint8"


@pytest.mark.parametrize("argv, images", [([], "uint8"), (["--images", "float"], "float"),
                                          (["--images", "uint8"], "uint8"), (["--uint8-images"], "uint8")])
def test_cli_image_storage_flags(monkeypatch, argv, images):
    import graphc.train
    from graphc.cli import main

    seen = []

    class Result:
        def summary(self):
            return "done"

    monkeypatch.setattr(graphc.train, "train_mnist", lambda config: seen.append(config) or Result())
    assert main(["train-mnist", "--no-progress", *argv]) == 0
    assert seen[0].images == images


@pytest.mark.parametrize("argv, message", [
    (["--lr", "-1"], "argument --lr: must be a positive finite number, got -1"),
    (["--lr", "nan"], "argument --lr: must be a positive finite number"),
    (["--batch-size", "0"], "argument --batch-size: must be a positive integer, got 0"),
    (["--hidden", "0"], "argument --hidden: must be a positive integer"),
    (["--iters", "-5"], "argument --iters: must be 0 or more"),
    (["--checkpoint-every", "-1"], "argument --checkpoint-every: must be 0 or more"),
    (["--momentum", "1.5"], r"argument --momentum: must lie in \[0, 1\)"),
    (["--weight-init-std", "0"], "argument --weight-init-std: must be a positive finite number"),
    (["--lr", "fast"], "argument --lr: not a number: 'fast'"),
    (["--data", __file__], "argument --data: not a directory"),
])
def test_cli_refuses_bad_values_with_status_2_and_no_traceback(argv, message, capsys):
    from graphc.cli import main

    with pytest.raises(SystemExit) as info:
        main(["train-mnist", "--no-progress", *argv])
    err = capsys.readouterr().err
    assert info.value.code == 2 and re.search(message, err), err
    assert "Traceback" not in err
