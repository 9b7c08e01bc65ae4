"""The op table the lowering tests run: every op family kiln lowers × shapes × dtypes.

One ``OpCase`` is a Python function of tensors calling torch ops, how to draw each input
(domain, dtype, layout) and which shapes to draw them at. ``tests/test_ops.py`` traces each
case with ``make_fx``, compiles it with ``compiler.compile_fx`` and compares against eager on
fresh random inputs; the GPU run (``-m gpu``) uses the same table in float32/float16/bfloat16.

``UNLOWERED`` lists ops kiln does *not* lower (they must fall back to ATen with a warning and
still give eager's result), so what is unsupported is written down rather than hidden.
``KNOWN_BUGS`` holds the compiler bugs this table found; each one turns the matching cases
into strict xfails until the lead fixes the bug and deletes the entry.

Example:
    >>> case = CASES["add_alpha"]
    >>> [s.label() for s in case.shapes[0]]
    ['7', '7']
    >>> gen = torch.Generator().manual_seed(0)
    >>> [tuple(t.shape) for t in make_inputs(case, case.shapes[0], torch.float32, "cpu", gen)]
    [(7,), (7,)]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------- inputs
# Shapes, layouts and value domains live in optable_inputs.py (kept apart for size).
from optable_inputs import Arg, S, Shape, ST, T, generator, make_inputs, make_tensor  # noqa: E402,F401


# ----------------------------------------------------------------------------- shape sets
# Unary: 0-d, size-1, odd 1-D, odd 2-D, a size-1 middle dim, transposed and step-sliced
# (non-contiguous) inputs. BIG1/BIG2 add one larger odd shape, so masking runs across
# several blocks (kept to a few cases: the interpreter is slow on big shapes).
UNARY = ((S(),), (S(1),), (S(7),), (S(33, 17),), (S(4, 1, 9),), (T(17, 33),), (ST(5, 12),))
UNARY_LITE = ((S(33, 17),), (T(9, 13),))
BIG1 = ((S(257, 131),),)
# Binary: same shapes, broadcasting both ways, 0-d with a tensor, non-contiguous operands.
BINARY = ((S(), S()), (S(7), S(7)), (S(33, 17), S(33, 17)), (S(5, 1), S(1, 6)),
          (S(4, 1, 9), S(9)), (S(), S(7)), (T(17, 33), S(17, 33)), (ST(6, 5), T(6, 5)))
BINARY_LITE = ((S(33, 17), S(33, 17)), (S(5, 1), S(1, 6)), (T(9, 13), S(13)))
BIG2 = ((S(257, 131), S(257, 131)), (T(257, 131), S(131)))
TERNARY = ((S(5, 1), S(1, 6), S(5, 6)), (S(33, 17), S(33, 17), S(33, 17)),
           (S(4, 1, 9), S(9), T(4, 3, 9)))


# ----------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class OpCase:
    """One table entry.

    ``kernels``: "some" (a pointwise op must generate >= 1 kernel), "none" (a pure view or a
    returned input: 0 kernels, and the output aliases an input), "copy" (like eager, the
    output is a new tensor, never an input's storage), "any" (not checked). ``tol``: "exact" (bit-identical),
    "default", "approx" (transcendentals, where libdevice / NumPy may differ from ATen by
    an ulp or two) or "long" (long chains, which eager rounds after every op in half types).
    """
    name: str
    fn: Callable
    args: tuple[Arg, ...]
    shapes: tuple[tuple[Shape, ...], ...]
    kernels: str = "some"
    tol: str = "default"
    float_dtypes: tuple[torch.dtype, ...] = FLOAT_DTYPES
    family: str = ""        # the table section: pointwise, cast, creation, view, reduction, ...

    @property
    def uses_float_dtype(self) -> bool:
        """Whether any input takes the case's float dtype (else one run covers every dtype)."""
        return any(a.dtype is None for a in self.args)


CASE_LIST: list[OpCase] = []
_family = "pointwise"


def section(family: str) -> None:
    """The family of the cases that follow."""
    global _family
    _family = family


def case(name, fn, args=(Arg(),), shapes=UNARY, **kw) -> None:
    args = tuple(args)
    if any(len(shape_set) != len(args) for shape_set in shapes):
        raise ValueError(f"{name}: {len(args)} args but a shape set of another length")
    CASE_LIST.append(OpCase(name, fn, args, tuple(shapes), family=_family, **kw))


X, P, NZ, PW2 = Arg(), Arg("positive"), Arg("nonzero"), Arg("pow2")
SPECIAL = Arg("special")
I32, I64 = Arg("int", torch.int32), Arg("int", torch.int64)
I64NZ = Arg("intnz", torch.int64)
BOOL = Arg("bool", torch.bool)

# --- arithmetic
case("add", torch.add, (X, X), BINARY + BIG2)
case("add_alpha", lambda a, b: torch.add(a, b, alpha=2), (X, X), ((S(7), S(7)),) + BINARY_LITE)
case("add_scalar", lambda a: a + 1.5)
case("sub", torch.sub, (X, X), BINARY)
case("sub_alpha", lambda a, b: torch.sub(a, b, alpha=0.5), (X, X), BINARY_LITE)
case("rsub_scalar", lambda a: 3 - a, shapes=UNARY_LITE)
case("mul", torch.mul, (X, X), BINARY)
case("mul_scalar", lambda a: a * -2.5, shapes=UNARY_LITE)
case("div", torch.div, (X, NZ), BINARY)
case("div_scalar", lambda a: a / 3.0, shapes=UNARY_LITE)
# power-of-two divisors here too: for bfloat16 CUDA eager truncates the quotient rounded to
# bfloat16 (1 / bf16(1/3) -> 3) where CPU eager and kiln truncate the float32 one (-> 2)
case("div_trunc", lambda a, b: torch.div(a, b, rounding_mode="trunc"), (X, PW2), BINARY)
# Floor division and remainder draw power-of-two divisors, so the quotient is exact and a
# random draw cannot land on the rounding case; *_inexact below covers that case on purpose.
case("div_floor", lambda a, b: torch.div(a, b, rounding_mode="floor"), (X, PW2), BINARY)
case("floor_divide", torch.floor_divide, (X, PW2), BINARY_LITE)
case("floor_divide_scalar", lambda a: torch.floor_divide(a, -0.75), shapes=UNARY_LITE)
# 1.0 // 0.1 is 9 in eager (and Python): the exact quotient is just under 10, though the
# float32 quotient 1.0 / 0.1 rounds to 10.0
case("div_floor_inexact", lambda a: torch.div(a, 0.1, rounding_mode="floor"),
     (Arg("intvalued"),), UNARY_LITE, tol="exact")
case("remainder_inexact", lambda a: torch.remainder(a, 0.1), (Arg("intvalued"),), UNARY_LITE)
case("remainder", torch.remainder, (X, PW2), BINARY, tol="approx")
case("remainder_scalar", lambda a: torch.remainder(a, 1.5), shapes=UNARY_LITE, tol="approx")
case("fmod", torch.fmod, (X, NZ), BINARY, tol="approx")
case("fmod_scalar", lambda a: torch.fmod(a, -1.25), shapes=UNARY_LITE, tol="approx")
case("neg", torch.neg, tol="exact")
case("abs", torch.abs, tol="exact")
case("maximum", torch.maximum, (X, X), BINARY, tol="exact")
case("minimum", torch.minimum, (X, X), BINARY, tol="exact")
case("maximum_nan", torch.maximum, (SPECIAL, SPECIAL), BINARY_LITE, tol="exact")
case("minimum_nan", torch.minimum, (SPECIAL, SPECIAL), BINARY_LITE, tol="exact")
case("pow_2", lambda a: torch.pow(a, 2))
case("pow_0.5", lambda a: torch.pow(a, 0.5), (P,))
case("pow_3.0", lambda a: torch.pow(a, 3.0), tol="approx")
case("pow_neg1", lambda a: torch.pow(a, -1), (NZ,), shapes=UNARY_LITE)
case("pow_1.7", lambda a: torch.pow(a, 1.7), (P,), shapes=UNARY_LITE, tol="approx")
case("pow_tensor", torch.pow, (P, X), BINARY, tol="approx")
case("pow_scalar_base", lambda a: torch.pow(2.0, a), shapes=UNARY_LITE, tol="approx")
case("sign", torch.sign, (Arg("intvalued"),), tol="exact")
case("reciprocal", torch.reciprocal, (NZ,))

# --- integer arithmetic (eager's integer semantics: floor division, sign of remainder)
case("add_int", torch.add, (I64, I32), BINARY_LITE, tol="exact")
case("mul_int_scalar", lambda a: a * 3, (I32,), UNARY_LITE, tol="exact")
case("neg_abs_int", lambda a: (torch.neg(a), torch.abs(a)), (I64,), UNARY_LITE, tol="exact")
case("maximum_int", torch.maximum, (I32, I32), BINARY_LITE, tol="exact")
case("div_int", torch.div, (I64, I64NZ), BINARY_LITE)   # true division promotes to float
case("div_trunc_int", lambda a, b: torch.div(a, b, rounding_mode="trunc"), (I64, I64NZ),
     BINARY_LITE, tol="exact")
case("floor_divide_int", torch.floor_divide, (I64, I64NZ), BINARY_LITE, tol="exact")
case("remainder_int", torch.remainder, (I64, I64NZ), BINARY_LITE, tol="exact")
case("fmod_int", torch.fmod, (I64, I64NZ), BINARY_LITE, tol="exact")
# integer pow lowers as multiplies by a constant exponent (libdevice has no integer pow);
# a tensor of integer exponents falls back (UNLOWERED)
case("pow_int", lambda a: torch.pow(a, 3), (I64,), UNARY_LITE, tol="exact")
case("add_int_float", torch.add, (I64, X), BINARY_LITE)   # int + float promotes

# --- math (transcendentals: libdevice on GPU, NumPy under the interpreter)
case("exp", torch.exp, tol="approx")
case("exp2", torch.exp2, tol="approx")
case("expm1", torch.expm1, tol="approx")
case("log", torch.log, (P,), tol="approx")
case("log2", torch.log2, (P,), tol="approx")
case("log1p", torch.log1p, (Arg("gt_minus1"),), tol="approx")
case("sqrt", torch.sqrt, (P,), shapes=UNARY + BIG1, tol="approx")
case("rsqrt", torch.rsqrt, (P,), tol="approx")
case("sin", torch.sin, tol="approx")
case("cos", torch.cos, tol="approx")
case("tanh", torch.tanh, tol="approx")
case("erf", torch.erf, tol="approx")
case("sigmoid", torch.sigmoid, tol="approx")
case("exp_int", torch.exp, (Arg("int", torch.int32),), UNARY_LITE, tol="approx")  # int -> float
case("floor", torch.floor, (Arg("halves"),), tol="exact")
case("ceil", torch.ceil, (Arg("halves"),), tol="exact")
case("round", torch.round, (Arg("halves"),), tol="exact")     # ties to even
case("trunc", torch.trunc, (Arg("halves"),), tol="exact")
case("floor_int", torch.floor, (I64,), UNARY_LITE, tol="exact")
case("round_decimals", lambda a, w: (torch.round(a, decimals=2), torch.round(w, decimals=-1)),
     (X, Arg("wide")), ((S(33, 17), S(33, 17)), (T(9, 13), S(13))))
UNIT = Arg("unit")
for _name, _fn, _arg in (("atan", torch.atan, X), ("asin", torch.asin, UNIT),
                         ("acos", torch.acos, UNIT), ("tan", torch.tan, UNIT),
                         ("sinh", torch.sinh, X), ("cosh", torch.cosh, X),
                         ("asinh", torch.asinh, X), ("acosh", torch.acosh, Arg("ge1")),
                         ("atanh", torch.atanh, UNIT), ("log10", torch.log10, P),
                         ("erfc", torch.erfc, X), ("erfinv", torch.erfinv, UNIT),
                         ("lgamma", torch.lgamma, P), ("i0", torch.i0, X)):
    case(_name, _fn, (_arg,), UNARY_LITE + ((S(7),),), tol="approx")
# eager CUDA has no float16 / bfloat16 erfcx kernel
case("erfcx", torch.special.erfcx, (X,), UNARY_LITE + ((S(7),),), tol="approx",
     float_dtypes=(torch.float32,))
case("atan2", torch.atan2, (X, X), BINARY_LITE, tol="approx")
case("hypot", torch.hypot, (X, X), BINARY_LITE, tol="approx")
case("copysign", torch.copysign, (X, SPECIAL), BINARY_LITE, tol="exact")
case("copysign_scalar", lambda a: torch.copysign(a, -1.0), shapes=UNARY_LITE, tol="exact")
case("fmax_nan", torch.fmax, (SPECIAL, SPECIAL), BINARY_LITE, tol="exact")   # NaN-ignoring
case("fmin_nan", torch.fmin, (SPECIAL, SPECIAL), BINARY_LITE, tol="exact")
case("signbit", torch.signbit, (SPECIAL,), UNARY_LITE)
case("elu", F.elu, shapes=UNARY_LITE, tol="approx")
case("elu_alpha", lambda a: F.elu(a, alpha=0.3), shapes=UNARY_LITE, tol="approx")
case("selu", F.selu, shapes=UNARY_LITE, tol="approx")
case("ldexp", torch.ldexp, (X, Arg("smallpos", torch.int32)), BINARY_LITE)
case("remainder_scalar_tensor", lambda b: torch.remainder(2.5, b), (PW2,), UNARY_LITE,
     tol="approx")

# --- activations
case("relu", torch.relu, shapes=UNARY + BIG1, tol="exact")
case("relu_nan", torch.relu, (SPECIAL,), UNARY_LITE, tol="exact")
case("gelu", F.gelu, tol="approx")
case("gelu_tanh", lambda a: F.gelu(a, approximate="tanh"), tol="approx")
case("silu", F.silu, tol="approx")
case("hardsigmoid", F.hardsigmoid)
case("hardswish", F.hardswish)
case("leaky_relu", F.leaky_relu, tol="exact")
case("leaky_relu_slope", lambda a: F.leaky_relu(a, 0.2), shapes=UNARY_LITE)
case("hardtanh", F.hardtanh, tol="exact")
case("hardtanh_bounds", lambda a: F.hardtanh(a, -0.5, 2.0), shapes=UNARY_LITE, tol="exact")
case("clamp", lambda a: torch.clamp(a, -0.5, 0.75), tol="exact")
case("clamp_min", lambda a: torch.clamp(a, min=0.25), shapes=UNARY_LITE, tol="exact")
case("clamp_max", lambda a: torch.clamp(a, max=-0.25), shapes=UNARY_LITE, tol="exact")
case("clamp_tensor", lambda a, lo, hi: torch.clamp(a, lo, hi), (X, X, X), TERNARY, tol="exact")
case("clamp_min_tensor", lambda a, lo: torch.clamp(a, min=lo), (X, X), BINARY_LITE, tol="exact")
case("clamp_max_tensor", lambda a, hi: torch.clamp(a, max=hi), (X, X), BINARY_LITE, tol="exact")
case("clamp_min_fn", lambda a, lo: (torch.clamp_min(a, -0.5), torch.clamp_min(a, lo)), (X, X),
     ((S(33, 17), S(17)),), tol="exact")
case("clamp_max_fn", lambda a, hi: (torch.clamp_max(a, 0.5), torch.clamp_max(a, hi)), (X, X),
     ((S(5, 1), S(1, 6)),), tol="exact")
case("clamp_nan", lambda a: torch.clamp(a, -1.0, 1.0), (SPECIAL,), UNARY_LITE, tol="exact")
case("clamp_int", lambda a: torch.clamp(a, -5, 7), (I64,), UNARY_LITE, tol="exact")

# --- where (tensor / scalar mixes)
case("where", torch.where, (BOOL, X, X), TERNARY, tol="exact")
case("where_scalar_other", lambda c, a: torch.where(c, a, -1.0), (BOOL, X), BINARY_LITE, tol="exact")
case("where_scalar_self", lambda c, b: torch.where(c, 2.0, b), (BOOL, X), BINARY_LITE, tol="exact")
case("where_scalars", lambda c: torch.where(c, 2.0, -3.0), (BOOL,), UNARY_LITE, tol="exact")
case("where_mixed_dtype", torch.where, (BOOL, X, I64), TERNARY, tol="exact")
case("where_from_compare", lambda a, b: torch.where(a > b, a, b * 2), (X, X), BINARY_LITE, tol="exact")

# --- comparisons (int-valued floats, so equal pairs occur), tensor and scalar right sides
IV = Arg("intvalued")
for _name, _fn in (("eq", torch.eq), ("ne", torch.ne), ("lt", torch.lt), ("le", torch.le),
                   ("gt", torch.gt), ("ge", torch.ge)):
    case(_name, _fn, (IV, IV), BINARY)
    case(f"{_name}_scalar", lambda a, _fn=_fn: _fn(a, 1.0), (IV,), UNARY_LITE)
case("eq_int_float", torch.eq, (Arg("intvalued", torch.int64), IV), BINARY_LITE)
case("isnan", torch.isnan, (SPECIAL,))
case("isinf", torch.isinf, (SPECIAL,))
case("isinf_int", torch.isinf, (I32,), UNARY_LITE)

# --- logic and bits
SP = Arg("sparse")
case("logical_not", torch.logical_not, (SP,))
case("logical_not_bool", torch.logical_not, (BOOL,), UNARY_LITE)
case("logical_and", torch.logical_and, (SP, SP), BINARY)
case("logical_or", torch.logical_or, (SP, SP), BINARY_LITE)
case("logical_xor", torch.logical_xor, (SP, SP), BINARY_LITE)
case("logical_and_bool_int", torch.logical_and, (BOOL, Arg("int", torch.int32)), BINARY_LITE)
BITS32, BITS64 = Arg("bits", torch.int32), Arg("bits", torch.int64)
case("bitwise_and", torch.bitwise_and, (BITS32, BITS32), BINARY)
case("bitwise_or", torch.bitwise_or, (BITS64, BITS64), BINARY_LITE)
case("bitwise_xor", torch.bitwise_xor, (BITS32, BITS64), BINARY_LITE)
case("bitwise_not", torch.bitwise_not, (BITS32,), UNARY_LITE)
case("bitwise_and_scalar", lambda a: a & 0xFF0, (BITS64,), UNARY_LITE)
case("bitwise_and_bool", torch.bitwise_and, (BOOL, BOOL), BINARY_LITE)
case("bitwise_or_bool", torch.bitwise_or, (BOOL, BOOL), BINARY_LITE)
case("bitwise_xor_bool", torch.bitwise_xor, (BOOL, BOOL), BINARY_LITE)
case("bitwise_not_bool", torch.bitwise_not, (BOOL,), UNARY_LITE)
case("bitwise_scalar_tensor", lambda b: (torch.bitwise_and(0xF0F, b), torch.bitwise_or(6, b),
                                         torch.bitwise_xor(-3, b)), (BITS64,), UNARY_LITE)
SHIFT = Arg("smallpos", torch.int32)
case("shift_left", lambda a, b: (a << b, torch.bitwise_left_shift(a, 3)), (BITS32, SHIFT),
     BINARY_LITE)
case("shift_right", lambda a, b: (a >> b, torch.bitwise_right_shift(a, 2)), (BITS64, SHIFT),
     BINARY_LITE)

# --- casts: every pair of float32/float16/bfloat16/int32/int64/bool
section("cast")
CAST_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.bool)
_SHORT = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16",
          torch.int32: "i32", torch.int64: "i64", torch.bool: "b8"}
