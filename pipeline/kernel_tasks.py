"""Build and tune tasks: per distinct kernel, on CPU workers (build) and GPU workers (tune).

Like ``pipeline.tasks``, each is a top-level function of a small frozen job plus the store
root; it loads the kernel source from the store by ``kernel_key``, writes its own rows and
returns a ``TaskResult`` of counts. A config that does not compile, or needs more than the
target has, is a row with its status, never an exception.

``build_task`` compiles one kernel for one GPU architecture (``sm_90``) at the heuristic
default config, or at every candidate of its search space when tuning is on, and writes one
binaries row per (kernel, config, target): its ``status`` column says ``ok``,
``build_error`` or ``resource_error`` and, for a failed config, ``error`` says why; a failed
config's ``cubin`` is empty unless it compiled but exceeds the target's limits. A config whose row exists is not
built again. The task fails (a failures row, exit status 1) only when the *default* config
does not build: then no module using the kernel can run on that architecture as lowered.

``tune_task`` runs on a GPU worker: it times the planned candidates (those not yet timed for
this kernel, sizes and GPU kind: ``plan_trials`` against the trials dataset) at the kernel's
real sizes with ``Tuner``/``tune``, skips configs whose build failed for the card's
architecture, writes every trial row and marks the best when it beats what was stored.

Example:
    >>> from pipeline.shapes import KernelShape
    >>> shape = KernelShape("k", "pointwise1d", ("torch.float32",) * 2, (64, 64), (64,))
    >>> job = BuildJob(model="mlp", shape=shape, target="sm_90")
    >>> r = build_task(job, "/tmp/kiln-empty-store")          # doctest: +SKIP
    >>> r.status, r.error_type                                # doctest: +SKIP
    ('failed', 'KernelNotStored')
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Any

from pipeline.config import cuda_arch
from pipeline.shapes import KernelShape
from pipeline.tasks import OK, SKIPPED, TaskResult, _failure

BUDGET_STATUS = "budget"        # a config the tune budget did not reach: not a trial row


class KernelNotStored(LookupError):
    """The kernels dataset has no (intact) row for a kernel key the lower stage reported."""


class BuildError(RuntimeError):
    """The default config of a kernel did not build for a target."""


@dataclass(frozen=True)
class BuildJob:
    """Build ``shape.kernel_key`` for ``target`` (``sm_90``): the default config, or every
    candidate of ``space`` when ``tuning``. ``model`` is the first model that uses the
    kernel (for the log and failure rows); ``options_json`` the run's compiler options
    (the default config depends on them)."""
    model: str
    shape: KernelShape
    target: str
    tuning: bool = False
    space: str = "default"
    options_json: str = "{}"

    @property
    def record_key(self) -> str:
        return f"{self.shape.kernel_key}:{self.target}"


@dataclass(frozen=True)
class TuneJob:
    """Time the candidates of ``shape`` on the GPU of the worker it lands on; ``targets``
    are the run's GPU architectures (a card of another architecture tunes nothing)."""
    model: str
    shape: KernelShape
    targets: tuple[str, ...]
    space: str = "default"
    options_json: str = "{}"
    budget_s: float = 60.0

    @property
    def record_key(self) -> str:
        return f"{self.shape.kernel_key}:{self.shape.digest}"


# --- shared helpers -----------------------------------------------------------------------------

def load_stored_kernel(store: Any, kernel_key: str) -> Any:
    """The ``KernelArtifact`` stored under ``kernel_key``."""
    from compiler.artifact import KernelArtifact
    row = store.get("kernels", kernel_key)
    if row is None:
        raise KernelNotStored(f"kernel {kernel_key} is not in store {store.root}")
    return KernelArtifact.from_stored(row["name"], row["kernel_key"], row["source"],
                                      row["meta_json"])


def _default(shape: KernelShape, options_json: str) -> Any:
    from compiler.autotune import default_config
    from compiler.config import options_from_json
    return default_config(shape.kind, shape.numels, "cuda", options_from_json(options_json))


def _candidates(shape: KernelShape, spaces: Any) -> list[Any]:
    from compiler.autotune import candidates
    if shape.kind not in spaces.spaces:
        return []
    return candidates(spaces[shape.kind], shape.numels)


def _worker_name() -> str:
    try:
        from distributed import get_worker
        return get_worker().address
    except (ImportError, ValueError):
        return ""



# --- build --------------------------------------------------------------------------------------

def binary_row(result: Any) -> Any:
    """The binaries row of a ``BuildResult``, ok or not (see the module doc)."""
    from storage import BinaryRecord
    return BinaryRecord.build(kernel_key=result.kernel_key, config=result.config.as_dict(),
                              arch=result.target.arch_name, target=result.target.name,
                              triton_version=result.triton_version, cubin=result.cubin or b"",
                              metadata=result.metadata, status=result.status,
                              error=None if result.ok else result.error)


