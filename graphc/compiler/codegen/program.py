"""What every backend's generated program shares: its shape, its signature and its header.

A program's source is a factory ``build(xp, rt, kernels, dtype, dims, labels, device)``,
called once per set of concrete dims (``labels`` carries the numerics-guard
messages as data; ``device``, where the array-API backend makes arrays: None for
numpy), returning the function ``run(a0, a1, ...)``: arrays in, a tuple
of results out.  User names never appear in code: arguments are ``a<k>``, dims
``d<k>``, values ``v<k>``; names appear only in comments, escaped so they cannot
end the line (:func:`graphc.compiler.explain.safe`).  Each backend
(:mod:`graphc.backends`) writes the body from its per-op lowering rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graphc.compiler.explain.notation import safe
from graphc.errors import GraphError
from graphc.ops.leaves import Input
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
    while not isinstance(node.op, Input):
        node = node.op.view_of(node)
        if node is None:
            return None
    return node


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
    graph = leaves[0].graph if leaves else None
    rank = {id(n): k for k, n in enumerate([*graph.leaves.values(), *graph.private.values()])} if leaves else {}
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


def assemble(title: str, args: list, dims: list, dim_code, n_kernels: int, setup: list[str],
             body: list[str], results: list[str]) -> str:
    """The source of ``build``: a header naming the arguments, setup once per dims, then ``run``."""
    header = [f"# graphc: {title}"]
    header += [f"#   a{k} = {safe(a.name)} {safe(str(a.shape))}" for k, a in enumerate(args)]
    header += [f"#   {dim_code(d)} = dim {safe(d)}" for d in dims]
    return "\n".join(header + [
        "def build(xp, rt, kernels, dtype, dims, labels, device=None):",
        f"    ({''.join(dim_code(d) + ', ' for d in dims)}) = dims",
        f"    ({''.join(f'k{k}, ' for k in range(n_kernels))}) = kernels",
        *setup,
        f"    def run({', '.join(f'a{k}' for k in range(len(args)))}):",
        *body,
        f"        return ({''.join(r + ', ' for r in results)})",
        "    return run",
        "",
    ])


def input_checks(args: list, labels: list) -> list[str]:
    """The numerics guard's first statements: every float argument checked for NaN and Inf
    before anything is computed from it, so a bad input is blamed, not the first op to read it."""
    lines = []
    for k, leaf in enumerate(args):
        if leaf.kind == "float":
            lines.append(f"        rt.check_finite(xp, a{k}, labels[{len(labels)}], given=True)")
            labels.append(f"input {safe(leaf.name)!r}")
    return lines