for _src in CAST_DTYPES:
    for _dst in CAST_DTYPES:
        if _src == _dst:
            continue
        # float sources: wide values (truncate to ints) with some zeros (for bool)
        _arg = Arg("bool" if _src == torch.bool else ("int" if not _src.is_floating_point
                                                      else "wide"), _src)
        case(f"to_{_SHORT[_src]}_{_SHORT[_dst]}", lambda a, _dst=_dst: a.to(_dst), (_arg,),
             ((S(33, 17),), (T(5, 3),)), tol="exact")
case("to_f32_bool_sparse", lambda a: a.to(torch.bool), (SP,), UNARY_LITE)
# The rounding error of a user's cast, exactly: zero everywhere if a cast did not round.
# (Casts between ops kiln fuses are not rounded on purpose: values stay in float32.)
case("to_roundtrip_f16", lambda a: a.to(torch.float16).to(torch.float32) - a, (Arg("normal", torch.float32),),
     UNARY_LITE, tol="exact")
case("to_roundtrip_bf16", lambda a: a.to(torch.bfloat16).to(torch.float32) - a,
     (Arg("normal", torch.float32),), UNARY_LITE, tol="exact")

# --- creation (the input only supplies the device, and a tensor for *_like)
section("creation")
case("full", lambda a: torch.full((3, 5), 2.5, device=a.device), shapes=((S(1),),))
case("full_int", lambda a: torch.full((7,), 3, dtype=torch.int64, device=a.device),
     shapes=((S(1),),))
