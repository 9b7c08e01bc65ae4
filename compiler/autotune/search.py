"""What to time next: skip what was timed, and a budgeted search for spaces too big to sweep.

Both are pure functions of configs, keys and a cost callable; nothing here times or stores.

Example:
    >>> from compiler.autotune.spaces import Config
    >>> a, b = Config(XBLOCK=256), Config(XBLOCK=512)
    >>> plan_trials([a, b], done_keys={a.key}) == [b]
    True
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from .spaces import Config, Space, neighbours


def plan_trials(space: Iterable[Config], done_keys: Iterable[str]) -> list[Config]:
    """The configs of ``space`` whose key is not in ``done_keys``, in order, without repeats.

    ``done_keys`` are config keys already timed for this (kernel, sizes, GPU kind), e.g. the
    ``config_key`` column of the store's trials; adding candidates to a space then plans only
    the new ones, and a second sweep plans nothing.
    """
    done = set(done_keys)
    todo = []
    for config in space:
        if config.key not in done:
            done.add(config.key)
            todo.append(config)
    return todo


Cost = Callable[[Config], "float | None"]


@dataclass
class SearchResult:
    """Where a search ended: the best config, its cost, and every config it evaluated."""
    best: Config
    best_cost: float | None
    evaluated: dict[Config, float | None] = field(default_factory=dict)
    calls: int = 0          # how many times ``cost`` ran (seeds from ``known`` excluded)


def coordinate_descent(space: Space, numels: Sequence[int], start: Config, cost: Cost,
                       budget: int, known: dict[Config, float | None] | None = None,
                       radius: int = 1) -> SearchResult:
    """Greedy descent over one parameter at a time, from ``start``, within ``budget``.

    Each round evaluates the unevaluated neighbours of the current best (configs differing
    in one parameter by up to ``radius`` steps, see ``spaces.neighbours``) and moves to the
    cheapest; when none improves, the radius doubles once before stopping, to step over a
    plateau. ``cost`` returns None for a config that failed (never chosen). ``known`` seeds
    costs already measured (e.g. read back from the store): they cost no budget. ``budget``
    counts calls of ``cost``, the start included.
    """
    evaluated: dict[Config, float | None] = dict(known or {})
    calls = 0

    def evaluate(config: Config) -> float | None:
        nonlocal calls
        if config not in evaluated:
            calls += 1
            evaluated[config] = cost(config)
        return evaluated[config]

    best, best_cost = start, evaluate(start)
    widened = False
    while calls < budget:
        step = radius * (2 if widened else 1)
        todo = [c for c in neighbours(space, numels, best, step) if c not in evaluated]
        for config in todo:
            if calls >= budget:
                break
            evaluate(config)
        scored = [(c, evaluated[c]) for c in neighbours(space, numels, best, step)
                  if evaluated.get(c) is not None]
        challenger = min(scored, key=lambda item: item[1], default=None)
        if challenger is not None and (best_cost is None or challenger[1] < best_cost):
            best, best_cost = challenger
            widened = False
        elif not widened:
            widened = True
        else:
            break
    ok = [(c, v) for c, v in evaluated.items() if v is not None]
    if ok:   # seeds from ``known`` may beat the path taken
        best, best_cost = min(ok, key=lambda item: item[1])
    return SearchResult(best, best_cost, evaluated, calls)
