"""Where load_model's time goes: cProfile of one fresh process serving one baked model.

    python benchmarks/profile_load.py --store S --model bert_base [--config C] [--top 30]

The model is built on the GPU first (not profiled), as in ``bench_deploy.py``'s kiln_load
child; then ``import storage``, ``Store(S).load_model`` and the first synchronized call are
profiled together and the functions with the most cumulative and own time are printed, with
the wall time of each phase.

``--phases`` prints each phase's wall time, nothing instrumented. ``--ops`` times the first
call op by op instead (no cProfile): every ATen op the wrapper calls and every kernel launch
is bracketed by ``torch.cuda.synchronize``, so what the first call pays for library
initialisation (cuDNN, cuBLAS) shows against the same op in a second, direct (not graphed)
run. ``--prewarm`` first runs one tiny convolution and matmul in the
module's dtype (timed): what of the first call is library start-up, not per-shape work.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import torch

from bench_deploy import DEVICE, _model, _sync


class _OpClock:
    """Synchronized time per ATen op name and for kernel launches, one bucket per run."""

    def __init__(self):
        self.run, self.spent = 0, [{}, {}]

    def timed(self, name: str, fn):
        def call(*args, **kwargs):
            _sync()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            _sync()
            count, total, worst = self.spent[self.run].get(name, (0, 0.0, 0.0))
            took = time.perf_counter() - start
            self.spent[self.run][name] = (count + 1, total + took, max(worst, took))
            return out
        return call

    def install(self) -> None:
        """Wrap what generated wrappers bind when they load (``compiler.kernels.host``)."""
        from compiler.kernels import host
        extern, bind = host.extern_op, host.bind_launch
        host.extern_op = lambda name: self.timed(name, extern(name))

        def bind_timed(*args, **kwargs):
            bound = bind(*args, **kwargs)
            bound.run = self.timed("kernel launches", bound.run)
            return bound
        host.bind_launch = bind_timed

    def report(self) -> str:
        lines = [f"{'op':40s} {'n':>4s} {'first run s':>12s} {'worst s':>9s} {'second run s':>13s}"]
        first, second = self.spent
        for name in sorted(first, key=lambda n: -first[n][1]):
            n, total, worst = first[name]
            lines.append(f"{name:40s} {n:4d} {total:12.4f} {worst:9.4f} "
                         f"{second.get(name, (0, 0.0))[1]:13.4f}")
        return "\n".join(lines)


def _prewarm(module) -> float:
    """A tiny convolution and matmul in the module's dtype: cuDNN's and cuBLAS's start-up."""
    dtype = next(module.parameters()).dtype
    start = time.perf_counter()
    x = torch.randn(1, 8, 8, 8, device=DEVICE, dtype=dtype)
    torch.nn.functional.conv2d(x, torch.randn(8, 8, 3, 3, device=DEVICE, dtype=dtype))
    torch.mm(x.view(8, 64), torch.randn(64, 8, device=DEVICE, dtype=dtype))
    _sync()
    return time.perf_counter() - start


def _built(ns) -> tuple:
    """(module, args, prewarm seconds or None): the model on the GPU, as bench_deploy builds
    it, with cuDNN and cuBLAS started first under ``--prewarm``."""
    module, args = _model(ns.config, ns.model)
    _sync()
    return module, args, _prewarm(module) if ns.prewarm else None


def by_phase(ns) -> None:
    """Wall time of each phase, nothing instrumented: what bench_deploy's kiln_load sees."""
    module, args, warm = _built(ns)
    marks = [time.perf_counter()]
    import storage
    import storage.deploy    # noqa: F401 -- as bench_deploy times it
    marks.append(time.perf_counter())
    with torch.inference_mode():
        fn = storage.Store(ns.store).load_model(ns.model, module)
        marks.append(time.perf_counter())
        for _ in range(2):      # the first call, then the CUDA graph's capture and replay
            fn(*args)
            _sync()
            marks.append(time.perf_counter())
    took = [b - a for a, b in zip(marks, marks[1:])]
    print(f"{ns.model} on {DEVICE}: "
          + (f"prewarm {warm:.3f} s, " if warm is not None else "")
          + f"import {took[0]:.3f} s, load_model {took[1]:.3f} s, first call {took[2]:.3f} s, "
          f"first result {sum(took[:3]):.3f} s; second call {took[3]:.3f} s")


def by_op(ns) -> None:
    module, args, warm = _built(ns)
    clock = _OpClock()
    clock.install()
    import storage
    with torch.inference_mode():
        start = time.perf_counter()
        fn = storage.Store(ns.store).load_model(ns.model, module)
        loaded = time.perf_counter()
        fn(*args)
        _sync()
        first = time.perf_counter() - loaded
        clock.run = 1
        flat = fn.captured.flatten_call(module, args, {})
        fn.compiled.run_unchecked(flat)      # direct, as the first call ran (no graph)
        _sync()
    print(f"{ns.model} on {DEVICE}: " + (f"prewarm {warm:.3f} s, " if warm is not None else "")
          + f"load_model {loaded - start:.3f} s, first call {first:.3f} s (synchronized "
          f"op by op, so slower than bench_deploy)")
    print(clock.report())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--config", default="configs/zoo-deploy.toml")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--ops", action="store_true", help="time the first call op by op")
    parser.add_argument("--phases", action="store_true",
                        help="wall time per phase only, nothing instrumented")
    parser.add_argument("--prewarm", action="store_true",
                        help="with --ops or --phases: start cuDNN and cuBLAS first")
    ns = parser.parse_args()
    if ns.ops or ns.phases:
        return (by_op if ns.ops else by_phase)(ns)
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
