"""TrainStep and the optimizers on every array library, against numpy's in-place step in float64.

Two ways to step: ``step(x=..., t=...)`` updates numpy arrays, torch tensors (CPU, CUDA) and
CuPy arrays in place; ``params, state, loss = step.apply(params, state, batch)`` is the pure
step, for any library, JAX included (also as ``jax.jit(step.apply)``).  Three steps of SGD,
Momentum and Adam on the two-layer net must give numpy's losses, params and optimizer state
to 1e-12.  A backend whose library (or GPU) is absent is skipped, saying so.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphc.backends import asarrays, to_numpy
from graphc.errors import BindingError
from graphc.models import init_two_layer_params, two_layer_net
from graphc.optim import SGD, Adam, Momentum, TrainStep

OPTIMIZERS = {"sgd": lambda: SGD(lr=0.1), "momentum": lambda: Momentum(lr=0.1, momentum=0.9),
              "adam": lambda: Adam(lr=0.01)}
STEPS = 3


def _problem(integer_labels=False):
    rng = np.random.default_rng(7)
    net = two_layer_net(input_size=12, hidden_size=6, output_size=4, integer_labels=integer_labels)
    params = init_two_layer_params(rng, 12, 6, 4, weight_init_std=0.3, dtype=np.float64)
    batches = []
    for _ in range(STEPS):
        x = rng.standard_normal((8, 12))
        labels = rng.integers(0, 4, 8)
        batches.append({"x": x, "t": labels if integer_labels else np.eye(4)[labels]})
    return net, params, batches


def _numpy_run(make, integer_labels=False):
    net, params, batches = _problem(integer_labels)
    step = TrainStep(net.loss, params, make())
    losses = [float(step(**b)) for b in batches]
    return losses, params, dict(step.state)


def _library(name):
    """(library, device) of a backend, or a skip saying what is missing."""
    if name.startswith("torch"):
        torch = pytest.importorskip("torch", reason="torch is not installed")
        pytest.importorskip("array_api_compat", reason="array-api-compat is not installed")
        if name == "torch-cuda" and not torch.cuda.is_available():
            pytest.skip("no CUDA device for torch on this machine")
        return "torch", "cuda" if name == "torch-cuda" else "cpu"
    if name.startswith("jax"):
        pytest.importorskip("jax", reason="jax is not installed")
    if name == "dask":
        pytest.importorskip("dask.array", reason="dask[array] is not installed")
    if name == "cupy":
        cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
        try:
            if cupy.cuda.runtime.getDeviceCount() < 1:
                raise RuntimeError("no device")
        except Exception:  # noqa: BLE001
            pytest.skip("no CUDA device for CuPy on this machine")
    pytest.importorskip("array_api_compat", reason="array-api-compat is not installed")
    return {"jax-jit": "jax"}.get(name, name), None


def _assert_close(got_losses, got_params, got_state, want):
    losses, params, state = want
    np.testing.assert_allclose(got_losses, losses, rtol=1e-12)
    for k in params:
        np.testing.assert_allclose(to_numpy(got_params[k]), params[k], rtol=1e-12, atol=1e-15, err_msg=k)
    for k in state:
        np.testing.assert_allclose(to_numpy(got_state[k]), state[k], rtol=1e-12, atol=1e-15, err_msg=k)


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("backend", ["torch", "torch-cuda", "cupy"])
def test_in_place_steps_equal_numpys(backend, optimizer):
    library, device = _library(backend)
    net, params, batches = _problem()
    held = asarrays(params, library, device=device)
    tensors = dict(held)
    step = TrainStep(net.loss, held, OPTIMIZERS[optimizer]())
    losses = [float(step(asarrays(b, library, device=device))) for b in batches]
    # updated in place: the very arrays given, still of their library and device
    assert all(step.params[k] is tensors[k] for k in tensors)
    assert all(type(v) is type(tensors["W1"]) for v in [*step.params.values(), *step.state.values()])
    _assert_close(losses, step.params, step.state, _numpy_run(OPTIMIZERS[optimizer]))


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("backend", ["numpy", "torch", "jax", "jax-jit", "dask"])
def test_pure_steps_equal_numpys(backend, optimizer, x64):
    library, device = _library(backend)
    net, params, batches = _problem()
    given = asarrays(params, library)
    step = TrainStep(net.loss, given, OPTIMIZERS[optimizer]())
    apply = step.apply
    if backend == "jax-jit":
        import jax

        apply = jax.jit(step.apply)
    p, state, losses = dict(given), step.init_state(), []
    for b in batches:
        p, state, loss = apply(p, state, asarrays(b, library))
        losses.append(float(to_numpy(loss)))
    assert int(to_numpy(state["step"])) == STEPS
    _assert_close(losses, p, state, _numpy_run(OPTIMIZERS[optimizer]))
    for k, v in given.items():  # the arrays given were not written
        np.testing.assert_array_equal(to_numpy(v), params[k])


def test_integer_labels_and_float32_on_torch():
    _library("torch")
    for integer_labels in (False, True):
        net, params, batches = _problem(integer_labels)
        held = asarrays(params, "torch")
        step = TrainStep(net.loss, held, Adam(lr=0.01))
        losses = [float(step(asarrays(b, "torch"))) for b in batches]
        _assert_close(losses, step.params, step.state, _numpy_run(lambda: Adam(lr=0.01), integer_labels))
    # float32 tensors stay float32, Adam's step size included
    net, params, batches = _problem()
    step = TrainStep(net.loss, asarrays({k: v.astype(np.float32) for k, v in params.items()}, "torch"), Adam())
    loss = step(asarrays({k: v.astype(np.float32) for k, v in batches[0].items()}, "torch"))
    assert str(loss.dtype) == "torch.float32" and all(str(v.dtype) == "torch.float32" for v in step.state.values())


def test_apply_on_numpy_equals_the_in_place_step_and_is_repeatable():
    net, params, batches = _problem()
    step = TrainStep(net.loss, {k: v.copy() for k, v in params.items()}, Adam(lr=0.01))
    state = step.init_state()
    first = step.apply(params, state, batches[0])
    again = step.apply(params, state, batches[0])  # a pure function: the same inputs, the same step
    for a, b in zip(first[0].values(), again[0].values()):
        np.testing.assert_array_equal(a, b)
    loss = step(**batches[0])
    assert float(first[2]) == pytest.approx(float(loss), rel=1e-12)
    for k in params:
        np.testing.assert_allclose(first[0][k], step.params[k], rtol=1e-12, atol=1e-15)


# -- what the steps refuse -------------------------------------------------------------------------
def test_jax_params_cannot_be_stepped_in_place(x64):
    _library("jax")
    net, params, batches = _problem()
    step = TrainStep(net.loss, asarrays(params, "jax"), SGD())
    with pytest.raises(BindingError, match=r"JAX arrays, which cannot be updated in place; call params, state, "
                                           r"loss = step\.apply\(params, state, batch\)"):
        step(asarrays(batches[0], "jax"))


def test_a_numpy_batch_for_torch_params_names_both_libraries():
    _library("torch")
    net, params, batches = _problem()
    step = TrainStep(net.loss, asarrays(params, "torch"), Adam())
    with pytest.raises(BindingError, match=r"'x', 't' are numpy arrays; 'W1', 'b1', 'W2', 'b2' are torch tensors; "
                                           r".*asarrays\(\{'x': \.\.\., 't': \.\.\.\}, 'torch'\)"):
        step(batches[0])


def test_params_of_two_libraries_or_needing_autograd_are_refused():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    _library("torch")
    net, params, _ = _problem()
    mixed = {**params, "W2": torch.from_numpy(params["W2"])}
    with pytest.raises(BindingError, match=r"param 'W2' is a torch tensor but 'W1' is a numpy array"):
        TrainStep(net.loss, mixed, Adam())
    tracked = {k: torch.from_numpy(v).requires_grad_() for k, v in params.items()}
    with pytest.raises(BindingError, match=r"'W1' is a torch tensor that requires grad.*W1\.detach\(\)"):
        TrainStep(net.loss, tracked, Adam())
    half = {k: torch.from_numpy(v).to(torch.float16) for k, v in params.items()}
    with pytest.raises(BindingError, match=r"'W1': dtype float16 is not supported.*X\.to\(torch\.float32\)"):
        TrainStep(net.loss, half, Adam())


def test_apply_names_what_is_missing():
    net, params, batches = _problem()
    step = TrainStep(net.loss, params, Adam())
    state = step.init_state()
    with pytest.raises(BindingError, match=r"state must hold exactly \['W1\.m', .*'step'\].*missing \['step'\]"):
        step.apply(params, {k: v for k, v in state.items() if k != "step"}, batches[0])
    with pytest.raises(BindingError, match=r"params must hold exactly .*missing \['b2'\]"):
        step.apply({k: v for k, v in params.items() if k != "b2"}, state, batches[0])
    with pytest.raises(BindingError, match=r"\['W1'\] are params; give them in params"):
        step.apply(params, state, {**batches[0], "W1": params["W1"]})
