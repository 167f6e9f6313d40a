"""Saving and loading graphs (versioned JSON) and arrays (``.npz``), safely and atomically.

- :mod:`~graphc.serialize.graph_format`: ``save_graph(outputs, path)`` / ``load_graph(path)``
  (and ``graph_to_dict`` / ``graph_from_dict``, ``graphs_equal`` / ``graph_difference``).
  A graph file is JSON, ``{"format": "graphc-graph", "version": 1, "graph": name, "leaves":
  [...], "nodes": [...], "outputs": [...]}``, leaves first and every node after its inputs, so
  a file cannot describe a cycle.  That module's docstring documents every field and op.
- :mod:`~graphc.serialize.expressions`: elementwise expressions as JSON trees
  (``expr_to_json`` / ``expr_from_json``), rebuilt from the whitelist ``SYMPY_FUNCTIONS`` with
  ``evaluate=False``; nothing is ``eval``-ed or ``sympify``-ed from text.
- :mod:`~graphc.serialize.arrays`: ``save_arrays(path, {"W1": ..., ...}, meta={...})`` writes
  an ``.npz`` archive (meta as JSON in the entry ``"__meta__"``); ``load_arrays(path)`` reads
  it back without ever unpickling.
- :mod:`~graphc.serialize.atomic`: ``atomic_write``, which both savers use to replace their
  target atomically.

Any problem loading raises :class:`~graphc.errors.SerializationError`.  Limits: files of at
most ``MAX_BYTES`` (64 MiB), dims up to 2**40, 32 axes, expressions 200 levels deep, integers
up to 2**64; each lives in the submodule that enforces it (``graph_format.MAX_BYTES``).
"""

from __future__ import annotations

from graphc.serialize.arrays import META_KEY, load_arrays, save_arrays
from graphc.serialize.atomic import atomic_write
from graphc.serialize.expressions import MAX_EXPR_DEPTH, MAX_INT, SYMPY_FUNCTIONS, expr_from_json, expr_to_json
from graphc.serialize.graph_format import (
    FORMAT, MAX_BYTES, MAX_DIM, MAX_RANK, VERSION, graph_difference, graph_from_dict, graph_to_dict, graphs_equal,
    load_graph, save_graph,
)

__all__ = [
    "atomic_write",
    "SYMPY_FUNCTIONS", "expr_to_json", "expr_from_json", "MAX_EXPR_DEPTH", "MAX_INT",
    "FORMAT", "VERSION", "MAX_BYTES", "MAX_DIM", "MAX_RANK",
    "graph_to_dict", "graph_from_dict", "save_graph", "load_graph", "graphs_equal", "graph_difference",
    "META_KEY", "save_arrays", "load_arrays",
]
