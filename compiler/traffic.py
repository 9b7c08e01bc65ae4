"""Bytes of global memory a kernel moves: each kernel's ``bytes`` meta, and the cost model the
scheduler's fusion decisions compare (``scheduler.fusion_bytes_saved``).

A kernel reads each distinct load of one pass once: a pass is the code that shares loaded
values (a pointwise kernel, the whole tile of a persistent row kernel, one loop of a looped
row kernel, one per-row value). A load touches at most as many elements as the product of
the ranges of the loop indices its address uses, and at most the span of addresses it can
reach: a [16, 256] padding mask broadcast over 12 heads of 256 query rows reads 4096
elements, not 12582912. Values the kernel computes itself are in registers, never loaded;
a kernel writes every element of each buffer it stores.

Example:
    >>> import sympy
    >>> from compiler.sizevars import FloorDiv
    >>> x, r = sympy.symbols("x r", integer=True, nonnegative=True)
    >>> load_elements(256 * FloorDiv(x, 3072) + r, {x: 49152, r: 256})
    4096
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import sympy
import torch

from .ir import Load, MutationBuffer, index_symbols, walk
from .sizevars import size_hint, upper_bound


@dataclass(frozen=True)
class Traffic:
    """Bytes a kernel reads and writes in global memory."""
    read: int
    written: int

    @property
    def total(self) -> int:
        return self.read + self.written


def hinted(ranges: dict) -> dict:
    """``ranges`` with run-time sizes replaced by size hints, for decisions (not for meta)."""
    return {s: sympy.Integer(size_hint(n)) for s, n in ranges.items()}


def load_elements(index, ranges: dict, hint: bool = False) -> int | None:
    """Distinct elements a load at ``index`` touches while each symbol ``s`` runs over
    ``[0, ranges[s])``; None when a size is only known at run time. With ``hint`` (ranges
    already hinted), a size symbol in the index itself (a stride of a dynamic layout,
    ``32*s0*i0``) takes its hint too: else no kernel over a dynamic buffer had a cost, and
    a dynamic module fused nothing a cost decides (RMSNorm's statistics and its scaling ran
    as two kernels)."""
    index = sympy.sympify(index)
    ranges = {s: sympy.sympify(n) for s, n in ranges.items()}
    if hint:
        index = index.subs({s: size_hint(s) for s in index.free_symbols if s not in ranges})
    if any(not ranges.get(s, sympy.Symbol("unknown")).is_Integer for s in index.free_symbols):
        return None
    count = math.prod(int(ranges[s]) for s in index.free_symbols)
    offset, rest = index.as_coeff_Add()
    span = upper_bound(rest, ranges)
    return count if span is None else max(1, min(count, span + 1))


def pass_read_bytes(bodies, ranges: dict, computed: set[str],
                    footprint: bool = False, hint: bool = False) -> int | None:
    """Bytes one pass over ``bodies`` loads: each distinct load once, none of ``computed``
    (values the kernel holds in registers).

    ``footprint``: loads of one buffer whose addresses differ by a constant only (a
    stencil's taps: a 7x7 depthwise conv reads its input 49 times) count once, widened by
    how far apart they lie. What reaches DRAM, for a kernel's ``bytes`` meta and the
    bandwidth figures read from it; the fusion cost counts each tap, since a producer fused
    into a stencil is computed again for every tap. ``hint``: ``ranges`` are hinted, and
    size symbols in an index take their hints too (``load_elements``).
    """
    total = 0
    loads = {n for b in bodies for n in walk(b) if isinstance(n, Load) and n.buffer not in computed}
    # strided loads by what they read: each load alone, or with ``footprint`` the loads of one
    # buffer at one index but for a constant offset; the offsets widen the group's span
    groups: dict[Any, tuple[torch.dtype, sympy.Expr, list[int]]] = {}
    for load in loads:
        if load.indirect:
            elements = _gather_elements(load, ranges)
            if elements is None:
                return None
            total += elements * load.dtype.itemsize
            continue
        offset, rest = sympy.sympify(load.index).as_coeff_Add()
        key = (load.buffer, load.dtype, rest) if footprint else load
        groups.setdefault(key, (load.dtype, rest, []))[2].append(
            int(offset) if offset.is_Integer else 0)
    elements_of: dict = {}   # by index less its constant: a stencil's taps share it
    for dtype, rest, offsets in groups.values():
        if rest not in elements_of:
            elements_of[rest] = load_elements(rest, ranges, hint)
        elements = elements_of[rest]
        if elements is None:
            return None
        total += (elements + max(offsets) - min(offsets)) * dtype.itemsize
    return total


def _gather_elements(load: Load, ranges: dict) -> int | None:
    """A gather reads at most one element per iteration of the dims its address uses."""
    used = set(sympy.sympify(load.index).free_symbols)
    for _, value in load.indirect:
        used |= {s for n in walk(value) if hasattr(n, "index")
                 for s in sympy.sympify(n.index).free_symbols}
    used &= set(ranges)
    if any(not sympy.sympify(ranges[s]).is_Integer for s in used):
        return None
    return math.prod(int(ranges[s]) for s in used)


def written_bytes(nodes, stores, hint: bool = False) -> int | None:
    """Bytes of the buffers among ``nodes`` that the kernel stores."""
    total = 0
    for node in nodes:
        if node.name in stores:
            numel = sympy.sympify(node.layout.numel())
            if not numel.is_Integer and not hint:
                return None
            total += size_hint(numel) * node.layout.dtype.itemsize
    return total


def traffic_of(passes, ranges: dict, nodes, stores, hint: bool = False,
               footprint: bool = False) -> Traffic | None:
    """The traffic of a kernel running ``passes`` (lists of bodies over ``ranges``) for
    ``nodes``, storing ``stores``; ``hint`` sizes run-time dims by their hints;
    ``footprint`` as in ``pass_read_bytes``."""
    ranges = hinted(ranges) if hint else ranges
    # a MutationBuffer is named after the input it overwrites: its loads read the old value
    computed = {n.name for n in nodes if not isinstance(n, MutationBuffer)}
    reads = [pass_read_bytes(bodies, ranges, computed, footprint, hint) for bodies in passes]
    written = written_bytes(nodes, stores, hint)
    if None in reads or written is None:
        return None
    return Traffic(sum(reads), written)


def pointwise_traffic(nodes, stores, hint: bool = False,
                      footprint: bool = False) -> Traffic | None:
    """A pointwise kernel over same-shaped ``nodes`` (one pass over their shared indices).

    >>> import torch, sympy
    >>> from compiler.ir import ComputedBuffer, Layout, Load, Op, index_symbols
    >>> i = index_symbols(2)
    >>> lay = Layout("cpu", torch.float32, (sympy.Integer(4), sympy.Integer(8)),
    ...              (sympy.Integer(8), sympy.Integer(1)))
    >>> x, bias = Load("x", 8 * i[0] + i[1], torch.float32), Load("b", i[1], torch.float32)
    >>> pointwise_traffic([ComputedBuffer("y", lay, Op("add", (x, bias), torch.float32))], {"y"})
    Traffic(read=160, written=128)
    """
    size = nodes[0].layout.size
    ranges = dict(zip(index_symbols(len(size)), size))
    bodies = [n.body for n in nodes] + [n.store_mask for n in nodes
                                        if getattr(n, "store_mask", None) is not None]
    return traffic_of([bodies], ranges, nodes, stores, hint, footprint)


def row_traffic(plan, stores, hint: bool = False, footprint: bool = False) -> Traffic | None:
    """A row kernel (``reduction.RowPlan``): a persistent kernel loads its tile once, a looped
    one in every loop; each per-row value is a pass of its own."""
    ranges = dict(plan.xdims + plan.rdims)
    rows = [[b] for b, kind in zip(plan.bodies, plan.kinds) if kind == "row"]
    tile = [b for b, kind in zip(plan.bodies, plan.kinds) if kind != "row"]
    passes = ([tile] if plan.persistent else [[b] for b in tile]) + rows
    return traffic_of(passes, ranges, plan.nodes, stores, hint, footprint)
