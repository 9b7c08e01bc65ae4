"""torch.compile as a benchmarked system: its modes, and how many kernels Inductor generated.

Each system runs in a fresh process with fresh ``TORCHINDUCTOR_CACHE_DIR`` and
``TRITON_CACHE_DIR`` (``pipeline.bench.run``), so nothing here resets dynamo or clears
Inductor's in-memory caches: a new process has none.
"""
from __future__ import annotations

from typing import Any


def compiled(module: Any, dynamic_shapes: Any, mode: str | None) -> Any:
    """``torch.compile(module, mode=mode)``; dynamic when the zoo entry declares dynamic dims."""
    import torch
    return torch.compile(module, mode=mode, dynamic=True if dynamic_shapes else None)


def generated_kernels() -> int | None:
    """Kernels Inductor generated in this process, or None where torch has no such counter.

    ``torch._inductor.metrics`` is private: guarded, and the profiler's kernel count
    (``bandwidth.kernel_times``) stands in where it is missing."""
    try:
        from torch._inductor import metrics
        return int(metrics.generated_kernel_count)
    except (ImportError, AttributeError):
        return None
