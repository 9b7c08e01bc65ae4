"""The block zoo at realistic sizes: eager vs torch.compile (Inductor) vs kiln, in one run.

For each model of ``pipeline.zoo.blocks`` at "bench" size (batch 32 at 224x224 for vision,
batch 16 x 256 tokens for text) on one GPU, in bfloat16 (``--fp32`` adds float32):

    eager      median time (``triton.testing.do_bench(warmup=25, rep=100)``, no_grad)
    inductor   ``torch.compile`` default mode: cold compile time (fresh TORCHINDUCTOR_CACHE_DIR
               and TRITON_CACHE_DIR, ``torch._dynamo.reset()``; compile happens in the first
               call, so cold = ``torch.compile`` + first call), median time, kernel count
    kiln       ``compiler.compile_module`` wall time (capture + lower + load) and cold time
               (that plus the first call, which JIT-compiles the Triton kernels; fresh
               KILN_CACHE_DIR and TRITON_CACHE_DIR), median time, kernels, fallbacks, bytes
               moved by kiln's kernels (sum of each kernel's meta "bytes") and their floor at
               3.0 TB/s (DESIGN.md), i.e. the time kiln's generated kernels need at least;
               the rest of kiln's time is extern calls (cuBLAS, cuDNN, SDPA) and fallbacks.

Accuracy: each output against eager float32 on the same rounded weights and inputs (TF32
off for the reference): ``rel`` = ||got - ref|| / ||ref||, ``max`` = max|got - ref| / max|ref|,
printed for eager at the same dtype too, for scale.

One-time process costs (CUDA context, Inductor's compile worker pool, Triton's first
import) are paid by a warm-up compile of a trivial function before the first model, so
they don't land on whichever model runs first; each model's compiles are then cold with
respect to every on-disk cache, in a warm process. A model that fails in one compiler is
reported with its error and the run goes on. The JSON (``--json``) is rewritten after every
model, so a run cut short keeps what it measured.

    python benchmarks/bench_models.py [--models resnet_bottleneck,vit_block] [--fp32]
        [--quick] [--size bench|mid|tiny] [--no-inductor] [--budget-s 540]
        [--json out.json]

``--device cpu`` (tiny size, kernels under Triton's interpreter, perf_counter timings,
Inductor off unless ``--inductor``) only checks this script's logic on a machine without a
GPU; its numbers mean nothing (and bfloat16 under the interpreter is not even accurate).
"""
from __future__ import annotations

import argparse
import copy
import gc
import itertools
import json
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import compiler  # noqa: E402
from pipeline.zoo import blocks  # noqa: E402

DYNAMIC = "gpt2_block_dynamic"
MODEL_NAMES = list(blocks.MODELS) + [DYNAMIC]
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
COPY_TBPS = 3.0          # H100 device-to-device copy, bytes read + written (DESIGN.md)


# ----------------------------------------------------------------------------- setup
def build(name: str, size: str, device: str, dtype: torch.dtype):
    """``(module, args, dynamic_shapes or None)`` on ``device``; integer inputs keep dtype."""
    if name == DYNAMIC:
        module, args, shapes = blocks.gpt2_block_dynamic(size)
    else:
        (module, args), shapes = blocks.MODELS[name](size), None
    args = tuple(a.to(device=device, dtype=dtype) if a.is_floating_point() else a.to(device)
                 for a in args)
    return module.to(device=device, dtype=dtype), args, shapes


def fresh_cache_dirs(root: Path, tag: str) -> dict[str, str]:
    """New empty cache directories for every compiler cache, set in the environment (torch
    and Triton read these variables when they compile, not at import)."""
    dirs = {}
    for var in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "KILN_CACHE_DIR"):
        path = Path(tempfile.mkdtemp(prefix=f"{tag}-{var.split('_')[0].lower()}-", dir=root))
        os.environ[var] = dirs[var] = str(path)
    return dirs


