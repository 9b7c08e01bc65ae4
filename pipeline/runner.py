"""The run: capture every model, lower each graph, build and tune its kernels, record it all.

``run_zoo`` starts (or joins) the cluster and submits one capture task per model, except for
a model whose ``source_key`` (``pipeline.tasks.source_key``: spec, dtype, dynamic dims, torch
and kiln versions, factory source) names a stored graph that is loadable (or whose modules
for every lowering target of the run are stored): that model is not captured (reported
``stored``), and its lower tasks are submitted at once, to lower the stored graph. A model
given by a stored graph (``ModelSpec.graph_key``: ``kiln relower``) gets a ``restore_task``
in place of its capture. With ``capture_only`` (``kiln capture``) nothing follows capture.
Otherwise the stages chain through ``_Runner._after``, each as soon as its input is ready:

- capture done -> its lower tasks, one per lowering target, next to it (the graph read back
  at capture stays in that worker's memo);
- a ``cuda`` lower done -> for each kernel this run has not met yet (deduplicated by
  ``kernel_key`` across models: identical kernels build once), one build task per GPU
  architecture of the config (``sm_90``...), on CPU workers;
- every build of a kernel done -> with tuning on and GPU workers present, one tune task per
  distinct (kernel, sizes) on a GPU worker (Dask resource ``GPU=1``). Without GPU workers
  nothing is tuned and the summary says how many kernels were left untuned.
- every kernel shape of a model's ``cuda`` module through the tune stage -> one relower task
  per GPU kind that tuned them (``pipeline.tuned_tasks``), on a CPU worker next to the
  model's capture: the module lowered again with the best stored configs, stored with
  ``tuned_for`` = the device name (a rerun finds it stored and skips it).

The loop below only moves keys and small ``TaskResult`` records (build and tune tasks read
the kernel source from the store themselves):

- a task whose worker dies is re-run elsewhere by the scheduler, ``tasks.retries`` times,
  then becomes a failure (``KilledWorker``) with its attempt count;
- a task running longer than its stage's timeout is cancelled and the child process running
  it killed (``pipeline.sandbox.stop_task``; its worker is restarted where that fails), and
  becomes a ``TaskTimeout`` failure;
- every failure is written to the store's ``failures`` dataset, and the other models go on;
- SIGINT or SIGTERM stops submitting, cancels what is pending and returns with every
  finished record already in the store; the next run skips what is there.

Example:
    >>> from pipeline.config import load_config
    >>> report = run_zoo(load_config("configs/zoo-tiny.toml"), "/tmp/s")  # doctest: +SKIP
    >>> report.exit_code                                                     # doctest: +SKIP
    0
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import signal
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from pipeline.cluster import Cluster
from pipeline.config import RunConfig, cuda_arch, gpu_targets
from pipeline.kernel_tasks import BuildJob, build_task
from pipeline.progress import Progress
from pipeline.report import RunReport, lower_targets
from pipeline.sandbox import run_isolated, stop_task
from pipeline.shapes import KernelShape
from pipeline.tasks import (FAILED, SKIPPED, LowerJob, TaskResult, capture_task, lower_task,
                            restore_task, source_key)
from pipeline.tuned_tasks import RelowerJob, relower_task
from pipeline.tune_tasks import TuneJob, tune_task
from storage.timeline import SUFFIX as TIMELINE_SUFFIX
from storage.timeline import RunTimeline, TaskSpan, plot_timeline, png_path, save_timeline

STAGES = ("capture", "lower", "build", "tune", "relower")
# Stages whose tasks run in a child process of their worker (pipeline.sandbox): capture runs
# the user's factory, lower and build native compilers, tune candidate kernels on the card;
# any of them can end its process. In the worker itself such a crash kills the worker (for a
# tune task, the run's only GPU worker) and Dask retries the task on it until it gives up.
# The child is kept between tasks, so tune's CUDA context is made once per worker.
ISOLATED = STAGES
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
    tag: str = ""            # makes the Dask key unique: a kernel (build), a shape (tune)
    submitted: float = 0.0   # seconds after the run's start


@dataclass
class _Kernel:
    """A distinct kernel of this run: the first model that uses it, how many of its builds
    are still running, and the sizes modules launch it at (each tuned once)."""
    model: str
    builds_left: int
    shapes: list[KernelShape] = field(default_factory=list)


def _tuned_on(result: TaskResult, targets: tuple[str, ...]) -> bool:
    """Whether a tune result timed (now or before) on a GPU of one of the run's targets."""
    return (not result.failed and bool(result.device) and result.target.startswith("sm_")
            and cuda_arch(result.target) in {cuda_arch(t) for t in targets})


