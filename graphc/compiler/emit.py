"""Code emission: turn the simplified graph into readable Python source.

The source is a factory ``build(xp, rt, kernels, dtype, dims, labels)``, called
once per set of concrete dims (``labels`` carries the numerics-guard messages as
data), returning the function ``run(a0, a1, ...)``: arrays in, a tuple of results
out.  User names never appear in code: arguments are ``a<k>``, dims ``d<k>``,
values ``v<k>``; names appear only in comments, escaped so they cannot end the
line.  Contractions call ``kernels[k]``, opt_einsum expressions built once per set
of concrete shapes; elementwise nodes are sympy expressions printed against the
array namespace ``xp``; a value is deleted after its last use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graphc.compiler.notation import formula, safe
from graphc.compiler.printing import code
from graphc.compiler.walk import toposort
from graphc.errors import GraphError
from graphc.ops.contraction import Contraction, letter_sizes
from graphc.ops.elementwise import Elementwise
from graphc.ops.leaves import Constant, Delta, DimSize, Input, Zeros
from graphc.ops.nn import Argmax, LogSoftmax, OneHot, Softmax, SoftmaxCrossEntropy
from graphc.ops.node import Node


@dataclass
class Kernel:
    """One contraction to build with opt_einsum once the dims are known."""

    spec: str
    shapes: list  # per operand: a tuple of dims (ints and symbolic names)


@dataclass
class Program:
    name: str
    source: str
    args: list  # leaf nodes, in argument order
    dims: list  # symbolic dim names, in argument order
    outputs: list
    kernels: list = field(default_factory=list)
    updates: list = field(default_factory=list)
    labels: list = field(default_factory=list)  # data for the generated code (numerics-guard messages)
    order: list = field(default_factory=list)


def view_base(node: Node) -> Node | None:
    """The input a node is a view of (itself, or a transpose or broadcast of it, as both lowerings emit them)."""
    while True:
        if isinstance(node.op, Input):
            return node
        if not isinstance(node.op, Contraction) or len(node.inputs) != 1:
            return None
        term, out = node.op.spec.inputs[0], node.op.spec.output
        if len(set(term)) != len(term) or not set(term) <= set(out):  # a sum or a diagonal: a new array
            return None
        node = node.inputs[0]


def constant_rhs(node: Node, shape_code, dim_code) -> str:
    """Code making a constant, a zeros array or a δ (identity) in the call's dtype."""
    op = node.op
    if isinstance(op, Constant):
        return f"xp.asarray({op.value!r}, dtype=dtype)"
    if isinstance(op, Zeros):
        return f"xp.zeros({shape_code(node.shape)}, dtype=dtype)"
    return f"xp.eye({dim_code(node.shape[0])}, dtype=dtype)"


def deferred_updates(updates: list, done: set, var: dict) -> list[str]:
    """Write the updates not already done in place; every new value is read before any is written."""
    pending = [(leaf, node) for leaf, node in updates if id(node) not in done]
    targets = {id(leaf) for leaf, _ in pending}
    lines, copied = [], {}
    for k, (leaf, node) in enumerate(pending):
        base = view_base(node)
        if base is not None and id(base) in targets:  # e.g. swapping two params: copy the old value first
            copied[k] = f"u{k}"
            lines.append(f"        u{k} = rt.materialize(xp, {var[id(node)]})")
    for k, (leaf, node) in enumerate(pending):
        lines.append(f"        {var[id(leaf)]}[...] = {copied.get(k, var[id(node)])}  # {safe(leaf.name)} updated")
    return lines


def _arg_order(order: list[Node]) -> list[Node]:
    leaves = list({id(n): n for n in order if isinstance(n.op, Input)}.values())
    rank = {id(n): k for k, n in enumerate(leaves[0].graph.leaves.values())} if leaves else {}
    return sorted(leaves, key=lambda n: rank.get(id(n), len(rank)))


def view(var: str, indices: str, out: str) -> str:
    """Index ``var`` (written with ``indices``) so it broadcasts against ``out``."""
    if not indices:
        return var
    in_order = "".join(c for c in out if c in indices)
    if in_order != indices:
        var = f"xp.permute_dims({var}, {tuple(indices.index(c) for c in in_order)})"
    first = out.index(in_order[0])
    if out[first:] == in_order:  # right-aligned: numpy broadcasting does the rest
        return var
    return f"{var}[{', '.join(':' if c in in_order else 'None' for c in out[first:])}]"