case("zeros", lambda a: torch.zeros(4, 6, device=a.device), shapes=((S(1),),))
case("ones", lambda a: torch.ones(9, dtype=torch.int32, device=a.device), shapes=((S(1),),))
case("full_like", lambda a: torch.full_like(a, -1.5), shapes=UNARY_LITE)
case("zeros_like_add", lambda a: torch.zeros_like(a) + a, shapes=UNARY_LITE)
case("ones_like", torch.ones_like, shapes=UNARY_LITE)
case("arange_int", lambda a: torch.arange(3, 40, 3, device=a.device), shapes=((S(1),),))
case("arange_end", lambda a: torch.arange(17, device=a.device), shapes=((S(1),),))
# kiln computes start + i * step in float64 and rounds once; eager's float32 arange may be an
# ulp off that, so this is compared at float32 tolerance, not bitwise.
case("arange_float", lambda a: torch.arange(-1.0, 2.0, 0.1, device=a.device), shapes=((S(1),),))
case("arange_float_dtype", lambda a: torch.arange(0, 9, dtype=a.dtype, device=a.device) * a,
     shapes=((S(9),), (S(3, 9),)))
case("scalar_tensor", lambda a: torch.scalar_tensor(1.25, device=a.device) * a,
     shapes=UNARY_LITE)
