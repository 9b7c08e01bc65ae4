"""Starting the CUDA libraries a module's ATen ops call, on a thread, while the module loads.

A served module's first call pays once for each library its ATen ops (``meta["extern_ops"]``)
use: cuDNN and cuBLAS load their shared libraries and create their handles on first use, a
cost eager PyTorch pays too. Loading the module (reading rows, checking hashes, loading
cubins) needs none of them, so ``start_libraries`` runs one tiny op of each library needed
on a thread meanwhile; torch releases the GIL inside its ops, so both go on at once. The
loader joins the thread before handing the module out: a CUDA graph capture must not meet
another thread's CUDA work. A warm-up that fails only leaves the cost to the first call,
where the real op raises its own error.

Example:
    >>> sorted(libraries_for(["aten.convolution.default", "aten.addmm.default", "aten.relu"]))
    ['cublas', 'cudnn']
"""
from __future__ import annotations

import threading
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

# Which library each ATen op (by packet name) starts on CUDA.
_OP_LIBRARY = {
    "convolution": "cudnn", "_convolution": "cudnn", "cudnn_convolution": "cudnn",
    "mm": "cublas", "addmm": "cublas", "bmm": "cublas", "baddbmm": "cublas",
    "linear": "cublas", "matmul": "cublas",
    "scaled_dot_product_attention": "attention",
    "_scaled_dot_product_flash_attention": "attention",
    "_scaled_dot_product_efficient_attention": "attention",
    "_scaled_dot_product_cudnn_attention": "attention",
}


def _cudnn(device: torch.device, dtype: torch.dtype) -> None:
    x = torch.ones(1, 8, 4, 4, device=device, dtype=dtype)
    w = torch.ones(8, 8, 3, 3, device=device, dtype=dtype)
    F.conv2d(x, w, padding=1)
    F.conv2d(x.to(memory_format=torch.channels_last),
             w.to(memory_format=torch.channels_last), padding=1)


def _cublas(device: torch.device, dtype: torch.dtype) -> None:
    a = torch.ones(16, 16, device=device, dtype=dtype)
    torch.mm(a, a)
    torch.addmm(a[0], a, a)       # a bias epilogue: cuBLASLt where torch uses it
    torch.bmm(a[None], a[None])


def _attention(device: torch.device, dtype: torch.dtype) -> None:
    q = torch.ones(1, 1, 16, 64, device=device, dtype=dtype)
    F.scaled_dot_product_attention(q, q, q)


_STARTERS: dict[str, Callable[[torch.device, torch.dtype], None]] = {
    "cudnn": _cudnn, "cublas": _cublas, "attention": _attention,
}


def libraries_for(extern_ops: Iterable[str]) -> set[str]:
    """The libraries (``_STARTERS`` keys) the ops named ``aten.<packet>.<overload>`` use."""
    packets = {name.split(".")[1] for name in extern_ops if name.startswith("aten.")}
    return {_OP_LIBRARY[p] for p in packets if p in _OP_LIBRARY}


def start_libraries(extern_ops: Iterable[str], device: torch.device,
                    dtype: torch.dtype) -> threading.Thread | None:
    """A started thread starting each library the ops need on CUDA ``device`` in ``dtype``
    (join it before the module's first call), or None where there is nothing to start."""
    if device.type != "cuda":
        return None
    needed = sorted(libraries_for(extern_ops))
    if not needed:
        return None

    def run() -> None:
        with torch.cuda.device(device), torch.inference_mode():
            for library in needed:
                try:
                    _STARTERS[library](device, dtype)
                except Exception:    # noqa: BLE001 -- the first call pays, and reports
                    pass
            torch.cuda.current_stream(device).synchronize()

    thread = threading.Thread(target=run, name="kiln-start-libraries", daemon=True)
    thread.start()
    return thread
