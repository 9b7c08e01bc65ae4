"""What a lazy tensor's body can evaluate to over its whole index space: interval bounds of
numbers and the truth of comparisons, from the index ranges ``0 <= i_k < size_k``.

Used where a value known in advance changes what is passed on: an attention mask that
holds everywhere (export traces transformers' masks as ``arange(n) >= 0``, all True, where
eager passes none) is dropped, so torch's fused attention runs as it does in eager instead of
its masked variant. Bounds are exact only for index arithmetic (affine in the index
symbols, numeric sizes) and constants; anything else is unknown, and unknown never drops.

Example:
    >>> import sympy, torch
    >>> from compiler.ir import Const, IndexExpr, Op, TensorValue, index_symbols
    >>> i = index_symbols(2)
    >>> mask = Op("ge", (IndexExpr(i[1]), Const(0, torch.int64)), torch.bool)
    >>> always_true(TensorValue(torch.bool, "cpu", (sympy.Integer(4), sympy.Integer(8)), mask))
    True
"""
from __future__ import annotations

import math

import sympy

from ..ir import Const, Expr, IndexExpr, Op, OpName, TensorValue, index_symbols
from ..sizevars import affine_coefficients

UNKNOWN = (-math.inf, math.inf)
_COMPARE = {OpName.GE, OpName.GT, OpName.LE, OpName.LT}


def always_true(value: TensorValue) -> bool:
    """Every element of the bool tensor ``value`` is True."""
    return _truth(value.body, _index_ranges(value)) is True


def always_zero(value: TensorValue) -> bool:
    """Every element of the numeric tensor ``value`` is 0."""
    return _bounds(value.body, _index_ranges(value)) == (0, 0)


def _index_ranges(value: TensorValue) -> dict:
    return {sym: (0, int(size) - 1 if sympy.sympify(size).is_Integer else math.inf)
            for sym, size in zip(index_symbols(value.ndim), value.size)}


def _truth(e: Expr, ranges: dict) -> bool | None:
    """True or False where ``e`` is that everywhere, else None."""
    if isinstance(e, Const):
        return bool(e.value)
    if not isinstance(e, Op):
        return None
    if e.op in _COMPARE:
        (alo, ahi), (blo, bhi) = (_bounds(a, ranges) for a in e.args)
        holds = {OpName.GE: alo >= bhi, OpName.GT: alo > bhi,
                 OpName.LE: ahi <= blo, OpName.LT: ahi < blo}[e.op]
        fails = {OpName.GE: ahi < blo, OpName.GT: ahi <= blo,
                 OpName.LE: alo > bhi, OpName.LT: alo >= bhi}[e.op]
        return True if holds else False if fails else None
    truths = [_truth(a, ranges) for a in e.args]
    if e.op == OpName.LOGICAL_NOT and truths[0] is not None:
        return not truths[0]
    if e.op in (OpName.LOGICAL_AND, OpName.BITWISE_AND):
        return False if False in truths else True if all(truths) else None
    if e.op in (OpName.LOGICAL_OR, OpName.BITWISE_OR):
        return True if True in truths else False if truths == [False] * len(truths) else None
    if e.op == OpName.TO_DTYPE and len(truths) == 1:
        return truths[0]
    return None


def _bounds(e: Expr, ranges: dict) -> tuple:
    """(low, high) that every value of ``e`` lies in; ``UNKNOWN`` where not known."""
    if isinstance(e, Const):
        return (e.value, e.value) if isinstance(e.value, (int, float)) else UNKNOWN
    if isinstance(e, IndexExpr):
        return _index_bounds(e.index, ranges)
    if not isinstance(e, Op):
        return UNKNOWN
    if e.op == OpName.WHERE:
        cond = _truth(e.args[0], ranges)
        if cond is not None:
            return _bounds(e.args[1 if cond else 2], ranges)
        (alo, ahi), (blo, bhi) = _bounds(e.args[1], ranges), _bounds(e.args[2], ranges)
        return min(alo, blo), max(ahi, bhi)
    if e.op == OpName.TO_DTYPE:
        return _bounds(e.args[0], ranges)
    if e.op in (OpName.ADD, OpName.SUB, OpName.MUL) and len(e.args) == 2:
        (alo, ahi), (blo, bhi) = (_bounds(a, ranges) for a in e.args)
        if e.op == OpName.ADD:
            return alo + blo, ahi + bhi
        if e.op == OpName.SUB:
            return alo - bhi, ahi - blo
        if not all(map(math.isfinite, (alo, ahi, blo, bhi))):
            return UNKNOWN
        corners = [x * y for x in (alo, ahi) for y in (blo, bhi)]
        return min(corners), max(corners)
    return UNKNOWN


def _index_bounds(index: sympy.Expr, ranges: dict) -> tuple:
    """Bounds of an affine index expression with numeric coefficients over ``ranges``."""
    symbols = sorted(sympy.sympify(index).free_symbols, key=str)
    if any(s not in ranges for s in symbols):
        return UNKNOWN
    found = affine_coefficients(index, symbols)
    if found is None or not all(sympy.sympify(c).is_number for c in (found[0], *found[1])):
        return UNKNOWN
    low = high = _number(found[0])
    for s, c in zip(symbols, map(_number, found[1])):
        if c == 0:
            continue    # 0 * inf (an unbounded dim) would be nan
        lo, hi = ranges[s]
        low, high = (low + c * lo, high + c * hi) if c > 0 else (low + c * hi, high + c * lo)
    return low, high


def _number(value) -> int | float:
    """A sympy number as Python's: exact where it is an integer."""
    value = sympy.sympify(value)
    return int(value) if value.is_Integer else float(value)
