"""The kernel contract: one frozen, versioned record per generated kernel.

``KernelSpec`` is the only thing codegen, autotune, precompile, the pipeline and the store
exchange about a kernel: its kind, pointer arguments (buffers, dtypes, extents), sizes, the
launch config the wrapper uses, and the traffic it moves. It is serialized in one place
(``to_json`` / ``from_json``: the store's ``meta_json`` column), so no reader picks fields
out of a dict by name. ``Config`` is a launch config as tuning sees it (block sizes, warps,
stages); ``LaunchConfig`` is what the wrapper passes, in its order, with the grid.

Imports nothing heavy (no torch, no Triton): a store reader uses it too.

Example:
    >>> launch = LaunchConfig((("XBLOCK", 1024), ("num_warps", 4)), (8,))
    >>> spec = KernelSpec(KernelKind.POINTWISE_1D, ("arg0", "buf0"), ("torch.float32",) * 2,
    ...                   (8192, 8192), 1, ("8192",), (), launch, ("relu",), 32768, 32768)
    >>> KernelSpec.from_json(spec.to_json()) == spec
    True
    >>> spec.int_numels(), spec.launch.config()
    ((8192,), Config(XBLOCK=1024, YBLOCK=None, RBLOCK=None, num_warps=4, num_stages=3, BLOCK_M=None, BLOCK_N=None, BLOCK_K=None, GROUP_M=None, extern=None))
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import struct
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

SPEC_VERSION = 1
# Rows up to this many elements are reduced (or scanned) in registers in one pass: what
# makes a row kernel "persistent" rather than "looped".
PERSISTENT_MAX_RNUMEL = 16384
TRITON_DEFAULT_NUM_STAGES = 3   # what a launch without num_stages gets on CUDA
CONSTEXPR_NAMES = ("XBLOCK", "YBLOCK", "RBLOCK", "BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")


class KernelKind(enum.StrEnum):
    """The launch protocol of a kernel: its numel arguments and constexpr block names."""
    POINTWISE_1D = "pointwise1d"
    POINTWISE_2D = "pointwise2d"
    REDUCTION_PERSISTENT = "reduction_persistent"
    REDUCTION_LOOPED = "reduction_looped"
    MATMUL = "matmul"
    CONV = "conv"      # the GEMM template with a gathered A operand (implicit-GEMM conv)

    @property
    def blocks(self) -> tuple[str, ...]:
        """Constexpr block arguments, in signature order."""
        return _BLOCKS[self]

    @property
    def numel_names(self) -> tuple[str, ...]:
        """Numel arguments, in signature order."""
        return _NUMELS[self]

    @property
    def is_reduction(self) -> bool:
        return self in (KernelKind.REDUCTION_PERSISTENT, KernelKind.REDUCTION_LOOPED)

    @property
    def is_gemm(self) -> bool:
        """A GEMM template: tiles of a product, tuned against the extern path it replaces.
        A conv shares the matmul's launch protocol but has its own search space and default
        (its K is gathered from the input window by window)."""
        return self in (KernelKind.MATMUL, KernelKind.CONV)


_GEMM_BLOCKS = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")   # matmul and conv alike
_GEMM_NUMELS = ("bnumel", "mnumel", "nnumel", "knumel")
_BLOCKS = {KernelKind.POINTWISE_1D: ("XBLOCK",), KernelKind.POINTWISE_2D: ("XBLOCK", "YBLOCK"),
           KernelKind.REDUCTION_PERSISTENT: ("XBLOCK", "RBLOCK"),
           KernelKind.REDUCTION_LOOPED: ("XBLOCK", "RBLOCK"),
           **{k: _GEMM_BLOCKS for k in KernelKind if k.is_gemm}}
_NUMELS = {KernelKind.POINTWISE_1D: ("xnumel",), KernelKind.POINTWISE_2D: ("xnumel", "ynumel"),
           KernelKind.REDUCTION_PERSISTENT: ("xnumel", "rnumel"),
           KernelKind.REDUCTION_LOOPED: ("xnumel", "rnumel"),
           **{k: _GEMM_NUMELS for k in KernelKind if k.is_gemm}}


# ----------------------------------------------------------------------------- configs
@dataclass(frozen=True, order=True)
class Config:
    """One launch config: block sizes (None where the kind has no such dim), warps, stages.

    A GEMM template (kind "matmul" or "conv") sets ``BLOCK_M/N/K`` and ``GROUP_M`` instead of the
    X/Y/R blocks. ``extern=1`` is no launch config but the extern path the template
    competes with (cuBLAS plus the separate epilogue kernel): one more candidate, timed and
    recorded like the others, whose ``as_dict`` is just ``{"extern": 1}``.
    """
    XBLOCK: int | None = None
    YBLOCK: int | None = None
    RBLOCK: int | None = None
    num_warps: int = 4
    num_stages: int = TRITON_DEFAULT_NUM_STAGES
    BLOCK_M: int | None = None
    BLOCK_N: int | None = None
    BLOCK_K: int | None = None
    GROUP_M: int | None = None
    extern: int | None = None

    def blocks(self) -> dict[str, int]:
        """The constexpr arguments: ``{"XBLOCK": 1024}``, ``{"XBLOCK": 8, "RBLOCK": 128}``."""
        return {name: getattr(self, name) for name in CONSTEXPR_NAMES
                if getattr(self, name) is not None}

    def options(self) -> dict[str, int]:
        """The compile options: ``{"num_warps": 4, "num_stages": 3}``."""
        return {"num_warps": self.num_warps, "num_stages": self.num_stages}

    def as_dict(self) -> dict[str, int]:
        if self.extern:
            return {"extern": 1}
        return dict(sorted({**self.blocks(), **self.options()}.items()))

    @property
    def tile(self) -> int:
        return math.prod(self.blocks().values())

    @property
    def key(self) -> str:
        return config_key(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Config":
        """Inverse of ``as_dict``; also reads the kwargs a wrapper launch passes."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown config parameters {sorted(unknown)}; known: {sorted(names)}")
        return cls(**{k: int(v) for k, v in values.items()})

    def replace(self, **changes: int) -> "Config":
        return dataclasses.replace(self, **changes)

    def __str__(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.as_dict().items())


