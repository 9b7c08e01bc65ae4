"""Extern lowerings: ops kiln hands to vendor libraries (cuBLAS, cuDNN, flash attention).

These run as ATen calls from the wrapper on realized buffers, chosen on purpose (unlike a
fallback, they warn about nothing): a Triton GEMM template competes with them only in the
autotuning stage. Pointwise producers of their inputs are realized; consumers of their
outputs fuse as usual.

Example:
    >>> import torch
    >>> torch.ops.aten.mm.default in REGISTRY.entries()
    True
"""
from __future__ import annotations

import torch

from . import Registry

aten = torch.ops.aten
REGISTRY = Registry("extern")

EXTERN_OPS = (
    aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default,
    aten.convolution.default, aten.scaled_dot_product_attention.default,
)


@REGISTRY.register(*EXTERN_OPS)
def lower_extern(ctx, *args, **kwargs):
    return ctx.call_extern(args, kwargs, is_fallback=False)
