"""The lowering registry: how an op family registers its lowerings, and the merged table.

Each family module (pointwise, views, extern, ...) owns a ``Registry`` and decorates its
lowerings with ``@REGISTRY.register(aten.op.overload, ...)``; ``compiler.lowering.default_table``
merges them into the one immutable ``LoweringTable`` GraphLowering is handed.

Example:
    >>> import torch
    >>> reg = Registry("demo")
    >>> _ = reg.register(torch.ops.aten.relu.default)(lambda ctx, x: x)
    >>> LoweringTable(reg.entries()).lookup(torch.ops.aten.relu.default).applies(None)
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
