"""Per-call times of a callable: CUDA events around each call on a GPU (the time the stream
was busy with or waiting for that call, so a host-bound call counts its launch overhead),
the host clock on a CPU. Reported as median and quartiles, so the spread shows.

Example:
    >>> t = Timing.of([1.0, 2.0, 3.0, 4.0, 100.0])
    >>> t.median_ms, t.q1_ms, t.q3_ms, t.n
    (3.0, 2.0, 4.0, 5)
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Timing:
    median_ms: float
    q1_ms: float
    q3_ms: float
    n: int

    @classmethod
    def of(cls, times_ms: list[float]) -> "Timing":
        if not times_ms:
            raise ValueError("no timings")
        if len(times_ms) == 1:
            return cls(times_ms[0], times_ms[0], times_ms[0], 1)
        q1, median, q3 = statistics.quantiles(times_ms, n=4, method="inclusive")
        return cls(median, q1, q3, len(times_ms))


def sync(device: str) -> None:
    import torch
    if device == "cuda":
        torch.cuda.synchronize()


def time_calls(fn: Callable[[], Any], device: str, repeats: int, warmup: int) -> Timing:
    """``repeats`` timed calls of ``fn`` after ``warmup`` untimed ones."""
    import torch
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            start_s = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start_s) * 1e3)
    return Timing.of(times)
