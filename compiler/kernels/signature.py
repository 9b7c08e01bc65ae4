r"""The specialization a kernel's launch gets, computed without Triton: argument types,
constexprs and 16-divisibility as Triton's JIT would derive them, and the compile job of a
module's kernel at the config its wrapper launches.

Pure Python over the kernel's spec and source, so that a serving process can check a stored
binary against its launch without importing Triton (``kernels.serve``), and build and
precompile derive the same signature (``kernels.build``).

Example:
    >>> params("@jit\ndef k(in_ptr0, out_ptr0, xnumel, XBLOCK: tl.constexpr):\n    pass", "k")
    ['in_ptr0', 'out_ptr0', 'xnumel', 'XBLOCK']
    >>> _pointer_type("torch.bfloat16")
    '*bf16'
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch

from ..artifact import KernelArtifact
from .spec import Config, KernelSpec

INT32_MAX = 2**31 - 1


def params(source: str, name: str) -> list[str]:
    """The parameter names of kernel ``name`` in ``source`` (its ``def`` line, as
    ``codegen.kernel.jit_header`` writes it), constexprs included, in order."""
    match = re.search(rf"^def {re.escape(name)}\((.*?)\):", source, re.M | re.S)
    if match is None:
        raise ValueError(f"no definition of kernel {name} in its source")
    return [p.split(":")[0].strip() for p in match.group(1).split(",") if p.strip()]


_TRITON_TYPES = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16",
                 "torch.float64": "fp64", "torch.int64": "i64", "torch.int32": "i32",
                 "torch.int16": "i16", "torch.int8": "i8", "torch.uint8": "u8",
                 "torch.bool": "u1"}


class MissingDtypesError(ValueError):
    """The pointer dtypes of a kernel are neither given nor in its spec."""


def dtype_name(dtype: str | torch.dtype) -> str:
    """``"torch.float32"`` for ``torch.float32``, ``"float32"`` or ``"torch.float32"``."""
    text = str(dtype)
    return text if text.startswith("torch.") else f"torch.{text}"


def pointer_dtypes(name: str, spec: KernelSpec,
                   dtypes: Sequence[str | torch.dtype] | None = None) -> tuple[str, ...]:
    """Each pointer argument's dtype, in ``spec.buffers`` order: ``dtypes`` where given,
    else the spec's (empty only in rows written before codegen recorded them)."""
    dtypes = tuple(dtypes) if dtypes is not None else spec.dtypes
    if not dtypes:
        raise MissingDtypesError(f"kernel {name}: pointer dtypes unknown: its spec has no "
                                 f"dtypes and none were passed")
    if len(dtypes) != len(spec.buffers):
        raise ValueError(f"kernel {name} has {len(spec.buffers)} pointer arguments, "
                         f"got {len(dtypes)} dtypes")
    return tuple(dtype_name(d) for d in dtypes)


def _pointer_type(dtype: str) -> str:
    """Triton's signature type for a pointer to ``dtype``, as its own JIT mangles it: from
    the table for kiln's dtypes (no Triton import: the serving path runs without it), else
    from Triton's mangler."""
    if dtype in _TRITON_TYPES:
        return "*" + _TRITON_TYPES[dtype]
    try:
        from triton.runtime.jit import mangle_type
        return mangle_type(torch.empty(1, dtype=getattr(torch, dtype.removeprefix("torch."))))
    except (ImportError, TypeError, AttributeError, RuntimeError):
        raise ValueError(f"no Triton type for {dtype}") from None


@dataclass(frozen=True)
class Signature:
    """What ``ASTSource`` takes: types by argument name, constexpr values, attributes."""
    types: dict[str, str]
    constexprs: dict[str, int]
    attrs: dict[tuple[int, ...], list]

    def as_json(self) -> dict[str, Any]:
        return {"types": self.types, "constexprs": self.constexprs,
                "divisible_by_16": sorted(k[0] for k in self.attrs)}


