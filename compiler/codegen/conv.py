"""The implicit-GEMM convolution: a conv as the GEMM template's product, its A gathered.

The output, viewed as (N*OH*OW, C_out), is ``A @ B``: row m of ``A`` is output pixel m's
input window, (KH*KW*C) values ordered (kh, kw, c) -- channels innermost, so that an NHWC
input gives contiguous loads -- and ``B`` is the filter flattened the same way. ``A`` is
never stored: each K step loads its (BLOCK_M, BLOCK_K) tile straight from the input, with
the padding read as zeros (masked loads). Stride, padding and dilation are literals. The
template around it (tiles, the fused epilogue, the store) is ``codegen.matmul``'s.

Two K walks:
  * window by window (``C >= WINDOW_MIN_CHANNELS``): one loop over (tap, channel block), so
    a tap's row offsets and padding test are per row, not per element, and every step is
    one contiguous channel run; a ragged C masks the last block of each tap;
  * flat (fewer channels: a stem's 3): K in BLOCK_K steps, each k split into (kh, kw, c)
    per element, which wastes no lanes where a tap has fewer channels than a dot's 16.

Why a kiln kernel at all: a served model's first call pays cuDNN's set-up, once per
process (about 0.1 s) and again per conv shape (several ms); ResNet-50's 3x3 and 7x7 convs
were the last that needed it. Option ``conv_kernels = "triton"`` takes the template for every
conv ``conv_of`` accepts (``codegen.matmul_select``).

Example:
    >>> g = ConvGeometry(2, 3, 8, 8, 16, (3, 3), (4, 4), (2, 2), (1, 1), (1, 1))
    >>> g.sizes, g.by_window
    ((1, 32, 16, 27), False)
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy
import torch

from ..ir import BufferRef, ExternKernel, index_symbols
from ..sizevars import FloorDiv, ModularIndexing
from .builder import affine
from .triton import XINDEX, YINDEX, unflatten

CONV_OP = "aten.convolution.default"
CONV_DTYPES = (torch.float16, torch.bfloat16)
WINDOW_MIN_CHANNELS = 16    # tl.dot's smallest K: fewer channels a tap would pad each tap


@dataclass(frozen=True)
class ConvGeometry:
    """A 2-d conv's sizes: input (batch, channels, height, width), filter and output."""
    batch: int
    channels: int
    height: int
    width: int
    out_channels: int
    kernel: tuple[int, int]
    out: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    @property
    def sizes(self) -> tuple[int, int, int, int]:
        """The product's (B, M, N, K): one batch of (N*OH*OW) x C_out, over C*KH*KW."""
        return (1, self.batch * self.out[0] * self.out[1], self.out_channels,
                self.channels * self.kernel[0] * self.kernel[1])

    @property
    def by_window(self) -> bool:
        return self.channels >= WINDOW_MIN_CHANNELS


def is_static(values) -> bool:
    return all(sympy.sympify(v).is_Integer for v in values)


def ref_static(ref) -> bool:
    """A buffer reference whose sizes, strides and offset are all literals."""
    return isinstance(ref, BufferRef) and is_static(ref.size + ref.stride + (ref.offset,))


