"""Squeeze-excite blocks, the channels-last reductions over H and W: kiln vs eager.

Per EfficientNet-B0 stage shape (batch 64, bf16, channels-last) two graphs:

- ``mean``: ``x.mean((2, 3))``, rows of H*W elements lying C apart in memory;
- ``se``: depthwise conv, folded BatchNorm, SiLU, the mean, two 1x1 convs and the sigmoid
  scale, as in an MBConv block.

Times are CUDA-graph replays (``triton.testing.do_bench_cudagraph``) of one call, so launch
overhead is out; kiln compiles with ``compile_workers=0``. Run it from the tree to measure
(its parent folder is put first on ``sys.path``):

    python benchmarks/bench_se.py [--json out.json] [--batch 64]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import compiler  # noqa: E402

# (channels, height = width, depthwise kernel, stride): EfficientNet-B0's MBConv shapes
SHAPES = [(32, 112, 3, 1), (96, 112, 3, 2), (144, 56, 5, 2), (240, 28, 3, 2),
          (480, 14, 5, 1), (1152, 7, 3, 1)]


class MeanHW(torch.nn.Module):
    def forward(self, x):
        return x.mean((2, 3))


class SqueezeExcite(torch.nn.Module):
    def __init__(self, channels: int, kernel: int, stride: int):
        super().__init__()
        self.dw = torch.nn.Conv2d(channels, channels, kernel, stride, kernel // 2,
                                  groups=channels)
        self.bn = torch.nn.BatchNorm2d(channels)
        self.reduce = torch.nn.Conv2d(channels, max(8, channels // 4), 1)
        self.expand = torch.nn.Conv2d(max(8, channels // 4), channels, 1)

    def forward(self, x):
        x = F.silu(self.bn(self.dw(x)))
        s = F.silu(self.reduce(x.mean((2, 3), keepdim=True)))
        return x * torch.sigmoid(self.expand(s))


def _us(fn) -> float:
    return 1e3 * triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median")


def _case(name: str, module: torch.nn.Module, x: torch.Tensor) -> dict:
    module = module.to("cuda", torch.bfloat16, memory_format=torch.channels_last).eval()
    compiled = compiler.compile_module(module, (x,), {"compile_workers": 0,
                                                      "cuda_graphs": False})
    with torch.no_grad():
        want, got = module(x), compiled(x)
        err = ((got.float() - want.float()).abs().max() / want.float().abs().max()).item()
        return {"case": name, "eager_us": _us(lambda: module(x)),
                "kiln_us": _us(lambda: compiled(x)), "rel_err": err}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--json", help="write the rows here too")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows = []
    print(f"{'case':34s} {'eager us':>9s} {'kiln us':>9s} {'rel err':>9s}", flush=True)
    for channels, size, kernel, stride in SHAPES:
        x = torch.randn(args.batch, channels, size, size, device="cuda", dtype=torch.bfloat16)
        x = x.to(memory_format=torch.channels_last)
        for name, module in (("mean", MeanHW()),
                             ("se", SqueezeExcite(channels, kernel, stride))):
            row = _case(f"{name} c{channels} {size}x{size} k{kernel}s{stride}", module, x)
            rows.append(row)
            print(f"{row['case']:34s} {row['eager_us']:9.1f} {row['kiln_us']:9.1f} "
                  f"{row['rel_err']:9.2e}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
