"""Cross-compiling one kernel at one config for a GPU architecture, on a CPU: cubin + metadata.

``build`` turns a ``KernelArtifact``'s source into a JITFunction (written to a file behind a
small preamble, as ``compiler.runtime`` loads modules), derives the signature Triton's JIT
would specialize at launch (pointer dtypes, i32/i64 numels, ``numel == 1`` as a constexpr,
16-divisibility), and runs ``triton.compile(ASTSource(...), target=GPUTarget(...))``. No GPU
is needed. Failures are results, never exceptions: a compile error is ``build_error``; too
much shared memory, registers past what one block may hold, or spills (local memory) past
the target's limit are ``resource_error`` (limits from ``configs/autotune/default.toml``).

The extern config of a GEMM template (``Config(extern=1)``) is "ok" with no cubin: its
cuBLAS call needs no build, and tuning must still time it.

Pointer dtypes are not in kernel metadata yet: pass them (``dtypes=``), or they are read
from ``meta["dtypes"]`` once codegen records them; with neither, the build is a
``build_error`` that says so (a float32 guess would build a wrong binary for bf16 kernels).

Example (needs Triton's CUDA backend, not a GPU):
    >>> # result = build(kernel, Config(XBLOCK=1024, num_warps=4), dtypes=["torch.float32"] * 2)
    >>> # result.status, result.cubin[:4], result.metadata["shared"]
    >>> # ('ok', b'\\x7fELF', 0)
"""
from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import triton

from ..artifact import KernelArtifact, content_hash
from .spaces import (BLOCK_NAMES, Config, TargetLimits, TuningSpaces, kernel_numels,
                     load_spaces)

BUILD_STATUSES = ("ok", "build_error", "resource_error")
MAX_THREADS_PER_BLOCK = 1024
INT32_MAX = 2**31 - 1

# The kernel source alone names ``tl`` and ``triton``; ``jit`` and ``libdevice`` are bound by
# ``compiler.runtime.load_module`` for the device (CUDA or the interpreter).
PREAMBLE = "import triton\nimport triton.language as tl\n\n"


@dataclass(frozen=True)
class Target:
    """A GPU target: ``Target("cuda", 90, 32)`` is an H100 (sm_90)."""
    backend: str = "cuda"
    arch: int = 90
    warp_size: int = 32

    @classmethod
    def of(cls, value: "Target | Sequence | str") -> "Target":
        """From a Target, a ``("cuda", 90, 32)`` tuple or ``"cuda:90:32"``."""
        if isinstance(value, Target):
            return value
        if isinstance(value, str):
            value = value.split(":")
        backend, arch, warp = value
        return cls(str(backend), int(arch), int(warp))

    @property
    def name(self) -> str:
        """The store's ``target`` column: ``"cuda:90:32"``."""
        return f"{self.backend}:{self.arch}:{self.warp_size}"

    @property
    def arch_name(self) -> str:
        """The store's ``arch`` column: ``"sm_90"``."""
        return f"sm_{self.arch}"


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


# ----------------------------------------------------------------------------- signature
_TRITON_TYPES = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16",
                 "torch.float64": "fp64", "torch.int64": "i64", "torch.int32": "i32",
                 "torch.int16": "i16", "torch.int8": "i8", "torch.uint8": "u8",
                 "torch.bool": "u1"}


class MissingDtypesError(ValueError):
    """The pointer dtypes of a kernel are neither given nor in its metadata."""


def dtype_name(dtype: str | torch.dtype) -> str:
    """``"torch.float32"`` for ``torch.float32``, ``"float32"`` or ``"torch.float32"``."""
    text = str(dtype)
    return text if text.startswith("torch.") else f"torch.{text}"


def pointer_dtypes(kernel: KernelArtifact, dtypes: Sequence[str | torch.dtype] | None = None
                   ) -> tuple[str, ...]:
    """Each pointer argument's dtype, in ``meta["buffers"]`` order.

    ``dtypes`` wins where given (tests and callers that ran the module know them); else
    ``meta["dtypes"]`` (a field codegen does not write yet); else ``MissingDtypesError``.
    """
    meta = kernel.meta
    n = len(meta["buffers"])
    if dtypes is None:
        dtypes = meta.get("dtypes")
    if dtypes is None:
        raise MissingDtypesError(
            f"kernel {kernel.name}: pointer dtypes unknown: its meta has no 'dtypes' and none "
            f"were passed")
    if len(dtypes) != n:
        raise ValueError(f"kernel {kernel.name} has {n} pointer arguments, "
                         f"got {len(dtypes)} dtypes")
    return tuple(dtype_name(d) for d in dtypes)


