"""A 2-D tiled depthwise conv kernel against cuDNN, at the held-out models' depthwise shapes
(issue 15, goal 1: ConvNeXt-T without CUDA graphs was 0.91x torch.compile, its 7x7
depthwise convs 1.01 ms of its 2.95 ms as kiln's flat kernels, s8 call 3).

kiln's depthwise kernel is a flat pointwise kernel: each output element recovers (n, h, w,
c) from its flat index and does its K*K masked loads with that index math (216 SASS
instructions per element for a 7x7 tap set, 2026-12-06's sass census). This probe's kernel
gives each program one output row segment, ``BLOCK_W`` columns by ``BLOCK_C`` channels of a
channels-last tensor, so the row, column and channel offsets are computed once per program
and each tap is one vector load and one FMA. It decides whether that layout is worth a
template in the compiler; it is not one.

    python benchmarks/probes/depthwise_tiled.py            # on a GPU: times the configs
    TRITON_INTERPRET=1 python benchmarks/probes/depthwise_tiled.py --check   # CPU: results

Timing: ``triton.testing.do_bench`` (median ms, L2 flushed between runs), each config of
the kernel and ``torch.nn.functional.conv2d`` (cuDNN) on the same channels-last bf16 input.
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

# (model, C, H=W, K) for the stride-1 depthwise layers of the held-out models, batch below
SHAPES = (("convnext_tiny", 96, 56, 7), ("convnext_tiny", 192, 28, 7),
          ("convnext_tiny", 384, 14, 7), ("convnext_tiny", 768, 7, 7),
          ("efficientnet_b0", 240, 28, 5), ("efficientnet_b0", 672, 14, 5),
          ("efficientnet_b0", 144, 56, 3), ("mobilenetv3_large", 120, 28, 5),
          ("mobilenetv3_large", 72, 56, 3), ("mobilenetv3_large", 480, 14, 3))
CONFIGS = ((8, 32, 2), (16, 32, 4), (16, 64, 4), (32, 32, 4), (8, 128, 4), (32, 64, 8))


@triton.jit
def depthwise_rows(x_ptr, w_ptr, y_ptr, H, W, C, K: tl.constexpr, PAD: tl.constexpr,
                   BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    row = tl.program_id(0)                     # n * H + h: one output row per program row
    h = row % H
    cols = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    chans = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    chan_ok = chans < C
    acc = tl.zeros([BLOCK_W, BLOCK_C], dtype=tl.float32)
    for kh in tl.static_range(K):
        # the source row's bounds as a vector: Triton's interpreter takes no scalar in a mask
        src_h = cols * 0 + (h + kh - PAD)
        row_ok = (src_h >= 0) & (src_h < H)
        row_base = (row + kh - PAD).to(tl.int64) * W * C
        for kw in tl.static_range(K):
            src_w = cols + kw - PAD
            ok = (row_ok & (src_w >= 0) & (src_w < W))[:, None] & chan_ok[None, :]
            x = tl.load(x_ptr + row_base + src_w[:, None] * C + chans[None, :], mask=ok,
                        other=0.0)
            w = tl.load(w_ptr + chans * (K * K) + (kh * K + kw), mask=chan_ok, other=0.0)
            acc += x.to(tl.float32) * w.to(tl.float32)[None, :]
    out = y_ptr + row.to(tl.int64) * W * C + cols[:, None] * C + chans[None, :]
    tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=(cols < W)[:, None] & chan_ok[None, :])


def depthwise(x: torch.Tensor, weight: torch.Tensor, block_w: int, block_c: int,
              warps: int) -> torch.Tensor:
    """Stride-1, same-padded depthwise conv of channels-last ``x`` (N, C, H, W) by
    ``weight`` (C, 1, K, K), channels-last out."""
    n, c, h, w = x.shape
    k = weight.shape[-1]
    y = torch.empty_like(x, memory_format=torch.channels_last)
    grid = (n * h, triton.cdiv(w, block_w), triton.cdiv(c, block_c))
    depthwise_rows[grid](x, weight.contiguous(), y, h, w, c, K=k, PAD=k // 2,
                         BLOCK_W=block_w, BLOCK_C=block_c, num_warps=warps)
    return y


def _inputs(c: int, hw: int, k: int, batch: int, device: str, dtype):
    x = torch.randn(batch, c, hw, hw, device=device, dtype=dtype)
    x = x.to(memory_format=torch.channels_last)
    return x, torch.randn(c, 1, k, k, device=device, dtype=dtype)


def check() -> int:
    """Results against torch's conv on small shapes (runs under Triton's interpreter)."""
    torch.manual_seed(0)
    for c, hw, k, (bw, bc, warps) in ((5, 6, 7, (8, 4, 1)), (12, 9, 5, (4, 8, 1)),
                                      (3, 4, 3, (2, 2, 1))):
        x, weight = _inputs(c, hw, k, 2, "cpu", torch.float32)
        want = F.conv2d(x, weight, padding=k // 2, groups=c)
        got = depthwise(x, weight, bw, bc, warps)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        print(f"C={c} HW={hw} K={k}: matches conv2d")
    return 0


class _Depthwise(torch.nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = torch.nn.Parameter(weight, requires_grad=False)

    def forward(self, x):
        k = self.weight.shape[-1]
        return F.conv2d(x, self.weight, padding=k // 2, groups=self.weight.shape[0])


# kiln's own lowering, as variants: (label, 2-D stencil tiling on, launch config or None
# for kiln's heuristic). A config goes in as a tuned config for the stencil kernel's key, as
# a tuned store gives it. "1d" is the flat kernel (compiler/codegen/triton.py's
# STENCIL_ROW_LOADS raised past any tap count, for this probe only). The warps variants ask
# whether fewer elements per thread pay: at the heuristic's 8 per thread ConvNeXt-T's 7x7
# kernel takes 236 registers (1-D) and 254 (2-D) for sm_90, at 2 per thread 40 and 94
# (cuobjdump of cubins built on a CPU, session 9). s9 calls 1 and 3 timed other variants.
KILN = (("kiln1d", False, None), ("1d/w16", False, {"XBLOCK": 1024, "num_warps": 16}),
        ("kiln2d", True, None), ("2d/w8", True, {"XBLOCK": 32, "YBLOCK": 32, "num_warps": 8}),
        ("2d/w16", True, {"XBLOCK": 32, "YBLOCK": 32, "num_warps": 16}))


def _kiln(x: torch.Tensor, weight: torch.Tensor, two_d: bool, config: dict | None):
    """kiln's lowering of the same conv (weights a constant), CUDA graphs off so each call
    is its kernel launch alone, as the probe's kernel is."""
    from compiler.api import compile_module, lower
    from compiler.capture import capture_module
    from compiler.codegen import triton as codegen
    module = _Depthwise(weight).eval()
    saved = codegen.STENCIL_ROW_LOADS
    codegen.STENCIL_ROW_LOADS = saved if two_d else 1 << 30
    try:
        with torch.no_grad():
            configs = None
            if config is not None:
                art = lower(capture_module(module, (x,)), {"cuda_graphs": False}, "cuda")
                (key,) = [k.kernel_key for k in art.kernels if "logical_and" in k.name]
                configs = {key: {"num_stages": 3, **config}}
            return compile_module(module, (x,), options={"cuda_graphs": False},
                                  configs=configs)
    finally:
        codegen.STENCIL_ROW_LOADS = saved


