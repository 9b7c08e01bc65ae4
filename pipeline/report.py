"""The plan a run will follow (``--dry-run``) and the summary of a finished run.

Both are plain data plus text formatting; nothing here talks to Dask or runs a task.

Example:
    >>> from pipeline.config import parse_config
    >>> cfg = parse_config({"models": [{"factory": "pipeline.zoo.tiny:mlp"}],
    ...                     "run": {"targets": ["cpu", "sm_90"]}}, "zoo.toml")
    >>> plan = make_plan(cfg, "/tmp/kiln-store", gpus=0)
    >>> [(s.name, s.tasks) for s in plan.stages]
    [('capture', 1), ('lower', 2), ('build', 0), ('tune', 0), ('relower', 0)]
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

from rich.text import Text

from pipeline.config import RunConfig, cuda_arch, gpu_targets, lower_target
from pipeline.progress import format_table, render
from pipeline.tasks import FAILED, OK, SKIPPED, TaskResult
from storage.timeline import TaskSpan

# Exit statuses of `kiln run`.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass(frozen=True)
class StagePlan:
    """One stage: how many tasks it will run (at most), where, or why it does not run."""
    name: str
    tasks: int
    where: str
    note: str = ""


@dataclass(frozen=True)
class Plan:
    config: RunConfig
    store: str
    lower_targets: tuple[str, ...]
    stages: tuple[StagePlan, ...]
    cluster: str


def lower_targets(config: RunConfig) -> tuple[str, ...]:
    """Distinct compiler targets, in config order: sm_80 and sm_90 share one ``cuda`` module."""
    return tuple(dict.fromkeys(lower_target(t) for t in config.targets))


def describe_cluster(config: RunConfig, gpus: int) -> str:
    spec = config.cluster
    if spec.scheduler:
        return f"existing Dask cluster at {spec.scheduler}"
    n_gpu = spec.gpus if spec.gpus is not None else gpus
    gpu_text = (f"{n_gpu} GPU worker(s), one per GPU (CUDA_VISIBLE_DEVICES, resource GPU=1)"
                if n_gpu else "0 GPU workers (no GPU visible)")
    return (f"embedded LocalCluster on this machine: {spec.workers} CPU worker process(es) "
            f"x 1 thread, {gpu_text}")


def make_plan(config: RunConfig, store: str, gpus: int) -> Plan:
    """What ``kiln run`` will do with ``config`` (an upper bound: stored work is skipped).

    Build and tune fan out over the distinct kernels that lowering finds, so their task
    counts are known only then (shown as ``-``).
    """
    targets = lower_targets(config)
    archs = gpu_targets(config)
    tuning = config.tuning
    n = len(config.models)
    if archs:
        what = (f"every candidate config of search space {tuning.space!r}" if tuning.enabled
                else "its default config")
        build_note = (f"one task per distinct kernel x architecture ({', '.join(archs)}): "
                      f"{what}; timeout {config.tasks.timeout('build'):g} s")
    else:
        build_note = "nothing to build (cpu target only)"
    n_gpu = config.cluster.gpus if config.cluster.gpus is not None else gpus
    if not tuning.enabled:
        tune_note = "off (tuning.enabled = false)"
    elif not config.cluster.scheduler and not n_gpu:
        tune_note = ("skipped: no GPU workers (candidates are still built; run again with "
                     "GPU workers to time them)")
    else:
        tune_note = (f"one task per distinct kernel x sizes on a GPU worker; budget "
                     f"{tuning.budget_s:g} GPU-s each; timeout {config.tasks.timeout('tune'):g} s")
    stages = (
        StagePlan("capture", n, "CPU workers", f"timeout {config.tasks.timeout('capture'):g} s"),
        StagePlan("lower", n * len(targets), "CPU workers",
                  f"{n} model(s) x {len(targets)} lowering target(s) "
                  f"({', '.join(targets)}); timeout {config.tasks.timeout('lower'):g} s"),
        StagePlan("build", 0, "CPU workers", build_note),
        StagePlan("tune", 0, "GPU workers", tune_note),
        StagePlan("relower", 0, "CPU workers", _relower_note(config, tune_note)),
    )
    return Plan(config=config, store=store, lower_targets=targets, stages=stages,
                cluster=describe_cluster(config, gpus))


def _relower_note(config: RunConfig, tune_note: str) -> str:
    if not config.tuning.enabled or tune_note.startswith("skipped"):
        return "off (nothing tuned)"
    return (f"per model and GPU kind, once its kernels are tuned: the cuda module again with "
            f"the best stored configs, stored with tuned_for = the GPU's name; timeout "
            f"{config.tasks.timeout('relower'):g} s")


def format_plan(plan: Plan, store_contents: str) -> str:
    """The text ``--dry-run`` prints."""
    cfg = plan.config
    lines = [f"kiln run {cfg.name} ({cfg.path})", f"store    {plan.store} ({store_contents})",
             f"cluster  {plan.cluster}",
             f"targets  {', '.join(cfg.targets)} (lowered as {', '.join(plan.lower_targets)})",
             f"faults   a task is re-run on another worker up to {cfg.tasks.retries} time(s) "
             f"when its worker dies", "", f"models ({len(cfg.models)}):"]
    rows = [[m.name, m.source, m.dtype or "(from .pt2)",
             ", ".join(f"in{d.input}.dim{d.dim}={d.name}[{d.min}..{d.max}]" for d in m.dynamic)
             or "-"] for m in cfg.models]
    lines += ["  " + line for line in
              format_table(["name", "source", "dtype", "dynamic"], rows).splitlines()]
    lines += ["", "stages:"]
    rows = [[s.name, str(s.tasks) if s.tasks else "-", s.where, s.note] for s in plan.stages]
    lines += ["  " + line for line in
              format_table(["stage", "tasks", "where", "note"], rows).splitlines()]
    return "\n".join(lines)


@dataclass(frozen=True)
class Throughput:
    """What a run got through per minute. ``graphs``: modules lowered or found stored;
    ``kernels_built``: kernel x architecture builds that built something; ``kernels_tuned``:
    kernel shapes with new trials, over the tune stage's span (first tune submitted to last
    finished: the GPU workers' part of the run); ``gpu_s``: seconds spent timing on GPUs.

    >>> Throughput(4, 60, 30, 900, wall_s=120.0, tune_stage_s=60.0, gpu_s=50.0).tuned_per_min
    30.0
    """
    graphs: int
    kernels_built: int
    kernels_tuned: int
    configs_timed: int
    wall_s: float
    tune_stage_s: float
    gpu_s: float

    @staticmethod
    def _rate(count: int, seconds: float) -> float:
        return 60.0 * count / seconds if seconds > 0 else 0.0

    @property
    def graphs_per_min(self) -> float:
        return self._rate(self.graphs, self.wall_s)

    @property
    def built_per_min(self) -> float:
        return self._rate(self.kernels_built, self.wall_s)

    @property
    def tuned_per_min(self) -> float:
        return self._rate(self.kernels_tuned, self.tune_stage_s)

    def describe(self) -> str:
        return (f"throughput: {self.graphs_per_min:.1f} graphs/min, {self.built_per_min:.1f} "
                f"kernels built/min over {self.wall_s:.1f} s; {self.tuned_per_min:.1f} kernels "
                f"tuned/min over the tune stage's {self.tune_stage_s:.1f} s "
                f"({self.configs_timed} configs timed); {self.gpu_s:.1f} GPU-s timing")


@dataclass
class RunReport:
    """Everything a run produced: one ``TaskResult`` per finished task (failures included,
    with synthesized ones for dead workers and timeouts)."""
    config: RunConfig
    store: str
    results: list[TaskResult] = field(default_factory=list)
    interrupted: bool = False
    wall_s: float = 0.0
    gpu_s: float = 0.0
    # (kernels, kernel shapes) left untuned because tuning was on but no GPU worker was there
    untuned: tuple[int, int] = (0, 0)
    # capture tasks submitted; the other models were found in the store by source key
    captured: int = 0
    # seconds after the run's start of each stage's first submit and last finish
    stage_spans: dict[str, list[float]] = field(default_factory=dict)
    # {stage: {worker name: tasks finished there}}
    placement: dict[str, dict[str, int]] = field(default_factory=dict)
    # failures whose row could not be written to the store's failures dataset
    unrecorded: int = 0
    # the run's log file: worker output and distributed's log records
    log_path: str = ""
    # every finished task's span, for the per-model time chart (storage.timeline)
    spans: list[TaskSpan] = field(default_factory=list)
    # files the run wrote beside the store: Dask's performance report, the spans (JSON), their
    # chart (PNG; empty without matplotlib, chart_note says why when drawing failed)
    dask_report: str = ""
    timeline_path: str = ""
    chart_path: str = ""
    chart_note: str = ""

    @property
    def failures(self) -> list[TaskResult]:
        return [r for r in self.results if r.failed]

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_FAILED if self.failures or self.incomplete_models() else EXIT_OK

    def incomplete_models(self) -> list[str]:
        """Models without a failure that lack a module for some target: a task failed after
        storing the graph (``runner.reconcile_with_store``), so the lowering never ran."""
        targets = len(lower_targets(self.config))
        failed = self.failed_models()
        return [spec.name for spec in self.config.models if spec.name not in failed
                and len({r.target for r in self.results if r.model == spec.name
                         and r.stage == "lower" and not r.failed}) < targets]

    def stage(self, name: str) -> list[TaskResult]:
        return [r for r in self.results if r.stage == name]

    @property
    def tuning_skipped(self) -> bool:
        """Tuning was asked for but no GPU worker could do it (not a failure: see cli)."""
        return self.untuned[1] > 0

    @property
    def nothing_new(self) -> bool:
        return bool(self.results) and all(r.status == SKIPPED and not r.repaired
                                          for r in self.results)

    def throughput(self) -> "Throughput":
        """Rates of this run (see ``Throughput``)."""
        tunes = [r for r in self.stage("tune") if r.status == OK]
        start, end = self.stage_spans.get("tune", (0.0, 0.0))
        return Throughput(
            graphs=len({r.key for r in self.stage("lower") if not r.failed}),
            kernels_built=sum(1 for r in self.stage("build") if r.built),
            kernels_tuned=len(tunes), configs_timed=sum(r.timed for r in tunes),
            wall_s=self.wall_s, tune_stage_s=end - start, gpu_s=self.gpu_s)

    def failed_models(self) -> set[str]:
        return {r.model for r in self.failures}

    def kernel_counts(self) -> tuple[int, int]:
        """(distinct kernels of this run's modules, those of them the store held before the
        run). A kernel two modules of this run share (the cpu and cuda lowering of one
        graph, one LayerNorm in two models) is one kernel, and not a reused one."""
        lowered = [r for r in self.results if r.stage == "lower" and not r.failed]
        distinct = {k for r in lowered for k in r.kernel_keys}
        new = {k for r in lowered for k in r.new_kernel_keys}
        return len(distinct), len(distinct - new)


_WORDS = {OK: "new", SKIPPED: "stored", FAILED: "FAILED"}
_STYLE = {"new": "green", "stored": "cyan", "FAILED": "bold red", "ok": "green",
          "incomplete": "yellow"}


def _cell(results: list[TaskResult]) -> Text:
    words = [_WORDS[r.status] for r in results] or ["-"]
    return Text("/").join(Text(w, style=_STYLE.get(w, "")) for w in words)


def format_summary(report: RunReport, color: bool = False) -> str:
    """A table per model, the totals table, then the failures with their messages; styled
    for a terminal when ``color``."""
    targets = lower_targets(report.config)
    rows, n_ok = [], 0
    for spec in report.config.models:
        mine = [r for r in report.results if r.model == spec.name]
        lowered = [r for r in mine if r.stage == "lower" and not r.failed]
        status = ("FAILED" if any(r.failed for r in mine)
                  else "ok" if len(lowered) == len(targets) else "incomplete")
        rows.append([spec.name, _cell([r for r in mine if r.stage == "capture"])]
                    + [_cell([r for r in mine if r.stage == "lower" and r.target == t])
                       for t in targets]
                    + [str(len({k for r in lowered for k in r.kernel_keys})),
                       str(len({op for r in lowered for op in r.fallback_ops})),
                       Text(status, style=_STYLE[status])])
        n_ok += status == "ok"
    headers = (["model", "graph"] + [f"module[{t}]" for t in targets]
               + ["kernels", "fallback ops", "status"])
    lines = [format_table(headers, rows, color), ""]
    kernels, reused = report.kernel_counts()
    totals = [[f"{n_ok}/{len(report.config.models)}", kernels, _built_cell(report),
               _tuned_cell(report), reused, len(report.failures), f"{report.wall_s:.1f} s",
               f"{report.gpu_s:.1f}"]]
    lines += [format_table(["models", "kernels", "built", "tuned", "reused", "failed",
                            "wall time", "GPU-s"], totals, color)]
    lines += _build_lines(report) + _tune_lines(report) + _relower_lines(report)
    lines.append(report.throughput().describe())
    lines += _placement_lines(report)
    lines += _warning_lines(report.results)
    lines += _failure_lines(report.failures, report.unrecorded)
    if report.failures and report.log_path:
        lines.append(f"  (worker output and tracebacks: {report.log_path})")
    lines += _file_lines(report)
    verdict = _verdict(report)
    style = ("bold red" if report.failures else "yellow" if report.exit_code
             else "bold green")
    lines.append(render(Text(verdict, style=style), color) if color else verdict)
    return "\n".join(lines)


def print_summary(report: RunReport, out: TextIO) -> None:
    """``format_summary`` on ``out``, in colour when ``out`` is a terminal."""
    out.write(format_summary(report, color=out.isatty()) + "\n")
    out.flush()


def _built_cell(report: RunReport) -> str:
    """Kernel x architecture builds that built binaries in this run, of all the run's builds
    (the others found theirs stored, or failed: the build line below says which)."""
    builds = report.stage("build")
    return f"{sum(r.status == OK for r in builds)}/{len(builds)}" if builds else "-"


def _tuned_on_target(report: RunReport, r: TaskResult) -> bool:
    archs = {cuda_arch(t) for t in gpu_targets(report.config)}
    return not r.failed and r.target.startswith("sm_") and cuda_arch(r.target) in archs


def _tuned_cell(report: RunReport) -> str:
    """Kernel shapes tuned (now or before) on a GPU of a target architecture."""
    if not report.config.tuning.enabled:
        return "off"
    tunes = report.stage("tune")
    total = len(tunes) + report.untuned[1]
    if not total:
        return "-"
    return f"{sum(_tuned_on_target(report, r) for r in tunes)}/{total}"


def _build_lines(report: RunReport) -> list[str]:
    builds = report.stage("build")
    if not builds:
        return []
    archs = ", ".join(gpu_targets(report.config))
    stored = sum(r.status == SKIPPED for r in builds)
    return [f"build ({archs}): {sum(r.built for r in builds)} binaries built, "
            f"{sum(r.build_errors for r in builds)} config(s) did not build"
            + (f", {pruned} pruned before building (past the target's limits)"
               if (pruned := sum(r.pruned for r in builds)) else "")
            + f"; {stored}/{len(builds)} kernel x architecture builds were already stored"]


def _tune_lines(report: RunReport) -> list[str]:
    if not report.config.tuning.enabled:
        return ["tune: off (tuning.enabled = false)"] if report.stage("build") else []
    if report.tuning_skipped:
        kernels, shapes = report.untuned
        sizes = f" ({shapes} kernel x sizes)" if shapes != kernels else ""
        return [f"tune: skipped: no GPU workers: {kernels} kernels not tuned{sizes}; their "
                f"candidates are built; run again with GPU workers to time them"]
    tunes = report.stage("tune")
    if not tunes:
        return []
    devices = sorted({f"{r.device} ({r.target})" for r in tunes if r.device})
    speedups = [r.speedup for r in tunes if r.speedup]
    geomean = (math.exp(sum(math.log(s) for s in speedups) / len(speedups))
               if speedups else None)
    lines = [f"tune: {sum(r.timed for r in tunes)} configs timed, "
             f"{sum(r.trial_errors for r in tunes)} failed trials, on "
             f"{', '.join(devices) or 'no device'}; {report.gpu_s:.1f} GPU-s"
             + (f"; best vs default: {geomean:.2f}x geomean over {len(speedups)} kernel(s)"
                if geomean else "")]
    lines += _tune_stops(tunes)
    tuned_archs = {cuda_arch(r.target) for r in tunes if r.target.startswith("sm_")}
    for target in gpu_targets(report.config):
        if cuda_arch(target) not in tuned_archs:
            lines.append(f"tune: {target}: not tuned: no GPU of this architecture among the "
                         f"workers")
    return lines


def _tune_stops(tunes: list[TaskResult]) -> list[str]:
    """Where the tune stage saved time: searches stopped early, configs never built or run."""
    searched = [r for r in tunes if r.stop_reason]
    if not searched:
        return []
    reasons = Counter(r.stop_reason for r in searched)
    per_kernel = sum(r.gpu_seconds for r in searched) / len(searched)
    return [f"tune: {len(searched)} kernel search(es), {per_kernel:.2f} GPU-s each; stopped by "
            + ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items()))
            + f"; {sum(r.pruned for r in searched)} config(s) pruned, "
            f"{sum(r.not_reached for r in searched)} never reached; "
            f"{sum(r.from_binary for r in searched)} launched from stored binaries, "
            f"{sum(r.jit_compiled for r in searched)} JIT compiled "
            f"({sum(r.load_seconds for r in searched):.1f} s loading, not GPU-s)"]


def _relower_lines(report: RunReport) -> list[str]:
    relowers = report.stage("relower")
    if not relowers:
        return []
    devices = sorted({r.device for r in relowers if r.device})
    new = sum(r.status == OK for r in relowers)
    stored = sum(r.status == SKIPPED for r in relowers)
    return [f"tuned modules ({', '.join(devices)}): {new} new, {stored} stored or without "
            f"trials, {sum(r.failed for r in relowers)} failed; found by "
            f"Store.tuned_module(graph_key, device_name)"]


def _placement_lines(report: RunReport) -> list[str]:
    """Where each stage's tasks ran, by worker name (CPU tasks on cpu-*, tune on gpu-*)."""
    if not report.placement:
        return []
    parts = [f"{stage} " + " ".join(f"{w}:{n}" for w, n in sorted(by.items()))
             for stage, by in report.placement.items()]
    return ["workers: " + "; ".join(parts)]


