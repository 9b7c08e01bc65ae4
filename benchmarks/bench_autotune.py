"""Autotuning sweep on one GPU: each kernel's heuristic default vs its tuned best, into a store.

For a few zoo models compiled with ``compiler.compile_module`` on CUDA, every kernel launch is
recorded at its real shapes; each kernel's pruned search space (configs/autotune/default.toml)
is planned against the trials already in the store, built for the GPU's architecture on CPU
worker processes, then measured (outputs checked against the default config's; timed with
do_bench). Binaries and trials are written to the store; a second sweep then plans again
and must time nothing. Prints a table, writes JSON and (with matplotlib) a speedup plot.

On a GPU the pipeline's tune path runs as ``kiln run`` does: the build stage first
(``build_task`` on CPU worker processes: every candidate's cubin stored), then
``tune_kernel``, which launches the stored cubins. Reported per run: GPU-s per kernel,
kernels per minute (wall and per GPU minute), configs launched from stored binaries vs JIT
compiled, and the seconds spent loading/compiling (not GPU-s). ``--compare-jit`` also tunes
the same kernels into a store without binaries, with a fresh Triton cache (every config JIT
compiled on the GPU worker: the cost before stored binaries were used).

    python benchmarks/bench_autotune.py [--models M ...] [--size bench] [--store DIR]
        [--out DIR] [--max-kernels 10] [--workers 16] [--rep-ms 100] [--dtype float32]
        [--compare-jit]

On a machine without CUDA, tuning is skipped and said so; candidates are still built for
sm_90 (``--max-builds`` of them) and stored as binaries; nothing is timed, no trial is written.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import importlib
import inspect
import json
import math
import multiprocessing
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import compiler  # noqa: E402
from compiler.autotune import (BuildResult, Config, KernelLaunch, Measurement, Target,  # noqa: E402
                               Tuner, build, candidates, device_info, load_spaces, measure,
                               plan_trials, record_launches, tune)
from compiler.autotune.spaces import canonical_json  # noqa: E402
from pipeline.shapes import KernelShape  # noqa: E402
from pipeline.tune_tasks import TuneJob, tune_kernel  # noqa: E402
from storage import BinaryRecord, Store, TrialRecord  # noqa: E402
from storage.tuning import best_config  # noqa: E402

MODELS = ("pipeline.zoo.blocks:vit_block", "pipeline.zoo.blocks:convnext_block",
          "pipeline.zoo.blocks:resnet_bottleneck", "pipeline.zoo.blocks:bert_layer",
          "wide_softmax")


# ----------------------------------------------------------------------------- launches
class WideSoftmax(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=-1)


def wide_softmax(size: str = "tiny"):
    """Softmax over rows too long to hold in registers: the zoo has no looped reduction."""
    rows, cols = {"tiny": (4, 8192), "mid": (64, 16384), "bench": (512, 32768)}[size]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return WideSoftmax().eval(), (torch.randn(rows, cols),)


def load_factory(spec: str):
    """``module:function``, or the name of a factory in this file (``wide_softmax``)."""
    if ":" not in spec:
        return globals()[spec]
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def record_model(spec: str, size: str, device: str, dtype: torch.dtype) -> tuple[object, dict]:
    """Compile one zoo model on ``device`` and record every kernel launch of one call."""
    factory = load_factory(spec)
    kwargs = {"size": size} if "size" in inspect.signature(factory).parameters else {}
    module, args = factory(**kwargs)
    module = module.to(device=device, dtype=dtype)
    args = tuple(a.to(device=device, dtype=dtype) if a.is_floating_point() else a.to(device)
                 for a in args)
    model = compiler.compile_module(module, args)
    with record_launches(model.compiled) as launches:
        model(*args)
    return model, launches


def select(launches: list[tuple[str, KernelLaunch]], limit: int) -> list[tuple[str, KernelLaunch]]:
    """Distinct (kernel, sizes), largest first, the largest of each kind ahead of the rest."""
    unique: dict[tuple[str, str], tuple[str, KernelLaunch]] = {}
    for model, launch in launches:
        key = (launch.kernel.kernel_key, canonical_json(launch.sizes()))
        unique.setdefault(key, (model, launch))
    ranked = sorted(unique.values(), key=lambda ml: -(ml[1].kernel.spec.bytes or 0))
    firsts = {}
    for item in ranked:
        firsts.setdefault(item[1].kind, item)
    ordered = list(firsts.values()) + [i for i in ranked if i not in firsts.values()]
    return ordered[:limit]


# ----------------------------------------------------------------------------- store
def done_trials(store: Store, launch: KernelLaunch, info) -> dict[str, tuple[Config, float | None]]:
    """Config key -> (config, median or None) of trials already stored for this kernel, these
    sizes and dtypes, this GPU kind, driver, clocks and versions (the pipeline's own query)."""
    from pipeline.tune_tasks import done_trials as stored
    return {config.key: (config, median) for config, median in stored(store, launch, info).items()}


def trial_rows(launch: KernelLaunch, info, measurements: list[Measurement],
               best: Measurement | None) -> list[TrialRecord]:
    return [TrialRecord.timed(
        kernel_key=launch.kernel.kernel_key, sizes=launch.sizes(), config=m.config.as_dict(),
        device_name=info.name, arch=info.arch, driver=info.driver, clocks=info.clocks,
        triton_version=triton.__version__, torch_version=torch.__version__,
        times_ms=list(m.times_ms) if m.status == "ok" else [], status=m.status,
        error=m.error, is_best=m is best, worker="bench_autotune",
        is_default=m.config == launch.default)
        for m in measurements if m.status != "not_timed"]   # nothing pretends to be timed


def binary_row(launch: KernelLaunch, result: BuildResult) -> BinaryRecord:
    return BinaryRecord.build(kernel_key=launch.kernel.kernel_key, config=result.config.as_dict(),
                              arch=result.target.arch_name, target=result.target.name,
                              triton_version=result.triton_version, cubin=result.cubin,
                              metadata=result.metadata_json)


# ----------------------------------------------------------------------------- one kernel
@dataclass
class KernelReport:
    model: str
    kernel: str
    kind: str
    sizes: dict
    candidates: int
    planned: int
    timed: int = 0
    built: int = 0
    build_failures: dict = field(default_factory=dict)
    statuses: dict = field(default_factory=dict)
    searched: str = "none"
    default_ms: float | None = None
    best_ms: float | None = None
    best_config: str | None = None
    speedup: float | None = None
    gpu_s: float = 0.0
    build_cpu_s: float = 0.0
    from_binary: int = 0
    jit_compiled: int = 0
    load_s: float = 0.0
    cubin_matches_jit: str = "n/a"


class Builder:
    """Builds on a process pool, each config once; ``gate`` for ``tune`` turns failures into
    measurements (builds the descent reaches are done when it reaches them)."""

    def __init__(self, pool: cf.Executor, launch: KernelLaunch, target: Target):
        self.pool, self.launch, self.target = pool, launch, target
        self.futures: dict[Config, cf.Future] = {}

    def submit(self, configs) -> None:
        for c in configs:
            if c not in self.futures:
                self.futures[c] = self.pool.submit(
                    build, self.launch.kernel, c, self.target, dtypes=self.launch.dtypes,
                    sizes=self.launch.int_args)

    def result(self, config: Config) -> BuildResult:
        self.submit([config])
        return self.futures[config].result()

    def gate(self, config: Config) -> Measurement | None:
        r = self.result(config)
        return None if r.ok else Measurement(config, r.status, error=r.error)

    def results(self) -> list[BuildResult]:
        return [f.result() for f in self.futures.values()]


def sweep_kernel(model: str, launch: KernelLaunch, store: Store, spaces, target: Target, info,
                 pool: cf.Executor, args) -> KernelReport:
    space = spaces[launch.kind]
    cands = candidates(space, launch.numels)
    everything = list(dict.fromkeys([launch.default, *cands]))
    done = done_trials(store, launch, info)
    todo = plan_trials(everything, done)
    report = KernelReport(model, launch.kernel.name, launch.kind, launch.sizes(), len(everything),
                          len(todo))
    if not todo:
        return report
    builder = Builder(pool, launch, target)
    descent = len(todo) > spaces.search.sweep_max
    if not descent or not info.timed:
        builder.submit(todo if info.timed else todo[:args.max_builds])
    elif launch.default in todo:
        builder.submit([launch.default])   # run ungated (the reference), but stored too
    if info.timed:
        tuner = Tuner(launch, args.device, warmup_ms=args.warmup_ms, rep_ms=args.rep_ms)
        known = {config: cost for config, cost in done.values()}
        result = tune(tuner, space, todo, spaces.search, known=known, gate=builder.gate,
                      include_default=launch.default in todo)
        best = result.best
        previous = min((c for c in known.values() if c is not None), default=None)
        mark = best if best and (previous is None or best.median_ms < previous) else None
        store.write("trials", trial_rows(launch, info, result.measurements, mark))
        report.searched = result.searched
        report.timed = sum(m.status == "ok" for m in result.measurements)
        report.gpu_s = result.seconds
        for m in result.measurements:
            report.statuses[m.status] = report.statuses.get(m.status, 0) + 1
        if result.default and result.default.status == "ok":
            report.default_ms = result.default.median_ms
        if best:
            report.best_ms, report.best_config = best.median_ms, str(best.config)
        report.speedup = result.speedup
        report.cubin_matches_jit = _cubin_check(result.measurements, builder)
    builds = builder.results()
    ok = [b for b in builds if b.ok]
    if ok:
        store.write("binaries", [binary_row(launch, b) for b in ok])
    report.built = len(ok)
    report.build_cpu_s = sum(b.seconds for b in builds)
    for b in builds:
        if not b.ok:
            report.build_failures[b.status] = report.build_failures.get(b.status, 0) + 1
    return report


def shape_of(launch: KernelLaunch) -> KernelShape:
    """The pipeline's view of a recorded launch: what a tune task is given."""
    return KernelShape(launch.kernel.kernel_key, launch.kind, launch.dtypes,
                       tuple(a.numel for a in launch.args), launch.numels, launch.size_args)


def tune_pipeline_kernel(model: str, launch: KernelLaunch, store: Store, info, args,
                         timer=None) -> KernelReport:
    """One kernel through the pipeline's tune path (``pipeline.tune_tasks.tune_kernel``:
    pruning, nearby winners, cost order, successive halving, roofline stop)."""
    shape = shape_of(launch)
    job = TuneJob(model=model, shape=shape, targets=(info.arch,), space=args.spaces,
                  budget_s=args.budget_s)
    result = tune_kernel(job, str(store.root), args.device, timer=timer)
    if result.failed:
        raise RuntimeError(f"{launch.kernel.name}: {result.error_type}: {result.message}")
    report = KernelReport(model, launch.kernel.name, launch.kind, launch.sizes(),
                          result.timed + result.pruned + result.not_reached, result.timed,
                          timed=result.timed, searched=result.stop_reason or "none",
                          speedup=result.speedup, gpu_s=result.gpu_seconds,
                          from_binary=result.from_binary, jit_compiled=result.jit_compiled,
                          load_s=result.load_seconds)
    report.statuses = {"pruned": result.pruned, "not_reached": result.not_reached}
    best = best_config(store, launch.kernel.kernel_key, info.name, launch.sizes())
    if best is not None:
        report.best_ms, report.best_config = best.median_ms, json.dumps(best.config)
    return report


def build_stage(chosen, store: Store, target: Target, args) -> float:
    """The pipeline's build stage for the chosen kernels (every candidate of the space,
    pruned first) on spawned CPU processes; returns its wall seconds."""
    from pipeline.kernel_tasks import BuildJob, build_task
    start = time.perf_counter()
    jobs = {shape_of(launch).kernel_key + shape_of(launch).digest:
            BuildJob(model=m, shape=shape_of(launch), target=target.arch_name, tuning=True,
                     space=args.spaces) for m, launch in chosen}
    ctx = multiprocessing.get_context("spawn")   # never fork a process that holds CUDA
    with cf.ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
        results = list(pool.map(build_task, jobs.values(), [str(store.root)] * len(jobs)))
    failed = [r for r in results if r.failed]
    if failed:
        raise RuntimeError(f"build stage: {failed[0].error_type}: {failed[0].message}")
    wall = time.perf_counter() - start
    print(f"build stage: {len(jobs)} kernel shape(s), {sum(r.built for r in results)} "
          f"binaries built, {sum(r.build_errors for r in results)} failed, {wall:.1f} s")
    return wall


def retime_winners(launch: KernelLaunch, configs: list[Config | None], args) -> list[float | None]:
    """The default and each given winner timed again in one Tuner (same inputs, same
    process): what each search *found*, free of the noise of each search's own timings."""
    wanted = [launch.default] + [c for c in configs if c is not None]
    result = measure(launch, wanted[1:], args.device, warmup_ms=args.warmup_ms,
                     rep_ms=args.rep_ms)
    by_config = {m.config: m.median_ms for m in result.measurements}
    return [by_config.get(c) if c is not None else None for c in [launch.default, *configs]]


def _cubin_check(measurements: list[Measurement], builder: Builder) -> str:
    """How many GPU-run binaries are byte-identical to the CPU-built ones."""
    pairs = [(m.cubin_sha256, builder.futures[m.config].result().metadata.get("cubin_sha256"))
             for m in measurements if m.cubin_sha256 and m.config in builder.futures
             and builder.futures[m.config].done()]
    return f"{sum(a == b for a, b in pairs)}/{len(pairs)}" if pairs else "n/a"


# ----------------------------------------------------------------------------- output
def print_table(reports: list[KernelReport], title: str) -> None:
    print(f"\n== {title}")
    print(f"{'kernel':44} {'kind':20} {'sizes':22} {'cand':>4} {'plan':>4} {'timed':>5} "
          f"{'default ms':>10} {'best ms':>9} {'speedup':>7}  best config")
    for r in reports:
        sizes = "x".join(str(v) for k, v in r.sizes.items() if k != "dtypes")
        fmt = lambda v: f"{v:.4f}" if v is not None else "-"
        speed = f"{r.speedup:.2f}x" if r.speedup else "-"
        print(f"{r.kernel[:44]:44} {r.kind:20} {sizes:22} {r.candidates:4} {r.planned:4} "
              f"{r.timed:5} {fmt(r.default_ms):>10} {fmt(r.best_ms):>9} {speed:>7}  "
              f"{r.best_config or '-'}")


def plot(reports: list[KernelReport], path: Path, device: str) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot (the JSON has every number)"
    rows = [r for r in reports if r.speedup]
    if not rows:
        return "no kernel was timed: no plot"
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(rows)), 4))
    ax.bar(range(len(rows)), [r.speedup for r in rows], color="tab:blue")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(rows)), [f"{r.kernel[:28]}\n{r.kind}" for r in rows], rotation=60,
                  ha="right", fontsize=7)
    ax.set_ylabel("default time / tuned time")
    ax.set_title(f"kiln autotuning speedup per kernel ({device})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return f"plot: {path}"


def geomean(values) -> float | None:
    values = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="module:factory")
    parser.add_argument("--size", default=None,
                        help="zoo size (default: bench on GPU, tiny on CPU)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--store", type=Path, default=None, help="default: a new temp dir")
    parser.add_argument("--out", type=Path, default=Path("bench-autotune-out"))
    parser.add_argument("--spaces", default="default", help="configs/autotune/NAME.toml or a path")
    parser.add_argument("--max-kernels", type=int, default=10)
    parser.add_argument("--max-builds", type=int, default=4, help="per kernel, CPU-only machines")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    parser.add_argument("--warmup-ms", type=int, default=25)
    parser.add_argument("--rep-ms", type=int, default=100)
    parser.add_argument("--budget-s", type=float, default=20.0, help="GPU-s per kernel")
    parser.add_argument("--compare-jit", action="store_true",
                        help="also tune into a store without binaries (every config JIT "
                             "compiled on the GPU worker, fresh Triton cache)")
    parser.add_argument("--baseline", action="store_true",
                        help="also run the old exhaustive sweep (equal repeats, its own store) "
                             "and time both winners again against the default")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    args.device = "cuda" if cuda else "cpu"
    size = args.size or ("bench" if cuda else "tiny")
    info = device_info(args.device)
    if cuda:
        major, minor = torch.cuda.get_device_capability()
        target = Target("cuda", 10 * major + minor, 32)
        print(f"device: {info.name} ({info.arch}), driver {info.driver}, clocks {info.clocks} "
              f"{json.dumps(info.readings)}")
    else:
        target = Target("cuda", 90, 32)
        print("no CUDA device: tuning skipped, nothing is timed and no trial is written; "
              f"candidates are still built for {target.arch_name} and stored as binaries")
    spaces = load_spaces(args.spaces)
    store = Store(args.store or tempfile.mkdtemp(prefix="kiln-autotune-"))
    print(f"store: {store.root}; triton {triton.__version__}, torch {torch.__version__}; "
          f"size {size}, {args.dtype}")

    t0 = time.perf_counter()
    recorded = []
    for spec in args.models:
        model, launches = record_model(spec, size, args.device, getattr(torch, args.dtype))
        store.put_artifact(model.compiled.artifact)
        recorded += [(spec.split(":")[-1], launch) for launch in launches.values()]
        print(f"{spec}: {len(launches)} kernels recorded")
    chosen = select(recorded, args.max_kernels)
    compile_s = time.perf_counter() - t0

    if not info.timed:   # no GPU: build candidates only, as a smoke of the build path
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
            reports = [sweep_kernel(m, launch, store, spaces, target, info, pool, args)
                       for m, launch in chosen]
        print_table(reports, "build only")
        print(f"tuning skipped (no GPU): 0 configs timed, "
              f"{store.stats().kinds['binaries'].unique_keys} binaries built for "
              f"{target.arch_name}")
        return 0

    sweeps, summary = [], {
        "device": info.name, "arch": info.arch, "driver": info.driver, "clocks": info.clocks,
        "clock_readings": info.readings, "triton": triton.__version__,
        "torch": torch.__version__, "size": size, "dtype": args.dtype, "store": str(store.root),
        "kernels": len(chosen), "record_and_compile_s": compile_s,
        "build_stage_s": build_stage(chosen, store, target, args)}
    for n in (1, 2):
        start = time.perf_counter()
        reports = [tune_pipeline_kernel(m, launch, store, info, args) for m, launch in chosen]
        sweeps.append(reports)
        wall = time.perf_counter() - start
        print_table(reports, f"pipeline tune path, run {n} ({wall:.1f} s)")
        summary[f"run{n}"] = _totals(reports, wall)
        print(cost_line(summary[f"run{n}"]))
    out = {"summary": summary, "run1": [vars(r) for r in sweeps[0]]}
    if args.compare_jit:
        summary["jit"], out["jit"] = compare_jit(chosen, store, info, args)
    if args.baseline:
        base_store = Store(str(store.root) + "-baseline")
        start = time.perf_counter()
        ctx = multiprocessing.get_context("spawn")   # never fork a process that holds CUDA
        with cf.ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
            base = [sweep_kernel(m, launch, base_store, spaces, target, info, pool, args)
                    for m, launch in chosen]
        wall = time.perf_counter() - start
        print_table(base, f"baseline: the exhaustive sweep, equal repeats ({wall:.1f} s)")
        summary["baseline"] = _totals(base, wall)
        summary["found"] = _found(chosen, sweeps[0], base, args)
        out["baseline"] = [vars(r) for r in base]
    (args.out / "bench_autotune.json").write_text(json.dumps(out, indent=2, default=str))
    print("\n" + json.dumps(summary, indent=2, default=str))
    print(plot(sweeps[0], args.out / "autotune_speedup.png", info.name))
    ok = summary["run2"]["timed"] == 0
    print(f"second run re-timed {summary['run2']['timed']} configs: "
          f"{'OK' if ok else 'UNEXPECTED'}")
    return 0 if ok else 1


