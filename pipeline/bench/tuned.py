"""kiln tuned inside the benchmark's own process: every kernel an untuned module launches is
timed over candidate configs on this GPU, and the module is compiled again with each kernel's
fastest verified config (``compile_module(configs=...)``, as ``kiln run``'s relower does with
the store's best trials).

``quick`` times the default's neighbours only (one step along each parameter); otherwise
the search space's own sweep or coordinate descent (``compiler.autotune.tune``). Tuning stops
starting new kernels after ``budget_s``: the rest keep their heuristic configs, and the
result says how many were tuned. Off CUDA nothing can be timed: the caller skips the system.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TuneSummary:
    configs: dict[str, dict[str, int]] = field(default_factory=dict)   # kernel key -> config
    kernels: int = 0          # distinct kernels launched
    tuned: int = 0            # of which timed within the budget
    seconds: float = 0.0


def tune_module(untuned: Any, args: tuple, device: str, quick: bool,
                budget_s: float) -> TuneSummary:
    """Best configs for the kernels ``untuned`` (a ``CompiledModel``) launches on ``args``.

    On a CPU the candidates run (and are checked) but nothing is timed, so no config wins."""
    from compiler.autotune import (Tuner, candidates, load_spaces, neighbours, record_launches,
                                   tune)
    with record_launches(untuned.compiled) as recorded:
        untuned(*args)
    spaces, summary = load_spaces(), TuneSummary()
    start = time.perf_counter()
    seen: set[str] = set()
    for launch in recorded.values():
        key = launch.kernel.kernel_key
        if key in seen:
            continue
        seen.add(key)
        summary.kernels += 1
        if time.perf_counter() - start > budget_s or launch.kind not in spaces.spaces:
            continue
        space = spaces.of_kernel(launch.kind, launch.kernel.spec.stencil)
        tuner = Tuner(launch, device, warmup_ms=5 if quick else 25, rep_ms=20 if quick else 100)
        configs = (neighbours(space, launch.numels, launch.default) if quick
                   else candidates(space, launch.numels))
        best = tune(tuner, space, configs, spaces.search).best
        summary.tuned += 1
        if best is not None and best.config != launch.default:
            summary.configs[key] = best.config.as_dict()
    summary.seconds = time.perf_counter() - start
    return summary
