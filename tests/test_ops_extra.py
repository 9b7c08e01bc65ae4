"""Pooling, resampling and the extra pointwise ops against eager, on fresh random inputs.

Each case is compiled from one draw of inputs and called on a second, fresh draw, then
compared with eager on that draw. Most cases go through ``compile_fx(make_fx(fn, kiln's
decompositions))``; cases marked ``export`` go through ``compile_module`` (torch.export),
which keeps ops make_fx decomposes (``upsample_nearest2d.vec``, ``upsample_bilinear2d.vec``).
A case must really lower: no fallback op, at least one kernel, and the ATen ops it is about
(``ops``) present in the graph kiln lowered, so a silent fallback or a changed decomposition
cannot pass. CPU runs float32 under Triton's interpreter; ``gpu`` runs float32, float16 and
bfloat16 on CUDA. A failure message carries the seed: ``KILN_TEST_SEED=<seed>`` replays it.
"""
from __future__ import annotations

import math
import os
import random
import warnings
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch.fx.experimental.proxy_tensor import make_fx

import compiler
from compiler.passes import trace_fx
from compiler.capture import decomposition_table
from compiler.graph import KilnFallbackWarning
from compiler.lowering import default_table

# Triton's interpreter computes masked-off lanes too (0 / 0 there is harmless).
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning",
                                        "ignore::RuntimeWarning")
aten = torch.ops.aten
GPU_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Arg:
    """How to draw one input: a value domain, a dtype (None: the case's float dtype) and a
    layout: "contig", "t" (dims reversed in memory), "step" (last dim strided by 2),
    "cl" (channels-last, 4-D)."""
    domain: str = "normal"
    dtype: torch.dtype | None = None
    layout: str = "contig"


