"""In-place mutation of graph inputs (BatchNorm running stats, KV caches, ``copy_`` into args).

A mutated input's new value is written into the caller's tensor itself, after every other
operation has read the old value. Elements the new value leaves unchanged are not written:
``slice_scatter(cache, new)`` becomes a masked store of the new rows only. A new value that
reads another mutated input (or its own target elsewhere than the element being written) is
computed into a temporary first, so no write can be seen by a read of the old value.

Example:
    >>> import torch
    >>> from torch.fx.experimental.proxy_tensor import make_fx
    >>> from compiler.graph import GraphLowering
    >>> from compiler.lowering import default_table
    >>> from compiler.config import CompilerOptions
    >>> def step(stats, x):
    ...     stats.mul_(0.9).add_(x.mean(0) * 0.1)
    ...     return (x * 2,)
    >>> pure = torch.func.functionalize(step, remove="mutations")
    >>> gm = make_fx(pure, tracing_mode="fake")(torch.randn(4), torch.randn(8, 4))
    >>> ops = GraphLowering(gm, default_table(), CompilerOptions()).lower().operations
    >>> type(ops[-1]).__name__, ops[-1].name
    ('MutationBuffer', 'arg0')
"""
from __future__ import annotations

from .ir import InputBuffer, Load, MutationBuffer, Op, TensorValue, index_symbols, loads_of
from .lowering.common import expand_to, to_dtype


def _own_load(target: InputBuffer) -> Load:
    idx = index_symbols(len(target.layout.size))
    return Load(target.name, target.layout.index(idx), target.layout.dtype)


def _conflicts(value: TensorValue, target: InputBuffer, targets: set[str]) -> bool:
    own = _own_load(target)
    return any(l.buffer in targets and l != own for l in loads_of(value.body))


def apply_mutations(ctx, mutations: list[tuple[InputBuffer, TensorValue]]) -> None:
    """Append one MutationBuffer per mutated input to ``ctx.operations`` (in place writes)."""
    targets = {t.name for t, _ in mutations}
    prepared = []
    for target, value in mutations:
        value = to_dtype(expand_to(value, target.layout.size), target.layout.dtype, rounds=True)
        if _conflicts(value, target, targets):
            value = ctx.realize(value)   # read every old value before any write
        prepared.append((target, value))
    for target, value in prepared:
        own = _own_load(target)
        body, mask = value.body, None
        if body == own:
            continue    # unchanged
        if isinstance(body, Op) and body.op == "where" and body.args[2] == own:
            mask, body = body.args[0], body.args[1]    # write only where it changes
        ctx.operations.append(MutationBuffer(target.name, target.layout, body, mask))
