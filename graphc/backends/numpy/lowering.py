"""The numpy lowering: the program of :mod:`graphc.backends.array_api`, with planned buffers.

Everything is decided here, once: every intermediate gets a buffer allocated
when the function is specialised for its dims (``build``), buffers are reused
once their value is dead, every call writes with ``out=``, elementwise
expressions become ufunc sequences (in place into a dying operand where that is
safe), two-operand contractions that are matrix products call ``xp.matmul`` on
transposed views (no transpose is materialised, results are C-ordered), other
contractions follow opt_einsum's path pair by pair (``pairwise.NpContraction``:
matrix-product pairs as ``np.dot`` into buffers made once), softmax cross-entropy
computes the softmax its gradient needs in the same pass, and parameter updates
are written straight into the parameter arrays after their last read.  Two
patterns around a matrix product become one BLAS gemm with β ≠ 0 (``blas.py``):
an update ``W ← β·W + α·A·B`` and a result ``α·A·B + b`` (a bias add), also
inside an elementwise function ``f(α·A·B + b)`` (a layer's activation), which
then runs in place on the gemm's result.  The step that runs thousands of times
then allocates only its returned arrays.
"""

from __future__ import annotations

from graphc.backends.numpy.pairwise import gemm
from graphc.backends.numpy.ufuncs import Conflict, UfuncLowering
from graphc.compiler.codegen.program import Kernel, Program, assemble, deferred_updates, signature, view, view_base
from graphc.compiler.explain.notation import formula, safe
from graphc.compiler.walk import toposort
from graphc.errors import GraphError
from graphc.ops.contraction import Contraction, letter_sizes
from graphc.ops.elementwise import Elementwise
from graphc.ops.leaves import Constant, Delta, DimSize, Zeros
from graphc.ops.node import Node
from graphc.ops.registry import lowering, lowering_rule
from graphc.ops.symbolic import sympy_module as _sympy

BACKEND = "numpy"



def _affine(expr, s_prod, s_bias) -> tuple | None:
    """(α, c) when ``expr`` is ``c·(α·s_prod + s_bias)`` for nonzero real numbers α and c, else None."""
    sp = _sympy()
    expr = sp.expand(expr)
    a, c = expr.coeff(s_prod), expr.coeff(s_bias)
    if (a.is_number and a.is_real and a != 0 and c.is_number and c.is_real and c != 0
            and sp.expand(expr - a * s_prod - c * s_bias) == 0):
        return float(a / c), c  # c stays a sympy number: c·u is put back into the expression exactly
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
               check_numerics: bool = False, fuse: bool = True) -> Program:
    """The numpy program for ``outputs`` (and in-place ``updates``); see the module docstring."""
    return NumpyLowering(outputs, name, updates, check_numerics, fuse).program()