def _draw(domain: str, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` float64 values of ``domain``; never all zeros."""
    def u(lo, hi):
        return torch.rand(n, generator=gen, dtype=torch.float64) * (hi - lo) + lo

    def ints(lo, hi):
        return torch.randint(lo, hi, (n,), generator=gen).double()

    def sprinkle(x, values, every=6):
        pick = torch.randint(0, every, (n,), generator=gen)
        for k, v in enumerate(values):
            x[pick == k] = v
        return x

    normal = torch.randn(n, generator=gen, dtype=torch.float64) * 2
    table = {
        "normal": lambda: normal,
        "unit": lambda: u(-0.99, 0.99),            # asin, acos, atanh, erfinv
        "positive": lambda: u(0.1, 8.0),           # log10, lgamma
        "ge1": lambda: u(1.0, 6.0),                # acosh
        "tan": lambda: u(-1.4, 1.4),               # away from tan's poles
        "special": lambda: sprinkle(normal, (math.nan, math.inf, -math.inf)),
        "signs": lambda: sprinkle(normal, (0.0, -0.0, math.inf, -math.inf), 8),
        "nan": lambda: sprinkle(normal, (math.nan,), 5),
        "neginf": lambda: sprinkle(normal, (-math.inf,) * 4, 5),   # many all -inf windows
        "ties": lambda: ints(-2, 3),               # few values: equal maxima in a window
        "nonzero": lambda: torch.where(u(0, 1) < 0.5, -1.0, 1.0).double() * u(0.5, 3.0),
        "int": lambda: ints(-100, 101),
        "shift": lambda: ints(0, 70),              # past 64 bits too
        "shift_neg": lambda: ints(-3, 40),
        "shift8": lambda: ints(0, 10),             # past 8 bits too
        "ldexp": lambda: ints(-4, 5),
        "tens": lambda: normal * 5,
        "hundreds": lambda: normal * 150,
    }
    return table[domain]()


def make_tensor(arg: Arg, size: tuple[int, ...], dtype: torch.dtype, device: str,
                gen: torch.Generator) -> torch.Tensor:
    alloc = {"t": tuple(reversed(size)), "step": size[:-1] + (2 * size[-1],)}.get(arg.layout, size)
    values = _draw(arg.domain, math.prod(alloc), gen).reshape(alloc)
    t = values.to(arg.dtype or dtype).to(device)
    if arg.layout == "t":
        t = t.permute(*reversed(range(len(size))))
    elif arg.layout == "step":
        t = t[..., ::2]
    elif arg.layout == "cl":
        t = t.contiguous(memory_format=torch.channels_last)
    assert tuple(t.shape) == size
    return t


def generator() -> tuple[torch.Generator, int]:
    seed = int(os.environ.get("KILN_TEST_SEED") or random.SystemRandom().randrange(2**31))
    return torch.Generator().manual_seed(seed), seed


# ----------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    """``fn`` of tensors; ``args`` says how to draw each, ``shapes`` lists shape tuples (one
    size per arg). ``ops``: ATen ops (``str(op)``) the lowered graph must contain. ``tol``:
    "exact", "default" or "approx" (libdevice / NumPy transcendentals within an ulp or two).
    ``export``: compile through torch.export (``compile_module``) instead of make_fx."""
    name: str
    fn: Callable
    args: tuple[Arg, ...]
    shapes: tuple[tuple[tuple[int, ...], ...], ...]
    ops: tuple[str, ...] = ()
    tol: str = "default"
    export: bool = False
    gpu_dtypes: tuple[torch.dtype, ...] = GPU_DTYPES

    @property
    def float_inputs(self) -> bool:
        return any(a.dtype is None for a in self.args)


CASES: list[Case] = []


def case(name, fn, args, shapes, ops=(), **kw):
    args = tuple(args) if isinstance(args, (tuple, list)) else (args,)
    shapes = tuple(s if isinstance(s[0], tuple) else (s,) for s in shapes)
    ops = (ops,) if isinstance(ops, str) else tuple(ops)
    CASES.append(Case(name, fn, args, shapes, ops, **kw))


X = Arg()
NCHW = ((2, 3, 13, 11), (1, 1, 7, 7))
POOL_IDX = "aten.max_pool2d_with_indices.default"
AVG = "aten.avg_pool2d.default"
ADAPT = "aten._adaptive_avg_pool2d.default"

# --- max pooling: values and int64 indices (flat h * W + w in the plane, as eager)
def maxpool(*a, **k):
    return lambda x: F.max_pool2d(x, *a, return_indices=True, **k)


case("maxpool_stem", maxpool(3, 2, 1), X, NCHW + ((3, 9, 10),), POOL_IDX, tol="exact")
case("maxpool_stem_cl", maxpool(3, 2, 1), Arg(layout="cl"), ((2, 4, 9, 9),), POOL_IDX, tol="exact")
case("maxpool_stem_step", maxpool(3, 2, 1), Arg(layout="step"), ((2, 2, 7, 9),), POOL_IDX, tol="exact")
case("maxpool_2x2", maxpool(2, 2), X, ((2, 3, 8, 9), (2, 1, 4, 6)), POOL_IDX, tol="exact")
case("maxpool_ceil", maxpool(3, 2, 0, ceil_mode=True), X, ((2, 2, 10, 8),), POOL_IDX, tol="exact")
case("maxpool_ceil_pad", maxpool(2, 3, 1, ceil_mode=True), X, ((1, 2, 8, 11),), POOL_IDX, tol="exact")
case("maxpool_dilation", maxpool(3, 1, 1, dilation=2), X, ((2, 2, 11, 9),), POOL_IDX, tol="exact")
case("maxpool_nan", maxpool(3, 2, 1), Arg("nan"), ((2, 3, 9, 9),), POOL_IDX, tol="exact")
case("maxpool_special", maxpool(3, 2, 1), Arg("special"), ((2, 3, 9, 9),), POOL_IDX, tol="exact")
case("maxpool_neginf", maxpool(3, 2, 1, dilation=2), Arg("neginf"), ((2, 3, 9, 9),), POOL_IDX,
     tol="exact")
case("maxpool_ties", maxpool(3, 2, 1), Arg("ties"), ((2, 3, 9, 9),), POOL_IDX, tol="exact")
case("maxpool_values_relu", lambda x: F.max_pool2d(torch.relu(x) * 2, 3, 2, 1), X, NCHW,
     POOL_IDX, tol="exact")
case("maxpool1d", lambda x: F.max_pool1d(x, 3, 2, 1, return_indices=True), X, ((2, 3, 11),),
     POOL_IDX, tol="exact")
case("maxpool3d", lambda x: F.max_pool3d(x, 3, 2, 1, return_indices=True), X,
     ((1, 2, 5, 6, 7),), "aten.max_pool3d_with_indices.default", tol="exact")
case("maxpool3d_ceil", lambda x: F.max_pool3d(x, 2, 2, ceil_mode=True, return_indices=True),
     Arg("nan"), ((2, 5, 5, 7),), "aten.max_pool3d_with_indices.default", tol="exact")
case("adaptive_max_even", lambda x: F.adaptive_max_pool2d(x, 7, return_indices=True), X,
     ((2, 3, 14, 14),), "aten.adaptive_max_pool2d.default", tol="exact")
case("adaptive_max_uneven", lambda x: F.adaptive_max_pool2d(x, (4, 3), return_indices=True),
     Arg("nan"), ((2, 3, 10, 10), (1, 2, 9, 5)), "aten.adaptive_max_pool2d.default", tol="exact")
case("adaptive_max3d", lambda x: F.adaptive_max_pool3d(x, (2, 3, 2), return_indices=True), X,
     ((1, 2, 5, 7, 4),), "aten.adaptive_max_pool3d.default", tol="exact")

# --- average pooling
case("avgpool_stem", lambda x: F.avg_pool2d(x, 3, 2, 1), X, NCHW, AVG)
case("avgpool_stem_cl", lambda x: F.avg_pool2d(x, 3, 2, 1), Arg(layout="cl"), ((2, 4, 9, 9),), AVG)
case("avgpool_exclude_pad", lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False), X,
     NCHW, AVG)
case("avgpool_2x2", lambda x: F.avg_pool2d(x, 2), X, ((2, 3, 8, 9), (1, 6, 5)), AVG)
case("avgpool_ceil", lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True), X, ((2, 2, 10, 8),), AVG)
case("avgpool_ceil_exclude", lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True,
                                                    count_include_pad=False), X, ((2, 2, 10, 8),), AVG)
case("avgpool_divisor", lambda x: F.avg_pool2d(x, (3, 2), (2, 1), (1, 0), divisor_override=5), X,
     ((2, 2, 9, 7),), AVG)
case("avgpool_nan", lambda x: F.avg_pool2d(x, 3, 2, 1), Arg("special"), ((1, 2, 9, 9),), AVG)
case("avgpool1d", lambda x: F.avg_pool1d(x, 3, 2, 1), X, ((2, 3, 11),), AVG)
case("avgpool3d", lambda x: F.avg_pool3d(x, 3, 2, 1, count_include_pad=False), X,
     ((1, 2, 5, 6, 7),), "aten.avg_pool3d.default")

# --- adaptive average pooling (1x1 is decomposed to mean before kiln sees it)
case("adaptive_avg_1x1", lambda x: F.adaptive_avg_pool2d(x, 1), X, ((2, 3, 14, 14),))
case("adaptive_avg_7_from_14", lambda x: F.adaptive_avg_pool2d(x, 7), X,
     ((2, 3, 14, 14), (1, 2, 14, 14)), ADAPT)
case("adaptive_avg_7_from_10", lambda x: F.adaptive_avg_pool2d(x, 7), X, ((2, 3, 10, 10),), ADAPT)
case("adaptive_avg_uneven", lambda x: F.adaptive_avg_pool2d(x, (3, 5)), Arg(layout="t"),
     ((2, 3, 13, 11),), ADAPT)
case("adaptive_avg_big_even", lambda x: F.adaptive_avg_pool2d(x, (2, 1)), X, ((2, 3, 14, 14),),
     ADAPT)                                       # 7 x 14 windows: a reduction kernel
case("adaptive_avg_big_uneven", lambda x: F.adaptive_avg_pool2d(x, (3, 2)), X,
     ((2, 3, 20, 15),), ADAPT)                    # up to 8 x 8 windows: masked reduction
case("adaptive_avg1d", lambda x: F.adaptive_avg_pool1d(x, 4), X, ((2, 3, 10),), ADAPT)
case("adaptive_avg3d", lambda x: F.adaptive_avg_pool3d(x, (2, 3, 4)), X, ((1, 2, 5, 7, 9),),
     "aten._adaptive_avg_pool3d.default")

# --- upsampling. make_fx decomposes nearest into index math (already lowered ops) and keeps
# upsample_bilinear2d.default; torch.export keeps both .vec overloads.
NEAREST = "aten.upsample_nearest2d.vec"
BILINEAR = "aten.upsample_bilinear2d.default"
BILINEAR_VEC = "aten.upsample_bilinear2d.vec"
case("nearest_make_fx", lambda x: F.interpolate(x, scale_factor=2), X, ((2, 3, 5, 7),))
case("nearest_x2", lambda x: F.interpolate(x, scale_factor=2), X, ((2, 3, 5, 7),), NEAREST,
     tol="exact", export=True)
# 4 channels: for fewer, torch's CUDA meta for nearest says contiguous where the kernel
# returns channels-last (kiln gives outputs the meta's strides)
case("nearest_size", lambda x: F.interpolate(x, size=(9, 13)), Arg(layout="cl"),
     ((2, 4, 5, 7),), NEAREST, tol="exact", export=True)
case("nearest_1.7", lambda x: F.interpolate(x, scale_factor=1.7), X, ((1, 2, 9, 11),), NEAREST,
     tol="exact", export=True)            # float32 source indices, like eager's
case("nearest_down", lambda x: F.interpolate(x, scale_factor=0.5), X, ((1, 2, 9, 10),), NEAREST,
     tol="exact", export=True)
case("bilinear_x2", lambda x: F.interpolate(x, scale_factor=2, mode="bilinear"), X,
     ((2, 3, 5, 7),), BILINEAR)
case("bilinear_align", lambda x: F.interpolate(x, size=(9, 4), mode="bilinear",
                                               align_corners=True), X, ((2, 3, 5, 7),), BILINEAR)
case("bilinear_1.7", lambda x: F.interpolate(x, scale_factor=1.7, mode="bilinear"),
     Arg(layout="t"), ((1, 2, 9, 11),), BILINEAR)
case("bilinear_same_h", lambda x: F.interpolate(x, size=(5, 12), mode="bilinear"), X,
     ((1, 2, 5, 7),), BILINEAR)
case("bilinear_vec", lambda x: F.interpolate(x, scale_factor=2, mode="bilinear"), X,
     ((2, 3, 5, 7),), BILINEAR_VEC, export=True)
case("bilinear_vec_align", lambda x: F.interpolate(x, size=(3, 11), mode="bilinear",
                                                   align_corners=True), X, ((1, 2, 6, 7),),
     BILINEAR_VEC, export=True)

# --- pointwise math (libdevice on GPU, NumPy / torch under the interpreter)
UNARY = ((33, 17), (4, 1, 9))
UNARY_T = UNARY + ((17, 9),)
for _name, _fn, _dom in (
        ("atan", torch.atan, "normal"), ("asin", torch.asin, "unit"), ("acos", torch.acos, "unit"),
        ("tan", torch.tan, "tan"), ("sinh", torch.sinh, "normal"), ("cosh", torch.cosh, "normal"),
        ("asinh", torch.asinh, "normal"), ("acosh", torch.acosh, "ge1"),
        ("atanh", torch.atanh, "unit"), ("log10", torch.log10, "positive"),
        ("erfc", torch.erfc, "normal"), ("erfinv", torch.erfinv, "unit"),
        ("lgamma", torch.lgamma, "positive"), ("i0", torch.i0, "normal")):
    case(_name, _fn, Arg(_dom), UNARY, f"aten.{_name}.default", tol="approx")
    case(f"{_name}_t", _fn, Arg(_dom, layout="t"), ((9, 5),), f"aten.{_name}.default", tol="approx")
case("erfcx", torch.special.erfcx, X, UNARY, "aten.special_erfcx.default", tol="approx",
     gpu_dtypes=(torch.float32,))   # eager CUDA has no half erfcx
case("atan_int", torch.atan, Arg("int", torch.int32), ((7,),), "aten.atan.default", tol="approx")
case("atan2", torch.atan2, (X, X), (((33, 17), (33, 17)), ((5, 1), (1, 6))), "aten.atan2.default",
     tol="approx")
case("hypot", torch.hypot, (X, Arg(layout="t")), (((9, 5), (9, 5)),), "aten.hypot.default",
     tol="approx")
case("copysign", torch.copysign, (X, Arg("signs")), (((33, 17), (33, 17)), ((5, 1), (6,))),
     "aten.copysign.Tensor", tol="exact")
case("copysign_scalar", lambda x: torch.copysign(x, -1.0), X, UNARY, "aten.copysign.Scalar",
     tol="exact")
case("fmax", torch.fmax, (Arg("special"), Arg("special")), (((33, 17), (33, 17)), ((5, 1), (6,))),
     "aten.fmax.default", tol="exact")
case("fmin", torch.fmin, (Arg("special"), Arg("special")), (((33, 17), (33, 17)),),
     "aten.fmin.default", tol="exact")
case("fmax_int", torch.fmax, (Arg("int", torch.int64), Arg("int", torch.int32)), (((7,), (7,)),),
     "aten.fmax.default", tol="exact")
case("signbit", torch.signbit, Arg("signs"), UNARY_T, "aten.signbit.default")
case("signbit_int", torch.signbit, Arg("int", torch.int16), ((7,),), "aten.signbit.default")
case("elu", lambda x: F.elu(x), X, UNARY_T, "aten.elu.default", tol="approx")
case("elu_alpha", lambda x: F.elu(x, 0.3), X, ((33, 17),), "aten.elu.default", tol="approx")
case("selu", lambda x: F.selu(x), X, ((33, 17),), "aten.elu.default", tol="approx")
case("elu_all_params", lambda x: aten.elu(x, 0.7, 1.3, 2.0), X, ((33, 17),), "aten.elu.default",
     tol="approx")
# inputs straight from memory: a fused producer would skip eager's rounding to half, which
# rounding to decimals then amplifies
case("round_decimals", lambda x: torch.round(x, decimals=2), Arg("tens"), UNARY,
     "aten.round.decimals")
case("round_neg_decimals", lambda x: torch.round(x, decimals=-1), Arg("hundreds"), ((33, 17),),
     "aten.round.decimals")
case("ldexp", torch.ldexp, (X, Arg("ldexp", torch.int64)), (((33, 17), (33, 17)),),
     "aten.ldexp.Tensor", tol="exact")
case("xlogy_scalar", lambda x: torch.xlogy(x, 2.0), Arg("positive"), ((33, 17),),
     "prims.scalar_tensor.default")

# --- shifts (eager: amounts outside [0, bits) shift everything out; >> keeps the sign)
I64, I32, I8, U8 = (Arg("int", d) for d in (torch.int64, torch.int32, torch.int8, torch.uint8))
BIN = (((33, 17), (33, 17)), ((5, 1), (1, 6)))
case("lshift", lambda a, b: a << b, (I64, Arg("shift", torch.int64)), BIN, "aten.__lshift__.Tensor",
     tol="exact")
case("rshift", lambda a, b: a >> b, (I64, Arg("shift", torch.int64)), BIN, "aten.__rshift__.Tensor",
     tol="exact")
case("lshift_neg", lambda a, b: a << b, (I32, Arg("shift_neg", torch.int32)), BIN[:1],
     "aten.__lshift__.Tensor", tol="exact")
case("rshift_neg", lambda a, b: a >> b, (I32, Arg("shift_neg", torch.int32)), BIN[:1],
     "aten.__rshift__.Tensor", tol="exact")
case("lshift_int8", lambda a, b: a << b, (I8, Arg("shift8", torch.int8)), BIN[:1],
     "aten.__lshift__.Tensor", tol="exact")
case("rshift_uint8", lambda a, b: a >> b, (Arg("shift", torch.uint8), Arg("shift8", torch.uint8)),
     BIN[:1], "aten.__rshift__.Tensor", tol="exact")
case("lshift_scalar", lambda a: a << 3, I64, ((7,), (9, 5)), "aten.__lshift__.Scalar", tol="exact")
case("rshift_scalar", lambda a: a >> 2, Arg("int", torch.int16), ((7,),), "aten.__rshift__.Scalar",
     tol="exact")
case("bitwise_left_shift", torch.bitwise_left_shift, (I64, Arg("shift", torch.int64)), BIN[:1],
     "aten.bitwise_left_shift.Tensor", tol="exact")
case("bitwise_right_shift", torch.bitwise_right_shift, (I32, Arg("shift_neg", torch.int32)), BIN[:1],
     "aten.bitwise_right_shift.Tensor", tol="exact")
case("bitwise_right_shift_scalar", lambda a: torch.bitwise_right_shift(a, 65), I64, ((7,),),
     "aten.bitwise_right_shift.Tensor_Scalar", tol="exact")
case("bitwise_left_shift_scalar", lambda a: torch.bitwise_left_shift(a, 5), I32, ((7,),),
     "aten.bitwise_left_shift.Tensor_Scalar", tol="exact")
case("bitwise_shift_scalar_tensor", lambda b: (torch.bitwise_left_shift(3, b),
                                               torch.bitwise_right_shift(-1000, b)),
     Arg("shift", torch.int64), ((33, 17),),
     ("aten.bitwise_left_shift.Scalar_Tensor", "aten.bitwise_right_shift.Scalar_Tensor"),
     tol="exact")

# --- scalar-first overloads
case("remainder_scalar_tensor", lambda b: torch.remainder(2.5, b), Arg("nonzero"), ((33, 17),),
     "aten.remainder.Scalar_Tensor")
case("bitwise_scalar_tensor", lambda b: (torch.bitwise_and(5, b), torch.bitwise_or(5, b),
                                         torch.bitwise_xor(-3, b)), I64, ((33, 17),),
     ("aten.bitwise_and.Scalar_Tensor", "aten.bitwise_or.Scalar_Tensor",
      "aten.bitwise_xor.Scalar_Tensor"), tol="exact")


# ----------------------------------------------------------------------------- checking
TOLERANCES = {  # (rtol, atol); non-float outputs are compared exactly
    ("exact", torch.float32): (0.0, 0.0), ("default", torch.float32): (1e-5, 1e-5),
    ("approx", torch.float32): (1e-4, 1e-4),
    ("exact", torch.float16): (0.0, 0.0), ("default", torch.float16): (1e-2, 1e-2),
    ("approx", torch.float16): (1e-2, 1e-2),
    ("exact", torch.bfloat16): (0.0, 0.0), ("default", torch.bfloat16): (2e-2, 2e-2),
    ("approx", torch.bfloat16): (2e-2, 2e-2),
}


def _tolerance(c: Case, dtype: torch.dtype) -> tuple[float, float]:
    if not dtype.is_floating_point:
        return 0.0, 0.0
    return TOLERANCES[(c.tol, torch.float32 if dtype == torch.float64 else dtype)]


def _tuple_fn(fn):
    def graph_fn(*args):
        out = fn(*args)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)
    return graph_fn


class _Module(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def compile_case(c: Case, inputs):
    """(compiled callable, the graph kiln lowered, KilnFallbackWarnings raised)."""
    fn = _tuple_fn(c.fn)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", KilnFallbackWarning)
        if c.export:
            compiled = compiler.compile_module(_Module(fn), inputs)
            graph = compiled.captured.gm
        else:
            gm = make_fx(fn, decomposition_table=decomposition_table())(*inputs)
            compiled = compiler.compile_fx(gm, inputs)
            graph = trace_fx(gm, inputs)
    fallbacks = [str(w.message) for w in caught if issubclass(w.category, KilnFallbackWarning)]
    return compiled, graph, fallbacks


def graph_ops(graph: torch.fx.GraphModule) -> set[str]:
    return {str(n.target) for n in graph.graph.nodes if n.op == "call_function"}


def check(c: Case, shapes, dtype: torch.dtype, device: str) -> None:
    gen, seed = generator()
    where = f"{c.name} {shapes} {dtype} {device} (KILN_TEST_SEED={seed})"

    def draw():
        return [make_tensor(a, s, dtype, device, gen) for a, s in zip(c.args, shapes)]

    compiled, graph, fallbacks = compile_case(c, draw())
    assert compiled.fallback_ops == () and not fallbacks, \
        f"{where}: fell back to ATen for {compiled.fallback_ops} {fallbacks}"
    assert compiled.kernel_count >= 1, f"{where}: generated no kernel"
    missing = set(c.ops) - graph_ops(graph)
    assert not missing, f"{where}: {sorted(missing)} not in the lowered graph {graph_ops(graph)}"

    fresh = draw()
    got = compiled(*fresh)
    got = got if isinstance(got, tuple) else (got,)
    want = _tuple_fn(c.fn)(*fresh)
    assert len(got) == len(want), f"{where}: {len(got)} outputs, eager gives {len(want)}"
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype and g.shape == w.shape, \
            f"{where}: output {k} is {g.dtype}{tuple(g.shape)}, eager {w.dtype}{tuple(w.shape)}"
        rtol, atol = _tolerance(c, w.dtype)
        torch.testing.assert_close(g, w, rtol=rtol, atol=atol, equal_nan=True,
                                   msg=lambda m, k=k: f"{where}: output {k}: {m}")
        # eager's output strides (channels-last in, channels-last out); size-1 dims aside
        assert all(n == 1 or a == b for n, a, b in zip(w.shape, g.stride(), w.stride())), \
            f"{where}: output {k} strides {g.stride()}, eager {w.stride()}"


def _params(device: str):
    out = []
    for c in CASES:
        dtypes = c.gpu_dtypes if device == "cuda" and c.float_inputs else (torch.float32,)
        for dtype in dtypes:
            for shapes in c.shapes:
                label = "*".join("x".join(map(str, s)) for s in shapes)
                out.append(pytest.param(c, shapes, dtype,
                                        id=f"{c.name}-{label}-{str(dtype)[6:]}"))
    return out


@pytest.mark.parametrize("c,shapes,dtype", _params("cpu"))
def test_extra_op_cpu(c, shapes, dtype):
    check(c, shapes, dtype, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("c,shapes,dtype", _params("cuda"))
def test_extra_op_gpu(c, shapes, dtype):
    check(c, shapes, dtype, "cuda")


# ----------------------------------------------------------------------------- coverage
# The overloads this file is about: each must be the ``ops`` of some case above.
POINTWISE_ADDED = (
    "aten.atan.default", "aten.asin.default", "aten.acos.default", "aten.tan.default",
    "aten.sinh.default", "aten.cosh.default", "aten.asinh.default", "aten.acosh.default",
    "aten.atanh.default", "aten.log10.default", "aten.erfc.default", "aten.erfinv.default",
    "aten.special_erfcx.default", "aten.lgamma.default", "aten.i0.default",
    "aten.atan2.default", "aten.hypot.default", "aten.copysign.Tensor", "aten.copysign.Scalar",
    "aten.fmax.default", "aten.fmin.default", "aten.signbit.default", "aten.elu.default",
    "aten.round.decimals", "aten.ldexp.Tensor", "prims.scalar_tensor.default",
    "aten.remainder.Scalar_Tensor", "aten.bitwise_and.Scalar_Tensor",
    "aten.bitwise_or.Scalar_Tensor", "aten.bitwise_xor.Scalar_Tensor",
    "aten.__lshift__.Tensor", "aten.__lshift__.Scalar", "aten.__rshift__.Tensor",
    "aten.__rshift__.Scalar", "aten.bitwise_left_shift.Tensor",
    "aten.bitwise_left_shift.Tensor_Scalar", "aten.bitwise_left_shift.Scalar_Tensor",
    "aten.bitwise_right_shift.Tensor", "aten.bitwise_right_shift.Tensor_Scalar",
    "aten.bitwise_right_shift.Scalar_Tensor",
)


def added_ops() -> set[str]:
    from compiler.lowering import pooling
    table = {str(op) for op in default_table().entries}
    pooling_ops = {str(op) for op in pooling.REGISTRY.entries()}
    assert set(POINTWISE_ADDED) <= table, sorted(set(POINTWISE_ADDED) - table)
    return pooling_ops | set(POINTWISE_ADDED)


def test_cases_cover_added_ops():
    """Every op this file is about is the declared subject of some case (and the cases'
    ``ops`` checks make sure each one really is in the graph kiln lowers)."""
    declared = {op for c in CASES for op in c.ops}
    missing = sorted(added_ops() - declared)
    assert not missing, f"added lowerings with no case in tests/test_ops_extra.py: {missing}"


# ----------------------------------------------------------------------------- dynamic batch
class _PoolAndResample(torch.nn.Module):
    """A CNN's pooling and resampling ops, served at any batch size."""
    def forward(self, x):
        up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return (F.max_pool2d(x, 3, 2, 1), F.avg_pool2d(x, 2), F.adaptive_avg_pool2d(x, 1),
                F.adaptive_avg_pool2d(x, (3, 2)), up, F.interpolate(x, size=(9, 5)),
                F.avg_pool3d(x[:, None], 2))


def test_pooling_and_resampling_with_a_dynamic_batch_lower():
    """Only the spatial dims are worked out on ints; a dynamic batch passes through as an
    index symbol, so these lower instead of falling back (ResNet at a dynamic batch fell
    back for its max pool, SegFormer for its upsampling)."""
    from torch.export import Dim
    gen, seed = generator()
    module = _PoolAndResample()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", KilnFallbackWarning)
        compiled = compiler.compile_module(module, (torch.randn(3, 4, 8, 6, generator=gen),),
                                           dynamic_shapes=({0: Dim("batch", min=1, max=64)},))
    fallbacks = [str(w.message) for w in caught if issubclass(w.category, KilnFallbackWarning)]
    assert compiled.fallback_ops == () and not fallbacks, (seed, compiled.fallback_ops)
    for batch in (1, 5):
        x = torch.randn(batch, 4, 8, 6, generator=gen)
        for k, (got, want) in enumerate(zip(compiled(x), module(x))):
            torch.testing.assert_close(got, want, msg=lambda m, k=k: f"seed {seed} out {k}: {m}")
