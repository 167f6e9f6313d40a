"""The numpy lowering: the program of :mod:`graphc.backends.array_api`, with planned buffers.

It reads in three steps, each decided once, when the function is compiled:

1. **rewrites and schedule** -- :mod:`.fusions` turns gemm updates, bias/activation
   epilogues and the softmax beside its loss into explicit fused nodes; the
   :class:`~graphc.compiler.codegen.schedule.Schedule` orders the nodes (updates last)
   and says when each value is read for the last time;
2. **buffer plan** -- :class:`~.buffers.BufferPlan` gives every intermediate a buffer
   allocated in ``build`` (once per set of dims) and reuses it once its value is dead;
   an elementwise result may take over a dying operand's buffer, and an update may be
   written straight into its parameter, where nothing reads the old value afterwards;
3. **emission** -- each node's op's rule for ``"numpy"`` writes its statements, all with
   ``out=``: elementwise expressions as ufunc sequences (:mod:`.ufuncs`), matrix products
   as ``dot`` on transposed views, other contractions along opt_einsum's path pair by
   pair (:mod:`.pairwise`), fused gemms as one BLAS call with β ≠ 0 (:mod:`.blas`).

The step that runs thousands of times then allocates only its returned arrays.
"""

from __future__ import annotations

from graphc.backends.numpy import fusions
from graphc.backends.numpy.buffers import BufferPlan
from graphc.backends.numpy.pairwise import gemm
from graphc.backends.numpy.ufuncs import Conflict, UfuncLowering
from graphc.compiler.codegen.program import (
    Kernel, Program, assemble, deferred_updates, input_checks, signature, view, view_base,
)
from graphc.compiler.codegen.schedule import Schedule
from graphc.compiler.explain.notation import formula, safe
from graphc.errors import GraphError
from graphc.ops.contraction import Contraction, letter_sizes
from graphc.ops.elementwise import Elementwise
from graphc.ops.fused import Gemm
from graphc.ops.leaves import Constant, Delta, DimSize, Zeros
from graphc.ops.node import Node
from graphc.ops.registry import lowering, lowering_rule

BACKEND = "numpy"


def lower(outputs: list[Node], name: str = "graph", updates: list | None = None,
          check_numerics: bool = False, fuse: bool = True) -> Program:
    """The numpy program for ``outputs`` (and in-place ``updates``): this backend's rewrites
    (gemm fusions only with ``fuse`` and without ``check_numerics``), then the lowering."""
    outputs, updates = fusions.fuse(list(outputs), list(updates or []), gemms=fuse and not check_numerics)
    return NumpyLowering(outputs, name, updates, check_numerics).program()