class NumpyLowering:
    """One pass over the nodes in order, choosing a destination for each value and emitting its code.

    The state a reader needs to follow: ``var`` (the code name of each node's value),
    ``owner`` (the planned buffer that holds it, if any) and ``bufs.refs`` (how many live
    values a buffer holds: a value and its views).  A buffer returns to the pool when its
    last holder has been read for the last time (``last_use``).  Writing into a buffer or a
    parameter in place is allowed only where nothing reads the old value afterwards:
    ``_update_in_place`` and ``_into_dying_operand`` check that, and ``UfuncLowering``
    raises Conflict if the expression itself would read it after the write.
    """

    def __init__(self, outputs: list[Node], name: str, updates: list | None, check_numerics: bool,
                 fuse: bool = True):
        self.outputs = list(outputs)
        self.name = name
        self.check_numerics = check_numerics
        self.updates = [(leaf, node) for leaf, node in (updates or []) if node is not leaf]
        roots = self.outputs + [node for _, node in self.updates] + [leaf for leaf, _ in self.updates]
        order = toposort(roots)
        self.update_of = {id(node): leaf for leaf, node in self.updates}
        # A value given to several targets ({W: u, W2: u}) is written into none of them in
        # place: it is computed once and copied into each (deferred_updates).
        self.shared_updates = {i for i in self.update_of if sum(id(n) == i for _, n in self.updates) > 1}
        # Updates go last, after every read of the old values (none of the rest reads an update).
        rest = [n for n in order if id(n) not in self.update_of]
        late = [n for n in order if id(n) in self.update_of]
        if not any(id(i) in self.update_of for n in rest for i in n.inputs):
            order = rest + late
        self.order = order
        self.args, self.dims, self.dim_code, self.shape_code = signature(order)
        self.var: dict[int, str] = {id(a): f"a{k}" for k, a in enumerate(self.args)}
        self.owner: dict[int, str | None] = {}
        self.position = {id(n): k for k, n in enumerate(order)}
        self.last_use: dict[int, int] = {}
        for k, node in enumerate(order):
            for i in node.inputs:
                self.last_use[id(i)] = k
        self.out_ids = {id(o) for o in self.outputs}
        self.kept = self.out_ids | set(self.update_of)
        # Leaves still read once every node has run: returned (or viewed by a returned value), or
        # copied into another update target.  Their updates cannot be written early, in place.
        self.read_at_end = {id(b) for b in map(view_base, self.outputs + [n for _, n in self.updates])
                            if b is not None}
        self.bufs = _Buffers(self.shape_code)
        self.consts: list[str] = []
        self.ones_vectors: dict[str, str] = {}
        self.hoisted: dict[str, str] = {}
        self.kernels: list[Kernel] = []
        self.lines: list[str] = []
        self.done: set[int] = set()  # nodes computed early (the softmax beside its loss)
        self.fresh: set[str] = set()  # variables holding arrays made during this call
        self.temporaries: list[Node] = []  # kept alive so their id() is never reused
        self.labels: list[str] = []  # node descriptions for the numerics guard, passed to build() as data
        self.in_place_updates: set[int] = set()
        # Updates ``P ← β·P + α·(A·B)`` done by one accumulating BLAS product (see blas.py):
        # update node id -> (product node, α, β); the product is then never computed on its own.
        self.gemm_updates = self._find_gemm_updates() if fuse and not check_numerics else {}
        self.fused_products = {id(g) for g, _, _ in self.gemm_updates.values()}
        # Results ``f(α·(A·B) + b)`` computed by copying b into the result, one gemm with β = 1,
        # then f in place: node id -> (product node, α, b, f or None).
        self.gemm_epilogues = self._find_gemm_epilogues() if fuse and not check_numerics else {}
        self.fused_products |= {id(e[0]) for e in self.gemm_epilogues.values()}
        for node_id, (g, *_) in (*self.gemm_updates.items(), *self.gemm_epilogues.items()):
            for i in g.inputs:  # the product's operands are now read where it is consumed
                self.last_use[id(i)] = max(self.last_use.get(id(i), 0), self.position[node_id])

    # -- destinations ---------------------------------------------------------------------
    def claim(self, node: Node, buf: str | None) -> None:
        self.owner[id(node)] = buf
        if buf is not None:
            self.bufs.refs[buf] += 1

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

    def _find_gemm_updates(self) -> dict:
        """Updates of a matrix leaf by a linear rule on one matrix product read nowhere else."""
        sp = _sympy()
        targets = {id(leaf) for leaf, _ in self.updates}
        readers: dict[int, int] = {}
        for n in self.order:
            for i in set(map(id, n.inputs)):
                readers[i] = readers.get(i, 0) + 1
        found = {}
        for leaf, node in self.updates:
            if (not isinstance(node.op, Elementwise) or len(node.inputs) != 2 or node.ndim != 2
                    or id(node) in self.shared_updates or id(leaf) not in self.var or id(leaf) in self.read_at_end):
                continue
            k = [i is leaf for i in node.inputs]
            if sum(k) != 1 or any(idx != node.op.out_indices for idx in node.op.in_indices):
                continue
            s_leaf, s_prod = (node.op.fn.symbols[j] for j in (k.index(True), k.index(False)))
            prod = node.inputs[k.index(False)]
            if (not isinstance(prod.op, Contraction) or gemm(prod.op.spec) is None or prod.ndim != 2
                    or readers.get(id(prod)) != 1 or id(prod) in self.kept
                    or any(view_base(i) is not None and id(view_base(i)) in targets for i in prod.inputs)
                    or any(view_base(i) is leaf for n in self.order[self.position[id(node)] + 1:] for i in n.inputs)):
                continue
            expr = sp.expand(node.op.fn.expr)
            beta, alpha = expr.coeff(s_leaf), expr.coeff(s_prod)
            if (alpha.is_number and beta.is_number and alpha.is_real and beta.is_real and alpha != 0
                    and sp.expand(expr - beta * s_leaf - alpha * s_prod) == 0):
                found[id(node)] = (prod, float(alpha), float(beta))
        return found

    def _find_gemm_epilogues(self) -> dict:
        """``α·(A·B) + b``, or ``f(α·(A·B) + b)``, of a matrix product read nowhere else, ``b`` of the
        result's shape or a row (``f`` an elementwise function of that sum alone).

        Copying b into the result and letting BLAS add α·A·B (β = 1) replaces the bias add
        and any scaling, passes over the result that numpy's dot cannot fuse: for a batch
        of 1,000 x 50 the add alone costs as much as a fifth of the product.
        """
        sp = _sympy()
        # where each parameter's update is computed: from there on it may hold the new value
        updated_at = {id(leaf): self.position[id(node)] for leaf, node in self.updates}
        readers: dict[int, int] = {}
        for n in self.order:
            for i in n.inputs:
                readers[id(i)] = readers.get(id(i), 0) + 1
        found = {}
        for node in self.order:
            op = node.op
            if (not isinstance(op, Elementwise) or len(node.inputs) != 2 or node.ndim != 2 or node.kind != "float"
                    or id(node) in self.update_of or node.inputs[0] is node.inputs[1]):
                continue
            for j in (0, 1):
                prod, bias = node.inputs[j], node.inputs[1 - j]
                if (not isinstance(prod.op, Contraction) or gemm(prod.op.spec) is None or prod.ndim != 2
                        or readers.get(id(prod)) != 1 or id(prod) in self.kept or id(prod) in self.fused_products
                        # the product's operands are read here, not where it stood: a parameter among
                        # them whose update comes earlier may already have been written in place (the
                        # checks for that look at nodes' direct inputs, not at fused products)
                        or any(updated_at.get(id(view_base(i)), len(self.order)) < self.position[id(node)]
                               for i in prod.inputs)
                        or op.in_indices[j] != op.out_indices
                        or op.in_indices[1 - j] not in (op.out_indices, op.out_indices[-1:])):
                    continue
                s_prod, s_bias = op.fn.symbols[j], op.fn.symbols[1 - j]
                affine = _affine(op.fn.expr, s_prod, s_bias)
                if affine is not None and affine[1] == 1:
                    found[id(node)] = (prod, affine[0], bias, None)
                    break
                # f(α·P + b), f elementwise (a relu, a tanh): the gemm makes u = α·P + b, f(u) follows.
                # sympy may hold a multiple of u (a sigmoid's 1/(1 + exp(-b - P))): c·u is replaced.
                for sub in sp.preorder_traversal(op.fn.expr):
                    if isinstance(sub, sp.Add) and sub != op.fn.expr and sub.free_symbols == {s_prod, s_bias}:
                        affine = _affine(sub, s_prod, s_bias)
                        if affine is None:
                            continue
                        # named after the sum it stands for: an error about f then shows the user's terms
                        u = sp.Symbol(f"({sp.sstr(sub / affine[1])})", real=True)
                        post = op.fn.expr.xreplace({sub: affine[1] * u})
                        if post.free_symbols == {u}:
                            found[id(node)] = (prod, affine[0], bias, (u, post))
                            break
                if id(node) in found:
                    break
        return found

    def _gemm_operands(self, prod: Node) -> tuple:
        """((a, transpose a), (b, transpose b)): the product's operands in BLAS order."""
        swap, ta, tb = gemm(prod.op.spec)
        return [(self.var[id(i)], t) for i, t in zip(prod.inputs, (ta, tb))][:: -1 if swap else 1]

    def _gemm_epilogue(self, node: Node) -> list[str]:
        """``f(α·(A·B) + b)``: b copied into the result, one gemm adding α·A·B to it, then f in place."""
        prod, alpha, bias, post = self.gemm_epilogues[id(node)]
        dest = self.dest_for(node)  # before the product's operands give their buffers back
        self.var[id(node)] = dest
        target, tail = dest, []
        if post is not None:
            u, expr = post
            try:  # f in place, reading the gemm's result from dest
                tail = self.lower_expr(expr, {u: dest}, node.shape, "float", dest, alias=u)
            except Conflict:  # f reads its argument after writing the result: the gemm writes a scratch
                target = self.bufs.take(node.shape, "float")  # (taken while the operands still hold theirs)
                tail = self.lower_expr(expr, {u: target}, node.shape, "float", dest)
        (a, ta), (b, tb) = self._gemm_operands(prod)
        helper = f"g{len(self.consts)}"
        self.consts.append(f"    {helper} = rt.GemmAccumulate(dtype, {ta}, {tb}, {alpha!r}, 1.0, "
                           f"{self.shape_code(node.shape)})")
        self.free_dead_inputs(prod, at=self.position[id(node)])
        if target != dest:
            self.bufs.give_back(target)
        factor = "" if alpha == 1.0 else f"{alpha!r}·"
        product = f"{factor}{a}{'ᵀ' if ta else ''}·{b}{'ᵀ' if tb else ''}"
        return [f"        # {safe(formula(prod))}, added into the result by the gemm (β = 1)",
                f"        xp.copyto({target}, {self.var[id(bias)]})",
                f"        {helper}({a}, {b}, {target})  # {target} ← {target} + {product}"] + tail

    def _gemm_update(self, node: Node) -> list[str]:
        """``P ← β·P + α·(A·B)`` as one BLAS call accumulating into the parameter."""
        prod, alpha, beta = self.gemm_updates[id(node)]
        leaf = self.update_of[id(node)]
        (a, ta), (b, tb) = self._gemm_operands(prod)
        helper = f"g{len(self.consts)}"
        self.consts.append(f"    {helper} = rt.GemmAccumulate(dtype, {ta}, {tb}, {alpha!r}, {beta!r}, "
                           f"{self.shape_code(node.shape)})")
        self.in_place_updates.add(id(node))
        self.var[id(node)] = self.var[id(leaf)]
        self.claim(node, None)
        self.free_dead_inputs(prod, at=self.position[id(node)])
        c = self.var[id(leaf)]
        scaled = c if beta == 1.0 else f"{beta!r}·{c}"
        sign = "-" if alpha < 0 else "+"
        factor = "" if abs(alpha) == 1.0 else f"{abs(alpha)!r}·"
        product = f"{factor}{a}{'ᵀ' if ta else ''}·{b}{'ᵀ' if tb else ''}"
        return [f"        # {safe(formula(prod))}, accumulated into the update: one gemm, no gradient buffer",
                f"        {helper}({a}, {b}, {c})  # {c} ← {scaled} {sign} {product}"]

    def _update_in_place(self, node: Node) -> list[str] | None:
        """Write an update straight into its parameter, if nothing reads the old value later."""
        leaf = self.update_of.get(id(node))
        if (leaf is None or id(node) in self.shared_updates or id(leaf) not in self.var or id(leaf) in self.read_at_end
                or sum(i is leaf for i in node.inputs) > 1
                # a view of the leaf (Wᵀ) as an operand: the ufunc sequence would read entries it already wrote
                or any(i is not leaf and view_base(i) is leaf for i in node.inputs)
                or any(view_base(i) is leaf for n in self.order[self.position[id(node)] + 1:] for i in n.inputs)):
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
            self.owner[id(i)] = None  # the buffer passes to this node
            self.var[id(node)] = buf
            self.claim(node, buf)
            self.bufs.refs[buf] = 1
            return code
        return None

    def elementwise(self, node: Node) -> list[str]:
        if id(node) in self.gemm_updates:
            return self._gemm_update(node)
        if id(node) in self.gemm_epilogues:
            return self._gemm_epilogue(node)
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
        var, position, shape_code = self.var, self.position, self.shape_code
        spec = node.op.spec
        ins = [var[id(i)] for i in node.inputs]
        present = set("".join(spec.inputs))
        core = "".join(c for c in spec.output if c in present)
        term = spec.inputs[0]
        single = len(spec.inputs) == 1 and len(set(term)) == len(term)
        if single and sorted(term) == sorted(core) and core == spec.output:  # transpose: a view
            v = f"v{position[id(node)]}"
            var[id(node)] = v
            self.claim(node, self.owner.get(id(node.inputs[0])))
            return [f"        {v} = xp.permute_dims({ins[0]}, {tuple(term.index(c) for c in core)})"]
        if core != spec.output:  # broadcast: a view of the core result
            sizes = letter_sizes(node)
            expanded = tuple(sizes[c] if c in present else 1 for c in spec.output)
            inner = Node(node.graph, Contraction(type(spec)(spec.inputs, core)), node.inputs,
                         tuple(sizes[c] for c in core), "float", None)
            self.temporaries.append(inner)
            position[id(inner)] = position[id(node)]
            self.last_use[id(inner)] = self.last_use.get(id(node), 0)
            code = self.contraction(inner) if core or len(node.inputs) > 1 or term else []
            base = var[id(inner)] if id(inner) in var else ins[0]
            v = f"v{position[id(node)]}"
            var[id(node)] = v
            self.claim(node, self.owner.get(id(inner)) or self.owner.get(id(node.inputs[0])))
            return code + [f"        {v} = xp.broadcast_to(xp.reshape({base}, {shape_code(expanded)}), "
                           f"{shape_code(node.shape)})"]
        if not node.shape:  # a scalar: returned fresh (opt_einsum cannot write a 0-d out=)
            v = self.fresh_var(node)
            if single and not core:
                return [f"        {v} = xp.sum({ins[0]})"]
            k = len(self.kernels)
            self.kernels.append(Kernel(str(spec), [i.shape for i in node.inputs]))
            return [f"        {v} = k{k}({', '.join(ins)})"]
        dest = self.dest_for(node)
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
            if len(term) == 2 and len(axes) == 1:
                # A row or column sum of a matrix: a matrix-vector product with ones runs in
                # BLAS, 3x faster than add.reduce on the batch-by-width arrays of a step.
                ones = self.ones(node.inputs[0].shape[axes[0]])
                pair = f"{ones}, {ins[0]}" if axes == (0,) else f"{ins[0]}, {ones}"
                return [f"        xp.dot({pair}, out={dest})"]
            axis = axes[0] if len(axes) == 1 else axes
            return [f"        xp.add.reduce({ins[0]}, axis={axis}, out={dest})"]  # no np.sum wrapper
        k = len(self.kernels)
        self.kernels.append(Kernel(",".join(spec.inputs) + "->" + core, [i.shape for i in node.inputs]))
        return [f"        k{k}({', '.join(ins)}, out={dest})"]

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
                buf = self.owner.get(i)
                if buf is not None:
                    self.bufs.refs[buf] -= 1
                    if self.bufs.refs[buf] == 0:
                        self.bufs.give_back(buf)
                    self.owner[i] = None

    def program(self) -> Program:
        for node in self.order:
            if id(node) in self.var or id(node) in self.done or id(node) in self.fused_products:
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
