"""A timer with given times per config, for CPU tests of the tune path (see
``compiler.autotune.timing``): everything up to the clock runs for real (kernels load and
run under the interpreter, outputs are checked), only the times are made up.

    >>> timer = GivenTimer(lambda config: 0.5)
    >>> timer(lambda: None, 2, "c"), timer.reps
    ([0.5, 0.5], {'c': 2})
"""
from __future__ import annotations

import time
from typing import Any, Callable


class GivenTimer:
    """``ms_of(config)`` per timing; counts the repetitions asked of each config and notes
    when each was first timed (``perf_counter``), so a test can check what ran and when."""

    def __init__(self, ms_of: Callable[[Any], float]):
        self.ms_of = ms_of
        self.reps: dict[Any, int] = {}
        self.first_at: dict[Any, float] = {}

    def __call__(self, fn: Callable[[], Any], reps: int, config: Any) -> list[float]:
        self.first_at.setdefault(config, time.perf_counter())
        self.reps[config] = self.reps.get(config, 0) + reps
        return [float(self.ms_of(config))] * reps