def signature(order: list[Node]):
    """Arguments and symbolic dims of a program, and how to write dims and shapes in code."""
    args = _arg_order(order)
    bound = {d for leaf in args for d in leaf.shape if isinstance(d, str)}
    needed = {d for node in order for d in node.shape if isinstance(d, str)}
    if needed - bound and order:
        # A dim no read array carries (db = Σ_n 1): take it from a leaf that declares it.
        extra = [leaf for leaf in order[0].graph.leaves.values()
                 if leaf not in args and set(leaf.shape) & (needed - bound)]
        args = _arg_order(args + extra)
    dims: list[str] = []
    for leaf in args:
        dims.extend(d for d in leaf.shape if isinstance(d, str) and d not in dims)
    for node in order:
        unbound = [d for d in node.shape if isinstance(d, str) and d not in dims]
        if unbound:
            raise GraphError(
                f"compile: {node.name!r} has dim {unbound[0]!r}, which no input of this function binds; "
                "add an output that reads an input with that dim, or give the dim a fixed size"
            )
    dim_var = {d: f"d{k}" for k, d in enumerate(dims)}
    dim_code = lambda d: dim_var[d] if isinstance(d, str) else str(d)  # noqa: E731
    shape_code = lambda s: "(" + "".join(dim_code(d) + ", " for d in s).rstrip(" ") + ")"  # noqa: E731
    return args, dims, dim_code, shape_code


def emit(outputs: list[Node], name: str = "graph", updates: list | None = None,
         check_numerics: bool = False) -> Program:
    """Source for ``outputs``; each ``(leaf, node)`` in ``updates`` is written into the leaf's array in place."""
    updates = [(leaf, node) for leaf, node in (updates or []) if node is not leaf]
    order = toposort(list(outputs) + [node for _, node in updates] + [leaf for leaf, _ in updates])
    args, dims, dim_code, shape_code = signature(order)
    var: dict[int, str] = {id(a): f"a{k}" for k, a in enumerate(args)}

    kernels: list[Kernel] = []
    body: list[tuple[str, Node]] = []
    names = {}
    for node in order:
        if id(node) in var:
            continue
        op = node.op
        ins = [var[id(i)] for i in node.inputs]
        if isinstance(op, DimSize):
            var[id(node)] = dim_code(op.dim)
            continue
        v = var[id(node)] = f"v{len(body)}"
        if isinstance(op, (Constant, Zeros, Delta)):
            rhs = constant_rhs(node, shape_code, dim_code)
        elif isinstance(op, Contraction):
            rhs = _contraction(node, ins, kernels, dim_code, shape_code)
        elif isinstance(op, Elementwise):
            rhs = code(op.fn.expr, {s: view(x, idx, op.out_indices)
                                    for s, x, idx in zip(op.fn.symbols, ins, op.in_indices)})
            if not any(len(idx) == node.ndim for idx in op.in_indices):  # no operand spans the output
                rhs = f"xp.broadcast_to({rhs}, {shape_code(node.shape)})"
        elif isinstance(op, Softmax):
            rhs = f"rt.softmax(xp, {ins[0]})"
        elif isinstance(op, LogSoftmax):
            rhs = f"rt.log_softmax(xp, {ins[0]})"
        elif isinstance(op, SoftmaxCrossEntropy):
            helper = "softmax_cross_entropy_labels" if op.integer_labels else "softmax_cross_entropy"
            rhs = f"rt.{helper}(xp, {ins[0]}, {ins[1]})"
        elif isinstance(op, OneHot):
            rhs = f"rt.one_hot(xp, {ins[0]}, {dim_code(op.classes)}, dtype)"
        elif isinstance(op, Argmax):
            rhs = f"xp.argmax({ins[0]}, axis=-1)"
        else:  # pragma: no cover - every op of graphc.ops is handled above
            raise GraphError(f"compile: no code for op {op.describe()} of {node.name!r}")
        body.append((f"{v} = {rhs}", node))
        names[id(node)] = node.name

    # Results that may be views of inputs (transposes, broadcasts, diagonals, the inputs themselves)
    # or that repeat are copied, before any update is written: outputs never share memory.
    views = {var[id(a)] for a in args} | {var[id(n)] for _, n in body if isinstance(n.op, Contraction) and len(
        n.inputs) == 1} | {v for stmt, _ in body for v in [stmt.split(" = ", 1)[0]] if "xp.broadcast_to(" in stmt}
    out_vars, copies = [], []
    for k, o in enumerate(outputs):
        x = var[id(o)]
        if x in views or x in out_vars or isinstance(o.op, (DimSize, Constant)):
            copies.append(f"        r{k} = rt.materialize(xp, {x})")
            x = f"r{k}"
        out_vars.append(x)

    # Delete each intermediate after its last use, to keep peak memory down.
    last_use: dict[str, int] = {}
    for k, (_, node) in enumerate(body):
        for i in node.inputs:
            last_use[var[id(i)]] = k
    keep = {var[id(o)] for o in outputs} | {var[id(n)] for _, n in updates}
    lines, labels = [], []
    for k, (stmt, node) in enumerate(body):
        comment = safe(formula(node))
        lines.append(f"        {stmt}  # {comment}" if len(comment) < 160 else f"        # {comment[:157]}...\n        {stmt}")
        if check_numerics and node.kind == "float":
            lines.append(f"        rt.check_finite(xp, {stmt.split(' = ', 1)[0]}, labels[{len(labels)}])")
            labels.append(formula(node))
        dead = [x for x, last in last_use.items() if last == k and x.startswith("v") and x not in keep]
        if dead:
            lines.append(f"        del {', '.join(sorted(dead, key=lambda s: int(s[1:])))}")
    lines.extend(copies)
    lines.extend(deferred_updates(updates, set(), var))  # last, after every read of the old values
    source = assemble(f"{safe(name)}", args, dims, dim_code, len(kernels), [], lines, out_vars)
    return Program(name, source, args, dims, list(outputs), kernels=kernels, updates=updates, order=order,
                   labels=labels)