def _binary_key(kernel_key: str, config: Any, target: Any, triton_version: str) -> str:
    from storage import BinaryRecord
    return BinaryRecord.key(kernel_key=kernel_key, config=config.as_dict(),
                            arch=target.arch_name, target=target.name,
                            triton_version=triton_version)


def _stored_statuses(store: Any, keys: list[str]) -> dict[str, tuple[str, str]]:
    """``{binary_key: (status, error)}`` of the binaries rows among ``keys``."""
    table = store.lookup("binaries", keys, columns=["binary_key", "status", "error"])
    return {row["binary_key"]: (row["status"] or "ok", row["error"] or "")
            for row in table.to_pylist()}


def build_task(job: BuildJob, store_root: str) -> TaskResult:
    """Build what the store lacks of one kernel for one target; see the module doc."""
    start = time.perf_counter()
    shape = job.shape
    counts = {"built": 0, "build_errors": 0}
    try:
        if shape.error:
            raise ValueError(f"kernel {shape.kernel_key[:12]}: {shape.error}")
        import triton
        from compiler.autotune import Target, build, load_spaces
        from storage import Store
        store = Store(store_root)
        kernel = load_stored_kernel(store, shape.kernel_key)
        spaces = load_spaces(job.space)
        target = Target("cuda", cuda_arch(job.target), 32)
        default = _default(shape, job.options_json)
        configs = [default] + (_candidates(shape, spaces) if job.tuning else [])
        configs = list(dict.fromkeys(configs))
        keys = {c: _binary_key(kernel.kernel_key, c, target, triton.__version__)
                for c in configs}
        stored = _stored_statuses(store, list(keys.values()))
        todo = [c for c in configs if keys[c] not in stored]
        built = [build(kernel, c, target, dtypes=shape.dtypes, sizes=shape.int_args,
                       limits=spaces.targets.get(target.arch)) for c in todo]
        if built:
            store.write("binaries", [binary_row(b) for b in built])
        default_status = next(((b.status, b.error or "") for b in built if b.config == default),
                              None) or stored[keys[default]]
        counts = {"built": sum(b.ok for b in built),
                  "build_errors": sum(not b.ok for b in built)}
        if default_status[0] != "ok":
            raise BuildError(f"the default config ({default}) of {kernel.name} "
                             f"({shape.kind} {shape.describe()}) did not build for "
                             f"{job.target}: {default_status[0]}: {default_status[1]}")
        note = (f"{kernel.name} {job.target}: {counts['built']} built, "
                f"{counts['build_errors']} failed, {len(configs) - len(todo)} stored")
        return TaskResult(stage="build", model=job.model, status=OK if built else SKIPPED,
                          key=job.record_key, target=job.target,
                          seconds=time.perf_counter() - start, note=note, **counts)
    except Exception as exc:
        # what was built before the failure is in the store and counted
        return dataclasses.replace(
            _failure("build", job.model, job.record_key, job.target, start, exc), **counts)


# --- tune ---------------------------------------------------------------------------------------

def done_trials(store: Any, launch: Any, info: Any) -> dict[Any, float | None]:
    """``{config: median ms, or None for a failed trial}`` already stored for this kernel,
    these sizes and dtypes, this GPU kind, driver, clocks and versions."""
    import pyarrow.compute as pc
    import torch
    import triton
    from compiler.autotune import Config
    from compiler.autotune.spaces import canonical_json
    from storage import TrialRecord
    sizes = launch.sizes()
    expr = ((pc.field("kernel_key") == launch.kernel.kernel_key)
            & (pc.field("sizes_json") == canonical_json(sizes))
            & (pc.field("device_name") == info.name))
    table = store.query("trials", expr,
                        columns=["trial_key", "config_json", "status", "median_ms"])
    done = {}
    for row in table.to_pylist():
        config = Config.from_dict(json.loads(row["config_json"]))
        key = TrialRecord.make_key(launch.kernel.kernel_key, sizes, config.key, info.name,
                                   info.arch, info.driver, info.clocks, triton.__version__,
                                   torch.__version__)
        if key == row["trial_key"]:
            done[config] = row["median_ms"] if row["status"] == "ok" else None
    return done


def _build_gate(store: Any, kernel_key: str, arch: str, tuner: Any, budget_s: float):
    """``gate(config)`` for ``tune``: a failed Measurement for a config whose stored build
    failed on this architecture, or once the budget is spent; None lets it run."""
    import pyarrow.compute as pc
    import triton
    from compiler.autotune import Config, Measurement
    table = store.query("binaries", (pc.field("kernel_key") == kernel_key)
                        & (pc.field("arch") == arch)
                        & (pc.field("triton_version") == triton.__version__),
                        columns=["config_json", "status", "error"])
    failed = {Config.from_dict(json.loads(row["config_json"])): (row["status"], row["error"])
              for row in table.to_pylist() if (row["status"] or "ok") != "ok"}

    def gate(config: Any) -> Any:
        if config in failed:
            status, error = failed[config]
            return Measurement(config, status, error=f"build for {arch}: {error}")
        if tuner.seconds > budget_s:
            return Measurement(config, BUDGET_STATUS,
                               error=f"tuning budget of {budget_s:g} s spent")
        return None
    return gate


