"""Where load_model's time goes: cProfile of one fresh process serving one baked model.

    python benchmarks/profile_load.py --store S --model bert_base [--config C] [--top 30]

The model is built on the GPU first (not profiled), as in ``bench_deploy.py``'s kiln_load
child; then ``import storage``, ``Store(S).load_model`` and the first synchronized call are
profiled together and the functions with the most cumulative and own time are printed, with
the wall time of each phase.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import torch

from bench_deploy import DEVICE, _model, _sync


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--config", default="configs/zoo-deploy.toml")
    parser.add_argument("--top", type=int, default=30)
    ns = parser.parse_args()
    module, args = _model(ns.config, ns.model)
    _sync()
    profile, marks = cProfile.Profile(), [time.perf_counter()]
    with torch.inference_mode():
        profile.enable()
        import storage
        import storage.deploy   # noqa: F401 -- as bench_deploy times it
        marks.append(time.perf_counter())
        fn = storage.Store(ns.store).load_model(ns.model, module)
        marks.append(time.perf_counter())
        fn(*args)
        _sync()
        marks.append(time.perf_counter())
        profile.disable()
    phases = [b - a for a, b in zip(marks, marks[1:])]
    print(f"{ns.model} on {DEVICE} (profiled, so slower than bench_deploy): import "
          f"{phases[0]:.3f} s, load_model {phases[1]:.3f} s, first call {phases[2]:.3f} s")
    for order in ("cumulative", "tottime"):
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats(order).print_stats(ns.top)
        print(text.getvalue())


if __name__ == "__main__":
    main()