def forget_inductor_memory() -> None:
    """Drop Inductor's in-process caches so identical kernels of an earlier model are
    compiled again (best effort: these are internals and may move between versions)."""
    torch._dynamo.reset()
    for clear in ("torch._inductor.codecache.PyCodeCache.cache_clear",
                  "torch._inductor.async_compile.CompiledTritonKernels.cache_clear"):
        try:
            obj = torch
            for part in clear.split(".")[1:]:
                obj = getattr(obj, part)
            obj()
        except Exception:
            pass


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timer(device: str, quick: bool) -> Callable[[Callable[[], Any]], float]:
    """Median milliseconds of ``fn()``."""
    if device == "cuda":
        warmup, rep = (5, 20) if quick else (25, 100)
        return lambda fn: triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median")

    def cpu_time(fn) -> float:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
        return statistics.median(times)
    return cpu_time


def first_output(out) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def errors(got: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    diff = (got.float() - ref).abs()
    return {"rel": (diff.norm() / ref.norm()).item(), "max": (diff.max() / ref.abs().max()).item()}


def describe(err: BaseException) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0][:300] if lines else ''}"


def stage(row: dict, prefix: str, fn: Callable[[], None]) -> None:
    """Run one stage; a failure is recorded in the row (and its traceback on stderr)."""
    try:
        fn()
    except Exception as err:  # noqa: BLE001 - any failure of one compiler is a result
        row[f"{prefix}_error"] = describe(err)
        print(f"  {row['model']}: {prefix} failed: {describe(err)}", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- one model
def run_model(name: str, dtype: torch.dtype, args_ns, tmp: Path) -> dict:
    device, size = args_ns.device, args_ns.size
    bench = timer(device, args_ns.quick)
    row: dict[str, Any] = {"model": name, "dtype": str(dtype).removeprefix("torch."),
                           "size": size}
    module, inputs, shapes = build(name, size, device, dtype)
    row["inputs"] = [[list(a.shape), str(a.dtype).removeprefix("torch.")] for a in inputs]
    row["params_M"] = sum(p.numel() for p in module.parameters()) / 1e6
    # Each runner gets its own copy: the GPT-2 block writes its KV cache in place.
    eager_m, inductor_m, kiln_m = module, copy.deepcopy(module), copy.deepcopy(module)
    ref_inputs = tuple(a.float() if a.is_floating_point() else a for a in inputs)

    with torch.no_grad():
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        ref = first_output(copy.deepcopy(module).float()(*ref_inputs)).float()
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

        def eager():
            row["eager_err"] = errors(first_output(eager_m(*inputs)), ref)
            row["eager_ms"] = bench(lambda: eager_m(*inputs))
        stage(row, "eager", eager)

        if args_ns.inductor:
            def inductor():
                fresh_cache_dirs(tmp, f"{name}-inductor")
                forget_inductor_memory()
                from torch._inductor import metrics
                metrics.reset()
                t0 = time.perf_counter()
                fn = torch.compile(inductor_m, dynamic=True if shapes else None)
                out = first_output(fn(*inputs))
                sync(device)
                row["inductor_cold_s"] = time.perf_counter() - t0
                row["inductor_kernels"] = metrics.generated_kernel_count
                row["inductor_err"] = errors(out, ref)
                row["inductor_ms"] = bench(lambda: fn(*inputs))
            stage(row, "inductor", inductor)
            torch._dynamo.reset()

        def kiln():
            fresh_cache_dirs(tmp, f"{name}-kiln")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                fn = compiler.compile_module(kiln_m, inputs, json.loads(args_ns.kiln_options),
                                             dynamic_shapes=shapes)
                row["kiln_compile_s"] = time.perf_counter() - t0
            row["kiln_kernels"] = fn.kernel_count
            row["kiln_fallbacks"] = list(fn.fallback_ops)
            row["kiln_externs"] = list(fn.compiled.extern_ops)
            sizes = [json.loads(k.meta_json).get("bytes") for k in fn.compiled.artifact.kernels]
            row["kiln_bytes"] = sum(b for b in sizes if b is not None)
            row["kiln_kernels_without_bytes"] = sum(1 for b in sizes if b is None)
            row["kiln_bytes_floor_ms"] = row["kiln_bytes"] / (COPY_TBPS * 1e12) * 1e3
            row["kiln_precompile_s"] = (fn.compiled.precompiled or {}).get("seconds")
            out = first_output(fn(*inputs))
            sync(device)
            row["kiln_cold_s"] = time.perf_counter() - t0
            row["kiln_err"] = errors(out, ref)
            row["kiln_ms"] = bench(lambda: fn(*inputs))
            row["kiln_cuda_graphs"] = fn._graph is not None
        stage(row, "kiln", kiln)

        if args_ns.kiln_without_graphs and row.get("kiln_cuda_graphs"):
            def kiln_plain():   # the same kernels (Triton's cache is warm), Python launches
                options = {**json.loads(args_ns.kiln_options), "cuda_graphs": False}
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fn = compiler.compile_module(copy.deepcopy(module), inputs, options,
                                                 dynamic_shapes=shapes)
                fn(*inputs)
                row["kiln_plain_ms"] = bench(lambda: fn(*inputs))
            stage(row, "kiln_plain", kiln_plain)

    for who in ("inductor", "kiln", "kiln_plain"):
        if f"{who}_ms" in row and "eager_ms" in row:
            row[f"{who}_speedup"] = row["eager_ms"] / row[f"{who}_ms"]
    if "kiln_ms" in row and "inductor_ms" in row:
        row["kiln_vs_inductor"] = row["inductor_ms"] / row["kiln_ms"]
    if "kiln_cold_s" in row and "inductor_cold_s" in row:
        row["compile_ratio"] = row["kiln_cold_s"] / row["inductor_cold_s"]
    del eager_m, inductor_m, kiln_m, module
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return row


# ----------------------------------------------------------------------------- report
def geomean(values: list[float]) -> float | None:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def summarize(rows: list[dict]) -> dict:
    """Per dtype, over the models where eager, Inductor and kiln all ran (same set)."""
    out = {}
    for dtype in sorted({r["dtype"] for r in rows}):
        rs = [r for r in rows if r["dtype"] == dtype]
        both = [r for r in rs if "kiln_speedup" in r and "inductor_speedup" in r]
        s: dict[str, Any] = {
            "models_compared": [r["model"] for r in both],
            "models_failed_in_kiln": {r["model"]: r.get("kiln_error") or r.get("error", "no result")
                                      for r in rs if "kiln_ms" not in r},
            "inductor_geomean_speedup": geomean([r["inductor_speedup"] for r in both]),
            "kiln_geomean_speedup": geomean([r["kiln_speedup"] for r in both]),
            "kiln_geomean_speedup_all": geomean([r["kiln_speedup"] for r in rs
                                                  if "kiln_speedup" in r]),
            "kiln_plain_geomean_speedup": geomean([r["kiln_plain_speedup"] for r in both
                                                   if "kiln_plain_speedup" in r]),
        }
        cold = [r for r in rs if "compile_ratio" in r]
        if cold:
            s["kiln_cold_s_total"] = sum(r["kiln_cold_s"] for r in cold)
            s["inductor_cold_s_total"] = sum(r["inductor_cold_s"] for r in cold)
            s["compile_ratio_total"] = s["kiln_cold_s_total"] / s["inductor_cold_s_total"]
            s["compile_ratio_worst"] = max(r["compile_ratio"] for r in cold)
        if s["kiln_geomean_speedup"] and s["inductor_geomean_speedup"]:
            s["target_speed_met"] = s["kiln_geomean_speedup"] >= s["inductor_geomean_speedup"]
        if "compile_ratio_total" in s:
            s["target_compile_met"] = s["compile_ratio_total"] <= 1 / 3
        out[dtype] = s
    return out


def _fmt(value, spec: str) -> str:
    """``format(value, spec)``, or a dash as wide as the spec's width for a missing value."""
    if value is None:
        width = "".join(itertools.takewhile(str.isdigit, spec))
        return "-".rjust(int(width or 0))
    return format(value, spec)


def print_table(rows: list[dict], summary: dict, header: str) -> None:
    print(f"\n{header}")
    cols = (f"{'model':<20}{'dtype':>6}{'eager ms':>10}{'ind ms':>9}{'kiln ms':>9}{'ind x':>7}"
            f"{'kiln x':>8}{'k/i':>6}{'ind cold s':>11}{'kiln s':>8}{'kiln cold':>10}"
            f"{'ind k':>7}{'kiln k':>7}{'kiln MB':>9}{'floor ms':>9}"
            f"  err rel (eager/ind/kiln)")
    print(cols)
    print("-" * len(cols))
    for r in rows:
        errs = "/".join(_fmt(r.get(f"{w}_err", {}).get("rel"), ".1e")
                        for w in ("eager", "inductor", "kiln"))
        print(f"{r['model']:<20}{r['dtype']:>6}{_fmt(r.get('eager_ms'), '10.3f')}"
              f"{_fmt(r.get('inductor_ms'), '9.3f')}{_fmt(r.get('kiln_ms'), '9.3f')}"
              f"{_fmt(r.get('inductor_speedup'), '7.2f')}{_fmt(r.get('kiln_speedup'), '8.2f')}"
              f"{_fmt(r.get('kiln_vs_inductor'), '6.2f')}{_fmt(r.get('inductor_cold_s'), '11.1f')}"
              f"{_fmt(r.get('kiln_compile_s'), '8.1f')}{_fmt(r.get('kiln_cold_s'), '10.1f')}"
              f"{_fmt(r.get('inductor_kernels'), '7d')}{_fmt(r.get('kiln_kernels'), '7d')}"
              f"{_fmt(r['kiln_bytes'] / 1e6 if 'kiln_bytes' in r else None, '9.1f')}"
              f"{_fmt(r.get('kiln_bytes_floor_ms'), '9.3f')}  {errs}")
        if "error" in r:
            print(f"    FAILED: {r['error']}")
        for who in ("eager", "inductor", "kiln"):
            if f"{who}_error" in r:
                print(f"    {who} FAILED: {r[f'{who}_error']}")
        if "kiln_plain_ms" in r:
            print(f"    kiln without CUDA graphs: {r['kiln_plain_ms']:.3f} ms "
                  f"({r['kiln_plain_speedup']:.2f}x eager); kiln precompile "
                  f"{_fmt(r.get('kiln_precompile_s'), '.2f')} s")
        if r.get("kiln_fallbacks"):
            print(f"    kiln fallbacks: {', '.join(r['kiln_fallbacks'])}")
    print("\n(x = speedup over eager; k/i = kiln speed relative to Inductor; cold = compile "
          "+ first call; kiln s = compile_module only; MB = bytes moved by kiln's Triton "
          "kernels; floor = MB at 3.0 TB/s)")
    for dtype, s in summary.items():
        print(f"\n{dtype}: geomean speedup over eager on {len(s['models_compared'])} models "
              f"({', '.join(s['models_compared']) or 'none'}): Inductor "
              f"{_fmt(s['inductor_geomean_speedup'], '.2f')}x, kiln "
              f"{_fmt(s['kiln_geomean_speedup'], '.2f')}x"
              + (f" (kiln without CUDA graphs {s['kiln_plain_geomean_speedup']:.2f}x)"
                 if s.get("kiln_plain_geomean_speedup") else ""))
        if "compile_ratio_total" in s:
            print(f"  cold compile: kiln {s['kiln_cold_s_total']:.1f} s vs Inductor "
                  f"{s['inductor_cold_s_total']:.1f} s in total = {s['compile_ratio_total']:.2f} "
                  f"(worst model {s['compile_ratio_worst']:.2f}; target <= 0.33)")
        if "target_speed_met" in s:
            print(f"  target kiln geomean >= Inductor's: "
                  f"{'met' if s['target_speed_met'] else 'NOT met'}")
        if "target_compile_met" in s:
            print(f"  target kiln cold compile <= 1/3 of Inductor's: "
                  f"{'met' if s['target_compile_met'] else 'NOT met'}")
        for model, err in s["models_failed_in_kiln"].items():
            print(f"  kiln failed on {model}: {err}")


# ----------------------------------------------------------------------------- main
def warm_up(device: str, inductor: bool, tmp: Path) -> None:
    """Pay one-time process costs before the first model is timed (see the docstring)."""
    fresh_cache_dirs(tmp, "warmup")
    x = torch.randn(1024, device=device)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiler.compile_module(torch.nn.GELU(), (x,))(x)
        if device == "cuda":   # start kiln's compile workers, as Inductor's are started below
            from compiler.kernels.precompile import compile_pool, default_workers
            compile_pool(default_workers()).warm()
        if inductor:
            torch.compile(torch.nn.GELU())(x)
    sync(device)
    torch._dynamo.reset()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(blocks.MODELS),
                   help=f"comma-separated subset of {','.join(MODEL_NAMES)}, or 'all' "
                        f"(default: all but {DYNAMIC})")
    p.add_argument("--fp32", action="store_true", help="also run float32 (after bfloat16)")
    p.add_argument("--quick", action="store_true", help="fewer timing reps (warmup 5, rep 20 ms)")
    p.add_argument("--size", choices=blocks.SIZES, default=None,
                   help="model sizes (default: bench on cuda, tiny on cpu)")
    p.add_argument("--inductor", action=argparse.BooleanOptionalAction, default=None,
                   help="time torch.compile too (default: on for cuda, off for cpu)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cpu only checks the script (interpreter, tiny)")
    p.add_argument("--json", type=Path, help="write the rows and summary here")
    p.add_argument("--kiln-options", default="{}",
                   help='compiler options as JSON, e.g. \'{"cuda_graphs": true}\'')
    p.add_argument("--kiln-without-graphs", action=argparse.BooleanOptionalAction,
                   default=True, help="also time kiln with CUDA graphs off (default: on)")
    p.add_argument("--budget-s", type=float, default=540,
                   help="start no new model after this many seconds (default 540); the "
                        "skipped ones are listed")
    ns = p.parse_args(argv)
    ns.models = MODEL_NAMES if ns.models == "all" else [m for m in ns.models.split(",") if m]
    unknown = [m for m in ns.models if m not in MODEL_NAMES]
    if unknown:
        p.error(f"unknown models {unknown}; known: {MODEL_NAMES}")
    ns.size = ns.size or ("bench" if ns.device == "cuda" else "tiny")
    if ns.inductor is None:
        ns.inductor = ns.device == "cuda"
    return ns


