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

Tuning against it: with option ``depthwise_baseline`` each conv lowered here is recorded
(``ir.DepthwiseConv``) under a key of its own (``depthwise_key``: the lowering cannot know
the kernel key, which exists only after fusion), codegen gives the kernel computing it
cuDNN's conv as its baseline (``codegen.depthwise_baseline``), the tuner times both, and
where cuDNN won, a tuned config ``{"extern": 1}`` under this key (``depthwise_choices``
maps the kernel's tuned config to it) makes ``extern.lower_convolution`` call cuDNN.

Example:
    >>> import torch
    >>> w = torch.empty(8, 1, 3, 3)
    >>> is_depthwise(torch.empty(2, 8, 5, 5), w, ([1, 1], [1, 1], [1, 1], False, [0, 0], 8))
    True
    >>> is_depthwise(torch.empty(2, 8, 5, 5), w, ([1, 1], [1, 1], [1, 1], False, [0, 0], 1))
    False
"""
from __future__ import annotations

import hashlib
import json
from typing import Mapping

import sympy
import torch

from ..ir import (LOOP_SYMBOL, Const, DepthwiseConv, Expr, Layout, TensorValue, index_symbols,
                  loop_sum)
from .common import SUPPORTED_DTYPES, cast_expr, channels_last_strides, to_dtype
from .conv_layout import conv_output_stride
from .indexing import masked
from .pooling import MAX_WINDOW, _acc_dtype, _all, _materialized, _op, pool_axes, window_taps


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


def depthwise_key(ctx, x: TensorValue, rest) -> str:
    """The conv's name in tuned configs, known before lowering it: a hash of what decides
    its kernel's code and time (the graph's input, as kiln has it laid out where it is
    already stored, the filter's size, the window, the layout mode and the target), so a
    conv and its relowered self get the same key, and so do twin convs of one shape.

    Example (the graph's values are ``meta["val"]`` of the conv's inputs):
        >>> import torch
        >>> from compiler.config import CompilerOptions
        >>> from compiler.graph import GraphLowering
        >>> from compiler.lowering import default_table
        >>> f = lambda x, w: (torch.conv2d(x, w, padding=1, groups=4),)
        >>> from torch.fx.experimental.proxy_tensor import make_fx
        >>> gm = make_fx(f, tracing_mode="fake")(torch.randn(1, 4, 6, 6), torch.randn(4, 1, 3, 3))
        >>> options = CompilerOptions(depthwise_baseline=True)   # else nothing is recorded
        >>> lowered = GraphLowering(gm, default_table(), options, target="cpu").lower()
        >>> [c.key[:10] for c in lowered.depthwise]
        ['depthwise:']
    """
    x_val, w_val = (ctx.node.args[k].meta["val"] for k in (0, 1))
    view = ctx.strided_view(x)
    facts = {"x": [list(x_val.shape), list(x_val.stride()), str(x_val.dtype)],
             "view": None if view is None else [str(s) for s in (*view.stride, view.offset)],
             "weight": list(w_val.shape), "rest": [str(v) for v in rest],
             "channels_last": bool(ctx.channels_last), "target": ctx.target_device}
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()
    return f"depthwise:{digest[:32]}"


def extern_won(tuned: Mapping | None) -> bool:
    """Whether a conv's tuned config says cuDNN won its tuning (``{"extern": 1}``);
    untuned, the kiln kernel stays (it spares cuDNN's per-shape set-up)."""
    return bool(tuned and tuned.get("extern"))


def lower_depthwise(ctx, x: TensorValue, weight: TensorValue, rest,
                    key: str | None = None) -> TensorValue:
    """The depthwise conv of ``x`` by ``weight`` (no bias): the node's output, lazy. With
    option ``depthwise_baseline`` it is recorded under ``key`` (``ctx.depthwise``) for
    codegen to find and give its baseline."""
    stride, padding, dilation = (tuple(int(v) for v in t) for t in rest[:3])
    val = ctx.meta_val()
    size = tuple(sympy.Integer(int(s)) for s in val.shape)
    kernel = tuple(int(k) for k in weight.size[2:])
    axes = pool_axes(x.size[-2:], size[-2:], kernel, stride, padding, dilation)
    x = _materialized(ctx, x)
    acc = _acc_dtype(x.dtype)
    weight = _taps_outermost(ctx, to_dtype(weight, acc))
    if _loops(axes, ctx.options.depthwise_loop_taps):
        total = _row_loop(x, weight, axes, acc)
    else:
        taps = window_taps(x, axes, index_symbols(4)[2:], 0)
        total = _tap_sum([(tap.value, tap.ks) for tap in taps], weight, acc)
    if total is None:      # every window lies in the padding
        total = Const(0.0, acc)
    elif key is not None and ctx.options.depthwise_baseline:   # its only reader
        _record(ctx, key, x, weight, rest, total)
    return TensorValue(val.dtype, val.device.type, size, cast_expr(total, val.dtype))


def _tap_sum(terms, weight: TensorValue, acc: torch.dtype) -> Expr | None:
    """The sum of ``(value, (kh, kw))`` terms, each weighted by its filter element
    (None: no terms)."""
    c = index_symbols(2)[1]
    total = None
    for value, ks in terms:
        w = cast_expr(weight.load([c, sympy.Integer(0), *map(sympy.sympify, ks)]), acc)
        term = _op("mul", cast_expr(value, acc), w)
        total = term if total is None else _op("add", total, term)
    return total


def _loops(axes, min_taps: int) -> bool:
    """Whether the window is summed row by row in a loop (``ir.loop_sum``): a 2-D window
    of ``min_taps`` or more (option ``depthwise_loop_taps``; 0: never) whose every row is
    inside the input somewhere.

    Why: a cold start builds every kernel before its first result, and unrolled, a 7x7
    window is 98 loads that Triton's passes take seconds over. ConvNeXt-T's first 7x7
    kernel on an H100 machine: 2.8 s of its first call unrolled, 0.2 s written by hand as
    this loop, which ran 1.02x as fast (benchmarks/results/2026-12-08/s13/1). As emitted
    here (first row before the loop), its four 7x7 kernels built for sm_90 in 0.7-1.4 s
    each against 1.8-2.8 s unrolled, on a 2-CPU machine (s13/cold_compile_cpu.txt).
    """
    rows, cols = axes
    return (0 < min_taps <= rows.taps * cols.taps and rows.taps > 1
            and rows.live_taps() == list(range(rows.taps)))


def _row_loop(x: TensorValue, weight: TensorValue, axes, acc: torch.dtype) -> Expr | None:
    """The window's sum as a loop over its rows (``LOOP_SYMBOL``), each row's taps unrolled.
    A tap is read where its input row and column are inside the input; the row is checked
    on the sides where any row can leave it, the column as for unrolled taps."""
    rows, cols = axes
    n, c, oh, ow = index_symbols(4)
    row_valid = rows.any_tap_cond(oh, LOOP_SYMBOL)
    terms = []
    for k in cols.live_taps():
        value = x.load([n, c, rows.index(oh, LOOP_SYMBOL), cols.index(ow, k)])
        valid = _all([row_valid, cols.cond(ow, k)])
        terms.append((value if valid is None else masked(valid, value, 0), (LOOP_SYMBOL, k)))
    total = _tap_sum(terms, weight, acc)
    return None if total is None else loop_sum(total, rows.taps)


def _record(ctx, key: str, x: TensorValue, weight: TensorValue, rest, total) -> None:
    """Note the conv for codegen (``ir.DepthwiseConv``): the operands as the library path
    would get them (a weight in the graph's layout, or NHWC in a channels-last graph, as
    ``extern._library_conv`` passes it) and the layout its result would have."""
    x_ref, w_ref = ctx.strided_view(x), ctx.strided_view(weight)
    if x_ref is None or w_ref is None:   # not a strided view: no ATen call can take it
        return
    val, w_val = ctx.meta_val(), ctx.node.args[1].meta["val"]
    w_size = tuple(int(s) for s in w_val.shape)
    w_stride = (channels_last_strides(w_size) if ctx.channels_last
                else tuple(w_val.stride()))
    out_stride = conv_output_stride(val, (x_ref.size, x_ref.stride), (w_size, w_stride), rest,
                                    ctx.target_device)
    out_stride = tuple(val.stride()) if out_stride is None else out_stride
    size = tuple(sympy.Integer(int(s)) for s in val.shape)
    out = Layout(val.device.type, val.dtype, size,
                 tuple(sympy.Integer(int(s)) for s in out_stride))
    params = tuple(tuple(v) if isinstance(v, list) else v for v in rest)
    ctx.depthwise.append(DepthwiseConv(key, x_ref, w_ref, tuple(int(s) for s in w_stride),
                                       params, out, total))


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
