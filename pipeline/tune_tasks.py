"""The tune task: one kernel shape timed on a GPU worker, at a cost that pays for itself.

``tune_task`` runs on a worker with the ``GPU`` resource. For one kernel at one size it
plans the candidates not yet in the trials for this GPU kind (``plan_trials``: a grown
space times only its new configs), then, cheapest first:

  1. prunes what cannot build for the card (``compiler.autotune.prune``): a trial row with
     origin "pruned" and the reason, never run;
  2. orders the rest: the default, then the configs that won at nearby sizes
     (``storage.tuning.nearby_winners``, origin "nearby"), then the cost model's ranking
     (``compiler.autotune.cost``);
  3. searches by successive halving (``compiler.autotune.halving``): a few repetitions for
     all, more for the faster half, the default kept every round; a memory-bound kernel
     stops as soon as a config runs within 90% of the card's measured copy bandwidth
     (``stop_reason`` "roofline"), and a launch-bound one as soon as its default runs
     within 10% of the card's measured empty-kernel launch latency ("launch_bound"); a
     kernel that stopped either way is not tuned again.

Each candidate launches from the binary the build stage stored for this card's architecture
and Triton version (``compiler.kernels.stored``: loaded, not compiled); only configs without
a usable one are JIT compiled, and the result counts both. Loading and compiling are CPU
time: ``gpu_seconds`` and each row's ``gpu_s`` are the time spent running and timing.

Configs whose build failed for the card's architecture are gated (a row with the build's
status, never launched); once ``budget_s`` GPU seconds are spent, the rest wait for the next
run. Every row carries its GPU seconds, its origin, the stop reason and the bandwidth. The
best row is marked when it beats what was stored.

Example:
    >>> from pipeline.shapes import KernelShape
    >>> shape = KernelShape("k", "pointwise1d", ("torch.float32",) * 2, (64, 64), (64,))
    >>> TuneJob(model="mlp", shape=shape, targets=("sm_90",)).record_key.startswith("k:")
    True
"""
from __future__ import annotations

import json
import time
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pipeline.config import cuda_arch
from pipeline.kernel_tasks import (_candidates, _extern, _worker_name, cover_size, kernel_launch,
                                   load_stored_kernel, search_order)
from pipeline.shapes import KernelShape
from pipeline.tasks import OK, SKIPPED, TaskResult, _failure

MEMORY_BOUND_KINDS = ("pointwise1d", "pointwise2d", "reduction_persistent", "reduction_looped")


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


FINAL_STOPS = ("roofline", "launch_bound")   # a search stopped so is never run again


def _stored(store: Any, launch: Any, info: Any) -> tuple[dict[Any, float | None], str | None]:
    """(``{config: median ms, or None for a failed trial}`` stored for this kernel, sizes,
    GPU kind, driver, clocks and versions; the ``FINAL_STOPS`` reason one search met)."""
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
    table = store.query("trials", expr, columns=["trial_key", "config_json", "status",
                                                 "median_ms", "stop_reason"])
    done, final = {}, None
    for row in table.to_pylist():
        config = Config.from_dict(json.loads(row["config_json"]))
        key = TrialRecord.make_key(launch.kernel.kernel_key, sizes, config.key, info.name,
                                   info.arch, info.driver, info.clocks, triton.__version__,
                                   torch.__version__)
        if key == row["trial_key"]:
            done[config] = row["median_ms"] if row["status"] == "ok" else None
            final = row["stop_reason"] if row["stop_reason"] in FINAL_STOPS else final
    return done, final


def done_trials(store: Any, launch: Any, info: Any) -> dict[Any, float | None]:
    """``{config: median ms, or None for a failed trial}`` already stored (see ``_stored``)."""
    return _stored(store, launch, info)[0]


def _builds(store: Any, kernel_key: str, arch: str) -> tuple[dict[Any, tuple[str, str]],
                                                              dict[Any, Any]]:
    """The build stage's rows for ``arch`` and the installed Triton: (``{config: (status,
    error)}`` of failed builds, ``{config: StoredBinary}`` of the built ones)."""
    import pyarrow.compute as pc
    import triton
    from compiler.autotune import Config
    from compiler.kernels.serve import StoredBinary
    table = store.query("binaries", (pc.field("kernel_key") == kernel_key)
                        & (pc.field("arch") == arch)
                        & (pc.field("triton_version") == triton.__version__),
                        columns=["config_json", "status", "error", "cubin", "metadata_json"])
    failed, built = {}, {}
    for row in table.to_pylist():
        config = Config.from_dict(json.loads(row["config_json"]))
        if (row["status"] or "ok") != "ok":
            failed[config] = (row["status"], row["error"])
        elif row["cubin"]:
            built[config] = StoredBinary(row["cubin"], json.loads(row["metadata_json"]))
    return failed, built


