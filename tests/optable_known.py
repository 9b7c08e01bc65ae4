"""What the op table knows kiln does not do: compiler bugs found (strict xfails) and ops
that are not lowered (they must fall back with a warning and still match eager).

Split from ``optable.py`` so each stays a readable size; ``tests/test_ops.py`` uses both.

Example:
    >>> all(entry.op.startswith(("aten.", "prims.")) for entry in UNLOWERED)
    True
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from optable import I64, P, S, X, Arg, Param, Shape

@dataclass(frozen=True)
class KnownBug:
    """A compiler bug the table found: ``applies(param)`` picks the cases it breaks."""
    reason: str
    applies: Callable[[Param], bool]
    repro: str = ""


def _all_size_one(param: Param) -> bool:
    return all(math.prod(s.size) == 1 for s in param.shapes)


def _scalar_with_tensor(param: Param) -> bool:
    sizes = [s.size for s in param.shapes]
    return () in sizes and any(math.prod(z) > 1 for z in sizes)


KNOWN_BUGS: list[KnownBug] = [
    KnownBug(
        "CUDA float16: remainder by an inexact divisor (0.1) differs from eager's CUDA kernel "
        "on some elements (kiln: fmod in float32, moved into the divisor's sign, rounded once "
        "to half); float32 and bfloat16 match",
        lambda p: p.device == "cuda" and p.dtype == torch.float16
        and p.case.name == "remainder_inexact",
        "a = torch.randn(33, 17, device='cuda', dtype=torch.float16); compile_fx(make_fx("
        "lambda a: (torch.remainder(a, 0.1),))(a), [a])(a)[0] != torch.remainder(a, 0.1)"),
]


def known_bug(param: Param) -> KnownBug | None:
    return next((b for b in KNOWN_BUGS if b.applies(param)), None)


# ----------------------------------------------------------------------------- not lowered
@dataclass(frozen=True)
class Unlowered:
    """An op kiln does not lower: compiling ``fn`` must fall back with a warning naming
    ``op`` (an ATen overload path as ``fallback_ops`` spells it) and still match eager."""
    name: str
    fn: Callable
    args: tuple[Arg, ...]
    shapes: tuple[Shape, ...]
    op: str
    tol: str = "default"


IDX4 = Arg("index4", torch.int64)
UNLOWERED: list[Unlowered] = [
    Unlowered("pow_int_tensor", lambda a, b: torch.pow(a, b), (I64, Arg("smallpos", torch.int64)),
              (S(7, 9), S(7, 9)), "aten.pow.Tensor_Tensor"),
    Unlowered("cummax", lambda a: a.cummax(0)[0], (X,), (S(7, 9),), "aten.cummax.default"),
    Unlowered("prod", lambda a: a.prod(-1), (X,), (S(7, 9),), "aten.prod.dim_int"),
    Unlowered("sort", lambda a: a.sort(-1)[0], (X,), (S(7, 9),), "aten.sort.default"),
    Unlowered("topk", lambda a: a.topk(3)[0], (X,), (S(7, 9),), "aten.topk.default"),
    Unlowered("kthvalue", lambda a: a.kthvalue(2, 1)[0], (X,), (S(7, 9),),
              "aten.kthvalue.default"),
    Unlowered("median", lambda a: a.median(1)[0], (X,), (S(7, 9),), "aten.median.dim"),
    Unlowered("scatter_reduce_amax", lambda a, i: a.scatter_reduce(1, i, a, "amax"), (X, IDX4),
              (S(5, 4), S(5, 4)), "aten.scatter_reduce.two"),
    Unlowered("index_put_bool_mask", lambda a, v: a.index_put((a > 0,), v), (X, X),
              (S(4, 3), S()), "aten.index_put.default"),
    Unlowered("masked_scatter", lambda a, b: a.masked_scatter(a > 0, b), (X, X),
              (S(4, 3), S(4, 3)), "aten.masked_scatter.default"),
    Unlowered("bucketize", lambda a, b: torch.bucketize(a, b.sort()[0]), (X, X),
              (S(4, 3), S(5)), "aten.bucketize.Tensor"),
    Unlowered("digamma", torch.digamma, (P,), (S(3, 4),), "aten.digamma.default", "approx"),
    Unlowered("bessel_j0", torch.special.bessel_j0, (X,), (S(3, 4),),
              "aten.special_bessel_j0.default", "approx"),
    Unlowered("nextafter", torch.nextafter, (X, X), (S(3, 4), S(3, 4)),
              "aten.nextafter.default", "exact"),
    Unlowered("grid_sample", lambda a, g: F.grid_sample(a, g.tanh(), align_corners=False),
              (X, X), (S(1, 2, 5, 5), S(1, 3, 3, 2)), "aten.grid_sampler_2d.default", "approx"),
    Unlowered("upsample_bicubic", lambda a: F.interpolate(a, scale_factor=2, mode="bicubic"),
              (X,), (S(1, 2, 3, 4),), "aten.upsample_bicubic2d.default", "approx"),
    Unlowered("upsample_trilinear", lambda a: F.interpolate(a, scale_factor=2,
                                                            mode="trilinear"),
              (X,), (S(1, 1, 2, 3, 4),), "aten.upsample_trilinear3d.default", "approx"),
]
