"""The pipeline overlaps build and tune (issue 16, goal 4): a kernel is tuned as soon as its
own builds are done, not after the whole build stage.

The runner (``pipeline.runner._Runner``) is driven through a stand-in cluster that finishes
one task at a time, oldest first, with given results (one model, two kernels, one GPU
architecture): the order of what the runner submits and what finishes is then exact, with
no clock involved.
"""
from __future__ import annotations

import io
import types
from collections import deque

from pipeline.cluster import ClusterInfo, Outcome
from pipeline.config import parse_config
from pipeline.progress import Progress
from pipeline.runner import STAGES, _Runner
from pipeline.shapes import KernelShape
from pipeline.tasks import TaskResult

KERNELS = [KernelShape(k * 64, "pointwise1d", ("torch.float32",) * 2, (64, 64), (64,))
           for k in "ab"]


class OneAtATime:
    """Finishes the oldest pending task on each wait, with the result its stage gives."""

    def __init__(self):
        self.info = ClusterInfo("fake", True, cpu_workers=1, gpu_workers=1, attempts=1)
        self.queue: deque = deque()
        self.log: list[tuple[str, str, str]] = []      # ("submit" | "done", stage, kernel)

    def submit(self, fn, job, store_root, *, key, gpu=False, near=None):
        stage = key.split("-")[0]
        future = _Future(stage, job, key)
        self.queue.append(future)
        self.log.append(("submit", stage, _kernel(job)))
        return future

    def wait_any(self, timeout):
        if not self.queue:
            return []
        future = self.queue.popleft()
        self.log.append(("done", future.stage, _kernel(future.job)))
        return [future]

    def outcome(self, future):
        job = future.job
        model = getattr(job, "model", None) or getattr(job, "name", "m")
        if future.stage == "capture":
            return Outcome(True, TaskResult("capture", model, "ok", key="g" * 64))
        if future.stage == "lower":
            shapes = tuple(KERNELS) if job.target == "cuda" else ()
            return Outcome(True, TaskResult("lower", model, "ok", key="m", target=job.target,
                                            kernel_shapes=shapes))
        if future.stage == "tune":
            return Outcome(True, TaskResult("tune", model, "ok", target="sm_90",
                                            device="Fake GPU", timed=2))
        return Outcome(True, TaskResult(future.stage, model, "ok", built=1))

    def worker_of(self, future):
        return "fake-worker"

    def release(self, futures):
        pass

    def executing(self):
        return {}

    def placement_names(self, counts):
        return counts


class _Future:
    """Hashable by identity, as a Dask future is to the runner."""

    def __init__(self, stage: str, job, key: str):
        self.stage, self.job, self.key = stage, job, key


def _kernel(job) -> str:
    shape = getattr(job, "shape", None)
    return shape.kernel_key[0] if shape is not None else ""


def _run(tmp_path, tuning: dict):
    """One model's run with ``[tuning]`` as given: (the report, the stand-in's log)."""
    config = parse_config({"run": {"targets": ["sm_90"]}, "tuning": tuning,
                           "models": [{"name": "m", "factory": "a.b:one"}]}, "z.toml")
    cluster = OneAtATime()
    stop = types.SimpleNamespace(requested=False)
    with Progress(STAGES, io.StringIO(), False) as progress:
        report = _Runner(config, str(tmp_path / "store"), cluster, progress, stop).run()
    return report, cluster.log


def test_a_kernel_is_tuned_as_soon_as_its_builds_finish(tmp_path):
    report, log = _run(tmp_path, {"enabled": True})
    assert ("submit", "build", "b") in log and ("submit", "tune", "a") in log
    # tuning of kernel a is submitted when a's build finishes, before b's build finishes
    assert log.index(("submit", "tune", "a")) < log.index(("done", "build", "b"))
    assert log.index(("done", "build", "a")) < log.index(("submit", "tune", "a"))
    assert log.index(("done", "tune", "a")) < log.index(("done", "tune", "b"))
    assert sum(r.stage == "tune" for r in report.results) == 2


def test_overlap_off_holds_every_tune_until_the_last_build(tmp_path):
    """``[tuning] overlap = false`` is the stage barrier the overlap is measured against:
    no tune is submitted while a build is pending, and every kernel is still tuned."""
    report, log = _run(tmp_path, {"enabled": True, "overlap": False})
    last_build = max(k for k, e in enumerate(log) if e[:2] == ("done", "build"))
    tunes = [k for k, e in enumerate(log) if e[:2] == ("submit", "tune")]
    assert len(tunes) == 2 and min(tunes) > last_build
    assert sum(r.stage == "tune" and r.status == "ok" for r in report.results) == 2
