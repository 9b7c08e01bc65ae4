"""Host cost per kernel launch without CUDA graphs: many tiny kernels, kiln vs Inductor.

Two models whose kernels take far less GPU time than their launches, so a call's time is
its host time: ``chain`` (64 pointwise steps on a 32x32 tensor, fusion off: 64 kernels) and
``layers`` (16 Linear+LayerNorm layers on 8x64: 16 kernels and 16 cuBLAS calls). Reported
per call and per kernel (call time / kernels launched), for:

- ``kiln``: the generated wrapper's bound launches (``compiler.kernels.host``);
- ``kiln-launcher``: the same module with each launch sent through ``Launcher[grid](...)``
  as wrappers did before (allocation and ATen calls stay bound);
- on the GPU, ``inductor``: ``torch.compile`` default mode, in the same process.

Without a GPU the kernels are compiled for nothing: torch's generic launcher is replaced by
a no-op C call, so what is timed is the host's own work per call, on CPU tensors.
``--baseline PATH`` also runs this script against another checkout (``/work/main``: the
wrapper before bound launches) in a subprocess and prints the ratio.

    python benchmarks/bench_launch.py [--calls 2000] [--baseline PATH] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

CHAIN_OPTIONS = {"fusion_max_nodes": 1, "inline_max_ops": 0}   # one kernel per step


class Chain(torch.nn.Module):
    def forward(self, x):
        for _ in range(64):
            x = (x * 1.01 + 0.1) * x.t()
        return x


class Layers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.LayerNorm(64))
            for _ in range(16))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


MODELS = {"chain": (Chain, (32, 32), CHAIN_OPTIONS), "layers": (Layers, (8, 64), {})}


def _time(fn, calls: int, sync) -> float:
    """Microseconds per call: the median of 5 rounds of ``calls`` calls, synced after each."""
    for _ in range(20):
        fn()
    sync()
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        rounds.append((time.perf_counter() - start) / calls * 1e6)
    return sorted(rounds)[2]


def _flat(captured, model, args) -> list:
    state = dict(model.named_parameters()) | dict(model.named_buffers())
    user = iter(args)
    return [state[i.target].detach() if i.target in state else next(user)
            for i in captured.inputs]


def _noop_launcher() -> None:
    """torch's generic launcher replaced by a no-op C call (``str.format`` ignores extra
    arguments), so a static-shape CUDA module runs its host side on CPU tensors."""
    from compiler.kernels import launch

    class Noop:
        _launch_kernel = "".format

        @staticmethod
        def _load_kernel(path, name, shared, device):
            return (name, 0, 0)
    launch._impl = lambda: Noop
    torch._C._cuda_getCurrentRawStream = lambda device: 0


def _cpu_module(model, args, options, code_dir: Path):
    """The model's static CUDA module, loaded here, every kernel a no-op ``StaticKernel``."""
    from compiler.api import lower
    from compiler.capture import capture_module
    from compiler.kernels import launch
    from compiler.kernels.load import load_module
    captured = capture_module(model, args)
    artifact = lower(captured, options, "cuda")
    launched = [k for k in artifact.kernels if not k.spec.candidate]
    module = load_module(artifact.source, "cuda", code_dir, static_shapes=True,
                         kernels={k.name for k in launched})
    for kernel in launched:
        launcher = getattr(module, kernel.name)
        n = sum(not p.is_constexpr for p in launcher.fn.params)
        plan = launch.LaunchPlan(kernel.name, "none.cubin", tuple(range(n)), "O" * n, 0, 4, 0)
        launcher._compiled[launch.Launcher._key(kernel.spec.launch.kwargs())] = \
            launch.StaticKernel(None, plan, 0)
    return module, _flat(captured, model, args), len(launched)


def _launcher_path(module) -> bool:
    """Send ``module``'s bound launches through ``Launcher[grid](...)``, as before; False
    where the module has none (a checkout before bound launches)."""
    try:
        from compiler.kernels.host import BoundLaunch
    except ImportError:
        return False
    for bound in [v for v in vars(module).values() if isinstance(v, BoundLaunch)]:
        bound.run = lambda *a, b=bound: b.kernel[b.grid](*a[:-1], **b.meta)
    return True


