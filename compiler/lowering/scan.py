"""Scan lowerings: cumsum, cumprod and logcumsumexp along any dim, one row-scan kernel each.

A scan is realized into a ``ScanBuffer``: its pointwise producers are inlined into the scan
kernel (the scanned values are computed where they are loaded), and consumers read the result
like any buffer. Dtypes follow eager: integer and bool inputs scan in int64, ``dtype=`` casts
the input first, float16/bfloat16 scan in float32 registers and round once per element.
Rows up to ``PERSISTENT_MAX_RNUMEL`` are scanned in registers in one pass; longer (or
symbolic) rows loop over chunks with a carried prefix (compiler/codegen/scan.py).

Example:
    >>> import torch
    >>> torch.ops.aten.cumsum.default in REGISTRY.entries()
    True
"""
from __future__ import annotations

import torch

from ..ir import ScanBuffer
from .registry import Registry
from .common import SUPPORTED_DTYPES, cast_expr, normalize_dim, to_dtype

aten = torch.ops.aten
REGISTRY = Registry("scan")


def _numel_hint(val: torch.Tensor) -> int:
    n = val.numel()
    return int(n.node.hint) if isinstance(n, torch.SymInt) else int(n)


def _ok(node) -> bool:
    """A non-empty input of a supported dtype (an empty scan has nothing to compute)."""
    src = node.args[0].meta.get("val") if isinstance(node.args[0], torch.fx.Node) else None
    out = node.meta.get("val")
    return (isinstance(src, torch.Tensor) and isinstance(out, torch.Tensor)
            and src.dtype in SUPPORTED_DTYPES and out.dtype in SUPPORTED_DTYPES
            and _numel_hint(src) > 0)


def _float_ok(node) -> bool:
    return _ok(node) and node.meta["val"].dtype.is_floating_point


def scan(ctx, x, dim: int, scan_type: str, cast_rounds: bool = False):
    """Realize ``scan_type`` of ``x`` along ``dim`` with the current node's output dtype."""
    out = ctx.meta_val().dtype
    if x.ndim == 0:          # a 0-d scan is its input (in the output dtype)
        return to_dtype(x, out, rounds=True)
    dim = normalize_dim(dim, x.ndim)
    body = cast_expr(x.body, out, rounds=cast_rounds)
    layout = ctx.eager_layout()
    return ctx.append_buffer(ScanBuffer(ctx.new_name("buf"), layout, body, dim, scan_type))


@REGISTRY.register(aten.cumsum.default, supports=_ok)
def lower_cumsum(ctx, x, dim, dtype=None):
    # dtype=: eager casts the input first (rounding to a narrower type), then scans
    return scan(ctx, x, dim, "sum", cast_rounds=dtype is not None)


@REGISTRY.register(aten.cumprod.default, supports=_ok)
def lower_cumprod(ctx, x, dim, dtype=None):
    return scan(ctx, x, dim, "prod", cast_rounds=dtype is not None)


@REGISTRY.register(aten.logcumsumexp.default, supports=_float_ok)
def lower_logcumsumexp(ctx, x, dim):
    return scan(ctx, x, dim, "logsumexp")