EXTERN = Config(extern=1)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces (as ``storage.records.canonical_json``)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def config_key(config: Config | Mapping[str, Any]) -> str:
    """The stable key of a config: 32 hex digits, equal to what ``storage`` derives.

    ``storage.records`` keys a config as ``derived_key(config_json)``: sha256 over the
    type-tagged, length-prefixed canonical JSON of the config's canonical JSON text. Repeated
    here because the compiler must not import the store; ``tests/test_autotune.py`` checks
    the two agree.
    """
    values = config.as_dict() if isinstance(config, Config) else dict(config)
    data = canonical_json(canonical_json(values)).encode()
    return hashlib.sha256(b"s" + struct.pack("<Q", len(data)) + data).hexdigest()[:32]


@dataclass(frozen=True)
class TargetLimits:
    """What a config may use on one compute capability and still launch well."""
    arch: int
    max_shared_bytes: int
    regs_per_sm: int
    max_local_bytes: int


_TARGET_KEYS = ("max_local_bytes", "max_shared_bytes", "regs_per_sm")


def parse_targets(path: str, tables: Mapping[str, Any]) -> dict[int, TargetLimits]:
    """The ``[targets.N]`` tables of a search-space file (``configs/autotune/*.toml``) as
    ``{arch: TargetLimits}``; a malformed one is a ValueError naming the file.

    >>> parse_targets("t.toml", {"90": {"max_shared_bytes": 1, "regs_per_sm": 2,
    ...                                 "max_local_bytes": 3}})[90].regs_per_sm
    2
    """
    out = {}
    for arch, table in tables.items():
        if not arch.isdigit() or tuple(sorted(table)) != _TARGET_KEYS:
            raise ValueError(f"{path}: [targets.{arch}] needs a numeric arch and exactly "
                             f"{list(_TARGET_KEYS)}")
        out[int(arch)] = TargetLimits(int(arch), **table)
    return out


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

    def triton(self):
        """Triton's ``GPUTarget`` for it."""
        from triton.backends.compiler import GPUTarget
        return GPUTarget(self.backend, self.arch, self.warp_size)


# ----------------------------------------------------------------------------- the contract
@dataclass(frozen=True)
class LaunchConfig:
    """How the wrapper launches a kernel: the keyword arguments it passes (block sizes,
    ``num_warps``, ``num_stages`` where set), in the order it passes them; the grid (per axis
    a number, or the source text of an expression of run-time sizes); and whether tuned
    trials chose the config (else the heuristic did)."""
    params: tuple[tuple[str, int], ...]
    grid: tuple[int | str, ...]
    tuned: bool = False

    def kwargs(self) -> dict[str, int]:
        return dict(self.params)

    def config(self) -> Config:
        return Config.from_dict(self.kwargs())

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.kwargs(), "grid": list(self.grid)}
        if self.tuned:
            out["tuned"] = True
        return out

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> "LaunchConfig":
        params = tuple((k, int(v)) for k, v in value.items() if k not in ("grid", "tuned"))
        return cls(params, tuple(value.get("grid", ())), bool(value.get("tuned", False)))