case("new_zeros_ones", lambda a: (a.new_zeros(3, 4), a.new_ones((5,), dtype=torch.int32)),
     shapes=((S(2),),))
case("copy", lambda a, b: torch.ops.aten.copy(a, b), (X, I32), ((S(5, 6), S(6)),), tol="exact")
case("prims_scalar_tensor", lambda a: a * torch.ops.prims.scalar_tensor(1.5, dtype=a.dtype,
                                                                       device=a.device),
     shapes=UNARY_LITE)
case("convert_element_type", lambda a: torch.ops.prims.convert_element_type(a, torch.float16),
     (Arg("normal", torch.float32),), ((S(33, 17),),), tol="exact")
_CONSTS: dict = {}


def _constant_on(device) -> torch.Tensor:
    """One tensor per device that traced functions close over (make_fx makes it a get_attr
    constant; moving it inside the function would trace a cross-device copy instead)."""
    return _CONSTS.setdefault(str(device), torch.linspace(-1.0, 1.0, 17, device=device))


case("closure_constant", lambda a: a * _constant_on(a.device).to(a.dtype),
     shapes=((S(3, 17),),))
case("tensor_constant", lambda a: a + torch.tensor([1.0, -2.0, 0.5], device=a.device),
     shapes=((S(4, 3),),))
case("arange_broadcast", lambda a: a + torch.arange(a.shape[-1], device=a.device),
     shapes=((S(5, 7),), (T(6, 4),)))

# --- views: pure views return a view of the input and generate no kernel
section("view")
case("view", lambda a: a.view(17, 33), shapes=((S(33, 17),),), kernels="none", tol="exact")
case("view_split_dim", lambda a: a.view(3, 11, 17), shapes=((S(33, 17),),), kernels="none",
     tol="exact")
case("reshape_flatten", lambda a: a.reshape(-1), shapes=((S(4, 1, 9),), (S(33, 17),)),
     kernels="none", tol="exact")
# flattening a non-contiguous tensor copies in eager: here it must be a kernel
case("reshape_noncontig", lambda a: a.reshape(-1), shapes=((T(17, 33),),), kernels="some",
     tol="exact")
case("reshape_sliced", lambda a: a[:, 1:].reshape(-1), shapes=((S(5, 7),),), kernels="some",
     tol="exact")
# a step-sliced row-major tensor with row stride = 2 x row length flattens as a plain view
case("reshape_step_view", lambda a: a.reshape(-1), shapes=((ST(5, 12),),), kernels="none",
     tol="exact")
case("flatten_noncontig_3d", lambda a: a.permute(0, 2, 1).flatten(1), shapes=((S(3, 5, 7),),),
     kernels="some", tol="exact")
case("permute", lambda a: a.permute(2, 0, 1), shapes=((S(3, 5, 7),), (S(4, 1, 9),)),
     kernels="none", tol="exact")
case("transpose", lambda a: a.transpose(0, -1), shapes=((S(3, 5, 7),), (T(17, 33),)),
     kernels="none", tol="exact")
case("t", lambda a: a.t(), shapes=((S(33, 17),), (S(7),)), kernels="none", tol="exact")
case("expand", lambda a: a.expand(4, 5, 6), shapes=((S(5, 1),), (S(6),)), kernels="none",
     tol="exact")
# repeat: an index transform (i mod the input's size), read fused by its user
case("repeat", lambda a: a.repeat(2, 1), shapes=((S(3, 4),), (T(5, 3),), (S(1, 6),)),
     kernels="copy", tol="exact")
case("repeat_new_dims", lambda a: a.repeat(2, 3, 1, 2) * 2, shapes=((S(3, 1, 4),), (S(),)),
     tol="exact")
# unfold: sliding windows, a view (window i, element k reads i * step + k)
case("unfold", lambda a: a.unfold(1, 2, 1) * 2, shapes=((S(4, 5),), (T(5, 6),)), tol="exact")
case("unfold_strided", lambda a: a.unfold(0, 3, 2), shapes=((S(9, 4),), (S(7),)),
     kernels="none", tol="exact")
case("unfold_0d", lambda a: a.unfold(0, 1, 1) + 1, shapes=((S(),),), tol="exact")
case("slice_step", lambda a: a[1:30:3], shapes=((S(33, 17),),), kernels="none", tol="exact")
case("slice_negative", lambda a: a[:, -5:-1], shapes=((S(33, 17),), (T(17, 33),)),
     kernels="none", tol="exact")
case("slice_2d", lambda a: a[2:-2:2, 1::4], shapes=((S(33, 17),),), kernels="none", tol="exact")
case("select", lambda a: a[:, -2], shapes=((S(33, 17),), (S(4, 3, 9),)), kernels="none",
     tol="exact")
case("select_first", lambda a: a[3], shapes=((S(33, 17),),), kernels="none", tol="exact")
case("squeeze", lambda a: a.squeeze(1), shapes=((S(4, 1, 9),),), kernels="none", tol="exact")
case("squeeze_all", lambda a: a.squeeze(), shapes=((S(1, 4, 1, 9),),), kernels="none",
     tol="exact")
case("unsqueeze", lambda a: a.unsqueeze(-1), shapes=((S(33, 17),), (S(),)), kernels="none",
     tol="exact")
case("split", lambda a: a.split(5, dim=1), shapes=((S(4, 17),),), kernels="none", tol="exact")
case("split_sizes", lambda a: a.split([3, 1, 5], dim=-1), shapes=((S(4, 1, 9),),),
     kernels="none", tol="exact")
case("chunk", lambda a: a.chunk(3), shapes=((S(7, 5),),), kernels="none", tol="exact")
case("unbind", lambda a: a.unbind(1), shapes=((S(5, 3),), (S(4, 1, 9),)), kernels="none",
     tol="exact")
