"""The scheduler's fusion planner for kiln's Triton kernels.

The scheduler decides fusion by traffic: it asks a ``scheduler.FusionPlanner`` what one
kernel of some nodes would move, or whether no kernel can hold them. This answers for the
emitters here: plain pointwise buffers share a 1-D kernel when ``pointwise_group_fits``;
anything with a reduction shares a row kernel when ``plan_row_group`` finds one, unless
it would compute a many-load pointwise value poorly (``computes_heavy_work_poorly``).
Inductor's ``BaseScheduling.can_fuse`` plays this part there.

Example:
    >>> TritonPlanner().kernel_traffic((), frozenset()) is None
    True
"""
from __future__ import annotations

from ..ir import ComputedBuffer, Load, walk
from ..traffic import Traffic, pointwise_traffic, row_traffic
from .heuristics import SECTOR_ROWS, rows_per_program
from .reduction import RowPlan, load_step, moving_loads_unplanned, plan_row_group
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
        if moving_loads_unplanned(nodes) > MAX_ROW_KERNEL_LOADS:
            return None   # what computes_heavy_work_poorly refuses, whatever the plan
        plan = self.row_plan(nodes)
        if plan is None or computes_heavy_work_poorly(plan):
            return None
        return row_traffic(plan, stores, hint)

    def row_plan(self, nodes: tuple) -> RowPlan | None:
        """``plan_row_group(nodes)``, planned once: the emitter writes the kernel of the
        plan the scheduler weighed."""
        key = tuple(n.name for n in nodes)
        if key not in self._plans:
            self._plans[key] = plan_row_group(nodes)
        return self._plans[key]


# A pointwise value with many loads joins a row kernel only where the kernel computes it as
# well as a kernel of its own would. Not where the rows lie across memory and the kernel
# holds less than a sector's worth of adjacent rows a program: each warp's 32 lanes then load
# from 32 different sectors (EfficientNet's depthwise conv in its squeeze-excite mean ran 8x
# slower than on its own, H200). Not in a looped kernel over such rows: it walks 16 rows
# together, coalesced, but runs only rows/16 programs. A few such loads (BatchNorm, an
# activation) cost little next to writing the value and reading it back, so those join.
# And a value of more than 16 loads an element (a 3x3 depthwise conv reads 9 inputs and 9
# weights) never joins: its arithmetic outweighs one read of it, a row kernel pads rows (96
# channels in blocks of 128: a quarter of the lanes idle) and, holding it, can run out of
# room for the LayerNorm it feeds (fusion limits), which then re-reads its statistics.
MAX_SCATTERED_LOADS = 4
MAX_ROW_KERNEL_LOADS = 16


def computes_heavy_work_poorly(plan: RowPlan) -> bool:
    """Whether a pointwise node of the plan (kind "full") loads more than
    ``MAX_ROW_KERNEL_LOADS`` elements of other buffers, or more than ``MAX_SCATTERED_LOADS``
    that the row kernel reads scattered or with too few programs."""
    if not plan.rdims:
        return False
    rows, _ = rows_per_program(plan.kernel_kind, plan.numels, rows_across=plan.across)
    few_programs = plan.across and not plan.persistent
    inner_x = plan.xdims[-1][0] if plan.xdims and rows >= SECTOR_ROWS else None
    inner_r = plan.rdims[-1][0]
    zero = {s: 0 for s, _ in plan.xdims + plan.rdims}
    own = {n.name for n in plan.nodes}
    for node_kind, body in zip(plan.kinds, plan.bodies):
        if node_kind != "full":
            continue
        moving = [(load_step(load, inner_r, zero), load) for load in walk(body)
                  if isinstance(load, Load) and load.buffer not in own]
        moving = [(step, load) for step, load in moving if step != 0]
        scattered = [load for step, load in moving if step != 1 and (
            few_programs or inner_x is None or load_step(load, inner_x, zero) != 1)]
        if len(scattered) > MAX_SCATTERED_LOADS or len(moving) > MAX_ROW_KERNEL_LOADS:
            return True
    return False
