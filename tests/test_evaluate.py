"""Evaluator: accuracy over a whole set, uint8 chunks cast either way, bad calls refused,
one evaluator shared by threads."""

from collections import deque

import numpy as np
import pytest

import graphc as gc
from graphc.backends.numpy.casting import RowCaster
from graphc.evaluate import Evaluator
from graphc.models import init_two_layer_params, two_layer_net
from helpers import reference_logits, run_in_threads


def _set(n=300, seed=4):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 784), dtype=np.uint8)
    params = init_two_layer_params(rng, dtype=np.float32, weight_init_std=0.1)
    return x, rng.integers(0, 10, n), params


def _reference_accuracy(params, x, labels):
    """float64 numpy, on the normalized images."""
    return float(np.mean(reference_logits(params, x).argmax(axis=1) == labels))


@pytest.mark.parametrize("chunk", [7, 64, 1000])  # chunks that do not divide the set, one larger than it
def test_uint8_and_float_images_give_the_reference_accuracy(chunk):
    x, labels, params = _set()
    on_u8 = Evaluator(two_layer_net(input_divisor=255).logits, chunk).accuracy(params, x, labels)
    on_float = Evaluator(two_layer_net().logits, chunk).accuracy(params, np.divide(x, 255, dtype=np.float32), labels)
    assert on_u8 == on_float == pytest.approx(_reference_accuracy(params, x, labels), abs=1 / len(x))
    assert 0.0 < on_u8 < 1.0


@pytest.mark.parametrize("way", ["straight", "block"])
def test_either_way_of_casting_gives_the_same_accuracy(way, monkeypatch):
    x, labels, params = _set()
    other = "straight" if way == "block" else "block"

    def forced(self, rows, out, own=0):  # every call takes ``way`` (no probes)
        self.timings[way], self.timings[other] = deque([1e-9] * 3, maxlen=3), deque([1e-6] * 3, maxlen=3)
        self.calls = 1
        return original(self, rows, out, own)

    original = RowCaster.__call__
    monkeypatch.setattr(RowCaster, "__call__", forced)
    got = Evaluator(two_layer_net(input_divisor=255).logits, 64).accuracy(params, x, labels)
    monkeypatch.undo()
    assert got == Evaluator(two_layer_net(input_divisor=255).logits, 64).accuracy(params, x, labels)


def test_a_label_count_that_differs_is_refused():
    x, labels, params = _set(30)
    with pytest.raises(gc.GraphcError, match="30 inputs but 29 labels"):
        Evaluator(two_layer_net(input_divisor=255).logits, 8).accuracy(params, x, labels[:-1])


def test_an_empty_set_is_refused():
    x, labels, params = _set(30)
    with pytest.raises(gc.GraphcError, match="empty"):
        Evaluator(two_layer_net(input_divisor=255).logits, 8).accuracy(params, x[:0], labels[:0])


@pytest.mark.parametrize("chunk", [0, -5, 2.5, True, "100"])
def test_a_bad_chunk_is_refused(chunk):
    with pytest.raises(gc.GraphcError, match="chunk must be a positive integer"):
        Evaluator(two_layer_net().logits, chunk)


def test_a_larger_chunk_set_after_use_gets_a_larger_buffer():
    x, labels, params = _set()
    evaluator = Evaluator(two_layer_net(input_divisor=255).logits, 64)
    evaluator.accuracy(params, x, labels)
    evaluator.chunk = 128
    assert evaluator.accuracy(params, x, labels) == Evaluator(two_layer_net(input_divisor=255).logits, 128).accuracy(
        params, x, labels)


def test_threads_can_share_an_evaluator():
    """Each thread casts into its own buffer (the compiled function keeps per-thread buffers too)."""
    sets = [_set(257, seed=k) for k in range(4)]
    evaluator = Evaluator(two_layer_net(input_divisor=255).logits, 32)
    want = [Evaluator(two_layer_net(input_divisor=255).logits, 32).accuracy(p, x, y) for x, y, p in sets]
    got = [[] for _ in sets]

    def work(k):
        x, labels, params = sets[k]
        for _ in range(5):
            got[k].append(evaluator.accuracy(params, x, labels))

    run_in_threads(work, len(sets))
    assert got == [[w] * 5 for w in want]


def test_one_hot_labels_are_refused_not_broadcast():
    x, labels, params = _set(10)  # 10 rows against 10 classes: numpy would broadcast the comparison
    with pytest.raises(gc.GraphcError, match=r"one class index per row, got shape \(10, 10\)"):
        Evaluator(two_layer_net(input_divisor=255).logits, 8).accuracy(params, x, np.eye(10)[labels])
