"""Deployment: from a built model to its first result, in a fresh process, per system.

For each model of a zoo config (default ``configs/zoo-deploy.toml``) and each system, a new
Python process builds the model on the GPU (not timed), then times everything from there to
its first synchronized output, then the steady time per call (CUDA events, median of 50):

    eager           the module itself
    inductor_cold   torch.compile (default mode), empty Inductor and Triton caches
    inductor_warm   torch.compile again, with the disk caches the cold process filled
    inductor_mega   torch.compile after torch.compiler.load_cache_artifacts() of what the
                    cold process saved (save_cache_artifacts), empty disk caches
    kiln_cold       compiler.compile_module, empty kiln and Triton caches
    kiln_load       storage.Store(S).load_model(name, module), with S filled by
                    ``kiln run CONFIG --store S``; an empty Triton cache, which must stay
                    empty (nothing compiled), and Triton must not even be imported

kiln_load's output must be bit-identical to kiln_cold's (the same generated module: one
runs stored cubins, the other compiles the same source), and both match eager within bf16
tolerance. The store is baked first when it lacks the models (``--bake``).

    python benchmarks/bench_deploy.py [--config configs/zoo-deploy.toml] --store S
        [--models resnet50 bert_base] [--systems kiln_load eager] [--bake] [--json out.json]

The child mode (``--child SYSTEM``) is this script's own: one system, one model, one line of
JSON on stdout. ``KILN_BENCH_DEVICE=cpu`` (with a config whose targets include "cpu", e.g.
the tiny zoo, and kiln's systems only) checks the script's logic on a machine without a GPU.
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
DEVICE = os.environ.get("KILN_BENCH_DEVICE", "cuda")   # "cpu": checks this script's logic only
SYSTEMS = ("eager", "inductor_cold", "inductor_warm", "inductor_mega", "kiln_cold", "kiln_load")


# ----------------------------------------------------------------------------- the child
def _model(config: str, name: str):
    """The zoo model on the GPU, as ``kiln run`` built it (``pipeline.tasks.build_model``)."""
    import torch
    from pipeline.config import load_config
    from pipeline.tasks import build_model
    spec = next(m for m in load_config(config).models if m.name == name)
    module, args, _ = build_model(spec)
    torch.manual_seed(1)
    args = tuple(torch.randn_like(a) if a.is_floating_point() else a for a in args)
    return module.to(DEVICE), tuple(a.to(DEVICE) for a in args)


def _first(system: str, name: str, module, args, ns) -> tuple:
    """(callable, first output) of ``system``: everything a deployment does before serving."""
    import torch
    if system == "eager":
        return module, module(*args)
    if system.startswith("inductor"):
        if system == "inductor_mega":
            torch.compiler.load_cache_artifacts(Path(ns.mega).read_bytes())
        fn = torch.compile(module)
        return fn, fn(*args)
    if system == "kiln_cold":
        import compiler
        fn = compiler.compile_module(module, args)
        return fn, fn(*args)
    phases = ns.phases
    start = time.perf_counter()
    import storage
    import storage.deploy   # noqa: F401 -- timed with the imports, not the load
    phases["import_s"] = time.perf_counter() - start
    fn = storage.Store(ns.store).load_model(name, module)
    phases["load_model_s"] = time.perf_counter() - start - phases["import_s"]
    out = fn(*args)
    _sync()
    phases["first_call_s"] = time.perf_counter() - start - phases["import_s"] \
        - phases["load_model_s"]
    return fn, out


def _leaf(out):
    import torch
    while not isinstance(out, torch.Tensor):
        out = out[0] if isinstance(out, (tuple, list)) else next(iter(out.values()))
    return out


def _sync() -> None:
    import torch
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _steady_ms(fn, args, n: int = 50) -> float:
    """Median ms per call after 5 warm-up calls (``kiln bench``'s timing: CUDA events)."""
    from pipeline.bench.timing import time_calls
    return time_calls(lambda: fn(*args), DEVICE, n if DEVICE == "cuda" else 1, 5).median_ms


def child(ns) -> dict:
    import torch
    module, args = _model(ns.config, ns.model)
    _sync()
    row = {"model": ns.model, "system": ns.child}
    with torch.inference_mode():
        start = time.perf_counter()
        fn, out = _first(ns.child, ns.model, module, args, ns)
        _sync()
        row["first_result_s"] = time.perf_counter() - start
        row["triton_imported"] = "triton" in sys.modules
        row.update(ns.phases)
        start = time.perf_counter()
        fn(*args)       # kiln: the CUDA graph's capture, then its first replay
        _sync()
        row["second_call_s"] = time.perf_counter() - start
        out = _leaf(out).detach().float().cpu()
        torch.save(out, Path(ns.scratch) / f"{ns.model}-{ns.child}.pt")
        row["steady_ms"] = _steady_ms(fn, args)
    if ns.child == "inductor_cold" and ns.mega:
        artifacts = torch.compiler.save_cache_artifacts()
        if artifacts:
            Path(ns.mega).write_bytes(artifacts[0])
    triton_cache = os.environ.get("TRITON_CACHE_DIR")
    row["triton_cache_files"] = sum(len(f) for _, _, f in os.walk(triton_cache)) \
        if triton_cache else None
    return row


# ----------------------------------------------------------------------------- the parent
def _env(root: Path, tag: str, share: str | None = None) -> dict[str, str]:
    """Fresh caches for one child (or the ``share`` tag's, for a warm start)."""
    env = dict(os.environ)
    for var in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "KILN_CACHE_DIR"):
        path = root / (share or tag) / var.lower()
        path.mkdir(parents=True, exist_ok=True)
        env[var] = str(path)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def run_child(ns, system: str, model: str, root: Path) -> dict:
    tag = f"{model}-{system}"
    share = f"{model}-inductor_cold" if system == "inductor_warm" else None
    cmd = [sys.executable, __file__, "--child", system, "--model", model, "--config",
           ns.config, "--store", ns.store, "--scratch", str(root),
           "--mega", str(root / f"{model}.mega")]
    proc = subprocess.run(cmd, env=_env(root, tag, share), capture_output=True, text=True,
                          timeout=ns.timeout)
    if proc.returncode != 0:
        return {"model": model, "system": system, "error": proc.stderr.strip()[-1500:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(root: Path, model: str, rows: list[dict]) -> None:
    """Bit-identity of kiln_load with kiln_cold; error of each against eager."""
    import torch
    outs = {r["system"]: torch.load(root / f"{model}-{r['system']}.pt")
            for r in rows if "error" not in r and (root / f"{model}-{r['system']}.pt").exists()}
    ref = outs.get("eager")
    for r in rows:
        out = outs.get(r["system"])
        if out is None:
            continue
        if ref is not None:
            r["rel_err_vs_eager"] = float((out - ref).norm() / ref.norm())
        if r["system"] == "kiln_load" and "kiln_cold" in outs:
            r["bit_identical_to_kiln_cold"] = bool(torch.equal(out, outs["kiln_cold"]))


def bake(ns) -> None:
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", ns.config, "--store",
                           ns.store], cwd=ROOT, capture_output=True, text=True)
    print(proc.stdout[-3000:], proc.stderr[-2000:], file=sys.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"kiln run failed ({proc.returncode})")


