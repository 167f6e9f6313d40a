"""Contractions as sequences of pairwise products, each the fastest numpy call for its shapes.

opt_einsum finds a good order (path) for a contraction of several operands; its own
executor then runs each pair through tensordot, which transposes and copies, returns
Fortran-ordered intermediates and allocates them on every call.  For the numpy
lowering we keep opt_einsum's path and run it ourselves: a pair that is a matrix
product becomes ``np.dot`` on (transposed) views, written into a C-ordered buffer
allocated once; any other pair keeps opt_einsum's expression for that pair.  For
``x·A·B·C`` at batch 100 this halves the time of opt_einsum's executor.
"""

from __future__ import annotations

from typing import NamedTuple

from graphc.ops.contraction import matrix_product


class PairSpec(NamedTuple):
    inputs: tuple
    output: str


#: how to call a two-operand matrix product, (swap, transpose_a, transpose_b), or None
gemm = matrix_product


class _Step(NamedTuple):
    operands: tuple  # positions in the working list
    call: object  # callable(*operands, out) -> array
    shape: tuple
    spec: str  # this pair's einsum spec
    gemm: bool  # True: np.dot on views; False: opt_einsum's expression for the pair


def _dot_call(plan):
    import numpy as np

    swap, ta, tb = plan

    def call(a, b, out=None):
        a = a.T if ta else a
        b = b.T if tb else b
        return np.dot(b, a, out=out) if swap else np.dot(a, b, out=out)
    return call


class NpContraction:
    """``spec`` over operands of ``shapes``, called as ``k(*arrays, out=None)``.

    Built once per specialisation (dims known): the path, every pairwise call and every
    intermediate buffer are decided here; a call only runs the steps.
    """

    def __init__(self, spec: str, shapes: list, dtype):
        import numpy as np
        import opt_einsum

        self.spec = spec
        lhs, output = spec.split("->")
        terms = lhs.split(",")
        sizes: dict[str, int] = {}
        for t, shape in zip(terms, shapes):
            for c, n in zip(t, shape):
                if sizes.setdefault(c, n) != n:  # graphs bind each index to one size; numpy would broadcast 1s
                    raise ValueError(f"NpContraction {spec!r}: index {c!r} has sizes {sizes[c]} and {n} "
                                     "(size-1 broadcasting is not supported)")
        path, _ = opt_einsum.contract_path(spec, *shapes, shapes=True, optimize="auto")
        working = list(terms)  # index strings of the operands still to contract
        self.steps: list[_Step] = []
        self.buffers: list = []
        for k, picked in enumerate(path):
            picked = tuple(sorted(picked, reverse=True))
            chosen = [working[i] for i in picked[::-1]]  # in the order the call takes them
            for i in picked:
                working.pop(i)
            last = k == len(path) - 1
            if last:
                out = output
            else:
                rest = set("".join(working)) | set(output)
                kept = [c for c in dict.fromkeys("".join(chosen)) if c in rest]
                # free indices of the first operand, then the second's: a GEMM's natural order
                out = "".join(kept)
            pair = PairSpec(tuple(chosen), out)
            plan = gemm(pair) if len(chosen) == 2 else None
            shape = tuple(sizes[c] for c in out)
            if plan is not None:
                call = _dot_call(plan)
            else:
                expression = opt_einsum.contract_expression(
                    f"{','.join(chosen)}->{out}", *[tuple(sizes[c] for c in t) for t in chosen], optimize="auto")
                call = _expression_call(expression)
            self.steps.append(_Step(picked[::-1], call, shape, f"{','.join(chosen)}->{out}", plan is not None))
            # intermediates get a buffer; a 0-d one is returned fresh (opt_einsum cannot write a 0-d out=)
            self.buffers.append(None if last or not shape else np.empty(shape, dtype))
            working.append(out)

    def __call__(self, *arrays, out=None):
        values = list(arrays)
        result = None
        last = len(self.steps) - 1
        for k, (step, buffer) in enumerate(zip(self.steps, self.buffers)):
            operands = [values[i] for i in step.operands]
            for i in sorted(step.operands, reverse=True):
                values.pop(i)
            target = out if k == last else buffer
            result = step.call(*operands, out=target)
            values.append(result)
        if out is None:  # a 0-d result: an array, whichever call made it
            import numpy as np

            return np.asarray(result)
        return out


def _expression_call(expression):
    def call(*operands, out=None):
        return expression(*operands, out=out) if out is not None else expression(*operands)
    return call