def assemble(title: str, args: list, dims: list, dim_code, n_kernels: int, setup: list[str],
             body: list[str], results: list[str]) -> str:
    """The source of ``build``: a header naming the arguments, setup once per dims, then ``run``."""
    header = [f"# graphc: {title}"]
    header += [f"#   a{k} = {safe(a.name)} {safe(str(a.shape))}" for k, a in enumerate(args)]
    header += [f"#   {dim_code(d)} = dim {safe(d)}" for d in dims]
    return "\n".join(header + [
        "def build(xp, rt, kernels, dtype, dims, labels):",
        f"    ({''.join(dim_code(d) + ', ' for d in dims)}) = dims",
        f"    ({''.join(f'k{k}, ' for k in range(n_kernels))}) = kernels",
        *setup,
        f"    def run({', '.join(f'a{k}' for k in range(len(args)))}):",
        *body,
        f"        return ({''.join(r + ', ' for r in results)})",
        "    return run",
        "",
    ])


def _contraction(node: Node, ins: list[str], kernels: list, dim_code, shape_code) -> str:
    spec = node.op.spec
    present = set("".join(spec.inputs))
    core = "".join(c for c in spec.output if c in present)
    single = len(spec.inputs) == 1 and len(set(spec.inputs[0])) == len(spec.inputs[0])
    if single and sorted(spec.inputs[0]) == sorted(core):  # a transpose: a view, never a copy
        rhs = ins[0] if spec.inputs[0] == core else f"xp.permute_dims({ins[0]}, {tuple(spec.inputs[0].index(c) for c in core)})"
    elif single and all(c in spec.inputs[0] for c in core) and core == "".join(c for c in spec.inputs[0] if c in core):
        axes = tuple(k for k, c in enumerate(spec.inputs[0]) if c not in core)
        rhs = f"xp.sum({ins[0]}, axis={axes})"
    else:
        k = len(kernels)
        kernels.append(Kernel(",".join(spec.inputs) + "->" + core, [i.shape for i in node.inputs]))
        rhs = f"k{k}({', '.join(ins)})"
    if core != spec.output:  # output indices found in no operand: broadcast
        sizes = letter_sizes(node)
        expanded = tuple(sizes[c] if c in present else 1 for c in spec.output)
        rhs = f"xp.broadcast_to(xp.reshape({rhs}, {shape_code(expanded)}), {shape_code(node.shape)})"
    return rhs