class _TunedModules:
    """Which models wait on which kernel shapes' tune tasks, and which GPU kinds tuned them.

    A kernel shared by several models is tuned once; each model's tuned modules are due once
    every one of its shapes went through the tune stage (tuned, failed or skipped).
    """

    def __init__(self) -> None:
        self.devices: dict[tuple[str, str], str | None] = {}   # shape -> device, once tuned
        self.waiting: dict[str, set[tuple[str, str]]] = {}     # model -> shapes not tuned yet
        self.jobs: dict[str, tuple[LowerJob, tuple[KernelShape, ...], str]] = {}

    def expect(self, job: LowerJob, shapes: tuple[KernelShape, ...], options_json: str) -> None:
        ids = {(s.kernel_key, s.digest) for s in shapes}
        self.jobs[job.model] = (job, shapes, options_json)
        self.waiting[job.model] = {i for i in ids if i not in self.devices}

    def tuned(self, shape: KernelShape, device: str | None) -> list[str]:
        """Record that ``shape`` went through tuning (on ``device``); the models this made
        ready."""
        ident = (shape.kernel_key, shape.digest)
        self.devices[ident] = device
        for waits in self.waiting.values():
            waits.discard(ident)
        return [model for model, waits in self.waiting.items() if not waits]

    def ready(self, model: str) -> list[RelowerJob]:
        """The relower jobs of ``model`` if all its shapes are tuned (then never again)."""
        if self.waiting.get(model, {None}):
            return []
        del self.waiting[model]
        job, shapes, options_json = self.jobs.pop(model)
        devices = {self.devices.get((s.kernel_key, s.digest)) for s in shapes} - {None}
        return [RelowerJob(model=job.model, graph_key=job.graph_key, device_name=device,
                           shapes=shapes, options_json=options_json)
                for device in sorted(devices)]