def main(argv=None) -> int:
    ns = parse_args(argv)
    if ns.device == "cuda" and not torch.cuda.is_available():
        print("bench_models: needs a CUDA GPU (or --device cpu to check the script); "
              "nothing was timed")
        return 2
    card = torch.cuda.get_device_name() if ns.device == "cuda" else "cpu (interpreter)"
    header = (f"card: {card}  torch {torch.__version__}  triton {triton.__version__}  "
              f"size {ns.size}{'  (quick)' if ns.quick else ''}")
    print(header, flush=True)
    dtypes = [torch.bfloat16] + ([torch.float32] if ns.fp32 else [])
    rows: list[dict] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        warm_up(ns.device, ns.inductor, Path(tmp))
        for dtype in dtypes:
            for name in ns.models:
                t0 = time.perf_counter()
                if t0 - started > ns.budget_s:
                    print(f"{name}: skipped, past --budget-s {ns.budget_s:.0f}", flush=True)
                    rows.append({"model": name, "dtype": str(dtype).removeprefix("torch."),
                                 "size": ns.size, "error": "skipped: time budget"})
                    continue
                print(f"{name} {str(dtype).removeprefix('torch.')} ...", flush=True)
                try:
                    row = run_model(name, dtype, ns, Path(tmp))
                except Exception as err:  # noqa: BLE001 - e.g. building the model failed
                    traceback.print_exc()
                    row = {"model": name, "dtype": str(dtype).removeprefix("torch."),
                           "size": ns.size, "error": describe(err)}
                row["wall_s"] = time.perf_counter() - t0
                rows.append(row)
                print(f"  done in {row['wall_s']:.1f} s: " + ", ".join(
                    f"{k}={v:.3g}" for k, v in row.items()
                    if k.endswith(("_ms", "_s", "speedup")) and isinstance(v, float)), flush=True)
                if ns.json:
                    write_json(ns.json, header, rows, summarize(rows))
    summary = summarize(rows)
    print_table(rows, summary, header)
    print(f"\ntotal wall time {time.perf_counter() - started:.0f} s")
    if ns.json:
        write_json(ns.json, header, rows, summary)
    return 0


def write_json(path: Path, header: str, rows: list[dict], summary: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"header": header,
           "card": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
           "torch": torch.__version__, "triton": triton.__version__,
           "python": sys.version.split()[0],
           "rows": rows, "summary": summary}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
