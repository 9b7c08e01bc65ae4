"""The one module that touches Dask: start or join a cluster, submit tasks, watch them.

The embedded cluster is a ``distributed.SpecCluster`` on this machine: ``workers`` CPU worker
processes (one thread each; capture, lower and build are CPU-bound Python) plus one GPU worker
per visible GPU, pinned to its card with ``CUDA_VISIBLE_DEVICES`` in the worker's environment
and advertising the Dask resource ``GPU=1`` so only tune tasks land there. The CPU workers
advertise ``CPU=1`` and every other task asks for it, so CPU-only workers feed the GPU
workers and a GPU worker never spends its time on a build. On a joined cluster CPU tasks
ask for ``CPU=1`` only if some worker advertises it (``dask worker --resources CPU=1``);
otherwise they may run on any worker. Every worker is
watched by a Nanny, which restarts it when it dies; the scheduler re-runs the dead worker's
task elsewhere up to ``retries`` times, then reports ``KilledWorker``. (The runner runs the
tasks that may crash their process in a child of the worker, ``pipeline.sandbox``, so a
crashing model does not take the worker, and its other tasks, down with it.)

The embedded scheduler serves Dask's dashboard (``cluster.dashboard``, default
127.0.0.1:8787, another free port when that one is taken; ``ClusterInfo.dashboard`` is its
link), and ``performance_report`` saves Dask's performance report of the tasks run inside it
(``kiln run --dask-report FILE``). Both need bokeh.

Given a ``log_path``, distributed's log records in this process and everything the embedded
workers print go to that file, not the terminal (``_LogToFile``, ``EmbeddedWorkerSetup``).

To run on a real cluster instead, start it by hand and pass ``--scheduler``::

    dask scheduler                                         # prints tcp://HOST:8786
    dask worker tcp://HOST:8786 --nworkers 8 --nthreads 1  # CPU workers
    CUDA_VISIBLE_DEVICES=0 dask worker tcp://HOST:8786 --nthreads 1 --resources GPU=1
    # optional: keep CPU tasks off the GPU workers
    dask worker tcp://HOST:8786 --nworkers 8 --nthreads 1 --resources CPU=1

Example:
    >>> from pipeline.config import ClusterSpec
    >>> with Cluster(ClusterSpec(workers=2, gpus=0), retries=1) as cluster:  # doctest: +SKIP
    ...     future = cluster.submit(sum, [1, 2], key="sum-1")
    ...     cluster.outcome(future).value
    3
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import queue
import signal
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import dask
from distributed import (Client, Future, Nanny, Scheduler, SpecCluster, WorkerPlugin,
                         performance_report)
from distributed.client import FutureCancelledError

from pipeline.config import ClusterSpec


@dataclass(frozen=True)
class ClusterInfo:
    """What the run is using, for the plan and the summary."""
    address: str
    embedded: bool
    cpu_workers: int
    gpu_workers: int
    attempts: int            # how many times a task runs before its workers' deaths fail it
    notes: tuple[str, ...] = ()
    dashboard: str = ""      # the Dask dashboard's link; "" when there is none


@dataclass(frozen=True)
class Outcome:
    """How a finished future ended: a value, or an error type and message (never raised)."""
    ok: bool
    value: Any = None
    error_type: str = ""
    message: str = ""
    attempts: int = 1          # how many times it ran (``pipeline.sandbox.TaskCrashed``)


def visible_gpus() -> int:
    """GPUs this process can see (torch applies ``CUDA_VISIBLE_DEVICES`` itself)."""
    try:
        import torch
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA install counts as no GPU, not as a crashed run
        return 0


def embedded_worker_specs(cpu_workers: int, gpus: int) -> dict[str, dict]:
    """SpecCluster worker specs: ``cpu-i`` plain workers, ``gpu-i`` pinned to card i.

    >>> sorted(embedded_worker_specs(2, 1))
    ['cpu-0', 'cpu-1', 'gpu-0']
    >>> embedded_worker_specs(1, 1)["gpu-0"]["options"]["env"]
    {'CUDA_VISIBLE_DEVICES': '0'}
    >>> embedded_worker_specs(1, 0)["cpu-0"]["options"]["resources"]
    {'CPU': 1}
    """
    base = {"nthreads": 1, "silence_logs": logging.ERROR}
    specs = {f"cpu-{i}": {"cls": Nanny, "options": {**base, "resources": {"CPU": 1}}}
             for i in range(cpu_workers)}
    for i in range(gpus):
        specs[f"gpu-{i}"] = {"cls": Nanny, "options": {
            **base, "resources": {"GPU": 1},
            # Set in the worker process's environment before it starts, so CUDA in that
            # process only ever sees its own card.
            "env": {"CUDA_VISIBLE_DEVICES": str(i)}}}
    return specs


class EmbeddedWorkerSetup(WorkerPlugin):
    """Setup of the workers kiln starts itself (never of a user's cluster).

    They ignore Ctrl-C: the terminal sends SIGINT to the whole process group, and the
    runner, not each worker, decides how the run stops. With a ``log_path``, the worker's
    standard output and error (file descriptors 1 and 2, so native libraries' prints and
    the task processes of ``pipeline.sandbox`` too) are appended to that file: the terminal
    keeps kiln's own lines; torch.export's graph dumps, warnings and distributed's logs go
    to the log. Without one they go to /dev/null.
    """

    def __init__(self, log_path: str | None = None):
        self.log_path = log_path

    def setup(self, worker: Any) -> None:
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # not the main thread of the worker process: nothing to do
            pass
        sys.stdout.flush()
        sys.stderr.flush()
        fd = os.open(self.log_path or os.devnull, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)


class _LogToFile:
    """While a run lasts, this process's distributed (and tornado) log records go to the
    run's log file instead of the terminal: a dying worker makes the scheduler and nanny log
    ERROR lines and tracebacks that kiln reports in its own words."""

    LOGGERS = ("distributed", "tornado")

    def __init__(self, path: str):
        self.handler = logging.FileHandler(path)
        self.handler.setFormatter(logging.Formatter(
            "%(asctime)s %(name)s %(levelname)s %(message)s"))
        self.muted: list[tuple[logging.Handler, int]] = []

    def __enter__(self) -> "_LogToFile":
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            for handler in logger.handlers:
                if isinstance(handler, logging.StreamHandler) and not isinstance(
                        handler, logging.FileHandler):
                    self.muted.append((handler, handler.level))
                    handler.setLevel(logging.CRITICAL + 1)
            logger.addHandler(self.handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self.handler)
        for handler, level in self.muted:
            handler.setLevel(level)
        self.handler.close()


class Cluster:
    """A started (or joined) Dask cluster with the few operations the runner needs.

    Futures are opaque handles to the caller: it passes them back to ``wait_any``,
    ``outcome``, ``worker_of``, ``cancel`` and ``stop``.
    """

    def __init__(self, spec: ClusterSpec, *, retries: int = 2, gpus: int | None = None,
                 log_path: str | None = None):
        self.spec, self.retries, self.log_path = spec, retries, log_path
        self._log: _LogToFile | None = None
        self.gpus = spec.gpus if spec.gpus is not None else (gpus if gpus is not None
                                                              else visible_gpus())
        self._cluster: SpecCluster | None = None
        self._client: Client | None = None
        self._done: queue.Queue[Future] = queue.Queue()
        self.info: ClusterInfo | None = None
        self._cpu_resource = False    # whether CPU tasks ask for the CPU resource

    # --- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> "Cluster":
        self._log = _LogToFile(self.log_path).__enter__() if self.log_path else None
        try:
            self.info = self._join() if self.spec.scheduler else self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _start(self) -> ClusterInfo:
        # The dashboard needs bokeh; without it the scheduler still serves its HTTP routes
        # (health checks), on any free port.
        dashboard = self.spec.dashboard if importlib.util.find_spec("bokeh") else ""
        # The scheduler runs in this process, so its config is ours to set. A taken dashboard
        # port moves to a free one with a warning on the terminal: the printed link says it.
        with dask.config.set({"distributed.scheduler.allowed-failures": self.retries}), \
                warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Port .* is already in use")
            self._cluster = SpecCluster(
                workers=embedded_worker_specs(self.spec.workers, self.gpus),
                scheduler={"cls": Scheduler, "options": {
                    "host": "127.0.0.1", "dashboard": bool(dashboard),
                    "dashboard_address": dashboard or "127.0.0.1:0"}},
                # With a log file its handler takes the records (``_LogToFile``).
                silence_logs=False if self.log_path else logging.ERROR, name="kiln")
        self._client = Client(self._cluster, set_as_default=False)
        self._client.register_plugin(EmbeddedWorkerSetup(self.log_path), name="kiln-setup")
        self._client.wait_for_workers(self.spec.workers + self.gpus, timeout=300)
        notes = () if self.gpus else ("no GPU visible: 0 GPU workers (tuning needs a GPU)",)
        visible = visible_gpus() if self.spec.gpus is not None else self.gpus
        if self.gpus > visible:
            notes += (f"cluster.gpus = {self.gpus} but this machine shows {visible} GPU(s): "
                      f"a tune task on a GPU worker without a card fails ('tune task on a "
                      f"worker without CUDA'); set cluster.gpus to at most {visible}",)
        if self.spec.dashboard and not dashboard:
            notes += ("no Dask dashboard: it needs bokeh (pip install bokeh)",)
        self._cpu_resource = True
        return ClusterInfo(address=self._cluster.scheduler_address, embedded=True,
                           cpu_workers=self.spec.workers, gpu_workers=self.gpus,
                           attempts=self.retries + 1, notes=notes,
                           dashboard=self._dashboard_link() if dashboard else "")

    def _join(self) -> ClusterInfo:
        self._client = Client(self.spec.scheduler, set_as_default=False, timeout=30)
        workers = self._client.scheduler_info(n_workers=-1)["workers"].values()
        gpu = sum(1 for w in workers if w.get("resources", {}).get("GPU"))
        self._cpu_resource = any(w.get("resources", {}).get("CPU") for w in workers)
        # A lambda is pickled by value: the scheduler need not have kiln installed.
        allowed = self._client.run_on_scheduler(lambda dask_scheduler:
                                                dask_scheduler.allowed_failures)
        notes = (f"a task whose worker dies is re-run per the scheduler's allowed-failures "
                 f"({allowed}), not this config's tasks.retries (which still counts for a "
                 f"task that crashes its own process)",)
        return ClusterInfo(address=self.spec.scheduler, embedded=False,
                           cpu_workers=len(workers) - gpu, gpu_workers=gpu,
                           attempts=allowed + 1, notes=notes, dashboard=self._dashboard_link())

    def _dashboard_link(self) -> str:
        """The scheduler's dashboard link, or "" when it serves none."""
        if "dashboard" not in self.client.scheduler_info().get("services", {}):
            return ""
        return self.client.dashboard_link

    def close(self) -> None:
        """Close the client, and the cluster if we started it; safe to call twice."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
        if self._log is not None:
            self._log.__exit__()
            self._log = None

    @contextlib.contextmanager
    def performance_report(self, path: str | None) -> Iterator[None]:
        """Save Dask's performance report (an HTML page: task stream, worker profiles,
        bandwidth) of what runs inside this block to ``path``; nothing when ``path`` is None."""
        if not path:
            yield
            return
        # performance_report finds its client as the current one; ours is not the default.
        with self.client.as_current(), performance_report(filename=path):
            yield

    # --- tasks --------------------------------------------------------------------------------

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("the cluster is not started (use it as a context manager)")
        return self._client

    def submit(self, fn: Callable, *args: Any, key: str, gpu: bool = False,
               near: str | None = None) -> Future:
        """Run ``fn(*args)`` as task ``key``; ``gpu`` requires a worker with the GPU resource.
        ``near`` prefers a worker (where its input was made) without requiring it, on a
        cluster whose workers declare no resources only: Dask honours a loose preference's
        resources at neither placement nor stealing once that worker is busy or paused (an
        idle worker lacking the resource steals the task, and its state machine fails with
        KeyError 'CPU'; dask/distributed issue 4792). The graph it would have found in that
        worker's memo is read from the store instead."""
        resources = {"GPU": 1} if gpu else ({"CPU": 1} if self._cpu_resource else None)
        if resources:
            near = None
        future = self.client.submit(
            fn, *args, key=key, pure=False, resources=resources,
            workers=[near] if near else None, allow_other_workers=bool(near))
        # Done futures are queued as they finish, so waiting costs nothing per pending task.
        future.add_done_callback(self._done.put)
        return future

    def wait_any(self, timeout: float) -> list[Future]:
        """Futures that finished (or were cancelled) since the last call, waiting at most
        ``timeout`` seconds for the first one."""
        try:
            done = [self._done.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                done.append(self._done.get_nowait())
            except queue.Empty:
                return done

    def outcome(self, future: Future) -> Outcome:
        """The value of a done future, or its error as type and message."""
        try:
            return Outcome(ok=True, value=future.result())
        except FutureCancelledError:
            return Outcome(ok=False, error_type="Cancelled", message="task was cancelled")
        except Exception as exc:  # KilledWorker, unpicklable results, import errors on workers
            return Outcome(ok=False, error_type=type(exc).__name__, message=str(exc),
                           attempts=int(getattr(exc, "attempts", 1) or 1))

    def worker_of(self, future: Future) -> str | None:
        """The worker holding a finished future's result (where its big inputs live)."""
        holders = self.client.who_has([future]).get(future.key, ())
        return holders[0] if holders else None

    def placement_names(self, counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        """``{stage: {worker address: tasks}}`` with each address replaced by the worker's
        name where the scheduler knows it (``cpu-0``, ``gpu-1`` on the embedded cluster)."""
        try:
            workers = self.client.scheduler_info(n_workers=-1)["workers"]
        except Exception:   # the run's result matters more than prettier names
            workers = {}
        names = {addr: str(w.get("name", addr)) for addr, w in workers.items()}
        return {stage: {names.get(addr, addr): n for addr, n in by.items()}
                for stage, by in counts.items()}

    def release(self, futures: Iterable[Future]) -> None:
        """Drop our references so the workers may free the results."""
        for future in futures:
            future.release()

    def cancel(self, futures: Iterable[Future]) -> None:
        futures = list(futures)
        if futures:
            self.client.cancel(futures, force=True)

    # --- watching for hung tasks --------------------------------------------------------------

    def executing(self) -> dict[str, tuple[str, float]]:
        """``{task key: (worker address, seconds running)}`` from the scheduler's heartbeats."""
        def running(dask_scheduler: Any) -> dict:
            return {str(ts.key): (ws.address, float(seconds))
                    for ws in dask_scheduler.workers.values()
                    for ts, seconds in ws.executing.items()}
        return self.client.run_on_scheduler(running)

    def stop(self, future: Future, worker: str,
             kill: Callable[[], bool] | None = None) -> str:
        """End a hung task: cancel it, then run ``kill`` on its worker (it ends the task's
        own process and says whether it found it: ``pipeline.sandbox.stop_task``); failing
        that, restart the worker, the only other way to stop a thread stuck in native code
        (its Nanny brings a fresh worker up). Returns what was done, for the failure row."""
        self.cancel([future])
        if kill is not None:
            try:
                if self.client.run(kill, workers=[worker]).get(worker):
                    return "its process was killed"
            except Exception:   # the worker is gone or unreachable: restart it below
                pass
        self.client.restart_workers([worker], raise_for_error=False)
        return "its worker restarted"

    def worker_pids(self) -> dict[str, int]:
        """``{worker address: process id}``, e.g. for a test that kills a worker."""
        return self.client.run(os.getpid)