class _Runner:
    """The submit / wait / record loop of one run on one cluster."""

    def __init__(self, config: RunConfig, store_root: str, cluster: Cluster,
                 progress: Progress, stop: StopSignals, capture_only: bool = False):
        self.config, self.store_root, self.cluster = config, store_root, cluster
        self.capture_only = capture_only
        self.progress, self.stop = progress, stop
        self.report = RunReport(config=config, store=store_root)
        self.pending: dict[Any, _Task] = {}
        self.by_key: dict[str, Any] = {}
        self.run_id = uuid.uuid4().hex[:8]   # task keys unique even on a shared scheduler
        self.targets = lower_targets(config)
        self.gpu_targets = gpu_targets(config)
        self.kernels: dict[str, _Kernel] = {}
        self.held: list[tuple[KernelShape, str]] = []   # tunes behind the barrier
        self.can_tune = config.tuning.enabled and cluster.info.gpu_workers > 0
        self.tuned = _TunedModules()
        self.capture_worker: dict[str, str] = {}
        self.start = time.perf_counter()
        # Resolved here, once: workers take these options as they are (options_from_json),
        # so a worker's own files or environment cannot give it other module keys.
        from compiler.config import load_options
        self.options = load_options(config.compiler_options)
        self.options_json = self.options.to_json()

    # --- submitting ---------------------------------------------------------------------------

    def _submit(self, task: _Task, fn: Any, arg: Any, near: str | None = None) -> None:
        tag = f"-{task.tag}" if task.tag else ""
        key = f"{task.stage}-{task.model}-{task.target or 'graph'}{tag}-{self.run_id}"
        if task.stage in ISOLATED:   # a crash fails this task only (pipeline.sandbox)
            where = f"[{task.target}]" if task.target else ""
            fn = functools.partial(run_isolated, fn, attempts=self.config.tasks.retries + 1,
                                   what=f"{task.stage}{where} of {task.model!r}", key=key)
        future = self.cluster.submit(fn, arg, self.store_root, key=key, near=near,
                                     gpu=task.stage == "tune")
        self.pending[future] = replace(task, dask_key=key,
                                       submitted=time.perf_counter() - self.start)
        self.by_key[key] = future
        self.report.stage_spans.setdefault(task.stage, [time.perf_counter() - self.start] * 2)
        self.progress.start(task.stage)

    def _submit_captures(self) -> None:
        # Totals up front, so the bars show the whole job; a failed capture takes its
        # lowerings off the lower bar.
        self.progress.add("capture", len(self.config.models))
        if not self.capture_only:
            self.progress.add("lower", len(self.config.models) * len(self.targets))
        stored = self._stored_graphs()
        if stored:
            self.progress.note(f"capture: {len(stored)} of {len(self.config.models)} model(s) "
                               f"found in the store by source key; not captured")
        for spec in self.config.models:
            task = _Task("capture", spec.name, spec.source, job=spec)
            graph_key = stored.get(spec.name)
            if spec.graph_key is not None:
                self._submit(task, restore_task, spec)
                continue
            if graph_key is None:
                self._submit(task, capture_task, spec)
                self.report.captured += 1
                continue
            result = TaskResult(stage="capture", model=spec.name, status=SKIPPED, key=graph_key,
                                note="graph found by source key; not captured")
            self._record(result, None)
            self._after(result, task, None)

    def _stored_graphs(self) -> dict[str, str]:
        """``{model: graph_key}`` of the models that need no capture: the store has a graph
        under the model's source key, loadable (lower tasks read it) or with its module for
        every lowering target (rows from before graphs were loadable).

        Anything that goes wrong here (a factory module that cannot be found, a store that
        cannot be read) means "capture": the capture task then reports it properly.
        """
        try:
            import pyarrow.compute as pc
            from compiler.api import module_key
            from storage import Store
            store = Store(self.store_root)
            if not store.exists():
                return {}
            options = self.options
            graphs: dict[str, str] = {}
            for spec in self.config.models:
                if spec.graph_key is not None:
                    continue
                try:
                    graph_key = store.graph_for_source(source_key(spec))
                except Exception:
                    continue
                if graph_key is not None:
                    graphs[spec.name] = graph_key
            loadable = set(store.query(
                "graphs", pc.field("graph_key").isin(sorted(set(graphs.values())))
                & pc.field("program").is_valid(), columns=["graph_key"])
                .column("graph_key").to_pylist()) if graphs else set()
            wanted = {name: {module_key(g, options, t) for t in self.targets}
                      for name, g in graphs.items() if g not in loadable}
            keys = sorted(set().union(*wanted.values())) if wanted else []
            have = set(store.lookup("modules", keys, columns=["module_key"])
                       .column("module_key").to_pylist()) if keys else set()
            return {name: g for name, g in graphs.items()
                    if g in loadable or wanted[name] <= have}
        except Exception as exc:
            self.progress.note(f"could not look models up by source key ({type(exc).__name__}: "
                               f"{exc}); capturing every model")
            return {}

    def _submit_lowers(self, captured: TaskResult, spec: Any, near: str | None) -> None:
        for target in self.targets:
            job = LowerJob(model=spec.name, graph_key=captured.key, target=target,
                           options_json=self.options_json)
            task = _Task("lower", spec.name, f"{captured.key}:{target}", target, job)
            self._submit(task, lower_task, job, near=near)

    def _submit_builds(self, shape: KernelShape, model: str) -> None:
        tuning = self.config.tuning
        self.progress.add("build", len(self.gpu_targets))
        for target in self.gpu_targets:
            job = BuildJob(model=model, shape=shape, target=target, tuning=tuning.enabled,
                           space=tuning.space, options_json=self.options_json)
            self._submit(_Task("build", model, job.record_key, target, job,
                               tag=shape.kernel_key[:12]), build_task, job)

    def _submit_tune(self, shape: KernelShape, model: str) -> None:
        tuning = self.config.tuning
        if not tuning.overlap and self._building():
            self.held.append((shape, model))
            return
        job = TuneJob(model=model, shape=shape, targets=self.gpu_targets, space=tuning.space,
                      options_json=self.options_json, budget_s=tuning.budget_s)
        self._submit(_Task("tune", model, job.record_key, job=job,
                           tag=f"{shape.kernel_key[:12]}-{shape.digest}"), tune_task, job)

    def _building(self) -> bool:
        """Is a capture, lower or build task still pending (``overlap = false``'s barrier)?"""
        return any(t.stage in ("capture", "lower", "build") for t in self.pending.values())

    def _release_held(self) -> None:
        """With ``overlap = false``: the held tunes, once the barrier has passed."""
        if self.held and not self._building():
            held, self.held = self.held, []
            for shape, model in held:
                self._submit_tune(shape, model)

    # --- the loop -----------------------------------------------------------------------------

    def _submit_relowers(self, model: str) -> None:
        """The tuned modules of ``model``, once its every kernel shape went through tuning."""
        for job in self.tuned.ready(model):
            self.progress.add("relower", 1)
            task = _Task("relower", model, job.record_key, "cuda", job,
                         tag=hashlib.sha256(job.device_name.encode()).hexdigest()[:8])
            self._submit(task, relower_task, job, near=self.capture_worker.get(model))

    def run(self) -> RunReport:
        start = self.start
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
        if self.config.tuning.enabled and not self.can_tune:
            self.report.untuned = (len(self.kernels),
                                   sum(len(k.shapes) for k in self.kernels.values()))
        self.report.wall_s = time.perf_counter() - start
        self.report.placement = self.cluster.placement_names(self.report.placement)
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
                                  attempts=self.cluster.info.attempts if died
                                  else outcome.attempts)
        # Where it ran: failure rows name it, and lowerings go next to their graph.
        worker = self.cluster.worker_of(future) if outcome.ok else None
        if worker:
            where = self.report.placement.setdefault(task.stage, {})
            where[worker] = where.get(worker, 0) + 1
            if task.stage == "capture":
                self.capture_worker[task.model] = worker
        self.cluster.release([future])
        self._record(result, worker, task.submitted)
        self._after(result, task, worker)
        self._release_held()

    def _after(self, result: TaskResult, task: _Task, worker: str | None) -> None:
        """Submit what a finished task makes ready (see the module doc)."""
        if task.stage == "capture":
            self._after_capture(result, task, worker)
        elif task.stage == "lower" and task.target == "cuda" and not result.failed:
            self._after_lower(result)
            if self.can_tune:
                self.tuned.expect(task.job, result.kernel_shapes, self.options_json)
                self._submit_relowers(result.model)
        elif task.stage == "build":
            self._after_build(task.job.shape.kernel_key)
        elif task.stage == "tune":
            on_target = _tuned_on(result, self.gpu_targets)
            for model in self.tuned.tuned(task.job.shape, result.device if on_target else None):
                self._submit_relowers(model)

    def _after_lower(self, result: TaskResult) -> None:
        for shape in result.kernel_shapes:
            kernel = self.kernels.get(shape.kernel_key)
            if kernel is None:   # first met: build it (once, whichever models share it)
                kernel = _Kernel(result.model, builds_left=len(self.gpu_targets))
                self.kernels[shape.kernel_key] = kernel
                self._submit_builds(shape, result.model)
            if shape in kernel.shapes:
                continue
            kernel.shapes.append(shape)
            if self.can_tune:
                self.progress.add("tune", 1)
                if kernel.builds_left == 0:   # its builds finished already
                    self._submit_tune(shape, kernel.model)

    def _after_build(self, kernel_key: str) -> None:
        kernel = self.kernels[kernel_key]
        kernel.builds_left -= 1
        if kernel.builds_left == 0 and self.can_tune:
            for shape in kernel.shapes:
                self._submit_tune(shape, kernel.model)

    def _after_capture(self, result: TaskResult, task: _Task, near: str | None) -> None:
        if self.capture_only:
            return
        if result.failed:
            self.progress.add("lower", -len(self.targets))
        else:
            self._submit_lowers(result, task.job, near)

    def _failed(self, task: _Task, error_type: str, message: str, attempts: int) -> TaskResult:
        return TaskResult(stage=task.stage, model=task.model, status=FAILED, key=task.record_key,
                          target=task.target, error_type=error_type, message=message,
                          attempts=attempts)

    def _record(self, result: TaskResult, worker: str | None,
                submitted: float | None = None) -> None:
        self.report.results.append(result)
        now = time.perf_counter() - self.start
        span = self.report.stage_spans.get(result.stage)
        if span is not None:
            span[1] = now
        # The task's own clock says how long it ran; a failure without one (a dead worker, a
        # timeout) spans from its submission.
        began = now - result.seconds if result.seconds else (submitted or now)
        self.report.spans.append(TaskSpan(result.stage, result.model, result.target,
                                          max(began, submitted or 0.0), now, result.status))
        self.report.gpu_s += result.gpu_seconds
        self.progress.finish(result.stage, result.status)
        if result.warning:
            self.progress.note(f"warning: {result.model}: {result.warning}")
        if result.repaired:
            self.progress.note(f"repaired: {result.model}: {result.repaired}")
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
            self.report.unrecorded += 1
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
        """A hung task: stop it (its process is killed) and record it as failed."""
        del self.pending[future], self.by_key[task.dask_key]
        kill = functools.partial(stop_task, task.dask_key) if task.stage in ISOLATED else None
        done = self.cluster.stop(future, worker, kill)
        limit = self.config.tasks.timeout(task.stage)
        result = self._failed(task, "TaskTimeout", f"{task.stage} of {task.model} ran over its "
                              f"{limit:g} s timeout on {worker}; the task was cancelled and "
                              f"{done}", attempts=1)
        self._record(result, worker, task.submitted)
        self._after(result, task, None)
        self._release_held()

    def _interrupt(self) -> None:
        self.progress.note(f"{self.stop.requested}: stopping; cancelling "
                           f"{len(self.pending)} unfinished task(s)")
        self.cluster.cancel(self.pending)
        self.pending.clear()
        self.by_key.clear()
        self.report.interrupted = True


