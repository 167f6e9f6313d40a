"""The numpy lowering of index sums with affine axes, windows, padding and reshapes.

Everything about the shapes is decided at compile time:

* **reads** are strided views, never copies: an operand indexed ``x[n,c,2i+p,j+q]`` becomes a
  view with one axis per letter (``rt.window``: the stride of ``i`` is twice the stride of
  the row axis, that of ``p`` the row stride itself), so a convolution and its kernel
  gradient are one opt_einsum contraction over window views, a GEMM after im2col's one copy;
* **writes** through affine output terms (adjoints of reads: a convolution's input gradient,
  pooling's backward pass) are, where the windows tile the axis exactly (``2i+p`` with ``p``
  over 2), a contraction straight into a strided view of the output; else the cheaper of two
  forms, judged from the shapes: the gather that explain prints (``Σ dY[n,o,u-p,v-q]·W``, the
  bounds enforced by zero padding; its window is ``O·H·W·K²`` per image), or a contraction into
  a temporary ``T`` (``C·I·J·K²`` per image) followed by one strided slice-add per window
  position, planned in ``build`` (``rt.SliceAdds``).
"""

from __future__ import annotations

import math

from graphc.compiler.codegen.program import Kernel, view
from graphc.ops.affine import IndexSum, Term
from graphc.ops.leaves import Constant
from graphc.ops.registry import lowering
from graphc.ops.windows import FirstMaxMask, Pad, Reshape, WindowMax

BACKEND = "numpy"


def window_code(L, var: str, shape, terms, sizes) -> tuple:
    """``(letters, code)``: the operand as an array with one axis per distinct letter."""
    letters = "".join(dict.fromkeys(c for t in terms for c in t.letters))
    plain = [t.plain for t in terms]
    if None not in plain and len(set(plain)) == len(plain) and all(sizes[c] == d for c, d in zip(plain, shape)):
        return "".join(plain), var
    starts = tuple(t.const for t in terms)
    axes = []
    for c in letters:
        uses = tuple((k, t.coefficient(c)) for k, t in enumerate(terms) if t.coefficient(c))
        axes.append(f"({L.dim_code(sizes[c])}, {uses!r})")
    return letters, f"rt.window({var}, {starts!r}, ({''.join(a + ', ' for a in axes)}))"


def _operands(node, L):
    """The non-constant operands as ``(letters, code)`` windows, and the product of the constants."""
    op, sizes = node.op, node.op.sizes
    views, scale = [], 1.0
    for o, ts in zip(node.inputs, op.terms):
        if isinstance(o.op, Constant):
            scale *= o.op.value
            continue
        views.append(window_code(L, L.var[id(o)], o.shape, ts, sizes))
    return views, scale


def _contract(L, views, out: str, sizes, dest: str | None) -> str:
    """A call contracting the windows ``views`` to the letters ``out`` (into ``dest`` when given)."""
    joined = "".join(v[0] for v in views)
    if dest and set(joined) == set(out) and len(views) <= 2 and all(len(set(v[0])) == len(v[0]) for v in views):
        # nothing summed: a broadcast product, written straight into dest (a strided view, maybe)
        args = [view(code, letters, out) for letters, code in views]
        return f"xp.copyto({dest}, {args[0]})" if len(args) == 1 else f"xp.multiply({args[0]}, {args[1]}, out={dest})"
    spec = ",".join(v[0] for v in views) + "->" + out
    L.kernels.append(Kernel(spec, [tuple(sizes[c] for c in v[0]) for v in views]))
    args = ", ".join(v[1] for v in views)
    return f"k{len(L.kernels) - 1}({args}{f', out={dest}' if dest else ''})"


