"""compiler.lowering.ranges: what a lazy tensor's body is over its whole index space. A
wrong True here drops a mask that masks something, so the unknown cases matter as much."""
from __future__ import annotations

import sympy
import torch

from compiler.ir import Const, IndexExpr, Load, Op, TensorValue, index_symbols
from compiler.lowering.ranges import always_true, always_zero

I = index_symbols(2)
SIZE = (sympy.Integer(4), sympy.Integer(8))


def _int(v):
    return Const(v, torch.int64)


def _bool(body, size=SIZE):
    return TensorValue(torch.bool, "cpu", size, body)


def _cmp(op, a, b):
    return Op(op, (a, b), torch.bool)


def test_comparisons_of_index_arithmetic():
    i1 = IndexExpr(I[1])
    assert always_true(_bool(_cmp("ge", i1, _int(0))))
    assert always_true(_bool(_cmp("lt", i1, _int(8))))           # i1 <= 7
    assert always_true(_bool(_cmp("gt", Op("add", (i1, _int(3)), torch.int64), _int(2))))
    assert always_true(_bool(_cmp("le", IndexExpr(2 * I[0] - I[1]), _int(6))))  # max 6 - 0
    assert not always_true(_bool(_cmp("lt", i1, _int(7))))       # i1 = 7 fails
    assert not always_true(_bool(_cmp("ge", i1, _int(1))))       # i1 = 0 fails
    assert not always_true(_bool(_cmp("le", IndexExpr(I[1]), IndexExpr(I[0]))))  # causal


def test_logical_ops_and_unknowns():
    yes, no = _cmp("ge", IndexExpr(I[1]), _int(0)), _cmp("ge", IndexExpr(I[1]), _int(1))
    assert always_true(_bool(Op("logical_and", (yes, yes), torch.bool)))
    assert not always_true(_bool(Op("logical_and", (yes, no), torch.bool)))
    assert always_true(_bool(Op("logical_or", (no, yes), torch.bool)))
    assert always_true(_bool(Op("logical_not", (_cmp("lt", IndexExpr(I[0]), _int(0)),),
                                torch.bool)))
    loaded = Load("buf0", I[1], torch.bool)                       # data: never known
    assert not always_true(_bool(loaded))
    assert not always_true(_bool(Op("logical_or", (loaded, no), torch.bool)))
    # a symbolic size bounds nothing from above
    assert not always_true(_bool(_cmp("lt", IndexExpr(I[1]), _int(8)),
                                 (sympy.Integer(4), sympy.Symbol("s0", positive=True))))


def test_zero_bias():
    where = Op("where", (_cmp("ge", IndexExpr(I[1]), _int(0)), Const(0.0, torch.float32),
                         Const(float("-inf"), torch.float32)), torch.float32)
    assert always_zero(TensorValue(torch.float32, "cpu", SIZE, where))
    half = Op("where", (_cmp("ge", IndexExpr(I[1]), _int(4)), Const(0.0, torch.float32),
                        Const(float("-inf"), torch.float32)), torch.float32)
    assert not always_zero(TensorValue(torch.float32, "cpu", SIZE, half))
    scaled = Op("mul", (IndexExpr(I[1]), Const(0.0, torch.float32)), torch.float32)
    assert always_zero(TensorValue(torch.float32, "cpu", SIZE, scaled))