LoadBinary = Callable[[Any, Any, Any], Any]   # (KernelLaunch, Config, StoredBinary) -> kernel


def load_binary(device: str) -> LoadBinary:
    """Loads a stored binary on ``device`` for a launch at a config (``kernels.stored``), or
    says why it cannot run there; cubin files go to one scratch folder per machine."""
    import torch
    from compiler.kernels.stored import load_stored
    index = torch.device(device).index
    scratch = Path(tempfile.gettempdir()) / "kiln-tune-cubins"

    def load(launch: Any, config: Any, binary: Any) -> Any:
        return load_stored(launch.kernel, config, launch.dtypes, launch.int_args, binary,
                           scratch, index)
    return load


def _nearby(store: Any, launch: Any, info: Any, space: Any) -> list[Any]:
    """Winners at nearby sizes that this kernel's space admits at its sizes."""
    from compiler.autotune import Config
    from compiler.autotune.spaces import fits
    from storage.tuning import nearby_winners
    found = []
    for values in nearby_winners(store, launch.kernel.kernel_key, launch.sizes(), info.name):
        try:
            config = Config.from_dict(values)
        except ValueError:
            continue
        if config.extern or fits(space, launch.numels, config):
            found.append(config)
    return found


def _card_sms() -> int | None:
    import torch
    return torch.cuda.get_device_properties(0).multi_processor_count \
        if torch.cuda.is_available() else None


def _row(launch: Any, info: Any, m: Any, **fields: Any) -> Any:
    import torch
    import triton
    from storage import TrialRecord
    return TrialRecord.timed(
        kernel_key=launch.kernel.kernel_key, sizes=launch.sizes(), config=m.config.as_dict(),
        device_name=info.name, arch=info.arch, driver=info.driver, clocks=info.clocks,
        triton_version=triton.__version__, torch_version=torch.__version__,
        times_ms=list(m.times_ms) if m.status == "ok" else [], status=m.status,
        error=m.error, worker=_worker_name(), is_default=m.config == launch.default, **fields)


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


