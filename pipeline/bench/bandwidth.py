"""How close memory-bound kernels come to the card's copy rate, measured in the same process.

The ceiling is a device-to-device copy (bytes read + written per second, DESIGN.md's
"Measuring"); each kernel's time comes from torch.profiler's device-side records of a few
calls, its bytes from kiln's own kernel metadata (``meta["bytes"]``: read + written). Only
kiln's kernels have known bytes; for other systems the profiler still counts kernels.

Example:
    >>> fractions([KernelTime("k0", 0.01, 1)], {"k0": KernelFacts(40_000_000, "pointwise")}, 4000.0)
    [{'name': 'k0', 'ms': 0.01, 'launches': 1, 'bytes': 40000000, 'fraction': 1.0}]
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from typing import Any, Callable

from compiler.autotune.spaces import GEMM_KINDS

# Kernel kinds whose floor is not their bytes at the copy rate: the GEMM templates (matmul,
# conv), bound by their FLOPs.
COMPUTE_BOUND_KINDS = GEMM_KINDS


@dataclass(frozen=True)
class KernelTime:
    name: str
    ms: float          # device time per call, summed over its launches in one call
    launches: int      # launches per call


@dataclass(frozen=True)
class KernelFacts:
    bytes: int
    kind: str


def copy_gbps(device: str, megabytes: int = 256, repeats: int = 20) -> float | None:
    """Device-to-device copy rate in GB/s (bytes read + written), or None off CUDA.

    Timed once per ``kiln bench`` run, in the parent (a property of the card, not of the
    system a child runs): the buffers are handed back to the driver after, so the children
    that follow have the card's memory."""
    import torch
    if device != "cuda":
        return None
    n = megabytes * 2**20
    src = torch.randint(0, 255, (n,), dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    times = []
    for k in range(repeats + 3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        if k >= 3:
            times.append(start.elapsed_time(end))
    del src, dst
    torch.cuda.empty_cache()
    return 2 * n / (statistics.median(times) * 1e-3) / 1e9


def _device_us(event: Any) -> float:
    # torch renamed cuda_* to device_* (2.4); read whichever this version has.
    for name in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(event, name):
            return float(getattr(event, name))
    return 0.0


def kernel_times(fn: Callable[[], Any], device: str, calls: int = 3) -> list[KernelTime] | None:
    """Device time and launches per call of every kernel ``fn`` runs (None off CUDA).

    ``fn`` must be warm: the child profiles right after its timed calls, so no call is
    spent here on warming it up."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    out = []
    for event in prof.key_averages():
        us = _device_us(event)
        if us > 0 and not event.key.startswith(("Memcpy", "Memset")):
            out.append(KernelTime(event.key, us / 1e3 / calls, round(event.count / calls)))
    return sorted(out, key=lambda k: -k.ms)


def kiln_kernel_facts(compiled_model: Any) -> dict[str, KernelFacts]:
    """Bytes and kind of each Triton kernel of a ``compiler.CompiledModel``, by name."""
    facts = {}
    for kernel in compiled_model.compiled.artifact.kernels:
        meta = json.loads(kernel.meta_json)
        if meta.get("bytes") is not None:
            facts[kernel.name] = KernelFacts(int(meta["bytes"]), str(meta.get("kind", "")))
    return facts


def fractions(times: list[KernelTime], facts: dict[str, KernelFacts],
              copy_rate_gbps: float) -> list[dict[str, Any]]:
    """Per memory-bound kernel: its achieved rate over the copy rate."""
    out = []
    for k in times:
        fact = facts.get(k.name)
        if fact is None or fact.kind in COMPUTE_BOUND_KINDS or k.ms <= 0:
            continue
        per_launch_ms = k.ms / max(k.launches, 1)
        rate = fact.bytes / (per_launch_ms * 1e-3) / 1e9
        out.append({"name": k.name, "ms": k.ms, "launches": k.launches, "bytes": fact.bytes,
                    "fraction": round(rate / copy_rate_gbps, 4)})
    return out


def overall_fraction(rows: list[dict[str, Any]], copy_rate_gbps: float) -> float | None:
    """All memory-bound kernels together: their bytes over their time, over the copy rate
    (time-weighted, so a slow big kernel counts more than a fast tiny one)."""
    seconds = sum(r["ms"] for r in rows) * 1e-3
    if not rows or seconds <= 0:
        return None
    launches_bytes = sum(r["bytes"] * r.get("launches", 1) for r in rows)
    return launches_bytes / seconds / 1e9 / copy_rate_gbps
