"""``kiln bench CONFIG``: every model of a zoo under eager, torch.compile's modes and kiln's
variants, each in a fresh process with fresh caches; rows into the store (kind "bench"),
a markdown report with PNG plots into ``--out``.

    kiln bench CONFIG [--store PATH] [--out DIR] [--systems a,b] [--models a,b] [--quick]
                      [--max-autotune] [--device cuda|cpu] [--repeats N] [--budget-s S]
                      [--timeout-s S] [--resume RUN_ID]

``--resume RUN_ID`` adds to an earlier run in the same store (same zoo, mode and card): the
pairs it holds as ok are not run again, and the report covers the whole run, so a zoo too
large for one session's time budget is finished over several.

Without CUDA it runs on the CPU (eager against kiln; kiln's kernels under Triton's
interpreter: the numbers check the path, not speed) and reports the GPU-only systems as
skipped. Exit status: 0 when every system that ran succeeded, 1 when one failed, 2 for a
bad command line or config.

Example:
    >>> from pipeline.bench.cli import parse
    >>> parse(["configs/zoo-tiny.toml", "--quick"]).repeats is None
    True
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence, TextIO

from .systems import SYSTEMS, System, select

if TYPE_CHECKING:
    from .resume import Prior
    from .run import BenchPlan

DEFAULT_STORE = "./kiln-store"
# --quick: fewer timed calls, a smaller tuning budget, no child started after the budget and
# none running past it by more than a minute (``BenchPlan.child_timeout``), so a run ends
# within 8 minutes; on a large zoo what did not fit is listed as skipped.
# profile_calls: calls under torch.profiler for the kernel counts and per-kernel times.
QUICK = {"repeats": 20, "warmup": 3, "budget_s": 390.0, "tune_budget_s": 30.0,
         "profile_calls": 1}
FULL = {"repeats": 100, "warmup": 10, "budget_s": float("inf"), "tune_budget_s": 300.0,
        "profile_calls": 3}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kiln bench", description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="zoo TOML file")
    p.add_argument("--store", help=f"store for the rows (default: the config's, else "
                                   f"{DEFAULT_STORE})")
    p.add_argument("--out", type=Path, help="report directory (default: "
                                            "STORE/reports/bench-RUN_ID)")
    p.add_argument("--systems", help=f"comma-separated, of: {', '.join(SYSTEMS)}")
    p.add_argument("--models", help="comma-separated subset of the zoo's models")
    p.add_argument("--quick", action="store_true", help="the quick system set, fewer repeats, "
                   f"and no new child after {QUICK['budget_s']:.0f} s")
    p.add_argument("--max-autotune", action="store_true",
                   help="also torch.compile mode=max-autotune")
    p.add_argument("--same-process", action="store_true",
                   help="each untuned kiln row also times its baseline (torch.compile default, "
                   "or reduce-overhead for CUDA graphs) in its own child, alternating blocks "
                   "of calls: a ratio free of process-to-process host noise, in the row's "
                   "notes and the progress line (the baseline compiles once more per row)")
    p.add_argument("--device", choices=("cuda", "cpu"),
                   help="default: cuda when available, else cpu")
    p.add_argument("--repeats", type=int, help="timed calls per system")
    p.add_argument("--budget-s", type=float, help="start no child after this many seconds")
    p.add_argument("--timeout-s", type=float, default=900.0, help="one child's limit")
    p.add_argument("--resume", metavar="RUN_ID", help="add to this run of the store: run only "
                   "the pairs without an ok row; the report covers the whole run")
    return p


def parse(argv: Sequence[str]) -> argparse.Namespace:
    return _parser().parse_args(list(argv))


def _header(plan, run_id: str, store: str) -> dict[str, str]:
    from .run import device_name, versions
    v = versions()
    return {"config": plan.config_name, "run": run_id, "card": device_name(plan.device),
            "versions": f"kiln {v['compiler_version']}, torch {v['torch_version']}, triton "
                        f"{v['triton_version']}, python {platform.python_version()}",
            "mode": "quick" if plan.quick else "full",
            "timing": f"{plan.repeats} calls after {plan.warmup} warm-up calls",
            "systems": ", ".join(s.name for s in plan.systems), "store": store}


def bench_main(argv: Sequence[str], out: TextIO, err: TextIO,
               registry: Mapping[str, System] = SYSTEMS) -> int:
    """``kiln bench``; returns the exit status. ``registry``: the systems to choose from."""
    from pipeline.cli import store_problem
    from pipeline.config import ConfigError, load_config
    from storage import Store

    from .run import new_run_id, plan_models, run_bench
    args = parse(argv)
    try:
        config = load_config(args.config)
        systems = select(args.systems.split(",") if args.systems else None, args.quick,
                         args.max_autotune, registry)
        models = plan_models(config, args.models.split(",") if args.models else None)
    except (ConfigError, ValueError) as exc:
        err.write(f"kiln bench: error: {exc}\n")
        return 2
    store = args.store or config.store or DEFAULT_STORE
    problem = store_problem(store)
    if problem:
        err.write(f"kiln bench: error: {problem}\n")
        return 2
    import torch
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        err.write("kiln bench: error: --device cuda, and CUDA is not available\n")
        return 2
    plan = _plan(args, config.name, models, tuple(systems), device)
    run_id = args.resume or new_run_id()
    prior = _prior(Store(store), args.resume, plan)
    if isinstance(prior, str):
        err.write(f"kiln bench: error: {prior}\n")
        return 2
    records = run_bench(plan, Store(store), run_id, err, prior=prior)
    rows = _ordered(prior.merged(records), [m.name for m in config.models], list(registry))
    report = _write_report(rows, plan, run_id, store, args.out, registry)
    failed = [r for r in records if r.status == "error"]
    whole = (f"; the run holds {len(rows)} ({sum(r.status == 'ok' for r in rows)} ok)"
             if args.resume else "")
    out.write(f"kiln bench: {len(records)} rows ({sum(r.status == 'ok' for r in records)} ok, "
              f"{len(failed)} failed, {sum(r.status == 'skipped' for r in records)} skipped) "
              f"in {store} (run {run_id}{whole}); report: {report}\n")
    return 1 if failed else 0


def _plan(args: argparse.Namespace, config_name: str, models: tuple[str, ...],
          systems: tuple[System, ...], device: str) -> "BenchPlan":
    from .run import BenchPlan
    knobs = QUICK if args.quick else FULL
    return BenchPlan(str(args.config), config_name, models, systems, device, args.quick,
                     args.repeats or knobs["repeats"], knobs["warmup"],
                     args.budget_s if args.budget_s is not None else knobs["budget_s"],
                     args.timeout_s, knobs["tune_budget_s"], knobs["profile_calls"],
                     args.same_process)


def _prior(store: Any, run_id: str | None, plan: "BenchPlan") -> "Prior | str":
    """The rows ``--resume`` adds to (empty without it), or why it cannot."""
    from .resume import Prior, mismatch, read_run
    from .run import device_name
    if run_id is None:
        return Prior()
    records = read_run(store, run_id)
    if not records:
        return f"--resume {run_id}: no bench rows of that run in {store.root}"
    why = mismatch(records, plan.config_name, plan.quick, device_name(plan.device))
    return f"--resume: {why}" if why else Prior.of(records)


def _ordered(records: list, models: list[str], systems: list[str]) -> list:
    """``records`` by the zoo's model order, then the registry's system order."""
    def rank(names: list[str], name: str) -> int:
        return names.index(name) if name in names else len(names)
    return sorted(records, key=lambda r: (rank(models, r.model), rank(systems, r.system)))


def _write_report(records: list, plan: "BenchPlan", run_id: str, store: str, out_dir: Path | None,
                  registry: Mapping[str, System]) -> Path:
    """``report.md``, ``rows.json`` and the plots of ``records``; the report's path."""
    from .plots import write_plots
    from .report import markdown
    rows = [{k: v for k, v in vars(r).items() if k not in ("timestamp",)} for r in records]
    report_dir = out_dir or Path(store) / "reports" / f"bench-{run_id}"
    report_dir.mkdir(parents=True, exist_ok=True)
    header = _header(plan, run_id, store)
    plots, note = write_plots(rows, report_dir, f"{plan.config_name} on {header['card']}")
    text = markdown(rows, header, {s.name: s.baseline for s in registry.values()}, plots, note)
    (report_dir / "report.md").write_text(text)
    (report_dir / "rows.json").write_text(json.dumps(rows, indent=1, default=str))
    return report_dir / "report.md"


if __name__ == "__main__":
    sys.exit(bench_main(sys.argv[1:], sys.stdout, sys.stderr))
