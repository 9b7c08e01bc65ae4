"""How a candidate's launch is timed, and the copy bandwidth a memory-bound kernel is judged by.

A timer is any callable ``timer(fn, reps, config) -> [ms, ...]`` that runs ``fn`` (one
launch, already verified) ``reps`` times and returns one time each. ``EventTimer`` does it on
a GPU with CUDA events, clearing the L2 cache between repetitions as ``do_bench`` does, so a
second call for the same config adds repetitions instead of starting over (what successive
halving needs; ``do_bench`` takes a time budget, not a count). The config is passed so a
test can give made-up times per config (``tests/given_timer.py``) while everything around
the clock runs for real.

``copy_gbps_of(device)`` measures a device-to-device copy once per device per process: the
roofline a memory-bound kernel cannot beat (bytes read + written per second, GB/s).
``launch_ms_of(device)`` measures, also once, the time an (almost) empty kernel takes under
the same timer: no config of any kernel can run faster than that.

Example:
    >>> fixed = lambda fn, reps, config: [0.5] * reps
    >>> fixed(None, 3, None)
    [0.5, 0.5, 0.5]
"""
from __future__ import annotations

import functools
import statistics
from typing import Any, Callable, Protocol, Sequence

import torch


class Timer(Protocol):
    def __call__(self, fn: Callable[[], Any], reps: int, config: Any) -> list[float]: ...


class EventTimer:
    """CUDA-event timings, ``warmup`` untimed launches first (the first call only per fn)."""

    def __init__(self, device: str = "cuda", warmup: int = 3, flush_mb: int = 256):
        self.device, self.warmup = device, warmup
        self._flush = torch.empty(flush_mb << 18, dtype=torch.int32, device=device)
        self._warm: set[int] = set()

    def __call__(self, fn: Callable[[], Any], reps: int, config: Any) -> list[float]:
        if id(fn) not in self._warm:
            for _ in range(self.warmup):
                fn()
            self._warm.add(id(fn))
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        for start, end in zip(starts, ends):
            self._flush.zero_()       # a cold L2, as the kernel meets it inside a model
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(self.device)
        return [s.elapsed_time(e) for s, e in zip(starts, ends)]


def copy_gbps(device: str = "cuda", mbytes: int = 1024, reps: int = 20) -> float:
    """Median GB/s (read + written) of a ``mbytes`` MB device-to-device copy on ``device``."""
    src = torch.randn(mbytes << 18, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    timer = EventTimer(device, flush_mb=1)
    times = timer(lambda: dst.copy_(src), reps, None)
    return 2 * src.nbytes / (statistics.median(times) * 1e-3) / 1e9


@functools.lru_cache(maxsize=None)
def _copy_gbps_of_name(name: str, device: str) -> float:
    return copy_gbps(device)


def copy_gbps_of(device: str = "cuda") -> float:
    """``copy_gbps`` measured once per GPU (by name) in this process."""
    index = torch.device(device).index
    name = torch.cuda.get_device_name(index if index is not None else None)
    return _copy_gbps_of_name(name, device)


def launch_ms(device: str = "cuda", reps: int = 50) -> float:
    """Median ms of a one-element kernel timed as candidates are (``EventTimer``, cold L2):
    the launch latency every kernel pays, whatever its config."""
    one = torch.ones(1, dtype=torch.float32, device=device)
    timer = EventTimer(device)
    return statistics.median(timer(lambda: one.add_(1.0), reps, None))


@functools.lru_cache(maxsize=None)
def _launch_ms_of_name(name: str, device: str) -> float:
    return launch_ms(device)


def launch_ms_of(device: str = "cuda") -> float:
    """``launch_ms`` measured once per GPU (by name) in this process."""
    index = torch.device(device).index
    return _launch_ms_of_name(torch.cuda.get_device_name(index if index is not None else None),
                              device)


def roofline_ms(arg_bytes: Sequence[int], gbps: float) -> float:
    """The least time moving ``arg_bytes`` (each pointer's, read or written once) can take.

    >>> roofline_ms([2_000_000, 2_000_000], 4000.0)
    0.001
    """
    return sum(arg_bytes) / (gbps * 1e9) * 1e3
