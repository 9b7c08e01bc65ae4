"""Normalisation lowerings kept whole at capture: inference BatchNorm.

``_native_batch_norm_legit_no_training`` is pointwise over the running statistics, so kiln
lowers it directly rather than letting capture decompose it: the decomposition costs a
noticeable part of capturing a conv net (dozens of BatchNorms, each retraced op by op) and
yields the same few pointwise ops. Like eager, half-precision inputs are normalised in
float32 and the result cast back.

Example:
    >>> import torch
    >>> torch.ops.aten._native_batch_norm_legit_no_training.default in REGISTRY.entries()
    True
"""
from __future__ import annotations

import operator

import torch

from .registry import Registry
from .common import to_dtype
from .pointwise import pointwise

aten = torch.ops.aten
REGISTRY = Registry("norm")


def _only_output_used(node: torch.fx.Node) -> bool:
    """Only ``result[0]`` is read: the saved mean/rstd of inference BatchNorm are empty
    (make_fx leaves unread ``getitem`` nodes for them, which are fine)."""
    return all(u.target is operator.getitem and (u.args[1] == 0 or not u.users)
               for u in node.users)


def _per_channel(v, x, dtype):
    """A (C,) statistic broadcast along dim 1 of ``x`` (N, C, ...)."""
    return to_dtype(v, dtype).reindex(x.size, lambda idx: [idx[1]])


def _inference_native(node: torch.fx.Node) -> bool:
    """``native_batch_norm`` (what make_fx traces) with ``training=False``."""
    return node.args[5] is False and _only_output_used(node)


@REGISTRY.register(aten.native_batch_norm.default, supports=_inference_native)
def lower_native_batch_norm(ctx, x, weight, bias, running_mean, running_var, training,
                            momentum, eps):
    return lower_batch_norm_inference(ctx, x, weight, bias, running_mean, running_var,
                                      momentum, eps)


@REGISTRY.register(aten._native_batch_norm_legit_no_training.default, supports=_only_output_used)
def lower_batch_norm_inference(ctx, x, weight, bias, running_mean, running_var, momentum, eps):
    acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    xf = to_dtype(x, acc)
    invstd = pointwise("rsqrt", pointwise("add", _per_channel(running_var, x, acc), eps))
    out = pointwise("mul", pointwise("sub", xf, _per_channel(running_mean, x, acc)), invstd)
    if weight is not None:
        out = pointwise("mul", out, _per_channel(weight, x, acc))
    if bias is not None:
        out = pointwise("add", out, _per_channel(bias, x, acc))
    return to_dtype(out, x.dtype), None, None