def tune_kernel(job: TuneJob, store_root: str, device: str, timer: Any = None,
                gbps: float | None = None, launch_ms: float | None = None,
                load: LoadBinary | None = None) -> TaskResult:
    """``tune_task``'s work on ``device``; raises on errors. ``timer`` (``autotune.timing``),
    ``gbps`` (the copy bandwidth), ``launch_ms`` (an empty kernel's time) and ``load`` (of
    stored binaries) default to the card's; on ``"cpu"`` without a timer (tests) the
    interpreter verifies candidates and times none, so no trial row is written."""
    from compiler.autotune import Measurement, Tuner, device_info, load_spaces
    from compiler.autotune import plan_trials
    from compiler.autotune.halving import successive_halving
    from compiler.autotune.prune import dtype_bytes, prune
    from compiler.autotune.timing import EventTimer, copy_gbps_of, launch_ms_of, roofline_ms
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
    if timer is not None and not info.timed:
        info = type(info)(info.name, info.arch, info.driver, info.clocks, True)
    if info.timed and info.arch != "cpu" and cuda_arch(info.arch) not in {
            cuda_arch(t) for t in job.targets}:
        return result(SKIPPED, info, note=f"{info.name} is {info.arch}, not one of the "
                                          f"run's targets {', '.join(job.targets)}")
    store = Store(store_root)
    kernel = load_stored_kernel(store, shape.kernel_key)
    launch = kernel_launch(kernel, shape, job.options_json)
    spaces = load_spaces(job.space)
    known, final = _stored(store, launch, info)
    describe = f"{kernel.name} {shape.describe()} on {info.name}"
    if final:
        return result(SKIPPED, info, note=f"{describe}: stopped by {final} before")
    nearby = (_nearby(store, launch, info, spaces.of_kernel(shape.kind, kernel.spec.stencil))
              if info.timed else [])
    arch = cuda_arch(info.arch) if info.arch.startswith("sm_") else None
    kept, pruned = prune(shape.kind, list(dict.fromkeys(
        [launch.default, *nearby, *_candidates(shape, spaces, stencil=kernel.spec.stencil),
         *_extern(kernel)])),
        spaces.targets.get(arch), shape.dtypes, launch.default)
    # The search covers the default, the nearby winners and the cost model's first
    # ``descent_budget`` candidates; the order is a pure function of the space and the
    # sizes, so a rerun plans only what a grown space added to that cover.
    cover = search_order(shape, launch, kept, nearby, _card_sms())
    cap = cover_size(spaces, kept, nearby)
    done_keys = {c.key for c in known}
    todo = plan_trials(cover[:cap], done_keys)
    pruned = [p for p in pruned if p.config.key not in done_keys]
    beyond = len(plan_trials(cover[cap:], done_keys))
    if not todo and not pruned:
        return result(SKIPPED, info, note=f"{describe}: every config already timed")
    on_gpu = device.startswith("cuda")
    timer = timer or (EventTimer(device) if on_gpu else None)
    gbps = gbps or (copy_gbps_of(device) if on_gpu else None)
    floor = (roofline_ms([a.numel * dtype_bytes(a.dtype) for a in launch.args], gbps)
             if gbps and shape.kind in MEMORY_BOUND_KINDS else None)
    launch_ms = launch_ms or (launch_ms_of(device) if on_gpu else None)
    failed, built = _builds(store, kernel.kernel_key, info.arch)
    load = load or load_binary(device)
    tuner = Tuner(launch, device, timer=timer, stored=lambda config: (
        load(launch, config, built[config]) if config in built else None))

    def measure(config: Any, reps: int) -> Any:
        if config in failed:
            status, error = failed[config]
            return Measurement(config, status, error=f"build for {info.arch}: {error}")
        return tuner.more(config, reps)

    # a stored default is not timed again: the tuner runs it untimed for reference outputs
    baseline = launch.default if launch.default in todo else None
    searched = successive_halving(
        todo, baseline, measure, floor_ms=floor, launch_ms=launch_ms,
        default_ms=known.get(launch.default), over_budget=lambda: bool(tuner.results) and tuner.seconds > job.budget_s)
    best = searched.best
    previous = min((ms for ms in known.values() if ms is not None), default=None)
    mark = best if best and (previous is None or best.median_ms < previous) else None
    common = {"stop_reason": searched.stop_reason, "copy_gbps": gbps}
    rows = [] if not info.timed else [
        _row(launch, info, m, is_best=m is mark, origin="nearby" if m.config in nearby
             else "timed", gpu_s=tuner.config_seconds.get(m.config, 0.0), **common)
        for m in searched.measurements.values() if m.status != "not_timed"]
    if info.timed:
        rows += [_row(launch, info, Measurement(p.config, "resource_error", error=p.reason),
                      origin="pruned", gpu_s=0.0, **common) for p in pruned]
    if rows:
        store.write("trials", rows)
    timed = sum(r.status == "ok" for r in rows)
    default = searched.measurements.get(launch.default)
    default_ms = default.median_ms if default and default.status == "ok" else known.get(
        launch.default)
    speedup = default_ms / best.median_ms if best and default_ms else None
    not_reached = len(searched.not_reached) + beyond
    deferred = len(searched.not_reached) if searched.stop_reason == "budget" else 0
    origins = list(tuner.origins.values())
    note = (f"{describe}: {timed} timed, {len(pruned)} pruned"
            + (f", best {best.config} {best.median_ms:.4f} ms" if best else "")
            + (f" ({speedup:.2f}x the default)" if speedup else "")
            + f"; stopped by {searched.stop_reason}"
            + (f"; {beyond} beyond the cost model's first {spaces.search.descent_budget}"
               if beyond else "")
            + (f"; {deferred} left for the next run (budget)" if deferred else "")
            + f"; {origins.count('binary')} launched from stored binaries, "
            f"{origins.count('jit')} compiled ({tuner.load_seconds:.2f} s loading)"
            + (f"; {len(tuner.fallbacks)} stored binaries unusable (first: "
               f"{next(iter(tuner.fallbacks.values()))})" if tuner.fallbacks else ""))
    return result(OK if rows else SKIPPED, info, timed=timed,
                  trial_errors=len(rows) - timed - len(pruned) if rows else 0,
                  gpu_seconds=tuner.seconds, speedup=speedup, note=note, pruned=len(pruned),
                  not_reached=not_reached, stop_reason=searched.stop_reason,
                  from_binary=origins.count("binary"), jit_compiled=origins.count("jit"),
                  load_seconds=tuner.load_seconds)
