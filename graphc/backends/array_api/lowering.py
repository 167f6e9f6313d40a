"""The array-API lowering: one plain statement per node, for any array library.

Each node becomes ``v<k> = <rhs>``, where the rhs comes from the node's op's rule
for ``"array_api"`` (:func:`graphc.ops.registry.lowering`): contractions call
``kernels[k]``, opt_einsum expressions built once per set of concrete shapes;
elementwise nodes are sympy expressions printed against the array namespace ``xp``;
the rest call ``xp`` or this backend's runtime (``rt``).  A value is deleted after
its last use.  No buffers and no ``out=``: arrays of JAX are immutable, and each
library plans its own memory.

A rule takes ``(node, lowering)`` and returns the rhs, or None when it bound the
node's value itself (``lowering.bind``).  ``lowering.var(n)`` is the code of a
computed value; ``lowering.dim_code``/``shape_code`` write dims and shapes.
"""

from __future__ import annotations

from graphc.compiler.codegen.program import Kernel, Program, assemble, deferred_updates, input_checks, signature, view
from graphc.compiler.codegen.xp_code import code
from graphc.compiler.explain.notation import formula, safe
from graphc.compiler.walk import toposort
from graphc.errors import GraphError
from graphc.ops.contraction import Contraction, letter_sizes
from graphc.ops.elementwise import Elementwise
from graphc.ops.leaves import Constant, Delta, DimSize, Zeros
from graphc.ops.registry import lowering, lowering_rule

BACKEND = "array_api"


class ArrayApiLowering:
    """The state of one program's lowering: code names of values, kernels, views to copy."""

    def __init__(self, outputs, name: str, updates: list | None, check_numerics: bool):
        self.outputs = list(outputs)
        self.name = name
        self.check_numerics = check_numerics
        self.updates = [(leaf, node) for leaf, node in (updates or []) if node is not leaf]
        self.order = toposort(self.outputs + [node for _, node in self.updates] + [leaf for leaf, _ in self.updates])
        self.args, self.dims, self.dim_code, self.shape_code = signature(self.order)
        self._var: dict[int, str] = {id(a): f"a{k}" for k, a in enumerate(self.args)}
        self.kernels: list[Kernel] = []
        # values that may share memory with an input or with each other: copied when returned
        self.shared: set[str] = set(self._var.values())
        self._sharing: set[int] = set()

    def var(self, node) -> str:
        return self._var[id(node)]

    def bind(self, node, code: str, shared: bool = True) -> None:
        """``node``'s value is ``code`` (a dim, an operand's variable): no statement needed."""
        self._var[id(node)] = code
        if shared:
            self.shared.add(code)

    def may_share(self, node) -> None:
        """``node``'s value may be a view of its operand (numpy's einsum returns diagonals as views)."""
        self._sharing.add(id(node))

    def kernel(self, spec: str, operands) -> str:
        """A call of the opt_einsum expression for ``spec``, built once the dims are known."""
        self.kernels.append(Kernel(spec, [i.shape for i in operands]))
        return f"k{len(self.kernels) - 1}({', '.join(self.var(i) for i in operands)})"

    def program(self) -> Program:
        body = []
        for node in self.order:
            if id(node) in self._var:
                continue
            rule = lowering_rule(BACKEND, node.op)
            if rule is None:
                raise GraphError(f"compile: the array-API backend has no rule for {node.op.describe()} of {node.name!r}")
            rhs = rule(node, self)
            if rhs is None:
                continue
            v = self._var[id(node)] = f"v{len(body)}"
            if id(node) in self._sharing or node.op.view_of(node) is not None or "xp.broadcast_to(" in rhs:
                self.shared.add(v)
            body.append((f"{v} = {rhs}", node))

        # Results that may be views of inputs (transposes, broadcasts, the inputs themselves)
        # or that repeat are copied, before any update is written: outputs never share memory.
        out_vars, copies = [], []
        for k, o in enumerate(self.outputs):
            x = self.var(o)
            if isinstance(o.op, DimSize):  # a dim's size as a result: an array, as every result is
                copies.append(f"        r{k} = xp.asarray({x}, dtype=dtype, device=device)")
                x = f"r{k}"
            elif x in self.shared or x in out_vars:
                copies.append(f"        r{k} = rt.materialize(xp, {x})")
                x = f"r{k}"
            out_vars.append(x)

        # Delete each intermediate after its last use, to keep peak memory down.
        last_use: dict[str, int] = {}
        for k, (_, node) in enumerate(body):
            for i in node.inputs:
                last_use[self.var(i)] = k
        keep = {self.var(o) for o in self.outputs} | {self.var(n) for _, n in self.updates}
        labels = []
        lines = input_checks(self.args, labels) if self.check_numerics else []
        for k, (stmt, node) in enumerate(body):
            comment = safe(formula(node))
            lines.append(f"        {stmt}  # {comment}" if len(comment) < 160 else f"        # {comment[:157]}...\n        {stmt}")
            if self.check_numerics and node.kind == "float":
                lines.append(f"        rt.check_finite(xp, {stmt.split(' = ', 1)[0]}, labels[{len(labels)}])")
                labels.append(formula(node))
            dead = [x for x, last in last_use.items() if last == k and x.startswith("v") and x not in keep]
            if dead:
                lines.append(f"        del {', '.join(sorted(dead, key=lambda s: int(s[1:])))}")
        lines.extend(copies)
        lines.extend(deferred_updates(self.updates, set(), self._var))  # last, after every read of the old values
        source = assemble(f"{safe(self.name)}", self.args, self.dims, self.dim_code, len(self.kernels), [], lines,
                          out_vars)
        return Program(self.name, source, self.args, self.dims, self.outputs, kernels=self.kernels,
                       updates=self.updates, order=self.order, labels=labels)


