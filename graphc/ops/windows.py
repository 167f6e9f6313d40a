"""Convolution and pooling layers, padding and reshapes, built on index sums with affine axes.

* ``conv2d`` is the index sum ``y[n,o,i,j] = Σ_{c,p,q} x[n,c,s·i+d·p,s·j+d·q]·W[o,c,p,q]``
  (:mod:`graphc.ops.affine`) over an explicitly padded input, plus a broadcast bias;
* ``avg_pool2d`` is the index sum ``Σ_{p,q} x[n,c,s·i+p,s·j+q] / (KH·KW)`` (padding counted,
  torch's default);
* ``max_pool2d`` is :class:`WindowMax`, whose adjoint is a scatter-add of the output gradient
  through :class:`FirstMaxMask`: each window's gradient goes to its first maximum in
  row-major window order (torch's rule), ties included;
* :class:`Pad` surrounds an array with a constant; its adjoint is a shifted read;
  :class:`Reshape` changes the shape, its adjoint reshapes back.

Conventions are torch's: NCHW inputs, OIHW kernels, windows that do not fit are dropped
(floor).  Every size is checked when the node is declared, naming the op and the shapes.
"""

from __future__ import annotations

import math

from graphc.errors import GraphError, ShapeError
from graphc.ops.affine import Term, _idx, affine_sum, check_access, infer_ranges
from graphc.ops.contraction import broadcast_to
from graphc.ops.indices import LETTERS, check_shape, format_shape
from graphc.ops.node import Node, Op, letters_of
from graphc.ops.registry import saved_as
from graphc.ops.symbolic import indexed, sympy_module


# -- max pooling ------------------------------------------------------------------------------
class _WindowOp(Op):
    """An op over the windows ``x[terms]``: output letters ``out`` and window letters ``window``."""

    file_arity = 1
    file_fields = frozenset({"terms", "out", "window", "ranges"})

    def __init__(self, terms: tuple, out: str, window: str, ranges: tuple):
        self.terms, self.out, self.window, self.ranges = terms, out, window, ranges

    @property
    def sizes(self) -> dict:
        return dict(self.ranges)

    def key(self):
        return (self.kind_name, tuple(t.canonical() for t in self.terms), self.out, self.window, self.ranges)

    def _read(self, node, name_of):
        return sympy_module().IndexedBase(name_of(node.inputs[0]))[tuple(_idx(str(t)) for t in self.terms)]

    def fields(self, codec):
        return {"terms": [str(t) for t in self.terms], "out": self.out, "window": self.window,
                "ranges": dict(self.ranges)}

    @classmethod
    def load(cls, graph, e, inputs, shape, name, codec):
        from graphc.ops.affine import parse_term
        from graphc.errors import SpecError

        try:
            terms = tuple(parse_term(codec.str(t, "term")) for t in codec.list(e["terms"], "terms"))
        except SpecError as err:
            raise codec.error(str(err)) from None
        out, window = codec.letters(e["out"], "out"), codec.letters(e["window"], "window")
        ranges = e["ranges"]
        if not isinstance(ranges, dict):
            raise codec.error("ranges must map index letters to dims")
        return window_op(cls, inputs[0], terms, out, window, {c: codec.dim(d, "range") for c, d in ranges.items()},
                         name=name, peak=inputs[1] if len(inputs) > 1 else None)


@saved_as("window_max")
class WindowMax(_WindowOp):
    """``y[out] = max over the window letters of x[terms]``."""

    kind_name = "max_pool"

    def index_letters(self, node):
        return self.out

    def expression(self, node, name_of):
        return sympy_module().Function(f"max_{self.window}")(self._read(node, name_of))

    def vjp(self, node, g, wanted):
        x = node.inputs[0]
        mask = window_op(FirstMaxMask, x, self.terms, self.out, self.window, self.sizes, peak=node)
        outs = tuple(Term.of(c) for c in self.out)
        dx = affine_sum([outs, tuple(Term.of(c) for c in self.window) + outs], [g, mask], self.terms, x.shape,
                        self.sizes, op_name=f"the adjoint of {node.name!r}")
        node.graph.set_origin(dx, node, 0)
        return [dx]


    def jvp(self, node, tangents):
        """The tangent at each window's first maximum: ``Σ_window mask·∂x[terms]``."""
        x = node.inputs[0]
        mask = window_op(FirstMaxMask, x, self.terms, self.out, self.window, self.sizes, peak=node)
        return affine_sum([tuple(Term.of(c) for c in self.window + self.out), self.terms], [mask, tangents[0]],
                          tuple(Term.of(c) for c in self.out), node.shape, self.sizes,
                          op_name=f"the tangent of {node.name!r}")


