"""Where kiln's compile time goes: capture, lower, load and precompile, per zoo block or
per whole model of a zoo config.

For each model of ``pipeline.zoo.blocks`` (bench size, bfloat16 by default), or with
``--zoo CONFIG`` each model of that zoo TOML (``configs/zoo-vision.toml``: resnet50,
convnext_tiny, vit_b16, ...; built by ``pipeline.tasks.build_model`` at the config's sizes
and dtype; ``--models`` picks some by name):

    capture     ``compiler.capture.capture_module`` (one trace with kiln's decompositions
                for these static models, ``compiler/capture_trace.py``)
    export      the baseline for capture, timed right after it on the same model: the
                path capture took before, ``torch.export.export`` + ``run_decompositions``
                (two traces); not part of the total
    lower       ``compiler.lower(captured, target="cuda")``: kernels and wrapper source
    load        ``compiler.kernels.load.load_module`` of the source as a static-shape CUDA module
    precompile  ``compiler.kernels.precompile.precompile``: every kernel compiled for the target in
                the worker pool (``--workers``), then handed to the module's launchers (cache
                hits here); on a GPU whose torch has the generic launcher
                (``compiler.kernels.launch``) nothing more, else Triton's host launchers are
                built too (``--triton-launcher`` forces this: the baseline)

capture, lower and load run in this process, one after another (serial Python); precompile is
the parallel part: ``compiled`` distinct Triton compiles (kernels equal but for their names
share one, ``precompile.share_compiles``) spread over the workers. ``compile s`` is their sum
of worker seconds, ``max``/``median`` one compile's: the wall of precompile is at least
max(compile sum / workers, slowest compile). ``--baseline`` times every model a second time,
first, as before: each copy compiled on its own (``share=False``), capture recording
every node's stack trace (``capture_trace.StackTraces``) and lowering simplifying every
index expression anew (no ``sizevars.simplify`` memo), so before and after come from one
run on one machine state. Last, ``pool start``: the wall until ``--workers`` compile
processes started at once are ready, kiln's (Triton only, ``kernels.worker_build``) against
workers importing torch as they did before. ``export`` is timed for blocks only (for a whole model it
would be a second capture of seconds).

No GPU is needed: kiln lowers for "cuda" regardless, and Triton compiles for the target
``("cuda", 90, 32)`` (sm_90) on a CPU; with a GPU the models and inputs live on it and the
target is the card's. One-time process costs (imports, the pool's start, Triton's backend
start-up) are paid by a warm-up before the first model; each model then gets fresh, empty
compiler caches (``bench_models.fresh_cache_dirs``), so its compiles are cold in a warm
process. A model that fails is reported with its error and the run goes on.

    python benchmarks/bench_compile.py [--models bert_layer,gpt2_block] [--size bench]
        [--dtype bfloat16] [--workers N] [--triton-launcher] [--baseline] [--json out.json]
    python benchmarks/bench_compile.py --zoo configs/zoo-vision.toml
        --models resnet50,convnext_tiny,vit_b16 [--baseline] [--workers N]
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import types
import warnings
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import build, fresh_cache_dirs  # noqa: E402  (puts the repo on sys.path)
import compiler  # noqa: E402
from compiler.kernels import precompile as pc  # noqa: E402
from compiler import capture, capture_trace, sizevars  # noqa: E402
from compiler.kernels import launch as static_launch  # noqa: E402
from compiler.kernels.build import Target, current_target  # noqa: E402
from compiler.capture import capture_module  # noqa: E402
from compiler.kernels.load import load_module  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.tasks import build_model  # noqa: E402
from pipeline.zoo import blocks  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SM90 = ("cuda", 90, 32)
STAGES = ("capture_s", "lower_s", "load_s", "precompile_s")


def machine() -> dict:
    """What the numbers were measured on."""
    return {"cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "torch": torch.__version__, "triton": triton.__version__,
            "python": sys.version.split()[0]}


def compile_target():
    """The card's target, or sm_90 where there is no card."""
    if not torch.cuda.is_available():
        return SM90
    return current_target()


def time_export_capture(module, args) -> float:
    """The export path's capture of the same model (what ``capture_module`` did before the
    one-trace path), for the baseline column."""
    t0 = time.perf_counter()
    ep = torch.export.export(module, tuple(args), strict=False)
    capture.capture_exported(ep, type(module).__name__, (tuple(args), {}))
    return time.perf_counter() - t0


