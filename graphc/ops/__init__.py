"""What each op is: the IR's node types, their shapes and their rules.

Modules import one another in one direction: ``indices`` and ``symbolic`` (shared
vocabulary) → ``node`` (Op, Node) → ``leaves`` → ``graph`` → ``contraction`` →
``broadcasting`` (how elementwise operands line up) → ``elementwise`` → ``nn`` →
``cross_entropy`` → ``operators`` (Python operators on nodes) → ``selection``
(comparisons, their operators, and ``where``) → ``affine`` (index sums with affine axes)
→ ``windows`` (convolution, pooling, padding, reshapes).  Nothing here imports :mod:`graphc.compiler`; the compiler reads these ops.
"""

from graphc.ops.contraction import (
    Contraction, Spec, broadcast_to, diagonal, einsum, matmul, outer, parse_spec, sum, trace, transpose,
)
from graphc.ops.cross_entropy import SoftmaxCrossEntropy, softmax_cross_entropy
from graphc.ops.elementwise import (
    Elementwise, ElementwiseFn, add, copy, div, exp, log, erf, gelu, maximum, minimum, mul, neg, power, relu,
    sigmoid, sqrt, step, sub, tanh,
)
from graphc.ops.graph import Graph
from graphc.ops.leaves import Constant, Delta, DimSize, Input, Param, Zeros
from graphc.ops.nn import Argmax, LogSoftmax, OneHot, Softmax, argmax, log_softmax, one_hot, softmax
from graphc.ops.node import Node, Op
from graphc.ops.operators import mean
from graphc.ops.selection import greater, greater_equal, less, less_equal, where
from graphc.ops.affine import IndexSum, index_sum
from graphc.ops.windows import (
    FirstMaxMask, Pad, Reshape, WindowMax, avg_pool2d, conv2d, flatten, max_pool2d, pad, reshape,
)

# ``graphc.ops.elementwise`` stays the module (its function ``elementwise``, which defines
# a new op, is exported at the top level as ``graphc.elementwise``).

__all__ = [
    "Graph", "Node", "Op", "Spec", "Contraction", "Elementwise", "ElementwiseFn", "Constant", "Delta",
    "DimSize", "Input", "Param", "Zeros", "Softmax", "LogSoftmax", "SoftmaxCrossEntropy", "OneHot", "Argmax",
    "einsum", "matmul", "transpose", "sum", "mean", "broadcast_to", "trace", "diagonal", "outer", "parse_spec",
    "add", "sub", "mul", "div", "neg", "power", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "step",
    "erf", "gelu", "maximum", "minimum", "greater", "greater_equal", "less", "less_equal", "where", "copy", "softmax", "log_softmax", "softmax_cross_entropy", "one_hot", "argmax",
    "IndexSum", "index_sum", "WindowMax", "FirstMaxMask", "Pad", "Reshape", "conv2d", "max_pool2d", "avg_pool2d",
    "pad", "reshape", "flatten",
]
