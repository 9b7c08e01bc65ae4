"""A cold compile's critical path on a CPU: each model in a fresh process, before and after.

``bench_compile.py`` times each phase in a warm process; a user's first compile is in a cold
one, where the compile pool starts while capture runs (``compiler.api.compile_module`` starts
it first) and capture pays torch's one-time imports. Here each model runs in a fresh child
process with empty Triton and kiln caches, twice per model in one run:

    baseline  as before: every compile worker imports torch (as ``compile_worker`` did
              through ``build``/``precompile``), capture records each node's stack trace,
              lowering simplifies every index expression anew (no memo), and kernels
              equal but for their names compile once each
    kiln      workers import Triton only (``kernels.worker_build``), no stack traces,
              ``sizevars.simplify`` memoized, copies share one compile
              (``precompile.share_compiles``)

Columns (seconds): ``imports`` (torch and kiln in the child, not part of the total),
``capture``, ``lower``, ``load`` and ``precompile`` as in ``compile_module``, the pool
started (not awaited) before capture; ``total`` from the pool's start to the last kernel
loaded: the compile to first call, less the call. No GPU is needed: kernels compile for
sm_90 in the workers.

    python benchmarks/bench_cold_compile.py --zoo configs/zoo-vision.toml
        --models resnet50,vit_b16 [--workers N] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SM90 = ("cuda", 90, 32)
MODES = ("baseline", "kiln")
PHASES = ("capture_s", "lower_s", "load_s", "precompile_s", "total_s")


def _torch_worker():
    """A compile worker as it started before: importing torch with kiln's build modules."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import torch; "
            f"from compiler.kernels import build, precompile; "
            f"from compiler.kernels.compile_worker import main; main()")
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, bufsize=1)


def child(ns: argparse.Namespace) -> dict:
    """One cold compile in this fresh process; its phases as a dict."""
    start = time.perf_counter()
    import warnings
    warnings.simplefilter("ignore")
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    import compiler
    from bench_compile import baseline_paths
    from compiler.capture import capture_module
    from compiler.kernels import precompile as pc
    from compiler.kernels.load import load_module
    from pipeline.config import load_config
    from pipeline.tasks import build_model
    row = {"imports_s": time.perf_counter() - start}
    spec = {s.name: s for s in load_config(ns.zoo).models}[ns.model]
    module, args, _ = build_model(spec)
    baseline = ns.child == "baseline"
    if baseline:
        pc._start_worker = _torch_worker
    code_dir = Path(os.environ["KILN_CACHE_DIR"]) / "code"
    code_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    pool = pc.compile_pool(ns.workers)
    pool.warm(SM90, wait=False)             # as compile_module starts it: before capture
    with torch.no_grad(), baseline_paths(baseline):
        t1 = time.perf_counter()
        captured = capture_module(module, args)
        t2 = time.perf_counter()
        artifact = compiler.lower(captured, target="cuda")
        t3 = time.perf_counter()
        loaded = load_module(artifact.source, "cuda", code_dir, static_shapes=True,
                             kernels={k.name for k in artifact.kernels})
        t4 = time.perf_counter()
        result = pc.precompile(artifact, loaded, SM90, code_dir, pool, share=not baseline)
        t5 = time.perf_counter()
    pool.close()
    row.update({"capture_s": t2 - t1, "lower_s": t3 - t2, "load_s": t4 - t3,
                "precompile_s": t5 - t4, "total_s": t5 - t0,
                "kernels": len(artifact.kernels), "compiled": result["compiled"],
                "errors": len(result["errors"]),
                "compile_cpu_s": sum(result["compile_seconds"].values()),
                "slowest": sorted(result["compile_seconds"].items(), key=lambda kv: -kv[1])[:8]})
    row["simulated_pool_s"] = _orders(artifact, result["compile_seconds"], ns.sim_workers)
    return row


