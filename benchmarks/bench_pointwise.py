"""Pointwise-chain bandwidth: kiln vs eager vs device-to-device copy (and Inductor) on one GPU.

A chain of six pointwise ops over 2^28 elements reads the input once and writes the output
once when fused, so its floor is the copy's time. Reports achieved bandwidth (bytes read +
written per second) and the ratios the issue asks for, all measured in this one run.

    python benchmarks/bench_pointwise.py [--numel-log2 28] [--json out.json] [--inductor]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import triton
from torch.fx.experimental.proxy_tensor import make_fx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import compiler  # noqa: E402


def chain(x):
    # mul, add, relu, sub, sigmoid, mul: six ops, one input, one output
    return (torch.sigmoid(torch.relu(x * 1.7 + 0.3) - 0.5) * x,)


def bench(fn, *args) -> float:
    return triton.testing.do_bench(lambda: fn(*args), warmup=50, rep=300, return_mode="median")


def run(dtype: torch.dtype, numel: int, inductor: bool) -> dict:
    x = torch.randn(numel, device="cuda", dtype=dtype)
    nbytes = 2 * numel * x.element_size()        # read input + write output
    dst = torch.empty_like(x)
    copy_ms = bench(dst.copy_, x)
    eager_ms = bench(chain, x)
    t0 = time.perf_counter()
    kiln_fn = compiler.compile_fx(make_fx(chain)(x), [x])
    kiln_compile_s = time.perf_counter() - t0
    torch.testing.assert_close(kiln_fn(x)[0], chain(x)[0], rtol=2e-2, atol=2e-2)
    kiln_ms = bench(kiln_fn, x)
    row = {
        "dtype": str(dtype), "numel": numel, "bytes": nbytes,
        "copy_ms": copy_ms, "eager_ms": eager_ms, "kiln_ms": kiln_ms,
        "copy_TBps": nbytes / copy_ms / 1e9, "kiln_TBps": nbytes / kiln_ms / 1e9,
        "kiln_vs_copy_bandwidth": copy_ms / kiln_ms, "kiln_speedup_vs_eager": eager_ms / kiln_ms,
        "kiln_compile_s": kiln_compile_s, "kiln_kernels": kiln_fn.kernel_count,
    }
    if inductor:
        torch._dynamo.reset()
        t0 = time.perf_counter()
        ind = torch.compile(chain)
        ind(x)
        row["inductor_compile_s"] = time.perf_counter() - t0
        row["inductor_ms"] = bench(ind, x)
        row["kiln_vs_inductor"] = row["inductor_ms"] / kiln_ms
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numel-log2", type=int, default=28)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--inductor", action="store_true", help="also time torch.compile")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_pointwise: needs a CUDA GPU; nothing was timed")
        return 2
    card = torch.cuda.get_device_name()
    rows = [run(dtype, 1 << args.numel_log2, args.inductor) for dtype in (torch.bfloat16, torch.float32)]
    print(f"card: {card}  torch {torch.__version__}  triton {triton.__version__}")
    for r in rows:
        line = (f"{r['dtype']:>15} n=2^{args.numel_log2}: copy {r['copy_ms']:.3f} ms "
                f"({r['copy_TBps']:.2f} TB/s) | eager {r['eager_ms']:.3f} ms | kiln {r['kiln_ms']:.3f} ms "
                f"({r['kiln_TBps']:.2f} TB/s) = {100 * r['kiln_vs_copy_bandwidth']:.1f}% of copy, "
                f"{r['kiln_speedup_vs_eager']:.2f}x eager")
        if "inductor_ms" in r:
            line += f" | inductor {r['inductor_ms']:.3f} ms ({r['kiln_vs_inductor']:.2f}x kiln speedup)"
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"card": card, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