def lower(outputs, name: str = "graph", updates: list | None = None, check_numerics: bool = False) -> Program:
    """The array-API program for ``outputs``; each ``(leaf, node)`` in ``updates`` is written into
    the leaf's array in place after everything else is computed."""
    return ArrayApiLowering(outputs, name, updates, check_numerics).program()


# -- rules for the core ops -----------------------------------------------------------------
@lowering(BACKEND, DimSize)
def _dim_size(node, L):
    L.bind(node, L.dim_code(node.op.dim))


@lowering(BACKEND, Constant, Zeros, Delta)
def _constant(node, L):
    return node.op.array_code(node, L.shape_code, L.dim_code, device=", device=device")


@lowering(BACKEND, Elementwise)
def _elementwise(node, L):
    op = node.op
    rhs = code(op.fn.expr, {s: view(L.var(x), idx, op.out_indices)
                            for s, x, idx in zip(op.fn.symbols, node.inputs, op.in_indices)})
    if all(isinstance(x.op, DimSize) for x in node.inputs):
        # Only dim sizes (1/|n| of a mean's gradient): a Python number, made an array of the
        # call's library, dtype and device (torch's reshape and broadcast take no floats).
        rhs = f"xp.asarray({rhs}, dtype=dtype, device=device)"
    if not any(len(idx) == node.ndim for idx in op.in_indices):  # no operand spans the output
        rhs = f"xp.broadcast_to({rhs}, {L.shape_code(node.shape)})"
    return rhs


@lowering(BACKEND, Contraction)
def _contraction(node, L):
    spec = node.op.spec
    ins = [L.var(i) for i in node.inputs]
    if len(ins) == 1:
        L.may_share(node)
    present = set("".join(spec.inputs))
    core = "".join(c for c in spec.output if c in present)
    single = len(spec.inputs) == 1 and len(set(spec.inputs[0])) == len(spec.inputs[0])
    if single and sorted(spec.inputs[0]) == sorted(core):  # a transpose: a view, never a copy
        rhs = ins[0] if spec.inputs[0] == core else f"xp.permute_dims({ins[0]}, {tuple(spec.inputs[0].index(c) for c in core)})"
    elif single and all(c in spec.inputs[0] for c in core) and core == "".join(c for c in spec.inputs[0] if c in core):
        axes = tuple(k for k, c in enumerate(spec.inputs[0]) if c not in core)
        rhs = f"xp.sum({ins[0]}, axis={axes})"
    else:
        rhs = L.kernel(",".join(spec.inputs) + "->" + core, node.inputs)
    if core != spec.output:  # output indices found in no operand: broadcast
        sizes = letter_sizes(node)
        expanded = tuple(sizes[c] if c in present else 1 for c in spec.output)
        rhs = f"xp.broadcast_to(xp.reshape({rhs}, {L.shape_code(expanded)}), {L.shape_code(node.shape)})"
    return rhs
