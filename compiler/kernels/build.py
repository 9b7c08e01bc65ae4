"""Every ``triton.compile`` kiln makes, and every private Triton call it needs to build.

* ``signature``: the specialization Triton's JIT would give a kernel at a launch (pointer
  types, i32/i64 integers, an integer equal to 1 as a constexpr, 16-divisibility).
* ``compile_kernel``: one kernel of a loaded module for one target (precompile, stored
  binaries), ``build``: one kernel's source at one config for a GPU architecture on a CPU
  (the pipeline's build stage): cubin plus metadata, failures as statuses, never raised.
  Too much shared memory, registers past what one block may hold, or spills past the
  target's limit are ``resource_error`` (limits: ``configs/autotune/default.toml``).
* ``warm_backend`` and ``build_launcher``: start-up costs paid ahead of a first launch (in
  ``worker_build``, with the compile call itself: what a compile worker runs without torch).

The extern config of a GEMM template (``Config(extern=1)``) is "ok" with no cubin: its
cuBLAS call needs no build, and tuning must still time it.

Example (needs Triton's CUDA backend, not a GPU):
    >>> # result = build(kernel, Config(XBLOCK=1024, num_warps=4), dtypes=["torch.float32"] * 2)
    >>> # result.status, result.cubin[:4], result.metadata["shared"]
    >>> # ('ok', b'\\x7fELF', 0)
    >>> Target.of("cuda:90:32").arch_name
    'sm_90'
"""
from __future__ import annotations

import dataclasses
import functools
import json
import re
import shutil
import subprocess
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import triton

from ..artifact import KernelArtifact, content_hash
from .signature import (KernelJob, MissingDtypesError, Signature, dtype_name,  # noqa: F401
                        kernel_jobs, launcher_key, signature)
from .source import load_kernel
from .spec import Config, Target, TargetLimits, parse_targets  # noqa: F401 (Target re-exported)
from .worker_build import (build_launcher, compile_job, kernel_source,  # noqa: F401 (re-exported)
                           use_cache_dir, warm_backend)

BUILD_STATUSES = ("ok", "build_error", "resource_error")
MAX_THREADS_PER_BLOCK = 1024


def current_target() -> Target:
    """The active card's target (needs a GPU)."""
    current = triton.runtime.driver.active.get_current_target()
    return Target(current.backend, current.arch, current.warp_size)


def ast_source(fn, job: KernelJob):
    """Triton's ``ASTSource`` of ``fn`` (a JITFunction) specialized as ``job`` launches it."""
    return kernel_source(fn, dataclasses.asdict(job))


def compile_kernel(fn, job: KernelJob, target: Target):
    """``triton.compile`` of ``fn`` (a JITFunction) for ``job``: a cache hit when a worker
    (or an earlier run) compiled the same kernel into the same Triton cache. The worker's
    own compile call (``worker_build.compile_job``), so both sides key alike."""
    return compile_job(fn, dataclasses.asdict(job), target)


def cache_dir() -> str:
    """Triton's on-disk cache directory in this process."""
    return str(triton.knobs.cache.dir)


# ----------------------------------------------------------------------------- cross-compiling
@dataclass(frozen=True)
class BuildResult:
    """One (kernel, config, target) build. ``cubin`` is None unless it compiled."""
    kernel_key: str
    kernel_name: str
    config: Config
    target: Target
    status: str
    cubin: bytes | None
    metadata_json: str          # curated Triton metadata plus resource usage (see ``build``)
    error: str | None
    seconds: float
    triton_version: str = triton.__version__

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def metadata(self) -> dict[str, Any]:
        return json.loads(self.metadata_json)


def _cuobjdump() -> str | None:
    try:
        import triton.backends.nvidia as nvidia
        path = Path(nvidia.__file__).parent / "bin" / "cuobjdump"
        if path.exists():
            return str(path)
    except ImportError:
        pass
    return shutil.which("cuobjdump")


def resource_usage(cubin: bytes) -> dict[str, int]:
    """``{"n_regs", "stack_bytes", "static_shared_bytes", "local_bytes"}`` of a cubin's
    kernel, read by ``cuobjdump --dump-resource-usage`` (shipped with Triton); empty when
    the tool is missing or fails (the GPU fills ``n_regs``/``n_spills`` when it loads)."""
    tool = _cuobjdump()
    if tool is None:
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        try:
            out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True,
                                 text=True, timeout=60, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            return {}
    found = {}
    for field, name in (("REG", "n_regs"), ("STACK", "stack_bytes"),
                        ("SHARED", "static_shared_bytes"), ("LOCAL", "local_bytes")):
        match = re.search(rf"\b{field}:(\d+)", out)
        if match:
            found[name] = int(match.group(1))
    return found


