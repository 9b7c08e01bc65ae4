"""A timer with given times per config, for CPU tests of the tune path (see
``compiler.autotune.timing``): everything up to the clock runs for real (kernels load and
run under the interpreter, outputs are checked), only the times are made up.

    >>> timer = GivenTimer(lambda config: 0.5)
    >>> timer(lambda: None, 2, "c"), timer.reps
    ([0.5, 0.5], {'c': 2})
"""
from __future__ import annotations

import time
from pathlib import Path
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


def small_space(tmp_path: Path, descent_budget: int = 2) -> Path:
    """The default search space with a smaller ``descent_budget``, written under
    ``tmp_path``: a search then times the default and that many ranked candidates."""
    from compiler.autotune.spaces import spaces_path
    text = spaces_path("default").read_text()
    assert "descent_budget = 40" in text, "the default space's budget changed"
    path = tmp_path / "small.toml"
    path.write_text(text.replace("descent_budget = 40", f"descent_budget = {descent_budget}"))
    return path
