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
from .common import channels_last_strides

aten = torch.ops.aten
REGISTRY = Registry("extern")

EXTERN_OPS = (
    aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default,
    aten.scaled_dot_product_attention.default,
) + tuple(getattr(aten, name).default for name in (
    # what make_fx and aot_autograd record for sdpa: the backend's fused kernel itself
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu")
    if hasattr(aten, name))


@REGISTRY.register(*EXTERN_OPS)
def lower_extern(ctx, *args, **kwargs):
    return ctx.call_extern(args, kwargs, is_fallback=False)


@REGISTRY.register(aten.convolution.default)
def lower_convolution(ctx, x, weight, *rest):
    """cuDNN convolution; channels-last when the graph chose it (``ctx.channels_last``):
    input and weight are given NHWC strides (copied if need be) and the output stays NHWC
    for the ops after it, which read any strides; graph outputs get eager's strides back."""
    if not ctx.channels_last:
        return ctx.call_extern((x, weight) + rest, {}, is_fallback=False)
    x_ref = ctx.buffer_ref_with_strides(x, channels_last_strides(x.size))
    w_ref = ctx.buffer_ref_with_strides(weight, channels_last_strides(weight.size))
    return ctx.call_extern((x_ref, w_ref) + rest, {}, is_fallback=False,
                           out_stride=channels_last_strides(ctx.meta_size()))
