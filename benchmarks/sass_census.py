"""Instruction census of a model's kernels as Hopper machine code, with no GPU.

Lowers a zoo model for CUDA, builds the chosen kernels for sm_90 at their launch config
(``compiler.kernels.build``, Triton's own ptxas) and counts the SASS instructions of each
(``cuobjdump -sass``, shipped with Triton). Instructions per element are what a
compute-bound kernel (a depthwise conv's taps) costs, where bytes moved say little.

    python benchmarks/sass_census.py pipeline.zoo.vision:convnext_tiny --batch 32 \\
        --dtype bfloat16 --ops mul:40 [--top 12]

``--ops OP:N`` picks kernels whose spec lists ``OP`` at least ``N`` times (default: all).
"""
from __future__ import annotations

import argparse
import collections
import math
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from compiler.api import lower  # noqa: E402
from compiler.autotune.spaces import Config  # noqa: E402
from compiler.capture import capture_module  # noqa: E402
from compiler.kernels.build import _cuobjdump, build  # noqa: E402
from pipeline.tasks import import_factory  # noqa: E402

SASS_LINE = re.compile(r"\s+/\*[0-9a-f]{4}\*/\s+(.*?)\s*;?\s*/\*")


def opcodes(cubin: bytes) -> list[str]:
    """The cubin's instructions, opcode with modifiers, predicates dropped."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        sass = subprocess.run([_cuobjdump(), "-sass", f.name], capture_output=True,
                              text=True, check=True).stdout
    out = []
    for line in sass.splitlines():
        match = SASS_LINE.match(line)
        if match:
            words = [w for w in match.group(1).split() if not w.startswith("@")]
            out.append(words[0].rstrip(";") if words else "?")
    return out


def _elements_per_thread(spec) -> float:
    params = dict(spec.launch.params)
    block = math.prod(v for k, v in params.items() if k.endswith("BLOCK"))
    return block / (32 * params.get("num_warps", 4))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("factory", help="module:function returning (model, args, ...)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--ops", default="", help="OP:N, kernels with OP at least N times")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    model, inputs = import_factory(args.factory)(batch=args.batch)[:2]
    dtype = getattr(torch, args.dtype)
    model = model.to(dtype).eval()
    inputs = tuple(t.to(dtype) if t.is_floating_point() else t for t in inputs)
    artifact = lower(capture_module(model, inputs), target="cuda")
    op, _, least = args.ops.partition(":")
    seen = set()
    for kernel in artifact.kernels:
        ops = [str(o.value if hasattr(o, "value") else o) for o in kernel.spec.ops]
        if (op and ops.count(op) < int(least or 1)) or kernel.kernel_key in seen:
            continue
        seen.add(kernel.kernel_key)
        result = build(kernel, Config(**dict(kernel.spec.launch.params)))
        if result.status != "ok":
            print(f"{kernel.name}: {result.status}: {result.error}")
            continue
        codes = opcodes(result.cubin)
        per = _elements_per_thread(kernel.spec)
        print(f"{kernel.name} numels {kernel.spec.numels} {dict(kernel.spec.launch.params)}: "
              f"{len(codes)} instructions, {len(codes) / per:.0f} per element")
        top = collections.Counter(codes).most_common(args.top)
        print("   " + ", ".join(f"{c} {n}" for c, n in top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
