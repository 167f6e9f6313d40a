"""The numpy lowering: the same program as :mod:`graphc.compiler.emit`, with planned buffers.

Everything is decided here, once: every intermediate gets a buffer allocated
when the function is specialised for its dims (``build``), buffers are reused
once their value is dead, every call writes with ``out=``, elementwise
expressions become ufunc sequences (in place into a dying operand where that is
safe), two-operand contractions that are matrix products call ``xp.matmul`` on
transposed views (no transpose is materialised, results are C-ordered), other
contractions call opt_einsum expressions with ``out=``, softmax cross-entropy
computes the softmax its gradient needs in the same pass, and parameter updates
are written straight into the parameter arrays after their last read.  The
step that runs thousands of times then allocates only its returned arrays.
"""

from __future__ import annotations

from graphc.compiler.emit import Kernel, Program, assemble, deferred_updates, signature, view, view_base
from graphc.compiler.notation import formula, safe
from graphc.compiler.ufuncs import Conflict, UfuncLowering
from graphc.compiler.walk import toposort
from graphc.errors import GraphError
from graphc.ops.contraction import Contraction, letter_sizes
from graphc.ops.elementwise import Elementwise
from graphc.ops.leaves import Constant, Delta, DimSize, Input, Zeros
from graphc.ops.nn import Argmax, LogSoftmax, OneHot, Softmax, SoftmaxCrossEntropy
from graphc.ops.node import Node


def gemm(spec) -> tuple | None:
    """For a two-operand matrix product, ``(swap, orient_a, orient_b)``: how to call matmul.

    ``orient_x`` is True when operand x must be transposed.  None when the spec is not
    one matrix product of operands of rank ≤ 2 over exactly one summed index.
    """
    if len(spec.inputs) != 2:
        return None
    (ta, tb), out = spec.inputs, spec.output
    if any(len(set(t)) != len(t) for t in (ta, tb, out)) or len(ta) > 2 or len(tb) > 2:
        return None
    shared = set(ta) & set(tb)
    summed = shared - set(out)
    if shared != summed or len(summed) != 1 or not set(ta + tb) - summed >= set(out):
        return None
    (s,) = summed
    fa, fb = ta.replace(s, ""), tb.replace(s, "")
    if set(fa + fb) != set(out):
        return None
    if out == fa + fb:  # out = A(fa, s) · B(s, fb)
        return False, len(ta) == 2 and ta != fa + s, len(tb) == 2 and tb != s + fb
    if out == fb + fa:  # out = B(fb, s) · A(s, fa)
        return True, len(ta) == 2 and ta != s + fa, len(tb) == 2 and tb != fb + s
    return None


class _Buffers:
    """Buffers by (shape, kind): allocation in build, a free pool, and per-buffer reference counts."""

    def __init__(self, shape_code):
        self.shape_code = shape_code
        self.decls: list[str] = []
        self.free: dict[tuple, list[str]] = {}
        self.refs: dict[str, int] = {}
        self.key: dict[str, tuple] = {}

    def take(self, shape, kind: str) -> str:
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
        self.free.setdefault(self.key[name], []).append(name)


