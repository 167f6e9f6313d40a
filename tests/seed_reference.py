"""The seed's layer classes, as written in ../shared/seed (numpy), for reference tests.

Only the integer-label branch of CEE_Softmax.backward is changed: the seed wrote
``da[np.arange(batch_size), self.t] = 1`` where ``-= 1`` is meant.
``CEE_Softmax(seed_bug=True)`` keeps the bug, so tests can show they catch it.
"""

import numpy as np


def softmax(a):
    a = a - a.max(axis=-1, keepdims=True)
    e = np.exp(a)
    return e / e.sum(axis=-1, keepdims=True)


def cross_entropy_error(y, t):
    if y.ndim == 1:
        t, y = t.reshape(1, -1), y.reshape(1, -1)
    if t.size == y.size:
        t = t.argmax(axis=1)
    n = y.shape[0]
    return -np.sum(np.log(y[np.arange(n), t] + 1e-7)) / n


class Relu:
    def forward(self, x):
        self.mask = np.array(x > 0, dtype=np.int32)
        return np.maximum(x, 0)

    def backward(self, dout):
        return dout * self.mask


class Affine:
    def __init__(self, W, b):
        self.W, self.b = W, b

    def forward(self, X):
        self.X = X
        return np.dot(X, self.W) + self.b

    def backward(self, dout):
        self.dX = np.dot(dout, self.W.T)
        self.dW = np.dot(self.X.T, dout)
        self.db = np.sum(dout, axis=0)
        return self.dX


class CEE_Softmax:
    def __init__(self, seed_bug=False):
        self.seed_bug = seed_bug

    def forward(self, a, t):
        self.t, self.y = t, softmax(a)
        return cross_entropy_error(self.y, self.t)

    def backward(self, dout=1.0):
        batch_size = self.t.shape[0]
        if self.y.size == self.t.size:
            return (self.y - self.t) / batch_size
        da = self.y.copy()
        if self.seed_bug:
            da[np.arange(batch_size), self.t] = 1
        else:
            da[np.arange(batch_size), self.t] -= 1
        return da / batch_size


class TwoLayerNet:
    def __init__(self, params, seed_bug=False):
        self.params = params
        self.layers = [Affine(params["W1"], params["b1"]), Relu(), Affine(params["W2"], params["b2"])]
        self.last_layer = CEE_Softmax(seed_bug)

    def loss(self, x, t):
        for layer in self.layers:
            x = layer.forward(x)
        return self.last_layer.forward(x, t)

    def gradient(self, x, t):
        self.loss(x, t)
        dout = self.last_layer.backward(1.0)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        a1, a2 = self.layers[0], self.layers[2]
        return {"W1": a1.dW, "b1": a1.db, "W2": a2.dW, "b2": a2.db}
