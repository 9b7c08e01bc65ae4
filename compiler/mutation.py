"""In-place mutation of graph inputs (BatchNorm running stats, KV caches, ``copy_`` into args).

A mutated input's new value is written into the caller's tensor itself, after every other
operation has read the old value. Elements the new value leaves unchanged are not written:
``slice_scatter(cache, new)`` becomes a store over the new rows only (a kernel whose grid is
the slice, not the cache); other partial updates a store masked by the condition. A new value that
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

import sympy

from .ir import (Const, Expr, IndexExpr, InputBuffer, Load, MutationBuffer, Op, OpName,
                 ScatterBuffer, TensorValue, index_symbols, loads_of, substitute)
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
        conds, body = _changed_where(value.body, own)
        if body == own:
            continue    # unchanged (or written in place already: compiler/lowering/inplace.py)
        region = _region(conds, target.layout.size)
        if region is not None:    # a slice: iterate over its elements only
            ctx.operations.append(_region_write(target, body, region))
            continue
        mask = conds[0] if conds else None
        for cond in conds[1:]:
            mask = Op(OpName.LOGICAL_AND, (mask, cond), mask.dtype)
        ctx.operations.append(MutationBuffer(target.name, target.layout, body, mask))


def _changed_where(body: Expr, own: Load) -> tuple[list[Expr], Expr]:
    """``body`` as (conditions, value): ``where(c, v, own)`` (slice_scatter, select_scatter,
    masked_fill) keeps ``own`` where ``c`` fails, so only ``v`` where ``c`` holds is
    written; nested ones (a scatter into a slice of a slice) AND their conditions."""
    conds = []
    while isinstance(body, Op) and body.op == OpName.WHERE and body.args[2] == own:
        cond, body = body.args[0], body.args[1]
        conds.append(cond)
        if isinstance(body, Op) and body.op == OpName.MASKED and body.args[0] == cond:
            body = body.args[1]     # the region's own guard: always true where written
    return conds, body


def _bound(e: Expr):
    """An index bound as sympy: a literal or an index expression (a symbolic size)."""
    if isinstance(e, Const) and not isinstance(e.value, bool):
        return sympy.Integer(int(e.value))
    return sympy.sympify(e.index) if isinstance(e, IndexExpr) else None


def _dim_facts(cond: Expr, isyms) -> list | None:
    """``cond`` as facts ``(dim, kind, value)`` about single index symbols, kinds "lo"
    (index >= value), "hi" (index < value), "at" (index == value), or None if it is anything
    else (the conditions lower_slice_scatter / lower_select_scatter build)."""
    if not isinstance(cond, Op):
        return None
    if cond.op == OpName.LOGICAL_AND:
        a, b = (_dim_facts(c, isyms) for c in cond.args)
        return a + b if a is not None and b is not None else None
    kinds = {OpName.GE: "lo", OpName.LT: "hi", OpName.EQ: "at"}
    if cond.op not in kinds or not isinstance(cond.args[0], IndexExpr):
        return None
    index, value = sympy.sympify(cond.args[0].index), _bound(cond.args[1])
    if index not in isyms or value is None:
        return None
    return [(isyms.index(index), kinds[cond.op], value)]


def _region(conds: list[Expr], size) -> tuple | None:
    """Per dim ``(start, count)`` of the box the conditions select, or None."""
    isyms = index_symbols(len(size))
    box = [[sympy.Integer(0), sympy.sympify(n)] for n in size]    # [start, stop)
    seen: set = set()
    for cond in conds:
        facts = _dim_facts(cond, isyms)
        if facts is None:
            return None
        for d, kind, value in facts:
            if (d, kind) in seen or (d, "at") in seen or (kind == "at" and (
                    (d, "lo") in seen or (d, "hi") in seen)):
                return None    # two bounds on one dim: not worth intersecting
            seen.add((d, kind))
            if kind == "lo":
                box[d][0] = value
            elif kind == "hi":
                box[d][1] = value
            else:
                box[d] = [value, value + 1]
    return tuple((start, stop - start) for start, stop in box) if conds else None


def _region_write(target: InputBuffer, body: Expr, region) -> ScatterBuffer:
    """Write ``body`` into ``target`` over ``region`` only (a grid over the new rows)."""
    isyms = index_symbols(len(region))
    shift = {s: start + s for s, (start, _) in zip(isyms, region)}
    position = tuple(shift[s] for s in isyms)
    return ScatterBuffer(target.name, target.layout, substitute(body, shift), None,
                         tuple(n for _, n in region), position)
