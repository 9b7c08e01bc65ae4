"""Per model on one GPU: eager vs untuned kiln vs tuned kiln vs ``torch.compile`` max-autotune.

Every model of the zoo is compiled with kiln's heuristic launch configs and timed; each
distinct kernel (kernel key and sizes: a kernel met in several models is tuned once) is then
tuned by the pipeline's tune path (``--search pipeline``, the default: pruning, cost order,
successive halving, roofline stop) or swept over its search space with
``benchmarks/bench_autotune.sweep_kernel`` (``--search sweep``: builds on CPU worker
processes, equal repeats; every trial written to a store); each model is compiled
again with the best stored config per kernel and timed; finally Inductor's max-autotune
compiles each model (fresh caches) and is timed. All in one process, on one card. Reports
runtime ratios over eager, the GPU-seconds the sweep spent, Inductor's compile-and-tune wall
time, and how many kernels were shared across models.

    python benchmarks/bench_tuned_models.py [--models resnet_bottleneck,bert_layer]
        [--no-max-autotune] [--store DIR] [--json out.json] [--rep-ms 100]
    python benchmarks/bench_tuned_models.py --replot out.json --png tuning.png

Needs CUDA. kiln runs with its defaults (CUDA graphs on); max-autotune also uses CUDA graphs.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import copy
import dataclasses
import json
import math
import multiprocessing
import os
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import compiler  # noqa: E402
from bench_autotune import plot, sweep_kernel, tune_pipeline_kernel  # noqa: E402
from bench_models import fresh_cache_dirs, forget_inductor_memory  # noqa: E402
from compiler.autotune import Target, device_info, load_spaces, record_launches  # noqa: E402
from compiler.autotune.spaces import canonical_json  # noqa: E402
from pipeline.zoo import blocks  # noqa: E402
from storage import Store  # noqa: E402
from storage.tuning import best_config  # noqa: E402


def build(name: str, dtype: torch.dtype):
    module, args = blocks.MODELS[name]("bench")
    args = tuple(a.cuda().to(dtype) if a.is_floating_point() else a.cuda() for a in args)
    return module.cuda().to(dtype).eval(), args


def timed(fn, rep_ms: int) -> float:
    return triton.testing.do_bench(fn, warmup=25, rep=rep_ms, return_mode="median")


def best_configs(store: Store, launches: list, device_name: str) -> dict[str, dict]:
    """The best stored config of each launched kernel on this GPU kind, at the sizes this
    model launches it with (``storage.tuning.best_config``)."""
    found = {}
    for launch in launches:
        best = best_config(store, launch.kernel.kernel_key, device_name, launch.sizes())
        if best is not None:
            found[launch.kernel.kernel_key] = best.config
    return found


def kiln_phase(names, dtype, rep_ms):
    """Eager and untuned kiln per model; the kernel launches each model's call made."""
    rows, launches = {}, {}
    for name in names:
        module, args = build(name, dtype)
        with torch.no_grad():
            eager_ms = timed(lambda: module(*args), rep_ms)
            fn = compiler.compile_module(copy.deepcopy(module), args)
            with record_launches(fn.compiled) as recorded:
                fn(*args)
            fn(*args)
            rows[name] = {"model": name, "eager_ms": eager_ms, "kernels": fn.kernel_count,
                          "untuned_ms": timed(lambda: fn(*args), rep_ms)}
        launches[name] = list(recorded.values())
        print(f"{name}: eager {eager_ms:.3f} ms, kiln untuned {rows[name]['untuned_ms']:.3f} ms, "
              f"{len(launches[name])} kernel launches", flush=True)
    return rows, launches


