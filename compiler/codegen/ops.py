"""Per-op Triton snippets (tinygrad's ``code_for_op``): semantic op -> expression text.

Each entry takes the argument expressions (already CSE'd variable names), the ``Op`` (for
its dtype, its arguments' dtypes and literal params) and returns one Triton expression.
Values of float16/bfloat16 dtype are held in float32 inside kernels; only explicit casts
round (``to_dtype`` with ``rounds``), the way eager rounds at a user's ``.to()``.

``libdevice`` is bound by the runtime: CUDA's libdevice on GPUs, a NumPy shim under the
interpreter (Triton's interpreter has no extern calls).

Example:
    >>> import torch
    >>> from compiler.ir import Op, OpName
    >>> OP_CODE[OpName.ADD](["tmp0", "tmp1"], Op("add", (), torch.float32))
    '(tmp0 + tmp1)'
"""
from __future__ import annotations

import math

import torch

from ..ir import Const, Op, OpName

TL_DTYPES = {
    torch.float32: "tl.float32", torch.float16: "tl.float16", torch.bfloat16: "tl.bfloat16",
    torch.float64: "tl.float64", torch.int8: "tl.int8", torch.int16: "tl.int16",
    torch.int32: "tl.int32", torch.int64: "tl.int64", torch.uint8: "tl.uint8",
    torch.bool: "tl.int1",
}
HALF_TYPES = (torch.float16, torch.bfloat16)


def compute_type(dtype: torch.dtype) -> str:
    """The Triton type a value of ``dtype`` is held in inside a kernel."""
    return "tl.float32" if dtype in HALF_TYPES else TL_DTYPES[dtype]