@lowering(BACKEND, IndexSum)
def _index_sum(node, L):
    op, sizes = node.op, node.op.sizes
    views, scale = _operands(node, L)
    if not views:  # a product of constants, scattered: rare enough to go through an array of ones
        views = [("", "xp.asarray(1.0, dtype=dtype)")]
    if not op.is_scatter:
        out = "".join(t.plain for t in op.out)
        summed = set("".join(v[0] for v in views)) - set(out)
        if len(views) == 1 and not summed and sorted(views[0][0]) == sorted(out) and scale == 1.0 \
                and len(set(views[0][0])) == len(views[0][0]):
            # a shifted or strided read: a view of the operand, never a copy
            v = L.var[id(node)] = f"v{L.position[id(node)]}"
            L.claim(node, L.owner.get(id(node.inputs[0])))
            letters, code = views[0]
            return [f"        {v} = xp.permute_dims({code}, {tuple(letters.index(c) for c in out)})"]
        batched = _batched_matmul(node, L, views, out) if node.shape else None
        if batched is not None:
            lines, v = batched, L.var[id(node)]
        elif not node.shape:
            v = L.fresh_var(node)
            lines = [f"        {v} = {_contract(L, views, out, sizes, None)}"]
        else:
            dest = L.output_buffer(node)
            lines = [f"        {_contract(L, views, out, sizes, dest)}"]
            v = dest
        if scale != 1.0:
            lines.append(f"        xp.multiply({v}, {L.hoist(repr(scale))}, out={v})" if node.shape
                         else f"        {v} = xp.multiply({v}, {L.hoist(repr(scale))})")
        return lines
    return _scatter(node, L, views, scale)


def _batched_matmul(node, L, views, out: str) -> list[str] | None:
    """A convolution and its kernel gradient as one batched matmul per call over an im2col
    buffer laid out per image as (window letters, positions), so that neither the result nor
    the other operand is transposed:

    * forward, ``y[n,o,i,j] = Σ W[o,c,p,q]·x[n,c,i+p,j+q]``: ``y[n] = W(o, cpq)·col[n](cpq, ij)``;
    * kernel gradient, ``dW[o,c,p,q] = Σ dY[n,o,i,j]·x[n,c,i+p,j+q]``: ``Σ_n dY[n](o, ij)·col[n]ᵀ``.

    None for any other shape of sum (opt_einsum's path then does it)."""
    op, sizes = node.op, node.op.sizes
    if len(views) != 2 or any(isinstance(o.op, Constant) for o in node.inputs):
        return None
    (xl, xcode), (yl, ycode) = views
    if all(t.plain for t in op.terms[0]):  # the windowed operand first
        (xl, xcode), (yl, ycode) = (yl, ycode), (xl, xcode)
        xterms, yterms = op.terms[1], op.terms[0]
    else:
        xterms, yterms = op.terms
    if any(t.plain is None for t in yterms) or ycode != views[0][1] and ycode != views[1][1] \
            or len(set(yl)) != len(yl) or len(set(xl)) != len(xl) or all(t.plain for t in xterms):
        return None
    if not xl or not yl:  # a read of a single element (x[2]): no batch of windows
        return None
    b = xl[0]
    if not (isinstance(sizes[b], (int, str)) and all(isinstance(sizes[c], int) for c in xl[1:] + yl.replace(b, ""))):
        return None
    shared = [c for c in yl if c in xl]
    if b == out[0] and b not in yl:  # the forward
        free = [c for c in yl if c not in xl]
        pos = [c for c in out if c in xl and c != b]
        if out != b + "".join(free) + "".join(pos) or yl != "".join(free) + "".join(shared) \
                or set(xl) != {b, *shared, *pos} or set(shared) & set(out):
            return None
        col_letters = b + "".join(shared) + "".join(pos)
        kind = "forward"
    elif b in yl and b not in out:  # the kernel's gradient
        free = [c for c in yl if c not in xl]
        pos = [c for c in yl if c in xl and c != b]
        kout = [c for c in out if c in xl]
        if yl != b + "".join(free) + "".join(pos) or out != "".join(free) + "".join(kout) \
                or set(xl) != {b, *kout, *pos}:
            return None
        col_letters = b + "".join(kout) + "".join(pos)
        kind = "kernel"
    else:
        return None
    n, dims = L.dim_code(sizes[b]), {c: sizes[c] for c in col_letters}
    F = math.prod(sizes[c] for c in free)
    P = math.prod(sizes[c] for c in pos)
    Kf = math.prod(sizes[c] for c in col_letters[1:] if c not in pos)
    # The forward and the kernel's gradient read the same windows in the same layout: one
    # buffer of its own (never pooled) holds them from the first to the second.  The operand
    # is the same node in both, alive (so unchanged) until the later one.
    image = node.inputs[0] if not all(t.plain for t in op.terms[0]) else node.inputs[1]
    key = ("im2col", id(image), tuple(map(str, xterms)), tuple(sizes[c] for c in col_letters))
    perm = tuple(xl.index(c) for c in col_letters)
    lines = []
    col = L.hoisted.get(key)
    if col is None:
        col = L.hoisted[key] = f"c{len(L.consts)}"
        L.consts.append(f"    {col} = xp.empty({L.shape_code(tuple(dims[c] for c in col_letters))}, dtype=dtype)")
        lines.append(f"        xp.copyto({col}, xp.permute_dims({xcode}, {perm}))  # im2col")
    dest = L.output_buffer(node)
    if kind == "forward":
        lines.append(f"        xp.matmul(xp.reshape({ycode}, ({F}, {Kf})), xp.reshape({col}, ({n}, {Kf}, {P})), "
                     f"out=xp.reshape({dest}, ({n}, {F}, {P})))")
    else:
        scratch = L.bufs.take((sizes[b], F, Kf), "float")
        lines.append(f"        xp.matmul(xp.reshape({ycode}, ({n}, {F}, {P})), "
                     f"xp.permute_dims(xp.reshape({col}, ({n}, {Kf}, {P})), (0, 2, 1)), out={scratch})")
        lines.append(f"        xp.add.reduce({scratch}, axis=0, out=xp.reshape({dest}, ({F}, {Kf})))")
        L.bufs.give_back(scratch)
    return lines