@saved_as("first_max_mask")
class FirstMaxMask(_WindowOp):
    """``m[window, out] = 1`` where ``x[terms]`` is the window's maximum ``y[out]`` (its second
    operand) for the first time in row-major window order, else 0.  The window letters come
    first, so each window position is one contiguous slice.  Piecewise constant: no gradient."""

    kind_name = "argmax_mask"
    file_arity = 2

    def index_letters(self, node):
        return self.window + self.out

    def expression(self, node, name_of):
        sp = sympy_module()
        y = indexed(name_of(node.inputs[1]), self.out)
        return sp.Function(f"first_{self.window}")(sp.Eq(self._read(node, name_of), y, evaluate=False))

    def vjp(self, node, g, wanted):
        return [None, None]

    def jvp(self, node, tangents):
        return None


def window_op(cls, x: Node, terms: tuple, out: str, window: str, sizes: dict, name: str | None = None,
              op_name: str | None = None, peak: Node | None = None) -> Node:
    """A :class:`WindowMax` node over ``x[terms]``, or a :class:`FirstMaxMask` of where its
    windows reach ``peak`` (the WindowMax node), checked."""
    op_name = op_name or cls.kind_name
    if x.kind != "float":
        raise GraphError(f"{op_name}: {x.name!r} holds {x.kind} values; expected floats")
    if len(terms) != x.ndim:
        raise ShapeError(f"{op_name}: {x.name!r} has shape {format_shape(x.shape)} but is indexed "
                         f"[{','.join(map(str, terms))}]")
    ranges = infer_ranges(op_name, [terms], [x], (), None, sizes)
    check_access(op_name, f"{x.name!r}", x.shape, terms, ranges)
    letters = out + window
    if set(letters) != {c for t in terms for c in t.letters} or len(set(letters)) != len(letters):
        raise ShapeError(f"{op_name}: letters {out!r} and {window!r} must be those of [{','.join(map(str, terms))}]")
    ordered = tuple((c, ranges[c]) for c in letters)
    if any(r == 0 for r in ranges.values()):
        raise ShapeError(f"{op_name}: empty windows over {x.name!r} {format_shape(x.shape)}")
    if cls is WindowMax:
        return Node(x.graph, cls(tuple(terms), out, window, ordered), [x], tuple(ranges[c] for c in out), "float", name)
    peak_shape = tuple(ranges[c] for c in out)
    if not isinstance(peak, Node) or peak.graph is not x.graph or peak.shape != peak_shape or peak.kind != "float":
        raise ShapeError(f"{op_name}: the windows' maxima must be a float node of shape {format_shape(peak_shape)}, "
                         f"got {peak!r}")
    return Node(x.graph, cls(tuple(terms), out, window, ordered), [x, peak],
                tuple(ranges[c] for c in window + out), "float", name)


# -- padding and reshapes ------------------------------------------------------------------------
@saved_as("pad")
class Pad(Op):
    """``y`` = ``x`` with ``widths[k] = (before, after)`` entries of ``value`` around axis ``k``."""

    kind_name = "pad"
    file_arity = 1
    file_fields = frozenset({"widths", "value"})

    def __init__(self, widths: tuple, value: float):
        self.widths, self.value = widths, value

    def key(self):
        return ("pad", self.widths, self.value)

    def expression(self, node, name_of):
        """``x[n,c,i-1,j-1]``: the operand, shifted; :meth:`conditions` says where."""
        letters = letters_of(node)
        if not any(lo for lo, _ in self.widths):
            return indexed(name_of(node.inputs[0]), letters)
        terms = [str(Term(((c, 1),), -lo)) for c, (lo, _) in zip(letters, self.widths)]
        return sympy_module().IndexedBase(name_of(node.inputs[0]))[tuple(_idx(t) for t in terms)]

    def conditions(self, node):
        letters, x = letters_of(node), node.inputs[0]
        inside = [f"{lo} ≤ {c} < {lo + d}" for c, (lo, hi), d in zip(letters, self.widths, x.shape) if lo or hi]
        value = int(self.value) if math.isfinite(self.value) and self.value.is_integer() else self.value
        return ", ".join(inside) + f"; {value} elsewhere"

    def vjp(self, node, g, wanted):
        x = node.inputs[0]
        letters = letters_of(x)
        read = tuple(Term(((c, 1),), lo) for c, (lo, _) in zip(letters, self.widths))
        dx = affine_sum([read], [g], tuple(Term.of(c) for c in letters), x.shape, dict(zip(letters, x.shape)),
                        op_name=f"the adjoint of {node.name!r}")
        node.graph.set_origin(dx, node, 0)
        return [dx]

    def jvp(self, node, tangents):
        return pad(tangents[0], self.widths)  # the border is constant

    def fields(self, codec):
        return {"widths": [list(w) for w in self.widths], "value": self.value if math.isfinite(self.value)
                else ("-inf" if self.value < 0 else "inf")}

    @classmethod
    def load(cls, graph, e, inputs, shape, name, codec):
        value = e["value"]
        if value in ("-inf", "inf"):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise codec.error(f"pad value must be a number, got {codec.short(value)}")
        return pad(inputs[0], e["widths"], value=float(value), name=name)


