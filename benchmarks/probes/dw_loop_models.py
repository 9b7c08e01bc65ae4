"""Probe (s13): whole models with depthwise windows summed in a loop over their rows (option
``depthwise_loop_taps``, default 25) against unrolled (0), in one process on one GPU:
ms per call with and without CUDA graphs (alternating rounds, median of each), and each
output against eager's.

    python benchmarks/probes/dw_loop_models.py [--models convnext_tiny,efficientnet_b0]
"""
import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import compiler  # noqa: E402
from pipeline.zoo import heldout  # noqa: E402


def ms_per_call(fn, x, calls=20):
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn(x)
    torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - start) / calls


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="convnext_tiny,efficientnet_b0,mobilenetv3_large")
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    print(torch.cuda.get_device_name(), torch.__version__)
    for name in a.models.split(","):
        module, args = getattr(heldout, name)()[:2]
        module = module.to("cuda", torch.bfloat16).eval()
        x = args[0].to("cuda", torch.bfloat16)
        with torch.no_grad():
            want = module(x).float()
            fns = {}
            for taps in (25, 0):
                for graphs in (True, False):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        start = time.perf_counter()
                        fn = compiler.compile_module(module, (x,), {
                            "depthwise_loop_taps": taps, "cuda_graphs": graphs})
                        got = fn(x).float()
                        torch.cuda.synchronize()
                    err = (got - want).abs().max().item() / want.abs().max().item()
                    print(f"{name} taps={taps} graphs={graphs}: compile+first call "
                          f"{time.perf_counter() - start:.1f} s (warm process), "
                          f"max err / max |eager| {err:.3g}")
                    fns[(taps, graphs)] = fn
            times = {k: [] for k in fns}
            for _ in range(a.rounds):
                for k, fn in fns.items():
                    fn(x)
                    times[k].append(ms_per_call(fn, x))
            for (taps, graphs), ts in times.items():
                print(f"{name} taps={taps} graphs={graphs}: {statistics.median(ts):.3f} ms "
                      f"(min {min(ts):.3f}, max {max(ts):.3f})")
            for graphs in (True, False):
                ratio = statistics.median(times[(0, graphs)]) / statistics.median(
                    times[(25, graphs)])
                print(f"{name} graphs={graphs}: loop speed vs unrolled {ratio:.3f}x")


if __name__ == "__main__":
    main()