def _warning_lines(results: list[TaskResult]) -> list[str]:
    return ([f"warning: {r.model}: {r.warning}" for r in results if r.warning]
            + [f"repaired: {r.model}: {r.stage}[{r.target}]: {r.repaired}" for r in results
               if r.repaired])


def _failure_lines(failures: list[TaskResult], unrecorded: int = 0) -> list[str]:
    if not failures:
        return []
    where = ("recorded in the store's failures dataset" if not unrecorded else
             "NOT recorded in the store (it could not be written)" if unrecorded >= len(failures)
             else f"{unrecorded} of them could not be recorded in the store")
    lines = ["", f"failures ({len(failures)}), {where}:"]
    for r in failures:
        first = r.message.strip().splitlines()[0] if r.message.strip() else ""
        where = f"{r.stage}[{r.target}]" if r.target else r.stage
        lines.append(f"  {r.model}: {where}: {r.error_type} after {r.attempts} attempt(s): "
                     f"{first[:300]}")
    return lines


def _file_lines(report: RunReport) -> list[str]:
    """Where the run's reports went."""
    lines = [f"dask performance report: {report.dask_report}"] if report.dask_report else []
    if report.chart_path:
        lines.append(f"time per model: {report.chart_path}")
    elif report.timeline_path:
        why = report.chart_note or "pip install 'kiln[plot]' for the chart"
        lines.append(f"time per model: {report.timeline_path} ({why}; then kiln store "
                     f"plot-run)")
    return lines


def _verdict(report: RunReport) -> str:
    if report.interrupted:
        return ("\ninterrupted: every finished record is in the store; run the same command "
                "again to resume")
    skipped = " (tuning skipped: no GPU workers)" if report.tuning_skipped else ""
    if report.nothing_new:
        captured = (f"{report.captured} model(s) captured again to compute their graph keys"
                    if report.captured else "no model was captured: each was found by its "
                    "source key" if not all(m.graph_key for m in report.config.models)
                    else "kiln relower: every graph read from the store")
        return ("\nnothing to do: every graph, module and binary was already in the store "
                f"({captured})" + skipped)
    incomplete = report.incomplete_models()
    unfinished = (f"; {len(incomplete)} model(s) incomplete (run again to finish them)"
                  if incomplete else "")
    if report.failures:
        return (f"\n{len(report.failed_models())} model(s) failed{unfinished}; the others "
                f"finished")
    if incomplete:
        return f"\n{len(incomplete)} model(s) incomplete: run again to finish them"
    return "\nall models done" + skipped
