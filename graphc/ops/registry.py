"""Rule tables keyed by op class, one per interpretation that lives outside the op itself.

An op's shape rule, derivative rule (``vjp``), printing (``expression``,
``matrix_form``) and file fields are methods of its class, side by side in its
module.  Two interpretations are tables here instead, because their users come
from elsewhere:

* **graph files**: ``@saved_as("softmax_cross_entropy")`` registers an op class under
  its name in the file format, so the loader finds the class that rebuilds it;
* **lowering**: ``@lowering("numpy", Softmax)`` registers a function that writes the code
  computing a node of that op for one backend.  Built-in ops register their rules in
  their own module; a backend package may register rules for any op, and a user's new
  op registers its own, so a new op is one module and a new backend one package.

Nothing here imports an op or a backend: the tables are filled by whoever imports it.
"""

from __future__ import annotations

from typing import Callable

#: file-format name -> op class
FILE_OPS: dict[str, type] = {}
#: backend name -> op class -> rule(node, lowering) returning code lines (or None)
LOWERINGS: dict[str, dict[type, Callable]] = {}


def saved_as(name: str):
    """Class decorator: the op is saved in graph files under ``name`` and rebuilt by its ``load``."""
    def register(cls):
        if FILE_OPS.get(name, cls) is not cls:
            raise ValueError(f"graph-file op name {name!r} is taken by {FILE_OPS[name].__name__}")
        FILE_OPS[name] = cls
        cls.file_name = name
        return cls
    return register


def lowering(backend: str, *op_classes: type):
    """Decorator: ``rule(node, lowering)`` lowers nodes of ``op_classes`` for ``backend``."""
    def register(rule: Callable) -> Callable:
        table = LOWERINGS.setdefault(backend, {})
        for cls in op_classes:
            table[cls] = rule
        return rule
    return register


def lowering_rule(backend: str, op) -> Callable | None:
    """The rule for ``op`` on ``backend``: registered for its class or the nearest base class."""
    table = LOWERINGS.get(backend, {})
    for cls in type(op).__mro__:
        if cls in table:
            return table[cls]
    return None