def table(rows: list[dict]) -> str:
    lines = ["| model | system | first result s | steady ms | vs eager | notes |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['system']} | error | | | "
                         f"{r['error'].splitlines()[-1][:120]} |")
            continue
        notes = []
        if r["system"] == "kiln_load":
            notes.append(f"bit-identical to kiln_cold: {r.get('bit_identical_to_kiln_cold')}")
            notes.append(f"Triton imported: {r['triton_imported']}, "
                         f"Triton cache files: {r['triton_cache_files']}")
        lines.append(f"| {r['model']} | {r['system']} | {r['first_result_s']:.3f} | "
                     f"{r['steady_ms']:.3f} | {r.get('rel_err_vs_eager', float('nan')):.2e} | "
                     f"{'; '.join(notes)} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "zoo-deploy.toml"))
    p.add_argument("--store", required=True)
    p.add_argument("--models", nargs="*")
    p.add_argument("--systems", nargs="*", default=list(SYSTEMS))
    p.add_argument("--bake", action="store_true", help="kiln run the config into the store first")
    p.add_argument("--json")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--child", choices=SYSTEMS)
    p.add_argument("--model")
    p.add_argument("--scratch")
    p.add_argument("--mega")
    ns = p.parse_args()
    ns.phases = {}
    if ns.child:
        print(json.dumps(child(ns)))
        return
    from pipeline.config import load_config
    if ns.bake:
        bake(ns)
    models = ns.models or [m.name for m in load_config(ns.config).models]
    root = Path(tempfile.mkdtemp(prefix="kiln-deploy-"))
    rows = []
    for model in models:
        got = [run_child(ns, system, model, root) for system in ns.systems]
        compare(root, model, got)
        rows += got
        for r in got:
            print(json.dumps(r), flush=True)
        if ns.json:
            Path(ns.json).write_text(json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
