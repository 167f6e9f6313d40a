"""A griffe extension for the API pages: a docstring's doctest example is shown as code.

graphc's docstrings carry their examples as bare doctest blocks (``>>>`` lines and the
output under them, up to a blank line), which Markdown would read as nested quotes.  Each
such block is fenced as ``pycon`` (doctest flags such as ``# doctest: +SKIP`` dropped); the
docstrings stay as they are, so ``help()`` and ``doctest`` see them unchanged.
"""

from __future__ import annotations

import re

import griffe

_FLAGS = re.compile(r"\s*#\s*doctest:.*$")


def fence_doctests(text: str) -> str:
    out: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        if not lines[i].startswith(">>>"):
            out.append(lines[i])
            i += 1
            continue
        block = []
        while i < len(lines) and lines[i].strip():
            block.append(_FLAGS.sub("", lines[i]) if lines[i].startswith((">>>", "...")) else lines[i])
            i += 1
        if out and out[-1].strip():
            out.append("")
        out += ["```pycon", *block, "```"]
    return "\n".join(out)


class DoctestBlocks(griffe.Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