def _resource_problem(metadata: dict[str, Any], config: Config, limits: TargetLimits | None
                      ) -> str | None:
    threads = config.num_warps * 32
    if threads > MAX_THREADS_PER_BLOCK:
        return (f"{threads} threads per block (num_warps={config.num_warps}) exceed "
                f"{MAX_THREADS_PER_BLOCK}")
    if limits is None:
        return None
    if metadata.get("shared", 0) > limits.max_shared_bytes:
        return (f"shared memory {metadata['shared']} bytes exceeds sm_{limits.arch}'s "
                f"{limits.max_shared_bytes}")
    regs = metadata.get("n_regs")
    if regs is not None and regs * threads > limits.regs_per_sm:
        return (f"{regs} registers x {threads} threads exceed sm_{limits.arch}'s "
                f"{limits.regs_per_sm}")
    local = metadata.get("local_bytes")
    if local is not None and local > limits.max_local_bytes:
        return f"register spills: {local} bytes of local memory per thread"
    return None


@functools.lru_cache(maxsize=1)
def _shipped_limits() -> dict[int, TargetLimits]:
    from ..config import config_file
    path = config_file("autotune", "default.toml")
    with open(path, "rb") as f:
        return parse_targets(str(path), tomllib.load(f).get("targets", {}))


SHIPPED = "shipped"   # ``build``'s default limits: the shipped default space's [targets.N]

_METADATA_FIELDS = ("name", "shared", "num_warps", "num_stages", "num_ctas", "global_scratch_size",
                    "tmem_size", "hash")


def build(kernel: KernelArtifact, config: Config,
          target: Target | Sequence | str = ("cuda", 90, 32), *,
          dtypes: Sequence[str | torch.dtype] | None = None, sizes: Sequence[int] | None = None,
          limits: TargetLimits | None | str = SHIPPED, code_dir: Path | None = None
          ) -> BuildResult:
    """Compile ``kernel`` at ``config`` for ``target``; every failure is a status, not a raise.

    ``metadata`` holds Triton's ``name, shared, num_warps, num_stages, num_ctas,
    global_scratch_size, tmem_size, hash``, then what cuobjdump reads from the cubin
    (``n_regs, stack_bytes, static_shared_bytes, local_bytes``; ``n_spills`` stays None until
    a GPU loads it), the ``signature`` compiled for, ``target`` and ``triton_version``.
    ``dtypes`` override the pointer dtypes (see ``pointer_dtypes``); ``sizes`` are every
    integer argument (numels, then a dynamic kernel's size symbols: ``KernelLaunch.int_args``),
    needed only where the spec's numels are symbolic. ``limits``: the target's resource
    limits (a search space's ``targets``), by default the shipped ones; None checks none.
    """
    start = time.perf_counter()
    target = Target.of(target)
    meta: dict[str, Any] = {"target": target.name, "triton_version": triton.__version__,
                            "n_spills": None}

    def result(status: str, cubin: bytes | None = None, error: str | None = None) -> BuildResult:
        return BuildResult(kernel.kernel_key, kernel.name, config, target, status, cubin,
                           json.dumps(meta, sort_keys=True, default=str), error,
                           time.perf_counter() - start)

    if config.extern:   # the cuBLAS path a GEMM template competes with: nothing to compile
        meta["extern"] = True
        return result("ok")
    try:
        fn = load_kernel(kernel.name, kernel.source, "cuda", code_dir)
        sig = signature(fn.arg_names, kernel, config, dtypes, sizes)
    except (ValueError, SyntaxError, AttributeError, KeyError) as e:
        return result("build_error", error=f"{type(e).__name__}: {e}")
    meta["signature"] = sig.as_json()
    if config.num_warps * 32 > MAX_THREADS_PER_BLOCK:
        return result("resource_error", error=_resource_problem(meta, config, None))
    try:
        from triton.compiler import ASTSource
        source = ASTSource(fn, sig.types, sig.constexprs, sig.attrs)
        compiled = triton.compile(source, target=target.triton(), options=config.options())
    except Exception as e:   # noqa: BLE001 -- any compiler failure is this config's result
        status = "resource_error" if type(e).__name__ == "OutOfResources" else "build_error"
        return result(status, error=_error_text(e))
    triton_meta = compiled.metadata._asdict()
    meta.update({k: triton_meta[k] for k in _METADATA_FIELDS if k in triton_meta})
    # Triton's own metadata file, verbatim: with the cubin it is what a deployment needs to
    # launch the binary without compiling (kernels.load.preload_binaries).
    meta["triton_metadata"] = json.dumps(triton_meta, default=vars, sort_keys=True)
    cubin = compiled.asm.get("cubin")
    if not cubin:
        return result("build_error", error=f"no cubin produced for {target.name}")
    meta["cubin_sha256"] = content_hash(cubin)
    meta.update(resource_usage(cubin))
    if limits == SHIPPED:
        limits = _shipped_limits().get(target.arch)
    problem = _resource_problem(meta, config, limits)
    if problem:
        return result("resource_error", cubin, problem)
    return result("ok", cubin)


def _error_text(e: BaseException, limit: int = 4000) -> str:
    text = f"{type(e).__name__}: {e}"
    return text if len(text) <= limit else text[:limit] + " ...[truncated]"
