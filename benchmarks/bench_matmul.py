"""GEMM template vs cuBLAS plus a separate epilogue kernel, per shape of the zoo's linears.

For each (M, N, K) -- BERT-base's linears by default, bfloat16 -- and each epilogue (none,
bias+GELU, bias+residual add) the linear is compiled with ``matmul_template="on"``; the
template kernel is then tuned at its real shape by kiln's own Tuner: the default config,
coordinate descent over ``configs/autotune/default.toml``'s ``[matmul]`` space for at most
``--budget`` configs, and the extern baseline (``{"extern": 1}``: the cuBLAS call plus the
separate epilogue kernel kiln generates, exactly what ``matmul_template="off"`` runs). Eager
PyTorch is timed too. Every time is a ``triton.testing.do_bench`` median in this one run;
the table names the card. GPU only.

    python benchmarks/bench_matmul.py [--shapes 4096x768x768,4096x3072x768] [--budget 24]
                                      [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
from torch.fx.experimental.proxy_tensor import make_fx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import compiler  # noqa: E402
from compiler.autotune import Tuner, candidates, launch_from_meta, load_spaces, tune  # noqa: E402
from compiler.autotune.spaces import EXTERN, SearchSettings  # noqa: E402

# BERT-base at batch 32 x sequence 128: QKV/out projections, FFN up, FFN down (M x N x K)
BERT = "4096x768x768,4096x3072x768,4096x768x3072"

EPILOGUES = {
    "none": lambda x, w, b, r: (x @ w.t(),),
    "bias_gelu": lambda x, w, b, r: (F.gelu(F.linear(x, w, b)),),
    "bias_residual": lambda x, w, b, r: (F.linear(x, w, b) + r,),
}


def _inputs(m: int, n: int, k: int, dtype: torch.dtype):
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    w = torch.randn(n, k, device="cuda", dtype=dtype) / k ** 0.5
    return x, w, torch.randn(n, device="cuda", dtype=dtype), torch.randn(m, n, device="cuda",
                                                                          dtype=dtype)


def run(shape: tuple[int, int, int], epilogue: str, dtype: torch.dtype, budget: int) -> dict:
    m, n, k = shape
    fn = EPILOGUES[epilogue]
    args = _inputs(m, n, k, dtype)
    eager_ms = triton.testing.do_bench(lambda: fn(*args), return_mode="median")
    compiled = compiler.compile_fx(make_fx(fn)(*args), list(args),
                                   options={"matmul_template": "on"})
    ref = fn(*(a.float() for a in args))[0]
    rel = ((compiled(*args)[0].float() - ref).norm() / ref.norm()).item()
    (kernel,) = [kr for kr in compiled.artifact.kernels if kr.spec.kind == "matmul"]
    launch = launch_from_meta(kernel, kernel.spec.dtypes, kernel.spec.extents, device_type="cuda")
    space = load_spaces()["matmul"]
    cands = candidates(space, launch.numels)
    result = tune(Tuner(launch, "cuda"), space, cands, SearchSettings(0, budget))
    timed = {mm.config: mm.median_ms for mm in result.measurements if mm.status == "ok"}
    templates = {c: t for c, t in timed.items() if not c.extern}
    best = min(templates, key=templates.get) if templates else None
    flops = 2.0 * m * n * k
    row = {"shape": f"{m}x{n}x{k}", "epilogue": epilogue, "dtype": str(dtype),
           "eager_ms": eager_ms, "extern_ms": timed.get(EXTERN),
           "template_default_ms": timed.get(launch.default),
           "template_best_ms": templates.get(best), "template_best_config": str(best),
           "configs_timed": len(timed), "template_rel_error": rel}
    row["winner"] = "template" if row["template_best_ms"] and (
        row["extern_ms"] is None or row["template_best_ms"] < row["extern_ms"]) else "extern"
    for name in ("extern_ms", "template_best_ms"):
        if row[name]:
            row[name.replace("_ms", "_tflops")] = flops / row[name] / 1e9
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=BERT, help="MxNxK,... (default: BERT-base)")
    parser.add_argument("--epilogues", default=",".join(EPILOGUES))
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    parser.add_argument("--budget", type=int, default=24, help="template configs timed")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_matmul needs a CUDA GPU", file=sys.stderr)
        return 1
    dtype = getattr(torch, args.dtype)
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  "
          f"triton {triton.__version__}  {args.dtype}")
    print(f"{'shape':>16} {'epilogue':>13} {'eager':>8} {'cuBLAS+ep':>9} {'tmpl dflt':>9} "
          f"{'tmpl best':>9} {'TFLOP/s':>8} {'winner':>8}  best config")
    rows = []
    for shape in args.shapes.split(","):
        for epilogue in args.epilogues.split(","):
            row = run(tuple(int(v) for v in shape.split("x")), epilogue, dtype, args.budget)
            rows.append(row)
            fmt = lambda v: f"{v:9.4f}" if v else f"{'-':>9}"   # noqa: E731
            print(f"{row['shape']:>16} {epilogue:>13} {row['eager_ms']:8.4f} "
                  f"{fmt(row['extern_ms'])} {fmt(row['template_default_ms'])} "
                  f"{fmt(row['template_best_ms'])} {row.get('template_best_tflops', 0):8.1f} "
                  f"{row['winner']:>8}  {row['template_best_config']}")
    if args.json:
        args.json.write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