def pad(x: Node, widths, value: float = 0.0, name: str | None = None) -> Node:
    """``x`` surrounded by ``value``: ``widths`` is one ``(before, after)`` pair per axis, or
    one int for every side of every axis.  ``value`` may be ``-inf`` (max pooling's padding).

    >>> import graphc as gc
    >>> g = gc.Graph("pad"); x = g.input("x", ("n", 1, 4, 4))
    >>> gc.pad(x, [(0, 0), (0, 0), (1, 1), (2, 2)]).shape
    ('n', 1, 6, 8)
    """
    if not isinstance(x, Node):
        raise GraphError(f"pad: {x!r} is not a graph node")
    if x.kind != "float":
        raise GraphError(f"pad: {x.name!r} holds {x.kind} values; expected floats")
    if isinstance(widths, int) and not isinstance(widths, bool):
        widths = [(widths, widths)] * x.ndim
    try:
        widths = tuple((int(lo), int(hi)) for lo, hi in widths)
        ok = all(isinstance(v, int) and not isinstance(v, bool) for w in widths for v in w)
    except (TypeError, ValueError):
        ok = False
    if not ok or len(widths) != x.ndim:
        raise ShapeError(f"pad: widths must be one (before, after) pair of ints per axis of {x.name!r} "
                         f"{format_shape(x.shape)}, got {widths!r}")
    if any(v < 0 for w in widths for v in w):
        raise ShapeError(f"pad of {x.name!r}: negative padding {widths!r}")
    value = float(value)
    if math.isnan(value):
        raise GraphError(f"pad of {x.name!r}: the value is NaN")
    shape = []
    for d, (lo, hi) in zip(x.shape, widths):
        if not isinstance(d, int) and (lo or hi):
            raise ShapeError(f"pad of {x.name!r} {format_shape(x.shape)}: a symbolic dim {d!r} cannot be padded")
        shape.append(d + lo + hi if isinstance(d, int) else d)
    if not any(lo or hi for lo, hi in widths):
        return x
    return Node(x.graph, Pad(widths, value), [x], tuple(shape), "float", name)


@saved_as("reshape")
class Reshape(Op):
    """``x`` with the same elements in row-major order and another shape."""

    kind_name = "reshape"
    file_arity = 1

    def expression(self, node, name_of):
        """A flatten as ``x[n,c,i,j]`` with ``k = 144c+12i+j`` (:meth:`conditions`), an unflatten as
        the affine read ``x[n,144c+12i+j]``; any other reshape as ``reshape(x[...])``."""
        x = node.inputs[0]
        plan = _row_major(node)
        if plan is None:
            return sympy_module().Function("reshape")(indexed(name_of(x), letters_of(x)))
        _, reads, _ = plan
        return sympy_module().IndexedBase(name_of(x))[tuple(_idx(r) for r in reads)]

    def index_letters(self, node):
        plan = _row_major(node)
        return plan[0] if plan else super().index_letters(node)

    def conditions(self, node):
        plan = _row_major(node)
        return plan[2] if plan and plan[2] else None

    def vjp(self, node, g, wanted):
        return [reshape(g, node.inputs[0].shape)]

    def jvp(self, node, tangents):
        return reshape(tangents[0], node.shape)

    @classmethod
    def load(cls, graph, e, inputs, shape, name, codec):
        return reshape(inputs[0], shape, name=name)