case("as_strided", lambda a: a.as_strided((4, 3), (5, 2), 1), shapes=((S(33),),),
     kernels="none", tol="exact")
# as_strided reads storage by eager's layout: a computed, transposed or sliced input must be
# stored the way eager lays it out first (Longformer's overlapping chunks of a scaled query)
case("as_strided_of_computed", lambda a: ((a * 2).t().as_strided((5, 4), (3, 1)),
                                          (a + 1)[1:].as_strided((2, 3), (1, 4), 8)),
     shapes=((S(4, 6),),), tol="exact")
# the *_copy variants functionalization produces: same values as the view, in a new tensor
VC = dict(kernels="copy", tol="exact")
case("view_copy", lambda a: torch.ops.aten.view_copy(a, [17, 33]), shapes=((S(33, 17),),), **VC)
case("permute_copy", lambda a: torch.ops.aten.permute_copy(a, [2, 0, 1]),
     shapes=((S(3, 5, 7),),), **VC)
case("transpose_copy", lambda a: torch.ops.aten.transpose_copy(a, 0, 1), shapes=((T(9, 13),),),
     **VC)
case("t_copy", lambda a: torch.ops.aten.t_copy(a), shapes=((S(33, 17),),), **VC)
case("expand_copy", lambda a: torch.ops.aten.expand_copy(a, [4, 5, 6]), shapes=((S(5, 1),),),
     **VC)
case("slice_copy", lambda a: torch.ops.aten.slice_copy(a, 1, 2, -1, 3), shapes=((S(7, 17),),),
     **VC)
case("unfold_copy", lambda a: torch.ops.aten.unfold_copy(a, 1, 3, 2), shapes=((S(4, 9),),),
     **VC)
case("select_copy", lambda a: torch.ops.aten.select_copy(a, 1, -2), shapes=((S(4, 3, 9),),),
     **VC)
case("squeeze_unsqueeze_copy", lambda a: (torch.ops.aten.squeeze_copy(a, [1]),
                                          torch.ops.aten.unsqueeze_copy(a, 0)),
     shapes=((S(4, 1, 9),),), **VC)
case("detach_alias_copy", lambda a: (torch.ops.aten.detach_copy(a),
                                     torch.ops.aten.alias_copy(a)), shapes=((T(5, 6),),), **VC)
case("split_copy", lambda a: (*torch.ops.aten.split_copy(a, 5, 1),
                              *torch.ops.aten.split_with_sizes_copy(a, [1, 3], 0)),
     shapes=((S(4, 12),),), **VC)
case("unbind_copy", lambda a: torch.ops.aten.unbind_copy(a, 1), shapes=((S(5, 3),),), **VC)
case("identity", lambda a: a, kernels="none", tol="exact", shapes=UNARY_LITE)
case("clone_contiguous", lambda a: a.contiguous(), shapes=((T(17, 33),),), kernels="some",
     tol="exact")
case("view_of_computed", lambda a: (a * 2).t(), shapes=((S(33, 17),),))

case("alias", torch.ops.aten.alias, shapes=((S(33, 17),),), kernels="none", tol="exact")
case("detach", lambda a: a.detach(), shapes=((S(33, 17),),), kernels="none", tol="exact")

# --- indexing: cat / pad / scatters are masked pointwise kernels; gathers load through
# indices read in the same kernel
section("indexing")
case("cat_dim0", lambda a, b: torch.cat([a, b]), (X, X), ((S(3, 5), S(4, 5)), (T(5, 3), S(2, 3))))
case("cat_dim1_three", lambda a, b, c: torch.cat([a, b, c], 1), (X, X, X),
     ((S(4, 2), S(4, 7), ST(4, 3)),))
case("cat_promote", lambda a, b: torch.cat([a, b], -1), (X, I64), ((S(3, 4), S(3, 2)),))
case("stack", lambda a, b: torch.stack([a, b], 1), (X, X), ((S(5, 3), T(5, 3)),))
case("pad", lambda a: F.pad(a, (1, 2)), shapes=((S(3, 4),), (T(5, 6),)), tol="exact")
case("pad_value_2d", lambda a: F.pad(a, (2, 0, 1, 3), value=1.5), shapes=((S(2, 3, 4),),),
     tol="exact")
case("pad_negative", lambda a: F.pad(a, (-1, 2)), shapes=((S(3, 6),),), tol="exact")
case("slice_scatter", lambda a, b: torch.slice_scatter(a, b, 1, 1, 7, 2), (X, X),
     ((S(4, 9), S(4, 3)), (T(4, 9), S(4, 3))), tol="exact")
case("slice_scatter_dim0", lambda a, b: torch.slice_scatter(a, b, 0, -3), (X, X),
     ((S(8, 5), S(3, 5)),), tol="exact")
case("select_scatter", lambda a, b: torch.select_scatter(a, b, 0, -2), (X, X),
     ((S(5, 7), S(7)),), tol="exact")
case("embedding", lambda w, i: F.embedding(i, w), (X, Arg("index11", torch.int64)),
     ((S(11, 8), S(3, 5)), (S(11, 8), S(7))), tol="exact")
case("embedding_int32", lambda w, i: F.embedding(i, w), (X, Arg("index11", torch.int32)),
     ((S(11, 8), S(4)),), tol="exact")
case("gather", lambda a, i: a.gather(1, i), (X, Arg("index6", torch.int64)),
     ((S(5, 6), S(5, 3)), (T(5, 6), S(4, 9))), tol="exact")
case("index_select", lambda a, i: a.index_select(0, i), (X, Arg("index7", torch.int64)),
     ((S(7, 5), S(4)), (T(7, 5), S(9))), tol="exact")
case("index_select_dim1", lambda a, i: a.index_select(1, i), (X, Arg("index5", torch.int32)),
     ((S(3, 5, 2), S(6)),), tol="exact")
case("index_tensor", lambda a, i: a[i], (X, Arg("wrapindex7", torch.int64)),
     ((S(7, 5), S(3, 2)),), tol="exact")
case("index_tensor_dim1", lambda a, i: a[:, i], (X, Arg("index5", torch.int64)),
     ((S(3, 5), S(4)),), tol="exact")
case("index_tensor_pair", lambda a, i, j: a[i, j], (X, Arg("index4", torch.int64),
                                                    Arg("index6", torch.int64)),
     ((S(4, 6), S(5, 1), S(3)),), tol="exact")
# A gather of a gather: roll over two dims is two index_selects, composed into one load that
# binds both loaded indices (a roll of the same dim twice cannot compose: it is realized).
# Swin's shifted windows (roll, pad, window partition) and a gathered extern operand (Swin's
# relative position bias as sdpa's mask) once read an unbound index variable (issue 13).
case("roll_2d", lambda a: torch.roll(a, (1, -2), (0, 1)), shapes=((S(5, 7),), (T(6, 5),)),
     tol="exact")
case("roll_same_dim_twice", lambda a: a.roll(2, 1).roll(-1, 1) * 2, shapes=((S(4, 7),),),
     tol="exact")
