"""Launching compiled Triton kernels: the ``Launcher`` a CUDA module's wrapper calls, and
torch's generic C launcher it prefers.

``Launcher`` skips Triton's per-call binding and specialization after a configuration's
first launch (tens of microseconds, more than many kernels take). Triton (3.6) launches a
compiled kernel through a host launcher it generates in C for the kernel's argument types
and builds with gcc on the first launch: ~0.3 s per signature, and the largest part of a
cold compile once kernels compile in parallel. torch ships one launcher compiled into
libtorch for every signature (``torch._C._StaticCudaLauncher``, Inductor's), which takes the
argument types as a string at call time. A kernel launched through it needs no launcher
built, and each launch is one C call instead of Triton's Python runner.

The launcher is private to torch and absent from CPU builds, so everything here falls back
to Triton's own launch: ``wrap`` returns the kernel unchanged, and ``plan`` says why.

Example:
    >>> type_code("*bf16"), type_code("i64"), type_code("nvTmaDesc") is None
    ('O', 'l', True)
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

# Triton scalar type -> the launcher's code for it, as Python's struct module spells C
# scalars; every pointer is "O", an object whose data_ptr() (or None, for null) is passed.
TYPE_CODES = {"i1": "i", "i8": "b", "i16": "h", "i32": "i", "i64": "l",
              "u1": "I", "u8": "B", "u16": "H", "u32": "I", "u64": "K",
              "fp16": "f", "bf16": "f", "fp32": "f", "fp64": "d"}
# Scratch buffers Triton (>= 3.3 global, >= 3.5 profile) may give a kernel: each metadata
# field present adds a pointer parameter to the binary, and a nonzero size needs Triton.
SCRATCH_FIELDS = ("global_scratch_size", "profile_scratch_size")


def type_code(ty: str) -> str | None:
    """The launcher's code for a Triton argument type; None where it has none."""
    return "O" if ty.startswith("*") else TYPE_CODES.get(ty)


def _impl():
    return getattr(torch._C, "_StaticCudaLauncher", None)


def available() -> bool:
    """torch has the generic launcher (CUDA builds since 2.8) and a GPU is present."""
    return _impl() is not None and torch.cuda.is_available()


@dataclass(frozen=True)
class LaunchPlan:
    """How the generic launcher runs one compiled kernel, from the kernel alone."""
    name: str
    cubin_path: str
    keep: tuple[int, ...]        # positions of the positional arguments the binary takes
    arg_types: str               # their type codes, then "O" per scratch pointer (None)
    scratch: int                 # trailing null pointers Triton's own launcher would add
    num_warps: int
    shared: int


def plan(compiled, fn) -> LaunchPlan | str:
    """The ``LaunchPlan`` of ``compiled`` (Triton's ``CompiledKernel`` of JIT function ``fn``),
    or why only Triton's own launcher can run it.

    Positional arguments are ``fn``'s parameters that are not declared constexpr (kiln's
    wrappers pass those by keyword); of these the binary drops the ones Triton specialized
    to constants (an integer equal to 1 has type "constexpr").
    """
    # The file may be named for another kernel of the same source (a stored binary is shared
    # by name-only variants); the symbol inside is the metadata's name.
    cubin = next((path for file, path in getattr(compiled, "metadata_group", {}).items()
                  if file.endswith(".cubin")), None)
    if cubin is None:
        return "no cubin file in the kernel's metadata group"
    return plan_for(compiled.metadata._asdict(), compiled.src.signature,
                    [p.name for p in fn.params if not p.is_constexpr], str(cubin))


def plan_for(meta: Mapping, types: Mapping[str, str], positional: Sequence[str],
             cubin_path: str) -> LaunchPlan | str:
    """The ``LaunchPlan`` of a binary from plain data: Triton's metadata as a dict, the
    argument types it was compiled for (``"constexpr"`` for a specialized integer), the
    kernel's positional (non-constexpr) parameters in order and the cubin's file. What a
    serving process knows of a stored binary, with no Triton around (``kernels.serve``)."""
    unsupported = _unsupported(meta)
    if unsupported:
        return unsupported
    keep, codes = [], []
    for position, name in enumerate(positional):
        ty = types.get(name)
        if ty == "constexpr":
            continue
        code = type_code(ty) if ty else None
        if code is None:
            return f"argument {name} has type {ty!r}, which the generic launcher lacks"
        keep.append(position)
        codes.append(code)
    # Each scratch pointer is passed as null: kiln's kernels use none (checked above).
    scratch = sum(f in meta for f in SCRATCH_FIELDS)
    return LaunchPlan(meta["name"], cubin_path, tuple(keep), "".join(codes) + "O" * scratch,
                      scratch, meta["num_warps"], meta["shared"])


def _unsupported(meta: Mapping) -> str | None:
    """Why a kernel with Triton metadata ``meta`` needs Triton's launcher, or None."""
    if meta.get("num_ctas", 1) != 1:
        return f"num_ctas {meta['num_ctas']}"
    cluster = meta.get("cluster_dims") or (1, 1, 1)
    if tuple(cluster) not in ((1, 1, 1), (1,), ()):
        return f"cluster dims {tuple(cluster)}"
    for flag in ("launch_cooperative_grid", "launch_pdl"):
        if meta.get(flag):
            return f"{flag} is set"
    for size in SCRATCH_FIELDS:
        if meta.get(size):
            return f"{size} is {meta[size]}"
    if meta.get("tensordesc_meta"):
        return "tensor descriptors"
    triton = sys.modules.get("triton")    # not imported: nobody can have set a hook
    runtime = getattr(getattr(triton, "knobs", None), "runtime", None)
    if runtime is not None and (_hooked(runtime.launch_enter_hook)
                                or _hooked(runtime.launch_exit_hook)):
        return "a Triton launch hook is set (a profiler), which only Triton's launcher calls"
    return None


