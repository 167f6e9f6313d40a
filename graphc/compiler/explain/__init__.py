"""Explain: derived gradients printed the way one derives them by hand.

:func:`explain` (``derivation``) prints a derivation; ``notation`` writes one node in
Einstein notation (text or LaTeX) from its op's own ``expression``; ``printing`` is
the sympy printer behind it; ``display`` makes all of it render typeset in Jupyter.
"""

from graphc.compiler.explain import display  # noqa: F401 - Derivation, Gradients; installs Node's notebook display
from graphc.compiler.explain.derivation import explain
from graphc.compiler.explain.notation import formula, latex, lhs, matrix_form, safe

__all__ = ["explain", "formula", "latex", "lhs", "matrix_form", "safe"]
