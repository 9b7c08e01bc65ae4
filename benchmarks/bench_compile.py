"""Where kiln's compile time goes: capture, lower, load and precompile, per zoo block.

For each model of ``pipeline.zoo.blocks`` (bench size, bfloat16 by default):

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

No GPU is needed: kiln lowers for "cuda" regardless, and Triton compiles for the target
``("cuda", 90, 32)`` (sm_90) on a CPU; with a GPU the models and inputs live on it and the
target is the card's. One-time process costs (imports, the pool's start, Triton's backend
start-up) are paid by a warm-up before the first model; each model then gets fresh, empty
compiler caches (``bench_models.fresh_cache_dirs``), so its compiles are cold in a warm
process. A model that fails is reported with its error and the run goes on.

    python benchmarks/bench_compile.py [--models bert_layer,gpt2_block] [--size bench]
        [--dtype bfloat16] [--workers N] [--triton-launcher] [--json out.json]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import build, fresh_cache_dirs  # noqa: E402  (puts the repo on sys.path)
import compiler  # noqa: E402
from compiler.kernels import precompile as pc  # noqa: E402
from compiler import capture  # noqa: E402
from compiler.kernels import launch as static_launch  # noqa: E402
from compiler.kernels.build import current_target  # noqa: E402
from compiler.capture import capture_module  # noqa: E402
from compiler.kernels.load import load_module  # noqa: E402
from pipeline.zoo import blocks  # noqa: E402

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


def time_model(module, args, target, pool, code_dir: Path) -> dict:
    """One model through every stage, each timed on its own."""
    t0 = time.perf_counter()
    captured = capture_module(module, args)
    capture_s = time.perf_counter() - t0
    export_s = time_export_capture(module, args)   # after: any cache it warms helps it only
    t1 = time.perf_counter()
    artifact = compiler.lower(captured, target="cuda")
    t2 = time.perf_counter()
    loaded = load_module(artifact.source, "cuda", code_dir, static_shapes=True,
                         kernels={k.name for k in artifact.kernels})
    t3 = time.perf_counter()
    result = pc.precompile(artifact, loaded, target, code_dir, pool)
    t4 = time.perf_counter()
    return {"capture_s": capture_s, "export_capture_s": export_s, "lower_s": t2 - t1,
            "load_s": t3 - t2, "precompile_s": t4 - t3, "total_s": capture_s + t4 - t1,
            "kernels": len(artifact.kernels), "precompiled": result["kernels"],
            "static": result["static"], "launchers_built": result["launchers_built"],
            "errors": result["errors"]}


def warm_up(target, pool, tmp: Path) -> None:
    """Pay one-time costs (imports, Triton's backend in the pool and here) before timing."""
    fresh_cache_dirs(tmp, "warmup")
    pool.warm(target)
    code_dir = Path(tempfile.mkdtemp(prefix="warmup-code-", dir=tmp))
    x = torch.randn(1024, device="cuda" if torch.cuda.is_available() else "cpu")
    time_model(torch.nn.GELU(), (x,), target, pool, code_dir)


def run(ns: argparse.Namespace, tmp: Path) -> list[dict]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    target, pool = compile_target(), pc.compile_pool(ns.workers)
    warm_up(target, pool, tmp)
    rows = []
    for name in ns.models:
        row = {"model": name}
        try:
            module, args, _ = build(name, ns.size, device, getattr(torch, ns.dtype))
            dirs = fresh_cache_dirs(tmp, name)
            code_dir = Path(dirs["KILN_CACHE_DIR"]) / "code"
            code_dir.mkdir()
            row.update(time_model(module, args, target, pool, code_dir))
        except Exception as err:  # noqa: BLE001 -- reported, and the run goes on
            traceback.print_exc()
            row["error"] = f"{type(err).__name__}: {err}"
        rows.append(row)
        print(f"  {name}: " + (row.get("error") or f"{row['total_s']:.2f} s"), flush=True)
        gc.collect()
    return rows


def totals(rows: list[dict]) -> dict:
    done = [r for r in rows if "error" not in r]
    sums = {k: sum(r[k] for r in done)
            for k in STAGES + ("total_s", "kernels", "export_capture_s")}
    if sums["total_s"]:
        sums.update({f"{k[:-2]}_share": sums[k] / sums["total_s"] for k in STAGES})
    return sums


def print_table(rows: list[dict], total: dict) -> None:
    head = f"{'model':<18} {'capture s':>9} {'export s':>8} {'lower s':>8} {'load s':>7} {'precompile s':>12} " \
           f"{'kernels':>7} {'static':>6} {'launchers':>9} {'total s':>8}"
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<18} failed: {r['error']}")
            continue
        errors = f"  ({len(r['errors'])} kernel errors)" if r["errors"] else ""
        print(f"{r['model']:<18} {r['capture_s']:9.2f} {r['export_capture_s']:8.2f} "
              f"{r['lower_s']:8.2f} {r['load_s']:7.2f} "
              f"{r['precompile_s']:12.2f} {r['kernels']:7d} {r['static']:6d} {r['launchers_built']:9d} "
              f"{r['total_s']:8.2f}{errors}")
    print("-" * len(head))
    print(f"{'total':<18} {total['capture_s']:9.2f} {total['export_capture_s']:8.2f} "
          f"{total['lower_s']:8.2f} "
          f"{total['load_s']:7.2f} {total['precompile_s']:12.2f} {total['kernels']:7d} "
          f"{'':>6} {'':>9} {total['total_s']:8.2f}")
    if total["total_s"]:
        print(f"{'share':<18} {total['capture_share']:9.0%} {'':>8} {total['lower_share']:8.0%} "
              f"{total['load_share']:7.0%} {total['precompile_share']:12.0%}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(blocks.MODELS),
                   help=f"comma-separated subset of {','.join(blocks.MODELS)}")
    p.add_argument("--size", choices=blocks.SIZES, default="bench")
    p.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    p.add_argument("--workers", type=int, default=pc.default_workers(),
                   help="compile worker processes (default: one per core, up to 16)")
    p.add_argument("--triton-launcher", action="store_true",
                   help="baseline: launch through Triton's own host launchers, built by gcc")
    p.add_argument("--json", type=Path, help="write the machine, rows and totals here")
    ns = p.parse_args(argv)
    ns.models = [m for m in ns.models.split(",") if m]
    unknown = [m for m in ns.models if m not in blocks.MODELS]
    if unknown:
        p.error(f"unknown models {unknown}; known: {list(blocks.MODELS)}")
    return ns


def main(argv=None) -> int:
    ns = parse_args(argv)
    if ns.triton_launcher:   # as on a torch without the generic launcher (this process only)
        static_launch._impl = lambda: None
    host = machine()
    print(f"machine: {host['cpus']} CPUs, GPU {host['gpu'] or 'none'}, torch {host['torch']}, "
          f"triton {host['triton']}, python {host['python']}")
    launcher = "generic (torch)" if static_launch.available() else "Triton's, built by gcc"
    print(f"target {compile_target()}, size {ns.size}, {ns.dtype}, {ns.workers} workers, "
          f"launcher {launcher}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-compile-") as tmp, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = run(ns, Path(tmp))
    total = totals(rows)
    print_table(rows, total)
    if ns.json:
        ns.json.parent.mkdir(parents=True, exist_ok=True)
        ns.json.write_text(json.dumps({"machine": host, "target": compile_target(),
                                       "size": ns.size, "dtype": ns.dtype,
                                       "workers": ns.workers,
                                       "static_launch": static_launch.available(),
                                       "rows": rows, "totals": total},
                                      indent=2))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