def _row_major(node):
    """``(output letters, the input's index terms, where)`` when the reshape merges runs of
    consecutive axes (a flatten: merged letters defined in ``where``) or splits axes (an
    unflatten: affine reads); None otherwise."""
    x = node.inputs[0]
    a, b = list(x.shape), list(node.shape)
    groups, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        if a[i] == b[j]:
            groups.append(([i], [j]))
            i, j = i + 1, j + 1
            continue
        ia, jb = [i], [j]
        pa, pb = a[i], b[j]
        if not isinstance(pa, int) or not isinstance(pb, int):
            return None
        while pa != pb:
            if pa < pb and i + len(ia) < len(a) and isinstance(a[i + len(ia)], int):
                pa *= a[i + len(ia)]
                ia.append(i + len(ia))
            elif pb < pa and j + len(jb) < len(b) and isinstance(b[j + len(jb)], int):
                pb *= b[j + len(jb)]
                jb.append(j + len(jb))
            else:
                return None
        if len(ia) > 1 and len(jb) > 1:
            return None
        groups.append((ia, jb))
        i, j = i + len(ia), j + len(jb)
    if i != len(a) or j != len(b):
        return None
    x_letters = letters_of(x)
    used = set(x_letters)
    out, reads, where = "", [""] * len(a), []
    for ia, jb in groups:
        if len(ia) == len(jb) == 1:
            out += x_letters[ia[0]]
            reads[ia[0]] = x_letters[ia[0]]
        elif len(jb) == 1:  # merged: k = Σ stride·letter
            k = next(c for c in "klmrstuvw" + LETTERS if c not in used)
            used.add(k)
            out += k
            for m in ia:
                reads[m] = x_letters[m]
            where.append(f"{k} = {_strided([x_letters[m] for m in ia], [a[m] for m in ia])}")
        else:  # split: the input read at Σ stride·letter
            fresh = []
            for _ in jb:
                k = next(c for c in "klmrstuvw" + LETTERS if c not in used)
                used.add(k)
                fresh.append(k)
            out += "".join(fresh)
            reads[ia[0]] = _strided(fresh, [b[m] for m in jb])
    return out, reads, ", ".join(where)


def _strided(letters: list, dims: list) -> str:
    """``144c+12i+j``: the row-major position of ``letters`` over ``dims``."""
    coeffs = [(c, math.prod(dims[m + 1:])) for m, c in enumerate(letters)]
    return str(Term(tuple(coeffs), 0))


def _size(shape) -> tuple:
    """(the product of the int dims, the sorted symbolic dims)."""
    return math.prod(d for d in shape if isinstance(d, int)), sorted(d for d in shape if isinstance(d, str))


def reshape(x: Node, shape, name: str | None = None) -> Node:
    """``x`` in another shape with the same elements in row-major order (numpy's ``reshape``);
    one dim may be ``-1``; symbolic dims must be kept, not split or merged.

    >>> import graphc as gc
    >>> g = gc.Graph("r"); x = g.input("x", ("n", 30, 12, 12))
    >>> x.reshape(("n", -1)).shape
    ('n', 4320)
    """
    if not isinstance(x, Node):
        raise GraphError(f"reshape: {x!r} is not a graph node")
    shape = list(shape) if isinstance(shape, (list, tuple)) else [shape]
    if shape.count(-1) > 1:
        raise ShapeError(f"reshape of {x.name!r}: at most one -1 in {tuple(shape)!r}")
    have, have_sym = _size(x.shape)
    if -1 in shape:
        k = shape.index(-1)
        rest = [d for m, d in enumerate(shape) if m != k]
        known, _ = _size(check_shape(rest, f"reshape of {x.name!r}"))
        if known == 0 or have % known:
            raise ShapeError(f"reshape of {x.name!r} {format_shape(x.shape)}: cannot infer -1 in {tuple(shape)!r}")
        shape[k] = have // known
    shape = check_shape(shape, f"reshape of {x.name!r}")
    if _size(shape) != (have, have_sym):
        raise ShapeError(f"reshape of {x.name!r}: shape {format_shape(shape)} does not hold the elements of "
                         f"{format_shape(x.shape)}")
    if tuple(shape) == x.shape:
        return x
    return Node(x.graph, Reshape(), [x], shape, x.kind, name)


