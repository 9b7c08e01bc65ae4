"""A first lowering's wall time, as a cold compile pays it: each model captured and lowered
(cuda target, no GPU needed) in a fresh process, alternating between two checkouts.

    python benchmarks/bench_lower.py --base /path/to/older/checkout [--models a,b] [--rounds 5]

Prints each round and the median per model and checkout: ``first`` is the lowering a cold
compile runs (every memo empty), ``second`` the same graph lowered again in that process.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, sys.argv[1])
import torch, compiler
from compiler.capture import capture_module
from pipeline.zoo import text, vision
factory = getattr(vision, sys.argv[2], None) or getattr(text, sys.argv[2])
module, args = factory()[:2]
module.eval()
with torch.no_grad():
    captured = capture_module(module, tuple(args))
    times = []
    for _ in range(2):
        start = time.perf_counter()
        artifact = compiler.lower(captured, target="cuda")
        times.append(time.perf_counter() - start)
print(json.dumps({"first": times[0], "second": times[1], "kernels": len(artifact.kernels)}))
"""


def lower_once(repo: Path, model: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(repo), model],
                          capture_output=True, text=True, cwd=repo)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise SystemExit(f"{model} in {repo}: {done.stderr[-800:]}")
    return json.loads(lines[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", type=Path, required=True, help="the checkout to compare against")
    p.add_argument("--models", default="efficientnet_b0,convnext_tiny,resnet50,vit_b16")
    p.add_argument("--rounds", type=int, default=5)
    ns = p.parse_args()
    repos = {"base": ns.base.resolve(), "this": ROOT}
    rows: dict[tuple, list] = {}
    for r in range(ns.rounds):
        for model in ns.models.split(","):
            for name, repo in repos.items():
                row = lower_once(repo, model)
                rows.setdefault((model, name), []).append(row)
                print(f"round {r + 1} {model:<16} {name:<5} first {row['first']:6.2f} s  "
                      f"second {row['second']:6.2f} s  kernels {row['kernels']}", flush=True)
    print(f"\nmedians over {ns.rounds} rounds (s): model, first base -> this, second base -> this")
    for model in ns.models.split(","):
        med = {(n, k): statistics.median(x[k] for x in rows[(model, n)])
               for n in repos for k in ("first", "second")}
        print(f"{model:<16} first {med['base', 'first']:6.2f} -> {med['this', 'first']:6.2f}"
              f"   second {med['base', 'second']:6.2f} -> {med['this', 'second']:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
