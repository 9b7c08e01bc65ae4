"""The scheduler: which operations share a kernel, which buffers are written, dead code.

Pointwise producers are already fused into their consumers by lowering (lazy bodies); the
scheduler fuses what lowering had to realize: reductions over the same rows and the
pointwise work before and after them (LayerNorm's mean, variance and normalization; softmax's
max, sum and division) become one row kernel; same-shaped pointwise buffers that read one
another or share an input become one kernel with several outputs; a buffer only its own
kernel reads is never written to memory. Operations whose results nobody reads are dropped.

Example:
    >>> import torch
    >>> from torch.fx.experimental.proxy_tensor import make_fx
    >>> from compiler.graph import GraphLowering
    >>> from compiler.lowering import default_table
    >>> from compiler.config import CompilerOptions
    >>> from compiler.capture import decomposition_table
    >>> gm = make_fx(lambda x: (torch.softmax(x, -1),), decomposition_table=decomposition_table(),
    ...              tracing_mode="fake")(torch.randn(4, 8))
    >>> steps = schedule(GraphLowering(gm, default_table(), CompilerOptions()).lower())
    >>> [len(s.nodes) for s in steps]
    [3]
"""
from __future__ import annotations

from dataclasses import dataclass

from .codegen.reduction import plan_row_group
from .codegen.triton import pointwise_group_ok
from .graph import LoweredGraph
from .ir import (BufferRef, ComputedBuffer, ExternKernel, MatmulTemplate, MutationBuffer,
                 ReductionBuffer, loads_of)


@dataclass(frozen=True)
class FusedKernel:
    """One Triton kernel: ``nodes`` in order; ``stores`` are the buffers it writes."""
    nodes: tuple
    stores: frozenset

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes)


Step = FusedKernel | ExternKernel | MatmulTemplate
# operations that are a step of their own, never grouped with others
STANDALONE = (ExternKernel, MatmulTemplate)


def reads_of(op) -> set[str]:
    """Buffers an operation reads."""
    if isinstance(op, (ComputedBuffer, ReductionBuffer)):   # a store mask or scatter index too
        return {load.buffer for e in op.exprs() for load in loads_of(e)}
    if isinstance(op, MatmulTemplate):   # the product stays in registers
        epilogue = reads_of(op.epilogue) if op.epilogue is not None else set()
        return (reads_of(op.extern) | epilogue) - {op.extern.outputs[0]}
    out: set[str] = set()

    def visit(v):
        if isinstance(v, BufferRef):
            out.add(v.name)
        elif isinstance(v, (tuple, list)):
            for x in v:
                visit(x)
    visit(op.args)
    visit(tuple(v for _, v in op.kwargs))
    return out


def outputs_of(op) -> tuple[str, ...]:
    return tuple(n for n in op.outputs if n) if isinstance(op, ExternKernel) else (op.name,)


def remove_dead(lowered: LoweredGraph) -> list:
    """Operations some later operation or a graph output needs, in order."""
    live = {o.ref.name for o in lowered.outputs if o.ref is not None}
    inputs = {b.name for b in lowered.inputs}
    kept = []
    for op in reversed(lowered.operations):
        # a write into a graph input is always needed; a scatter into a copy only if read
        in_place = isinstance(op, MutationBuffer) and op.name in inputs
        if in_place or any(name in live for name in outputs_of(op)):
            kept.append(op)
            live |= reads_of(op)
    return list(reversed(kept))


def _group_at(ops: list, start: int) -> int:
    """End (exclusive) of the longest group starting at ``ops[start]``: a row group around
    reductions, else a group of same-shaped pointwise buffers that share reads."""
    end = start + 1
    while end < len(ops) and not isinstance(ops[end], STANDALONE):
        if plan_row_group(tuple(ops[start:end + 1])) is None:
            break
        end += 1
    if end > start + 1 or plan_row_group((ops[start],)) is not None:
        return end
    while end < len(ops) and pointwise_group_ok(tuple(ops[start:end + 1])):
        end += 1
    return end


def schedule(lowered: LoweredGraph) -> tuple[Step, ...]:
    """Group live operations into kernels and extern calls, in execution order."""
    ops = remove_dead(lowered)
    steps: list[Step] = []
    start = 0
    while start < len(ops):
        if isinstance(ops[start], STANDALONE):
            steps.append(ops[start])
            start += 1
            continue
        end = _group_at(ops, start)
        steps.append(FusedKernel(tuple(ops[start:end]), frozenset()))
        start = end
    return _with_stores(steps, lowered)


def _with_stores(steps: list, lowered: LoweredGraph) -> tuple[Step, ...]:
    """A kernel writes a buffer only if a graph output or another step reads it."""
    needed = {o.ref.name for o in lowered.outputs if o.ref is not None}
    readers: dict[str, set[int]] = {}
    for k, step in enumerate(steps):
        for name in step_reads(step):
            readers.setdefault(name, set()).add(k)
    out = []
    for k, step in enumerate(steps):
        if isinstance(step, FusedKernel):
            stores = frozenset(n for n in step.names if n in needed or readers.get(n, set()) - {k})
            step = FusedKernel(step.nodes, stores)
        out.append(step)
    return tuple(out)


def step_reads(step: Step) -> set[str]:
    if isinstance(step, FusedKernel):
        return set().union(*(reads_of(n) for n in step.nodes)) - set(step.names)
    return reads_of(step)


def step_writes(step: Step) -> tuple[str, ...]:
    return tuple(n for n in step.names if n in step.stores) if isinstance(step, FusedKernel) \
        else outputs_of(step)