KERNEL_COLUMNS = ("kernel_key", "name", "source", "meta_json")


def compare_jit(chosen, store: Store, info, args) -> tuple[dict, list]:
    """The same kernels tuned into a store holding their modules but no binaries, with a
    fresh Triton cache: every config JIT compiled on the GPU worker, as before issue 16."""
    from compiler.kernels.build import cache_dir, use_cache_dir
    from storage import KernelRecord
    bare = Store(tempfile.mkdtemp(prefix="kiln-autotune-jit-"))
    bare.write("kernels", [KernelRecord(**{k: row[k] for k in KERNEL_COLUMNS})
                           for row in store.query("kernels").to_pylist()])
    old = cache_dir()
    use_cache_dir(tempfile.mkdtemp(prefix="kiln-triton-cache-"))
    try:
        start = time.perf_counter()
        reports = [tune_pipeline_kernel(m, launch, bare, info, args) for m, launch in chosen]
        wall = time.perf_counter() - start
    finally:
        use_cache_dir(old)
    print_table(reports, f"pipeline tune path, no stored binaries: JIT ({wall:.1f} s)")
    totals = _totals(reports, wall)
    print(cost_line(totals))
    return totals, [vars(r) for r in reports]


def cost_line(totals: dict) -> str:
    """What tuning cost, in the units issue 16 sets its target in."""
    fmt = lambda v: f"{v:.2f}" if v is not None else "-"
    return (f"cost: {fmt(totals['gpu_s_per_kernel'])} GPU-s per kernel, "
            f"{fmt(totals['kernels_per_min'])} kernels/min wall, "
            f"{fmt(totals['kernels_per_gpu_minute'])} kernels per GPU minute; "
            f"{totals['from_binary']} configs launched from stored binaries, "
            f"{totals['jit_compiled']} JIT compiled, {totals['load_s']:.1f} s loading "
            f"(not GPU-s); stops {totals['stops']}")