def literal(value, dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "True" if value else "False"
    if dtype.is_floating_point:
        value = float(value)
        if math.isnan(value):
            return 'float("nan")'
        if math.isinf(value):
            return 'float("inf")' if value > 0 else 'float("-inf")'
        return repr(value)
    return str(int(value))


# Boolean logic as selects, not `&`, `|`, `^`: Triton's interpreter gives a comparison of
# scalars (a 0-d input, a broadcast value) its operands' type, so broadcasting it to a block
# turns it into floats that NumPy's bitwise ufuncs refuse. A select is the same on GPUs.
def _and(x: str, y: str) -> str:
    return f"tl.where({x}, {y}, False)"


def _or(x: str, y: str) -> str:
    return f"tl.where({x}, True, {y})"


def _xor(x: str, y: str) -> str:
    return f"tl.where({x}, {y} == 0, {y} != 0)"


def _is_float(op: Op, k: int = 0) -> bool:
    return op.args[k].dtype.is_floating_point if op.args else op.dtype.is_floating_point


def _to_dtype(a, op):
    src = op.args[0].dtype
    rounds = op.params and op.params[0]
    if op.dtype in HALF_TYPES:
        # held in float32; an explicit cast rounds through the narrow type like eager
        inner = f"{a[0]}.to({TL_DTYPES[op.dtype]})" if rounds else a[0]
        return f"{inner}.to(tl.float32)"
    if op.dtype == torch.bool:
        return f"({a[0]} != 0)"
    if src == torch.bool:
        return f"{a[0]}.to({TL_DTYPES[op.dtype]})"
    return f"{a[0]}.to({TL_DTYPES[op.dtype]})"


def _maximum(a, op):
    # NaN-propagating, like torch.maximum (Triton's default max drops NaNs); nested wheres,
    # not `|`, because the interpreter cannot `|` a scalar bool with a block
    if _is_float(op):
        return f"tl.where({a[0]} != {a[0]}, {a[0]}, tl.where({a[0]} > {a[1]}, {a[0]}, {a[1]}))"
    return f"tl.maximum({a[0]}, {a[1]})"


def _minimum(a, op):
    if _is_float(op):
        return f"tl.where({a[0]} != {a[0]}, {a[0]}, tl.where({a[0]} < {a[1]}, {a[0]}, {a[1]}))"
    return f"tl.minimum({a[0]}, {a[1]})"


def _div_floor(a, op):
    if _is_float(op):
        # eager's div_floor_floating: from fmod, not floor(a / b), which rounds a quotient
        # like 1 / 0.1 up onto 10 before flooring it
        x, y = a
        m = f"libdevice.fmod({x}, {y})"
        q = f"({x} - {m}) / {y}"   # nested wheres, not &: the interpreter cannot & a scalar
        d = f"tl.where({m} != 0, tl.where(({y} < 0) != ({m} < 0), {q} - 1.0, {q}), {q})"
        f = f"tl.where({d} - tl.floor({d}) > 0.5, tl.floor({d}) + 1.0, tl.floor({d}))"
        zero = f"tl.where({x} / {y} < 0, -0.0, 0.0)"
        return f"tl.where({y} == 0, {x} / {y}, tl.where({d} != 0, {f}, {zero}))"
    # Triton's // truncates; Python/torch floor toward -inf
    q = f"({a[0]} // {a[1]})"
    fix = _and(f"({a[0]} % {a[1]}) != 0", f"({a[0]} < 0) != ({a[1]} < 0)")
    return f"tl.where({fix}, {q} - 1, {q})"


def _div_trunc(a, op):
    return f"libdevice.trunc({a[0]} / {a[1]})" if _is_float(op) else f"({a[0]} // {a[1]})"


def _remainder(a, op):
    if _is_float(op):   # eager: fmod, moved into the divisor's sign
        m = f"libdevice.fmod({a[0]}, {a[1]})"
        return f"tl.where({m} != 0, tl.where(({a[1]} < 0) != ({m} < 0), {m} + {a[1]}, {m}), {m})"
    r = f"({a[0]} % {a[1]})"
    return f"tl.where({_and(f'{r} != 0', f'({r} < 0) != ({a[1]} < 0)')}, {r} + {a[1]}, {r})"


def _gelu(a, op):
    x = a[0]
    if op.params and op.params[0] == "tanh":
        inner = f"0.7978845608028654 * ({x} + 0.044715 * {x} * {x} * {x})"
        return f"(0.5 * {x} * (1.0 + libdevice.tanh({inner})))"
    return f"(0.5 * {x} * (1.0 + tl.erf({x} * 0.7071067811865476)))"


def _sign(a, op):
    x = a[0]
    if op.dtype == torch.bool:
        return x
    return f"(({x} > 0).to({compute_type(op.dtype)}) - ({x} < 0).to({compute_type(op.dtype)}))"


def _signbit(a, op):
    src = op.args[0].dtype
    if src == torch.float64:
        return f"({a[0]}.to(tl.int64, bitcast=True) < 0)"
    if src.is_floating_point:   # half types are held in float32: same sign bit
        return f"({a[0]}.to(tl.int32, bitcast=True) < 0)"
    if src == torch.bool or not src.is_signed:
        return f"({a[0]} != {a[0]})"   # always False, in the argument's shape
    return f"({a[0]} < 0)"


def _fmax_fmin(cmp):
    def code(a, op):
        # NaN-ignoring: the other argument wins over a NaN (eager's fmax/fmin)
        if _is_float(op):
            return f"tl.where({_or(f'{a[1]} != {a[1]}', f'{a[0]} {cmp} {a[1]}')}, {a[0]}, {a[1]})"
        return f"tl.{'maximum' if cmp == '>' else 'minimum'}({a[0]}, {a[1]})"
    return code


def _elu(a, op):
    neg, pos, in_scale = op.params
    x = a[0]
    return (f"tl.where({x} <= 0, libdevice.expm1({x} * {in_scale!r}) * {neg!r}, "
            f"{x} * {pos!r})")


def _shift_amount(op):
    """The shift amount when it is a literal, else None."""
    b = op.args[1]
    return int(b.value) if isinstance(b, Const) else None


def _lshift(a, op):
    # eager: amounts outside [0, bits) shift everything out (LLVM would give poison)
    bits = torch.iinfo(op.dtype).bits
    k = _shift_amount(op)
    if k is not None:
        return f"({a[0]} << {k})" if 0 <= k < bits else f"({a[0]} * 0)"
    return f"tl.where({_or(f'{a[1]} < 0', f'{a[1]} >= {bits}')}, 0, {a[0]} << {a[1]})"


def _rshift(a, op):
    # eager: signed values shift by at most bits - 1 (sign fill), unsigned ones to 0
    bits = torch.iinfo(op.dtype).bits
    k = _shift_amount(op)
    if op.dtype.is_signed:
        if k is not None:
            return f"({a[0]} >> {bits - 1 if k < 0 or k > bits - 1 else k})"
        out_of_range = _or(f"{a[1]} < 0", f"{a[1]} > {bits - 1}")
        return f"({a[0]} >> tl.where({out_of_range}, {bits - 1}, {a[1]}))"
    if k is not None:
        return f"({a[0]} >> {k})" if 0 <= k < bits else f"({a[0]} * 0)"
    return f"tl.where({a[1]} >= {bits}, 0, {a[0]} >> {a[1]})"


def _libdevice(name: str):
    return lambda a, op: f"libdevice.{name}({', '.join(a)})"


def _bitwise(logic, operator: str):
    """An integer bitwise op; on bools the select form (``_and``), which the interpreter
    runs on scalar comparisons too."""
    def code(a, op):
        return logic(a[0], a[1]) if op.dtype == torch.bool else f"({a[0]} {operator} {a[1]})"
    return code


# One snippet per ``OpName`` that computes a value (pseudo-ops are the emitters' business).
OP_CODE = {
    # bool + bool is logical or in eager; int1 arithmetic would wrap (True + True == False)
    OpName.ADD: lambda a, op: _or(a[0], a[1]) if op.dtype == torch.bool else f"({a[0]} + {a[1]})",
    OpName.SUB: lambda a, op: f"({a[0]} - {a[1]})",
    OpName.MUL: lambda a, op: _and(a[0], a[1]) if op.dtype == torch.bool else f"({a[0]} * {a[1]})",
    OpName.TRUEDIV: lambda a, op: f"({a[0]} / {a[1]})",
    OpName.DIV_FLOOR: _div_floor,
    OpName.DIV_TRUNC: _div_trunc,
    OpName.REMAINDER: _remainder,
    OpName.FMOD: lambda a, op: f"libdevice.fmod({a[0]}, {a[1]})" if _is_float(op) else f"({a[0]} % {a[1]})",
    OpName.NEG: lambda a, op: f"(-{a[0]})",
    OpName.ABS: lambda a, op: f"tl.abs({a[0]})",
    OpName.MAXIMUM: _maximum,
    OpName.MINIMUM: _minimum,
    OpName.POW: lambda a, op: f"libdevice.pow({a[0]}, {a[1]})",
    OpName.SIGN: _sign,
    OpName.RECIPROCAL: lambda a, op: f"(1.0 / {a[0]})",
    OpName.EXP: lambda a, op: f"tl.exp({a[0]})",
    OpName.EXP2: lambda a, op: f"tl.exp2({a[0]})",
    OpName.EXPM1: lambda a, op: f"libdevice.expm1({a[0]})",
    OpName.LOG: lambda a, op: f"tl.log({a[0]})",
    OpName.LOG2: lambda a, op: f"tl.log2({a[0]})",
    OpName.LOG1P: lambda a, op: f"libdevice.log1p({a[0]})",
    OpName.SQRT: lambda a, op: f"tl.sqrt_rn({a[0]})" if op.dtype != torch.float64 else f"tl.sqrt({a[0]})",
    OpName.RSQRT: lambda a, op: f"tl.rsqrt({a[0]})",
    OpName.SIN: lambda a, op: f"tl.sin({a[0]})",
    OpName.COS: lambda a, op: f"tl.cos({a[0]})",
    OpName.TANH: lambda a, op: f"libdevice.tanh({a[0]})",
    OpName.ERF: lambda a, op: f"tl.erf({a[0]})",
    # tl.sigmoid is a @jit helper the interpreter can't call: spell it out
    OpName.SIGMOID: lambda a, op: f"(1.0 / (1.0 + tl.exp(-{a[0]})))",
    OpName.FLOOR: lambda a, op: f"tl.floor({a[0]})" if _is_float(op) else a[0],
    OpName.CEIL: lambda a, op: f"tl.ceil({a[0]})" if _is_float(op) else a[0],
    OpName.ROUND: lambda a, op: f"libdevice.nearbyint({a[0]})" if _is_float(op) else a[0],
    OpName.TRUNC: lambda a, op: f"libdevice.trunc({a[0]})" if _is_float(op) else a[0],
    OpName.RELU: lambda a, op: f"tl.where({a[0]} < 0, 0, {a[0]})",
    OpName.GELU: _gelu,
    OpName.SILU: lambda a, op: f"({a[0]} / (1.0 + tl.exp(-{a[0]})))",
    OpName.HARDSIGMOID: lambda a, op: f"(tl.minimum(tl.maximum({a[0]} + 3.0, 0.0), 6.0) / 6.0)",
    OpName.HARDSWISH: lambda a, op: f"({a[0]} * tl.minimum(tl.maximum({a[0]} + 3.0, 0.0), 6.0) / 6.0)",
    OpName.LEAKY_RELU: lambda a, op: f"tl.where({a[0]} > 0, {a[0]}, {a[0]} * {op.params[0]!r})",
    OpName.EQ: lambda a, op: f"({a[0]} == {a[1]})",
    OpName.NE: lambda a, op: f"({a[0]} != {a[1]})",
    OpName.LT: lambda a, op: f"({a[0]} < {a[1]})",
    OpName.LE: lambda a, op: f"({a[0]} <= {a[1]})",
    OpName.GT: lambda a, op: f"({a[0]} > {a[1]})",
    OpName.GE: lambda a, op: f"({a[0]} >= {a[1]})",
    OpName.ISNAN: lambda a, op: f"({a[0]} != {a[0]})",
    OpName.ISINF: lambda a, op: f"(tl.abs({a[0]}) == float(\"inf\"))" if _is_float(op) else "False",
    OpName.LOGICAL_NOT: lambda a, op: f"({a[0]} == 0)",
    OpName.LOGICAL_AND: lambda a, op: f"tl.where({a[0]} != 0, {a[1]} != 0, False)",
    OpName.LOGICAL_OR: lambda a, op: f"tl.where({a[0]} != 0, True, {a[1]} != 0)",
    OpName.LOGICAL_XOR: lambda a, op: _xor(f"{a[0]} != 0", f"({a[1]} != 0)"),
    OpName.BITWISE_AND: _bitwise(_and, "&"),
    OpName.BITWISE_OR: _bitwise(_or, "|"),
    OpName.BITWISE_XOR: _bitwise(_xor, "^"),
    OpName.BITWISE_NOT: lambda a, op: f"({a[0]} == 0)" if op.dtype == torch.bool else f"(~{a[0]})",
    OpName.WHERE: lambda a, op: f"tl.where({a[0]}, {a[1]}, {a[2]})",
    OpName.TO_DTYPE: _to_dtype,
    **{OpName(name): _libdevice(name) for name in (
        "atan", "asin", "acos", "tan", "sinh", "cosh", "asinh", "acosh", "atanh", "log10",
        "erfc", "erfinv", "erfcx", "lgamma", "atan2", "hypot", "copysign")},
    OpName.I0: _libdevice("cyl_bessel_i0"),
    OpName.SIGNBIT: _signbit,
    OpName.FMAX: _fmax_fmin(">"),
    OpName.FMIN: _fmax_fmin("<"),
    OpName.ELU: _elu,
    OpName.LSHIFT: _lshift,
    OpName.RSHIFT: _rshift,
}