def sweep(launches: dict, store: Store, info, workers: int, ns) -> tuple[list, float]:
    """Tune every distinct (kernel, sizes) once; returns the reports and wall seconds."""
    distinct = {}
    for name, ls in launches.items():
        for launch in ls:
            distinct.setdefault((launch.kernel.kernel_key, canonical_json(launch.sizes())),
                                (name, launch))
    major, minor = torch.cuda.get_device_capability()
    target, spaces = Target("cuda", 10 * major + minor, 32), load_spaces()
    if ns.max_configs:   # a smaller search per kernel: sweep up to N, else descend N steps
        search = dataclasses.replace(spaces.search, sweep_max=ns.max_configs,
                                     descent_budget=ns.max_configs)
        spaces = dataclasses.replace(spaces, search=search)
    ns.device, ns.max_builds, ns.warmup_ms = "cuda", 0, 25
    start = time.perf_counter()
    if ns.search == "pipeline":   # the tune stage's own path: pruning, halving, roofline stop
        ns.spaces, ns.budget_s = "default", 20.0
        reports = [tune_pipeline_kernel(name, launch, store, info, ns)
                   for name, launch in distinct.values()]
        return reports, time.perf_counter() - start
    with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        reports = [sweep_kernel(name, launch, store, spaces, target, info, pool, ns)
                   for name, launch in distinct.values()]
    return reports, time.perf_counter() - start


def tuned_phase(rows: dict, launches: dict, store: Store, info, dtype, rep_ms) -> None:
    for name, row in rows.items():
        keys = {launch.kernel.kernel_key for launch in launches[name]}
        configs = best_configs(store, launches[name], info.name)
        module, args = build(name, dtype)
        with torch.no_grad():
            fn = compiler.compile_module(module, args, configs=configs)
            fn(*args)
            row["tuned_ms"] = timed(lambda: fn(*args), rep_ms)
        row["tuned_kernels"] = sum(1 for k in keys if k in configs)
        print(f"{name}: kiln tuned {row['tuned_ms']:.3f} ms ({row['tuned_kernels']} of "
              f"{len(keys)} kernels with a tuned config)", flush=True)


def max_autotune_phase(rows: dict, dtype, rep_ms, tmp: Path, budget_s: float) -> None:
    start = time.perf_counter()
    for name, row in rows.items():
        if time.perf_counter() - start > budget_s:
            row["max_autotune_error"] = f"skipped: past --max-autotune-budget-s {budget_s:.0f}"
            print(f"{name}: max-autotune skipped (time budget)", flush=True)
            continue
        module, args = build(name, dtype)
        fresh_cache_dirs(tmp, f"{name}-max-autotune")
        forget_inductor_memory()
        try:
            with torch.no_grad():
                start = time.perf_counter()
                fn = torch.compile(module, mode="max-autotune")
                fn(*args)
                torch.cuda.synchronize()
                row["max_autotune_compile_s"] = time.perf_counter() - start
                fn(*args)
                row["max_autotune_ms"] = timed(lambda: fn(*args), rep_ms)
        except Exception as err:  # noqa: BLE001 -- reported per model, the others go on
            row["max_autotune_error"] = f"{type(err).__name__}: {str(err)[:200]}"
        torch._dynamo.reset()
        print(f"{name}: max-autotune {row.get('max_autotune_ms', float('nan')):.3f} ms after "
              f"{row.get('max_autotune_compile_s', float('nan')):.1f} s", flush=True)


