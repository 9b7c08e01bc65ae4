"""Generated source to callables: module import with the device's bindings, one kernel
alone (build and tune), and stored cubins handed to kernels with no compile at all.

The same generated source runs on CUDA (``jit = triton.jit``, CUDA's libdevice) and on CPU
tensors under Triton's interpreter (``jit = InterpretedFunction``, the NumPy shim in
``kernels.interpreter``), which is how CI checks every kernel without a GPU. Modules are
written to a file first because ``triton.jit`` reads a kernel's source through ``inspect``.

Example:
    >>> sorted(bindings("cpu"))
    ['jit', 'libdevice']
"""
from __future__ import annotations

import concurrent.futures as cf
import functools
import hashlib
import importlib.util
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import triton

from ..artifact import CompiledArtifact, content_hash
from .build import KernelJob, ast_source, build_launcher, kernel_jobs, launcher_key
from .launch import Launcher

# A kernel's source alone names ``tl`` and ``triton``; ``jit`` and ``libdevice`` are bound
# by ``load_module`` for the device (CUDA or the interpreter).
PREAMBLE = "import triton\nimport triton.language as tl\n\n"


def bindings(device_type: str) -> dict[str, Any]:
    """Globals the generated module needs for ``device_type`` ("cuda" or "cpu")."""
    if device_type == "cuda":
        from triton.language.extra import libdevice
        return {"jit": triton.jit, "libdevice": libdevice}
    if device_type == "cpu":
        from .interpreter import interpreter_bindings
        return interpreter_bindings()
    raise ValueError(f"kiln runs kernels on 'cuda' or 'cpu' (interpreter), not {device_type!r}")


def load_module(source: str, device_type: str, code_dir: Path,
                constants: dict[str, torch.Tensor] | None = None,
                static_shapes: bool = False, kernels=None) -> types.ModuleType:
    """Write ``source`` to ``code_dir`` and import it with the device's bindings.

    With ``static_shapes`` on CUDA, each kernel (the names in ``kernels``; every JIT function
    when None) is wrapped in a ``Launcher``. Helper JIT functions the kernels call (a scan's
    combine function) must stay JIT functions: name only the kernels where there are any.
    """
    key = content_hash(source)[:24]
    path = Path(code_dir) / f"kiln_{key}.py"
    if not path.exists():
        tmp = path.with_suffix(f".{id(source)}.tmp")
        tmp.write_text(source)
        tmp.replace(path)   # atomic: concurrent loaders never import a half-written file
    spec = importlib.util.spec_from_file_location(f"kiln_generated_{key}", path)
    module = importlib.util.module_from_spec(spec)
    module.__dict__.update(bindings(device_type))
    module.__dict__.update(constants or {})
    spec.loader.exec_module(module)
    if device_type == "cuda" and static_shapes:
        for name, value in list(module.__dict__.items()):
            if (isinstance(value, triton.runtime.jit.JITFunction)
                    and (kernels is None or name in kernels)):
                setattr(module, name, Launcher(value))
    return module


@functools.lru_cache(maxsize=64)
def _load(source: str, device_type: str, code_dir: str):
    return load_module(PREAMBLE + source, device_type, Path(code_dir))


def load_kernel(name: str, source: str, device_type: str = "cuda",
                code_dir: Path | None = None):
    """One kernel's source as a JITFunction (``"cuda"``) or InterpretedFunction (``"cpu"``)."""
    if code_dir is None:
        from ..config import load_options
        code_dir = load_options().code_dir()
    return getattr(_load(source, device_type, str(code_dir)), name)


def launcher_jobs(artifact: CompiledArtifact, module) -> tuple[dict[str, Launcher], tuple]:
    """The ``Launcher`` of each kernel of the loaded ``module`` (static shapes only have
    them) and a job per launched kernel."""
    launchers = {k.name: getattr(module, k.name) for k in artifact.kernels}
    launchers = {n: l for n, l in launchers.items() if isinstance(l, Launcher)}
    jobs = kernel_jobs((k for k in artifact.kernels if k.name in launchers),
                       {n: l.fn.arg_names for n, l in launchers.items()})
    return launchers, jobs


# ----------------------------------------------------------------------------- stored binaries
@dataclass(frozen=True)
class StoredBinary:
    """A kernel binary built ahead of time (a store ``binaries`` row): the cubin and the
    build's metadata (``signature``, ``triton_metadata``, ``triton_version``)."""
    cubin: bytes
    metadata: dict


def binary_mismatch(job: KernelJob, binary: StoredBinary) -> str | None:
    """Why ``binary`` cannot run ``job``'s launch, or None. A kernel key names source and
    dtypes, not sizes: a binary built where a size was divisible by 16 (or was 1) assumes it,
    so it is used only where this launch specializes exactly the same way."""
    meta = binary.metadata
    if meta.get("triton_version") != triton.__version__:
        return f"built by Triton {meta.get('triton_version')}, running {triton.__version__}"
    if "triton_metadata" not in meta:
        return "built without Triton's metadata"
    sig = meta.get("signature", {})
    want = {"types": job.types, "constexprs": job.constexprs,
            "divisible_by_16": sorted(job.divisible_by_16)}
    for part, value in want.items():
        if sig.get(part) != value:
            return f"built for {part} {sig.get(part)}, launched with {value}"
    return None


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
