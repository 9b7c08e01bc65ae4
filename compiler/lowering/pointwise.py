"""Pointwise lowerings: arithmetic, comparisons, logic, math, activations, casts, creation.

A semantic op (``"add"``, ``"gelu"``) is one entry of ``POINTWISE_OPS`` (its eager reference,
used to fold constants, and how eager promotes its dtypes); the codegen table in
``codegen/ops.py`` says how to print it. Registering a new ATen pointwise op is one line.

Example:
    >>> import torch
    >>> aten = torch.ops.aten
    >>> REGISTRY.entries()[aten.exp.default].fn.__name__
    'lower'
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import sympy
import torch

from ..ir import Const, IndexExpr, Op, TensorValue
from .registry import Registry
from .common import (SUPPORTED_DTYPES, Promotion, broadcast_shapes, cast_expr, expand_to,
                     is_tensor, promote, scalar_const, to_dtype)

aten = torch.ops.aten
prims = torch.ops.prims
REGISTRY = Registry("pointwise")

P = Promotion


@dataclass(frozen=True)
class PointwiseOp:
    """A semantic pointwise op: eager reference (for constant folding) and promotion kind."""
    ref: Callable | None
    promotion: Promotion
    boolean_result: bool = False


def _gelu_ref(x, approximate="none"):
    return torch.nn.functional.gelu(x, approximate=approximate)


POINTWISE_OPS: dict[str, PointwiseOp] = {
    # arithmetic
    "add": PointwiseOp(torch.add, P.DEFAULT), "sub": PointwiseOp(torch.sub, P.DEFAULT),
    "mul": PointwiseOp(torch.mul, P.DEFAULT), "truediv": PointwiseOp(torch.true_divide, P.INT_TO_FLOAT),
    "div_trunc": PointwiseOp(lambda a, b: torch.div(a, b, rounding_mode="trunc"), P.DEFAULT),
    "div_floor": PointwiseOp(lambda a, b: torch.div(a, b, rounding_mode="floor"), P.DEFAULT),
    "remainder": PointwiseOp(torch.remainder, P.DEFAULT), "fmod": PointwiseOp(torch.fmod, P.DEFAULT),
    "neg": PointwiseOp(torch.neg, P.DEFAULT), "abs": PointwiseOp(torch.abs, P.COMPLEX_TO_FLOAT),
    "maximum": PointwiseOp(torch.maximum, P.DEFAULT), "minimum": PointwiseOp(torch.minimum, P.DEFAULT),
    "pow": PointwiseOp(torch.pow, P.BOOL_TO_LONG), "sign": PointwiseOp(torch.sign, P.DEFAULT),
    "reciprocal": PointwiseOp(torch.reciprocal, P.INT_TO_FLOAT),
    # math
    "exp": PointwiseOp(torch.exp, P.INT_TO_FLOAT), "exp2": PointwiseOp(torch.exp2, P.INT_TO_FLOAT),
    "expm1": PointwiseOp(torch.expm1, P.INT_TO_FLOAT), "log": PointwiseOp(torch.log, P.INT_TO_FLOAT),
    "log2": PointwiseOp(torch.log2, P.INT_TO_FLOAT), "log1p": PointwiseOp(torch.log1p, P.INT_TO_FLOAT),
    "sqrt": PointwiseOp(torch.sqrt, P.INT_TO_FLOAT), "rsqrt": PointwiseOp(torch.rsqrt, P.INT_TO_FLOAT),
    "sin": PointwiseOp(torch.sin, P.INT_TO_FLOAT), "cos": PointwiseOp(torch.cos, P.INT_TO_FLOAT),
    "tanh": PointwiseOp(torch.tanh, P.INT_TO_FLOAT), "erf": PointwiseOp(torch.erf, P.INT_TO_FLOAT),
    "sigmoid": PointwiseOp(torch.sigmoid, P.INT_TO_FLOAT),
    "floor": PointwiseOp(torch.floor, P.DEFAULT), "ceil": PointwiseOp(torch.ceil, P.DEFAULT),
    "round": PointwiseOp(torch.round, P.DEFAULT), "trunc": PointwiseOp(torch.trunc, P.DEFAULT),
    # activations kept whole by capture's decompositions
    "relu": PointwiseOp(torch.relu, P.DEFAULT), "gelu": PointwiseOp(_gelu_ref, P.DEFAULT),
    "silu": PointwiseOp(torch.nn.functional.silu, P.DEFAULT),
    "hardsigmoid": PointwiseOp(torch.nn.functional.hardsigmoid, P.DEFAULT),
    "hardswish": PointwiseOp(torch.nn.functional.hardswish, P.DEFAULT),
    "leaky_relu": PointwiseOp(torch.nn.functional.leaky_relu, P.DEFAULT),
    # comparisons and logic
    "eq": PointwiseOp(torch.eq, P.ALWAYS_BOOL, True), "ne": PointwiseOp(torch.ne, P.ALWAYS_BOOL, True),
    "lt": PointwiseOp(torch.lt, P.ALWAYS_BOOL, True), "le": PointwiseOp(torch.le, P.ALWAYS_BOOL, True),
    "gt": PointwiseOp(torch.gt, P.ALWAYS_BOOL, True), "ge": PointwiseOp(torch.ge, P.ALWAYS_BOOL, True),
    "isnan": PointwiseOp(torch.isnan, P.ALWAYS_BOOL, True),
    "isinf": PointwiseOp(torch.isinf, P.ALWAYS_BOOL, True),
    "logical_not": PointwiseOp(torch.logical_not, P.ALWAYS_BOOL, True),
    "logical_and": PointwiseOp(torch.logical_and, P.ALWAYS_BOOL, True),
    "logical_or": PointwiseOp(torch.logical_or, P.ALWAYS_BOOL, True),
    "logical_xor": PointwiseOp(torch.logical_xor, P.ALWAYS_BOOL, True),
    "bitwise_and": PointwiseOp(torch.bitwise_and, P.DEFAULT),
    "bitwise_or": PointwiseOp(torch.bitwise_or, P.DEFAULT),
    "bitwise_xor": PointwiseOp(torch.bitwise_xor, P.DEFAULT),
    "bitwise_not": PointwiseOp(torch.bitwise_not, P.DEFAULT),
    # more math (libdevice on GPU; runtime.INTERPRETER_LIBDEVICE under the interpreter)
    "atan": PointwiseOp(torch.atan, P.INT_TO_FLOAT), "asin": PointwiseOp(torch.asin, P.INT_TO_FLOAT),
    "acos": PointwiseOp(torch.acos, P.INT_TO_FLOAT), "tan": PointwiseOp(torch.tan, P.INT_TO_FLOAT),
    "sinh": PointwiseOp(torch.sinh, P.INT_TO_FLOAT), "cosh": PointwiseOp(torch.cosh, P.INT_TO_FLOAT),
    "asinh": PointwiseOp(torch.asinh, P.INT_TO_FLOAT), "acosh": PointwiseOp(torch.acosh, P.INT_TO_FLOAT),
    "atanh": PointwiseOp(torch.atanh, P.INT_TO_FLOAT), "log10": PointwiseOp(torch.log10, P.INT_TO_FLOAT),
    "erfc": PointwiseOp(torch.erfc, P.INT_TO_FLOAT), "erfinv": PointwiseOp(torch.erfinv, P.INT_TO_FLOAT),
    "erfcx": PointwiseOp(torch.special.erfcx, P.INT_TO_FLOAT),
    "lgamma": PointwiseOp(torch.lgamma, P.INT_TO_FLOAT), "i0": PointwiseOp(torch.i0, P.INT_TO_FLOAT),
    "atan2": PointwiseOp(torch.atan2, P.INT_TO_FLOAT), "hypot": PointwiseOp(torch.hypot, P.DEFAULT),
    "copysign": PointwiseOp(torch.copysign, P.INT_TO_FLOAT),
    "fmax": PointwiseOp(torch.fmax, P.DEFAULT), "fmin": PointwiseOp(torch.fmin, P.DEFAULT),
    "signbit": PointwiseOp(torch.signbit, P.ALWAYS_BOOL, True),
    "elu": PointwiseOp(lambda x, neg, pos, in_scale: torch.where(
        x <= 0, torch.expm1(x * in_scale) * neg, x * pos), P.DEFAULT),
    "lshift": PointwiseOp(torch.bitwise_left_shift, P.DEFAULT),
    "rshift": PointwiseOp(torch.bitwise_right_shift, P.DEFAULT),
}


def _fold(name: str, args, out_dtype, params):
    """Evaluate an op on constants exactly as eager would (0-d tensors of the same dtypes)."""
    ref = POINTWISE_OPS[name].ref if name in POINTWISE_OPS else None
    if ref is None:
        return None
    value = ref(*[torch.tensor(a.value, dtype=a.dtype) for a in args], *params)
    return Const(value.to(out_dtype).item(), out_dtype)


def make_op(name: str, args, out_dtype, params=()):
    """``Op(name, args)``, folded to a ``Const`` when every argument is a constant."""
    if args and all(isinstance(a, Const) for a in args):
        folded = _fold(name, args, out_dtype, params)
        if folded is not None:
            return folded
    return Op(name, tuple(args), out_dtype, tuple(params))


def pointwise(name: str, *args, params=(), promotion: Promotion | None = None) -> TensorValue:
    """Broadcast ``args`` (TensorValues and Python scalars), promote, and apply op ``name``."""
    spec = POINTWISE_OPS[name]
    compute, result = promote(args, promotion or spec.promotion)
    tensors = [a for a in args if is_tensor(a)]
    size = broadcast_shapes([t.size for t in tensors])
    bodies = [cast_expr(expand_to(a, size).body, compute) if is_tensor(a) else _scalar(a, compute)
              for a in args]
    out_dtype = torch.bool if spec.boolean_result else compute
    body = make_op(name, bodies, out_dtype, params)
    if not spec.boolean_result:
        body = cast_expr(body, result)
    return TensorValue(body.dtype, tensors[0].device, size, body)


def _scalar(value, dtype):
    if isinstance(value, sympy.Expr) and not value.is_Number:
        return cast_expr(IndexExpr(value), dtype)   # a size known only at run time
    if isinstance(value, sympy.Expr):
        value = int(value) if value.is_Integer else float(value)
    return scalar_const(value, dtype)


def _supported_dtypes(node) -> bool:
    val = node.meta.get("val")
    return isinstance(val, torch.Tensor) and val.dtype in SUPPORTED_DTYPES


def register_simple(name: str, *ops):
    """A one-liner for ATen ops that map argument-for-argument onto semantic op ``name``."""
    @REGISTRY.register(*ops, supports=_supported_dtypes)
    def lower(ctx, *args, **kwargs):
        return pointwise(name, *args)
    return lower


for _name, _ops in {
    "neg": [aten.neg], "abs": [aten.abs], "exp": [aten.exp], "exp2": [aten.exp2],
    "expm1": [aten.expm1], "log": [aten.log], "log2": [aten.log2], "log1p": [aten.log1p],
    "sqrt": [aten.sqrt], "rsqrt": [aten.rsqrt], "reciprocal": [aten.reciprocal],
    "sin": [aten.sin], "cos": [aten.cos], "tanh": [aten.tanh], "erf": [aten.erf],
    "sigmoid": [aten.sigmoid], "floor": [aten.floor], "ceil": [aten.ceil], "trunc": [aten.trunc],
    "relu": [aten.relu], "silu": [aten.silu], "hardsigmoid": [aten.hardsigmoid],
    "hardswish": [aten.hardswish], "sign": [aten.sign], "isnan": [aten.isnan],
    "isinf": [aten.isinf], "logical_not": [aten.logical_not], "bitwise_not": [aten.bitwise_not],
    "mul": [aten.mul.Tensor, aten.mul.Scalar], "maximum": [aten.maximum],
    "minimum": [aten.minimum], "remainder": [aten.remainder.Tensor, aten.remainder.Scalar],
    "fmod": [aten.fmod.Tensor, aten.fmod.Scalar],
    "eq": [aten.eq.Tensor, aten.eq.Scalar], "ne": [aten.ne.Tensor, aten.ne.Scalar],
    "lt": [aten.lt.Tensor, aten.lt.Scalar], "le": [aten.le.Tensor, aten.le.Scalar],
    "gt": [aten.gt.Tensor, aten.gt.Scalar], "ge": [aten.ge.Tensor, aten.ge.Scalar],
    "logical_and": [aten.logical_and], "logical_or": [aten.logical_or],
    "logical_xor": [aten.logical_xor],
    "bitwise_and": [aten.bitwise_and.Tensor, aten.bitwise_and.Scalar],
    "bitwise_or": [aten.bitwise_or.Tensor, aten.bitwise_or.Scalar],
    "bitwise_xor": [aten.bitwise_xor.Tensor, aten.bitwise_xor.Scalar],
}.items():
    register_simple(_name, *_ops)


@REGISTRY.register(aten.round.default, supports=_supported_dtypes)
def lower_round(ctx, x):
    return pointwise("round", x)


@REGISTRY.register(aten.add.Tensor, aten.add.Scalar, aten.sub.Tensor, aten.sub.Scalar,
                   supports=_supported_dtypes)
def lower_add_sub(ctx, a, b, alpha=1):
    name = "add" if ctx.node.target in (aten.add.Tensor, aten.add.Scalar) else "sub"
    if alpha != 1:
        b = pointwise("mul", b, alpha)
    return pointwise(name, a, b)


@REGISTRY.register(aten.rsub.Tensor, aten.rsub.Scalar, supports=_supported_dtypes)
def lower_rsub(ctx, a, b, alpha=1):
    return _rsub(a, b, alpha)


def _rsub(a, b, alpha):
    if alpha != 1:
        a = pointwise("mul", a, alpha)
    return pointwise("sub", b, a)


@REGISTRY.register(aten.div.Tensor, aten.div.Scalar, aten.div.Tensor_mode, aten.div.Scalar_mode,
                   supports=_supported_dtypes)
def lower_div(ctx, a, b, rounding_mode=None):
    if rounding_mode is None:
        return pointwise("truediv", a, b)
    return pointwise("div_trunc" if rounding_mode == "trunc" else "div_floor", a, b)


@REGISTRY.register(aten.floor_divide.default, aten.floor_divide.Scalar, supports=_supported_dtypes)
def lower_floor_divide(ctx, a, b):
    return pointwise("div_floor", a, b)


def _pow_ok(node) -> bool:
    """Float pow runs libdevice.pow; an integer pow only as multiplies by a small constant
    exponent (libdevice has no integer pow)."""
    if not _supported_dtypes(node):
        return False
    if node.meta["val"].dtype.is_floating_point:
        return True
    exponent = node.args[1]
    return isinstance(exponent, int) and 0 <= exponent <= 16 and isinstance(node.args[0], torch.fx.Node)


@REGISTRY.register(aten.pow.Tensor_Tensor, aten.pow.Tensor_Scalar, aten.pow.Scalar,
                   supports=_pow_ok)
def lower_pow(ctx, base, exponent):
    if is_tensor(base) and not base.dtype.is_floating_point and isinstance(exponent, int):
        base = to_dtype(base, ctx.meta_val().dtype)   # bool ** 2 is int64 in eager
        out = pointwise("mul", base, 0) if exponent == 0 else base
        out = pointwise("add", out, 1) if exponent == 0 else out
        for _ in range(max(exponent - 1, 0)):
            out = pointwise("mul", out, base)
        return out
    # Small integer exponents become multiplies, as eager's own fast paths do.
    if not is_tensor(exponent) and is_tensor(base) and base.dtype.is_floating_point:
        if exponent == 1:
            return pointwise("mul", base, 1)
        if exponent == 2:
            return pointwise("mul", base, base)
        if exponent == 0.5:
            return pointwise("sqrt", base)
        if exponent == -1:
            return pointwise("reciprocal", base)
    return pointwise("pow", base, exponent)


@REGISTRY.register(aten.gelu.default, supports=_supported_dtypes)
def lower_gelu(ctx, x, approximate="none"):
    return pointwise("gelu", x, params=(approximate,))


@REGISTRY.register(aten.leaky_relu.default, supports=_supported_dtypes)
def lower_leaky_relu(ctx, x, negative_slope=0.01):
    return pointwise("leaky_relu", x, params=(float(negative_slope),))


@REGISTRY.register(aten.clamp.default, aten.clamp.Tensor, aten.clamp_min.default,
                   aten.clamp_min.Tensor, aten.clamp_max.default, aten.clamp_max.Tensor,
                   aten.hardtanh.default, supports=_supported_dtypes)
def lower_clamp(ctx, x, lo=None, hi=None):
    target = ctx.node.target
    if target in (aten.clamp_max.default, aten.clamp_max.Tensor):
        lo, hi = None, lo
    if target == aten.hardtanh.default:
        lo = -1.0 if lo is None else lo
        hi = 1.0 if hi is None else hi
        if not x.dtype.is_floating_point:   # eager truncates the bounds to the int type
            lo, hi = int(lo), int(hi)
    _, result = promote([x, lo, hi], P.DEFAULT)
    out = to_dtype(x, result)
    if lo is not None:
        out = pointwise("maximum", out, lo)
    if hi is not None:
        out = pointwise("minimum", out, hi)
    return to_dtype(out, result)


@REGISTRY.register(aten.where.self, aten.where.ScalarSelf, aten.where.ScalarOther,
                   aten.where.Scalar, supports=_supported_dtypes)
def lower_where(ctx, cond, a, b):
    _, result = promote([a, b], P.DEFAULT)
    tensors = [t for t in (cond, a, b) if is_tensor(t)]
    size = broadcast_shapes([t.size for t in tensors])
    parts = [cast_expr(expand_to(t, size).body, dtype) if is_tensor(t) else _scalar(t, dtype)
             for t, dtype in ((cond, torch.bool), (a, result), (b, result))]
    body = Op("where", tuple(parts), result)
    return TensorValue(result, tensors[0].device, size, body)


# ----------------------------------------------------------------------------- casts, copies
@REGISTRY.register(aten._to_copy.default, supports=lambda n: _supported_dtypes(n) and _same_device(n))
def lower_to_copy(ctx, x, dtype=None, layout=None, device=None, pin_memory=None,
                  non_blocking=False, memory_format=None):
    return to_dtype(x, dtype or x.dtype, rounds=True)


@REGISTRY.register(prims.convert_element_type.default, supports=_supported_dtypes)
def lower_convert(ctx, x, dtype):
    return to_dtype(x, dtype, rounds=True)


@REGISTRY.register(aten.clone.default, aten.alias.default, aten.lift_fresh_copy.default,
                   aten.contiguous.default, supports=_supported_dtypes)
def lower_identity(ctx, x, memory_format=None):
    return x


@REGISTRY.register(aten.copy.default, supports=_supported_dtypes)
def lower_copy(ctx, dst, src, non_blocking=False):
    return to_dtype(expand_to(src, dst.size), dst.dtype, rounds=True)


def _same_device(node) -> bool:
    src = node.args[0].meta.get("val") if isinstance(node.args[0], torch.fx.Node) else None
    val = node.meta.get("val")
    return src is not None and val is not None and src.device == val.device


# ----------------------------------------------------------------------------- creation
def _filled(ctx, value) -> TensorValue:
    # the fill may be a size expression: DeBERTa's torch.tensor(min(seq, max_positions))
    val = ctx.meta_val()
    return TensorValue(val.dtype, val.device.type, ctx.meta_size(), _scalar(value, val.dtype))


@REGISTRY.register(aten.full.default, aten.scalar_tensor.default, supports=_supported_dtypes)
def lower_full(ctx, size_or_value, value=None, **kwargs):
    fill = value if ctx.node.target == aten.full.default else size_or_value
    return _filled(ctx, fill)


@REGISTRY.register(aten.full_like.default, supports=_supported_dtypes)
def lower_full_like(ctx, x, value, **kwargs):
    return _filled(ctx, value)


@REGISTRY.register(aten.zeros.default, aten.zeros_like.default, aten.empty.memory_format,
                   aten.empty_like.default, aten.new_zeros.default, aten.new_empty.default,
                   supports=_supported_dtypes)
def lower_zeros(ctx, *args, **kwargs):
    # empty() has undefined contents; zeros are a valid instance and keep results deterministic
    return _filled(ctx, 0)


@REGISTRY.register(aten.ones.default, aten.ones_like.default, aten.new_ones.default,
                   supports=_supported_dtypes)
def lower_ones(ctx, *args, **kwargs):
    return _filled(ctx, 1)


def _arange_supported(n) -> bool:
    """Integer aranges may start or step at a size expression (``arange(s, 2 * s)``); a
    floating one computes in double from literal bounds only (eager's rounding)."""
    if not _supported_dtypes(n) or n.kwargs.get("dtype") in (torch.bool,):
        return False
    symbolic = any(isinstance(a, torch.fx.Node) for a in _arange_start_step(n.args))
    return not (symbolic and n.meta["val"].dtype.is_floating_point)


def _arange_start_step(args) -> tuple:
    """(start, step) of ``arange.default(end)``, ``.start(start, end)``,
    ``.start_step(start, end, step)``: positions, not types, since a bound may be a size."""
    return (0, 1) if len(args) == 1 else (args[0], args[2] if len(args) > 2 else 1)


@REGISTRY.register(aten.arange.start_step, aten.arange.start, aten.arange.default,
                   supports=_arange_supported)
def lower_arange(ctx, *args, **kwargs):
    val = ctx.meta_val()
    start, step = _arange_start_step(args)
    i0 = ctx.index_symbols(1)[0]
    if not val.dtype.is_floating_point:   # eager casts the bounds to the int dtype first
        start, step = (b if isinstance(b, sympy.Expr) else int(b) for b in (start, step))
    if val.dtype.is_floating_point or isinstance(start, float) or isinstance(step, float):
        # eager computes start + i * step in double, then casts
        idx = Op("to_dtype", (IndexExpr(i0),), torch.float64, (True,))
        body = make_op("add", (make_op("mul", (idx, Const(float(step), torch.float64)), torch.float64),
                               Const(float(start), torch.float64)), torch.float64)
        body = cast_expr(body, val.dtype, rounds=True)
    else:   # a size expression (sympy) is an int index expression as it is
        body = cast_expr(IndexExpr(step * i0 + start), val.dtype)
    return TensorValue(val.dtype, val.device.type, ctx.meta_size(), body)


# ----------------------------------------------------------------------------- more ops
for _name, _ops in {
    "atan": [aten.atan.default], "asin": [aten.asin.default], "acos": [aten.acos.default],
    "tan": [aten.tan.default], "sinh": [aten.sinh.default], "cosh": [aten.cosh.default],
    "asinh": [aten.asinh.default], "acosh": [aten.acosh.default], "atanh": [aten.atanh.default],
    "log10": [aten.log10.default], "erfc": [aten.erfc.default], "erfinv": [aten.erfinv.default],
    "erfcx": [aten.special_erfcx.default], "lgamma": [aten.lgamma.default],
    "i0": [aten.i0.default], "atan2": [aten.atan2.default], "hypot": [aten.hypot.default],
    "copysign": [aten.copysign.Tensor, aten.copysign.Scalar], "fmax": [aten.fmax.default],
    "fmin": [aten.fmin.default], "signbit": [aten.signbit.default],
    "remainder": [aten.remainder.Scalar_Tensor], "bitwise_and": [aten.bitwise_and.Scalar_Tensor],
    "bitwise_or": [aten.bitwise_or.Scalar_Tensor], "bitwise_xor": [aten.bitwise_xor.Scalar_Tensor],
}.items():
    register_simple(_name, *_ops)


def _integer_result(node) -> bool:
    val = node.meta.get("val")
    return _supported_dtypes(node) and not val.dtype.is_floating_point and val.dtype != torch.bool


@REGISTRY.register(aten.__lshift__.Tensor, aten.__lshift__.Scalar, aten.bitwise_left_shift.Tensor,
                   aten.bitwise_left_shift.Tensor_Scalar, aten.bitwise_left_shift.Scalar_Tensor,
                   supports=_integer_result)
def lower_lshift(ctx, a, b):
    return pointwise("lshift", a, b)


@REGISTRY.register(aten.__rshift__.Tensor, aten.__rshift__.Scalar, aten.bitwise_right_shift.Tensor,
                   aten.bitwise_right_shift.Tensor_Scalar, aten.bitwise_right_shift.Scalar_Tensor,
                   supports=_integer_result)
def lower_rshift(ctx, a, b):
    return pointwise("rshift", a, b)


def _floating_result(node) -> bool:
    return _supported_dtypes(node) and node.meta["val"].dtype.is_floating_point


@REGISTRY.register(aten.elu.default, supports=_floating_result)
def lower_elu(ctx, x, alpha=1, scale=1, input_scale=1):
    # eager's coefficients, formed in opmath: negcoef = alpha * scale (SELU's product too)
    coef = torch.float64 if x.dtype == torch.float64 else torch.float32
    neg = (torch.tensor(float(alpha), dtype=coef) * torch.tensor(float(scale), dtype=coef)).item()
    return pointwise("elu", x, params=(neg, float(scale), float(input_scale)))


@REGISTRY.register(aten.round.decimals, supports=_floating_result)
def lower_round_decimals(ctx, x, decimals=0):
    # eager: nearbyint(x * 10^d) / 10^d, or nearbyint(x / 10^-d) * 10^-d for d < 0. Its CPU
    # kernel computes in float; its CUDA kernel in the input's type, so for half types there
    # 10^d and the scaled value are rounded to that type before nearbyint.
    if decimals == 0:
        return pointwise("round", x)
    op, undo = ("mul", "truediv") if decimals > 0 else ("truediv", "mul")
    ten = float(10 ** abs(decimals))
    if ctx.target_device == "cuda" and x.dtype in (torch.float16, torch.bfloat16):
        ten = torch.tensor(ten, dtype=x.dtype).item()
        scaled = to_dtype(pointwise(op, to_dtype(x, torch.float32), ten), x.dtype, rounds=True)
    else:
        scaled = pointwise(op, x, ten)
    return pointwise(undo, pointwise("round", scaled), ten)


@REGISTRY.register(aten.ldexp.Tensor, supports=_floating_result)
def lower_ldexp(ctx, x, other):
    # x * 2^other is exact in float32, so one rounding to eager's result dtype matches it
    return to_dtype(pointwise("mul", x, pointwise("pow", 2.0, other)), ctx.meta_val().dtype)


@REGISTRY.register(prims.scalar_tensor.default, supports=_supported_dtypes)
def lower_prims_scalar_tensor(ctx, value, dtype=None, device=None):
    return _filled(ctx, value)
