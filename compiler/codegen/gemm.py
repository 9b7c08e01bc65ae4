"""What the GEMM template computes: an extern's operands as a (batch, M, N, K) product.

``gemm_of`` recognizes the externs the template can replace: mm/addmm/bmm (``a`` and ``b``
are strided views of the operands), and a convolution (``conv_of``), whose ``a`` is the
input gathered window by window -- an implicit GEMM. The template itself is
``codegen.matmul``; the conv's gather is ``codegen.conv``.

Example:
    >>> import torch, sympy
    >>> from compiler.ir import BufferRef, ExternKernel, Layout
    >>> n = sympy.Integer
    >>> a = BufferRef("arg0", (n(8), n(4)), (n(4), n(1)), n(0), True)
    >>> b = BufferRef("arg1", (n(4), n(16)), (n(16), n(1)), n(0), True)
    >>> out = Layout("cpu", torch.float32, (n(8), n(16)), (n(16), n(1)))
    >>> gemm_of(ExternKernel(("buf0",), (out,), "aten.mm.default", (a, b), (), False, False)).sizes
    (1, 8, 16, 4)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import sympy
import torch

from ..ir import BufferRef, ExternKernel, Layout
from .conv import CONV_OP, ConvGeometry, conv_of, is_static, ref_static

GEMM_OPS = ("aten.mm.default", "aten.addmm.default", "aten.bmm.default")
GEMM_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_GRID_Y = 65535


@dataclass(frozen=True)
class Gemm:
    """An mm/addmm/bmm as 3-D (batch, rows, cols) operand views: ``a`` (B, M, K) and ``b``
    (B, K, N); addmm's ``bias`` as given (broadcast to (M, N)) and its ``alpha``/``beta``.
    A convolution has ``conv`` set: ``a`` is then the 4-d input and ``b`` the 4-d filter as
    given, gathered by ``conv`` into (M, K) = (N*OH*OW, C*KH*KW) and (K, N) = (K, C_out)."""
    a: BufferRef
    b: BufferRef
    bias: BufferRef | None
    alpha: float
    beta: float
    sizes: tuple[int, int, int, int]     # B, M, N, K
    out: str
    out_layout: Layout
    conv: ConvGeometry | None = None

    @property
    def dtype(self) -> torch.dtype:
        return self.out_layout.dtype


def _batched(ref: BufferRef) -> BufferRef:
    """A 2-D operand as a batch of one (batch stride 0)."""
    if len(ref.size) == 3:
        return ref
    return dataclasses.replace(ref, size=(sympy.Integer(1),) + tuple(ref.size),
                               stride=(sympy.Integer(0),) + tuple(ref.stride))


def gemm_of(op) -> Gemm | None:
    """``op`` as a ``Gemm`` when the template can compute it: mm/addmm/bmm of float16,
    bfloat16 or float32 with static sizes, strides and literal alpha/beta, or a conv that
    ``conv_of`` takes; else None."""
    if isinstance(op, ExternKernel) and op.kernel == CONV_OP:
        return _conv_gemm(op)
    if not isinstance(op, ExternKernel) or op.kernel not in GEMM_OPS or len(op.outputs) != 1:
        return None
    layout = op.layouts[0]
    kwargs = dict(op.kwargs)
    if op.kernel == "aten.addmm.default":
        if len(op.args) != 3:
            return None
        bias, a, b = op.args
    else:
        if len(op.args) != 2 or kwargs:
            return None
        (a, b), bias = op.args, None
    alpha, beta = kwargs.get("alpha", 1), kwargs.get("beta", 1)
    if (layout is None or layout.dtype not in GEMM_DTYPES
            or not all(ref_static(r) for r in (a, b) + ((bias,) if bias is not None else ()))
            or not is_static(layout.size + layout.stride + (layout.offset,))
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                       for v in (alpha, beta))):
        return None
    a, b = _batched(a), _batched(b)
    sizes = (int(a.size[0]), int(a.size[1]), int(b.size[2]), int(a.size[2]))
    if min(sizes) < 1 or sizes[0] > MAX_GRID_Y:
        return None
    return Gemm(a, b, bias, float(alpha), float(beta), sizes, op.outputs[0], layout)


def _conv_gemm(op: ExternKernel) -> Gemm | None:
    geometry = conv_of(op)
    if geometry is None:
        return None
    x, w = op.args[:2]
    return Gemm(x, w, None, 1.0, 1.0, geometry.sizes, op.outputs[0], op.layouts[0], geometry)