def _totals(reports: list[KernelReport], wall_s: float) -> dict:
    gpu_s = sum(r.gpu_s for r in reports)
    stops: dict[str, int] = {}
    for r in reports:
        stops[r.searched] = stops.get(r.searched, 0) + 1
    return {"wall_s": wall_s, "gpu_s": gpu_s, "timed": sum(r.timed for r in reports),
            "gpu_s_per_kernel": gpu_s / len(reports) if reports else None,
            "kernels_per_gpu_minute": 60 * len(reports) / gpu_s if gpu_s else None,
            "kernels_per_min": 60 * len(reports) / wall_s if wall_s else None,
            "from_binary": sum(r.from_binary for r in reports),
            "jit_compiled": sum(r.jit_compiled for r in reports),
            "load_s": sum(r.load_s for r in reports),
            "geomean_speedup": geomean(r.speedup for r in reports), "stops": stops}


def _found(chosen, new: list[KernelReport], base: list[KernelReport], args) -> dict:
    """Each kernel's default, the baseline's best and the new best, timed again together."""
    rows = []
    for (_, launch), a, b in zip(chosen, new, base):
        configs = [Config.from_dict(json.loads(a.best_config)) if a.best_config else None,
                   _config_of(b.best_config)]
        default_ms, new_ms, base_ms = retime_winners(launch, configs, args)
        rows.append({"kernel": a.kernel, "default_ms": default_ms, "new_best_ms": new_ms,
                     "baseline_best_ms": base_ms})
    return {"per_kernel": rows,
            "geomean_default_over_new": geomean(r["default_ms"] / r["new_best_ms"] for r in rows
                                                if r["default_ms"] and r["new_best_ms"]),
            "geomean_default_over_baseline": geomean(
                r["default_ms"] / r["baseline_best_ms"] for r in rows
                if r["default_ms"] and r["baseline_best_ms"])}


def _config_of(text: str | None) -> Config | None:
    """A ``KernelReport.best_config`` of the baseline (``str(Config)``) read back."""
    if not text:
        return None
    values = dict(item.split("=") for item in text.split())
    return Config.from_dict(values)


if __name__ == "__main__":
    sys.exit(main())
