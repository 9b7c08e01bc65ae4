"""Successive halving with a roofline stop: time many candidates briefly, the best longer.

Equal repeats for every candidate spend most of the GPU time on configs that are plainly
slow after three runs. Here every candidate (in the order given: the cost model's, see
``cost.rank``) is verified and timed ``first_reps`` times; the faster half goes on to
``growth`` times as many more repetitions, and so on until one candidate is left besides
the default. The default config is kept every round: it is the baseline a gain is measured
against, and its time must be as well measured as the winner's.

Stops, and why (``stop_reason``):
  * ``"roofline"``: a candidate ran within ``roofline`` (0.9) of ``floor_ms``, the time a
    memory-bound kernel's bytes take at the card's measured copy bandwidth; nothing can be
    much faster, so nothing more is timed (the rest are ``not_reached``);
  * ``"launch_bound"``: the default ran within ``launch_bound`` (1.1x) of ``launch_ms``, the
    card's measured launch latency of an empty kernel; no config can run faster than a
    launch, so none can gain more than that margin, and nothing else is timed (a default
    timed before, ``default_ms``, is judged the same way before anything runs);
  * ``"budget"``: ``over_budget()`` said so before a measurement;
  * ``"halving"``: the rounds ended with one candidate left (or none timed).

``measure(config, reps)`` times ``reps`` more repetitions of ``config`` (verifying it first
on its first call) and returns its measurement over all repetitions so far; nothing here
touches a GPU, so tests give a made-up ``measure``.

Example:
    >>> from compiler.kernels.spec import Config
    >>> from compiler.autotune.measurement import Measurement
    >>> speed = {Config(XBLOCK=b): 1.0 / b for b in (128, 256, 512, 1024)}
    >>> reps = {}
    >>> def measure(config, n):
    ...     reps[config] = reps.get(config, 0) + n
    ...     return Measurement(config, "ok", (speed[config],) * reps[config])
    >>> out = successive_halving(list(speed), Config(XBLOCK=128), measure)
    >>> str(out.best.config), out.stop_reason, reps[Config(XBLOCK=1024)], reps[Config(XBLOCK=256)]
    ('XBLOCK=1024 num_stages=3 num_warps=4', 'halving', 21, 3)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

from ..kernels.spec import Config
from .measurement import Measurement

Measure = Callable[[Config, int], Measurement]
STOP_REASONS = ("roofline", "launch_bound", "budget", "halving")


@dataclass
class HalvingResult:
    """Every config's last measurement, why the search stopped, what it never reached."""
    measurements: dict[Config, Measurement]
    stop_reason: str
    not_reached: list[Config] = field(default_factory=list)
    rounds: int = 0

    @property
    def best(self) -> Measurement | None:
        ok = [m for m in self.measurements.values() if m.status == "ok"]
        return min(ok, key=lambda m: m.median_ms, default=None)


class _Stop(Exception):
    def __init__(self, reason: str):
        self.reason = reason


def successive_halving(configs: Sequence[Config], default: Config | None, measure: Measure, *,
                       first_reps: int = 3, growth: int = 2, max_reps: int = 100,
                       floor_ms: float | None = None, roofline: float = 0.9,
                       launch_ms: float | None = None, launch_bound: float = 1.1,
                       default_ms: float | None = None,
                       over_budget: Callable[[], bool] = lambda: False) -> HalvingResult:
    """Search ``configs`` (default first, then in order) as the module doc says. With
    ``default`` None no config is kept as the baseline (its time is known already:
    ``default_ms``, if given, is checked against the launch latency)."""
    order = ([default] if default is not None else []) + [
        c for c in dict.fromkeys(configs) if c != default]
    done: dict[Config, Measurement] = {}
    reached: set[Config] = set()

    def near_launch(ms: float | None) -> bool:
        return launch_ms is not None and ms is not None and ms <= launch_ms * launch_bound

    if default is None and near_launch(default_ms):
        return HalvingResult(done, "launch_bound", order, 0)

    def run(config: Config, reps: int) -> None:
        if over_budget():
            raise _Stop("budget")
        reached.add(config)
        m = done[config] = measure(config, reps)
        if (floor_ms is not None and m.status == "ok"
                and m.median_ms * roofline <= floor_ms):
            raise _Stop("roofline")
        if config == default and m.status == "ok" and near_launch(m.median_ms):
            raise _Stop("launch_bound")

    reason, rounds, reps, alive = "halving", 0, first_reps, order
    try:
        while True:
            rounds += 1
            for config in alive:
                run(config, reps)
            ok = sorted((c for c in alive if done[c].status == "ok"),
                        key=lambda c: done[c].median_ms)
            contenders = [c for c in ok if c != default]
            if len(contenders) <= 1 or reps * growth > max_reps:
                break
            alive = contenders[:math.ceil(len(contenders) / 2)]
            if default in ok:
                alive = [default] + alive
            reps *= growth
    except _Stop as stop:
        reason = stop.reason
    not_reached = [c for c in order if c not in reached]
    return HalvingResult(done, reason, not_reached, rounds)
