"""ResNet-50's convolutions: kiln's implicit-GEMM template (compiler/codegen/conv.py) against
cuDNN, per conv shape and at a model's first call.

Per distinct 3x3 and 7x7 conv of ResNet-50 (batch 32, bf16, channels-last, no bias) on one
GPU in one process, it prints a row as soon as it is measured:

- cuDNN: ``F.conv2d``'s steady time (``triton.testing.do_bench``, median), after its first
  call at that shape (its per-shape set-up, also printed);
- kiln: the template's time at its default config and at a handful of others, each first
  checked against cuDNN's output (the Tuner checks every config against the default; the
  default is checked against cuDNN here), and the best config's time over cuDNN's.

Then, per ``conv_kernels`` mode, a fresh process compiles the repo's ResNet front (stem,
bottlenecks: ``pipeline.zoo.blocks.resnet_bottleneck``) and times its first call (kernels
built beforehand, as a module loaded from a store is): "library" pays cuDNN's set-up,
"triton" none; "triton+mm" also runs the 1x1 convs' mms as kiln's GEMM template (no cuBLAS).

    python benchmarks/bench_conv.py [--batch 32] [--json out.json] [--block tiny|mid|bench]
                                    [--skip-shapes] [--skip-first-call]

Needs CUDA (exits 2 without it); no network, no timm.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import compiler  # noqa: E402

B = torch.bfloat16
# ResNet-50 (v1.5: the stride on the 3x3) at 224x224: C_in, C_out, kernel, stride, image in
SHAPES = [(3, 64, 7, 2, 224), (64, 64, 3, 1, 56), (128, 128, 3, 2, 56), (128, 128, 3, 1, 28),
          (256, 256, 3, 2, 28), (256, 256, 3, 1, 14), (512, 512, 3, 2, 14), (512, 512, 3, 1, 7)]
# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) tried beside the default
CONFIGS = [(128, 128, 64, 8, 3), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4),
           (256, 128, 64, 8, 3), (128, 128, 32, 8, 4), (128, 256, 64, 8, 3)]
MODES = {"library": {"conv_kernels": "library"}, "auto": {"conv_kernels": "auto"},
         "triton": {"conv_kernels": "triton"},
         "triton+mm": {"conv_kernels": "triton", "matmul_template": "on"}}


def _ms(fn) -> float:
    import triton
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def _rel_err(got, want) -> float:
    return ((got.double() - want.double()).norm() / want.double().norm()).item()


def _first_call_ms(fn) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - t0)


def _template(conv, x):
    """The compiled module (its one kernel: the template) and that kernel's tuner."""
    from compiler.autotune import Tuner, launch_from_meta
    options = {"conv_kernels": "triton", "cuda_graphs": False, "compile_workers": 0}
    compiled = compiler.compile_module(conv, (x,), options)
    kinds = [str(k.spec.kind) for k in compiled.compiled.artifact.kernels]
    if kinds != ["conv"]:
        raise AssertionError(f"expected one conv template kernel, got {kinds}")
    (kernel,) = compiled.compiled.artifact.kernels
    launch = launch_from_meta(kernel, kernel.spec.dtypes, kernel.spec.extents,
                              device_type="cuda")
    return compiled, Tuner(launch, "cuda")


def _config(c):
    from compiler.autotune import Config
    bm, bn, bk, warps, stages = c
    return Config(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8, num_warps=warps,
                  num_stages=stages)