case("roll_flat", lambda a: torch.roll(a, 3), shapes=((S(4, 5),),), tol="exact")
# flip and repeat copy in eager, diagonal is a view: for kiln all three are index transforms
case("flip", lambda a: a.flip(0, -1), shapes=((S(5, 7),), (T(6, 5),)), tol="exact")
case("repeat_3d", lambda a: a.repeat(2, 1, 3), shapes=((S(3, 4),), (S(),)), tol="exact")
case("diagonal", lambda a: torch.diagonal(a, 1) * 2, shapes=((S(4, 5),), (T(6, 5),)),
     tol="exact")
case("diagonal_copy", lambda a: torch.diagonal_copy(a, -1, 0, 2), shapes=((S(3, 4, 5),),),
     tol="exact")
case("unfold_and_copy", lambda a: (a.unfold(1, 2, 1) * 2, torch.ops.aten.unfold_copy(a, 0, 2, 2)),
     shapes=((S(4, 5),), (T(6, 5),)), tol="exact")
# decomposed (no ATen fallback): a norm is a sum of powers, batch statistics two reductions
case("vector_norm_dim", lambda a: a.norm(dim=1), shapes=((S(7, 9),),), tol="approx")
case("batch_norm_train", lambda a: F.batch_norm(a, None, None, training=True),
     shapes=((S(2, 3, 4, 4),),), tol="approx")
case("roll_window_partition",
     lambda a, b: (F.pad(torch.roll(a, (-1, -1), (1, 2)), (0, 0, 0, 1, 0, 1))
                   .view(2, 3, 2, 3, 2, 4).permute(0, 1, 3, 2, 4, 5).reshape(-1, 4) + b),
     (X, X), ((S(2, 5, 5, 4), S(4)),), tol="exact")
case("index_select_twice", lambda a, i, j: a.index_select(0, i).index_select(1, j),
     (X, Arg("index7", torch.int64), Arg("index5", torch.int64)), ((S(7, 5), S(4), S(6)),),
     tol="exact")
case("gather_into_extern", lambda a, w, i: a @ w.index_select(0, i).t(),
     (X, X, Arg("index7", torch.int64)), ((S(3, 5), S(7, 5), S(4)),), kernels="any",
     tol="approx")

# --- extern: matmuls, convolution and attention run as ATen calls on purpose (no fallback
# warning); epilogues after them fuse into kernels
section("extern")
case("mm", torch.mm, (X, X), ((S(33, 17), S(17, 9)), (T(8, 6), S(6, 5))), kernels="any",
     tol="approx")
case("linear", F.linear, (X, X, X), ((S(8, 16), S(12, 16), S(12)),), kernels="any",
     tol="approx")
case("linear_relu", lambda a, w, b: F.linear(a, w, b).relu(), (X, X, X),
     ((S(2, 5, 16), S(12, 16), S(12)),), tol="approx")
case("bmm", torch.bmm, (X, X), ((S(3, 5, 7), S(3, 7, 4)),), kernels="any", tol="approx")
case("baddbmm", lambda c, a, b: torch.baddbmm(c, a, b, beta=0.5, alpha=2.0), (X, X, X),
     ((S(3, 5, 4), S(3, 5, 7), S(3, 7, 4)),), kernels="any", tol="approx")
case("matmul_broadcast", torch.matmul, (X, X), ((S(2, 3, 5, 7), S(7, 4)),), kernels="any",
     tol="approx")
case("conv2d", lambda x, w, b: F.conv2d(x, w, b, padding=1), (X, X, X),
     ((S(2, 3, 9, 9), S(4, 3, 3, 3), S(4)),), kernels="any", tol="approx")
case("conv2d_stride_gelu", lambda x, w: F.gelu(F.conv2d(x, w, stride=2)), (X, X),
     ((S(1, 2, 11, 11), S(5, 2, 3, 3)),), tol="approx")
case("sdpa", lambda q, k, v: F.scaled_dot_product_attention(q, k, v), (X, X, X),
     ((S(2, 3, 6, 8), S(2, 3, 6, 8), S(2, 3, 6, 8)),), kernels="any", tol="approx")
case("sdpa_causal", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
     (X, X, X), ((S(1, 2, 9, 16), S(1, 2, 9, 16), S(1, 2, 9, 16)),), kernels="any",
     tol="approx")
case("einsum", lambda a, b: torch.einsum("bij,bkj->bik", a, b), (X, X),
     ((S(2, 5, 7), S(2, 4, 7)),), kernels="any", tol="approx")

# --- pooling and resampling (unrolled windows, masked taps at padding / ceil_mode edges)
section("pooling")
IMG = ((S(2, 3, 9, 9),), (T(9, 8, 3, 2),))
case("max_pool2d", lambda a: F.max_pool2d(a, 2), shapes=IMG, tol="exact")
case("max_pool2d_pad_stride", lambda a: F.max_pool2d(a, 3, stride=2, padding=1),
     shapes=((S(2, 3, 9, 9),),), tol="exact")
case("max_pool2d_ceil_dilation", lambda a: F.max_pool2d(a, 2, stride=2, dilation=2,
                                                         ceil_mode=True),
     shapes=((S(1, 2, 10, 11),),), tol="exact")
case("max_pool2d_indices", lambda a: F.max_pool2d(a, 3, 2, return_indices=True),
     shapes=((S(1, 3, 9, 9),),), tol="exact")
case("max_pool2d_nan", lambda a: F.max_pool2d(a, 2), (SPECIAL,), ((S(1, 2, 8, 8),),),
     tol="exact")
case("max_pool3d", lambda a: F.max_pool3d(a, 2), shapes=((S(1, 2, 4, 6, 6),),), tol="exact")
case("adaptive_max_pool2d", lambda a: F.adaptive_max_pool2d(a, (3, 4)),
     shapes=((S(2, 3, 7, 9),),), tol="exact")
case("avg_pool2d", lambda a: F.avg_pool2d(a, 2), shapes=IMG)
case("avg_pool2d_pad_exclude", lambda a: F.avg_pool2d(a, 3, 2, 1, count_include_pad=False),
     shapes=((S(2, 3, 9, 9),),))
case("avg_pool2d_ceil", lambda a: F.avg_pool2d(a, 2, ceil_mode=True), shapes=((S(1, 2, 7, 9),),))
case("avg_pool3d", lambda a: F.avg_pool3d(a, 2), shapes=((S(1, 2, 4, 6, 6),),))
case("adaptive_max_pool3d", lambda a: F.adaptive_max_pool3d(a, (2, 3, 2)),
     shapes=((S(1, 2, 5, 7, 4),),), tol="exact")
case("adaptive_avg_pool2d", lambda a: F.adaptive_avg_pool2d(a, (3, 4)),
     shapes=((S(2, 3, 7, 9),), (T(9, 7, 3, 2),)))
case("adaptive_avg_pool2d_global", lambda a: F.adaptive_avg_pool2d(a, 1),
     shapes=((S(2, 3, 7, 9),), (S(1, 2, 70, 70),)), tol="approx")
case("adaptive_avg_pool3d", lambda a: F.adaptive_avg_pool3d(a, (2, 3, 2)),
     shapes=((S(1, 2, 5, 7, 4),),))
