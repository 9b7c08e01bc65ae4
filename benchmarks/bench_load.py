"""Deployment load time: a stored module with its stored binaries vs compiling at first call.

For each zoo block (bf16, bench sizes) the module is lowered and its kernels built for this
GPU's architecture at the configs the module launches (CPU worker processes, as the
pipeline's build stage does), all into a fresh store. Then, per model, two fresh Python
processes, each with an empty Triton cache, play the serving machine:

    binaries   ``Store.load(key)``: the stored cubins are handed to the kernels
    compile    ``Store.load(key, binaries=False)``: Triton compiles each kernel at first call

and report the load time, the first call (to a synchronized result) and a steady call.

    python benchmarks/bench_load.py [--models bert_layer,resnet_bottleneck] [--json out.json]
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from pipeline.zoo import blocks  # noqa: E402

SERVE = """
import json, sys, time, torch
sys.path.insert(0, {root!r})
t0 = time.perf_counter()
from storage import Store
from compiler.capture import capture_module
from pipeline.zoo import blocks
module, args = blocks.MODELS[{name!r}]("bench")
module = module.cuda().to(torch.bfloat16)
args = tuple(a.cuda().to(torch.bfloat16) if a.is_floating_point() else a.cuda() for a in args)
flat = capture_module(module, args).flatten_call(module, args, {{}})
torch.cuda.synchronize()
t1 = time.perf_counter()
fn = Store({store!r}).load({key!r}, binaries={binaries})
t2 = time.perf_counter()
fn(list(flat)); torch.cuda.synchronize()
t3 = time.perf_counter()
fn(list(flat)); torch.cuda.synchronize()
t4 = time.perf_counter()
print(json.dumps({{"load_s": t2 - t1, "first_call_s": t3 - t2, "second_call_s": t4 - t3,
                  "preloaded": (fn.preloaded or {{}}).get("preloaded", 0)}}))
"""


def prepare(name: str, store, workers: int) -> tuple[str, int]:
    """Lower ``name`` for CUDA, store it and its binaries; returns (module key, kernels)."""
    from compiler.api import lower
    from compiler.kernels.build import build
    from compiler.autotune.spaces import Config
    from compiler.capture import capture_module
    from pipeline.kernel_tasks import binary_row
    module, args = blocks.MODELS[name]("bench")
    module = module.to(torch.bfloat16)
    args = tuple(a.to(torch.bfloat16) if a.is_floating_point() else a for a in args)
    artifact = lower(capture_module(module, args), {}, "cuda")
    store.put_artifact(artifact)
    major, minor = torch.cuda.get_device_capability()
    target = ("cuda", 10 * major + minor, 32)
    configs = [Config.from_dict(kernel.spec.launch.kwargs())
               for kernel in artifact.kernels]
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        results = list(pool.map(build, artifact.kernels, configs, [target] * len(configs)))
    store.write("binaries", [binary_row(r) for r in results if r.ok])
    return artifact.module_key, len(artifact.kernels)


def serve(name: str, store_root: str, key: str, binaries: bool) -> dict:
    """One fresh process with an empty Triton cache loads and calls the module."""
    env = dict(os.environ, TRITON_CACHE_DIR=tempfile.mkdtemp(prefix="triton-fresh-"),
               KILN_CACHE_DIR=tempfile.mkdtemp(prefix="kiln-fresh-"))
    code = SERVE.format(root=str(ROOT), name=name, store=store_root, key=key, binaries=binaries)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=600)
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(blocks.MODELS))
    p.add_argument("--json", type=Path)
    p.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    ns = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_load: needs a CUDA GPU; nothing was timed")
        return 2
    from storage import Store
    store = Store(tempfile.mkdtemp(prefix="kiln-load-"))
    print(f"card: {torch.cuda.get_device_name()}; store {store.root}")
    print(f"{'model':<20}{'kernels':>8}{'mode':>10}{'load ms':>9}{'1st call ms':>12}"
          f"{'2nd call ms':>12}{'preloaded':>10}")
    rows = []
    for name in [m for m in ns.models.split(",") if m]:
        key, n = prepare(name, store, ns.workers)
        for binaries in (True, False):
            r = {"model": name, "kernels": n, "mode": "binaries" if binaries else "compile",
                 **serve(name, str(store.root), key, binaries)}
            rows.append(r)
            if "error" in r:
                print(f"{name:<20}{n:>8}{r['mode']:>10}  FAILED: {r['error']}")
                continue
            print(f"{name:<20}{n:>8}{r['mode']:>10}{r['load_s'] * 1e3:>9.1f}"
                  f"{r['first_call_s'] * 1e3:>12.1f}{r['second_call_s'] * 1e3:>12.2f}"
                  f"{r['preloaded']:>10}", flush=True)
    if ns.json:
        ns.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
