"""Scatters into a mutated graph input, written in place where the graph computes them.

``cache.index_copy_(2, pos, k)`` reaches kiln functionalized: ``new = index_put(cache, ...)``
(or ``index_put(slice(cache), ...)`` then ``slice_scatter(cache, new, <that slice>)`` for a
view of the cache), and ``new`` is written back into ``cache`` at the end. Done literally,
that copies the whole cache twice. When nothing else reads the cache's old value, the
scatter instead writes the new rows straight into the caller's tensor, and every later read
of the new value reads the input itself: one kernel over the new rows, no copy.

The conditions, checked on the FX graph:
- the scatter's ``self`` is the mutated placeholder P, or one ``slice`` of P with a static
  start that nothing else uses;
- P's new value is the scatter's result (no slice), or ``slice_scatter(P, result, <the same
  slice>)``;
- P has no other user (beyond ``copy_`` into it): no read of its old value can be
  overtaken by the write.

Example:
    >>> import torch
    >>> _slice_args((0, 2, None))
    (0, 2, None, 1)
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy
import torch

from ..ir import InputBuffer

aten = torch.ops.aten


@dataclass(frozen=True)
class InPlace:
    """Scatter into ``target``; ``self`` is ``target`` sliced along ``dim`` from ``start``
    by ``step`` (``dim`` None: ``self`` is ``target`` itself)."""
    target: InputBuffer
    dim: int | None = None
    start: int = 0
    step: int = 1

    def place(self, position):
        """A position in ``self``'s dims as one in ``target``'s."""
        position = list(position)
        if self.dim is not None:
            position[self.dim] = self.start + self.step * sympy.sympify(position[self.dim])
        return tuple(position)


def _slice_args(args) -> tuple:
    """(dim, start, end, step) of ``slice.Tensor`` / ``slice_scatter`` args after the tensors."""
    defaults = (0, None, None, 1)
    args = tuple(args) + defaults[len(args):]
    return args[:4]


def _is(node, target) -> bool:
    return isinstance(node, torch.fx.Node) and node.op == "call_function" and node.target is target


def inplace_target(ctx, node: torch.fx.Node) -> InPlace | None:
    """Where the scatter ``node`` can write in place, or None (then it writes a copy)."""
    base, view = node.args[0], None
    if _is(base, aten.slice.Tensor):
        if len(base.users) != 1:
            return None
        base, view = base.args[0], base
    if not isinstance(base, torch.fx.Node) or base.op != "placeholder":
        return None
    found = ctx.mutated_input(base)
    if found is None:
        return None
    target, value = found
    if view is None:
        allowed, matches = {node}, value is node
    else:
        dim, start, _, step = _slice_args(view.args[1:])
        matches = (_is(value, aten.slice_scatter.default) and value.args[0] is base
                   and value.args[1] is node
                   and _slice_args(value.args[2:]) == _slice_args(view.args[1:])
                   and isinstance(start or 0, int) and isinstance(step, int))
        allowed = {view, value}
    writes_back = {u for u in base.users if _is(u, aten.copy_.default) and u.args[0] is base}
    if not matches or set(base.users) - allowed - writes_back:
        return None
    if view is None:
        return InPlace(target)
    size = target.layout.size[dim if dim >= 0 else dim + len(target.layout.size)]
    start = start or 0
    if start < 0:
        if not sympy.sympify(size).is_Integer:
            return None
        start += int(size)
    return InPlace(target, dim % len(target.layout.size), start, step)
