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

from .registry import Registry
from .attention import ATTENTION_OPS
from .common import channels_last_strides
from .conv_gemm import is_gemm_conv, lower_gemm_conv
from .conv_layout import conv_output_stride
from .depthwise import depthwise_key, extern_won, is_depthwise, lower_depthwise
from .pointwise import pointwise

aten = torch.ops.aten
REGISTRY = Registry("extern")

MATMUL_OPS = (aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default)
# Every op the wrapper hands a library: attention's are lowered in ``.attention``.
EXTERN_OPS = MATMUL_OPS + ATTENTION_OPS


@REGISTRY.register(*MATMUL_OPS)
def lower_extern(ctx, *args, **kwargs):
    return ctx.call_extern(args, kwargs, is_fallback=False)


@REGISTRY.register(aten.convolution.default)
def lower_convolution(ctx, x, weight, bias, *rest):
    """cuDNN convolution, but a depthwise one is a kiln kernel (``.depthwise``; cuDNN again
    where tuning said so: ``_depthwise``) and a patchify
    or 1x1 one of half type an mm (``.conv_gemm``), unless option ``conv_kernels`` is
    "library". Under "triton" the remaining convs stay this extern call here, and the
    planner puts kiln's implicit-GEMM template in its place (``codegen.conv``), fusing what
    reads the output as it does for a GEMM. Channels-last
    when the graph chose it (``ctx.channels_last``):
    input and weight are given NHWC strides (copied if need be) and the output stays NHWC
    for the ops after it, which read any strides; graph outputs get eager's strides back.

    The bias is left out of the call and added as a pointwise op: ATen would add it in a
    kernel of its own (a read and write of the whole output), where here it fuses into the
    kernel that reads the output next (a norm, an activation, a residual add), as in
    Inductor.
    """
    x_val, w_val = ctx.node.args[0].meta["val"], ctx.node.args[1].meta["val"]
    rest = _per_spatial_dim(rest, w_val.dim() - 2)
    if ctx.options.conv_kernels == "library":
        out = _library_conv(ctx, x, weight, rest)
    elif is_depthwise(x_val, w_val, rest):
        out = _depthwise(ctx, x, weight, rest)
    elif is_gemm_conv(x_val, w_val, rest):
        out = lower_gemm_conv(ctx, x, weight, rest)    # one mm: see .conv_gemm
    else:
        out = _library_conv(ctx, x, weight, rest)
    if bias is None:
        return out
    return pointwise("add", out, bias.reindex(out.size, lambda idx: [idx[1]]))


def _depthwise(ctx, x, weight, rest):
    """A kiln kernel (``.depthwise``), or cuDNN where a tuned config under the conv's own
    key says cuDNN won its tuning at this shape (``conv_kernels`` "auto" only: "triton"
    keeps kiln's kernels tuned or not, as it keeps the template). The key is made only
    where something reads it: tuned configs, or the option that records the conv."""
    if not (ctx.options.depthwise_baseline or ctx.configs):
        return lower_depthwise(ctx, x, weight, rest)
    key = depthwise_key(ctx, x, rest)
    if ctx.options.conv_kernels == "auto" and extern_won(ctx.tuned(key)):
        return _library_conv(ctx, x, weight, rest)
    return lower_depthwise(ctx, x, weight, rest, key)


def _per_spatial_dim(rest, dims: int) -> tuple:
    """``rest`` with one stride, padding, dilation and output padding per spatial dim.

    ATen broadcasts a single value to every dim, and graphs carry that form: ``conv2d``'s
    ``padding="valid"`` and ``"same"`` reach ``aten.convolution`` as ``[0]``. The kiln
    convs (depthwise, GEMM, the template) zip or index these per dim, so one value would
    unroll a single axis.
    """
    stride, padding, dilation, transposed, output_padding, groups = rest
    full = [list(v) * dims if len(v) == 1 else list(v)
            for v in (stride, padding, dilation, output_padding)]
    return (*full[:3], transposed, full[3], groups)


def _library_conv(ctx, x, weight, rest):
    if ctx.channels_last:
        x_ref = ctx.buffer_ref_with_strides(x, channels_last_strides(x.size))
        w_ref = ctx.buffer_ref_with_strides(weight, channels_last_strides(weight.size))
        out_stride = channels_last_strides(ctx.meta_size())
    else:
        x_ref = ctx.buffer_ref(x, ctx.node.args[0])
        w_ref = ctx.buffer_ref(weight, ctx.node.args[1])
        out_stride = conv_output_stride(ctx.meta_val(), (x.size, ctx.passed_stride(x_ref)),
                                        (weight.size, ctx.passed_stride(w_ref)), rest,
                                        ctx.target_device)
    return ctx.call_extern((x_ref, w_ref, None) + rest, {}, is_fallback=False,
                           out_stride=out_stride)