def _orders(artifact, seconds: dict, workers: int) -> dict:
    """The compile pool's wall on ``workers`` workers, simulated from each kernel's measured
    compile seconds, for the kernels queued in module order and longest source first
    (``precompile.longest_first``): what the order alone changes on a bigger machine."""
    from compiler.kernels.precompile import longest_first
    from compiler.kernels.signature import KernelJob
    names = [k.name for k in artifact.kernels if k.name in seconds]
    jobs = tuple(KernelJob(n, {}, {}, {}, {}, []) for n in names)
    ranked = [j.name for j in longest_first(jobs, artifact)]
    return {"workers": workers, "module_order": _makespan([seconds[n] for n in names], workers),
            "longest_first": _makespan([seconds[n] for n in ranked], workers)}


def _makespan(times: list[float], workers: int) -> float:
    """When the last job ends, each job taken in turn by the first free worker.

    >>> _makespan([1, 1, 3], 2), _makespan([3, 1, 1], 2)
    (4.0, 3.0)
    """
    free = [0.0] * workers
    for t in times:
        k = free.index(min(free))
        free[k] += t
    return max(free)


def run_child(ns: argparse.Namespace, model: str, mode: str, tmp: Path) -> dict:
    env = dict(os.environ)
    for var in ("TRITON_CACHE_DIR", "KILN_CACHE_DIR"):
        env[var] = tempfile.mkdtemp(prefix=f"{model}-{mode}-", dir=tmp)
    cmd = [sys.executable, __file__, "--child", mode, "--zoo", str(ns.zoo), "--model", model,
           "--workers", str(ns.workers), "--sim-workers", str(ns.sim_workers)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        return {"model": model, "mode": mode, "error": done.stderr.strip()[-500:]}
    return {"model": model, "mode": mode, **json.loads(lines[-1])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--zoo", type=Path, required=True, metavar="CONFIG")
    p.add_argument("--models", help="comma-separated names from the config (default: all)")
    p.add_argument("--workers", type=int, default=max(1, min(16, os.cpu_count() or 1)))
    p.add_argument("--json", type=Path)
    p.add_argument("--sim-workers", type=int, default=16,
                   help="workers of the simulated pool (queue order, from measured compiles)")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated, of " + str(MODES))
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    ns = p.parse_args(argv)
    if ns.child:
        print(json.dumps(child(ns)))
        return 0
    from pipeline.config import load_config    # no torch: the parent stays light
    known = [s.name for s in load_config(ns.zoo).models]
    models = ns.models.split(",") if ns.models else known
    unknown = sorted(set(models) - set(known))
    if unknown:
        p.error(f"unknown models {unknown}; known: {known}")
    print(f"{os.cpu_count()} CPUs, {ns.workers} compile workers, target {SM90}, zoo {ns.zoo}")
    head = (f"{'model':<16} {'mode':<9} {'imports':>7} " +
            " ".join(f"{k[:-2]:>10}" for k in PHASES) + f" {'kernels':>7} {'compiled':>8}")
    print(head + "\n" + "-" * len(head), flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
        for model in models:
            for mode in ns.modes.split(","):
                row = run_child(ns, model, mode, Path(tmp))
                rows.append(row)
                if "error" in row:
                    print(f"{model:<16} {mode:<9} failed: {row['error']}", flush=True)
                    continue
                print(f"{model:<16} {mode:<9} {row['imports_s']:7.2f} " +
                      " ".join(f"{row[k]:10.2f}" for k in PHASES) +
                      f" {row['kernels']:7d} {row['compiled']:8d}", flush=True)
                print(f"  compile CPU s in workers {row['compile_cpu_s']:.2f}; slowest: " +
                      ", ".join(f"{n} {s:.2f}" for n, s in row["slowest"]), flush=True)
                sim = row["simulated_pool_s"]
                print(f"  simulated pool wall on {sim['workers']} workers: module order "
                      f"{sim['module_order']:.2f} s, longest first {sim['longest_first']:.2f} s",
                      flush=True)
            done = {r["mode"]: r for r in rows[-2:] if "error" not in r}
            if len(done) == 2:
                print(f"{model:<16} {'ratio':<9} {'':>7} " + " ".join(
                    f"{done['kiln'][k] / done['baseline'][k]:10.2f}" for k in PHASES), flush=True)
    if ns.json:
        ns.json.write_text(json.dumps({"cpus": os.cpu_count(), "workers": ns.workers,
                                       "zoo": str(ns.zoo), "rows": rows}, indent=2))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