def _pointer_type(dtype: str) -> str:
    """Triton's signature type for a pointer to ``dtype``, as its own JIT mangles it."""
    try:
        from triton.runtime.jit import mangle_type
        probe = torch.empty(1, dtype=getattr(torch, dtype.removeprefix("torch.")))
        return mangle_type(probe)
    except (ImportError, TypeError, AttributeError, RuntimeError):
        if dtype not in _TRITON_TYPES:
            raise ValueError(f"no Triton type for {dtype}") from None
        return "*" + _TRITON_TYPES[dtype]


@dataclass(frozen=True)
class Signature:
    """What ``ASTSource`` takes: types by argument name, constexpr values, attributes."""
    types: dict[str, str]
    constexprs: dict[str, int]
    attrs: dict[tuple[int, ...], list]

    def as_json(self) -> dict[str, Any]:
        return {"types": self.types, "constexprs": self.constexprs,
                "divisible_by_16": sorted(k[0] for k in self.attrs)}


def int_arguments(arg_names: Sequence[str], kernel: KernelArtifact,
                  sizes: Sequence[int] | None = None) -> tuple[int, ...]:
    """Values of the kernel's integer arguments: its numels, then any run-time size symbols
    (``s0``...) a dynamic-shape kernel takes. ``sizes`` gives them all, in that order (as a
    ``KernelLaunch.int_args``); without it the numels come from the metadata, which works
    only for static kernels."""
    meta = kernel.meta
    n_ptr, n_numels = len(meta["buffers"]), len(meta["numels"])
    n_ints = len(arg_names) - n_ptr - len(BLOCK_NAMES[meta["kind"]])
    if sizes is not None:
        values = tuple(int(v) for v in sizes)
    elif n_ints == n_numels:
        values = kernel_numels(meta)
    else:
        raise ValueError(f"kernel {kernel.name} takes size arguments "
                         f"{list(arg_names[n_ptr + n_numels:n_ptr + n_ints])}: pass sizes")
    if len(values) != n_ints or n_ints < n_numels:
        raise ValueError(f"kernel {kernel.name}({', '.join(arg_names)}) takes {n_ints} integer "
                         f"arguments, got {len(values)} sizes")
    return values


def kernel_signature(arg_names: Sequence[str], kernel: KernelArtifact, config: Config,
                     dtypes: Sequence[str] | None = None,
                     sizes: Sequence[int] | None = None) -> Signature:
    """The signature Triton's JIT would specialize when the wrapper launches ``config``.

    Arguments are pointers (``meta["buffers"]``), integers (numels, then size symbols: see
    ``int_arguments``), then the constexpr blocks. Pointers are assumed 16-byte aligned
    (every tensor kiln allocates is); an integer equal to 1 is a constexpr and one divisible
    by 16 gets ``tt.divisibility``, as at launch.
    """
    meta = kernel.meta
    ptrs = pointer_dtypes(kernel, dtypes)
    blocks = config.blocks()
    block_names = BLOCK_NAMES[meta["kind"]]
    if (set(blocks) != set(block_names) or len(arg_names) < len(ptrs) + len(block_names)
            or set(arg_names[len(arg_names) - len(block_names):]) != set(block_names)):
        raise ValueError(f"kernel {kernel.name}({', '.join(arg_names)}) does not match its meta "
                         f"({meta['kind']}, {len(ptrs)} pointers) and config {config}")
    ints = int_arguments(arg_names, kernel, sizes)
    types: dict[str, str] = {}
    constexprs: dict[str, int] = {}
    attrs: dict[tuple[int, ...], list] = {}
    div16 = [["tt.divisibility", 16]]
    for k, (name, dtype) in enumerate(zip(arg_names, ptrs)):
        types[name] = _pointer_type(dtype)
        attrs[(k,)] = div16
    for k, (name, value) in enumerate(zip(arg_names[len(ptrs):], ints), start=len(ptrs)):
        if value == 1:
            types[name], constexprs[name] = "constexpr", 1
            continue
        types[name] = "i32" if -INT32_MAX - 1 <= value <= INT32_MAX else "i64"
        if value % 16 == 0:
            attrs[(k,)] = div16
    for name in arg_names[len(ptrs) + len(ints):]:
        types[name], constexprs[name] = "constexpr", blocks[name]
    return Signature(types, constexprs, attrs)


