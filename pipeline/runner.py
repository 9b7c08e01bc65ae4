"""The run: capture every model, lower each graph for every target, record every outcome.

``run_zoo`` starts (or joins) the cluster, submits one capture task per model, and as each
capture finishes submits its lower tasks next to it (the captured graph stays on that
worker). The loop below only moves keys and small ``TaskResult`` records:

- a task whose worker dies is re-run elsewhere by the scheduler, ``tasks.retries`` times,
  then becomes a failure (``KilledWorker``) with its attempt count;
- a task running longer than its stage's timeout is cancelled and its worker restarted (the
  only way to stop a thread hung in native code), and becomes a ``TaskTimeout`` failure;
- every failure is written to the store's ``failures`` dataset, and the other models go on;
- SIGINT or SIGTERM stops submitting, cancels what is pending and returns with every
  finished record already in the store; the next run skips what is there.

Stages to come (build per target, tune on GPU workers) hang off ``_Runner._finished`` the
way lower hangs off capture: a lower result carries its module's kernel keys, and the
distinct keys across all models are what build and tune fan out over (once per kernel).

Example:
    >>> from pipeline.config import load_config
    >>> report = run_zoo(load_config("configs/zoo-tiny.toml"), "/tmp/s")  # doctest: +SKIP
    >>> report.exit_code                                                     # doctest: +SKIP
    0
"""
from __future__ import annotations

import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, TextIO

from pipeline.cluster import Cluster
from pipeline.config import RunConfig
from pipeline.progress import Progress
from pipeline.report import RunReport, lower_targets
from pipeline.tasks import FAILED, LowerJob, TaskResult, capture_task, lower_task

STAGES = ("capture", "lower")
_POLL_S = 0.5          # how often the loop wakes to look at signals and timeouts
_TIMEOUT_CHECK_S = 1.0


class StopSignals:
    """SIGINT / SIGTERM set ``requested`` instead of raising, so the run can stop cleanly;
    a second signal falls back to the default (an impatient user can still kill it).

    Installs nothing outside the main thread (Python only delivers signals there).
    """

    def __init__(self) -> None:
        self.requested: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = signal.Signals(signum).name
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


@dataclass(frozen=True)
class _Task:
    """What the runner remembers about a submitted future."""
    stage: str
    model: str
    record_key: str          # the key failure rows name: source (capture) or graph:target
    target: str = ""
    job: Any = None
    dask_key: str = ""