case("upsample_nearest", lambda a: F.interpolate(a, scale_factor=2), shapes=IMG, tol="exact")
case("upsample_nearest_size", lambda a: F.interpolate(a, size=(5, 13)),
     shapes=((S(1, 2, 3, 7),),), tol="exact")
case("upsample_bilinear", lambda a: F.interpolate(a, scale_factor=2, mode="bilinear"),
     shapes=((S(1, 2, 5, 7),),), tol="approx")
case("upsample_bilinear_align", lambda a: F.interpolate(a, size=(9, 4), mode="bilinear",
                                                        align_corners=True),
     shapes=((S(2, 3, 5, 7),),), tol="approx")

# --- mutation of graph inputs: written back in place (the test compares every input after
# the call with eager's, so a missing or a stray write both fail)
section("mutation")
case("add_inplace", lambda a, b: a.add_(b), (X, X), ((S(33, 17), S(17)), (T(9, 13), T(9, 13))),
     kernels="any")
case("mul_inplace_other_out", lambda a, b: (a.mul_(2), b * 3), (X, X),
     ((S(5, 6), S(5, 6)),), kernels="any")
case("copy_into_input", lambda a, b: a.copy_(b.relu()), (X, X), ((S(4, 7), S(4, 7)),),
     kernels="any")
case("slice_fill_inplace", lambda a: (a[:, 1:4].fill_(1.5), a * 1)[1], shapes=((S(5, 6),),),
     kernels="any")
case("mutate_no_output", lambda a, b: (a.sub_(1), b.exp())[1], (X, X), ((S(6, 5), S(6, 5)),),
     kernels="any", tol="approx")

# --- reductions: persistent (rnumel <= 4096) and looped kernels, keepdim, several dims, all
# dims, transposed inputs, int / bool inputs, NaN, ties (eager returns the first index)
section("reduction")
RED1 = ((S(33, 17),), (T(17, 33),), (S(4, 1, 9),), (S(7),))
case("sum_last", lambda a: a.sum(-1), shapes=RED1)
case("sum_first", lambda a: a.sum(0), shapes=((S(33, 17),), (T(9, 13),)))
case("sum_keepdim", lambda a: a.sum(1, keepdim=True), shapes=((S(4, 3, 9),), (ST(5, 12),)))
case("sum_dims", lambda a: a.sum((0, 2)), shapes=((S(4, 3, 9),),))
case("sum_all", lambda a: a.sum(), shapes=((S(),), (S(7),), (S(33, 17),)), tol="approx")
case("sum_looped", lambda a: a.sum(-1), shapes=((S(3, 5000),),), tol="approx")
case("sum_all_looped", lambda a: a.sum(), shapes=((S(70, 70),),), tol="approx")
# vector norms decompose (sum of powers, then a root): every ord, a dim or all, keepdim
case("vector_norm", lambda a: (a.norm(dim=1), torch.linalg.vector_norm(a, 1, (0, 1)),
                               torch.linalg.vector_norm(a, float("inf"), -1, keepdim=True),
                               torch.linalg.vector_norm(a, 3.5, 0)),
     shapes=((S(7, 9),), (T(9, 13),)), tol="approx")
case("sum_int", lambda a: a.sum(-1), (I32,), ((S(33, 17),), (T(5, 6),)))
case("sum_bool", lambda a: a.sum(0), (BOOL,), ((S(33, 17),),))
case("mean", lambda a: a.mean(-1), shapes=RED1)
case("mean_dims_keepdim", lambda a: a.mean((0, 1), keepdim=True), shapes=((S(4, 3, 9),),))
case("mean_all", lambda a: a.mean(), shapes=((S(33, 17),),))
case("amax", lambda a: a.amax(-1), shapes=RED1, tol="exact")
case("amin", lambda a: a.amin(0), shapes=((S(33, 17),), (T(9, 13),)), tol="exact")
case("amax_nan", lambda a: a.amax(-1), (SPECIAL,), ((S(9, 13),),), tol="exact")
case("amax_looped", lambda a: a.amax(-1), shapes=((S(2, 6000),),), tol="exact")
case("amax_int", lambda a: a.amax(1), (I64,), ((S(6, 7),),), tol="exact")
case("max_dim", lambda a: torch.max(a, 1), shapes=((S(33, 17),), (T(9, 13),)), tol="exact")
case("min_dim_keepdim", lambda a: torch.min(a, -1, keepdim=True), shapes=((S(4, 3, 9),),),
     tol="exact")
case("max_dim_ties", lambda a: torch.max(a, 1), (IV,), ((S(9, 13),),), tol="exact")
case("argmax", lambda a: a.argmax(-1), shapes=((S(33, 17),), (T(9, 13),)))
case("argmin_keepdim", lambda a: a.argmin(0, keepdim=True), shapes=((S(33, 17),),))
case("argmax_flat", lambda a: a.argmax(), shapes=((S(9, 13),),))
case("argmax_ties", lambda a: a.argmax(-1), (IV,), ((S(9, 13),),))
case("argmin_ties", lambda a: a.argmin(0), (IV,), ((S(9, 13),),))
case("argmax_nan", lambda a: a.argmax(-1), (SPECIAL,), ((S(9, 13),),))
case("any", lambda a: a.any(-1), (BOOL,), ((S(9, 13),),))
case("all_float", lambda a: a.all(0), (SP,), ((S(3, 13),),))
case("any_all_dims", lambda a: (a.any(), a.all()), (SP,), ((S(4, 5),),))
case("var", lambda a: a.var(-1), shapes=((S(33, 17),), (T(9, 13),)), tol="approx")
case("var_unbiased_false", lambda a: a.var(0, unbiased=False), shapes=((S(33, 17),),),
     tol="approx")
case("var_mean", lambda a: torch.var_mean(a, dim=(0, 2), keepdim=True), shapes=((S(4, 3, 9),),),
     tol="approx")
case("var_all", lambda a: a.var(), shapes=((S(9, 13),),), tol="approx")
case("std", lambda a: a.std(-1), shapes=((S(9, 13),),), tol="approx")

# --- composites of reductions and pointwise ops (kiln's decompositions), fused epilogues
section("composite")
case("softmax", lambda a: a.softmax(-1), shapes=((S(33, 17),), (T(9, 13),), (S(2, 5000),)),
     tol="approx")
case("log_softmax", lambda a: a.log_softmax(0), shapes=((S(33, 17),),), tol="approx")
case("layer_norm", lambda a, w, b: F.layer_norm(a, (64,), w, b), (X, X, X),
     ((S(8, 64), S(64), S(64)), (S(2, 3, 64), S(64), S(64))), tol="approx")
case("batch_norm_eval", lambda a, m, v, w, b: F.batch_norm(a, m, v, w, b, training=False),
     (X, X, Arg("positive"), X, X), ((S(2, 6, 5, 3), S(6), S(6), S(6), S(6)),), tol="approx")
case("batch_norm_eval_no_affine", lambda a, m, v: F.batch_norm(a, m, v, training=False),
     (X, X, Arg("positive")), ((S(3, 4, 9), S(4), S(4)),), tol="approx")
