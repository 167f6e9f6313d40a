"""The flagship job: the two-layer net against the seed's numpy layers, and a short real training run."""

import os
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc.models import init_two_layer_params, two_layer_net
from seed_reference import TwoLayerNet

DATA = os.environ.get("GRAPHC_DATA")


def _batch(rng, n=32, integer=False):
    x = rng.random((n, 784))
    labels = rng.integers(0, 10, n)
    return x, (labels if integer else np.eye(10)[labels])


@pytest.mark.parametrize("integer", [False, True], ids=["one_hot", "integer_labels"])
def test_compiled_gradients_equal_seed_backprop(integer):
    """graphc's derived gradients equal the seed's hand-written backprop (bug fixed) to 1e-10 in float64."""
    rng = np.random.default_rng(1)
    net = two_layer_net(integer_labels=integer)
    params = init_two_layer_params(rng, dtype=np.float64, weight_init_std=0.1)
    params["b1"] = 0.1 * rng.standard_normal(50)  # exercise the bias gradients with nonzero values
    x, t = _batch(rng, integer=integer)
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
    x, t = _batch(rng, integer=True)
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
    x, t = _batch(rng)
    step = TrainStep(net.loss, params, SGD(lr=0.1))
    step(x=x, t=t)
    expected = TwoLayerNet({k: v.copy() for k, v in before.items()}).gradient(x, t)
    for k in params:
        np.testing.assert_allclose(params[k], before[k] - 0.1 * expected[k], rtol=1e-10, atol=1e-13, err_msg=k)


@pytest.mark.skipif(not DATA or not Path(DATA, "train-images-idx3-ubyte.gz").exists(),
                    reason="set GRAPHC_DATA to the MNIST files (CI sets it to ../shared/mnist)")
def test_short_mnist_run_learns(tmp_path):
    """2,000 seed iterations on the real files.  Measured (float32): test accuracy 0.9359, 0.9365, 0.9369 at seeds 0, 1, 2."""
    from graphc.train import TrainConfig, train_mnist

    result = train_mnist(TrainConfig(iters=2000, seed=0, data=DATA, out=str(tmp_path), progress=False), log=lambda s: None)
    assert result.test_acc >= 0.93
    assert result.train_acc >= 0.93
    assert (tmp_path / "params.npz").exists() and (tmp_path / "curves.png").exists()
    saved = np.load(tmp_path / "params.npz", allow_pickle=False)
    assert saved["W1"].shape == (784, 50) and saved["W1"].dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])  # float16: no pair, the division
def test_uint8_images_normalize_to_the_loaders_values(dtype):
    """The run keeps images as uint8 and normalizes per batch: bit for bit what load_mnist(normalize=True) gives."""
    from graphc.train import normalize_into

    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = np.empty(pixels.shape, dtype)
    np.testing.assert_array_equal(normalize_into(pixels, out), np.divide(pixels, 255, dtype=dtype))
    assert out.dtype == dtype


@pytest.mark.parametrize("dtype, m", [(np.float32, 3), (np.float64, 77), (np.float16, None)])
def test_exact_pixel_scale_is_two_multiplies_giving_the_quotient(dtype, m):
    from graphc.train import exact_pixel_scale

    scale = exact_pixel_scale(dtype)
    if m is None:
        assert scale is None
        return
    assert scale[0] == m and scale[0].dtype == dtype and scale[1].dtype == dtype
    pixels = np.arange(256, dtype=dtype)
    np.testing.assert_array_equal(pixels * scale[0] * scale[1], pixels / dtype(255))


def _synthetic_mnist(rng, n_train=300, n_test=70):
    images = [rng.integers(0, 256, (n, 784), dtype=np.uint8) for n in (n_train, n_test)]
    labels = [np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)] for n in (n_train, n_test)]
    return images, labels


def test_evaluator_gives_the_same_accuracy_on_uint8_and_float_images():
    from graphc.train import Evaluator

    rng = np.random.default_rng(4)
    (x, _), (t, _) = _synthetic_mnist(rng)
    labels = t.argmax(axis=1)
    net = two_layer_net()
    params = init_two_layer_params(rng, dtype=np.float32, weight_init_std=0.1)
    for chunk in (7, 64, 1000):  # chunks that do not divide the set, and one larger than it
        evaluator = Evaluator(net.logits, chunk, np.float32)
        on_u8 = evaluator.accuracy(params, x, labels)
        on_float = evaluator.accuracy(params, np.divide(x, 255, dtype=np.float32), labels)
        assert on_u8 == on_float and 0.0 < on_u8 < 1.0


def test_training_on_uint8_images_equals_training_on_normalized_ones():
    """The staging path (gather uint8, normalize into the batch buffer) changes nothing but memory."""
    from graphc.train import TrainConfig, train_mnist

    rng = np.random.default_rng(5)
    (x, x_test), (t, t_test) = _synthetic_mnist(rng)
    config = TrainConfig(iters=30, batch_size=20, out=None, progress=False, plot=False, eval_chunk=64)
    as_u8 = train_mnist(config, log=lambda s: None, data=((x, t), (x_test, t_test)))
    normalized = [np.divide(a, 255, dtype=np.float32) for a in (x, x_test)]
    as_float = train_mnist(config, log=lambda s: None, data=((normalized[0], t), (normalized[1], t_test)))
    for k in as_u8.params:
        np.testing.assert_array_equal(as_u8.params[k], as_float.params[k], err_msg=k)
    assert as_u8.history == as_float.history


@pytest.mark.skipif(not DATA or not Path(DATA, "train-images-idx3-ubyte.gz").exists(),
                    reason="set GRAPHC_DATA to the MNIST files (CI sets it to ../shared/mnist)")
def test_uint8_images_option_on_the_real_files_changes_nothing_but_memory():
    from graphc.train import TrainConfig, train_mnist

    runs = [train_mnist(TrainConfig(iters=200, data=DATA, out=None, progress=False, plot=False, images=images),
                        log=lambda s: None) for images in ("float", "uint8")]
    for k in runs[0].params:
        np.testing.assert_array_equal(runs[0].params[k], runs[1].params[k], err_msg=k)
    assert runs[0].history == runs[1].history


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
