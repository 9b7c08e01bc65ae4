"""Serving a compiled CUDA module from stored cubins, with no Triton in the process.

A deployment has what ``kiln run`` baked: the module's wrapper source and, per kernel, a
cubin built for this GPU's architecture with Triton's metadata. Each kernel is loaded into
the CUDA context and launched through torch's generic launcher (``kernels.launch``); the
wrapper's ``call`` runs with those launchers bound where its source names the kernels. No
JIT function is made, nothing compiles, no host launcher is built, and Triton itself is not
imported (a tenth of a second a process saves). The wrapper's bound section
(``codegen.wrapper.BOUND``) runs too, so each launch site binds its served kernel once.

A kernel is served only where its stored binary was built for exactly this launch: the same
argument types, specializations (an integer equal to 1, 16-divisibility) and Triton
version; ``ServeError`` names each kernel that is not, and why.

Example:
    >>> wrapper_source("import torch\\n@jit\\ndef k(x):\\n    pass\\n\\n\\ndef call(args):\\n    return ()\\n")
    'import torch\\nfrom compiler.runtime import ensure_strides, reinterpret\\n\\n\\ndef call(args):\\n    return ()\\n'
"""
from __future__ import annotations

import functools
import hashlib
import json
import types
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..artifact import CompiledArtifact, KernelArtifact
from .launch import LaunchPlan, StaticKernel, available, plan_for
from .signature import KernelJob, params, signature

# What a wrapper's ``call`` needs besides its kernels (the rest of the generated header
# imports Triton for the kernels' own definitions, which serving does not run).
_SERVING_HEADER = "import torch\nfrom compiler.runtime import ensure_strides, reinterpret"
_CALL = "\n\n\ndef call(args):\n"
_BOUND = "\n\n\n# Bound once, when the module loads.\n"    # codegen.wrapper.BOUND


class ServeError(RuntimeError):
    """A module cannot be served from its stored binaries; the message names each kernel
    that lacks a usable one and why."""


@dataclass(frozen=True)
class StoredBinary:
    """A kernel binary built ahead of time (a store ``binaries`` row): the cubin and the
    build's metadata (``signature``, ``triton_metadata``, ``triton_version``)."""
    cubin: bytes
    metadata: dict


@functools.lru_cache(maxsize=None)
def triton_version() -> str:
    """The installed Triton's version, read without importing it. Read once a process:
    each read parses the package's metadata file (0.7 ms; a served ViT-B/16 asked 39 times,
    a quarter of load_model's store reads on a 2-core CPU)."""
    try:
        return metadata.version("triton")
    except metadata.PackageNotFoundError:
        return ""


def binary_mismatch(job: KernelJob, binary: StoredBinary, version: str | None = None
                    ) -> str | None:
    """Why ``binary`` cannot run ``job``'s launch, or None. A kernel key names source and
    dtypes, not sizes: a binary built where a size was divisible by 16 (or was 1) assumes it,
    so it is used only where this launch specializes exactly the same way."""
    meta = binary.metadata
    version = triton_version() if version is None else version
    if meta.get("triton_version") != version:
        return f"built by Triton {meta.get('triton_version')}, running {version}"
    if "triton_metadata" not in meta:
        return "built without Triton's metadata"
    sig = meta.get("signature", {})
    want = {"types": job.types, "constexprs": job.constexprs,
            "divisible_by_16": sorted(job.divisible_by_16)}
    for part, value in want.items():
        if sig.get(part) != value:
            return f"built for {part} {sig.get(part)}, launched with {value}"
    return None


def wrapper_source(source: str) -> str:
    """The wrapper's bound section and ``call`` of a generated module, without the kernels'
    definitions (a module generated before the bound section: its ``call`` alone)."""
    at = source.find(_BOUND)
    at = source.find(_CALL) if at < 0 else at
    if at < 0:
        raise ServeError("the module source has no call(args)")
    return _SERVING_HEADER + source[at:]


