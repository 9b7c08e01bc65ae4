"""The scheduler's fusion planner for kiln's Triton kernels.

The scheduler decides fusion by traffic: it asks a ``scheduler.FusionPlanner`` what one
kernel of some nodes would move, or whether no kernel can hold them. This answers for the
emitters here: plain pointwise buffers share a 1-D kernel when ``pointwise_group_fits``;
anything with a reduction shares a row kernel when ``plan_row_group`` finds one, unless
it would compute a many-load pointwise value across its rows (``computes_strided_work``).
Inductor's ``BaseScheduling.can_fuse`` plays this part there.

Example:
    >>> TritonPlanner().kernel_traffic((), frozenset()) is None
    True
"""
from __future__ import annotations

import sympy

from ..ir import ComputedBuffer, Load, walk
from ..kernels.spec import KernelKind
from ..traffic import Traffic, pointwise_traffic, row_traffic
from .heuristics import SECTOR_ROWS, rows_per_program
from .reduction import RowPlan, load_step, plan_row_group
from .triton import pointwise_group_fits


class TritonPlanner:
    """``FusionPlanner`` of the Triton emitters; row plans are cached by node names (one
    planner per graph: names are unique within it)."""

    def __init__(self):
        self._plans: dict[tuple, object] = {}

    def kernel_traffic(self, nodes: tuple, stores: frozenset, hint: bool = True
                       ) -> Traffic | None:
        """Bytes one kernel of ``nodes`` writing ``stores`` moves (run-time sizes by their
        hints unless ``hint`` is off); None when no kernel can hold them (or, unhinted,
        sizes are symbolic)."""
        if not nodes:
            return None
        if all(isinstance(n, ComputedBuffer) for n in nodes):
            if len(nodes) > 1 and not pointwise_group_fits(nodes):
                return None
            return pointwise_traffic(nodes, stores, hint)
        key = tuple(n.name for n in nodes)
        if key not in self._plans:
            self._plans[key] = plan_row_group(nodes)
        plan = self._plans[key]
        if plan is None or computes_strided_work(plan):
            return None
        return row_traffic(plan, stores, hint)


# A row kernel whose rows lie across memory (a channels-last mean over H and W) reads them
# coalesced only while it holds a sector's worth of adjacent rows a program; one row a
# program sends each warp's 32 lanes to 32 different sectors at every load. A looped kernel
# walking 16 rows together is coalesced but runs only rows/16 programs. A few loads there
# (BatchNorm, an activation) cost little next to writing the value and reading it back; a
# depthwise conv's 9-49 taps computed there were 8x slower than on their own (EfficientNet's
# squeeze-excite mean, H200), so such a value gets its own kernel.
MAX_SCATTERED_LOADS = 4


def computes_strided_work(plan: RowPlan) -> bool:
    """Whether a pointwise node of the plan (kind "full") reads more than
    ``MAX_SCATTERED_LOADS`` elements of other buffers across the rows where the kernel
    cannot read them well: too few rows a program to coalesce, or too few programs."""
    if not plan.rdims:
        return False
    kind = KernelKind.REDUCTION_PERSISTENT if plan.persistent else KernelKind.REDUCTION_LOOPED
    numels = [sympy.Mul(*[n for _, n in dims]) for dims in (plan.xdims, plan.rdims)]
    rows, _ = rows_per_program(kind, numels, rows_across=plan.across)
    few_programs = plan.across and not plan.persistent
    inner_x = plan.xdims[-1][0] if plan.xdims and rows >= SECTOR_ROWS else None
    zero = {s: 0 for s, _ in plan.xdims + plan.rdims}
    own = {n.name for n in plan.nodes}
    for node_kind, body in zip(plan.kinds, plan.bodies):
        if node_kind != "full":
            continue
        scattered = sum(1 for load in walk(body) if isinstance(load, Load)
                        and load.buffer not in own
                        and load_step(load, plan.rdims[-1][0], zero) not in (0, 1)
                        and (few_programs or inner_x is None
                             or load_step(load, inner_x, zero) != 1))
        if scattered > MAX_SCATTERED_LOADS:
            return True
    return False
