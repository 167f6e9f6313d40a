"""What each op is: the IR's node types, their shapes and their derivative rules.

Nothing here imports :mod:`graphc.compiler`; the compiler reads these ops.
"""

from graphc.ops.contraction import (
    Contraction, Spec, diagonal, einsum, matmul, mean, outer, parse_spec, sum, trace, transpose,
)
from graphc.ops.elementwise import (
    Elementwise, ElementwiseFn, add, copy, div, exp, log, maximum, mul, neg, power, relu,
    sigmoid, sqrt, step, sub, tanh,
)
from graphc.ops.leaves import Constant, Delta, DimSize, Input, Param, Zeros
from graphc.ops.nn import (
    Argmax, LogSoftmax, OneHot, Softmax, SoftmaxCrossEntropy, argmax, log_softmax, one_hot, softmax,
    softmax_cross_entropy,
)
from graphc.ops.node import Graph, Node, Op

# The module graphc.ops.elementwise keeps its name; its ``elementwise`` constructor
# is re-exported at the top level as ``graphc.elementwise``.

__all__ = [
    "Graph", "Node", "Op", "Spec", "Contraction", "Elementwise", "ElementwiseFn", "Constant", "Delta",
    "DimSize", "Input", "Param", "Zeros", "Softmax", "LogSoftmax", "SoftmaxCrossEntropy", "OneHot", "Argmax",
    "einsum", "matmul", "transpose", "sum", "mean", "trace", "diagonal", "outer", "parse_spec",
    "add", "sub", "mul", "div", "neg", "power", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "step",
    "maximum", "copy", "softmax", "log_softmax", "softmax_cross_entropy", "one_hot", "argmax",
]