def _trial_rows(launch: Any, info: Any, measurements: list[Any], best: Any) -> list[Any]:
    import torch
    import triton
    from storage import TrialRecord
    worker = _worker_name()
    return [TrialRecord.timed(
        kernel_key=launch.kernel.kernel_key, sizes=launch.sizes(), config=m.config.as_dict(),
        device_name=info.name, arch=info.arch, driver=info.driver, clocks=info.clocks,
        triton_version=triton.__version__, torch_version=torch.__version__,
        times_ms=list(m.times_ms) if m.status == "ok" else [], status=m.status,
        error=m.error, is_best=m is best, worker=worker, is_default=m.config == launch.default)
        # nothing pretends to be timed, and a config the budget did not reach is left for
        # the next run to plan again
        for m in measurements if m.status not in ("not_timed", BUDGET_STATUS)]


def tune_task(job: TuneJob, store_root: str) -> TaskResult:
    """Time what is not yet timed of one kernel shape on this worker's GPU; see the module
    doc. Runs only on a worker with the ``GPU`` resource (one card: ``cuda``)."""
    start = time.perf_counter()
    try:
        import torch
        if not torch.cuda.is_available():
            raise RuntimeError("tune task on a worker without CUDA: GPU workers must see "
                               "their card (CUDA_VISIBLE_DEVICES)")
        return tune_kernel(job, store_root, "cuda")
    except Exception as exc:
        return _failure("tune", job.model, job.record_key, "", start, exc)


def tune_kernel(job: TuneJob, store_root: str, device: str) -> TaskResult:
    """``tune_task``'s work on ``device``; raises on errors. On ``"cpu"`` (tests) the
    interpreter verifies every candidate and times none, so no trial row is written."""
    from compiler.autotune import (Tuner, device_info, launch_from_meta, load_spaces,
                                   plan_trials, tune)
    from compiler.config import options_from_json
    from storage import Store
    start = time.perf_counter()
    shape = job.shape

    def result(status: str, info: Any, **fields: Any) -> TaskResult:
        return TaskResult(stage="tune", model=job.model, status=status, key=job.record_key,
                          target=info.arch, device=info.name,
                          seconds=time.perf_counter() - start, **fields)

    if shape.error:
        raise ValueError(f"kernel {shape.kernel_key[:12]}: {shape.error}")
    info = device_info(device)
    if info.timed and cuda_arch(info.arch) not in {cuda_arch(t) for t in job.targets}:
        return result(SKIPPED, info, note=f"{info.name} is {info.arch}, not one of the "
                                          f"run's targets {', '.join(job.targets)}")
    store = Store(store_root)
    kernel = load_stored_kernel(store, shape.kernel_key)
    launch = launch_from_meta(kernel, shape.dtypes, shape.extents, sizes=shape.numels,
                              device_type="cuda", options=options_from_json(job.options_json),
                              size_args=shape.size_args)
    spaces = load_spaces(job.space)
    space = spaces[shape.kind]
    known = done_trials(store, launch, info)
    todo = plan_trials([launch.default, *_candidates(shape, spaces)], {c.key for c in known})
    if not todo:
        return result(SKIPPED, info, note=f"{kernel.name} {shape.describe()}: every config "
                                          f"already timed on {info.name}")
    tuner = Tuner(launch, device)
    gate = _build_gate(store, kernel.kernel_key, info.arch, tuner, job.budget_s)
    tuned = tune(tuner, space, todo, spaces.search, known=known, gate=gate,
                 include_default=launch.default in todo)
    best = tuned.best
    previous = min((ms for ms in known.values() if ms is not None), default=None)
    mark = best if best and (previous is None or best.median_ms < previous) else None
    rows = _trial_rows(launch, info, tuned.measurements, mark)
    if rows:
        store.write("trials", rows)
    timed = sum(m.status == "ok" for m in tuned.measurements)
    deferred = sum(m.status == BUDGET_STATUS for m in tuned.measurements)
    note = (f"{kernel.name} {shape.describe()} on {info.name}: {timed} timed"
            + (f", best {best.config} {best.median_ms:.4f} ms" if best else "")
            + (f" ({tuned.speedup:.2f}x the default)" if tuned.speedup else "")
            + (f"; {deferred} left for the next run (budget)" if deferred else ""))
    return result(OK if rows else SKIPPED, info, timed=timed, trial_errors=len(rows) - timed,
                  gpu_seconds=tuned.seconds, speedup=tuned.speedup, note=note)
