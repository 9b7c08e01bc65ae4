"""The lowering table: ATen op -> function building IR, registered next to each definition.

Each family module (pointwise, views, extern, ...) owns a ``Registry`` (``registry.py``) and
decorates its lowerings with ``@REGISTRY.register(aten.op.overload, ...)``; ``default_table()``
merges them into the one immutable table GraphLowering is handed. An op is lowered only when
its ``supports`` check passes; otherwise GraphLowering falls back to calling the ATen op from
the wrapper.

Example:
    >>> import torch
    >>> table = default_table()
    >>> table.lookup(torch.ops.aten.relu.default) is not None
    True
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any

from . import attention, extern, indexing, norm, pointwise, pooling, reduction, scan, scatter, views
from .registry import Lowering, LoweringTable, Registry

FAMILIES = (pointwise, views, reduction, indexing, pooling, scan, scatter, extern, attention,
            norm)


def default_table() -> LoweringTable:
    """Every family's lowerings, merged; an op lowered by two families is an error."""
    merged: dict[Any, Lowering] = {}
    for family in FAMILIES:
        for op, lowering in family.REGISTRY.entries().items():
            if op in merged:
                raise ValueError(f"{op} lowered by two families")
            merged[op] = lowering
    return LoweringTable(MappingProxyType(merged))


__all__ = ["FAMILIES", "Lowering", "LoweringTable", "Registry", "default_table"]
