"""cuBLAS's one-time set-up begun on a thread while ``load_model`` reads and loads.

A fresh process's first matmul pays for loading cuBLAS, creating its handle and workspace:
77 ms of the first bf16 mm at ViT-B/16's QKV shape on an H100, against 5 ms once any 16x16
mm ran first, on whatever thread (``benchmarks/probes/first_ops.py``; numbers in
``benchmarks/results/2026-12-06/s4``). That set-up does not depend on the shape, so a tiny
mm on a thread of its own overlaps it with ``load_model``'s Parquet reads and cubin loads,
which are host work. torch releases the GIL inside the op, so the two run side by side.

``load_model`` joins the thread before it returns: nothing of it can run while the first
call captures a CUDA graph (a capture fails if another thread launches meanwhile).
cuDNN's per-shape plans are cached per thread, so they cannot be warmed this way; kiln's
own conv kernels (``conv_kernels``) and attention's backend order (``kernels.host``)
keep cuDNN off a served module's first call instead.
"""
from __future__ import annotations

import threading
from typing import Any


def warm_blas(device: Any, module: Any) -> threading.Thread:
    """A started thread running one 16x16 mm on ``device`` in the dtype of ``module``'s
    first floating parameter (float32 without one). An error there is left to the first
    call, which would meet it again and raise it where the caller sees it."""
    import torch
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()),
                 torch.float32)

    def run() -> None:
        try:
            with torch.cuda.device(device):
                a = torch.zeros(16, 16, dtype=dtype, device=device)
                torch.mm(a, a)
                torch.cuda.current_stream().synchronize()
        except RuntimeError:      # e.g. a dtype cuBLAS lacks: nothing to warm
            pass

    thread = threading.Thread(target=run, name="kiln-warm-blas", daemon=True)
    thread.start()
    return thread
