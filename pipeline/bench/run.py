"""The benchmark's loop: for every model of a zoo and every chosen system, one child process
with empty caches (``pipeline.bench.child``), its result a ``storage.BenchRecord``.

Rows are written to the store after each model, so a run cut short keeps what it measured.
A system that fails or crashes is an "error" row and the run goes on; a system that needs
CUDA on a machine without it, a model whose library is missing, and whatever would start
after the time budget are "skipped" rows with the reason.
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

    def child_timeout(self, elapsed_s: float) -> float:
        """A child's limit: ``timeout_s``, and at most a minute past the time budget."""
        return min(self.timeout_s, max(30.0, self.budget_s + 60.0 - elapsed_s))

    def job(self, model: str, system: System) -> Job:
        return Job(self.config, model, system, self.device, self.quick, self.repeats,
                   self.warmup, self.tune_budget_s)


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
    # A session of its own, so a timeout ends the child's compile workers with it.
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=child_env(cache_root, environ))
    try:
        stdout, stderr = proc.communicate(job.to_json(), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"status": "error", "error": f"timed out after {timeout_s:.0f} s"}
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    tail = (stderr.strip().splitlines() or ["no output"])[-1][:300]
    return {"status": "error",
            "error": f"child exited with status {proc.returncode} and no result: {tail}"}


def _versions() -> dict[str, str]:
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
              environ: dict[str, str] | None = None) -> list:
    """Every (model, system) of ``plan``; their records, also written to ``store``."""
    from storage import BenchRecord
    environ = dict(os.environ if environ is None else environ)
    versions, device_name = _versions(), _device_name(plan.device)
    records, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as scratch:
        for model in plan.models:
            model_rows, model_skip = [], None
            for n, system in enumerate(plan.systems):
                reason = model_skip or system.unavailable(plan.device)
                if reason is None and time.perf_counter() - started > plan.budget_s:
                    reason = f"past the time budget of {plan.budget_s:.0f} s"
                if reason is not None:
                    result = {"status": "skipped", "error": reason}
                else:
                    t0 = time.perf_counter()
                    result = run_child(plan.job(model, system), Path(scratch) / f"{model}-{n}",
                                       plan.child_timeout(t0 - started), environ)
                    progress.write(f"{model} {system.name}: {_line(result)} "
                                   f"({time.perf_counter() - t0:.1f} s)\n")
                    progress.flush()
                    if result["status"] == "skipped":     # the model, not the system
                        model_skip = result["error"]
                result.setdefault("device_name", device_name)
                model_rows.append(BenchRecord.build(
                    run_id=run_id, model=model, system=system.name, config=plan.config_name,
                    quick=plan.quick, **versions, **result))
            store.write("bench", model_rows)
            records += model_rows
    return records


def _device_name(device: str) -> str:
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
