"""The passes: autodiff, simplification and fusion, code emission, explain."""

from graphc.compiler.autodiff import grad
from graphc.compiler.compile import CompiledFunction, compile
from graphc.compiler.simplify import simplify

__all__ = ["grad", "compile", "CompiledFunction", "simplify", "explain"]


def explain(*args, **kwargs):
    from graphc.compiler.explain import explain as _explain

    return _explain(*args, **kwargs)