def _scatter(node, L, views, scale) -> list[str]:
    """``out[T_0] += ...`` through affine output terms: tiles, or slice-adds."""
    op, sizes = node.op, node.op.sizes
    present = set("".join(v[0] for v in views))
    dest = L.output_buffer(node)
    counts: dict = {}
    for t in op.out:
        for c in t.letters:
            counts[c] = counts.get(c, 0) + 1
    tiles = _tiling(L, op.out, node.shape, sizes, counts)
    if tiles is not None and present >= {c for t in op.out for c in t.letters}:
        # the windows tile the output: contract straight into a strided view of it
        letters, view_code, covers, n_inner = tiles
        lines = [] if covers else [f"        {dest}.fill(0)"]
        target = f"t{L.position[id(node)]}"
        lines.append(f"        {target} = {view_code.format(dest=dest)}")
        joined = "".join(v[0] for v in views)
        if len(views) == 2 and set(joined) == set(letters) and all(len(set(v[0])) == len(v[0]) for v in views):
            # a product (max pooling's backward pass): one multiply per window position, each
            # reading contiguous operands, rather than one broadcast over size-K inner axes
            a, b = (view(code, ls, letters) for ls, code in views)
            lines.append(f"        rt.multiply_by_position({a}, {b}, {target}, {n_inner})")
        else:
            lines.append(f"        {_contract(L, views, letters, sizes, target)}")
    elif (gather := _gather(node, L, views)) is not None:
        lines = gather
    else:
        free, loops, axes = _slice_plan(op.out, sizes, counts)
        # the loop letters first: each slice-add then reads one contiguous block of T
        core = "".join(c for c in loops + free if c in present)
        T = L.bufs.take(tuple(sizes[c] for c in core), "float")
        plan = L.hoisted.setdefault(("slice_adds", id(node)), f"c{len(L.consts)}")
        L.consts.append(f"    {plan} = rt.SliceAdds({axes!r}, {tuple(int(sizes[c]) for c in loops)!r}, "
                        f"{tuple(loops.index(c) for c in loops if c in present)!r}, "
                        f"{tuple(k for k, c in enumerate(free) if c not in present)!r})")
        lines = [f"        {_contract(L, views, core, sizes, T)}",
                 f"        {plan}({dest}, {T})"]
        L.bufs.give_back(T)
    if scale != 1.0:
        lines.append(f"        xp.multiply({dest}, {L.hoist(repr(scale))}, out={dest})")
    return lines


def _elements(dims) -> int:
    return math.prod(d if isinstance(d, int) else 1 for d in dims)  # a symbolic dim counts alike on both sides


