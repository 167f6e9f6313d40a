"""Graph-to-graph passes: simplification and fusion (``simplify``).  Passes never change a
node; they build new ones in the same graph."""

from graphc.compiler.passes.simplification import (
    cse, fold_scalar_factors, fuse_contractions, fuse_elementwise, simplify,
)

__all__ = ["simplify", "cse", "fuse_contractions", "fold_scalar_factors", "fuse_elementwise"]
