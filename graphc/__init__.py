"""graphc: declare a static tensor graph, derive its gradient symbolically in Einstein
notation, inspect the derivation, and run forward, backward and update as fused
opt_einsum calls.

>>> import graphc as gc
>>> g = gc.Graph("affine")
>>> x = g.input("x", ("n", 3)); W = g.param("W", (3, 2)); b = g.param("b", (2,))
>>> loss = ((x @ W + b) ** 2).sum()
>>> dW, db = gc.grad(loss, [W, b])
"""

from graphc.compiler import CompiledFunction, compile, grad, hessian, hvp, jvp
from graphc.compiler.explain import explain
from graphc.compiler.explain.draw import draw
from graphc.errors import (
    BindingError, DataError, GradError, GraphcError, GraphError, NumericsError, SerializationError, ShapeError,
    SpecError,
)
from graphc.ops import (
    Graph, Node, add, argmax, broadcast_to, copy, diagonal, div, einsum, erf, exp, gelu, log, log_softmax, matmul,
    maximum,
    mean, minimum, mul, neg, one_hot, outer, power, relu, sigmoid, softmax, softmax_cross_entropy, sqrt, step, sub, sum,
    tanh, trace, transpose, greater, greater_equal, less, less_equal, where,
    index_sum, conv2d, max_pool2d, avg_pool2d, pad, reshape, flatten,
)
from graphc.ops.elementwise import elementwise
from graphc.serialize import load_graph, save_graph
from graphc.testing import check_grads

__version__ = "0.1.0"

__all__ = [
    "Graph", "Node", "grad", "jvp", "hvp", "hessian", "compile", "explain", "draw", "check_grads",
    "CompiledFunction", "save_graph", "load_graph",
    "einsum", "matmul", "transpose", "sum", "mean", "broadcast_to", "trace", "diagonal", "outer",
    "add", "sub", "mul", "div", "neg", "power", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "step",
    "erf", "gelu", "maximum", "minimum", "greater", "greater_equal", "less", "less_equal", "where", "copy", "elementwise",
    "softmax", "log_softmax", "softmax_cross_entropy", "one_hot", "argmax",
    "index_sum", "conv2d", "max_pool2d", "avg_pool2d", "pad", "reshape", "flatten",
    "GraphcError", "GraphError", "ShapeError", "SpecError", "BindingError", "GradError", "NumericsError",
    "SerializationError", "DataError",
]