def run_cpu(calls: int, code_dir: Path) -> dict:
    _noop_launcher()
    torch.set_num_threads(1)     # cuBLAS's stand-in, CPU addmm, on one core: steadier times
    rows = {}
    for name, (make, shape, options) in MODELS.items():
        torch.manual_seed(0)
        model, args = make().eval(), (torch.randn(*shape),)
        module, flat, kernels = _cpu_module(model, args, options, code_dir)
        with torch.no_grad():
            row = {"kernels": kernels, "kiln_us": _time(lambda: module.call(list(flat)), calls,
                                                        lambda: None)}
            if _launcher_path(module):
                row["kiln-launcher_us"] = _time(lambda: module.call(list(flat)), calls,
                                                lambda: None)
        rows[name] = row
    return rows


def run_gpu(calls: int) -> dict:
    import compiler
    rows = {}
    for name, (make, shape, options) in MODELS.items():
        torch.manual_seed(0)
        model = make().cuda().eval()
        x = torch.randn(*shape, device="cuda")
        kiln = compiler.compile_module(model, (x,), {**options, "cuda_graphs": False})
        row = {"kernels": kiln.kernel_count}
        with torch.no_grad():
            torch.testing.assert_close(kiln(x), model(x), rtol=1e-3, atol=1e-3)
            row["kiln_us"] = _time(lambda: kiln(x), calls, torch.cuda.synchronize)
            if _launcher_path(kiln.compiled.module):
                row["kiln-launcher_us"] = _time(lambda: kiln(x), calls, torch.cuda.synchronize)
            row.update(_inductor(model, x, name, calls))
        rows[name] = row
    return rows


def _inductor(model, x, name: str, calls: int) -> dict:
    """torch.compile default mode; for the chain, fusion off as for kiln (Inductor would
    fuse the chain into one kernel and time something else)."""
    import torch._inductor.config as inductor_config
    from torch._inductor import metrics
    torch._dynamo.reset()
    patch = {"max_fusion_size": 1, "realize_opcount_threshold": 0} if name == "chain" else {}
    try:
        with inductor_config.patch(patch):
            before = metrics.generated_kernel_count
            compiled = torch.compile(model)
            compiled(x)
            kernels = metrics.generated_kernel_count - before
        return {"inductor_kernels": kernels,
                "inductor_us": _time(lambda: compiled(x), calls, torch.cuda.synchronize)}
    except Exception as err:  # noqa: BLE001 -- reported in the output, kiln's rows stand
        return {"inductor_error": f"{type(err).__name__}: {err}"}


def report(rows: dict, label: str) -> list[str]:
    lines = []
    for name, row in rows.items():
        parts = [f"{label:>9} {name:<7} kernels {row['kernels']:>3}"]
        for system in ("kiln", "kiln-launcher", "inductor"):
            if f"{system}_us" in row:
                kernels = row.get(f"{system}_kernels", row["kernels"]) or 1
                parts.append(f"{system} {row[f'{system}_us']:8.1f} us/call "
                             f"{row[f'{system}_us'] / kernels:6.2f} us/kernel")
        if "inductor_kernels" in row:
            parts.append(f"(inductor kernels {row['inductor_kernels']})")
        if "inductor_error" in row:
            parts.append(f"inductor failed: {row['inductor_error']}")
        lines.append(" | ".join(parts))
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the checkout whose compiler is timed")
    parser.add_argument("--baseline", type=Path, help="also time this checkout (subprocess)")
    parser.add_argument("--code-dir", type=Path, default=Path("/tmp/kiln-bench-launch"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--raw", action="store_true", help="print the rows as JSON only")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.root.resolve()))
    args.code_dir.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.is_available()
    rows = run_gpu(args.calls) if gpu else run_cpu(args.calls, args.code_dir)
    if args.raw:
        print(json.dumps(rows))
        return 0
    out = {"device": torch.cuda.get_device_name() if gpu else "cpu (no-op launcher)",
           "torch": torch.__version__, "this": rows}
    print(f"bench_launch on {out['device']}, torch {torch.__version__}, {args.calls} calls "
          "x 5 rounds, median")
    if args.baseline:
        done = subprocess.run([sys.executable, __file__, "--raw", "--calls", str(args.calls),
                               "--root", str(args.baseline), "--code-dir", str(args.code_dir)],
                              capture_output=True, text=True, check=True)
        out["baseline"] = json.loads(done.stdout.strip().splitlines()[-1])
        print("\n".join(report(out["baseline"], "baseline")))
    print("\n".join(report(rows, "this")))
    if args.baseline:
        for name, row in rows.items():
            old = out["baseline"][name]["kiln_us"]
            print(f"{name}: {old:.1f} -> {row['kiln_us']:.1f} us/call "
                  f"({old / row['kiln_us']:.2f}x less host time)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