def int_arguments(arg_names: Sequence[str], name: str, spec: KernelSpec,
                  sizes: Sequence[int] | None = None) -> tuple[int, ...]:
    """Values of the kernel's integer arguments: its numels, then any run-time size symbols
    (``s0``...) a dynamic-shape kernel takes. ``sizes`` gives them all, in that order (as a
    ``KernelLaunch.int_args``); without it the numels come from the spec, which works only
    for static kernels."""
    n_ptr, n_numels = len(spec.buffers), len(spec.numels)
    n_ints = len(arg_names) - n_ptr - len(spec.kind.blocks)
    if sizes is not None:
        values = tuple(int(v) for v in sizes)
    elif n_ints == n_numels:
        values = spec.int_numels()
    else:
        raise ValueError(f"kernel {name} takes size arguments "
                         f"{list(arg_names[n_ptr + n_numels:n_ptr + n_ints])}: pass sizes")
    if len(values) != n_ints or n_ints < n_numels:
        raise ValueError(f"kernel {name}({', '.join(arg_names)}) takes {n_ints} integer "
                         f"arguments, got {len(values)} sizes")
    return values


def signature(arg_names: Sequence[str], kernel: KernelArtifact, config: Config,
              dtypes: Sequence[str] | None = None,
              sizes: Sequence[int] | None = None) -> Signature:
    """The signature Triton's JIT would specialize when the wrapper launches ``config``.

    Arguments are pointers (``spec.buffers``), integers (numels, then size symbols: see
    ``int_arguments``), then the constexpr blocks. Pointers are assumed 16-byte aligned
    (every tensor kiln allocates is); an integer equal to 1 is a constexpr and one divisible
    by 16 gets ``tt.divisibility``, as at launch.
    """
    spec = kernel.spec
    ptrs = pointer_dtypes(kernel.name, spec, dtypes)
    blocks = config.blocks()
    block_names = spec.kind.blocks
    if (set(blocks) != set(block_names) or len(arg_names) < len(ptrs) + len(block_names)
            or set(arg_names[len(arg_names) - len(block_names):]) != set(block_names)):
        raise ValueError(f"kernel {kernel.name}({', '.join(arg_names)}) does not match its "
                         f"spec ({spec.kind}, {len(ptrs)} pointers) and config {config}")
    ints = int_arguments(arg_names, kernel.name, spec, sizes)
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


# ----------------------------------------------------------------------------- compile jobs
@dataclass(frozen=True)
class KernelJob:
    """One kernel of a module at its launch config: what ``triton.compile`` needs.

    >>> job = KernelJob("kiln_pw_relu_0", {"XBLOCK": 1024, "num_warps": 4}, {"XBLOCK": 1024},
    ...                 {"num_warps": 4, "num_stages": 3},
    ...                 {"in_ptr0": "*fp32", "out_ptr0": "*fp32", "xnumel": "i32"}, [])
    >>> job.options["num_warps"], launcher_key(job)
    (4, ('*', '*', 'i32'))
    """
    name: str
    launch: dict[str, int]               # the keyword arguments the wrapper launches it with
    constexprs: dict[str, int]           # block sizes, and integer arguments equal to 1
    options: dict[str, int]              # num_warps, num_stages
    types: dict[str, str]                # argument name -> Triton type ("*bf16", "i32", ...)
    divisible_by_16: list[int]           # argument positions Triton may assume 16-aligned


def kernel_jobs(kernels: Iterable[KernelArtifact], arg_names: dict[str, Sequence[str]]
                ) -> tuple[KernelJob, ...]:
    """A job per kernel of a static-shape module, at the config its wrapper launches.

    ``arg_names`` maps each kernel's name to its parameters (``JITFunction.arg_names``).
    """
    jobs = []
    for kernel in kernels:
        if kernel.spec.candidate:   # a GEMM template kept only to be tuned: never launched
            continue
        config = kernel.spec.launch.config()
        sig = signature(arg_names[kernel.name], kernel, config)
        jobs.append(KernelJob(kernel.name, kernel.spec.launch.kwargs(), sig.constexprs,
                              config.options(), sig.types, sorted(k[0] for k in sig.attrs)))
    return tuple(jobs)


def launcher_key(job: KernelJob) -> tuple[str, ...]:
    """What the kernel's host launcher depends on: kernels of equal keys share one.

    Triton 3.6 generates a launcher's C source from the argument types alone, in order:
    every pointer is the same ``CUdeviceptr`` whatever it points to, a constexpr a
    placeholder whatever its value (tensor descriptors would add metadata; kiln's kernels
    have none). Triton caches a built launcher by the hash of that source, so a coarser key
    would only leave a launcher to the first launch, never run a wrong one.
    """
    return tuple("*" if t.startswith("*") else t for t in job.types.values())