def kernel_job(kernel: KernelArtifact) -> tuple[KernelJob, list[str]]:
    """The compile job of a kernel at its wrapper's launch config, and its positional
    (non-constexpr) parameters, from its source and spec alone."""
    names = params(kernel.source, kernel.name)
    config = kernel.spec.launch.config()
    sig = signature(names, kernel, config)
    job = KernelJob(kernel.name, kernel.spec.launch.kwargs(), sig.constexprs, config.options(),
                    sig.types, sorted(k[0] for k in sig.attrs))
    return job, [n for n in names if n not in kernel.spec.kind.blocks]


class ServedKernel:
    """A stored binary bound to the wrapper's launch syntax: ``kernel[grid](*args, **kw)``
    (the keyword arguments are the launch config the binary was built for)."""

    def __init__(self, static: StaticKernel):
        self.static = static

    def __getitem__(self, grid: Sequence[int]):
        grid = tuple(grid) + (1,) * (3 - len(grid))
        return lambda *args, **_: self.static.run(grid, args)


def _plan(kernel: KernelArtifact, binary: StoredBinary, files: dict[int, Path],
          scratch: Path, version: str) -> LaunchPlan | str:
    job, positional = kernel_job(kernel)
    why = binary_mismatch(job, binary, version)
    if why:
        return why
    meta = json.loads(binary.metadata["triton_metadata"])
    if id(binary) not in files:     # kernels sharing one stored binary share its file
        files[id(binary)] = _cubin_file(binary.cubin, scratch)
    return plan_for(meta, job.types, positional, str(files[id(binary)]))


def _cubin_file(cubin: bytes, scratch: Path) -> Path:
    """The file a cubin is launched from, named by its digest. One left by an earlier load
    is reused only if it holds exactly the verified cubin."""
    path = Path(scratch) / f"{hashlib.sha256(cubin).hexdigest()[:32]}.cubin"
    if not path.exists() or path.read_bytes() != cubin:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{id(path)}.tmp")
        tmp.write_bytes(cubin)
        tmp.replace(path)
    return path


def serve_module(artifact: CompiledArtifact, binaries: Mapping[str, StoredBinary],
                 scratch: Path, constants: Mapping[str, torch.Tensor] | None = None,
                 device: int | None = None) -> types.ModuleType:
    """The artifact's wrapper as a module whose kernels launch their stored binaries on CUDA
    ``device`` (default: the current one). Raises ``ServeError`` naming every kernel without
    a binary that can run its launch."""
    if not available():
        raise ServeError("torch's generic CUDA launcher is missing (a CPU build, or torch "
                         "< 2.8), so stored binaries cannot be launched without Triton")
    device = torch.cuda.current_device() if device is None else device
    version = triton_version()
    namespace: dict[str, Any] = {}
    problems = []
    files: dict[int, Path] = {}
    # A model repeats kernels (one per layer: BERT-base launches 98 kernels of 8 sources), and
    # equal plans name the same cubin file, symbol and launch: each is loaded into the
    # context once, since a module load costs far more than the launch it serves.
    loaded: dict[LaunchPlan, ServedKernel] = {}
    for kernel in artifact.kernels:
        if kernel.spec.candidate:    # a GEMM template kept only to be tuned: never launched
            continue
        binary = binaries.get(kernel.name)
        plan = (_plan(kernel, binary, files, Path(scratch), version) if binary is not None
                else "no stored binary for this GPU's architecture")
        if isinstance(plan, str):
            problems.append(f"{kernel.name}: {plan}")
            continue
        if plan not in loaded:
            loaded[plan] = ServedKernel(StaticKernel(None, plan, device))
        namespace[kernel.name] = loaded[plan]
    if problems:
        raise ServeError("kernels without a servable binary: " + "; ".join(problems))
    module = types.ModuleType(f"kiln_served_{artifact.module_key[:24]}")
    module.__dict__.update(namespace)
    module.__dict__.update(constants or {})
    exec(compile(wrapper_source(artifact.source), f"<kiln {artifact.module_key[:16]}>", "exec"),
         module.__dict__)
    return module
