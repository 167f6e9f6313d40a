"""Checkpoints survive SIGKILL, and a resumed run reproduces an uninterrupted one exactly."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from graphc.errors import GraphcError
from graphc.serialize import load_arrays
from graphc.train import train_mnist
from helpers import checkpoint_config, small_mnist

# A training run in another process, checkpointing every iteration (argv: out, iters, tests/).
CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[3])
    from helpers import checkpoint_config, small_mnist
    from graphc.train import train_mnist
    train_mnist(checkpoint_config(sys.argv[1], int(sys.argv[2]), checkpoint_every=1), log=lambda s: None,
                data=small_mnist())
""")


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_resume_reproduces_an_uninterrupted_run(tmp_path, optimizer):
    whole = train_mnist(checkpoint_config(tmp_path / "whole", 90, optimizer=optimizer), log=lambda s: None,
                        data=small_mnist())
    part = tmp_path / "part"
    train_mnist(checkpoint_config(part, 40, checkpoint_every=20, optimizer=optimizer), log=lambda s: None,
                data=small_mnist())
    resumed = train_mnist(checkpoint_config(part, 90, checkpoint_every=20, optimizer=optimizer), log=lambda s: None,
                          data=small_mnist())
    for k in whole.params:
        assert np.array_equal(whole.params[k], resumed.params[k]), k
    assert whole.history["loss"] == resumed.history["loss"]
    # The shorter run evaluated at its own last iteration (40) too; otherwise the same evaluations.
    assert [i for i in resumed.history["iteration"] if i != 40] == whole.history["iteration"]


def test_sigkill_while_checkpointing_loses_nothing(tmp_path):
    out = tmp_path / "run"
    total = 3000
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(out), str(total), os.path.dirname(__file__)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = out / "checkpoint.npz"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.01)
    time.sleep(0.5)  # let it write a few hundred more checkpoints, then kill it mid-stream
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL, child.stderr.read().decode()
    # The file is always whole: the old one or the new one, never half-written.
    arrays, meta = load_arrays(checkpoint)
    assert 0 < meta["iteration"] < total and len(arrays["history/loss"]) == meta["iteration"]
    resumed = train_mnist(checkpoint_config(out, total, checkpoint_every=500), log=lambda s: None, data=small_mnist())
    whole = train_mnist(checkpoint_config(tmp_path / "whole", total), log=lambda s: None, data=small_mnist())
    for k in whole.params:
        assert np.array_equal(whole.params[k], resumed.params[k]), k


def test_resume_with_other_settings_is_refused(tmp_path):
    train_mnist(checkpoint_config(tmp_path, 20, checkpoint_every=10), log=lambda s: None, data=small_mnist())
    other = checkpoint_config(tmp_path, 40, checkpoint_every=10)
    other.lr = 0.5
    with pytest.raises(GraphcError, match="other settings.*lr"):
        train_mnist(other, log=lambda s: None, data=small_mnist())


def _damage(path, change):
    """Rewrite the checkpoint at ``path`` with ``change(arrays, meta)`` applied."""
    from graphc.serialize import save_arrays

    arrays, meta = load_arrays(path)
    change(arrays, meta)
    save_arrays(path, arrays, meta=meta)


@pytest.mark.parametrize("change, message", [
    (lambda a, m: m.pop("step_count"), "step_count must be a count"),
    (lambda a, m: m.update(iteration="ten"), "iteration must be a count"),
    (lambda a, m: m.update(rng={"bit_generator": "nonsense"}), "RNG state does not restore"),
    (lambda a, m: m["rng"]["state"].update(state=-1), "RNG state does not restore"),  # OverflowError in numpy
    (lambda a, m: m["evaluations"].update(test_acc=["x"]), "evaluations are not three lists"),
    (lambda a, m: a.pop("history/loss"), "history/loss is missing"),
    (lambda a, m: m.pop("config"), "config is missing"),
    (lambda a, m: a.update({"param/W1": np.zeros(3)}), "param/W1 is missing or has the wrong shape"),
], ids=["step_count", "iteration", "rng", "rng_overflow", "evaluations", "loss", "config", "param"])
def test_a_damaged_checkpoint_is_refused_by_name_and_restores_nothing(tmp_path, change, message):
    train_mnist(checkpoint_config(tmp_path, 20, checkpoint_every=10), log=lambda s: None, data=small_mnist())
    _damage(tmp_path / "checkpoint.npz", change)
    with pytest.raises(GraphcError, match=message):
        train_mnist(checkpoint_config(tmp_path, 40, checkpoint_every=10), log=lambda s: None, data=small_mnist())
