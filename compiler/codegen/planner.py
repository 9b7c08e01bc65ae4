"""The scheduler's fusion planner for kiln's Triton kernels.

The scheduler decides fusion by traffic: it asks a ``scheduler.FusionPlanner`` what one
kernel of some nodes would move, or whether no kernel can hold them. This answers for the
emitters here: plain pointwise buffers share a 1-D kernel when ``pointwise_group_fits``;
anything with a reduction shares a row kernel when ``plan_row_group`` finds one. Inductor's
``BaseScheduling.can_fuse`` plays this part there.

Example:
    >>> TritonPlanner().kernel_traffic((), frozenset()) is None
    True
"""
from __future__ import annotations

from ..ir import ComputedBuffer
from ..traffic import Traffic, pointwise_traffic, row_traffic
from .reduction import plan_row_group
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
        return None if plan is None else row_traffic(plan, stores, hint)
