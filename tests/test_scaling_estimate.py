"""benchmarks/scaling_estimate.py: a run's timeline replayed on more workers keeps every
task after what it needs, and shows where the GPUs would starve."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from storage.timeline import RunTimeline, TaskSpan, save_timeline

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "scaling_estimate.py"
_spec = importlib.util.spec_from_file_location("scaling_estimate", _PATH)
scaling = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = scaling     # dataclasses look their module up while defined
_spec.loader.exec_module(scaling)


def _run(models: int = 4, kernels: int = 6, build_s: float = 1.0,
         tune_s: float = 2.0) -> RunTimeline:
    """A one-GPU run as kiln records it: per model a capture, a lowering, a build and a
    tune per kernel (tunes one at a time on the single GPU), then a relower."""
    spans, gpu_free = [], 0.0
    for m in range(models):
        name, t = f"m{m}", 0.5 * m
        spans += [TaskSpan("capture", name, "", t, t + 1, "ok"),
                  TaskSpan("lower", name, "cuda", t + 1, t + 2, "ok")]
        last = t + 2
        for k in range(kernels):
            b0 = t + 2 + k * build_s
            spans.append(TaskSpan("build", name, "sm_90", b0, b0 + build_s, "ok"))
            start = max(gpu_free, b0 + build_s)
            spans.append(TaskSpan("tune", name, "", start, start + tune_s, "ok"))
            gpu_free = last = start + tune_s
        spans.append(TaskSpan("relower", name, "cuda", last, last + 1, "ok"))
    return RunTimeline("synthetic", max(s.end_s for s in spans), tuple(spans))


def test_every_task_follows_what_it_needs():
    tasks = scaling.tasks_of(_run())
    by = {t.index: t for t in tasks}
    for t in tasks:
        need_stages = {by[n].stage for n in t.needs}
        expected = {"capture": set(), "lower": {"capture"}, "build": {"lower"},
                    "tune": {"build"}, "relower": {"tune"}}[t.stage]
        assert need_stages == expected, (t.stage, need_stages)
    assert all(len(t.needs) == 1 for t in tasks if t.stage == "tune")


def test_tune_bound_run_scales_with_gpus_until_builds_starve_them(tmp_path):
    tasks = scaling.tasks_of(_run())
    one, two, eight = (scaling.simulate(tasks, cpu=16, gpus=g) for g in (1, 2, 8))
    assert one.wall_s > two.wall_s > eight.wall_s
    assert one.gpu_busy > 0.95                           # one GPU: the tune stage is the limit
    assert one.tune_span_s / (2 * two.tune_span_s) > 0.85
    starved = scaling.simulate(tasks, cpu=1, gpus=8)      # one CPU worker cannot feed eight
    assert starved.gpu_busy < 0.3 and starved.wall_s > eight.wall_s
    path = save_timeline(_run(), tmp_path / "run-x.tasks.json")
    out = scaling.report(scaling.load_timeline(path), [1, 16], [1, 8], measured_cpu=16)
    assert "replayed on 16 CPU + 1 GPU workers" in out and len(out.splitlines()) == 2 + 4
