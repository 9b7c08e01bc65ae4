"""A kernel at any candidate config, launched from the binary the build stage stored for it.

Tuning times many configs of one kernel; JIT-compiling each on the GPU worker costs far more
than timing it. The build stage already compiled every candidate for the card's architecture
(a ``binaries`` row: cubin plus Triton's metadata), so the tuner loads that cubin into the
CUDA context and launches it through torch's generic launcher (``kernels.launch``), as a
deployment does (``kernels.serve``), with no ``triton.compile`` and no JIT function.

A binary is used only where it was built for exactly this launch: the same argument types,
specializations (an integer equal to 1, 16-divisibility: a kernel key names no sizes, and the
build ran at one size) and Triton version. Otherwise ``load_stored`` says why, and the tuner
compiles that config itself.

Example:
    >>> from compiler.artifact import KernelArtifact
    >>> from compiler.kernels.spec import KernelKind, KernelSpec, LaunchConfig
    >>> spec = KernelSpec(KernelKind.POINTWISE_1D, ("in_ptr0", "out_ptr0"),
    ...                   ("torch.float32",) * 2, (4096, 4096), 1, ("4096",), (),
    ...                   LaunchConfig((("XBLOCK", 1024),), (4,)))
    >>> src = "@jit\\ndef k(in_ptr0, out_ptr0, xnumel, XBLOCK: tl.constexpr):\\n    pass\\n"
    >>> job, positional = config_job(KernelArtifact("k", "kk", src, spec),
    ...                              Config(XBLOCK=256, num_warps=4), spec.dtypes, (4096,))
    >>> job.types["xnumel"], job.divisible_by_16, positional
    ('i32', [0, 1, 2], ['in_ptr0', 'out_ptr0', 'xnumel'])
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

from ..artifact import KernelArtifact
from .launch import StaticKernel, available, plan_for
from .serve import StoredBinary, _cubin_file, binary_mismatch, triton_version
from .signature import KernelJob, params, signature
from .spec import Config


def config_job(kernel: KernelArtifact, config: Config, dtypes: Sequence[str],
               sizes: Sequence[int]) -> tuple[KernelJob, list[str]]:
    """The compile job of ``kernel`` launched at ``config`` on pointers of ``dtypes`` with
    integer arguments ``sizes`` (numels, then size symbols), and its positional parameters."""
    names = params(kernel.source, kernel.name)
    sig = signature(names, kernel, config, dtypes, sizes)
    job = KernelJob(kernel.name, {**config.blocks(), **config.options()}, sig.constexprs,
                    config.options(), sig.types, sorted(k[0] for k in sig.attrs))
    return job, [n for n in names if n not in kernel.spec.kind.blocks]


def load_stored(kernel: KernelArtifact, config: Config, dtypes: Sequence[str],
                sizes: Sequence[int], binary: StoredBinary, scratch: Path,
                device: int | None = None) -> StaticKernel | str:
    """``binary`` loaded on CUDA ``device`` for ``kernel`` at ``config`` (launch it as
    ``kernel[grid](*pointers, *sizes)``; default: the current device), or why it cannot run
    this launch. ``scratch`` holds the cubin files, named by digest (one is reused only if
    its bytes are the binary's)."""
    if not available():
        return "torch's generic CUDA launcher is missing (a CPU build, or torch < 2.8)"
    try:
        job, positional = config_job(kernel, config, dtypes, sizes)
    except ValueError as e:
        return f"no signature: {e}"
    why = binary_mismatch(job, binary, triton_version())
    if why:
        return why
    meta = json.loads(binary.metadata["triton_metadata"])
    plan = plan_for(meta, job.types, positional, str(_cubin_file(binary.cubin, Path(scratch))))
    if isinstance(plan, str):
        return plan
    try:
        device = torch.cuda.current_device() if device is None else device
        return StaticKernel(None, plan, device)
    except RuntimeError as e:      # the driver refused the module: compile it instead
        return f"load failed: {e}"
