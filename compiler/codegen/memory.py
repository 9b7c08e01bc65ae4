"""Memory planning for the wrapper: free buffers at last use, hand dead storage to new buffers.

A kernel output may take the storage of a dead kernel output of the same dtype and size
instead of asking the allocator. Only buffers kiln allocated itself are handed on, and none
a fallback read: an arbitrary ATen op may have returned a view of its input, and reusing
that input's storage would overwrite the view (mm, conv and sdpa never do).

Example:
    >>> plan = MemoryPlan({}, {0: ["buf0"]})
    >>> plan.frees[0]
    ['buf0']
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy

from ..graph import LoweredGraph
from ..ir import ExternKernel, Layout
from ..scheduler import FusedKernel, step_reads, step_writes


@dataclass(frozen=True)
class MemoryPlan:
    reuse: dict[str, str]            # new buffer -> dead buffer whose storage it takes
    frees: dict[int, list[str]]      # step -> buffers deleted after it


def _last_uses(lowered: LoweredGraph, steps) -> dict[str, int]:
    keep = {o.ref.name for o in lowered.outputs if o.ref is not None}
    keep |= {c.name for c in lowered.constants}
    last: dict[str, int] = {}
    for k, step in enumerate(steps):
        for name in step_writes(step):
            last[name] = k   # a result nobody reads dies where it is made
        for name in step_reads(step):
            last[name] = k
    return {name: k for name, k in last.items() if name not in keep}


def _reusable(steps, inputs: set[str]) -> set[str]:
    """Kernel outputs that no fallback reads (library externs never return views); never a
    graph input a kernel writes in place (its storage is the caller's)."""
    mine = {n for s in steps if isinstance(s, FusedKernel) for n in step_writes(s)}
    read_by_fallback = set().union(*(step_reads(s) for s in steps
                                     if isinstance(s, ExternKernel) and s.is_fallback))
    return mine - read_by_fallback - inputs


def _key(layout: Layout):
    size = layout.storage_size()
    return (layout.dtype, layout.device, int(size)) if sympy.sympify(size).is_Integer else None


def plan_memory(lowered: LoweredGraph, steps, layouts: dict[str, Layout]) -> MemoryPlan:
    last = _last_uses(lowered, steps)
    placed = {b.name for b in lowered.inputs}     # buffers that already have storage
    reusable = _reusable(steps, placed)
    pool: dict[tuple, list[str]] = {}
    reuse: dict[str, str] = {}
    dying: dict[int, list[str]] = {}
    for name, k in last.items():
        dying.setdefault(k, []).append(name)
    for k, step in enumerate(steps):
        if isinstance(step, FusedKernel):
            # a scatter writes again into the storage its destination got first
            for name in (n for n in step_writes(step) if n not in placed):
                placed.add(name)
                key = _key(layouts[name])
                if key is not None and pool.get(key):
                    reuse[name] = pool[key].pop()
        for name in sorted(dying.get(k, [])):
            key = _key(layouts[name]) if name in layouts else None
            if name in reusable and key is not None:
                pool.setdefault(key, []).append(name)
    handed_on = set(reuse.values())
    frees = {k: sorted(n for n in names if n not in handed_on) for k, names in dying.items()}
    return MemoryPlan(reuse, {k: v for k, v in frees.items() if v})