def time_model(module, args, target, pool, code_dir: Path, share: bool = True,
               export: bool = True) -> dict:
    """One model through every stage, each timed on its own."""
    t0 = time.perf_counter()
    captured = capture_module(module, args)
    capture_s = time.perf_counter() - t0
    # after capture: any cache it warms helps it only
    export_s = time_export_capture(module, args) if export else None
    t1 = time.perf_counter()
    artifact = compiler.lower(captured, target="cuda")
    t2 = time.perf_counter()
    loaded = load_module(artifact.source, "cuda", code_dir, static_shapes=True,
                         kernels={k.name for k in artifact.kernels})
    t3 = time.perf_counter()
    result = pc.precompile(artifact, loaded, target, code_dir, pool, share=share)
    t4 = time.perf_counter()
    each = sorted(result["compile_seconds"].values()) or [0.0]
    return {"capture_s": capture_s, "export_capture_s": export_s, "lower_s": t2 - t1,
            "load_s": t3 - t2, "precompile_s": t4 - t3, "total_s": capture_s + t4 - t1,
            "kernels": len(artifact.kernels), "precompiled": result["kernels"],
            "compiled": result["compiled"], "compile_sum_s": sum(each),
            "compile_max_s": each[-1], "compile_median_s": statistics.median(each),
            "compile_seconds": result["compile_seconds"],
            "static": result["static"], "launchers_built": result["launchers_built"],
            "errors": result["errors"]}


def warm_up(target, pool, tmp: Path) -> None:
    """Pay one-time costs (imports, Triton's backend in the pool and here) before timing."""
    fresh_cache_dirs(tmp, "warmup")
    pool.warm(target)
    code_dir = Path(tempfile.mkdtemp(prefix="warmup-code-", dir=tmp))
    x = torch.randn(1024, device="cuda" if torch.cuda.is_available() else "cpu")
    time_model(torch.nn.GELU(), (x,), target, pool, code_dir)


def time_pool_start(workers: int, target) -> dict:
    """Wall seconds until ``workers`` compile processes, started at once as a cold compile
    starts them, are ready: a real ``CompilePool`` (its workers import ``worker_build``:
    Triton, no torch) and, for the baseline, as many processes doing what a worker did
    before, importing ``build`` and ``precompile`` (torch with them); each warms Triton's
    backend for ``target``."""
    start = time.perf_counter()
    pool = pc.CompilePool(workers)
    pool.warm(target)
    kiln_s = time.perf_counter() - start
    pool.close()
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
            f"from compiler.kernels import build, precompile; "
            f"build.warm_backend({tuple(target)!r})")
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
             for _ in range(workers)]
    for proc in procs:
        proc.wait()
    return {"pool_start_s": kiln_s, "pool_start_with_torch_s": time.perf_counter() - start}


def make_model(name: str, ns: argparse.Namespace, device: str):
    """``(module, args)`` of a block at ``--size``, or of a ``--zoo`` config's model."""
    if ns.zoo is None:
        module, args, _ = build(name, ns.size, device, getattr(torch, ns.dtype))
        return module, args
    module, args, _ = build_model(ns.specs[name])
    return module.to(device), tuple(a.to(device) for a in args)


@contextlib.contextmanager
def baseline_paths(baseline: bool):
    """With ``baseline``, capture and lower as before: torch.fx records every node's stack
    trace, and every index expression is simplified anew (no ``sizevars.simplify`` memo)."""
    if not baseline:
        yield
        return
    saved = capture_trace.STACK_TRACES, sizevars._simplify_bounded
    capture_trace.STACK_TRACES = types.SimpleNamespace(off=contextlib.nullcontext)
    sizevars._simplify_bounded = saved[1].__wrapped__
    try:
        yield
    finally:
        capture_trace.STACK_TRACES, sizevars._simplify_bounded = saved


def run(ns: argparse.Namespace, tmp: Path) -> list[dict]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    target, pool = compile_target(), pc.compile_pool(ns.workers)
    warm_up(target, pool, tmp)
    rows = []
    modes = (("baseline", False), ("kiln", True)) if ns.baseline else (("kiln", True),)
    for name in ns.models:
        for mode, share in modes:
            row = {"model": name, "mode": mode}
            try:
                module, args = make_model(name, ns, device)
                dirs = fresh_cache_dirs(tmp, f"{name}-{mode}")
                code_dir = Path(dirs["KILN_CACHE_DIR"]) / "code"
                code_dir.mkdir()
                with torch.no_grad(), baseline_paths(not share):
                    row.update(time_model(module, args, target, pool, code_dir, share,
                                          export=ns.zoo is None))
            except Exception as err:  # noqa: BLE001 -- reported, and the run goes on
                traceback.print_exc()
                row["error"] = f"{type(err).__name__}: {err}"
            rows.append(row)
            print(f"  {name} ({mode}): " + (row.get("error") or f"{row['total_s']:.2f} s"),
                  flush=True)
            module = args = None
            gc.collect()
    return rows


def totals(rows: list[dict]) -> dict:
    done = [r for r in rows if "error" not in r and r["mode"] == "kiln"]
    sums = {k: sum(r[k] for r in done)
            for k in STAGES + ("total_s", "kernels", "compiled", "compile_sum_s")}
    if sums["total_s"]:
        sums.update({f"{k[:-2]}_share": sums[k] / sums["total_s"] for k in STAGES})
    return sums