@dataclass(frozen=True)
class KernelSpec:
    """One generated kernel, as everything after codegen sees it.

    Pointer arguments come first (``buffers``: inputs, then the last ``outputs`` written),
    each with its dtype (``"torch.bfloat16"``) and extent (elements it may touch: an int, or
    the text of an expression of size symbols); then the numel arguments (``numels``, text:
    ``"512"`` or ``"64*s0"``, named by ``kind.numel_names``); then the run-time size
    symbols (``size_args``); then the constexpr blocks of ``kind``. ``candidate`` marks a
    GEMM template kept only to be tuned against cuBLAS (never launched); ``baseline`` (JSON,
    see ``codegen.matmul.baseline``, and ``codegen.depthwise_baseline`` for a depthwise
    conv kernel's cuDNN conv) says how that extern path computes the same output.
    """
    kind: KernelKind
    buffers: tuple[str, ...]
    dtypes: tuple[str, ...]
    extents: tuple[int | str, ...]
    outputs: int
    numels: tuple[str, ...]
    size_args: tuple[str, ...]
    launch: LaunchConfig
    ops: tuple[str, ...] = ()
    bytes_read: int | None = None
    bytes_written: int | None = None
    candidate: bool = False
    baseline: str | None = None
    version: int = SPEC_VERSION
    rows_across: bool = False    # rows lie across memory: the heuristic holds several a program
    stencil: bool = False        # a kernel of per-channel taps: the heuristic's own tile, warps

    @property
    def bytes(self) -> int | None:
        """Global-memory bytes one launch moves (None when sizes are symbolic)."""
        if self.bytes_read is None or self.bytes_written is None:
            return None
        return self.bytes_read + self.bytes_written

    def int_numels(self, sizes: Sequence[int] | None = None) -> tuple[int, ...]:
        """The numels as ints, or ``sizes`` where given (a kernel compiled with symbolic
        sizes is built and tuned at the sizes it will run at)."""
        if sizes is not None:
            return tuple(int(s) for s in sizes)
        try:
            return tuple(int(n) for n in self.numels)
        except ValueError:
            raise ValueError(f"kernel numels {list(self.numels)} are symbolic: "
                             f"pass the sizes") from None

    def to_json(self) -> str:
        """The store's ``meta_json``: every field, plus the derived ``bytes``."""
        return json.dumps({
            "version": self.version, "kind": str(self.kind), "buffers": list(self.buffers),
            "dtypes": list(self.dtypes), "extents": list(self.extents), "outputs": self.outputs,
            "numels": list(self.numels), "size_args": list(self.size_args),
            "launch": self.launch.as_json(), "ops": list(self.ops),
            "bytes": self.bytes, "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written, "candidate": self.candidate,
            "baseline": None if self.baseline is None else json.loads(self.baseline),
            **({"rows_across": True} if self.rows_across else {}),
            **({"stencil": True} if self.stencil else {})})

    @classmethod
    def from_json(cls, text: str) -> "KernelSpec":
        """Inverse of ``to_json``; also reads rows written before the spec was versioned
        (the same fields, unversioned). A newer version is refused by name."""
        meta = json.loads(text)
        version = int(meta.get("version", 1))
        if version > SPEC_VERSION:
            raise ValueError(f"kernel spec version {version} is newer than this kiln's "
                             f"{SPEC_VERSION}: upgrade kiln to read it")
        baseline = meta.get("baseline")
        return cls(KernelKind(meta["kind"]), tuple(meta["buffers"]), tuple(meta["dtypes"]),
                   tuple(meta["extents"]), int(meta.get("outputs", 1)),
                   tuple(str(n) for n in meta["numels"]), tuple(meta.get("size_args", ())),
                   LaunchConfig.from_json(meta["launch"]), tuple(meta.get("ops", ())),
                   meta.get("bytes_read"), meta.get("bytes_written"),
                   bool(meta.get("candidate", False)),
                   None if baseline is None else json.dumps(baseline, sort_keys=True), version,
                   bool(meta.get("rows_across", False)), bool(meta.get("stencil", False)))
