"""Where a compiled model's time goes on the GPU: per-kernel CUDA time vs the call's wall time.

    python benchmarks/profile_model.py bert_layer [--size bench] [--dtype bfloat16] [--inductor]
    python benchmarks/profile_model.py pipeline.zoo.heldout:t5_encoder --inductor --top 30
    python benchmarks/profile_model.py pipeline.zoo.heldout:efficientnet_b0 --inductor --no-graphs

MODEL is a block of ``pipeline.zoo.blocks`` or a zoo factory ``module:function`` (called
with its defaults).

Prints kiln's and eager's (and with ``--inductor``, torch.compile's) top kernels by CUDA time (torch.profiler), the sum of CUDA time per
call, the wall time per call (synchronized) and the host time per call (each call enqueued
behind a GPU sleep, so no launch waits: what the CPU alone spends).
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import compiler  # noqa: E402
from pipeline.zoo import blocks  # noqa: E402


def _profile(label, fn, args, iters=20, top=14):
    for _ in range(3):
        fn(*args)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn(*args)
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / iters * 1e3
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn(*args)
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    gpu = sum(e.device_time_total for e in events) / iters / 1e3
    launches = sum(e.count for e in events) / iters
    host = _host_ms(fn, args)
    print(f"\n== {label}: wall {wall:.3f} ms/call, GPU {gpu:.3f} ms/call, host {host:.3f} "
          f"ms/call ({launches:.0f} GPU ops, {host / max(launches, 1) * 1e3:.2f} us each)")
    for e in sorted(events, key=lambda e: -e.device_time_total)[:top]:
        print(f"  {e.device_time_total / iters / 1e3:8.3f} ms  x{e.count // iters:<3} {e.key[:110]}")


def _host_ms(fn, args, iters: int = 15) -> float:
    """Median host time of one call, enqueued behind a GPU sleep (~25 ms on a 2 GHz clock)
    so that no launch waits for the GPU: what the call costs the CPU alone."""
    times = []
    for _ in range(iters):
        torch.cuda._sleep(50_000_000)
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
        torch.cuda.synchronize()
    return sorted(times)[len(times) // 2] * 1e3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--size", default="bench")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--inductor", action="store_true", help="also profile torch.compile")
    parser.add_argument("--top", type=int, default=14, help="kernels listed per system")
    parser.add_argument("--no-graphs", action="store_true",
                        help="kiln without CUDA graphs (the dynamic-shape path), against "
                             "torch.compile default, with a cProfile of kiln's host time")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    dtype = getattr(torch, args.dtype)
    if ":" in args.model:
        path, name = args.model.split(":")
        out = getattr(importlib.import_module(path), name)()
    else:
        out = getattr(blocks, args.model)(args.size)
    module, inputs = out[0].eval(), out[1]
    module = module.cuda().to(dtype)
    inputs = tuple(a.cuda().to(dtype) if a.is_floating_point() else a.cuda() for a in inputs)
    with torch.no_grad():
        cm = compiler.compile_module(module, inputs,
                                     {"cuda_graphs": False} if args.no_graphs else None)
        print(f"{args.model}: kernels={cm.kernel_count} fallbacks={list(cm.fallback_ops)}")
        _profile("eager", module, inputs, top=args.top)
        if args.inductor:
            _profile("inductor", torch.compile(module), inputs, top=args.top)
        _profile("kiln", cm, inputs, top=args.top)
        _profile("kiln (flat, no checks)", lambda *a: cm.compiled.module.call(list(a)),
                 cm.captured.flatten_call(module, inputs))
        if args.no_graphs:
            _host_profile(cm, inputs, args.top)
    return 0


def _host_profile(fn, args, top: int, iters: int = 20) -> None:
    """Where the host's time per call goes (cProfile, own time): launches, allocations,
    ATen calls, the wrapper's own lines (``call``)."""
    import cProfile
    import pstats
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(iters):
        fn(*args)
    torch.cuda.synchronize()
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]
    print(f"\n== kiln host time per call by function (cProfile, own time, {iters} calls)")
    for (path, line, name), (_, calls, own, _, _) in rows:
        print(f"  {own / iters * 1e3:8.3f} ms  x{calls // iters:<4} {name} "
              f"({Path(path).name}:{line})")


if __name__ == "__main__":
    sys.exit(main())