def _gather(node, L, views) -> list[str] | None:
    """The scatter computed as the gather explain prints (``dX[n,c,u,v] = Σ dY[n,o,u-p,v-q]·W``),
    when every solved index has coefficient ±1, each is bounded by an operand that it indexes
    whole (padded with zeros there, which enforces ``0 ≤ u-p < I``), and the gather's largest
    window is smaller than twice the slice-adds' temporary (they also add it K² times).  Else None."""
    op, sizes = node.op, node.op.sizes
    solved = op.solved(node)
    if solved is None or any(abs(den) != 1 for _, _, den in solved[1].values()):
        return None
    letters, subst, _ = solved
    plain_whole = {t.plain for o, ts in zip(node.inputs, op.terms) for t, d in zip(ts, o.shape)
                   if t.plain is not None and sizes[t.plain] == d}
    if not set(subst) <= plain_whole:
        return None
    new_sizes = {c: d for c, d in sizes.items() if c not in subst}
    new_sizes.update(zip(letters, node.shape))
    operands = []
    for o, ts in zip(node.inputs, op.terms):
        if isinstance(o.op, Constant):
            continue
        terms, widths = [], []
        for t, d in zip(ts, o.shape):
            coeffs, const = {}, t.const
            for c, a in t.coeffs:
                if c in subst:
                    num, k, den = subst[c]
                    for l, b in num:
                        coeffs[l] = coeffs.get(l, 0) + a * b * den  # den is ±1: 1/den = den
                    const += a * k * den
                else:
                    coeffs[c] = coeffs.get(c, 0) + a
            term = Term(tuple((c, a) for c, a in coeffs.items() if a), const)
            if any(not isinstance(new_sizes[c], int) for c in term.letters) or not isinstance(d, int):
                if term.plain is None:
                    return None
                widths.append((0, 0))
            else:
                lo, hi = term.bounds(new_sizes)
                widths.append((max(0, -lo), max(0, hi - (d - 1))))
                term = Term(term.coeffs, term.const + widths[-1][0])
            terms.append(term)
        operands.append((o, tuple(terms), tuple(widths)))
    windows = [_elements(new_sizes[c] for c in dict.fromkeys(c for t in ts for c in t.letters))
               for _, ts, _ in operands]
    counts = {}
    for t in op.out:
        for c in t.letters:
            counts[c] = counts.get(c, 0) + 1
    free, loops, _ = _slice_plan(op.out, sizes, counts)
    present = set("".join(v[0] for v in views))
    if max(windows) >= 2 * _elements(sizes[c] for c in loops + free if c in present):
        return None
    lines, scratch, gathered = [], [], []
    for o, terms, widths in operands:
        var = L.var[id(o)]
        if any(lo or hi for lo, hi in widths):
            padded = tuple(d + lo + hi if isinstance(d, int) else d for d, (lo, hi) in zip(o.shape, widths))
            buf = L.bufs.take(padded, "float")
            scratch.append(buf)
            inner = tuple((lo, lo + d if isinstance(d, int) else None) for d, (lo, _) in zip(o.shape, widths))
            lines.append(f"        rt.pad_into({buf}, {var}, {inner!r}, 0.0)")
            var, shape = buf, padded
        else:
            shape = o.shape
        gathered.append(window_code(L, var, shape, terms, new_sizes))
    lines.append(f"        {_contract(L, gathered, letters, new_sizes, L.var[id(node)])}")
    for buf in scratch:
        L.bufs.give_back(buf)
    return lines