def conv_of(op: ExternKernel) -> ConvGeometry | None:
    """The geometry of a conv the template computes, or None: the one eligibility rule.

    Taken: a 2-d, not transposed, ungrouped conv of float16 or bfloat16 with static sizes
    and strides, its bias left to the epilogue (lowering passes none). Why each:
      * half types only, as ``lowering.conv_gemm``: cuDNN runs float32 convs in TF32 by
        default, which an exact float32 template could not match for speed;
      * groups == 1: depthwise convs have their own kernel (``lowering.depthwise``); other
        grouped convs (ResNeXt) are block-diagonal products this tiling does not split;
      * static: sizes, strides, padding and dilation are literals of the kernel;
      * any strides: NHWC (what a channels-last graph passes) reads each window's channels
        contiguously; NCHW is correct too, its channel loads strided.
    """
    if op.kernel != CONV_OP or len(op.outputs) != 1 or len(op.args) != 9 or op.kwargs:
        return None
    x, w, bias, stride, padding, dilation, transposed, _out_pad, groups = op.args
    layout = op.layouts[0]
    if (transposed or groups != 1 or bias is not None or layout is None
            or layout.dtype not in CONV_DTYPES or len(layout.size) != 4):
        return None
    refs = (x, w)
    if not all(ref_static(r) and len(r.size) == 4 for r in refs):
        return None
    if not is_static(layout.size + layout.stride + (layout.offset,)):
        return None
    if any(int(st) == 0 and int(sz) > 1 for r in refs for sz, st in zip(r.size, r.stride)):
        return None    # a broadcast operand: its loads would lose a dim of the tile
    n, c, h, wd = (int(s) for s in x.size)
    cout, cin, kh, kw = (int(s) for s in w.size)
    oh, ow = (int(s) for s in layout.size[2:])
    if cin != c or min(n, c, h, wd, cout, kh, kw, oh, ow) < 1:
        return None
    pair = lambda v: tuple(int(e) for e in v)   # noqa: E731
    return ConvGeometry(n, c, h, wd, cout, (kh, kw), (oh, ow), pair(stride), pair(padding),
                        pair(dilation))


def out_index(g: ConvGeometry) -> tuple[sympy.Expr, ...]:
    """Output element (n, c_out, oh, ow) of product element (yindex, xindex)."""
    n, oh, ow = index_symbols(3)
    digits = unflatten(YINDEX, [(n, g.batch), (oh, g.out[0]), (ow, g.out[1])])
    return (digits[n], XINDEX, digits[oh], digits[ow])


def stores_rows(layout) -> bool:
    """Whether a conv output of this layout stores the product row-major: dense NHWC (what
    a channels-last graph gives), where element (m, c_out) sits at m * C_out + c_out."""
    n, c, h, w = layout.size
    return tuple(layout.stride) == (h * w * c, 1, w * c, c) and layout.offset == 0


def operand_elements(g: ConvGeometry) -> int:
    """Elements of input and filter: what the kernel reads at least once."""
    return g.batch * g.channels * g.height * g.width + g.sizes[2] * g.sizes[3]


# ----------------------------------------------------------------------------- the K walk
def conv_loop(g: ConvGeometry, x: BufferRef, w: BufferRef, x_ptr: str, w_ptr: str
              ) -> list[str]:
    """The K loop into ``acc``, after the template's tile lines (``ram``, ``rbn``, ``rk``)."""
    oh, ow = g.out
    return [
        f"img = ram // {oh * ow}",
        f"ih0 = (ram // {ow}) % {oh} * {g.stride[0]} - {g.padding[0]}",
        f"iw0 = ram % {ow} * {g.stride[1]} - {g.padding[1]}",
        f"x_rows = {x_ptr} + ({affine(x.offset, [(x.stride[0], 'img')])})",
        f"w_cols = {w_ptr} + ({affine(w.offset, [(w.stride[0], 'rbn')])})",
        "acc = tl.full((BLOCK_M, BLOCK_N), 0, tl.float32)",
        *(_window_loop(g, x, w) if g.by_window else _flat_loop(g, x, w)),
    ]


def _strides(x: BufferRef, w: BufferRef) -> tuple[int, ...]:
    """Input (c, h, w) and filter (c, kh, kw) strides; a channel stride of 0 (one channel:
    any stride is valid) becomes 1, which keeps the channel dim in every pointer tile."""
    _, sc, sh, sw = (int(s) for s in x.stride)
    _, wc, wh, ww = (int(s) for s in w.stride)
    return sc or 1, sh, sw, wc or 1, wh, ww


def _plus(terms, broadcast: str = "") -> str:
    """`` + (c0 * v0 + ...)<broadcast>`` as source, or nothing when every coefficient is 0
    (a size-1 dim may have any stride, 0 too)."""
    if not any(int(c) for c, _ in terms):
        return ""
    return f" + ({affine(0, terms)}){broadcast}"


