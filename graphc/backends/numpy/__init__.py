"""The numpy backend: the buffer-planned lowering (:mod:`.lowering`), its ufunc sequences
(:mod:`.ufuncs`), pairwise contraction execution (:mod:`.pairwise`), the BLAS gemm
binding (:mod:`.blas`), the runtime its code calls (:mod:`.runtime`), and batch casting
for training loops (:mod:`.casting`)."""

from graphc.backends.numpy import runtime
from graphc.backends.numpy import windows  # noqa: F401 - registers the window ops' rules
from graphc.backends.numpy.lowering import lower

__all__ = ["lower", "runtime"]
