"""The passes, in the order a graph meets them: ``autodiff`` (symbolic reverse mode) and
``higher_order`` (forward mode, Hessian-vector products, Hessians), ``passes`` (simplification
and fusion), ``compile`` (lowering through a backend of :mod:`graphc.backends` into a checked
callable), and ``explain`` (printing a derivation).
"""

from graphc.compiler.autodiff import grad
from graphc.compiler.compile import CompiledFunction, compile
from graphc.compiler.higher_order import hessian, hvp, jvp
from graphc.compiler.passes import simplify

__all__ = ["grad", "jvp", "hvp", "hessian", "compile", "CompiledFunction", "simplify"]
