"""Where a `kiln run` would saturate on more GPUs: its task timeline replayed on more workers.

A run saves every task's span (``STORE/logs/run-*.tasks.json``, ``storage.timeline``). This
script takes those durations as they were measured (on one GPU) and schedules the same tasks
again on ``C`` CPU workers and ``G`` GPU workers, as kiln's runner would: capture, lower,
build and relower on CPU workers, tune on GPU workers, each task started as soon as what it
needs is done and a worker of its kind is free, first come first served. For each (C, G) it
prints the simulated wall time, the tune stage's span and its scaling efficiency against one
GPU (``t1 / (G * tG)``), and how busy the GPUs were: GPUs busy well under 100% while tune
tasks wait on builds means the CPU workers do not keep them fed.

Dependencies are rebuilt from the spans, which name a model and a stage but not a kernel:
a model's lowerings follow its capture, its builds follow its lowerings, its k-th tune (by
start) follows its k-th build (by end) where it had as many builds (a kernel shared with a
model built earlier is built once: such a tune follows the model's lowerings only), and its
relower follows its tunes. Durations do not change with the worker count: contention for
the CPU's cores, the store's files and the scheduler is not modelled, so the estimate is an
upper bound on scaling. Replaying the run's own worker counts checks the model against the
measured wall time (printed first).

    python benchmarks/scaling_estimate.py STORE/logs/run-*.tasks.json [--cpu 8,16,64]
        [--gpus 1,2,4,8] [--measured-cpu 8]
"""
from __future__ import annotations

import argparse
import heapq
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from storage.timeline import RunTimeline, TaskSpan, load_timeline  # noqa: E402

CPU_STAGES = ("capture", "lower", "build", "relower")


@dataclass(frozen=True)
class Task:
    index: int
    stage: str
    seconds: float
    needs: tuple[int, ...]
    order: float          # when it started in the measured run: first come, first served


@dataclass(frozen=True)
class Estimate:
    cpu: int
    gpus: int
    wall_s: float
    tune_span_s: float    # first tune start to last tune end
    gpu_busy: float       # GPU-seconds of tuning over G * tune span


def tasks_of(run: RunTimeline) -> list[Task]:
    """The run's tasks with the dependencies the module doc describes."""
    spans = [s for s in run.spans if s.status != "skipped"]
    index = {id(s): k for k, s in enumerate(spans)}
    needs: dict[int, list[int]] = {k: [] for k in range(len(spans))}
    for model in dict.fromkeys(s.model for s in spans):
        mine = [s for s in spans if s.model == model]
        by = {stage: [s for s in mine if s.stage == stage] for stage in
              ("capture", "lower", "build", "tune", "relower")}
        _after(needs, index, by["lower"], by["capture"])
        _after(needs, index, by["build"], by["lower"] or by["capture"])
        builds = sorted(by["build"], key=lambda s: s.end_s)
        tunes = sorted(by["tune"], key=lambda s: s.start_s)
        if builds and len(builds) == len(tunes):
            for b, t in zip(builds, tunes):
                needs[index[id(t)]].append(index[id(b)])
        else:
            _after(needs, index, tunes, by["lower"] or by["capture"])
        _after(needs, index, by["relower"], by["tune"] or by["build"] or by["lower"])
    return [Task(k, s.stage, max(0.0, s.end_s - s.start_s), tuple(needs[k]), s.start_s)
            for k, s in enumerate(spans)]


def _after(needs: dict, index: dict, later: list[TaskSpan], earlier: list[TaskSpan]) -> None:
    for s in later:
        needs[index[id(s)]].extend(index[id(e)] for e in earlier)


def simulate(tasks: list[Task], cpu: int, gpus: int) -> Estimate:
    """List-schedule ``tasks`` on ``cpu`` CPU and ``gpus`` GPU workers.

    >>> ts = [Task(0, "build", 1.0, (), 0.0), Task(1, "tune", 2.0, (0,), 1.0),
    ...       Task(2, "build", 1.0, (), 0.1), Task(3, "tune", 2.0, (2,), 1.1)]
    >>> simulate(ts, cpu=2, gpus=1).wall_s, simulate(ts, cpu=2, gpus=2).wall_s
    (5.0, 3.0)
    """
    free = {"cpu": cpu, "gpu": gpus}
    left = {t.index: len(t.needs) for t in tasks}
    users: dict[int, list[int]] = {t.index: [] for t in tasks}
    for t in tasks:
        for n in t.needs:
            users[n].append(t.index)
    ready = {"cpu": [], "gpu": []}
    for t in tasks:
        if not t.needs:
            heapq.heappush(ready[_kind(t)], (t.order, t.index))
    running: list[tuple[float, int]] = []
    now, tune_start, tune_end, tune_busy = 0.0, None, 0.0, 0.0
    by_index = {t.index: t for t in tasks}
    while ready["cpu"] or ready["gpu"] or running:
        for kind in ("cpu", "gpu"):
            while free[kind] and ready[kind]:
                task = by_index[heapq.heappop(ready[kind])[1]]
                free[kind] -= 1
                heapq.heappush(running, (now + task.seconds, task.index))
                if task.stage == "tune":
                    tune_start = now if tune_start is None else tune_start
                    tune_busy += task.seconds
        now, done = heapq.heappop(running)
        task = by_index[done]
        free[_kind(task)] += 1
        if task.stage == "tune":
            tune_end = max(tune_end, now)
        for user in users[done]:
            left[user] -= 1
            if not left[user]:
                heapq.heappush(ready[_kind(by_index[user])], (by_index[user].order, user))
    span = tune_end - tune_start if tune_start is not None else 0.0
    return Estimate(cpu, gpus, now, span, tune_busy / (gpus * span) if span else 0.0)


def _kind(task: Task) -> str:
    return "gpu" if task.stage == "tune" else "cpu"


def report(run: RunTimeline, cpus: list[int], gpus: list[int], measured_cpu: int) -> str:
    tasks = tasks_of(run)
    own = simulate(tasks, measured_cpu, 1)
    lines = [f"{run.name}: {len(tasks)} tasks ({sum(t.stage == 'tune' for t in tasks)} tune); "
             f"measured wall {run.wall_s:.1f} s, replayed on {measured_cpu} CPU + 1 GPU "
             f"workers {own.wall_s:.1f} s",
             f"{'cpu':>4} {'gpus':>4} {'wall s':>8} {'tune span s':>12} {'tune eff':>9} "
             f"{'GPU busy':>9}"]
    for c in cpus:
        one = simulate(tasks, c, 1)
        for g in gpus:
            e = one if g == 1 else simulate(tasks, c, g)
            eff = one.tune_span_s / (g * e.tune_span_s) if e.tune_span_s else 0.0
            lines.append(f"{c:4d} {g:4d} {e.wall_s:8.1f} {e.tune_span_s:12.1f} {eff:9.2f} "
                         f"{e.gpu_busy:9.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("timeline", type=Path)
    p.add_argument("--cpu", default="8,16,64", help="CPU worker counts")
    p.add_argument("--gpus", default="1,2,4,8", help="GPU worker counts")
    p.add_argument("--measured-cpu", type=int, default=8,
                   help="the CPU workers of the measured run (its config's cluster.workers)")
    args = p.parse_args(argv)
    ints = lambda text: [int(x) for x in text.split(",")]   # noqa: E731
    print(report(load_timeline(args.timeline), ints(args.cpu), ints(args.gpus),
                 args.measured_cpu))
    return 0


if __name__ == "__main__":
    sys.exit(main())
