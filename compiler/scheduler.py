"""The scheduler: which operations share a kernel, which buffers are written, dead code.

Pointwise producers are already fused into their consumers by lowering (lazy bodies); the
scheduler fuses what lowering had to realize: reductions over the same rows and the
pointwise work before and after them (LayerNorm's mean, variance and normalization; softmax's
max, sum and division) become one row kernel; same-shaped pointwise buffers that read one
another or share an input become one kernel with several outputs; a buffer only its own
kernel reads is never written to memory. Operations whose results nobody reads are dropped.

Each fusion is decided by ``fusion_bytes_saved``: the global-memory bytes the fused kernel
moves against the two kernels it replaces (intermediate writes and re-reads avoided, shared
reads done once, minus reads a looped row kernel repeats to recompute a value), fused only
when positive and within ``FusionLimits`` (nodes, ops, inputs; configs/compiler.toml).
Whether some nodes can share a kernel at all, and what it would move, is the back end's
answer: the scheduler asks a ``FusionPlanner`` (``codegen.planner.TritonPlanner``) and
imports no code generator.

Example:
    >>> import torch
    >>> from torch.fx.experimental.proxy_tensor import make_fx
    >>> from compiler.graph import GraphLowering
    >>> from compiler.lowering import default_table
    >>> from compiler.config import CompilerOptions
    >>> from compiler.decompositions import decomposition_table
    >>> from compiler.codegen.planner import TritonPlanner
    >>> gm = make_fx(lambda x: (torch.softmax(x, -1),), decomposition_table=decomposition_table(),
    ...              tracing_mode="fake")(torch.randn(4, 8))
    >>> lowered = GraphLowering(gm, default_table(), CompilerOptions()).lower()
    >>> [len(s.nodes) for s in schedule(lowered, FusionLimits(), TritonPlanner())]
    [3]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from .graph import LoweredGraph
from .ir import (BufferRef, ComputedBuffer, ExternKernel, Layout, MatmulTemplate, MutationBuffer,
                 Op, OpName, ReductionBuffer, count_reads_and_ops, loads_of)
from .traffic import Traffic


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
        binds = isinstance(op, ExternKernel) and op.binds is not None   # sets a size symbol
        if in_place or binds or any(name in live for name in outputs_of(op)):
            kept.append(op)
            live |= reads_of(op)
    return list(reversed(kept))


# ----------------------------------------------------------------------------- fusion decisions
@dataclass(frozen=True)
class FusionLimits:
    """The most a fused kernel may hold (``CompilerOptions.fusion_max_*``)."""
    max_nodes: int = 12
    max_ops: int = 256
    max_inputs: int = 16

    @classmethod
    def from_options(cls, options) -> "FusionLimits":
        return cls(options.fusion_max_nodes, options.fusion_max_ops, options.fusion_max_inputs)


def within_limits(nodes: tuple, limits: FusionLimits) -> bool:
    """Nodes, distinct ops (shared subexpressions once) and distinct buffers read."""
    if len(nodes) > limits.max_nodes:
        return False
    joined = Op(OpName.GROUP, tuple(n.body for n in nodes), torch.float32)
    _, ops = count_reads_and_ops(joined)
    inputs = {load.buffer for load in loads_of(joined)} - {n.name for n in nodes}
    return ops - 1 <= limits.max_ops and len(inputs) <= limits.max_inputs


class FusionPlanner(Protocol):
    """What the scheduler asks the back end (``codegen.planner.TritonPlanner``)."""

    def kernel_traffic(self, nodes: tuple, stores: frozenset, hint: bool = True
                       ) -> Traffic | None:
        """Bytes one kernel of ``nodes`` writing ``stores`` would move (run-time sizes by
        their hints unless ``hint`` is off); None when no kernel can hold them."""


class FusionCosts:
    """Who reads each buffer, and the traffic of candidate kernels (the planner's answer)."""

    def __init__(self, ops, lowered: LoweredGraph, planner: FusionPlanner):
        self.outputs = {o.ref.name for o in lowered.outputs if o.ref is not None}
        # by (node ids, hint): a growing group's traffic is asked again as the next step's
        # "apart" side, and each answer walks every node's body
        self._traffic: dict[tuple, Traffic | None] = {}
        self.readers: dict[str, set[int]] = {}
        for op in ops:
            for name in reads_of(op):
                self.readers.setdefault(name, set()).add(id(op))
        self.planner = planner

    def stores(self, nodes) -> frozenset:
        """The buffers a kernel of ``nodes`` must write: graph outputs and those read outside."""
        members = {id(n) for n in nodes}
        return frozenset(n.name for n in nodes if n.name in self.outputs
                         or isinstance(n, MutationBuffer)
                         or self.readers.get(n.name, set()) - members)

    def traffic(self, nodes: tuple, hint: bool = True) -> Traffic | None:
        """Bytes one kernel of ``nodes`` moves (run-time sizes by their hints unless ``hint``
        is off); None when they cannot share a kernel (or, unhinted, sizes are symbolic)."""
        key = (tuple(id(n) for n in nodes), hint)
        if key not in self._traffic:
            self._traffic[key] = self.planner.kernel_traffic(nodes, self.stores(nodes), hint)
        return self._traffic[key]


def fusion_bytes_saved(group: tuple, node, costs: FusionCosts) -> int | None:
    """Global-memory bytes saved by computing ``node`` in ``group``'s kernel rather than in
    a kernel of its own; None when they cannot share one. It counts the intermediate writes
    and re-reads avoided and the reads shared, less the reads the fused kernel repeats (a
    looped row kernel recomputes, in each loop that needs it, a value it cannot hold).

    Example: softmax's division ``e / s`` joining the kernel that reduced ``s = sum(e)``
    saves re-reading the row and writing and reading ``s``; two pointwise buffers with no
    read in common save nothing (0), so they stay apart.
    """
    together = costs.traffic(group + (node,))
    if together is None:
        return None
    apart = costs.traffic(group), costs.traffic((node,))
    if None in apart:
        return None
    return apart[0].total + apart[1].total - together.total


def _group_at(ops: list, start: int, costs: FusionCosts, limits: FusionLimits) -> int:
    """End (exclusive) of the kernel starting at ``ops[start]``: the next operation joins
    while it may share the kernel, stays within the limits and saves bytes."""
    end = start + 1
    while end < len(ops) and not isinstance(ops[end], STANDALONE):
        group = tuple(ops[start:end])
        if not within_limits(group + (ops[end],), limits):
            break
        saved = fusion_bytes_saved(group, ops[end], costs)
        if saved is None or saved <= 0:
            break
        end += 1
    return end


def schedule(lowered: LoweredGraph, limits: FusionLimits, planner: FusionPlanner
             ) -> tuple[Step, ...]:
    """Group live operations into kernels and extern calls, in execution order."""
    ops = remove_dead(lowered)
    costs = FusionCosts(ops, lowered, planner)
    steps: list[Step] = []
    start = 0
    while start < len(ops):
        if isinstance(ops[start], STANDALONE):
            steps.append(ops[start])
            start += 1
            continue
        end = _group_at(ops, start, costs, limits)
        nodes = tuple(ops[start:end])
        steps.append(FusedKernel(nodes, costs.stores(nodes)))
        start = end
    return tuple(steps)


def fusion_report(lowered: LoweredGraph, steps, planner: FusionPlanner) -> dict:
    """The traffic of the module's pointwise and row kernels against one kernel per
    operation (None when sizes are only known at run time): what the module meta records
    as the bytes fusion saved. GEMM templates and externs are not counted."""
    costs = FusionCosts([n for s in steps for n in (s.nodes if isinstance(s, FusedKernel)
                                                   else (s,))], lowered, planner)
    kernels = [s for s in steps if isinstance(s, FusedKernel)]
    fused = [costs.traffic(s.nodes, hint=False) for s in kernels]
    alone = [costs.traffic((n,), hint=False) for s in kernels for n in s.nodes]
    if None in fused or None in alone:
        return {"kernels": len(kernels), "unfused_kernels": len(alone), "bytes": None,
                "unfused_bytes": None, "saved_bytes": None}
    total, unfused = sum(t.total for t in fused), sum(t.total for t in alone)
    return {"kernels": len(kernels), "unfused_kernels": len(alone), "bytes": total,
            "unfused_bytes": unfused, "saved_bytes": unfused - total}


def step_reads(step: Step) -> set[str]:
    if isinstance(step, FusedKernel):
        return set().union(*(reads_of(n) for n in step.nodes)) - set(step.names)
    return reads_of(step)


def step_writes(step: Step) -> tuple[str, ...]:
    return tuple(n for n in step.names if n in step.stores) if isinstance(step, FusedKernel) \
        else outputs_of(step)


def buffer_layouts(lowered: LoweredGraph, steps) -> dict[str, Layout]:
    """Every buffer's layout by name: inputs, constants and what the steps compute."""
    out = {b.name: b.layout for b in lowered.inputs + lowered.constants}
    for step in steps:
        if isinstance(step, FusedKernel):
            out.update({n.name: n.layout for n in step.nodes})
        elif isinstance(step, MatmulTemplate):
            out[step.name] = step.layout
        else:
            out.update({n: l for n, l in zip(step.outputs, step.layouts) if n is not None})
    return out