def run_shape(shape, batch: int) -> dict:
    cin, cout, kernel, stride, image = shape
    conv = torch.nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)
    conv = conv.to("cuda", B, memory_format=torch.channels_last).eval()
    x = torch.randn(batch, cin, image, image, device="cuda", dtype=B)
    x = x.to(memory_format=torch.channels_last)
    w = conv.weight
    cudnn = lambda: F.conv2d(x, w, None, stride, kernel // 2)   # noqa: E731
    row = {"shape": list(shape), "cudnn_first_ms": _first_call_ms(cudnn)}
    row["cudnn_ms"] = _ms(cudnn)
    compiled, tuner = _template(conv, x)
    row["rel_err"] = _rel_err(compiled(x), cudnn())
    if row["rel_err"] > 2e-2:
        raise AssertionError(f"{shape}: the template differs from cuDNN, rel err "
                             f"{row['rel_err']:.2e}")
    default = tuner.launch.default
    row["default"] = default.as_dict()
    configs = {"default": default, **{"/".join(map(str, c)): _config(c) for c in CONFIGS}}
    for name, config in configs.items():
        m = tuner.run(config)
        row[f"kiln_{name}"] = m.median_ms if m.status == "ok" else m.status
    times = [v for k, v in row.items() if k.startswith("kiln_") and isinstance(v, float)]
    row["best_over_cudnn"] = min(times) / row["cudnn_ms"] if times else None
    m, n, k = batch * math.ceil(image / stride) ** 2, cout, cin * kernel * kernel
    row["cudnn_tflops"] = 2 * m * n * k / row["cudnn_ms"] / 1e9
    return row


def _print_row(row: dict) -> None:
    kiln = "  ".join(f"{v:>8.3f}" if isinstance(v, float) else f"{str(v)[:8]:>8}"
                     for k, v in row.items() if k.startswith("kiln_"))
    best = row["best_over_cudnn"]
    print(f"{str(tuple(row['shape'])):<24} {row['cudnn_first_ms']:>9.1f} {row['cudnn_ms']:>8.3f}"
          f" {row['cudnn_tflops']:>6.0f}  {kiln}  {best if best is None else f'{best:.2f}':>6}"
          f"  {row['rel_err']:.1e}", flush=True)


def shapes_table(batch: int) -> list[dict]:
    names = "  ".join(f"{n:>8}" for n in ["default", *("/".join(map(str, c))[:8] for c in CONFIGS)])
    print(f"\nper conv shape, batch {batch}, bf16 channels-last; times in ms (median); configs "
          f"BLOCK_M/N/K/warps/stages: {['/'.join(map(str, c)) for c in CONFIGS]}")
    print(f"{'C_in,C_out,k,s,image':<24} {'cudnn 1st':>9} {'cudnn':>8} {'TF/s':>6}  {names}  "
          f"{'best/cudnn':>6}  rel err")
    rows = []
    for shape in SHAPES:
        try:
            row = run_shape(shape, batch)
        except Exception as e:   # noqa: BLE001 -- one shape's failure must not stop the rest
            print(f"{str(shape):<24} FAILED: {type(e).__name__}: {str(e)[:300]}", flush=True)
            rows.append({"shape": list(shape), "error": f"{type(e).__name__}: {e}"[:2000]})
            continue
        _print_row(row)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- first call
def first_call_child(mode: str, block: str) -> dict:
    """In a fresh process: compile the ResNet front under ``mode``, then time its first
    call (kernels already built) and a later one."""
    from pipeline.zoo import blocks
    module, (x,) = blocks.resnet_bottleneck(block)
    module = module.to("cuda", B, memory_format=torch.channels_last)
    x = x.to("cuda", B).to(memory_format=torch.channels_last)
    t0 = time.perf_counter()
    compiled = compiler.compile_module(module, (x,), {**MODES[mode], "cuda_graphs": False})
    compile_s = time.perf_counter() - t0
    with torch.no_grad():
        first = _first_call_ms(lambda: compiled(x))
        second = _first_call_ms(lambda: compiled(x))
        err = _rel_err(compiled(x), module(x))
    externs = sorted({line.split("'")[1] for line in compiled.compiled.source.splitlines()
                      if "extern_op('" in line})
    return {"mode": mode, "first_ms": first, "second_ms": second, "compile_s": compile_s,
            "externs": externs, "rel_err": err}


def first_call_table(block: str) -> list[dict]:
    print(f"\nfirst call of a fresh process, ResNet front ({block}), bf16 channels-last, "
          f"kernels built before it")
    print(f"{'conv_kernels':<12} {'first ms':>9} {'second ms':>9} {'compile s':>9}  "
          f"rel err  library calls")
    rows = []
    for mode in MODES:
        cmd = [sys.executable, __file__, "--child", mode, "--block", block]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        if done.returncode != 0 or not lines:
            print(f"{mode:<12} FAILED (exit {done.returncode}): {done.stderr[-600:]}", flush=True)
            rows.append({"mode": mode, "error": done.stderr[-2000:]})
            continue
        row = json.loads(lines[-1])
        print(f"{mode:<12} {row['first_ms']:>9.1f} {row['second_ms']:>9.1f} "
              f"{row['compile_s']:>9.1f}  {row['rel_err']:.1e}  {', '.join(row['externs'])}",
              flush=True)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--block", default="tiny", choices=("tiny", "mid", "bench"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip-shapes", action="store_true")
    parser.add_argument("--skip-first-call", action="store_true")
    parser.add_argument("--child", choices=tuple(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_conv: needs a CUDA GPU; nothing was timed", file=sys.stderr)
        return 2
    if args.child:
        print(json.dumps(first_call_child(args.child, args.block)), flush=True)
        return 0
    import triton
    print(f"card: {torch.cuda.get_device_name()}  torch {torch.__version__}  "
          f"triton {triton.__version__}  cudnn.benchmark {torch.backends.cudnn.benchmark}")
    out = {"card": torch.cuda.get_device_name(), "batch": args.batch}
    if not args.skip_shapes:
        with torch.no_grad():    # start cuDNN on a shape none of the rows has
            F.conv2d(torch.randn(1, 3, 9, 9, device="cuda"), torch.randn(4, 3, 3, 3, device="cuda"))
            out["shapes"] = shapes_table(args.batch)
    if not args.skip_first_call:
        out["first_call"] = first_call_table(args.block)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))
    failed = any("error" in r for part in ("shapes", "first_call") for r in out.get(part, []))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