def _inside(g: ConvGeometry, ih: str, iw: str) -> str | None:
    """The test that (ih, iw) lies in the image, None when no padding lets it leave."""
    tests = []
    if g.padding[0]:
        tests += [f"({ih} >= 0)", f"({ih} < {g.height})"]
    if g.padding[1]:
        tests += [f"({iw} >= 0)", f"({iw} < {g.width})"]
    return " & ".join(tests) or None


def _window_loop(g: ConvGeometry, x: BufferRef, w: BufferRef) -> list[str]:
    """One step per (tap, block of BLOCK_K channels); the tap's offsets are per row."""
    c, (kh, kw) = g.channels, g.kernel
    sc, sh, sw, wc, wh, ww = _strides(x, w)
    inside = _inside(g, "ih", "iw")
    row_mask = f"inside[:, None]" if inside else None
    ragged = " & ".join(m for m in (row_mask, f"(rc[None, :] < {c})") if m)
    even = f", mask={row_mask}, other=0.0" if row_mask else ""
    return [
        f"chunks = ({c} + BLOCK_K - 1) // BLOCK_K",
        f"for step in range(0, {kh * kw} * chunks):",
        "    tap = step // chunks",
        "    rc = (step % chunks) * BLOCK_K + rk",
        f"    ky = tap // {kw}",
        f"    kx = tap % {kw}",
        f"    ih = ih0{_plus([(g.dilation[0], 'ky')])}",
        f"    iw = iw0{_plus([(g.dilation[1], 'kx')])}",
        *([f"    inside = {inside}"] if inside else []),
        f"    a_ptrs = x_rows[:, None]{_plus([(sh, 'ih'), (sw, 'iw')], '[:, None]')}"
        f"{_plus([(sc, 'rc')], '[None, :]')}",
        f"    b_ptrs = w_cols[None, :]{_plus([(wh, 'ky'), (ww, 'kx')])}"
        f"{_plus([(wc, 'rc')], '[:, None]')}",
        f"    if {c} % BLOCK_K == 0:",
        f"        a = tl.load(a_ptrs{even})",
        "        b = tl.load(b_ptrs)",
        "    else:",
        f"        a = tl.load(a_ptrs, mask={ragged}, other=0.0)",
        f"        b = tl.load(b_ptrs, mask=rc[:, None] < {c}, other=0.0)",
        "    acc = tl.dot(a, b, acc)",
    ]


def _flat_loop(g: ConvGeometry, x: BufferRef, w: BufferRef) -> list[str]:
    """K in BLOCK_K steps, each k split into (tap, channel) per element."""
    c, (kh, kw), k = g.channels, g.kernel, g.sizes[3]
    sc, sh, sw, wc, wh, ww = _strides(x, w)
    inside = _inside(g, "ih", "iw")
    a_mask = f"(kk[None, :] < {k})" + (f" & {inside}" if inside else "")
    return [
        f"for k in range(0, {k}, BLOCK_K):",
        "    kk = k + rk",
        f"    rc = kk % {c}",
        f"    ky = kk // {c * kw}",
        f"    kx = kk // {c} % {kw}",
        f"    ih = ih0[:, None]{_plus([(g.dilation[0], 'ky')], '[None, :]')}",
        f"    iw = iw0[:, None]{_plus([(g.dilation[1], 'kx')], '[None, :]')}",
        f"    a_ptrs = x_rows[:, None]{_plus([(sh, 'ih'), (sw, 'iw')])}"
        f"{_plus([(sc, 'rc')], '[None, :]')}",
        f"    b_ptrs = w_cols[None, :]{_plus([(wc, 'rc'), (wh, 'ky'), (ww, 'kx')], '[:, None]')}",
        f"    a = tl.load(a_ptrs, mask={a_mask}, other=0.0)",
        f"    b = tl.load(b_ptrs, mask=kk[:, None] < {k}, other=0.0)",
        "    acc = tl.dot(a, b, acc)",
    ]