def geomean(values) -> float | None:
    values = [v for v in values if v]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def report(rows: dict, reports: list, sweep_s: float, launches: dict, info) -> dict:
    total = sum(len(ls) for ls in launches.values())
    summary = {
        "card": info.name, "clocks": info.clocks, "torch": torch.__version__,
        "triton": triton.__version__, "kernel_launches": total, "distinct_kernels": len(reports),
        "shared_kernels_tuned_once": total - len(reports),
        "configs_timed": sum(r.timed for r in reports),
        "tune_gpu_s": sum(r.gpu_s for r in reports), "tune_wall_s": sweep_s,
        "build_cpu_s": sum(r.build_cpu_s for r in reports),
    }
    print(f"\ncard: {info.name} (clocks {info.clocks}), torch {torch.__version__}, "
          f"triton {triton.__version__}; bf16, bench sizes")
    print(f"{'model':<20}{'eager ms':>10}{'untuned':>9}{'tuned':>9}{'max-at':>9}"
          f"{'untuned x':>11}{'tuned x':>9}{'max-at x':>10}{'max-at s':>10}")
    for r in rows.values():
        e = r["eager_ms"]
        for k in ("untuned", "tuned", "max_autotune"):
            if f"{k}_ms" in r:
                r[f"{k}_speedup"] = e / r[f"{k}_ms"]
        print(f"{r['model']:<20}{e:>10.3f}{r['untuned_ms']:>9.3f}{r.get('tuned_ms', math.nan):>9.3f}"
              f"{r.get('max_autotune_ms', math.nan):>9.3f}{r.get('untuned_speedup', math.nan):>11.2f}"
              f"{r.get('tuned_speedup', math.nan):>9.2f}{r.get('max_autotune_speedup', math.nan):>10.2f}"
              f"{r.get('max_autotune_compile_s', math.nan):>10.1f}")
    for k in ("untuned", "tuned", "max_autotune"):
        summary[f"{k}_geomean_speedup"] = geomean(r.get(f"{k}_speedup") for r in rows.values())
    summary["max_autotune_compile_s_total"] = sum(r.get("max_autotune_compile_s", 0)
                                                  for r in rows.values())
    print(json.dumps(summary, indent=2))
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(blocks.MODELS))
    p.add_argument("--max-autotune", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--store", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--rep-ms", type=int, default=100)
    p.add_argument("--max-configs", type=int, default=0,
                   help="--search sweep, per kernel: sweep at most N candidates, else coordinate descent of "
                        "N timings (default: the space's own [search] limits)")
    p.add_argument("--search", choices=["pipeline", "sweep"], default="pipeline",
                   help="pipeline: the tune stage's path (pipeline/tune_tasks.py); sweep: "
                        "the exhaustive equal-repeats sweep of bench_autotune.sweep_kernel")
    p.add_argument("--max-autotune-budget-s", type=float, default=420,
                   help="start no max-autotune compile after this many seconds")
    p.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    p.add_argument("--replot", type=Path, default=None,
                   help="only draw the per-kernel speedup PNG from a --json file written "
                        "earlier (e.g. on a GPU machine without matplotlib)")
    p.add_argument("--png", type=Path, default=Path("tuning_speedup.png"))
    ns = p.parse_args(argv)
    if ns.replot:
        doc = json.loads(ns.replot.read_text())
        reports = [types.SimpleNamespace(**k) for k in doc["kernels"]]
        print(plot(reports, ns.png, doc["summary"]["card"]))
        return 0
    if not torch.cuda.is_available():
        print("bench_tuned_models: needs a CUDA GPU; nothing was timed")
        return 2
    warnings.simplefilter("ignore")
    names = [m for m in ns.models.split(",") if m]
    info = device_info("cuda")
    store = Store(ns.store or tempfile.mkdtemp(prefix="kiln-tuned-"))
    rows, launches = kiln_phase(names, torch.bfloat16, ns.rep_ms)
    reports, sweep_s = sweep(launches, store, info, ns.workers, ns)
    print(f"sweep: {len(reports)} distinct kernels, {sum(r.timed for r in reports)} configs "
          f"timed, {sum(r.gpu_s for r in reports):.1f} GPU-s, {sweep_s:.1f} s wall", flush=True)
    tuned_phase(rows, launches, store, info, torch.bfloat16, ns.rep_ms)
    if ns.max_autotune:
        with tempfile.TemporaryDirectory(prefix="max-autotune-") as tmp:
            max_autotune_phase(rows, torch.bfloat16, ns.rep_ms, Path(tmp),
                               ns.max_autotune_budget_s)
    summary = report(rows, reports, sweep_s, launches, info)
    print(plot(reports, ns.png, info.name))
    if ns.json:
        ns.json.write_text(json.dumps({"summary": summary, "rows": list(rows.values()),
                                       "kernels": [vars(r) for r in reports]},
                                      indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
