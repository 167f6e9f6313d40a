"""The buffer plan of the numpy lowering: which planned array holds each value.

Buffers are keyed by (shape, kind) and allocated once, in ``build`` (``decls``); a
buffer whose values are all dead goes back to a free pool and is reused by the next
value of its shape.  ``owner`` maps a node to the buffer holding its value (a value
and its views share one), and ``refs`` counts the live values in each buffer.  The
lowering asks for a buffer when it places a value (``take`` + ``claim``), gives a
value up after its last read (``release``), and may let an elementwise result take
over the buffer of an operand read for the last time (``hand_over``).
"""

from __future__ import annotations


class BufferPlan:
    def __init__(self, shape_code):
        self.shape_code = shape_code
        self.decls: list[str] = []
        self.free: dict[tuple, list[str]] = {}
        self.refs: dict[str, int] = {}
        self.key: dict[str, tuple] = {}
        self.owner: dict[int, str | None] = {}

    def take(self, shape, kind: str) -> str:
        """A buffer of ``shape`` and ``kind`` ('float' or 'bool') that holds no live value."""
        key = (tuple(shape), kind)
        pool = self.free.get(key)
        if pool:
            name = pool.pop()
        else:
            name = f"b{len(self.decls)}"
            dtype = "bool" if kind == "bool" else "dtype"
            self.decls.append(f"    {name} = xp.empty({self.shape_code(shape)}, dtype={dtype})")
            self.key[name] = key
        self.refs[name] = 0
        return name

    def give_back(self, name: str) -> None:
        """Return a buffer taken as scratch (it holds no value) to the pool."""
        self.free.setdefault(self.key[name], []).append(name)

    def claim(self, node, buf: str | None) -> None:
        """``node``'s value lives in ``buf`` (None: in no planned buffer)."""
        self.owner[id(node)] = buf
        if buf is not None:
            self.refs[buf] += 1

    def release(self, node_id: int) -> None:
        """The value of the node with this id is dead: its buffer returns when no value holds it."""
        buf = self.owner.get(node_id)
        if buf is not None:
            self.refs[buf] -= 1
            if self.refs[buf] == 0:
                self.give_back(buf)
            self.owner[node_id] = None

    def hand_over(self, operand, node) -> None:
        """``node`` is written into ``operand``'s buffer, which ``operand`` alone held."""
        buf = self.owner[id(operand)]
        self.owner[id(operand)] = None
        self.owner[id(node)] = buf
        self.refs[buf] = 1
