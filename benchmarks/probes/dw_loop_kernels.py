"""Probe kernels (s13, ``dw_loop_ab.py``): ConvNeXt-T's first 7x7 depthwise conv (96
channels, 56x56, NHWC, bf16, fp32 tap-major weights, bias) written by hand as a loop over
the window's rows (``dw_loop``) and as one loop over all 49 taps (``dw_loop49``)."""
import triton
import triton.language as tl
from triton import jit

@jit
def dw_loop(in_ptr0, in_ptr1, in_ptr2, out_ptr0, xnumel, ynumel, XBLOCK: tl.constexpr, YBLOCK: tl.constexpr):
    yoffset = tl.program_id(1) * YBLOCK
    yindex = yoffset + tl.arange(0, YBLOCK)[:, None]
    ymask = yindex < ynumel
    xoffset = tl.program_id(0) * XBLOCK
    xindex = xoffset + tl.arange(0, XBLOCK)[None, :]
    xmask = xindex < xnumel
    mask = ymask & xmask
    h = (yindex // 56) % 56
    w = yindex % 56
    wm0 = (w - 3) >= 0
    wm1 = (w - 2) >= 0
    wm2 = (w - 1) >= 0
    wm4 = (w + 1) < 56
    wm5 = (w + 2) < 56
    wm6 = (w + 3) < 56
    acc = tl.zeros([YBLOCK, XBLOCK], tl.float32)
    for kh in range(7):
        hh = h + kh - 3
        hm = (hh >= 0) & (hh < 56) & mask
        base = in_ptr0 + (xindex + 96 * yindex + 96 * 56 * (kh - 3))
        wbase = in_ptr1 + (xindex + 96 * 7 * kh)
        acc += tl.load(base - 288, hm & wm0, other=0.0).to(tl.float32) * tl.load(wbase, xmask)
        acc += tl.load(base - 192, hm & wm1, other=0.0).to(tl.float32) * tl.load(wbase + 96, xmask)
        acc += tl.load(base - 96, hm & wm2, other=0.0).to(tl.float32) * tl.load(wbase + 192, xmask)
        acc += tl.load(base, hm, other=0.0).to(tl.float32) * tl.load(wbase + 288, xmask)
        acc += tl.load(base + 96, hm & wm4, other=0.0).to(tl.float32) * tl.load(wbase + 384, xmask)
        acc += tl.load(base + 192, hm & wm5, other=0.0).to(tl.float32) * tl.load(wbase + 480, xmask)
        acc += tl.load(base + 288, hm & wm6, other=0.0).to(tl.float32) * tl.load(wbase + 576, xmask)
    b = tl.load(in_ptr2 + (xindex), xmask).to(tl.float32)
    tl.store(out_ptr0 + (xindex + 96*yindex), (acc + b).to(tl.bfloat16), mask)

@jit
def dw_loop49(in_ptr0, in_ptr1, in_ptr2, out_ptr0, xnumel, ynumel, XBLOCK: tl.constexpr, YBLOCK: tl.constexpr):
    yoffset = tl.program_id(1) * YBLOCK
    yindex = yoffset + tl.arange(0, YBLOCK)[:, None]
    ymask = yindex < ynumel
    xoffset = tl.program_id(0) * XBLOCK
    xindex = xoffset + tl.arange(0, XBLOCK)[None, :]
    xmask = xindex < xnumel
    mask = ymask & xmask
    h = (yindex // 56) % 56
    w = yindex % 56
    acc = tl.zeros([YBLOCK, XBLOCK], tl.float32)
    for t in range(49):
        kh = t // 7
        kw = t % 7
        hh = h + kh - 3
        ww = w + kw - 3
        m = (hh >= 0) & (hh < 56) & (ww >= 0) & (ww < 56) & mask
        acc += tl.load(in_ptr0 + (xindex + 96 * yindex + 96 * (56 * (kh - 3) + kw - 3)), m, other=0.0).to(tl.float32) * tl.load(in_ptr1 + (xindex + 96 * t), xmask)
    b = tl.load(in_ptr2 + (xindex), xmask).to(tl.float32)
    tl.store(out_ptr0 + (xindex + 96*yindex), (acc + b).to(tl.bfloat16), mask)
