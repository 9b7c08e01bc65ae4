"""The benchmark's loop: for every model of a zoo and every chosen system, one child process
with empty caches (``pipeline.bench.child``), its result a ``storage.BenchRecord``.

Rows are written to the store after each model, so a run cut short keeps what it measured,
and ``--resume`` (``resume.Prior``) runs only the pairs without an ok row. A system that
fails or crashes is an "error" row and the run goes on; a system that needs CUDA on a
machine without it, a model whose library is missing, and whatever would start after the
time budget are "skipped" rows with the reason. What does not depend on the child (the
card's copy rate) is measured here, once per run, and handed to every child.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence, TextIO

from .child import RESULT_PREFIX, Job
from .resume import Prior
from .systems import System

# Where ``pipeline`` is importable from, for a child started from any directory.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_CACHE_VARS = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "KILN_CACHE_DIR")


@dataclass(frozen=True)
class BenchPlan:
    config: str                  # the zoo TOML's path
    config_name: str
    models: tuple[str, ...]
    systems: tuple[System, ...]
    device: str                  # "cuda" or "cpu"
    quick: bool
    repeats: int
    warmup: int
    budget_s: float              # no child starts after this many seconds
    timeout_s: float             # one child's limit
    tune_budget_s: float
    profile_calls: int = 3       # calls under torch.profiler per child
    same_process: bool = False   # kiln rows also time their baseline in their child

    def child_timeout(self, elapsed_s: float) -> float:
        """A child's limit: ``timeout_s``, and at most a minute past the time budget."""
        return min(self.timeout_s, max(30.0, self.budget_s + 60.0 - elapsed_s))

    def job(self, model: str, system: System, copy_gbps: float | None = None) -> Job:
        return Job(self.config, model, system, self.device, self.quick, self.repeats,
                   self.warmup, self.tune_budget_s, copy_gbps, self.profile_calls,
                   self.same_process)


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def child_env(cache_root: Path, environ: dict[str, str]) -> dict[str, str]:
    """``environ`` with empty cache directories of its own and ``pipeline`` importable."""
    env = dict(environ)
    for var in _CACHE_VARS:
        path = cache_root / var.split("_")[0].lower()
        path.mkdir(parents=True, exist_ok=True)
        env[var] = str(path)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_child(job: Job, cache_root: Path, timeout_s: float,
              environ: dict[str, str]) -> dict[str, Any]:
    """The child's result, or an "error" result saying how it died."""
    cmd = [sys.executable, "-m", "pipeline.bench.child"]
    # stderr into a file: kiln's compile workers inherit it, and a pipe would keep the parent
    # waiting for their exit. A session of its own, so that its group (the compile workers)
    # ends with it, at a timeout and after the result.
    with tempfile.TemporaryFile("w+") as errfile:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=errfile, text=True, start_new_session=True,
                                env=child_env(cache_root, environ))
        try:
            stdout, _ = proc.communicate(job.to_json(), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _end_group(proc.pid)
            proc.communicate()
            return {"status": "error", "error": f"timed out after {timeout_s:.0f} s"}
        _end_group(proc.pid)
        errfile.seek(0)
        stderr = errfile.read()
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    tail = (stderr.strip().splitlines() or ["no output"])[-1][:300]
    return {"status": "error",
            "error": f"child exited with status {proc.returncode} and no result: {tail}"}


def _end_group(pgid: int) -> None:
    """Kill what is left of a child's process group (nothing, most often). While a member
    lives, no new process can take the group's id, so this never reaches a stranger."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def versions() -> dict[str, str]:
    from importlib import metadata

    from compiler import __version__

    def installed(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"
    return {"torch_version": installed("torch"), "triton_version": installed("triton"),
            "compiler_version": __version__}


def run_bench(plan: BenchPlan, store: Any, run_id: str, progress: TextIO,
              environ: dict[str, str] | None = None, prior: Prior | None = None) -> list:
    """Every (model, system) of ``plan`` that ``prior`` (the run's earlier rows) does not
    hold as ok; their records, also written to ``store``. A pair skipped again (the budget,
    no CUDA) keeps its earlier row rather than gaining a new one."""
    from storage import BenchRecord

    from .bandwidth import copy_gbps
    environ = dict(os.environ if environ is None else environ)
    prior = prior or Prior()
    columns = {"config": plan.config_name, "quick": plan.quick, **versions()}
    card, gbps = device_name(plan.device), copy_gbps(plan.device)
    records, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as scratch:
        for model in plan.models:
            model_rows, model_skip = [], None
            for n, system in enumerate(plan.systems):
                pair = (model, system.name)
                if prior.done(*pair):
                    continue
                reason = model_skip or system.unavailable(plan.device)
                if reason is None and time.perf_counter() - started > plan.budget_s:
                    reason = f"past the time budget of {plan.budget_s:.0f} s"
                if reason is not None and pair in prior.latest:
                    continue
                if reason is not None:
                    result = {"status": "skipped", "error": reason}
                else:
                    result = _run_logged(plan.job(model, system, gbps),
                                         Path(scratch) / f"{model}-{n}",
                                         plan.child_timeout(time.perf_counter() - started),
                                         environ, progress)
                    if result["status"] == "skipped":     # the model, not the system
                        model_skip = result["error"]
                result.setdefault("device_name", card)
                model_rows.append(BenchRecord.build(
                    run_id=run_id, model=model, system=system.name,
                    attempt=prior.attempts.get(pair, 0), **columns, **result))
            store.write("bench", model_rows)
            records += model_rows
    return records


def _run_logged(job: Job, cache_root: Path, timeout_s: float, environ: dict[str, str],
                progress: TextIO) -> dict[str, Any]:
    """``run_child``, and a progress line with the child's whole wall time and its phases.
    The details keep the wall time too (``child_wall_s``): what the child's own phases do
    not cover is its interpreter's start and end."""
    t0 = time.perf_counter()
    result = run_child(job, cache_root, timeout_s, environ)
    wall = time.perf_counter() - t0
    phases = ""
    if result.get("details_json"):
        details = json.loads(result["details_json"])
        details["child_wall_s"] = round(wall, 3)
        result["details_json"] = json.dumps(details)
        phases = _phases(details.get("phases_s", {}), wall)
    progress.write(f"{job.model} {job.system.name}: {_line(result)} ({wall:.1f} s{phases})\n")
    for note in json.loads(result.get("details_json") or "{}").get("notes", []):
        progress.write(f"  {note}\n")
    progress.flush()
    return result


def _phases(seconds: dict[str, float], wall: float) -> str:
    """``; import torch 1.0, model 0.2, ..., rest 0.3``: a child's phases, and the rest of its
    wall time (interpreter start and end, the pipes)."""
    if not seconds:
        return ""
    parts = [f"{name} {s:.1f}" for name, s in seconds.items()]
    return "; " + ", ".join(parts + [f"rest {wall - sum(seconds.values()):.1f}"])


def device_name(device: str) -> str:
    import torch
    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def _line(result: dict[str, Any]) -> str:
    if result["status"] != "ok":
        return f"{result['status']}: {result.get('error')}"
    return f"{result['median_ms']:.3f} ms, cold {result['cold_s']:.1f} s"


def plan_models(config: Any, names: Sequence[str] | None) -> tuple[str, ...]:
    """The zoo's model names, or ``names`` (each must be in the zoo)."""
    known = [m.name for m in config.models]
    if not names:
        return tuple(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown models {unknown}; the zoo has {', '.join(known)}")
    return tuple(names)
