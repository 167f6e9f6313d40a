"""The array-API backend: any array library with an array-API namespace (through
array-api-compat), one plain statement per node; see :mod:`.lowering`."""

from graphc.backends.array_api import runtime
from graphc.backends.array_api import windows  # noqa: F401 - registers the window ops' rules
from graphc.backends.array_api.lowering import lower

__all__ = ["lower", "runtime"]