def _hooked(hook) -> bool:
    # Triton 3.6 keeps None or a function; later ones an always-present chain of them.
    return hook is not None and bool(getattr(hook, "calls", True))


class StaticKernel:
    """A compiled kernel loaded on ``device`` and launched through the generic launcher.
    ``kernel[grid](*args, *constexprs)`` works as it does for Triton's ``CompiledKernel``."""

    def __init__(self, compiled, launch_plan: LaunchPlan, device: int):
        self.compiled = compiled           # kept: its metadata, asm and cache entry (None
                                           # for a stored binary served without Triton)
        self.plan = launch_plan
        self.device = device
        loaded = _impl()._load_kernel(launch_plan.cubin_path, launch_plan.name,
                                      launch_plan.shared, device)
        # (function, n_regs, n_spills) in torch 2.8-2.11, (module, function, ...) later.
        self.function = loaded[-3]
        self._launch = _impl()._launch_kernel
        self._stream = torch._C._cuda_getCurrentRawStream

    @property
    def asm(self):
        return self.compiled.asm

    @property
    def metadata(self):
        return self.compiled.metadata

    def __getitem__(self, grid):
        return lambda *args: self.run(grid, args)

    def run(self, grid: Sequence[int], args: Sequence) -> None:
        p = self.plan
        passed = tuple(args[k] for k in p.keep) + (None,) * p.scratch
        self._launch(self.function, grid[0], grid[1], grid[2], p.num_warps, p.shared,
                     p.arg_types, passed, self._stream(self.device))


def wrap(compiled, fn):
    """``compiled`` as a ``StaticKernel`` on the current CUDA device where the generic
    launcher can run it, else unchanged (Triton's launcher then runs it)."""
    if not available():
        return compiled
    launch_plan = plan(compiled, fn)
    if isinstance(launch_plan, str):
        return compiled
    try:
        return StaticKernel(compiled, launch_plan, torch.cuda.current_device())
    except RuntimeError:     # a load torch's launcher refuses: Triton's load reports it better
        return compiled


def is_static(kernel) -> bool:
    return isinstance(kernel, StaticKernel)


class Launcher:
    """Launches a ``@triton.jit`` kernel; after the first launch of a configuration it calls
    the compiled kernel directly, skipping Triton's per-call binding and specialization (tens
    of microseconds, more than many kernels take), through torch's generic launcher where it
    can (``wrap``: no host launcher to build). Pointers are checked for the 16-byte alignment
    the cached binary may assume.

    A static-shape module's integer arguments never change, so neither does Triton's
    specialization of them. A ``dynamic`` module's sizes do: its binaries are kept per
    ``specialization`` of the integers as well, so a launch runs a binary compiled for
    exactly what Triton's JIT would have specialized (a decode step's new length reuses the
    binary of any earlier length alike in those respects).
    """

    def __init__(self, fn, dynamic: bool = False):
        self.fn = fn
        self._constexprs = [p.name for p in fn.params if p.is_constexpr]
        self._compiled: dict = {}
        self._direct = True
        self._dynamic = dynamic

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launch(grid, args, kwargs)

    @staticmethod
    def _key(kwargs: dict) -> tuple:
        return tuple(sorted(kwargs.items()))

    def has(self, kwargs: dict) -> bool:
        """A compiled kernel is ready for launches with these keyword arguments."""
        return self._key(kwargs) in self._compiled

    def preload(self, kwargs: dict, kernel) -> bool:
        """Use ``kernel`` (compiled ahead of time, see ``kernels.precompile``) for launches
        with these keyword arguments, so even the first launch is direct. Returns whether
        torch's generic launcher runs it (else Triton's, which a first launch may build)."""
        kernel = wrap(kernel, self.fn)
        self._compiled[self._key(kwargs)] = kernel
        return is_static(kernel)

    def launch(self, grid, args, kwargs):
        key = self._key(kwargs)
        if self._dynamic:
            key = (key, specialization(args))
        kernel = self._compiled.get(key)
        if kernel is not None and self._direct and _aligned(args):
            grid = tuple(grid) + (1,) * (3 - len(grid))
            try:
                kernel[grid](*args, *(kwargs[name] for name in self._constexprs))
                return kernel
            except (TypeError, AttributeError):   # a Triton without the direct runner
                self._direct = False
        kernel = self.fn[grid](*args, **kwargs)
        if _aligned(args):
            self._compiled[key] = wrap(kernel, self.fn)
        return kernel

    @property
    def __name__(self):
        return self.fn.__name__


def specialization(args) -> tuple:
    """What Triton's JIT specializes a launch's integer arguments on: equal to 1 (made a
    constant, dropped from the binary's arguments), divisible by 16 (``tt.divisibility``),
    and whether 32 bits hold it (i32, else i64). As ``signature.signature`` derives them."""
    return tuple((a == 1, a % 16 == 0, -2**31 <= a < 2**31) for a in args if type(a) is int)


def _aligned(args) -> bool:
    return all(a.data_ptr() % 16 == 0 for a in args if isinstance(a, torch.Tensor))
