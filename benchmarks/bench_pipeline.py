"""Pipeline throughput and the tuning stage's scaling over GPUs, on this machine.

Runs a zoo config (default configs/zoo-vision.toml) with ``kiln run``'s own runner once per
GPU count asked for (``--gpus 1 2``: one after another, in one invocation), each into a fresh
store, on the default embedded layout: CPU-only worker processes (resource CPU=1: capture,
lower, build, relower) feeding one GPU worker per card (resource GPU=1: tune only). Where each
stage's tasks really ran is printed from the run's placement, so the layout is checked, not
assumed. Before the measured runs a warm-up run (into a throwaway store, with the most GPUs
asked for) fills Triton's compile caches, so every measured run finds them equally warm.

Per run it prints wall time, the tune stage's span (first tune task submitted to last
finished), configs timed, kernels tuned/min, graphs/min, kernels built/min and GPU-seconds;
then the tuning stage's scaling efficiency (T1 / Tn) / n against the 1-GPU run, and the same
normalized by configs timed (a time budget can time slightly different numbers of configs).

    python benchmarks/bench_pipeline.py [CONFIG] [--gpus 1 2] [--models resnet50 vit_s16]
        [--budget-s 2] [--workers 12] [--no-warmup] [--out bench-pipeline-out]

The defaults (ResNet-50 and ViT-S/16 at batch 32, 2 GPU-s of tuning per kernel shape,
warm-up + 1-GPU + 2-GPU runs) aim at about 8 minutes on a 16-core H100 host, an estimate not
yet timed; ``--models all`` and a larger ``--budget-s`` measure more, for longer.

Without a GPU it runs once with 0 GPU workers: everything is captured, lowered and built,
nothing is timed, and it says so (``configs/zoo-tiny-tune.toml`` checks this on a laptop).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipeline.cluster import visible_gpus  # noqa: E402
from pipeline.config import RunConfig, load_config  # noqa: E402
from pipeline.report import RunReport, format_summary  # noqa: E402
from pipeline.runner import run_zoo  # noqa: E402

DEFAULT_CONFIG = "configs/zoo-vision.toml"
DEFAULT_MODELS = ("resnet50", "vit_s16")


def configure(config: RunConfig, models: list[str] | None, budget_s: float | None,
              workers: int | None, gpus: int) -> RunConfig:
    """``config`` narrowed to ``models`` (names; all when None), with the tuning budget, CPU
    workers and GPU workers given."""
    chosen = config.models
    if models:
        unknown = sorted(set(models) - {m.name for m in config.models})
        if unknown:
            raise SystemExit(f"bench_pipeline: no model named {', '.join(unknown)} in "
                             f"{config.path}; it has {', '.join(m.name for m in config.models)}")
        chosen = tuple(m for m in config.models if m.name in models)
    tuning = config.tuning if budget_s is None else dataclasses.replace(config.tuning,
                                                                        budget_s=budget_s)
    cluster = dataclasses.replace(config.cluster, gpus=gpus,
                                  workers=workers or config.cluster.workers)
    return dataclasses.replace(config, models=chosen, tuning=tuning, cluster=cluster)


def run_once(config: RunConfig, store: Path, log: Path) -> tuple[RunReport, float]:
    start = time.perf_counter()
    with open(log, "w") as out:
        report = run_zoo(config, str(store), out=out, live=False)
        out.write(format_summary(report) + "\n")
    return report, time.perf_counter() - start


def measure(report: RunReport, total_s: float, gpus: int) -> dict:
    t = report.throughput()
    tunes = report.stage("tune")
    return {"gpus": gpus, "wall_s": total_s, "run_s": t.wall_s, "tune_stage_s": t.tune_stage_s,
            "configs_timed": t.configs_timed, "kernels_tuned": t.kernels_tuned,
            "tuned_per_min": t.tuned_per_min, "graphs": t.graphs,
            "graphs_per_min": t.graphs_per_min, "kernels_built": t.kernels_built,
            "built_per_min": t.built_per_min, "gpu_s": t.gpu_s,
            "configs_per_s": t.configs_timed / t.tune_stage_s if t.tune_stage_s else 0.0,
            "devices": sorted({r.device for r in tunes if r.device}),
            "tuned_modules": sum(r.status == "ok" for r in report.stage("relower")),
            "failures": len(report.failures), "placement": report.placement,
            "exit_code": report.exit_code}


def layout_check(placement: dict[str, dict[str, int]]) -> str:
    """Where tasks ran, and whether that is the CPU-feeds-GPU layout."""
    on_gpu = {s: n for s, by in placement.items() if s != "tune"
              for w, n in by.items() if w.startswith("gpu-")}
    off_gpu = sum(n for w, n in placement.get("tune", {}).items() if not w.startswith("gpu-"))
    where = "; ".join(f"{s}: " + ", ".join(f"{w} x{n}" for w, n in sorted(by.items()))
                      for s, by in placement.items())
    ok = not on_gpu and not off_gpu
    tuned = ", GPU workers only tuned" if placement.get("tune") else " (no tune task ran)"
    verdict = (f"OK: CPU-only workers did every capture/lower/build/relower{tuned}" if ok
               else f"NOT the intended layout: {on_gpu or ''} "
               f"{f'{off_gpu} tune tasks off GPU workers' if off_gpu else ''}")
    return f"  ran on: {where}\n  layout: {verdict}"


def print_runs(rows: list[dict]) -> None:
    print(f"\n{'GPUs':>4} {'wall s':>7} {'tune s':>7} {'configs':>8} {'tuned':>6} "
          f"{'tuned/min':>9} {'cfg/s':>7} {'graphs/min':>10} {'built/min':>9} {'GPU-s':>7} "
          f"{'modules':>7} {'failed':>6}")
    for r in rows:
        print(f"{r['gpus']:>4} {r['wall_s']:>7.1f} {r['tune_stage_s']:>7.1f} "
              f"{r['configs_timed']:>8} {r['kernels_tuned']:>6} {r['tuned_per_min']:>9.1f} "
              f"{r['configs_per_s']:>7.1f} {r['graphs_per_min']:>10.2f} "
              f"{r['built_per_min']:>9.1f} {r['gpu_s']:>7.1f} {r['tuned_modules']:>7} "
              f"{r['failures']:>6}")


def scaling(rows: list[dict]) -> list[str]:
    base = next((r for r in rows if r["gpus"] == 1 and r["tune_stage_s"] > 0), None)
    if base is None:
        return []
    lines = []
    for r in rows:
        if r["gpus"] > 1 and r["tune_stage_s"] > 0:
            eff = base["tune_stage_s"] / r["tune_stage_s"] / r["gpus"]
            norm = (r["configs_per_s"] / base["configs_per_s"] / r["gpus"]
                    if base["configs_per_s"] else 0.0)
            lines.append(f"tuning stage scaling efficiency at {r['gpus']} GPUs: (T1/T{r['gpus']})"
                         f"/{r['gpus']} = ({base['tune_stage_s']:.1f}/{r['tune_stage_s']:.1f})"
                         f"/{r['gpus']} = {eff:.2f}; per config timed: {norm:.2f} "
                         f"(target >= 0.9)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2],
                        help="GPU worker counts, one run each (default: 1 2)")
    parser.add_argument("--models", nargs="+", default=None,
                        help=f"model names of the config (default for the vision zoo: "
                             f"{' '.join(DEFAULT_MODELS)}; 'all' for every model)")
    parser.add_argument("--budget-s", type=float, default=2.0,
                        help="tuning budget, GPU-s per kernel shape (default 2; 0: the "
                             "config's)")
    parser.add_argument("--workers", type=int, default=None,
                        help="CPU worker processes (default: the config's, or the cores less "
                             "4 up to 12 where that is more)")
    parser.add_argument("--no-warmup", action="store_true",
                        help="skip the warm-up run (Triton caches may then favour later runs)")
    parser.add_argument("--out", type=Path, default=Path("bench-pipeline-out"))
    args = parser.parse_args(argv)
    config = load_config(args.config)
    args.budget_s = args.budget_s or None
    args.workers = args.workers or max(config.cluster.workers, min(12, (os.cpu_count() or 1) - 4))
    models = args.models
    if models is None and Path(args.config).name == Path(DEFAULT_CONFIG).name:
        models = list(DEFAULT_MODELS)
    if models == ["all"]:
        models = None
    args.out.mkdir(parents=True, exist_ok=True)
    stores = Path(tempfile.mkdtemp(prefix="stores-", dir=args.out))
    visible = visible_gpus()
    counts = [n for n in args.gpus if n <= visible]
    if not visible:
        print("no GPU visible: one run with 0 GPU workers; every candidate is built, NOTHING "
              "is timed (tune stage skipped), no tuned module is made")
        counts = [0]
    for n in sorted(set(args.gpus) - set(counts) - {0}) if visible else []:
        print(f"--gpus {n}: skipped, only {visible} GPU(s) visible")
    first = configure(config, models, args.budget_s, args.workers, max(counts))
    print(f"{first.name}: {len(first.models)} model(s) ({', '.join(m.name for m in first.models)})"
          f"; targets {', '.join(first.targets)}; tuning {'on' if first.tuning.enabled else 'off'}"
          f", budget {first.tuning.budget_s:g} GPU-s per kernel shape; "
          f"{first.cluster.workers} CPU workers (resource CPU=1: capture, lower, build, "
          f"relower) feeding GPU workers (resource GPU=1: tune only), the default embedded "
          f"layout; stores under {stores}")
    if counts != [0] and not args.no_warmup:
        _, seconds = run_once(first, stores / "warmup", args.out / "warmup.log")
        print(f"warm-up run ({max(counts)} GPU(s), throwaway store): {seconds:.1f} s")
    rows = []
    for n in counts:
        config_n = configure(config, models, args.budget_s, args.workers, n)
        report, seconds = run_once(config_n, stores / f"gpus-{n}", args.out / f"gpus-{n}.log")
        row = measure(report, seconds, n)
        rows.append(row)
        print(f"run with {n} GPU worker(s): exit {report.exit_code}, {seconds:.1f} s; log "
              f"{args.out / f'gpus-{n}.log'}\n{layout_check(report.placement)}")
        if n == 0:
            untuned = report.untuned
            print(f"  tuning skipped (no GPU): {untuned[0]} kernels ({untuned[1]} kernel x "
                  f"sizes) built but not timed; 0 configs timed")
    print_runs(rows)
    lines = scaling(rows)
    print("\n".join(lines) if lines else "scaling: needs a 1-GPU and a multi-GPU run")
    (args.out / "bench_pipeline.json").write_text(json.dumps(
        {"config": args.config, "models": [m.name for m in first.models],
         "budget_s": first.tuning.budget_s, "runs": rows, "scaling": lines}, indent=2))
    return 0 if all(r["exit_code"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