def flatten(x: Node, start_axis: int = 1, name: str | None = None) -> Node:
    """``x`` with the axes from ``start_axis`` on merged into one (torch's ``flatten(x, 1)``).

    >>> import graphc as gc
    >>> g = gc.Graph("f"); x = g.input("x", ("n", 30, 12, 12))
    >>> gc.flatten(x).shape
    ('n', 4320)
    """
    if not isinstance(x, Node):
        raise GraphError(f"flatten: {x!r} is not a graph node")
    if isinstance(start_axis, bool) or not isinstance(start_axis, int) or not 0 <= start_axis < max(x.ndim, 1):
        raise ShapeError(f"flatten of {x.name!r} {format_shape(x.shape)}: start_axis {start_axis!r} out of range")
    tail = x.shape[start_axis:]
    if any(not isinstance(d, int) for d in tail):
        raise ShapeError(f"flatten of {x.name!r} {format_shape(x.shape)}: the merged axes must have fixed sizes")
    return reshape(x, x.shape[:start_axis] + (math.prod(tail),), name=name)


# -- the layers --------------------------------------------------------------------------------
def _pair(op_name: str, what: str, v, least: int) -> tuple:
    pair = (v, v) if isinstance(v, int) and not isinstance(v, bool) else tuple(v) if isinstance(v, (tuple, list)) else None
    if pair is None or len(pair) != 2 or any(isinstance(k, bool) or not isinstance(k, int) or k < least for k in pair):
        raise ShapeError(f"{op_name}: {what} must be an int ≥ {least} or a pair of them, got {v!r}")
    return pair


def _image(op_name: str, x) -> None:
    if not isinstance(x, Node):
        raise GraphError(f"{op_name}: expected a graph node, got {x!r}")
    if x.kind != "float":
        raise GraphError(f"{op_name}: {x.name!r} holds {x.kind} values; expected floats")
    if x.ndim != 4 or not all(isinstance(d, int) for d in x.shape[2:]):
        raise ShapeError(f"{op_name}: {x.name!r} has shape {format_shape(x.shape)}; expected (N, C, H, W) with "
                         "fixed H and W")


def conv2d(x: Node, W: Node, b: Node | None = None, stride=1, padding=0, dilation=1, name: str | None = None) -> Node:
    """2-D convolution (cross-correlation, torch's ``conv2d``): ``x`` (N, C, H, W), kernel ``W``
    (O, C, KH, KW), optional bias ``b`` (O,); the output is (N, O, H', W') with
    ``H' = ⌊(H + 2·ph − dh·(KH−1) − 1) / sh⌋ + 1``.

    >>> import graphc as gc
    >>> g = gc.Graph("conv"); x = g.input("x", ("n", 1, 28, 28)); W = g.param("W", (30, 1, 5, 5))
    >>> y = gc.conv2d(x, W, name="y")
    >>> y.shape
    ('n', 30, 24, 24)
    >>> print(gc.explain(y))
    forward:
      y[n,o,i,j] = Σ_{c,p,q} x[n,c,i+p,j+q]·W[o,c,p,q]    (y = im2col(x)·Wᵀ)
    """
    op_name = "conv2d"
    _image(op_name, x)
    if not isinstance(W, Node) or W.kind != "float" or W.ndim != 4 or not all(isinstance(d, int) for d in W.shape):
        raise ShapeError(f"{op_name}: the kernel must be a float node of fixed shape (O, C, KH, KW), got {W!r}")
    sh, sw = _pair(op_name, "stride", stride, 1)
    dh, dw = _pair(op_name, "dilation", dilation, 1)
    ph, pw = _pair(op_name, "padding", padding, 0)
    if W.shape[1] != x.shape[1]:
        raise ShapeError(f"{op_name}: {x.name!r} {format_shape(x.shape)} has {x.shape[1]!r} channels but kernel "
                         f"{W.name!r} {format_shape(W.shape)} expects {W.shape[1]!r}")
    H, Wd = x.shape[2] + 2 * ph, x.shape[3] + 2 * pw
    kh, kw = dh * (W.shape[2] - 1) + 1, dw * (W.shape[3] - 1) + 1
    if kh > H or kw > Wd or 0 in W.shape[2:]:
        raise ShapeError(f"{op_name}: kernel {W.name!r} {format_shape(W.shape)} (spanning {kh}×{kw} with dilation "
                         f"{(dh, dw)}) is larger than the padded input {H}×{Wd} of {x.name!r} {format_shape(x.shape)}")
    xp = pad(x, [(0, 0), (0, 0), (ph, ph), (pw, pw)]) if ph or pw else x
    n, c, i, j, p, q, o = (Term.of(k) for k in "ncijpqo")
    rows = Term((("i", sh), ("p", dh)))
    cols = Term((("j", sw), ("q", dw)))
    y = affine_sum([(n, c, rows, cols), (o, c, p, q)], [xp, W], (n, o, i, j), label="conv2d", op_name=op_name,
                   name=None if b is not None else name)
    if b is None:
        return y
    if not isinstance(b, Node) or b.kind != "float" or b.shape != (W.shape[0],):
        raise ShapeError(f"{op_name}: the bias must be a float node of shape ({W.shape[0]},), got {b!r}")
    out = y + broadcast_to(b, y.shape, axes=(1,))
    return out.rename(name) if name else out


