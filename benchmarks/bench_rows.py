"""Row-kernel bandwidth: LayerNorm, softmax and RMSNorm on one GPU, kiln vs eager vs Inductor.

Each op reads its input once and writes its output once when fused into one row kernel; the
floor is the copy's time for the same bytes. Rows of 1024 run persistent, rows of 8192 looped.

    python benchmarks/bench_rows.py [--json out.json] [--no-inductor]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
from torch.fx.experimental.proxy_tensor import make_fx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import compiler  # noqa: E402
from compiler.capture import decomposition_table  # noqa: E402


def layer_norm(x, w, b):
    return (F.layer_norm(x, (x.shape[-1],), w, b),)


def softmax(x, w, b):
    return (torch.softmax(x, -1),)


def rms_norm(x, w, b):
    return (x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6).to(x.dtype) * w,)


def bench(fn, *args) -> float:
    return triton.testing.do_bench(lambda: fn(*args), warmup=25, rep=200, return_mode="median")


def run(name, fn, rows, cols, dtype, inductor: bool) -> dict:
    x = torch.randn(rows, cols, device="cuda", dtype=dtype)
    w = torch.randn(cols, device="cuda", dtype=dtype)
    b = torch.randn(cols, device="cuda", dtype=dtype)
    nbytes = 2 * x.numel() * x.element_size()
    dst = torch.empty_like(x)
    row = {"op": name, "shape": [rows, cols], "dtype": str(dtype), "copy_ms": bench(dst.copy_, x),
           "eager_ms": bench(fn, x, w, b)}
    t0 = time.perf_counter()
    gm = make_fx(fn, decomposition_table=decomposition_table())(x, w, b)
    kfn = compiler.compile_fx(gm, [x, w, b])
    kfn(x, w, b)
    row["kiln_compile_s"] = time.perf_counter() - t0
    ref = fn(x, w, b)[0].float()
    row["kiln_max_rel_err"] = ((kfn(x, w, b)[0].float() - ref).norm() / ref.norm()).item()
    row["kiln_ms"] = bench(kfn, x, w, b)
    row["kiln_kernels"] = kfn.kernel_count
    row["kiln_TBps"] = nbytes / row["kiln_ms"] / 1e9
    row["kiln_vs_copy"] = row["copy_ms"] / row["kiln_ms"]
    row["kiln_vs_eager"] = row["eager_ms"] / row["kiln_ms"]
    if inductor:
        torch._dynamo.reset()
        ind = torch.compile(fn)
        t0 = time.perf_counter()
        ind(x, w, b)
        row["inductor_compile_s"] = time.perf_counter() - t0
        row["inductor_ms"] = bench(ind, x, w, b)
        row["kiln_vs_inductor"] = row["inductor_ms"] / row["kiln_ms"]
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-inductor", action="store_true")
    parser.add_argument("--persistent-max", type=int, default=None,
                        help="experiment: rows up to this many elements run persistent")
    args = parser.parse_args(argv)
    if args.persistent_max:
        import compiler.codegen.reduction as reduction
        reduction.PERSISTENT_MAX_RNUMEL = args.persistent_max
    if not torch.cuda.is_available():
        print("bench_rows: needs a CUDA GPU; nothing was timed")
        return 2
    rows = []
    for name, fn in (("layer_norm", layer_norm), ("softmax", softmax), ("rms_norm", rms_norm)):
        for shape in ((32768, 1024), (4096, 8192)):
            rows.append(run(name, fn, *shape, torch.bfloat16, not args.no_inductor))
    print(f"card: {torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}")
    for r in rows:
        ind = (f" | inductor {r['inductor_ms']:.3f} ms, kiln {r['kiln_vs_inductor']:.2f}x inductor"
               if "inductor_ms" in r else "")
        print(f"{r['op']:>10} {r['shape']} {r['dtype']}: copy {r['copy_ms']:.3f} ms | eager "
              f"{r['eager_ms']:.3f} | kiln {r['kiln_ms']:.3f} ms ({r['kiln_kernels']} kernel, "
              f"{100 * r['kiln_vs_copy']:.0f}% of copy, {r['kiln_vs_eager']:.2f}x eager, "
              f"err {r['kiln_max_rel_err']:.1e}){ind}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
