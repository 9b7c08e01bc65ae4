"""Depthwise convolutions: kiln's kernel (compiler/lowering/depthwise.py) against cuDNN's.

For the depthwise layers of ConvNeXt-T, EfficientNet-B0 and MobileNetV3-L (batch 32, bf16,
channels-last, with bias), on one GPU in one process, it reports:

- cuDNN's first call at that shape (its per-shape set-up, which a served model's first call
  pays; cuDNN itself is started beforehand on another shape), and its steady time;
- kiln's steady time for a few launch configs (the 1-D pointwise ``xblock``/``num_warps``),
  after checking its output against cuDNN's.

Steady times are CUDA-graph replays of one call (``triton.testing.do_bench_cudagraph``),
so launch overhead is out of both.

    python benchmarks/bench_depthwise.py [--json out.json] [--batch 32]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import compiler  # noqa: E402

# (channels, height = width, kernel, stride): the distinct depthwise layers of the three nets
SHAPES = {
    "convnext_tiny": [(96, 56, 7, 1), (192, 28, 7, 1), (384, 14, 7, 1), (768, 7, 7, 1)],
    "efficientnet_b0": [(32, 112, 3, 1), (96, 112, 3, 2), (144, 56, 3, 1), (144, 56, 5, 2),
                        (240, 28, 5, 1), (240, 28, 3, 2), (480, 14, 3, 1), (480, 14, 5, 1),
                        (672, 14, 5, 1), (672, 14, 5, 2), (1152, 7, 5, 1), (1152, 7, 3, 1)],
    "mobilenetv3_large": [(64, 112, 3, 2), (72, 56, 3, 1), (72, 56, 5, 2), (120, 28, 5, 1),
                          (240, 28, 3, 2), (200, 14, 3, 1), (480, 14, 3, 1), (672, 14, 5, 2),
                          (960, 7, 5, 1)],
}
CONFIGS = [(1024, 4), (512, 4), (2048, 8)]     # the first is the heuristic default


def _layer(channels: int, size: int, kernel: int, stride: int, batch: int):
    conv = torch.nn.Conv2d(channels, channels, kernel, stride, kernel // 2, groups=channels)
    conv = conv.to("cuda", torch.bfloat16, memory_format=torch.channels_last).eval()
    x = torch.randn(batch, channels, size, size, device="cuda", dtype=torch.bfloat16)
    return conv, x.to(memory_format=torch.channels_last)


def _us(fn) -> float:
    return 1e3 * triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median")


def _first_call_s(conv, x) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    conv(x)
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def run_shape(shape, batch: int) -> dict:
    conv, x = _layer(*shape, batch)
    with torch.no_grad():
        row = {"shape": shape, "cudnn_first_call_s": _first_call_s(conv, x)}
        want = conv(x)
        row["cudnn_us"] = _us(lambda: conv(x))
        for xblock, warps in CONFIGS:
            options = {"cuda_graphs": False, "xblock": xblock, "num_warps": warps,
                       "compile_workers": 0}
            kiln = compiler.compile_module(conv, (x,), options)
            got = kiln(x)
            err = ((got.float() - want.float()).norm() / want.float().norm()).item()
            if err > 2e-2:
                raise AssertionError(f"{shape}: kiln differs from cuDNN, rel err {err:.2e}")
            row[f"kiln_{xblock}_{warps}_us"] = _us(lambda: kiln(x))
    best = min(v for k, v in row.items() if k.startswith("kiln_"))
    row["best_kiln_over_cudnn"] = best / row["cudnn_us"]
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_depthwise: needs a CUDA GPU; nothing was timed")
        return 2
    torch.backends.cudnn.benchmark = False
    with torch.no_grad():     # start cuDNN on a shape none of the layers has
        torch.nn.functional.conv2d(torch.randn(1, 3, 9, 9, device="cuda"),
                                   torch.randn(4, 3, 3, 3, device="cuda"))
    print(f"card: {torch.cuda.get_device_name()}  torch {torch.__version__}  "
          f"triton {triton.__version__}  batch {args.batch} bf16 channels-last")
    head = "  ".join(f"kiln {b}/{w}" for b, w in CONFIGS)
    print(f"{'model':<18} {'C,HW,K,S':<16} cudnn 1st ms  cudnn us  {head}  best/cudnn")
    rows, total = [], {}
    for model, shapes in SHAPES.items():
        for shape in shapes:
            row = dict(run_shape(shape, args.batch), model=model)
            rows.append(row)
            kiln = "  ".join(f"{row[f'kiln_{b}_{w}_us']:>10.1f}" for b, w in CONFIGS)
            print(f"{model:<18} {str(shape):<16} {1e3 * row['cudnn_first_call_s']:>12.1f}  "
                  f"{row['cudnn_us']:>8.1f}  {kiln}  {row['best_kiln_over_cudnn']:>10.2f}",
                  flush=True)
            t = total.setdefault(model, [0.0, 0.0, 0.0])
            best = row["best_kiln_over_cudnn"] * row["cudnn_us"]
            t[0], t[1], t[2] = t[0] + row["cudnn_first_call_s"], t[1] + row["cudnn_us"], t[2] + best
    for model, (first, cudnn, kiln) in total.items():
        print(f"{model}: cuDNN first calls {1e3 * first:.0f} ms in all; one layer of each "
              f"shape: cuDNN {cudnn:.0f} us, kiln (best config per shape) {kiln:.0f} us")
    if args.json:
        args.json.write_text(json.dumps({"card": torch.cuda.get_device_name(), "rows": rows},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