class _Runner:
    """The submit / wait / record loop of one run on one cluster."""

    def __init__(self, config: RunConfig, store_root: str, cluster: Cluster,
                 progress: Progress, stop: StopSignals):
        self.config, self.store_root, self.cluster = config, store_root, cluster
        self.progress, self.stop = progress, stop
        self.report = RunReport(config=config, store=store_root)
        self.pending: dict[Any, _Task] = {}
        self.by_key: dict[str, Any] = {}
        self.run_id = uuid.uuid4().hex[:8]   # task keys unique even on a shared scheduler
        self.targets = lower_targets(config)

    # --- submitting ---------------------------------------------------------------------------

    def _submit(self, task: _Task, fn: Any, arg: Any, near: str | None = None) -> None:
        key = f"{task.stage}-{task.model}-{task.target or 'graph'}-{self.run_id}"
        future = self.cluster.submit(fn, arg, self.store_root, key=key, near=near)
        self.pending[future] = replace(task, dask_key=key)
        self.by_key[key] = future

    def _submit_captures(self) -> None:
        # Totals up front, so the bars show the whole job; a failed capture takes its
        # lowerings off the lower bar.
        self.progress.add("capture", len(self.config.models))
        self.progress.add("lower", len(self.config.models) * len(self.targets))
        for spec in self.config.models:
            self._submit(_Task("capture", spec.name, spec.source, job=spec), capture_task, spec)

    def _submit_lowers(self, captured: TaskResult, spec: Any, near: str | None) -> None:
        for target in self.targets:
            job = LowerJob(spec=spec, graph_key=captured.key, target=target,
                           options_json=self.config.compiler_json)
            task = _Task("lower", spec.name, f"{captured.key}:{target}", target, job)
            self._submit(task, lower_task, job, near=near)

    # --- the loop -----------------------------------------------------------------------------

    def run(self) -> RunReport:
        start = time.perf_counter()
        self._submit_captures()
        last_check = time.perf_counter()
        while self.pending and not self.stop.requested:
            for future in self.cluster.wait_any(_POLL_S):
                if future in self.pending:
                    self._finished(future)
            if time.perf_counter() - last_check >= _TIMEOUT_CHECK_S:
                self._check_timeouts()
                last_check = time.perf_counter()
        if self.stop.requested:
            self._interrupt()
        self.report.wall_s = time.perf_counter() - start
        return self.report

    def _finished(self, future: Any) -> None:
        task = self.pending.pop(future)
        self.by_key.pop(task.dask_key, None)
        outcome = self.cluster.outcome(future)
        if outcome.ok:
            result = outcome.value
        else:
            died = outcome.error_type == "KilledWorker"
            result = self._failed(task, outcome.error_type, outcome.message,
                                  attempts=self.cluster.info.attempts if died else 1)
        # Where it ran: failure rows name it, and lowerings go next to their graph.
        worker = self.cluster.worker_of(future) if outcome.ok else None
        self.cluster.release([future])
        self._record(result, worker)
        if task.stage == "capture":
            self._after_capture(result, task, worker)

    def _after_capture(self, result: TaskResult, task: _Task, near: str | None) -> None:
        if result.failed:
            self.progress.add("lower", -len(self.targets))
        else:
            self._submit_lowers(result, task.job, near)

    def _failed(self, task: _Task, error_type: str, message: str, attempts: int) -> TaskResult:
        return TaskResult(stage=task.stage, model=task.model, status=FAILED, key=task.record_key,
                          target=task.target, error_type=error_type, message=message,
                          attempts=attempts)

    def _record(self, result: TaskResult, worker: str | None) -> None:
        self.report.results.append(result)
        self.progress.finish(result.stage, result.status)
        if result.failed:
            self._write_failure(result, worker or "")
            where = f"{result.stage}[{result.target}]" if result.target else result.stage
            first = (result.message.strip().splitlines() or [""])[0]
            self.progress.note(f"FAILED {result.model}: {where}: {result.error_type}: "
                               f"{first[:200]}")

    def _write_failure(self, result: TaskResult, worker: str) -> None:
        from storage import FailureRecord, Store
        record = FailureRecord.build(stage=result.stage, key=result.key, model=result.model,
                                     error_type=result.error_type, message=result.message,
                                     traceback=result.traceback, attempts=result.attempts,
                                     worker=worker)
        try:
            Store(self.store_root).write("failures", [record])
        except Exception as exc:  # the run's outcome is still reported; say what was lost
            self.progress.note(f"could not record the failure of {result.model} in the store: "
                               f"{type(exc).__name__}: {exc}")

    # --- faults -------------------------------------------------------------------------------

    def _check_timeouts(self) -> None:
        for key, (worker, seconds) in self.cluster.executing().items():
            future = self.by_key.get(key)
            task = self.pending.get(future) if future is not None else None
            if task is not None and seconds > self.config.tasks.timeout(task.stage):
                self._time_out(future, task, worker)

    def _time_out(self, future: Any, task: _Task, worker: str) -> None:
        """A hung task: stop it (its worker is restarted) and record it as failed."""
        del self.pending[future], self.by_key[task.dask_key]
        self.cluster.stop(future, worker)
        limit = self.config.tasks.timeout(task.stage)
        result = self._failed(task, "TaskTimeout", f"{task.stage} of {task.model} ran over its "
                              f"{limit:g} s timeout on {worker}; the task was cancelled and "
                              f"the worker restarted", attempts=1)
        self._record(result, worker)
        if task.stage == "capture":
            self._after_capture(result, task, None)

    def _interrupt(self) -> None:
        self.progress.note(f"{self.stop.requested}: stopping; cancelling "
                           f"{len(self.pending)} unfinished task(s)")
        self.cluster.cancel(self.pending)
        self.pending.clear()
        self.by_key.clear()
        self.report.interrupted = True


def run_zoo(config: RunConfig, store_root: str, *, out: TextIO | None = None,
            live: bool | None = None) -> RunReport:
    """Run ``config`` into the store at ``store_root``; progress goes to ``out`` (stderr).

    ``live`` redraws the bars in place (default: when ``out`` is a terminal).
    """
    out = out if out is not None else sys.stderr
    live = out.isatty() if live is None else live
    with StopSignals() as stop:
        with Cluster(config.cluster, retries=config.tasks.retries) as cluster:
            info = cluster.info
            out.write(f"kiln run {config.name}: {len(config.models)} model(s) -> store "
                      f"{store_root}; {info.cpu_workers} CPU + {info.gpu_workers} GPU "
                      f"worker(s) at {info.address}\n")
            for note in info.notes:
                out.write(f"  note: {note}\n")
            progress = Progress(STAGES, out, live)
            report = _Runner(config, store_root, cluster, progress, stop).run()
    return report


def with_overrides(config: RunConfig, *, scheduler: str | None = None,
                   workers: int | None = None) -> RunConfig:
    """``config`` with command-line cluster settings applied (they win over the file).

    >>> from pipeline.config import parse_config
    >>> cfg = parse_config({"models": [{"factory": "a.b:c"}]}, "z.toml")
    >>> with_overrides(cfg, workers=4).cluster.workers
    4
    """
    cluster = config.cluster
    if scheduler is not None:
        cluster = replace(cluster, scheduler=scheduler)
    if workers is not None:
        cluster = replace(cluster, workers=workers)
    return replace(config, cluster=cluster)