def emit_numpy(outputs: list[Node], name: str = "graph", updates: list | None = None,
               check_numerics: bool = False) -> Program:
    updates = [(leaf, node) for leaf, node in (updates or []) if node is not leaf]
    roots = list(outputs) + [node for _, node in updates] + [leaf for leaf, _ in updates]
    order = toposort(roots)
    update_of = {id(node): leaf for leaf, node in updates}
    # Updates go last, after every read of the old values (none of the rest reads an update).
    rest = [n for n in order if id(n) not in update_of]
    late = [n for n in order if id(n) in update_of]
    if not any(id(i) in update_of for n in rest for i in n.inputs):
        order = rest + late
    args, dims, dim_code, shape_code = signature(order)
    var: dict[int, str] = {id(a): f"a{k}" for k, a in enumerate(args)}
    owner: dict[int, str | None] = {}
    position = {id(n): k for k, n in enumerate(order)}
    last_use: dict[int, int] = {}
    for k, node in enumerate(order):
        for i in node.inputs:
            last_use[id(i)] = k
    kept = {id(o) for o in outputs} | set(update_of)
    out_ids = {id(o) for o in outputs}
    # Leaves still read once every node has run: returned (or viewed by a returned value), or
    # copied into another update target.  Their updates cannot be written early, in place.
    read_at_end = {id(b) for b in map(view_base, list(outputs) + [n for _, n in updates]) if b is not None}

    bufs = _Buffers(shape_code)
    consts: list[str] = []
    kernels: list[Kernel] = []
    lines: list[str] = []
    done: set[int] = set()
    fresh: set[str] = set()  # variables holding arrays made during this call
    temporaries: list[Node] = []
    labels: list[str] = []  # node descriptions for the numerics guard, passed to build() as data
    in_place_updates: set[int] = set()

    def claim(node: Node, buf: str | None) -> None:
        owner[id(node)] = buf
        if buf is not None:
            bufs.refs[buf] += 1

    def dest_for(node: Node, kind: str = "float") -> str:
        """A buffer for ``node``'s value: fresh per call for outputs, else planned."""
        if id(node) in out_ids:
            v = f"v{position[id(node)]}"
            dtype = "bool" if kind == "bool" else "dtype"
            lines.append(f"        {v} = xp.empty({shape_code(node.shape)}, dtype={dtype})")
            claim(node, None)
            fresh.add(v)
            return v
        buf = bufs.take(node.shape, kind)
        claim(node, buf)
        return buf

    def ufuncs(node: Node, dest: str, alias=None) -> list[str]:
        op = node.op
        kind = "bool" if node.kind == "bool" else "float"
        atoms = {s: view(var[id(i)], idx, op.out_indices) if i.ndim else var[id(i)]
                 for s, i, idx in zip(op.fn.symbols, node.inputs, op.in_indices)}
        for s, i in zip(op.fn.symbols, node.inputs):
            if isinstance(i.op, Constant):
                atoms[s] = repr(i.op.value)
        lent: list[str] = []
        scalars = [s for s, i in zip(op.fn.symbols, node.inputs) if i.ndim == 0]

        def scratch(kind):
            buf = bufs.take(node.shape, kind)
            lent.append(buf)
            return buf

        def release(buf):
            lent.remove(buf)
            bufs.give_back(buf)

        try:
            return ["        " + line for line in UfuncLowering(atoms, scratch, release, alias, kind, scalars).lower(op.fn.expr, dest)]
        finally:  # scratch still lent when the lowering stopped early (a Conflict) goes back too
            for buf in lent:
                bufs.give_back(buf)

    def elementwise(node: Node) -> list[str]:
        op = node.op
        kind = node.kind if node.kind == "bool" else "float"
        leaf = update_of.get(id(node))
        if leaf is not None and id(leaf) in var and id(leaf) not in read_at_end and not any(
                view_base(i) is leaf for n in order[position[id(node)] + 1:] for i in n.inputs):
            # The update writes the parameter itself, if it reads its old value only here.
            alias = next((s for s, i in zip(op.fn.symbols, node.inputs) if i is leaf), None)
            if sum(i is leaf for i in node.inputs) <= 1:
                try:
                    code = ufuncs(node, var[id(leaf)], alias)
                    in_place_updates.add(id(node))
                    var[id(node)] = var[id(leaf)]
                    claim(node, None)
                    return code
                except Conflict:
                    pass
        if id(node) not in out_ids:
            for s, i, idx in zip(op.fn.symbols, node.inputs, op.in_indices):
                buf = owner.get(id(i))
                if (buf is None or var[id(i)] != buf or last_use.get(id(i)) != position[id(node)]
                        or id(i) in kept or bufs.refs[buf] != 1 or i.shape != node.shape
                        or idx != op.out_indices or bufs.key[buf][1] != kind
                        or sum(j is i for j in node.inputs) != 1):
                    continue
                try:
                    code = ufuncs(node, buf, s)
                except Conflict:
                    continue
                owner[id(i)] = None  # the buffer passes to this node
                var[id(node)] = buf
                claim(node, buf)
                bufs.refs[buf] = 1
                return code
        dest = dest_for(node, kind)
        var[id(node)] = dest
        return ufuncs(node, dest)

    def contraction(node: Node) -> list[str]:
        spec = node.op.spec
        ins = [var[id(i)] for i in node.inputs]
        present = set("".join(spec.inputs))
        core = "".join(c for c in spec.output if c in present)
        term = spec.inputs[0]
        single = len(spec.inputs) == 1 and len(set(term)) == len(term)
        if single and sorted(term) == sorted(core) and core == spec.output:  # transpose: a view
            v = f"v{position[id(node)]}"
            var[id(node)] = v
            claim(node, owner.get(id(node.inputs[0])))
            return [f"        {v} = xp.permute_dims({ins[0]}, {tuple(term.index(c) for c in core)})"]
        if core != spec.output:  # broadcast: a view of the core result
            sizes = letter_sizes(node)
            expanded = tuple(sizes[c] if c in present else 1 for c in spec.output)
            inner = Node(node.graph, Contraction(type(spec)(spec.inputs, core)), node.inputs,
                         tuple(sizes[c] for c in core), "float", None)
            temporaries.append(inner)  # alive until emission ends, so its id() is never reused
            position[id(inner)] = position[id(node)]
            last_use[id(inner)] = last_use.get(id(node), 0)
            code = contraction(inner) if core or len(node.inputs) > 1 or term else []
            base = var[id(inner)] if id(inner) in var else ins[0]
            v = f"v{position[id(node)]}"
            var[id(node)] = v
            claim(node, owner.get(id(inner)) or owner.get(id(node.inputs[0])))
            return code + [f"        {v} = xp.broadcast_to(xp.reshape({base}, {shape_code(expanded)}), "
                           f"{shape_code(node.shape)})"]
        if not node.shape:  # a scalar: returned fresh (opt_einsum cannot write a 0-d out=)
            v = f"v{position[id(node)]}"
            var[id(node)] = v
            claim(node, None)
            fresh.add(v)
            if single and not core:
                return [f"        {v} = xp.sum({ins[0]})"] if len(set(term)) == len(term) else [
                    f"        {v} = xp.einsum('{spec}', {ins[0]})"]
            k = len(kernels)
            kernels.append(Kernel(str(spec), [i.shape for i in node.inputs]))
            return [f"        {v} = k{k}({', '.join(ins)})"]
        dest = dest_for(node)
        var[id(node)] = dest
        plan = gemm(spec)
        if plan is not None:
            swap, ta, tb = plan
            a = ins[0] + (".T" if ta else "")
            b = ins[1] + (".T" if tb else "")
            # dot has less call overhead than the matmul gufunc for 2-D operands
            fn = "dot" if len(node.inputs[0].shape) == 2 and len(node.inputs[1].shape) == 2 else "matmul"
            return [f"        xp.{fn}({b if swap else a}, {a if swap else b}, out={dest})"]
        if single and core == "".join(c for c in term if c in core):
            axes = tuple(k for k, c in enumerate(term) if c not in core)
            axis = axes[0] if len(axes) == 1 else axes
            return [f"        xp.add.reduce({ins[0]}, axis={axis}, out={dest})"]  # no np.sum wrapper
        k = len(kernels)
        kernels.append(Kernel(",".join(spec.inputs) + "->" + core, [i.shape for i in node.inputs]))
        return [f"        k{k}({', '.join(ins)}, out={dest})"]

    for node in order:
        if id(node) in var or id(node) in done:
            continue
        op = node.op
        ins = [var.get(id(i)) for i in node.inputs]
        if isinstance(op, DimSize):
            var[id(node)] = dim_code(op.dim)
            claim(node, None)
            continue
        if isinstance(op, (Constant, Zeros, Delta)):
            v = f"c{len(consts)}"
            rhs = (f"xp.asarray({op.value!r}, dtype=dtype)" if isinstance(op, Constant) else
                   f"xp.zeros({shape_code(node.shape)}, dtype=dtype)" if isinstance(op, Zeros) else
                   f"xp.eye({dim_code(node.shape[0])}, dtype=dtype)")
            consts.append(f"    {v} = {rhs}")
            var[id(node)] = v
            claim(node, None)
            continue
        if isinstance(op, Elementwise):
            code = elementwise(node)
        elif isinstance(op, Contraction):
            code = contraction(node)
        elif isinstance(op, (Softmax, LogSoftmax)):
            dest = dest_for(node)
            var[id(node)] = dest
            code = [f"        rt.np_{op.kind_name}({ins[0]}, out={dest})"]
        elif isinstance(op, SoftmaxCrossEntropy):
            # The gradient's softmax of the same logits is computed in the same pass.
            y = next((n for n in order[position[id(node)]:] if isinstance(n.op, Softmax)
                      and n.inputs[0] is node.inputs[0] and id(n) not in var), None)
            y_code = "None"
            if y is not None:
                y_code = dest_for(y)
                var[id(y)] = y_code
                done.add(id(y))
            helper = "np_softmax_ce_labels" if op.integer_labels else "np_softmax_ce"
            v = f"v{position[id(node)]}"
            var[id(node)] = v
            claim(node, None)
            fresh.add(v)
            code = [f"        {v} = rt.{helper}({ins[0]}, {ins[1]}, {y_code})"]
        elif isinstance(op, OneHot):
            dest = dest_for(node)
            var[id(node)] = dest
            code = [f"        rt.np_one_hot({ins[0]}, out={dest})"]
        elif isinstance(op, Argmax):
            v = f"v{position[id(node)]}"
            var[id(node)] = v
            claim(node, None)
            fresh.add(v)
            code = [f"        {v} = xp.argmax({ins[0]}, axis=-1)"]
        elif isinstance(op, Input):  # pragma: no cover - leaves are arguments
            continue
        else:  # pragma: no cover
            raise GraphError(f"compile: no numpy lowering for {op.describe()} of {node.name!r}")
        comment = safe(formula(node))
        lines.append(f"        # {comment if len(comment) < 150 else comment[:147] + '...'}")
        lines.extend(code)
        if check_numerics and node.kind == "float":
            lines.append(f"        rt.check_finite(xp, {var[id(node)]}, labels[{len(labels)}])")
            labels.append(formula(node))
        # Values read for the last time here give their buffers back.
        k = position[id(node)]
        for i in set(map(id, node.inputs)):
            if last_use.get(i) == k and i not in kept:
                buf = owner.get(i)
                if buf is not None:
                    bufs.refs[buf] -= 1
                    if bufs.refs[buf] == 0:
                        bufs.give_back(buf)
                    owner[i] = None

    # Returned arrays are the caller's: fresh per call, never a planned buffer or a view, and
    # copied before any deferred update is written, so they hold the values of this call.
    results, returned = [], set()
    for k, o in enumerate(outputs):  # an array returned twice is copied: outputs never share memory
        x = var[id(o)]
        if x in fresh and x not in returned:
            results.append(x)
        else:
            lines.append(f"        r{k} = rt.materialize(xp, {x})")
            results.append(f"r{k}")
        returned.add(x)
    lines.extend(deferred_updates(updates, in_place_updates, var))
    source = assemble(f"{safe(name)} (numpy, planned buffers)", args, dims, dim_code, len(kernels),
                      bufs.decls + consts, lines, results)
    return Program(name, source, args, dims, list(outputs), kernels=kernels, updates=updates, order=order,
                   labels=labels)
