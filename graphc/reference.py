"""The seed's layer classes, as the seed writes them in numpy: the independent implementation
that tests compare graphc's derived gradients with and benchmarks time as "seed-layers".

Kept as written there (an int32 ReLU mask, ``np.dot``, fresh arrays everywhere, dX computed
for the first layer too; ``softmax`` and ``cross_entropy_error`` are the seed's
``common.functions``: a max-shifted softmax, cross-entropy with +1e-7).  One line differs:
with integer labels the seed's ``CEE_Softmax.backward`` writes ``da[rows, t] = 1`` where
``-= 1`` is meant; ``TwoLayerNet(params, seed_bug=True)`` keeps the bug, so tests can show
that they catch it.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np


def softmax(x):
    x = x - np.max(x, axis=-1, keepdims=True)
    return np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)


def cross_entropy_error(y, t):
    if y.ndim == 1:
        t = t.reshape(1, t.size)
        y = y.reshape(1, y.size)
    if t.size == y.size:
        t = t.argmax(axis=1)
    batch_size = y.shape[0]
    return -np.sum(np.log(y[np.arange(batch_size), t] + 1e-7)) / batch_size


class Relu:
    def __init__(self):
        self.mask = None

    def forward(self, x):
        self.mask = np.array(x > 0, dtype=np.int32)
        return np.maximum(x, 0)

    def backward(self, dout):
        return dout * self.mask


class Affine:
    def __init__(self, W, b):
        self.W, self.b = W, b
        self.X = self.dW = self.dX = self.db = None

    def forward(self, X):
        self.X = X
        return np.dot(self.X, self.W) + self.b

    def backward(self, dout):
        self.dX = np.dot(dout, self.W.T)
        if dout.ndim == 2:
            self.dW = np.dot(self.X.T, dout)
            self.db = np.sum(dout, axis=0)
        else:
            self.dW = np.dot(self.X.reshape(self.X.size, 1), dout.reshape(1, dout.size))
            self.db = dout
        return self.dX


class CEE_Softmax:  # noqa: N801 - the seed's name
    def __init__(self, seed_bug: bool = False):
        self.seed_bug = seed_bug
        self.y = self.t = self.loss = None

    def forward(self, a, t):
        self.t = t
        self.y = softmax(a)
        self.loss = cross_entropy_error(self.y, self.t)
        return self.loss

    def backward(self, dout=1.0):
        batch_size = self.t.shape[0]
        if self.y.size == self.t.size:  # one-hot targets
            return (self.y - self.t) / batch_size
        da = self.y.copy()
        if self.seed_bug:
            da[np.arange(batch_size), self.t] = 1
        else:
            da[np.arange(batch_size), self.t] -= 1
        return da / batch_size


class TwoLayerNet:
    """Affine → Relu → Affine → CEE_Softmax over ``params`` (W1, b1, W2, b2), updated by the caller."""

    def __init__(self, params: dict, seed_bug: bool = False):
        self.params = params
        self.layers = OrderedDict()
        self.layers["Affine1"] = Affine(params["W1"], params["b1"])
        self.layers["Relu"] = Relu()
        self.layers["Affine2"] = Affine(params["W2"], params["b2"])
        self.last_layer = CEE_Softmax(seed_bug)

    def predict(self, X):
        for layer in self.layers.values():
            X = layer.forward(X)
        return X

    def loss(self, X, t):
        return self.last_layer.forward(self.predict(X), t)

    def gradient(self, X, t) -> dict:
        self.loss(X, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        return {"W1": self.layers["Affine1"].dW, "b1": self.layers["Affine1"].db,
                "W2": self.layers["Affine2"].dW, "b2": self.layers["Affine2"].db}
