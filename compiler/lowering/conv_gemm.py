"""Convolutions that are matrix products: 1x1 kernels, and patchify kernels (stride equal
to the kernel, no padding), as in ViT's, Swin's and DeiT's patch embeddings and ConvNeXt's
stem and downsampling layers.

Each output pixel reads its own patch and no other pixel's, so the conv is ``A @ W^T``:
``A`` holds one patch per row, (N*OH*OW, C*KH*KW), and ``W`` is the filter flattened the
same way. ``A`` is a view of the input where the input is NHWC and the kernel 1x1 with
stride 1, else a kiln kernel gathers it (fused with what produced the input). The product
runs as ``aten.mm`` -- cuBLAS, or kiln's GEMM template where ``matmul_template`` picks it,
which then fuses the bias and what follows into its epilogue.

Why not cuDNN: a served model's first call pays cuDNN's set-up, once per process (about
0.1 s) and again for each new conv shape (several ms each); a model whose convs are all
GEMMs or depthwise (ViT, Swin, ConvNeXt) then never starts cuDNN. The GEMM is the same
work cuDNN's implicit GEMM does. Half types only: for float32, cuDNN's convs use TF32 by
default and cuBLAS's matmuls do not, so the switch would slow them down.

Example:
    >>> import torch
    >>> rest = ([16, 16], [0, 0], [1, 1], False, [0, 0], 1)
    >>> x, w = torch.empty(2, 3, 32, 32, dtype=torch.bfloat16), torch.empty(8, 3, 16, 16)
    >>> is_gemm_conv(x, w, rest), is_gemm_conv(x, w, (([8, 8],) + rest[1:]))
    (True, False)
"""
from __future__ import annotations

import sympy
import torch

from ..ir import Layout, TensorValue, contiguous_strides
from ..sizevars import FloorDiv, ModularIndexing
from .views import simplify_value

aten = torch.ops.aten
GEMM_CONV_DTYPES = (torch.float16, torch.bfloat16)


def is_gemm_conv(x: torch.Tensor, weight: torch.Tensor, rest) -> bool:
    """A 2-d, static-shape, half-type conv, ungrouped and unpadded, whose kernel along each
    axis is 1 or equal to its stride (``x``, ``weight``: the graph's example values)."""
    stride, padding, dilation, transposed, _output_padding, groups = rest
    if transposed or groups != 1 or x.dim() != 4 or weight.dim() != 4 or any(padding):
        return False
    if not all(isinstance(d, int) for d in (*x.shape, *weight.shape)):
        return False
    if x.dtype not in GEMM_CONV_DTYPES or x.numel() == 0:
        return False
    return all(k == 1 or (k == s and d == 1)
               for k, s, d in zip(weight.shape[2:], stride, dilation))


def lower_gemm_conv(ctx, x: TensorValue, weight: TensorValue, rest) -> TensorValue:
    """The conv of ``x`` by ``weight`` (no bias) as one mm; the output is NHWC."""
    stride = [int(s) for s in rest[0]]
    n, c, _h, _w = (int(s) for s in x.size)
    cout, _, kh, kw = (int(s) for s in weight.size)
    oh, ow = (int(s) for s in ctx.meta_val().shape[2:])
    rows, depth = n * oh * ow, c * kh * kw
    tap = _tap_of(c, kh, kw, _channels_inner(ctx, weight))

    def patch(i):      # A[m, k]: the input element of row m's patch at its k-th tap
        m, k = i
        ch, ky, kx = tap(k)
        return [FloorDiv(m, oh * ow), ch, ModularIndexing(m, ow, oh) * stride[0] + ky,
                ModularIndexing(m, 1, ow) * stride[1] + kx]

    a = simplify_value(x.reindex(_sizes(rows, depth), patch))
    a = ctx.buffer_ref_with_strides(a, _sizes(depth, 1))
    w_t = simplify_value(weight.reindex(_sizes(depth, cout), lambda i: [i[1], *tap(i[0])]))
    size = _sizes(rows, cout)
    product = ctx.call_library(aten.mm.default, (a, ctx.buffer_ref(w_t)),
                               Layout(x.device, x.dtype, size, contiguous_strides(size)))
    return product.reindex(_sizes(n, cout, oh, ow),
                           lambda i: [(i[0] * oh + i[2]) * ow + i[3], i[1]])


def _sizes(*sizes: int) -> tuple:
    return tuple(sympy.Integer(s) for s in sizes)


def _tap_of(c: int, kh: int, kw: int, channels_inner: bool):
    """k -> (channel, ky, kx): the K dim ordered (c, kh, kw) as a contiguous filter stores
    it, or (kh, kw, c) as an NHWC one does (then both flattenings are views)."""
    if channels_inner:
        return lambda k: (ModularIndexing(k, 1, c), FloorDiv(k, kw * c),
                          ModularIndexing(k, c, kw))
    return lambda k: (FloorDiv(k, kh * kw), ModularIndexing(k, kw, kh), ModularIndexing(k, 1, kw))


def _channels_inner(ctx, weight: TensorValue) -> bool:
    """Whether the filter is stored channels-last (its input-channel stride is 1), so that
    flattening it (kh, kw, c) is a view rather than a copy."""
    ref = ctx.strided_view(weight)
    return ref is not None and int(weight.size[1]) > 1 and ref.stride[1] == 1 and \
        int(weight.size[2]) * int(weight.size[3]) > 1