def _tiling(L, out: tuple, shape, sizes, counts):
    """``(letters, view code, covers)`` when each output axis is a plain letter or ``a·i + p + c``
    with ``p`` over ``a`` values (windows side by side): a writeable view of the output with
    one axis per letter, and whether the windows cover the output; else None."""
    letters, axes, starts, covers, inner = "", [], [], True, []
    for k, (t, d) in enumerate(zip(out, shape)):
        if t.plain is not None and counts[t.plain] == 1:
            letters += t.plain
            axes.append(f"({L.dim_code(sizes[t.plain])}, (({k}, 1),))")
            starts.append(0)
            covers = covers and sizes[t.plain] == d
            continue
        if len(t.coeffs) != 2 or t.const < 0 or any(counts[c] != 1 for c in t.letters) or not isinstance(d, int):
            return None
        (i, a), (p, b) = sorted(t.coeffs, key=lambda cb: -cb[1])
        if b != 1 or a < 1 or sizes[p] != a:
            return None
        covers = covers and t.const == 0 and a * sizes[i] == d
        letters += i
        axes.append(f"({sizes[i]}, (({k}, {a}),))")
        inner.append((p, f"({a}, (({k}, 1),))"))
        starts.append(t.const)
    # the letters within the windows last: a product is then written one window position at a time
    letters += "".join(p for p, _ in inner)
    axes += [code for _, code in inner]
    return letters, f"rt.window({{dest}}, {tuple(starts)!r}, ({', '.join(axes)},), writeable=True)", covers, len(inner)


def _slice_plan(out: tuple, sizes, counts) -> tuple:
    """``(free letters, loop letters, axes)`` of a slice-add scatter: per output axis, the
    letter it is sliced along (the largest-range letter found in no other output term), the
    others looped over.  ``axes``: per axis ``(const, free coefficient, free range, ((loop
    position, coefficient), ...))`` with free range 0 for an axis indexed by loop letters only."""
    loops: list = []
    picked = []
    for t in out:
        own = [c for c in t.letters if counts[c] == 1]
        f = max(own, key=lambda c: sizes[c] if isinstance(sizes[c], int) else math.inf) if own else None
        picked.append(f)
        loops += [c for c in t.letters if c != f and c not in loops]
    free = "".join(f for f in picked if f)
    axes = []
    for t, f in zip(out, picked):
        rng = sizes[f] if f else 0
        axes.append((t.const, t.coefficient(f) if f else 0, rng if isinstance(rng, int) else -1,
                     tuple((loops.index(c), a) for c, a in t.coeffs if c != f)))
    return free, "".join(loops), tuple(axes)


@lowering(BACKEND, WindowMax)
def _window_max(node, L):
    op = node.op
    letters, code = window_code(L, L.var[id(node.inputs[0])], node.inputs[0].shape, op.terms, op.sizes)
    perm = tuple(letters.index(c) for c in op.out + op.window)
    dest = L.output_buffer(node)
    # one maximum per window position over strided slices: a reduction over the small
    # window axes of a strided view runs element by element
    return [f"        rt.window_max(xp.permute_dims({code}, {perm}), {len(op.window)}, {dest})"]


@lowering(BACKEND, FirstMaxMask)
def _first_max_mask(node, L):
    op = node.op
    x, peak = node.inputs
    letters, code = window_code(L, L.var[id(x)], x.shape, op.terms, op.sizes)
    perm = tuple(letters.index(c) for c in op.out + op.window)
    dest = L.output_buffer(node)
    free = L.bufs.take(peak.shape, "bool")
    L.bufs.give_back(free)  # scratch within the statement
    return [f"        rt.first_max_mask(xp.permute_dims({code}, {perm}), {L.var[id(peak)]}, {dest}, {free})"]


def _number(value: float) -> str:
    """A float as code (``float('-inf')``: ``repr`` gives ``-inf``, which is no Python literal)."""
    return repr(value) if value == value and abs(value) != float("inf") else f"float('{value}')"


@lowering(BACKEND, Pad)
def _pad(node, L):
    dest = L.output_buffer(node)
    inner = tuple((lo, lo + d if isinstance(d, int) else None) for (lo, _), d in zip(node.op.widths, node.inputs[0].shape))
    return [f"        rt.pad_into({dest}, {L.var[id(node.inputs[0])]}, {inner!r}, {_number(node.op.value)})"]


@lowering(BACKEND, Reshape)
def _reshape(node, L):
    v = L.var[id(node)] = f"v{L.position[id(node)]}"
    L.claim(node, L.owner.get(id(node.inputs[0])))  # a view of the operand's buffer where it can be
    return [f"        {v} = xp.reshape({L.var[id(node.inputs[0])]}, {L.shape_code(node.shape)})"]