def bench(batch: int) -> int:
    from triton.testing import do_bench
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__} triton "
          f"{triton.__version__} batch {batch} bf16 channels-last; ms (median)")
    print(f"{'model':18} {'C,HW,K':14} {'cudnn':>8} "
          + " ".join(f"{label:>9}" for label, _, _ in KILN) + " " + " ".join(
        f"{f'{bw}x{bc}/{w}':>9}" for bw, bc, w in CONFIGS)
          + "  probe/cudnn kiln1d/cudnn kiln-best/cudnn")
    for model, c, hw, k in SHAPES:
        x, weight = _inputs(c, hw, k, batch, "cuda", torch.bfloat16)
        want = F.conv2d(x, weight, padding=k // 2, groups=c)
        cudnn = do_bench(lambda: F.conv2d(x, weight, padding=k // 2, groups=c))
        kiln_ms = []
        for _, two_d, config in KILN:
            kiln = _kiln(x, weight, two_d, config)
            with torch.no_grad():
                torch.testing.assert_close(kiln(x), want, rtol=2e-2, atol=2e-2)
                kiln_ms.append(do_bench(lambda: kiln(x)))
        times = []
        for bw, bc, warps in CONFIGS:
            got = depthwise(x, weight, bw, bc, warps)
            torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)
            times.append(do_bench(lambda: depthwise(x, weight, bw, bc, warps)))
        print(f"{model:18} {f'{c},{hw},{k}':14} {cudnn:8.4f} "
              + " ".join(f"{t:9.4f}" for t in kiln_ms + times)
              + f"  {min(times) / cudnn:.2f} {kiln_ms[0] / cudnn:.2f} "
              + f"{min(kiln_ms[1:]) / cudnn:.2f}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="results only, small shapes")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args(argv)
    return check() if args.check else bench(args.batch)


if __name__ == "__main__":
    sys.exit(main())
