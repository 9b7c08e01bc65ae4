"""Configs that cannot build for a target, found before building them.

``build`` (``compiler.kernels.build``) refuses a config after compiling it when its cubin
needs more than the target has (``_resource_problem``). Each refusal cost seconds of CPU for
nothing; here the same limits are checked on *lower bounds* of what a config needs, computed
from its block sizes, the kernel's dtypes and ``num_stages`` alone:

  * threads: ``num_warps * 32`` above the 1024 threads a block may have;
  * shared memory: a GEMM template keeps an A and a B tile in shared memory for at least
    ``max(1, num_stages - 1)`` pipeline stages (Triton's pipeliner allocates that many
    buffers, or more), at the narrowest operand dtype, against the target's per-block limit;
  * registers: a GEMM's float32 accumulator lives in registers, ``BLOCK_M*BLOCK_N/threads``
    of them a thread at least: above 255 (the most a thread can address) it spills, which
    the limits forbid (``max_local_bytes``), and times the threads above ``regs_per_sm``
    the block cannot be resident.

Only lower bounds, so a config pruned here would have failed its build too; one that passes
may still fail (the build then says so). The default config is never pruned: every module
that uses the kernel launches it. A pruned config is a ``Pruned`` with its reason, for the
caller to record (the tune stage writes it as a trial with origin "pruned").

Example:
    >>> from compiler.kernels.spec import TargetLimits
    >>> sm90 = TargetLimits(90, max_shared_bytes=232448, regs_per_sm=65536, max_local_bytes=0)
    >>> big = Config(BLOCK_M=256, BLOCK_N=256, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=5)
    >>> small = big.replace(BLOCK_M=64, BLOCK_N=64)
    >>> kept, pruned = prune("matmul", [small, big], sm90, ("torch.float16",) * 3, default=small)
    >>> kept == [small], pruned[0].reason.startswith("shared memory")
    (True, True)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ..kernels.spec import Config, TargetLimits
from .spaces import GEMM_KINDS

MAX_THREADS_PER_BLOCK = 1024
MAX_REGS_PER_THREAD = 255
_BYTES = {"float64": 8, "int64": 8, "float32": 4, "int32": 4, "float16": 2, "bfloat16": 2,
          "int16": 2, "int8": 1, "uint8": 1, "bool": 1}


@dataclass(frozen=True)
class Pruned:
    """A config left unbuilt, and why (the trial row's ``error``)."""
    config: Config
    reason: str


def dtype_bytes(dtype: str) -> int:
    """Element size of a dtype name: ``"torch.bfloat16"`` -> 2 (unknown names: 4)."""
    return _BYTES.get(str(dtype).removeprefix("torch."), 4)


def operand_bytes(dtypes: Sequence[str]) -> int:
    """The narrowest floating element among the pointers: what a lower bound may assume."""
    floats = [dtype_bytes(d) for d in dtypes if "float" in str(d)]
    return min(floats or [dtype_bytes(d) for d in dtypes] or [4])


def shared_bytes_lower_bound(kind: str, config: Config, element_bytes: int) -> int:
    """Shared memory ``config`` needs at least; 0 for kinds that need none for sure (a
    reduction's cross-warp scratch may be reused from elsewhere, so it is not counted)."""
    if kind not in GEMM_KINDS or config.extern:
        return 0
    stages = max(1, config.num_stages - 1)
    return (config.BLOCK_M + config.BLOCK_N) * config.BLOCK_K * element_bytes * stages


def regs_lower_bound(kind: str, config: Config) -> int:
    """Registers a thread needs at least: a GEMM's float32 accumulator share (0 otherwise)."""
    if kind not in GEMM_KINDS or config.extern:
        return 0
    return math.ceil(config.BLOCK_M * config.BLOCK_N / (32 * config.num_warps))


def why_unbuildable(kind: str, config: Config, limits: TargetLimits | None,
                    element_bytes: int) -> str | None:
    """The first limit ``config`` exceeds for sure, or None (see the module doc)."""
    if config.extern:
        return None
    threads = 32 * config.num_warps
    if threads > MAX_THREADS_PER_BLOCK:
        return f"{threads} threads per block exceed {MAX_THREADS_PER_BLOCK}"
    if limits is None:
        return None
    shared = shared_bytes_lower_bound(kind, config, element_bytes)
    if shared > limits.max_shared_bytes:
        return (f"shared memory >= {shared} bytes exceeds sm_{limits.arch}'s "
                f"{limits.max_shared_bytes}")
    regs = regs_lower_bound(kind, config)
    if regs > MAX_REGS_PER_THREAD and limits.max_local_bytes == 0:
        return f">= {regs} registers a thread (the accumulator) exceed {MAX_REGS_PER_THREAD}"
    if regs * threads > limits.regs_per_sm:
        return (f">= {regs} registers x {threads} threads exceed sm_{limits.arch}'s "
                f"{limits.regs_per_sm}")
    return None


def prune(kind: str, configs: Sequence[Config], limits: TargetLimits | None,
          dtypes: Sequence[str], default: Config | None = None
          ) -> tuple[list[Config], list[Pruned]]:
    """(configs kept in order, configs pruned with reasons); ``default`` is always kept."""
    element = operand_bytes(dtypes)
    kept, pruned = [], []
    for config in configs:
        reason = None if config == default else why_unbuildable(kind, config, limits, element)
        if reason is None:
            kept.append(config)
        else:
            pruned.append(Pruned(config, reason))
    return kept, pruned
