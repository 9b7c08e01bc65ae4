"""Probe (s13): where a static-cache decode step's time goes, kiln (CUDA graphs, and
without) against torch.compile reduce-overhead. s13's bench_decode run had kiln with graphs
at 1.58 ms/token against reduce-overhead's 0.63 (H100): this splits each system's step into
host time (a step enqueued behind a GPU sleep: what the CPU alone spends), GPU kernels
(torch.profiler, per kernel name) and kiln's host functions (cProfile).

    python benchmarks/probes/static_decode_profile.py [--length 128]
"""
import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch.export import Dim

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import bench_decode as bd  # noqa: E402
import compiler  # noqa: E402


def host_ms(step, n=30):
    """Median host ms of one step enqueued behind a 20 ms GPU sleep."""
    times = []
    for _ in range(n):
        torch.cuda.synchronize()
        torch.cuda._sleep(20_000_000)
        t0 = time.perf_counter()
        step()
        times.append(1e3 * (time.perf_counter() - t0))
    torch.cuda.synchronize()
    return statistics.median(times)


def kernels(step, n=10, top=15):
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            step()
        torch.cuda.synchronize()
    rows = [(e.key, e.device_time_total / n, e.count // n) for e in prof.key_averages()
            if e.device_time_total > 0]
    rows.sort(key=lambda r: -r[1])
    total = sum(r[1] for r in rows)
    print(f"   GPU us per step (profiler, sum over kernels): {total:.1f}")
    for key, us, count in rows[:top]:
        print(f"   {us:8.1f} us {count:3d}x {key[:100]}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--systems", default="kiln,kiln_no_graphs,reduce_overhead")
    a = p.parse_args()
    args = bd.parse_args(["--lengths", str(a.length)])
    model = bd.build(args, "cuda", torch.bfloat16)
    module = bd.static_module(model, args, a.length + 48)
    for buf in module.buffers():
        if buf.is_floating_point():
            buf.normal_()
    chunk = Dim("chunk", min=1, max=16)
    kwargs = {"input_ids": torch.randint(3, args.vocab, (1, 4), device="cuda"),
              "cache_position": torch.arange(4, device="cuda")}
    shapes = {"input_ids": {1: chunk}, "cache_position": {0: chunk}}
    print(torch.cuda.get_device_name(), torch.__version__)
    for name in a.systems.split(","):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if name == "reduce_overhead":
                fn = torch.compile(module, mode="reduce-overhead", dynamic=True)
            else:
                fn = compiler.compile_module(module, (), options={"cuda_graphs": name == "kiln"},
                                             example_kwargs=kwargs, dynamic_shapes=shapes)
        loop = bd.StaticLoop(module, args, "cuda")
        token, _ = loop.prefill(a.length)
        position = [a.length]
        tok = [token]

        def step():
            with torch.no_grad():
                tok[0], position[0] = loop.step(fn, tok[0], position[0] % (a.length + 40))
        for _ in range(8):
            step()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(50):
            step()
        torch.cuda.synchronize()
        print(f"== {name}: wall {1e3 * (time.perf_counter() - t0) / 50:.3f} ms/step, "
              f"host {host_ms(step):.3f} ms/step")
        kernels(step)
        if name != "reduce_overhead":
            pr = cProfile.Profile()
            pr.enable()
            for _ in range(20):
                step()
            pr.disable()
            torch.cuda.synchronize()
            out = io.StringIO()
            pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(18)
            print("\n".join("   " + l for l in out.getvalue().splitlines()[6:30]))


if __name__ == "__main__":
    main()
