"""Loading an artifact's kernels: the module (``source.load_module``), each kernel's
``Launcher`` and compile job, and stored cubins handed to kernels with no compile at all.

Example:
    >>> binary_mismatch(KernelJob("k", {}, {}, {}, {}, []), StoredBinary(b"", {}))
    'built by Triton None, running ...'
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
from pathlib import Path
from typing import Any

from ..artifact import CompiledArtifact
from .build import KernelJob, ast_source, build_launcher, kernel_jobs, launcher_key
from .launch import Launcher
from .serve import StoredBinary, binary_mismatch  # noqa: F401 (re-exported)
from .source import bindings, load_kernel, load_module  # noqa: F401 (loading's entry points)

def launcher_jobs(artifact: CompiledArtifact, module) -> tuple[dict[str, Launcher], tuple]:
    """The ``Launcher`` of each kernel of the loaded ``module`` (static shapes only have
    them) and a job per launched kernel."""
    launchers = {k.name: getattr(module, k.name) for k in artifact.kernels}
    launchers = {n: l for n, l in launchers.items() if isinstance(l, Launcher)}
    jobs = kernel_jobs((k for k in artifact.kernels if k.name in launchers),
                       {n: l.fn.arg_names for n, l in launchers.items()})
    return launchers, jobs


# ----------------------------------------------------------------------------- stored binaries
def _compiled_kernel(fn, job: KernelJob, binary: StoredBinary, scratch: Path):
    """Triton's ``CompiledKernel`` of a stored binary: the files Triton reads it from are
    written under ``scratch`` (by the cubin's hash), nothing is compiled."""
    from triton.compiler.compiler import CompiledKernel
    digest = hashlib.sha256(binary.cubin).hexdigest()
    folder = Path(scratch) / digest[:32]
    folder.mkdir(parents=True, exist_ok=True)
    files = {f"{job.name}.json": folder / f"{job.name}.json",
             f"{job.name}.cubin": folder / f"{job.name}.cubin"}
    files[f"{job.name}.json"].write_text(binary.metadata["triton_metadata"])
    files[f"{job.name}.cubin"].write_bytes(binary.cubin)
    return CompiledKernel(ast_source(fn, job), {k: str(v) for k, v in files.items()}, digest)


def preload_binaries(artifact: CompiledArtifact, module, binaries: dict[str, StoredBinary],
                     scratch: Path) -> dict[str, Any]:
    """Give each ``Launcher`` of the loaded static-shape ``module`` its stored binary: no
    compiling at all, so a deployment's first call costs module loads, not compiles.

    ``binaries`` maps kernel names to binaries of the config the wrapper launches;
    ``scratch`` receives the files Triton reads a binary from. Returns ``{"preloaded",
    "skipped": {kernel: why}, "static", "launchers_built"}`` (kernels torch's generic
    launcher runs, and host launchers built for the others, one per ``launcher_key``); a
    skipped kernel compiles at its first launch as usual.
    """
    launchers, jobs = launcher_jobs(artifact, module)
    by_launcher, skipped, preloaded, static = {}, {}, 0, 0
    for job in jobs:
        binary = binaries.get(job.name)
        why = "no stored binary" if binary is None else binary_mismatch(job, binary)
        if why:
            skipped[job.name] = why
            continue
        kernel = _compiled_kernel(launchers[job.name].fn, job, binary, scratch)
        if launchers[job.name].preload(job.launch, kernel):
            static += 1
        else:                                                    # Triton's launcher runs it
            by_launcher.setdefault(launcher_key(job), kernel)
        preloaded += 1
    # Triton 3.6 builds each signature's host launcher with gcc when a kernel first runs, one
    # after another; built here side by side (gcc runs outside the GIL), one per
    # ``launcher_key`` as in ``precompile``, the first call finds them in Triton's cache.
    with cf.ThreadPoolExecutor(max(1, min(8, len(by_launcher)))) as threads:
        built = sum(threads.map(build_launcher, by_launcher.values()))
    return {"preloaded": preloaded, "skipped": skipped, "static": static,
            "launchers_built": built}