def run_zoo(config: RunConfig, store_root: str, *, out: TextIO | None = None,
            live: bool | None = None, capture_only: bool = False,
            command: str = "kiln run", dask_report: str | None = None) -> RunReport:
    """Run ``config`` into the store at ``store_root``; progress goes to ``out`` (stderr).

    ``live`` draws live bars (default: when ``out`` is a terminal); ``capture_only`` stops
    after capture (``kiln capture``); ``command`` names the command in the first line;
    ``dask_report`` saves Dask's performance report of the run to that file.
    """
    out = out if out is not None else sys.stderr
    live = out.isatty() if live is None else live
    log = run_log_path(store_root)
    with StopSignals() as stop:
        with Cluster(config.cluster, retries=config.tasks.retries, log_path=log) as cluster:
            _print_start(config, store_root, cluster.info, log, out, command)
            with Progress(STAGES[:1] if capture_only else STAGES, out, live) as progress, \
                    cluster.performance_report(dask_report):
                report = _Runner(config, store_root, cluster, progress, stop,
                                 capture_only).run()
    report.log_path, report.dask_report = log, dask_report or ""
    reconcile_with_store(report, store_root)
    save_timeline_of(report, log)
    return report


def _print_start(config: RunConfig, store_root: str, info: Any, log: str, out: TextIO,
                 command: str = "kiln run") -> None:
    out.write(f"{command} {config.name}: {len(config.models)} model(s) -> store "
              f"{store_root}; {info.cpu_workers} CPU + {info.gpu_workers} GPU "
              f"worker(s) at {info.address}\n")
    if info.dashboard:
        out.write(f"  dashboard: {info.dashboard}\n")
    out.write(f"  log: {log} (worker output and distributed's log)\n")
    for note in info.notes:
        out.write(f"  note: {note}\n")
    if config.tuning.enabled and not info.gpu_workers:
        out.write("  note: tuning.enabled = true but no GPU workers: kernels are "
                  "built for every candidate config, none is timed\n")
    out.flush()