class NumpyLowering:
    """One pass over the scheduled nodes, placing each value in the buffer plan and emitting
    its code through its op's rule (rules call back into the methods here).

    The state a reader needs to follow: ``var`` (the code name of each node's value) and
    ``bufs`` (the :class:`~.buffers.BufferPlan`: which buffer holds each value, how many live
    values each buffer holds).  A buffer returns to the pool when its last holder has been
    read for the last time (``last_use``).  Writing into a buffer or a
    parameter in place is allowed only where nothing reads the old value afterwards:
    ``_update_in_place`` and ``_into_dying_operand`` check that, and ``UfuncLowering``
    raises Conflict if the expression itself would read it after the write.
    """

    def __init__(self, outputs: list[Node], name: str, updates: list | None, check_numerics: bool):
        self.outputs = list(outputs)
        self.name = name
        self.check_numerics = check_numerics
        self.schedule = schedule = Schedule(self.outputs, updates or [])
        self.updates, self.order, self.update_of = schedule.updates, schedule.order, schedule.update_of
        self.position, self.last_use = schedule.position, dict(schedule.last_use)
        self.out_ids, self.kept = schedule.out_ids, schedule.kept
        self.args, self.dims, self.dim_code, self.shape_code = signature(self.order)
        self.var: dict[int, str] = {id(a): f"a{k}" for k, a in enumerate(self.args)}
        self.bufs = BufferPlan(self.shape_code)
        self.owner = self.bufs.owner
        self.consts: list[str] = []
        self.ones_vectors: dict[str, str] = {}
        self.hoisted: dict[str, str] = {}
        self.kernels: list[Kernel] = []
        self.lines: list[str] = []
        self.done: set[int] = set()  # nodes computed early (the softmax beside its loss)
        self.fresh: set[str] = set()  # variables holding arrays made during this call
        self.labels: list[str] = []  # node descriptions for the numerics guard, passed to build() as data
        self.in_place_updates: set[int] = set()

    # -- destinations ---------------------------------------------------------------------
    def claim(self, node: Node, buf: str | None) -> None:
        self.bufs.claim(node, buf)

    def fresh_var(self, node: Node) -> str:
        """A variable for an array made by this very call (returned as it is)."""
        v = f"v{self.position[id(node)]}"
        self.var[id(node)] = v
        self.claim(node, None)
        self.fresh.add(v)
        return v

    def dest_for(self, node: Node, kind: str = "float") -> str:
        """A buffer for ``node``'s value: fresh per call for outputs, else planned."""
        if id(node) in self.out_ids:
            v = self.fresh_var(node)
            dtype = "bool" if kind == "bool" else "dtype"
            self.lines.append(f"        {v} = xp.empty({self.shape_code(node.shape)}, dtype={dtype})")
            return v
        buf = self.bufs.take(node.shape, kind)
        self.claim(node, buf)
        return buf

    # -- elementwise ------------------------------------------------------------------------
    def ufuncs(self, node: Node, dest: str, alias=None) -> list[str]:
        op, var = node.op, self.var
        kind = "bool" if node.kind == "bool" else "float"
        atoms = {s: view(var[id(i)], idx, op.out_indices) if i.ndim else var[id(i)]
                 for s, i, idx in zip(op.fn.symbols, node.inputs, op.in_indices)}
        for s, i in zip(op.fn.symbols, node.inputs):
            if isinstance(i.op, Constant):
                atoms[s] = repr(i.op.value)
        scalars = [s for s, i in zip(op.fn.symbols, node.inputs) if i.ndim == 0]
        static = [s for s, i in zip(op.fn.symbols, node.inputs) if isinstance(i.op, (Constant, DimSize))]
        # A 0-d float constant would turn integer arithmetic into float: hoist only among floats.
        floats = all(i.kind == "float" for i in node.inputs if i.ndim)
        return self.lower_expr(op.fn.expr, atoms, node.shape, kind, dest, alias, scalars, static, floats)

    def lower_expr(self, expr, atoms: dict, shape: tuple, kind: str, dest: str, alias=None, scalars=(),
                   static=(), floats: bool = True) -> list[str]:
        """Code computing the sympy ``expr`` over ``atoms`` (symbol -> array code) into ``dest``."""
        bufs = self.bufs
        lent: list[str] = []

        def scratch(kind):
            buf = bufs.take(shape, kind)
            lent.append(buf)
            return buf

        def release(buf):
            lent.remove(buf)
            bufs.give_back(buf)

        try:
            lowering = UfuncLowering(atoms, scratch, release, alias, kind, list(scalars), list(static),
                                     self.hoist if floats else None,
                                     (lambda code: self.filled(code, shape)) if floats else None)
            return ["        " + line for line in lowering.lower(expr, dest)]
        finally:  # scratch still lent when the lowering stopped early (a Conflict) goes back too
            for buf in lent:
                bufs.give_back(buf)

    def gemm(self, node: Node) -> list[str]:
        """A fused ``post(α·op(A)·op(B) + β·C)`` (:class:`~graphc.ops.fused.Gemm`) as one BLAS gemm
        accumulating into C's values: in C's own array when the node is C's update and may be
        written in place, else in the result after C is copied there; ``post`` runs in place after."""
        op = node.op
        a_node, b_node, c_node = node.inputs
        swap, ta, tb = gemm(op.spec)
        (a, ta), (b, tb) = [(self.var[id(i)], t) for i, t in zip((a_node, b_node), (ta, tb))][:: -1 if swap else 1]
        helper = f"g{len(self.consts)}"
        self.consts.append(f"    {helper} = rt.GemmAccumulate(dtype, {ta}, {tb}, {op.alpha!r}, {op.beta!r}, "
                           f"{self.shape_code(node.shape)})")
        in_place = (self.update_of.get(id(node)) is c_node and op.post is None
                    and self.schedule.update_writable_in_place(node))
        factor = "" if abs(op.alpha) == 1.0 else f"{abs(op.alpha)!r}·"
        product = f"{'-' if op.alpha < 0 else '+'} {factor}{a}{'ᵀ' if ta else ''}·{b}{'ᵀ' if tb else ''}"
        if in_place:  # the update accumulates into the parameter: no gradient buffer, no second pass
            c = self.var[id(c_node)]
            self.in_place_updates.add(id(node))
            self.var[id(node)] = c
            self.claim(node, None)
            scaled = c if op.beta == 1.0 else f"{op.beta!r}·{c}"
            return [f"        {helper}({a}, {b}, {c})  # {c} ← {scaled} {product}"]
        dest = self.output_buffer(node)  # taken while the operands still hold theirs: never one of them
        target, tail = dest, []
        if op.post is not None:
            u, expr = op.post
            try:  # f in place, reading the gemm's result from dest
                tail = self.lower_expr(expr, {u: dest}, node.shape, "float", dest, alias=u)
            except Conflict:  # f reads its argument after writing the result: the gemm writes a scratch
                target = self.bufs.take(node.shape, "float")
                tail = self.lower_expr(expr, {u: target}, node.shape, "float", dest)
            if target != dest:
                self.bufs.give_back(target)
        c = view(self.var[id(c_node)], op.c_indices, op.spec.output)
        scaled = target if op.beta == 1.0 else f"{op.beta!r}·{target}"
        return [f"        xp.copyto({target}, {c})",
                f"        {helper}({a}, {b}, {target})  # {target} ← {scaled} {product}"] + tail

    def _update_in_place(self, node: Node) -> list[str] | None:
        """Write an update straight into its parameter, if nothing reads the old value later."""
        leaf = self.update_of.get(id(node))
        if (leaf is None or not self.schedule.update_writable_in_place(node)
                or sum(i is leaf for i in node.inputs) > 1
                # a view of the leaf (Wᵀ) as an operand: the ufunc sequence would read entries it already wrote
                or any(i is not leaf and view_base(i) is leaf for i in node.inputs)):
            return None
        alias = next((s for s, i in zip(node.op.fn.symbols, node.inputs) if i is leaf), None)
        try:
            code = self.ufuncs(node, self.var[id(leaf)], alias)
        except Conflict:
            return None
        self.in_place_updates.add(id(node))
        self.var[id(node)] = self.var[id(leaf)]
        self.claim(node, None)
        return code

    def _into_dying_operand(self, node: Node) -> list[str] | None:
        """Write into the buffer of an operand read for the last time here, if the lowering allows."""
        op, kind = node.op, ("bool" if node.kind == "bool" else "float")
        if id(node) in self.out_ids:
            return None
        for s, i, idx in zip(op.fn.symbols, node.inputs, op.in_indices):
            buf = self.owner.get(id(i))
            if (buf is None or self.var[id(i)] != buf or self.last_use.get(id(i)) != self.position[id(node)]
                    or id(i) in self.kept or self.bufs.refs[buf] != 1 or i.shape != node.shape
                    or idx != op.out_indices or self.bufs.key[buf][1] != kind
                    or sum(j is i for j in node.inputs) != 1):
                continue
            try:
                code = self.ufuncs(node, buf, s)
            except Conflict:
                continue
            self.bufs.hand_over(i, node)  # the buffer passes to this node
            self.var[id(node)] = buf
            return code
        return None

    def elementwise(self, node: Node) -> list[str]:
        code = self._update_in_place(node)
        if code is None:
            code = self._into_dying_operand(node)
        if code is None:
            dest = self.dest_for(node, "bool" if node.kind == "bool" else "float")
            self.var[id(node)] = dest
            code = self.ufuncs(node, dest)
        return code

    # -- contractions ----------------------------------------------------------------------
    def contraction(self, node: Node) -> list[str]:
        var, shape_code = self.var, self.shape_code
        spec = node.op.spec
        ins = [var[id(i)] for i in node.inputs]
        present = set("".join(spec.inputs))
        core = "".join(c for c in spec.output if c in present)
        term = spec.inputs[0]
        single = len(spec.inputs) == 1 and len(set(term)) == len(term)
        v = f"v{self.position[id(node)]}"
        if single and sorted(term) == sorted(core) and core == spec.output:  # transpose: a view
            var[id(node)] = v
            self.claim(node, self.owner.get(id(node.inputs[0])))
            return [f"        {v} = xp.permute_dims({ins[0]}, {tuple(term.index(c) for c in core)})"]
        core_spec = type(spec)(spec.inputs, core)
        if core != spec.output:  # broadcast: a view of the core result, held in a buffer of this node's
            sizes = letter_sizes(node)
            core_shape = tuple(sizes[c] for c in core)
            expanded = tuple(sizes[c] if c in present else 1 for c in spec.output)
            if not core and single and not term:  # a scalar operand, broadcast as it is
                code, base = [], ins[0]
                self.claim(node, self.owner.get(id(node.inputs[0])))
            elif not core:
                code, base = [f"        {v} = {self._scalar_contraction(core_spec, node.inputs, ins)}"], v
                self.claim(node, None)
            else:
                base = self.bufs.take(core_shape, "float")
                self.claim(node, base)
                code = self._contract_into(core_spec, node.inputs, ins, base)
            var[id(node)] = v
            return code + [f"        {v} = xp.broadcast_to(xp.reshape({base}, {shape_code(expanded)}), "
                           f"{shape_code(node.shape)})"]
        if not node.shape:  # a scalar: returned fresh (opt_einsum cannot write a 0-d out=)
            return [f"        {self.fresh_var(node)} = {self._scalar_contraction(spec, node.inputs, ins)}"]
        dest = self.output_buffer(node)
        return self._contract_into(spec, node.inputs, ins, dest)

    def _scalar_contraction(self, spec, operands, ins) -> str:
        """The expression of a contraction to a scalar (made fresh: no 0-d ``out=``)."""
        if len(spec.inputs) == 1 and len(set(spec.inputs[0])) == len(spec.inputs[0]):
            return f"xp.sum({ins[0]})"
        self.kernels.append(Kernel(str(spec), [i.shape for i in operands]))
        return f"k{len(self.kernels) - 1}({', '.join(ins)})"

    def _contract_into(self, spec, operands, ins, dest: str) -> list[str]:
        """Statements writing the contraction ``spec`` of ``operands`` (code ``ins``) into ``dest``."""
        term, core = spec.inputs[0], spec.output
        plan = gemm(spec)
        if plan is not None:
            swap, ta, tb = plan
            a = ins[0] + (".T" if ta else "")
            b = ins[1] + (".T" if tb else "")
            # dot has less call overhead than the matmul gufunc for 2-D operands
            fn = "dot" if len(operands[0].shape) == 2 and len(operands[1].shape) == 2 else "matmul"
            return [f"        xp.{fn}({b if swap else a}, {a if swap else b}, out={dest})"]
        if len(spec.inputs) == 1 and len(set(term)) == len(term) and core == "".join(c for c in term if c in core):
            axes = tuple(k for k, c in enumerate(term) if c not in core)
            if len(term) == 2 and len(axes) == 1:
                # A row or column sum of a matrix: a matrix-vector product with ones runs in
                # BLAS, faster than add.reduce on the batch-by-width arrays of a step.
                ones = self.ones(operands[0].shape[axes[0]])
                pair = f"{ones}, {ins[0]}" if axes == (0,) else f"{ins[0]}, {ones}"
                return [f"        xp.dot({pair}, out={dest})"]
            axis = axes[0] if len(axes) == 1 else axes
            return [f"        xp.add.reduce({ins[0]}, axis={axis}, out={dest})"]  # no np.sum wrapper
        self.kernels.append(Kernel(str(spec), [i.shape for i in operands]))
        return [f"        k{len(self.kernels) - 1}({', '.join(ins)}, out={dest})"]

    # -- the rest ----------------------------------------------------------------------------
    def constant(self, node: Node) -> None:
        """Constants, zeros and δ: made once in build()."""
        v = f"c{len(self.consts)}"
        self.consts.append(f"    {v} = {node.op.array_code(node, self.shape_code, self.dim_code)}")
        self.var[id(node)] = v
        self.claim(node, None)

    def hoist(self, code: str) -> str:
        """A 0-d array of the step's dtype holding the scalar ``code`` (numbers and dims), made
        once in build(): numpy converts a Python scalar operand on every call."""
        if code not in self.hoisted:
            v = f"c{len(self.consts)}"
            self.consts.append(f"    {v} = xp.asarray({code}, dtype=dtype)")
            self.hoisted[code] = v
        return self.hoisted[code]

    def filled(self, code: str, shape) -> str:
        """An array of ``shape`` holding the scalar ``code``, made once in build() (a 0-d array
        above rt.FILL_LIMIT elements, where the loop is memory-bound anyway)."""
        key = (code, self.shape_code(shape))
        if key not in self.hoisted:
            v = f"c{len(self.consts)}"
            self.consts.append(f"    {v} = rt.filled({key[1]}, {code}, dtype)")
            self.hoisted[key] = v
        return self.hoisted[key]

    def ones(self, size) -> str:
        """A vector of ones of length ``size`` (an int or a dim), made once in build()."""
        code = self.shape_code((size,))
        if code not in self.ones_vectors:
            v = f"c{len(self.consts)}"
            self.consts.append(f"    {v} = xp.ones({code}, dtype=dtype)")
            self.ones_vectors[code] = v
        return self.ones_vectors[code]

    def row_softmax(self, logits: Node) -> str:
        """The build-time softmax helper (with its scratch) for ``logits``' shape."""
        v = f"s{len(self.consts)}"
        self.consts.append(f"    {v} = rt.NpRowSoftmax({self.shape_code(logits.shape)}, dtype)")
        return v

    def lower(self, node: Node) -> list[str] | None:
        """The statements computing ``node`` (None for values that need none), from its op's rule."""
        rule = lowering_rule(BACKEND, node.op)
        if rule is None:
            raise GraphError(f"compile: the numpy backend has no rule for {node.op.describe()} of {node.name!r}")
        return rule(node, self)

    def output_buffer(self, node: Node, kind: str = "float") -> str:
        """The destination of ``node``'s value (see ``dest_for``), recorded as its variable."""
        dest = self.var[id(node)] = self.dest_for(node, kind)
        return dest

    def free_dead_inputs(self, node: Node, at: int | None = None) -> None:
        """Values read for the last time by ``node`` (computed at position ``at``) give their buffers back."""
        k = self.position[id(node)] if at is None else at
        for i in set(map(id, node.inputs)):
            if self.last_use.get(i) == k and i not in self.kept:
                self.bufs.release(i)

    def program(self) -> Program:
        if self.check_numerics:
            self.lines.extend(input_checks(self.args, self.labels))
        for node in self.order:
            if id(node) in self.var or id(node) in self.done:
                continue
            code = self.lower(node)
            if code is None:
                continue
            comment = safe(formula(node))
            self.lines.append(f"        # {comment if len(comment) < 150 else comment[:147] + '...'}")
            self.lines.extend(code)
            if self.check_numerics and node.kind == "float":
                self.lines.append(f"        rt.check_finite(xp, {self.var[id(node)]}, labels[{len(self.labels)}])")
                self.labels.append(formula(node))
            self.free_dead_inputs(node)
        # Returned arrays are the caller's: fresh per call, never a planned buffer or a view, and
        # copied before any deferred update is written, so they hold the values of this call.
        results, returned = [], set()
        for k, o in enumerate(self.outputs):  # an array returned twice is copied: outputs never share memory
            x = self.var[id(o)]
            if x in self.fresh and x not in returned:
                results.append(x)
            else:
                self.lines.append(f"        r{k} = rt.materialize(xp, {x})")
                results.append(f"r{k}")
            returned.add(x)
        self.lines.extend(deferred_updates(self.updates, self.in_place_updates, self.var))
        source = assemble(f"{safe(self.name)} (numpy, planned buffers)", self.args, self.dims, self.dim_code,
                          len(self.kernels), self.bufs.decls + self.consts, self.lines, results)
        return Program(self.name, source, self.args, self.dims, self.outputs, kernels=self.kernels,
                       updates=self.updates, order=self.order, labels=self.labels)


# -- rules for the core ops ------------------------------------------------------------------
@lowering(BACKEND, DimSize)
def _dim_size(node, L):
    L.var[id(node)] = L.dim_code(node.op.dim)
    L.claim(node, None)


@lowering(BACKEND, Constant, Zeros, Delta)
def _constant(node, L):
    L.constant(node)


@lowering(BACKEND, Elementwise)
def _elementwise(node, L):
    return L.elementwise(node)


@lowering(BACKEND, Contraction)
def _contraction(node, L):
    return L.contraction(node)


@lowering(BACKEND, Gemm)
def _gemm(node, L):
    return L.gemm(node)
