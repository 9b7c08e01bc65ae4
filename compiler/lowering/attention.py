"""Attention lowerings: ``scaled_dot_product_attention`` (and the backend ops make_fx
records) run as one ATen call from the wrapper, with operands laid out the way torch's fused
GPU kernels take them.

torch picks flash, memory-efficient or cuDNN attention per call from the tensors it is
handed. An operand whose last stride is not 1 sends it to the math path: eleven fp32 eager
kernels a call (T5's relative position bias, gathered as (q, k, heads) and permuted, did
that in eager; benchmarks/results/2026-12-07/s8). So every operand reaches torch dense in
its last dim. A mask kiln computes is also stored only at the extent it varies: a dim its
body never indexes (the batch of a position bias, the heads and queries of a padding
mask) is realized at size 1 and handed over with stride 0, as eager's expanded masks are.
A computed mask that masks nothing (``ranges``: export traces transformers' masks as
``arange(n) >= 0`` where eager passes None) is not passed at all.

Example:
    >>> import torch
    >>> torch.ops.aten.scaled_dot_product_attention.default in REGISTRY.entries()
    True
"""
from __future__ import annotations

import sympy
import torch

from ..ir import BufferRef, TensorValue, contiguous_strides, index_symbols, map_indices
from ..sizevars import free_symbols
from .ranges import always_true, always_zero
from .registry import Registry

aten = torch.ops.aten
REGISTRY = Registry("attention")

ATTENTION_OPS = (aten.scaled_dot_product_attention.default,) + tuple(
    # what make_fx and aot_autograd record for sdpa: the backend's fused kernel itself
    getattr(aten, name).default for name in (
        "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu")
    if hasattr(aten, name))
MASK_ARGS = ("attn_mask", "attn_bias")     # the schemas' names for the additive mask


@REGISTRY.register(*ATTENTION_OPS)
def lower_attention(ctx, *args, **kwargs):
    names = [a.name for a in ctx.node.target._schema.arguments]
    args = tuple(_operand(ctx, a, names[i] in MASK_ARGS) for i, a in enumerate(args))
    kwargs = {k: _operand(ctx, v, k in MASK_ARGS) for k, v in kwargs.items()}
    return ctx.call_extern(args, kwargs, is_fallback=False)


def _operand(ctx, value, is_mask: bool):
    """``value`` as a view with last stride 1 (or a last dim of 1): as it is where its
    buffer has that, else realized row-major (broadcast dims kept at size 1 for a mask).
    A mask that masks nothing (all True, or an all-zero bias) is None: torch's unmasked
    fused kernels (flash) then run, as in eager where the model passed no mask."""
    if is_mask and isinstance(value, TensorValue) and _masks_nothing(value):
        return None
    if not isinstance(value, TensorValue) or len(value.size) == 0 or value.size[-1] == 1:
        return value
    ref = ctx.strided_view(value)
    if ref is not None and ctx.passed_stride(ref)[-1] == 1:
        return ref
    if ref is None and is_mask:
        return _broadcast_mask(ctx, value)
    return ctx.buffer_ref_with_strides(value, contiguous_strides(value.size))


def _masks_nothing(value: TensorValue) -> bool:
    return always_true(value) if value.dtype == torch.bool else always_zero(value)


def _broadcast_mask(ctx, value: TensorValue) -> BufferRef:
    """A computed mask realized once per element it tells apart, and viewed back at its full
    size with stride 0 in the dims its body does not index."""
    used: set = set()
    map_indices(value.body, lambda index: used.update(free_symbols(index)) or index)
    # The last dim is kept whole even where it does not vary: torch's fused kernels need
    # its stride to be 1, which a broadcast dim's 0 is not.
    varies = [sym in used for sym in index_symbols(value.ndim)[:-1]] + [True]
    if all(varies):
        return ctx.buffer_ref_with_strides(value, contiguous_strides(value.size))
    compact = tuple(size if v else sympy.Integer(1) for size, v in zip(value.size, varies))
    # The body reads no dropped symbol, so it computes the compact tensor as it is.
    ref = ctx.buffer_ref_with_strides(TensorValue(value.dtype, value.device, compact,
                                                  value.body), contiguous_strides(compact))
    stride = tuple(st if v else sympy.Integer(0) for st, v in zip(ref.stride, varies))
    return BufferRef(ref.name, tuple(value.size), stride, ref.offset, False)