def _pool(op_name: str, x, window, stride, padding) -> tuple:
    _image(op_name, x)
    kh, kw = _pair(op_name, "window", window, 1)
    sh, sw = _pair(op_name, "stride", stride if stride is not None else (kh, kw), 1)
    ph, pw = _pair(op_name, "padding", padding, 0)
    if 2 * ph > kh or 2 * pw > kw:
        raise ShapeError(f"{op_name}: padding {(ph, pw)} is more than half the window {(kh, kw)}")
    H, Wd = x.shape[2] + 2 * ph, x.shape[3] + 2 * pw
    if kh > H or kw > Wd:
        raise ShapeError(f"{op_name}: window {(kh, kw)} is larger than the padded input {H}×{Wd} of {x.name!r} "
                         f"{format_shape(x.shape)}")
    n, c = Term.of("n"), Term.of("c")
    terms = (n, c, Term((("i", sh), ("p", 1))), Term((("j", sw), ("q", 1))))
    return terms, {"p": kh, "q": kw}, [(0, 0), (0, 0), (ph, ph), (pw, pw)], ph or pw


def max_pool2d(x: Node, window, stride=None, padding=0, name: str | None = None) -> Node:
    """Max pooling over ``window`` (KH, KW) with ``stride`` (the window by default), padding
    counted as −∞ (torch's ``max_pool2d``).  The gradient goes to the first maximum of each
    window in row-major order, ties included.

    >>> import graphc as gc
    >>> g = gc.Graph("pool"); x = g.input("x", ("n", 30, 24, 24))
    >>> gc.max_pool2d(x, 2).shape
    ('n', 30, 12, 12)
    """
    terms, sizes, widths, padded = _pool("max_pool2d", x, window, stride, padding)
    xp = pad(x, widths, value=-math.inf) if padded else x
    return window_op(WindowMax, xp, terms, "ncij", "pq", sizes, name=name, op_name="max_pool2d")


def avg_pool2d(x: Node, window, stride=None, padding=0, name: str | None = None) -> Node:
    """Average pooling over ``window`` with ``stride`` (the window by default); zero padding is
    counted in the average (torch's default, ``count_include_pad=True``).

    >>> import graphc as gc
    >>> g = gc.Graph("pool"); x = g.input("x", ("n", 3, 4, 4))
    >>> print(gc.explain(gc.avg_pool2d(x, 2, name="y")))
    forward:
      y[n,c,i,j] = Σ_{p,q} x[n,c,2i+p,2j+q]·0.25
    """
    terms, sizes, widths, padded = _pool("avg_pool2d", x, window, stride, padding)
    xp = pad(x, widths) if padded else x
    n, c, i, j = (Term.of(k) for k in "ncij")
    return affine_sum([terms, ()], [xp, x.graph.constant(1.0 / (sizes["p"] * sizes["q"]))], (n, c, i, j), sizes=sizes,
                      name=name, label="avg_pool2d", op_name="avg_pool2d")


# numpy's spelling on nodes (the other operators are installed by graphc.ops.operators)
Node.reshape = lambda a, shape, name=None: reshape(a, shape, name)
Node.flatten = lambda a, start_axis=1, name=None: flatten(a, start_axis, name)