# ----------------------------------------------------------------------------- loading
@functools.lru_cache(maxsize=64)
def _load(source: str, device_type: str, code_dir: str):
    from ..runtime import load_module
    return load_module(PREAMBLE + source, device_type, Path(code_dir))


def load_kernel(kernel: KernelArtifact, device_type: str = "cuda", code_dir: Path | None = None):
    """The kernel as a JITFunction (``"cuda"``) or InterpretedFunction (``"cpu"``)."""
    if code_dir is None:
        from ..config import load_options
        code_dir = load_options().code_dir()
    return getattr(_load(kernel.source, device_type, str(code_dir)), kernel.name)


# ----------------------------------------------------------------------------- resources
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


# ----------------------------------------------------------------------------- build
_METADATA_FIELDS = ("name", "shared", "num_warps", "num_stages", "num_ctas", "global_scratch_size",
                    "tmem_size", "hash")


def build(kernel: KernelArtifact, config: Config,
          target: Target | Sequence | str = ("cuda", 90, 32), *,
          dtypes: Sequence[str | torch.dtype] | None = None, sizes: Sequence[int] | None = None,
          spaces: TuningSpaces | None = None, code_dir: Path | None = None) -> BuildResult:
    """Compile ``kernel`` at ``config`` for ``target``; every failure is a status, not a raise.

    ``metadata`` holds Triton's ``name, shared, num_warps, num_stages, num_ctas,
    global_scratch_size, tmem_size, hash``, then what cuobjdump reads from the cubin
    (``n_regs, stack_bytes, static_shared_bytes, local_bytes``; ``n_spills`` stays None until
    a GPU loads it), the ``signature`` compiled for, ``target`` and ``triton_version``.
    ``dtypes`` are the pointer dtypes (see ``pointer_dtypes``); ``sizes`` every integer
    argument (numels, then a dynamic kernel's size symbols: ``KernelLaunch.int_args``),
    needed only where the metadata's numels are symbolic.
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
        fn = load_kernel(kernel, "cuda", code_dir)
        sig = kernel_signature(fn.arg_names, kernel, config, dtypes, sizes)
    except (ValueError, SyntaxError, AttributeError, KeyError) as e:
        return result("build_error", error=f"{type(e).__name__}: {e}")
    meta["signature"] = sig.as_json()
    if config.num_warps * 32 > MAX_THREADS_PER_BLOCK:
        return result("resource_error", error=_resource_problem(meta, config, None))
    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
        source = ASTSource(fn, sig.types, sig.constexprs, sig.attrs)
        compiled = triton.compile(source, target=GPUTarget(target.backend, target.arch,
                                                           target.warp_size),
                                  options=config.options())
    except Exception as e:   # noqa: BLE001 -- any compiler failure is this config's result
        status = "resource_error" if type(e).__name__ == "OutOfResources" else "build_error"
        return result(status, error=_error_text(e))
    triton_meta = compiled.metadata._asdict()
    meta.update({k: triton_meta[k] for k in _METADATA_FIELDS if k in triton_meta})
    cubin = compiled.asm.get("cubin")
    if not cubin:
        return result("build_error", error=f"no cubin produced for {target.name}")
    meta["cubin_sha256"] = content_hash(cubin)
    meta.update(resource_usage(cubin))
    limits = (spaces or _default_spaces()).targets.get(target.arch)
    problem = _resource_problem(meta, config, limits)
    if problem:
        return result("resource_error", cubin, problem)
    return result("ok", cubin)


@functools.lru_cache(maxsize=1)
def _default_spaces() -> TuningSpaces:
    return load_spaces()


def _error_text(e: BaseException, limit: int = 4000) -> str:
    text = f"{type(e).__name__}: {e}"
    return text if len(text) <= limit else text[:limit] + " ...[truncated]"
