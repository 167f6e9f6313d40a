"""Ready-made graphs: the seed's two-layer net (784-50-10, ReLU, softmax cross-entropy) and the
next chapter's SimpleConvNet (conv 30×5×5, ReLU, 2×2 max pooling, affine 100, ReLU, affine 10)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphc.errors import GraphError
from graphc.ops import Graph, Node, conv2d, einsum, flatten, max_pool2d, relu, softmax_cross_entropy


@dataclass
class Net:
    """The nodes of a ready-made net, declared once as a static graph."""

    graph: Graph
    x: Node
    t: Node
    params: dict  # name -> param node
    logits: Node
    loss: Node


class TwoLayerNet(Net):
    """The nodes of the seed's TwoLayerNet."""


class SimpleConvNet(Net):
    """The nodes of the book's SimpleConvNet (the seed's next chapter)."""


def two_layer_net(input_size: int = 784, hidden_size: int = 50, output_size: int = 10,
                  integer_labels: bool = False, input_divisor: float | None = None) -> TwoLayerNet:
    """``loss = softmax_cross_entropy(relu(x·W1 + b1)·W2 + b2, t)``, with the batch dim symbolic.

    ``input_divisor``: the net reads ``x / input_divisor`` (``255``: raw pixel values).
    The compiler folds the division into the first layer's products, so the scaled
    images are never made (``graphc.compiler.passes.simplification.fold_scalar_factors``).
    """
    if input_divisor is not None and (isinstance(input_divisor, bool) or not isinstance(input_divisor, (int, float))
                                      or not input_divisor > 0):
        raise GraphError(f"two_layer_net: input_divisor must be a positive number, got {input_divisor!r}")
    g = Graph("two_layer_net")
    x = g.input("x", ("n", input_size))
    t = g.input("t", ("n",), kind="int") if integer_labels else g.input("t", ("n", output_size))
    W1, b1 = g.param("W1", (input_size, hidden_size)), g.param("b1", (hidden_size,))
    W2, b2 = g.param("W2", (hidden_size, output_size)), g.param("b2", (output_size,))
    inputs = x if input_divisor is None else (x / input_divisor).rename("x_scaled")
    A1 = einsum("nk,kh->nh", inputs, W1, name="XW1") + b1
    A1.rename("A1")
    h = relu(A1, name="h")
    a = einsum("nh,hc->nc", h, W2, name="hW2") + b2
    a.rename("a")
    loss = softmax_cross_entropy(a, t, name="loss")
    return TwoLayerNet(g, x, t, {"W1": W1, "b1": b1, "W2": W2, "b2": b2}, a, loss)


def init_two_layer_params(rng: np.random.Generator, input_size: int = 784, hidden_size: int = 50,
                          output_size: int = 10, weight_init_std: float = 0.01, dtype=np.float32) -> dict:
    """The seed's initialisation: weights ``std·randn``, biases zero."""
    return {
        "W1": (weight_init_std * rng.standard_normal((input_size, hidden_size))).astype(dtype),
        "b1": np.zeros(hidden_size, dtype=dtype),
        "W2": (weight_init_std * rng.standard_normal((hidden_size, output_size))).astype(dtype),
        "b2": np.zeros(output_size, dtype=dtype),
    }


def simple_conv_net(input_dim: tuple = (1, 28, 28), filters: int = 30, kernel: int = 5, hidden_size: int = 100,
                    output_size: int = 10, integer_labels: bool = False,
                    input_divisor: float | None = None) -> SimpleConvNet:
    """conv (``filters`` kernels of ``kernel``×``kernel``, stride 1, no padding) → ReLU →
    2×2 max pooling → affine ``hidden_size`` → ReLU → affine ``output_size`` → softmax
    cross-entropy, on NCHW images with the batch dim symbolic.

    >>> net = simple_conv_net()
    >>> net.x.shape, net.params["W2"].shape
    (('n', 1, 28, 28), (4320, 100))
    """
    if input_divisor is not None and (isinstance(input_divisor, bool) or not isinstance(input_divisor, (int, float))
                                      or not input_divisor > 0):
        raise GraphError(f"simple_conv_net: input_divisor must be a positive number, got {input_divisor!r}")
    channels, height, width = input_dim
    g = Graph("simple_conv_net")
    x = g.input("x", ("n", channels, height, width))
    t = g.input("t", ("n",), kind="int") if integer_labels else g.input("t", ("n", output_size))
    W1, b1 = g.param("W1", (filters, channels, kernel, kernel)), g.param("b1", (filters,))
    pooled = (height - kernel + 1) // 2 * ((width - kernel + 1) // 2) * filters
    W2, b2 = g.param("W2", (pooled, hidden_size)), g.param("b2", (hidden_size,))
    W3, b3 = g.param("W3", (hidden_size, output_size)), g.param("b3", (output_size,))
    images = x if input_divisor is None else (x / input_divisor).rename("x_scaled")
    c1 = relu(conv2d(images, W1, b1, name="C1"), name="c1")
    p1 = flatten(max_pool2d(c1, 2, name="P1"), name="p1")
    A2 = einsum("nk,kh->nh", p1, W2, name="p1W2") + b2
    A2.rename("A2")
    h = relu(A2, name="h")
    a = einsum("nh,hc->nc", h, W3, name="hW3") + b3
    a.rename("a")
    loss = softmax_cross_entropy(a, t, name="loss")
    return SimpleConvNet(g, x, t, {"W1": W1, "b1": b1, "W2": W2, "b2": b2, "W3": W3, "b3": b3}, a, loss)


def init_simple_conv_params(rng: np.random.Generator, input_dim: tuple = (1, 28, 28), filters: int = 30,
                            kernel: int = 5, hidden_size: int = 100, output_size: int = 10,
                            weight_init_std: float = 0.01, dtype=np.float32) -> dict:
    """The book's initialisation of SimpleConvNet: weights ``std·randn``, biases zero."""
    channels, height, width = input_dim
    pooled = (height - kernel + 1) // 2 * ((width - kernel + 1) // 2) * filters
    shapes = {"W1": (filters, channels, kernel, kernel), "W2": (pooled, hidden_size), "W3": (hidden_size, output_size)}
    params = {}
    for k, (w, size) in enumerate([("W1", filters), ("W2", hidden_size), ("W3", output_size)], start=1):
        params[w] = (weight_init_std * rng.standard_normal(shapes[w])).astype(dtype)
        params[f"b{k}"] = np.zeros(size, dtype=dtype)
    return params
