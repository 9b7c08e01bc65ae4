"""Where a cold capture's time goes: cProfile of ``capture_module`` in a fresh process.

    python benchmarks/probes/profile_capture.py [--model resnet50] [--device cuda] [--top 40]
"""
import argparse
import cProfile
import pstats
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--device", default="cpu")
    p.add_argument("--top", type=int, default=40)
    ns = p.parse_args()
    warnings.simplefilter("ignore")
    import torch
    from compiler.capture import capture_module
    from pipeline.zoo import vision
    module, args = getattr(vision, ns.model)()[:2]
    module = module.eval().to(ns.device)
    args = tuple(a.to(ns.device) for a in args)
    start = time.perf_counter()
    prof = cProfile.Profile()
    with torch.no_grad():
        prof.enable()
        capture_module(module, args, name=ns.model)
        prof.disable()
    print(f"capture {ns.model} on {ns.device}: {time.perf_counter() - start:.2f} s (profiled)")
    stats = pstats.Stats(prof)
    stats.sort_stats("cumulative").print_stats(ns.top)
    stats.sort_stats("tottime").print_stats(ns.top // 2)


if __name__ == "__main__":
    main()