case("batch_norm_legit_no_training",   # what torch.export captures for eval BatchNorm
     lambda a, m, v, w, b: torch.ops.aten._native_batch_norm_legit_no_training(
         a, w, b, m, v, 0.1, 1e-5)[0],
     (X, X, Arg("positive"), X, X), ((S(2, 6, 5, 3), S(6), S(6), S(6), S(6)),), tol="approx")
case("rms_norm_manual", lambda a: a * torch.rsqrt(a.pow(2).mean(-1, keepdim=True) + 1e-6),
     shapes=((S(8, 33),),), tol="approx")
case("center", lambda a: a - a.mean(-1, keepdim=True), shapes=((S(33, 17),), (T(9, 13),)),
     tol="approx")
case("sum_of_broadcast", lambda a, b: (a * b).sum(0), (X, X), ((S(5, 1), S(1, 6)),), tol="approx")
case("tril", lambda a: a.tril(), shapes=((S(5, 5),), (S(4, 7),)), tol="exact")

# --- composite chains: fusion, 2-D tiling (transposed loads, contiguous stores), broadcasts
section("chain")
case("chain_t_mul_add_relu", lambda a, b: (a.t() * 2 + b).relu(), (X, X),
     ((S(33, 17), S(17, 33)), (S(257, 131), S(131, 257)), (S(5, 6), S(6, 1))))
case("chain_permute_reshape", lambda a: a.permute(0, 2, 1).reshape(3, -1) + 1,
     shapes=((S(3, 5, 7),), (S(2, 64, 33),)))
case("chain_transpose_copy", lambda a: a.t().contiguous() * 3, shapes=((S(257, 131),),))
case("chain_where_math", lambda a, b: torch.where(a > 0, a.exp(), b.sin()) * 0.5, (X, X),
     BINARY_LITE, tol="approx")
case("chain_shared_outputs", lambda a, b: ((a + b).sigmoid(), (a + b) * 3, a), (X, X),
     BINARY_LITE, tol="approx")
case("chain_broadcast_3d", lambda a, b, c: (a * b - c).tanh() + a, (X, X, X), TERNARY,
     tol="approx")
case("chain_slice_view_math", lambda a: a[:, ::2].exp() + a[:, 1::2],
     shapes=((S(9, 10),), (T(10, 8),)), tol="approx")
case("chain_gelu_layernormless", lambda a, w, b: F.gelu(a * w + b), (X, X, X),
     ((S(8, 64), S(64), S(64)),), tol="approx")
case("chain_long", lambda a: ((((a * 1.1 + 0.3).sin() * 2).abs() + 1).log().sqrt() - a).relu(),
     shapes=UNARY_LITE, tol="long")
case("chain_mask_floor", lambda a, b: a * (b > 0).to(a.dtype) + b.floor(), (X, X), BINARY_LITE)
case("chain_unbind_add", lambda a: sum(a.unbind(0)), shapes=((S(3, 4, 5),),))
case("chain_split_mul", lambda a: (lambda q, k: q * k)(*a.split(4, dim=-1)),
     shapes=((S(6, 8),), (T(6, 8),)))

import optable_scatter  # noqa: E402  (the scan and scatter cases, kept apart for size)

optable_scatter.register()

CASES: dict[str, OpCase] = {}
for _c in CASE_LIST:
    if _c.name in CASES:
        raise ValueError(f"duplicate op case {_c.name}")
    CASES[_c.name] = _c


# ----------------------------------------------------------------------------- tolerances
# Single ops on float32: ATen and kiln both compute in float32; "approx" allows for
# libdevice (GPU) or NumPy (interpreter) transcendentals that differ from ATen's by an ulp
# or so. Half types: kiln computes in float32 and rounds once; eager may round in between.
TOLERANCES = {
    ("exact", torch.float32): (0.0, 0.0),
    ("default", torch.float32): (1e-5, 1e-5),
    ("approx", torch.float32): (1e-4, 1e-4),
    ("exact", torch.float16): (0.0, 0.0),
    ("default", torch.float16): (1e-2, 1e-2),
    ("approx", torch.float16): (1e-2, 1e-2),
    ("exact", torch.bfloat16): (0.0, 0.0),
    ("default", torch.bfloat16): (2e-2, 2e-2),
    ("approx", torch.bfloat16): (2e-2, 2e-2),
    # many ops in a row: eager rounds to the half type after each one, kiln once at the end
    ("long", torch.float32): (1e-4, 1e-4),
    ("long", torch.float16): (2e-2, 2e-2),
    ("long", torch.bfloat16): (8e-2, 8e-2),
    # sums in another order (scans, atomic scatter-adds): eager CUDA rounds a half type after
    # each atomic add, or sums in another order; kiln adds in float32 and rounds once, so the
    # two differ by an ulp of the running sum, and float32 results by their last bits
    # (bf16's ulp at a running sum of 8 is 0.0625: atol allows two)
    ("accumulate", torch.float32): (1e-4, 1e-4),
    ("accumulate", torch.float16): (2e-2, 2e-2),
    ("accumulate", torch.bfloat16): (8e-2, 1.25e-1),
}


def tolerance(case: OpCase, dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) for an output of ``dtype`` (non-float outputs are compared exactly)."""
    if not dtype.is_floating_point:
        return 0.0, 0.0
    if dtype == torch.float64:
        dtype = torch.float32
    return TOLERANCES[(case.tol, dtype)]


# Ops whose FakeTensor (meta) strides differ from the eager kernel's for some input layouts:
# kiln gives outputs the strides the traced graph's metadata says, so for these the output
# values are checked but not the strides (a torch meta-function quirk, not a kiln bug).
# div with rounding_mode (and floor_divide, which decomposes to it): meta follows the
# contiguous operand, eager the first; pow(scalar, tensor): meta keeps the input's layout,
# eager returns contiguous. copysign: meta returns contiguous, eager follows the first input.
# sdpa: make_fx records the CPU flash kernel, whose meta gives a (B, S, H, D)-major layout
# while eager returns a contiguous output.
META_STRIDES_DIFFER = frozenset({"div_floor", "div_trunc", "floor_divide", "pow_scalar_base",
                                 "sdpa", "sdpa_causal", "copysign"})


# ----------------------------------------------------------------------------- parametrization
@dataclass(frozen=True)
class Param:
    case: OpCase
    shapes: tuple[Shape, ...]
    dtype: torch.dtype          # the float dtype of the case's float inputs
    device: str

    @property
    def id(self) -> str:
        shapes = "*".join(s.label() for s in self.shapes)
        dtype = str(self.dtype).removeprefix("torch.") if self.case.uses_float_dtype else "fixed"
        return f"{self.case.name}-{shapes}-{dtype}"


def params(device: str) -> list[Param]:
    """CPU: float32 (the interpreter). CUDA: float32, float16 and bfloat16, every shape."""
    out = []
    for c in CASE_LIST:
        dtypes = (torch.float32,) if device == "cpu" or not c.uses_float_dtype else c.float_dtypes
        for dtype in dtypes:
            for shapes in c.shapes:
                out.append(Param(c, shapes, dtype, device))
    return out


# ----------------------------------------------------------------------------- known bugs