def save_timeline_of(report: RunReport, log: str) -> None:
    """The run's task spans beside its log, and their chart when matplotlib is there (a
    run never fails for want of a picture)."""
    timeline = RunTimeline(report.config.name, report.wall_s, tuple(report.spans))
    path = save_timeline(timeline, log.removesuffix(".log") + TIMELINE_SUFFIX)
    report.timeline_path = path
    if report.spans and importlib.util.find_spec("matplotlib"):
        try:
            plot_timeline(timeline, png_path(path))
            report.chart_path = png_path(path)
        except Exception as exc:   # a broken font cache, a full disk: say so, carry on
            report.chart_note = f"no chart ({type(exc).__name__}: {exc})"


def run_log_path(store_root: str) -> str:
    """A new log file for one run: ``STORE/logs/run-<time>-<id>.log`` for a local store,
    under the temporary directory for a remote one."""
    name = f"run-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}.log"
    base = (Path(tempfile.gettempdir()) / "kiln-logs" if "://" in store_root
            else Path(store_root) / "logs")
    base.mkdir(parents=True, exist_ok=True)
    return str(base / name)


def reconcile_with_store(report: RunReport, store_root: str) -> None:
    """Report models by what the store holds: a capture or lower task that failed (a worker
    died after it wrote its records, say) while its graph or module is in the store is not
    a failure; it becomes a ``skipped`` result that keeps the error as a warning."""
    failed = [(i, r) for i, r in enumerate(report.results)
              if r.failed and r.stage in ("capture", "lower")]
    if not failed:
        return
    try:
        stored = _stored_check(report, store_root)
        for i, r in failed:
            if stored(r):
                report.results[i] = replace(
                    r, status=SKIPPED, warning=f"the {r.stage} task failed ({r.error_type}: "
                    f"{(r.message.strip().splitlines() or [''])[0][:160]}), but its records "
                    f"are in the store", error_type="", message="", traceback="")
    except Exception:   # the run's own account stands if the store cannot be read
        return


def _stored_check(report: RunReport, store_root: str) -> Any:
    """``stored(result)``: whether a failed capture's graph (by source key) or a failed
    lowering's module is in the store."""
    from compiler.api import module_key
    from compiler.config import load_options
    from storage import Store
    store = Store(store_root)
    specs = {spec.name: spec for spec in report.config.models}
    options = load_options(json.loads(report.config.compiler_json))

    def stored(r: TaskResult) -> bool:
        if r.stage == "capture" and specs[r.model].graph_key is not None:
            return False     # a stored graph that failed to read: the failure stands
        if r.stage == "capture":
            return store.graph_for_source(source_key(specs[r.model])) is not None
        graph_key, _, target = r.key.partition(":")
        key = module_key(graph_key, options, target) if target else r.key
        return store.has("modules", key)
    return stored


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