def print_table(rows: list[dict], total: dict) -> None:
    head = (f"{'model':<16} {'mode':<8} {'capture':>7} {'export':>6} {'lower':>6} {'load':>5} "
            f"{'precomp':>7} {'total':>6} {'kernels':>7} {'compiled':>8} {'compile':>7} "
            f"{'max':>5} {'median':>6} {'static':>6} {'launch':>6}")
    print("\nseconds; serial: capture, lower, load; parallel: precompile (compile = sum of "
          "its worker seconds)\n" + head + "\n" + "-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<16} {r['mode']:<8} failed: {r['error']}")
            continue
        errors = f"  ({len(r['errors'])} kernel errors)" if r["errors"] else ""
        export = "" if r["export_capture_s"] is None else f"{r['export_capture_s']:.2f}"
        print(f"{r['model']:<16} {r['mode']:<8} {r['capture_s']:7.2f} {export:>6} "
              f"{r['lower_s']:6.2f} {r['load_s']:5.2f} {r['precompile_s']:7.2f} "
              f"{r['total_s']:6.2f} {r['kernels']:7d} {r['compiled']:8d} "
              f"{r['compile_sum_s']:7.2f} {r['compile_max_s']:5.2f} "
              f"{r['compile_median_s']:6.2f} {r['static']:6d} {r['launchers_built']:6d}{errors}")
    print("-" * len(head))
    print(f"{'total (kiln)':<16} {'':<8} {total['capture_s']:7.2f} {'':>6} "
          f"{total['lower_s']:6.2f} {total['load_s']:5.2f} {total['precompile_s']:7.2f} "
          f"{total['total_s']:6.2f} {total['kernels']:7d} {total['compiled']:8d} "
          f"{total['compile_sum_s']:7.2f}")
    if total["total_s"]:
        print(f"{'share':<16} {'':<8} {total['capture_share']:7.0%} {'':>6} "
              f"{total['lower_share']:6.0%} {total['load_share']:5.0%} "
              f"{total['precompile_share']:7.0%}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", help=f"comma-separated subset of {','.join(blocks.MODELS)}, "
                                    "or of the --zoo config's models (default: all)")
    p.add_argument("--size", choices=blocks.SIZES, default="bench")
    p.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    p.add_argument("--workers", type=int, default=pc.default_workers(),
                   help="compile worker processes (default: one per core, up to 16)")
    p.add_argument("--triton-launcher", action="store_true",
                   help="baseline: launch through Triton's own host launchers, built by gcc")
    p.add_argument("--zoo", type=Path, metavar="CONFIG",
                   help="whole models of this zoo TOML instead of the blocks (at its sizes "
                        "and dtypes; --size and --dtype do not apply)")
    p.add_argument("--baseline", action="store_true",
                   help="also time each model with every kernel copy compiled on its own")
    p.add_argument("--json", type=Path, help="write the machine, rows and totals here")
    ns = p.parse_args(argv)
    if ns.zoo is not None:
        ns.specs = {spec.name: spec for spec in load_config(ns.zoo).models}
    known = list(ns.specs) if ns.zoo is not None else list(blocks.MODELS)
    picked = [m for m in ns.models.split(",") if m] if ns.models else known
    unknown = [m for m in picked if m not in known]
    if unknown:
        p.error(f"unknown models {unknown}; known: {known}")
    ns.models = picked
    return ns


def main(argv=None) -> int:
    ns = parse_args(argv)
    if ns.triton_launcher:   # as on a torch without the generic launcher (this process only)
        static_launch._impl = lambda: None
    host = machine()
    print(f"machine: {host['cpus']} CPUs, GPU {host['gpu'] or 'none'}, torch {host['torch']}, "
          f"triton {host['triton']}, python {host['python']}")
    launcher = "generic (torch)" if static_launch.available() else "Triton's, built by gcc"
    what = f"zoo {ns.zoo}" if ns.zoo else f"size {ns.size}, {ns.dtype}"
    print(f"target {compile_target()}, {what}, {ns.workers} workers, "
          f"launcher {launcher}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-compile-") as tmp, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = run(ns, Path(tmp))
        target = tuple(dataclasses.astuple(Target.of(compile_target())))
        starts = time_pool_start(ns.workers, target)
    total = totals(rows)
    print_table(rows, total)
    print(f"\npool start, {ns.workers} workers at once, ready to compile: "
          f"{starts['pool_start_s']:.2f} s (kiln's workers: Triton only); "
          f"{starts['pool_start_with_torch_s']:.2f} s (baseline: workers importing torch)")
    if ns.json:
        ns.json.parent.mkdir(parents=True, exist_ok=True)
        ns.json.write_text(json.dumps({"machine": host, "target": compile_target(),
                                       "zoo": str(ns.zoo) if ns.zoo else None,
                                       "size": ns.size, "dtype": ns.dtype,
                                       "workers": ns.workers,
                                       "static_launch": static_launch.available(),
                                       "rows": rows, "totals": total, **starts},
                                      indent=2))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
