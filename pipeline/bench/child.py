"""One system on one model, in a process of its own: ``python -m pipeline.bench.child``
reads a ``Job`` as JSON on stdin and prints one ``RESULT_PREFIX`` line of JSON on stdout.

The parent gives the process empty Inductor, Triton and kiln cache directories, so the cold
start (built model on the device -> first synchronized result, compiling included) is what a
fresh deployment pays. Then the steady time per call, the kernels per call and, for kiln,
how close its memory-bound kernels come to a device-to-device copy (timed once per run by
the parent, ``Job.copy_gbps``). A failure is a result (status "error"); a model whose
library is not installed is "skipped", with the reason. Once the result is printed the
process ends without the interpreter's teardown (``os._exit``): nothing after it is measured.
The row's details keep each phase's wall seconds (``Phases``): where a child's time goes
besides its cold start.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any

from .systems import Context, System, maker

RESULT_PREFIX = "kiln-bench-result: "


@dataclass(frozen=True)
class Job:
    config: str
    model: str
    system: System
    device: str
    quick: bool
    repeats: int
    warmup: int
    tune_budget_s: float
    copy_gbps: float | None = None   # the run's copy rate (``bandwidth.copy_gbps``), or None
    profile_calls: int = 3           # calls under torch.profiler for the kernel view
    same_process: bool = False       # kiln also times its baseline here (``--same-process``)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Job":
        data = json.loads(text)
        return cls(**{**data, "system": System(**data["system"])})


class Phases:
    """Wall seconds of a child's phases, in order: ``mark(name)`` ends the phase ``name``.

    >>> p = Phases(); p.mark("import torch"); p.mark("model"); list(p.seconds)
    ['import torch', 'model']
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, 4)
        self._last = now


def _model(job: Job, phases: Phases):
    """``(module, args, dynamic_shapes, dtype)`` on the job's device, as ``kiln run`` builds it."""
    import torch
    from pipeline.config import load_config
    from pipeline.tasks import build_model
    spec = next((m for m in load_config(job.config).models if m.name == job.model), None)
    if spec is None or spec.factory is None:
        raise ValueError(f"model {job.model!r}: not a factory model of {job.config}")
    module, args, dynamic = build_model(spec)
    torch.manual_seed(1)     # fresh inputs, never zeros
    args = tuple(torch.randn_like(a) if a.is_floating_point() else a for a in args)
    phases.mark("model")
    if job.device == "cuda":     # the context, apart from the copy to it
        torch.cuda.init()
        phases.mark("cuda init")
    module, args = module.to(job.device), tuple(a.to(job.device) for a in args)
    phases.mark("to device")
    return module, args, dynamic, spec.dtype


def _kernels(job: Job, built, call, details: dict[str, Any]) -> dict[str, Any]:
    """Kernel counts and kiln's bandwidth fractions; what is per kernel goes to ``details``."""
    from . import bandwidth
    from .inductor import generated_kernels
    out: dict[str, Any] = {}
    if built.inductor:
        details["inductor_generated_kernels"] = generated_kernels()
    if built.kiln is not None:
        details["kiln_fallbacks"] = list(built.kiln.fallback_ops)
    times = bandwidth.kernel_times(call, job.device, job.profile_calls)
    if times:
        out["kernel_count"] = sum(k.launches for k in times)
        details["kernels"] = [dataclasses.asdict(k) for k in times[:40]]
    elif built.kiln is not None:    # off CUDA, or a profiler that saw no kernel
        out["kernel_count"] = built.kiln.kernel_count
    if times and built.kiln is not None and job.copy_gbps:
        rows = bandwidth.fractions(times, bandwidth.kiln_kernel_facts(built.kiln), job.copy_gbps)
        out["membound_kernels"] = len(rows)
        out["bandwidth_fraction"] = bandwidth.overall_fraction(rows, job.copy_gbps)
        details["membound"] = rows
    return out


def _kiln_cold(phases: Any, cold_s: float) -> dict[str, float]:
    """kiln's cold start split: its last compile's capture, lower and load (kernels built),
    and the rest (the first call: library start-up, launches; for a tuned system, tuning
    and the untuned compile before it)."""
    parts = {"capture": phases.capture_s, "lower": phases.lower_s, "load": phases.load_s}
    parts["rest"] = cold_s - sum(parts.values())
    return {k: round(v, 4) for k, v in parts.items()}


def run_job(job: Job) -> dict[str, Any]:
    """The measurements of ``job``: a dict of ``storage.BenchRecord`` columns."""
    phases = Phases()
    import torch
    from .timing import sync, time_calls
    phases.mark("import torch")
    try:
        module, args, dynamic, dtype = _model(job, phases)
    except ImportError as exc:       # timm or transformers missing on this machine
        return {"status": "skipped", "error": f"{type(exc).__name__}: {exc}"}
    result: dict[str, Any] = {"status": "ok", "dtype": dtype,
                              "device_name": torch.cuda.get_device_name()
                              if job.device == "cuda" else "cpu"}
    context = Context(job.device, job.quick, job.tune_budget_s, job.same_process)
    # no_grad, not inference_mode: torch.compile's CUDA graphs (reduce-overhead) are
    # benchmarked under no_grad everywhere else in this repo (benchmarks/bench_models.py).
    result["copy_gbps"] = job.copy_gbps
    with torch.no_grad():
        start = time.perf_counter()
        built = maker(job.system)(module, args, dynamic, context, **job.system.options)
        built.fn(*args)
        sync(job.device)
        result["cold_s"] = time.perf_counter() - start
        phases.mark("cold")
        timing = time_calls(lambda: built.fn(*args), job.device, job.repeats, job.warmup)
        result.update(median_ms=timing.median_ms, q1_ms=timing.q1_ms, q3_ms=timing.q3_ms,
                      n_repeats=timing.n)
        phases.mark("timed")
        details: dict[str, Any] = {"notes": list(built.notes)}
        for check in built.checks:     # extra too: a failure is a note, not the row's
            try:
                details["notes"].append(check())
            except Exception as exc:  # noqa: BLE001
                details["notes"].append(f"check failed: {type(exc).__name__}: {exc}"[:500])
        if getattr(built.kiln, "phases", None) is not None:
            details["kiln_cold_s"] = _kiln_cold(built.kiln.phases, result["cold_s"])
        try:      # the profiler's view is extra: its failure leaves the timings standing
            result.update(_kernels(job, built, lambda: built.fn(*args), details))
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            details["notes"].append(f"kernels not measured: {type(exc).__name__}: {exc}"[:500])
        phases.mark("kernels")
    details["phases_s"] = phases.seconds
    result["details_json"] = json.dumps(details)
    return result


def main() -> int:
    job = Job.from_json(sys.stdin.read())
    try:
        result = run_job(job)
    except Exception as exc:  # noqa: BLE001 -- any failure of a system is a result
        traceback.print_exc()
        lines = [line for line in str(exc).splitlines() if line.strip()]
        result = {"status": "error",
                  "error": f"{type(exc).__name__}: {lines[0][:500] if lines else ''}"}
    sys.stdout.write("\n" + RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip the interpreter's teardown (module GC, atexit handlers, Inductor's worker pool
    # shut down politely): 0.4 s with torch alone and 0.9 s after a kiln compile on a CPU,
    # and nothing after the printed result is measured. The parent ends the child's
    # process group, compile workers included (``run.run_child``).
    os._exit(status)
