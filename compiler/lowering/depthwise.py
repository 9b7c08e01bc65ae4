"""Depthwise convolutions as kiln kernels: each output is a weighted sum over its window.

A depthwise conv (one filter per channel: ``groups`` equal to the input and output channels)
does a few multiply-adds per element, far too few for a GEMM; cuDNN runs it with kernels
of their own, and a served model's first call pays cuDNN's set-up for each new shape: in
a channels-last bf16 graph, several hundred ms per shape (EfficientNet's, MobileNet's and
ConvNeXt's first calls took 2-4 s, against eager's 0.3-0.9 s with ATen's own NCHW kernel).
Lowered here instead, it is a pointwise expression over the unrolled window (the pooling
lowerings' masked taps), built into the model's cubins ahead of time and fused with what
reads it (a norm, an activation). Taps accumulate in float32 for half types, as cuDNN does,
and the result is rounded once.

Measured on an H100 (benchmarks/results/2026-12-06, batch 32, bf16, channels-last, against
cuDNN in one call): steady time per layer is 0.54-0.93x cuDNN's for 3x3 windows, 0.9-1.4x
for 5x5 and 1.0-1.64x for ConvNeXt's 7x7 (largest at 56x56); whole models served from a
store reached their first result 4.8-6x sooner (EfficientNet-B0 2.62 -> 0.53 s, ConvNeXt-T
2.09 -> 0.35 s), steady 0.91x (EfficientNet-B0) to 1.18x (ConvNeXt-T) of all-cuDNN.
Option ``conv_kernels = "library"`` keeps cuDNN. Retimed in one call against cuDNN
(benchmarks/results/2026-12-07/s9/3, H100, batch 32, kernel alone): 1.25-2.09x cuDNN's time
as the flat kernel, 1.04-1.69x where 5x5 and larger windows tile 2-D (codegen/triton.py,
``_stencil_split``); cuDNN stays faster per layer, which is what tuning against it is for.

Example:
    >>> import torch
    >>> w = torch.empty(8, 1, 3, 3)
    >>> is_depthwise(torch.empty(2, 8, 5, 5), w, ([1, 1], [1, 1], [1, 1], False, [0, 0], 8))
    True
    >>> is_depthwise(torch.empty(2, 8, 5, 5), w, ([1, 1], [1, 1], [1, 1], False, [0, 0], 1))
    False
"""
from __future__ import annotations

import sympy
import torch

from ..ir import Const, TensorValue, index_symbols
from .common import SUPPORTED_DTYPES, cast_expr, to_dtype
from .pooling import MAX_WINDOW, _acc_dtype, _materialized, _op, pool_axes, window_taps


def is_depthwise(x: torch.Tensor, weight: torch.Tensor, rest) -> bool:
    """A 2-d, static-shape, floating convolution with one filter per channel and a window
    small enough to unroll (``x``, ``weight``: the graph's example values)."""
    stride, padding, dilation, transposed, _output_padding, groups = rest
    if transposed or x.dim() != 4 or weight.dim() != 4:
        return False
    if not all(isinstance(d, int) for d in (*x.shape, *weight.shape)):
        return False
    channels = x.shape[1]
    return (x.dtype.is_floating_point and x.dtype in SUPPORTED_DTYPES and x.numel() > 0
            and groups == channels and weight.shape[:2] == (channels, 1)
            and weight.shape[2] * weight.shape[3] <= MAX_WINDOW)


def lower_depthwise(ctx, x: TensorValue, weight: TensorValue, rest) -> TensorValue:
    """The depthwise conv of ``x`` by ``weight`` (no bias): the node's output, lazy."""
    stride, padding, dilation = (tuple(int(v) for v in t) for t in rest[:3])
    val = ctx.meta_val()
    size = tuple(sympy.Integer(int(s)) for s in val.shape)
    kernel = tuple(int(k) for k in weight.size[2:])
    axes = pool_axes(x.size[-2:], size[-2:], kernel, stride, padding, dilation)
    x = _materialized(ctx, x)
    acc = _acc_dtype(x.dtype)
    weight = _taps_outermost(ctx, to_dtype(weight, acc))
    _n, c, oh, ow = index_symbols(4)
    total = None
    for tap in window_taps(x, axes, (oh, ow), 0):
        w = cast_expr(weight.load([c, sympy.Integer(0), *map(sympy.Integer, tap.ks)]), acc)
        term = _op("mul", cast_expr(tap.value, acc), w)
        total = term if total is None else _op("add", total, term)
    if total is None:      # every window lies in the padding
        total = Const(0.0, acc)
    return TensorValue(val.dtype, val.device.type, size, cast_expr(total, val.dtype))


def _taps_outermost(ctx, weight: TensorValue) -> TensorValue:
    """The (C, 1, KH, KW) filter stored tap by tap with channels innermost (NHWC-like), in
    the accumulation type.

    Neighbouring threads compute neighbouring channels (NHWC), so each tap's weight load is
    then one coalesced read; in the filter's own layout the 32 lanes of a warp read 32
    addresses KH*KW elements apart for every tap. Stored in float32, a half filter is
    converted once here rather than at every output element (in Hopper SASS of ConvNeXt's
    7x7 kernel, those conversions were 392 of 2744 instructions). The copy is a few
    thousand elements.
    """
    channels, _, kh, kw = (int(s) for s in weight.size)
    stride = (1, channels * kh * kw, kw * channels, channels)
    return ctx.realize(weight, stride=tuple(sympy.Integer(s) for s in stride))
