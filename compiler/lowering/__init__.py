"""The lowering table: ATen op -> function building IR, registered next to each definition.

Each family module (pointwise, views, extern) owns a ``Registry`` and decorates its lowerings
with ``@REGISTRY.register(aten.op.overload, ...)``; ``default_table()`` merges them into the
one immutable table GraphLowering is handed. An op is lowered only when its ``supports``
check passes; otherwise GraphLowering falls back to calling the ATen op from the wrapper.

Example:
    >>> import torch
    >>> table = default_table()
    >>> table.lookup(torch.ops.aten.relu.default) is not None
    True
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping

import torch


@dataclass(frozen=True)
class Lowering:
    """``fn(ctx, *args, **kwargs)`` builds IR; ``supports(node)`` says whether it applies."""
    fn: Callable[..., Any]
    supports: Callable[[torch.fx.Node], bool] | None = None

    def applies(self, node: torch.fx.Node) -> bool:
        return self.supports is None or bool(self.supports(node))


class Registry:
    """One op family's lowerings, filled by decorators at import of that family's module."""

    def __init__(self, family: str):
        self.family = family
        self._entries: dict[Any, Lowering] = {}

    def register(self, *ops, supports=None):
        def wrap(fn):
            for op in ops:
                for overload in _overloads(op):
                    if overload in self._entries:
                        raise ValueError(f"{self.family}: {overload} registered twice")
                    self._entries[overload] = Lowering(fn, supports)
            return fn
        return wrap

    def entries(self) -> Mapping[Any, Lowering]:
        return MappingProxyType(self._entries)


def _overloads(op):
    """An OpOverloadPacket stands for all its overloads; an OpOverload for itself."""
    if isinstance(op, torch._ops.OpOverloadPacket):
        return [getattr(op, name) for name in op.overloads()]
    return [op]


@dataclass(frozen=True)
class LoweringTable:
    """The merged, read-only table GraphLowering uses."""
    entries: Mapping[Any, Lowering]

    def lookup(self, target) -> Lowering | None:
        return self.entries.get(target)

    def __contains__(self, target) -> bool:
        return target in self.entries


def default_table() -> LoweringTable:
    from . import (extern, indexing, norm, pointwise, pooling, reduction,  # registers each family
                   views)
    merged: dict[Any, Lowering] = {}
    for registry in (pointwise.REGISTRY, views.REGISTRY, reduction.REGISTRY, indexing.REGISTRY,
                     pooling.REGISTRY, extern.REGISTRY, norm.REGISTRY):
        for op, lowering in registry.entries().items():
            if op in merged:
                raise ValueError(f"{op} lowered by two families")
            merged[op] = lowering
    return LoweringTable(MappingProxyType(merged))
