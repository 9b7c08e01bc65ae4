"""What every kernel emitter shares: the ``@jit`` signature, the kernel's identity, and the
step from a generated kernel to its contract (``compiler.kernels.spec.KernelSpec``).

Every kiln kernel follows one launch protocol, which build, tune and precompile rely on:
pointer arguments (inputs, then outputs), the numel arguments of its kind, the run-time size
symbols its indices use, then its kind's constexpr blocks. ``jit_header`` writes it, for all
six emitters.

Example:
    >>> from compiler.kernels.spec import KernelKind
    >>> jit_header("kiln_pw_relu_0", ["in_ptr0", "out_ptr0"], KernelKind.POINTWISE_1D, ["s0"])
    ['@jit', 'def kiln_pw_relu_0(in_ptr0, out_ptr0, xnumel, s0, XBLOCK: tl.constexpr):']
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Mapping, Sequence

import sympy

from ..artifact import KernelArtifact, content_hash
from ..ir import Layout
from ..kernels.spec import KernelKind, KernelSpec, LaunchConfig
from ..sizevars import texpr
from ..traffic import Traffic


def jit_header(name: str, pointers: Sequence[str], kind: KernelKind,
               size_args: Sequence[str] = ()) -> list[str]:
    """The decorator and ``def`` line of a kernel of ``kind``."""
    params = [*pointers, *kind.numel_names, *size_args,
              *(f"{block}: tl.constexpr" for block in kind.blocks)]
    return ["@jit", f"def {name}({', '.join(params)}):"]


@dataclass(frozen=True)
class GeneratedKernel:
    """An emitter's result: the kernel's source and what the wrapper launches it with.

    ``source_key`` hashes the source with the kernel's name replaced, so the same code under
    two names is one kernel. ``numels`` are sympy expressions (symbols of run-time sizes in
    a dynamic-shape module); ``baseline`` (GEMM templates) is the extern path as JSON.
    """
    name: str
    source: str
    source_key: str
    buffers: tuple[str, ...]          # pointer arguments: loaded buffers, then the outputs
    numels: tuple[sympy.Expr, ...]
    kind: KernelKind
    ops: tuple[str, ...]
    traffic: Traffic | None           # global memory read and written (static sizes)
    n_outputs: int = 1                # the last n_outputs of ``buffers`` are written
    size_args: tuple[str, ...] = ()   # run-time size symbols the kernel's indices use
    baseline: str | None = None
    rows_across: bool = False         # a row kernel whose rows lie across memory
    stencil: bool = False             # a kernel of per-channel taps (codegen.triton)

    @property
    def bytes_accessed(self) -> int | None:
        return None if self.traffic is None else self.traffic.total


def generated(name: str, source: str, buffers: Sequence[str], numels: Sequence,
              kind: KernelKind, ops: Sequence[str], traffic: Traffic | None,
              n_outputs: int = 1, size_args: Sequence[str] = (),
              baseline: str | None = None, rows_across: bool = False,
              stencil: bool = False) -> GeneratedKernel:
    """A ``GeneratedKernel``, its ``source_key`` computed the one way every emitter does."""
    return GeneratedKernel(name, source, content_hash(source.replace(name, "KERNEL")),
                           tuple(buffers), tuple(numels), kind, tuple(ops), traffic, n_outputs,
                           tuple(size_args), baseline, rows_across, stencil)


def kernel_key(kernel: GeneratedKernel, layouts: Mapping[str, Layout]) -> str:
    """The kernel's identity across graphs: its source (name aside) and its pointer dtypes
    (a copy kernel's source is the same for float32 and int64)."""
    dtypes = [str(layouts[b].dtype) for b in kernel.buffers]
    return content_hash(kernel.source_key + json.dumps(dtypes))


def _size_text(size) -> int | str:
    size = sympy.sympify(size)
    return int(size) if size.is_Integer else texpr(size)


def artifact_of(kernel: GeneratedKernel, layouts: Mapping[str, Layout], launch: LaunchConfig,
                candidate: bool = False) -> KernelArtifact:
    """The kernel as the rest of kiln sees it: source, key and ``KernelSpec`` (pointer
    dtypes and extents, sizes, the launch config it runs with: enough to build and time it
    without the module around it)."""
    traffic = kernel.traffic
    spec = KernelSpec(
        kind=kernel.kind, buffers=kernel.buffers,
        dtypes=tuple(str(layouts[b].dtype) for b in kernel.buffers),
        extents=tuple(_size_text(layouts[b].storage_size()) for b in kernel.buffers),
        outputs=kernel.n_outputs, numels=tuple(str(n) for n in kernel.numels),
        size_args=kernel.size_args, launch=launch, ops=kernel.ops,
        bytes_read=None if traffic is None else traffic.read,
        bytes_written=None if traffic is None else traffic.written,
        candidate=candidate, baseline=kernel.baseline, rows_across=kernel.rows_across,
        stencil=kernel.stencil)
    return KernelArtifact(kernel.name, kernel_key(kernel, layouts), kernel.source, spec)
