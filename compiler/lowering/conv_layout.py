"""Where a library convolution's result lands: the strides cuDNN (on CUDA) or ATen's conv
(elsewhere) gives it for operands of given strides, decided at lowering time so the
wrapper need not copy the result into the layout the graph expected.

Example (an NHWC input on CUDA answers NHWC, where the graph's eager value was NCHW):
    >>> import torch
    >>> val = torch.empty(1, 4, 6, 6)
    >>> nhwc = (144, 1, 24, 4)
    >>> conv_output_stride(val, ((1, 4, 6, 6), nhwc), ((4, 1, 3, 3), (9, 9, 3, 1)),
    ...                    ([1, 1], [1, 1], [1, 1], False, [0, 0], 4), "cuda")
    (144, 1, 24, 4)
"""
from __future__ import annotations

import sympy
import torch

from ..ir import contiguous_strides
from .common import channels_last_strides

aten = torch.ops.aten


def conv_output_stride(val, x: tuple, w: tuple, rest, device_type: str | None = None
                       ) -> tuple | None:
    """The strides a convolution returns for an input and a weight of these ``(size,
    stride)`` on ``device_type`` (the lowering target; by default ``val``'s device), where
    they differ from the graph's (``val``: what eager's input gave); None keeps the graph's.

    kiln may hand a conv an input laid out unlike eager's (an NHWC norm output feeding a
    depthwise conv); the conv answers in that layout, and a wrong prediction costs a copy
    of the whole output into the predicted one. On CUDA the answer is cuDNN's rule
    (``cudnn_conv_suggest_memory_format``), decided here rather than by a fake conv, which
    knows cuDNN only on a host with a GPU: NHWC when the input or the weight suggests NHWC,
    for a 4-d conv not in float64. CUDA's other conv backends run only NCHW convs (the
    depthwise kernel is taken only where cuDNN's rule says NCHW), so the rule holds there
    too. On other devices the fake conv of the same strides answers. Static sizes only.
    """
    dims = (*x[0], *x[1], *w[0], *w[1], *val.shape)
    if not all(isinstance(d, (int, sympy.Integer)) for d in dims):
        return None
    (x_size, x_stride), (w_size, w_stride) = ([tuple(int(d) for d in part) for part in t]
                                              for t in (x, w))
    size = tuple(int(d) for d in val.shape)
    if (device_type or val.device.type) == "cuda":
        nhwc = len(size) == 4 and val.dtype != torch.float64 and (
            _suggests_nhwc(x_size, x_stride) or _suggests_nhwc(w_size, w_stride))
        stride = channels_last_strides(size) if nhwc else contiguous_strides(size)
    elif getattr(val, "fake_mode", None) is not None:
        with val.fake_mode:
            out = aten.convolution.default(
                torch.empty_strided(x_size, x_stride, dtype=val.dtype, device=val.device),
                torch.empty_strided(w_size, w_stride, dtype=val.dtype, device=val.device),
                None, *rest)
        stride = tuple(out.stride())
    else:
        return None
    stride = tuple(sympy.Integer(int(s)) for s in stride)
    if all(n == 1 or a == b for n, a, b in zip(size, stride, val.stride())):
        return None
    return stride


def _suggests_nhwc(size, stride) -> bool:
    """``Tensor.suggest_memory_format()`` is channels-last (ATen's stride test, ambiguous
    layouts such as C == 1 counting as NCHW)."""
    t = torch.empty_strided(size, stride, device="meta")
    try:
        from torch._prims_common import suggest_memory_format
    except ImportError:   # a torch without it: the plain test, which ambiguous cases fail
        return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    return suggest_memory_format(t) == torch.channels_last
