"""Launch configs, their search spaces (``configs/autotune/*.toml``), pruning, and the default.

A ``Config`` (``compiler.kernels.spec``) is a kernel's constexpr block sizes plus
``num_warps`` and ``num_stages``; its ``key`` is the same hash ``storage`` derives for a
config (a test pins the two together), so a config found in the trials dataset is recognized
here without importing the store.

A ``Space`` lists candidate values per parameter for one kernel kind; ``candidates`` prunes
it by the kernel's sizes:
  * block sizes are clamped to ``next_pow2`` of their dim (XBLOCK <= next_pow2(xnumel)...),
    so a small kernel keeps a candidate instead of losing them all, and duplicates collapse;
  * a persistent reduction's RBLOCK is exactly ``next_pow2(rnumel)`` (it holds whole rows);
  * a looped reduction's RBLOCK is at most ``next_pow2(rnumel)``;
  * the tile (product of blocks) is at most ``max_tile`` (a persistent reduction may always
    hold one whole row) and at most Triton's tensor limit;
  * each thread holds between 1 and ``max_elems_per_thread`` elements (one warp is always
    allowed, however small the tile);
  * the launch grid fits CUDA's limits (65535 programs along y).
A GEMM template (kind "matmul", and "conv": the same tiles over an implicit-GEMM conv) is
pruned its own way (``_fits_matmul``: blocks of at least 16 within its M/N/K, the
accumulator tile, shared memory), equivalent GROUP_Ms collapse, and its candidates end with
``EXTERN``, the extern path it competes with (cuBLAS or cuDNN).

Example:
    >>> spaces = load_spaces()
    >>> cands = candidates(spaces["reduction_persistent"], (8, 128))
    >>> all(c.RBLOCK == 128 and c.XBLOCK <= 8 for c in cands)
    True
    >>> Config(XBLOCK=1024, num_warps=4).as_dict()
    {'XBLOCK': 1024, 'num_stages': 3, 'num_warps': 4}
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import tomllib
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..kernels.spec import (CONSTEXPR_NAMES, EXTERN, TRITON_DEFAULT_NUM_STAGES, Config,  # noqa: F401
                            KernelKind, TargetLimits, canonical_json, config_key, parse_targets)

DEFAULT_SPACE = "default"   # the shipped configs/autotune/default.toml

KINDS = tuple(str(k) for k in KernelKind)
BLOCK_NAMES = {str(k): k.blocks for k in KernelKind}
NUMEL_NAMES = {str(k): k.numel_names for k in KernelKind}
GEMM_KINDS = frozenset(str(k) for k in KernelKind if k.is_gemm)
TRITON_MAX_TENSOR_NUMEL = 1 << 20
CUDA_MAX_GRID = (2**31 - 1, 65535, 65535)


class SpaceError(ValueError):
    """A malformed search-space file; the message names the file and the key."""


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (1 for n <= 1)."""
    return 1 << max(0, (int(n) - 1).bit_length())


def _is_pow2(n: int) -> bool:
    return isinstance(n, int) and n > 0 and n & (n - 1) == 0


# ----------------------------------------------------------------------------- spaces
# A stencil kernel (``KernelSpec.stencil``) holds a sum over its taps for every element:
# ConvNeXt-T's 7x7 kernel took 236 (1-D) and 254 (2-D) registers for sm_90 at 8 elements a
# thread (cuobjdump, s9), at the 255 limit, so its configs past 16 a thread spill for sure,
# and each costs CPU to build: 41 configs of its 96-channel kernel took 386 s of one core
# (s10). Its candidates stop at 16 a thread, whatever the space file allows.
STENCIL_MAX_ELEMS_PER_THREAD = 16


@dataclass(frozen=True)
class Space:
    """Candidate values for one kernel kind (each tuple ordered small to large)."""
    kind: str
    values: tuple[tuple[str, tuple[int, ...]], ...]   # (("XBLOCK", (128, ...)), ("num_warps", ...))
    max_tile: int
    max_elems_per_thread: int
    max_shared_bytes: int | None = None   # GEMM kinds: operand tiles x stages (2-byte elements)

    def param(self, name: str) -> tuple[int, ...]:
        return dict(self.values).get(name, ())

    @property
    def size(self) -> int:
        """Candidates before pruning."""
        return math.prod(len(v) for _, v in self.values)


@dataclass(frozen=True)
class SearchSettings:
    sweep_max: int
    descent_budget: int


@dataclass(frozen=True)
class TuningSpaces:
    """Everything in one ``configs/autotune/*.toml``: spaces per kind, limits, budget."""
    spaces: Mapping[str, Space]
    targets: Mapping[int, TargetLimits]
    search: SearchSettings
    path: str

    def __getitem__(self, kind: str) -> Space:
        if kind not in self.spaces:
            raise KeyError(f"{self.path}: no search space for kernel kind {kind!r}; "
                           f"has {sorted(self.spaces)}")
        return self.spaces[kind]

    def of_kernel(self, kind: str, stencil: bool = False) -> Space:
        """``self[kind]``, with a stencil kernel's elements a thread capped at
        ``STENCIL_MAX_ELEMS_PER_THREAD``."""
        space = self[kind]
        if not stencil or space.max_elems_per_thread <= STENCIL_MAX_ELEMS_PER_THREAD:
            return space
        return dataclasses.replace(space, max_elems_per_thread=STENCIL_MAX_ELEMS_PER_THREAD)

    def limits(self, arch: int) -> TargetLimits:
        if arch not in self.targets:
            raise KeyError(f"{self.path}: no [targets.{arch}] resource limits; "
                           f"has {sorted(self.targets)}")
        return self.targets[arch]


_SPACE_KEYS = {"num_warps", "num_stages", "max_tile", "max_elems_per_thread"}
_KIND_KEYS = {kind: {"max_shared_bytes"} for kind in GEMM_KINDS}


def _int_list(path: str, where: str, value: Any, pow2: bool) -> tuple[int, ...]:
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise SpaceError(f"{path}: [{where}] must be a non-empty list of positive ints, "
                         f"got {value!r}")
    if pow2 and not all(_is_pow2(v) for v in value):
        raise SpaceError(f"{path}: [{where}] values must be powers of two, got {value!r}")
    if list(value) != sorted(set(value)):
        raise SpaceError(f"{path}: [{where}] must be strictly increasing, got {value!r}")
    return tuple(value)


def _space(path: str, kind: str, table: Mapping[str, Any]) -> Space:
    blocks = BLOCK_NAMES[kind]
    # a persistent reduction's RBLOCK is fixed by rnumel, never listed
    tuned_blocks = tuple(b for b in blocks
                         if not (kind == "reduction_persistent" and b == "RBLOCK"))
    allowed = _SPACE_KEYS | set(tuned_blocks) | _KIND_KEYS.get(kind, set())
    unknown = set(table) - allowed
    if unknown:
        raise SpaceError(f"{path}: [{kind}] unknown keys {sorted(unknown)}; "
                         f"known: {sorted(allowed)}")
    missing = allowed - set(table)
    if missing:
        raise SpaceError(f"{path}: [{kind}] missing keys {sorted(missing)}")
    values = [(b, _int_list(path, f"{kind}.{b}", table[b], pow2=True)) for b in tuned_blocks]
    warps = _int_list(path, f"{kind}.num_warps", table["num_warps"], pow2=True)
    if max(warps) > 32:
        raise SpaceError(f"{path}: [{kind}.num_warps] at most 32 (1024 threads), got {warps!r}")
    values.append(("num_warps", warps))
    stages = _int_list(path, f"{kind}.num_stages", table["num_stages"], pow2=False)
    values.append(("num_stages", stages))
    limits = ("max_tile", "max_elems_per_thread") + tuple(sorted(_KIND_KEYS.get(kind, ())))
    for name in limits:
        if not isinstance(table[name], int) or table[name] <= 0:
            raise SpaceError(f"{path}: [{kind}.{name}] must be a positive int")
    return Space(kind, tuple(values), table["max_tile"], table["max_elems_per_thread"],
                 table.get("max_shared_bytes"))


def spaces_path(name: str | Path) -> Path:
    """``"default"`` -> the shipped ``configs/autotune/default.toml`` (a pipeline's
    ``tuning.space``); anything with a suffix or a slash is a path as given."""
    text = str(name)
    if text.endswith(".toml") or "/" in text:
        return Path(text)
    from ..config import config_file
    return config_file("autotune", f"{text}.toml")


def load_spaces(path: str | Path = DEFAULT_SPACE) -> TuningSpaces:
    """Read and validate a search-space file: a path, or a name under ``configs/autotune/``."""
    path = str(spaces_path(path))
    with open(path, "rb") as f:
        data = tomllib.load(f)
    unknown = set(data) - set(KINDS) - {"search", "targets"}
    if unknown:
        raise SpaceError(f"{path}: unknown sections {sorted(unknown)}; known kinds: {list(KINDS)}")
    spaces = {kind: _space(path, kind, data[kind]) for kind in KINDS if kind in data}
    try:
        targets = parse_targets(path, data.get("targets", {}))
    except ValueError as exc:
        raise SpaceError(str(exc)) from None
    search = data.get("search", {})
    if set(search) != {"sweep_max", "descent_budget"}:
        raise SpaceError(f"{path}: [search] needs exactly sweep_max and descent_budget")
    return TuningSpaces(types.MappingProxyType(spaces), types.MappingProxyType(targets),
                        SearchSettings(**search), path)


# ----------------------------------------------------------------------------- pruning
def _block_caps(kind: str, numels: Sequence[int]) -> dict[str, int]:
    if kind in GEMM_KINDS:   # tl.dot needs 16 or more along every dim
        _, m, n, k = numels
        return {"BLOCK_M": max(16, next_pow2(m)), "BLOCK_N": max(16, next_pow2(n)),
                "BLOCK_K": max(16, next_pow2(k))}
    names = BLOCK_NAMES[kind]
    return {name: next_pow2(n) for name, n in zip(names, numels)}


def grid(kind: str, numels: Sequence[int], config: Config) -> tuple[int, ...]:
    """The launch grid of ``config`` (as ``compiler.codegen.wrapper`` computes it)."""
    numels = [int(n) for n in numels]
    if kind in GEMM_KINDS:
        batch, m, n, _ = numels
        return (math.ceil(m / config.BLOCK_M) * math.ceil(n / config.BLOCK_N), batch)
    if kind == "pointwise2d":
        return (math.ceil(numels[0] / config.XBLOCK), math.ceil(numels[1] / config.YBLOCK))
    return (max(1, math.ceil(numels[0] / config.XBLOCK)),)


def matmul_shared_bytes(config: Config, element_bytes: int = 2) -> int:
    """Shared memory a GEMM template config needs: an A and a B tile per pipeline stage."""
    return (config.BLOCK_M + config.BLOCK_N) * config.BLOCK_K * element_bytes * config.num_stages


def _fits_matmul(space: Space, numels: Sequence[int], config: Config) -> bool:
    """The GEMM template's pruning: blocks within the (16-padded) dims, the accumulator tile
    within ``max_tile`` and 1..``max_elems_per_thread`` elements a thread, the operand tiles
    of all stages within ``max_shared_bytes`` at 2-byte elements (a float32 config past a
    target's limit fails its build as a resource_error), and CUDA's grid limits."""
    if config.extern:
        return True
    if set(config.blocks()) != set(BLOCK_NAMES[space.kind]):
        return False
    caps = _block_caps(space.kind, numels)
    if any(getattr(config, name) > cap for name, cap in caps.items()):
        return False
    tile, threads = config.BLOCK_M * config.BLOCK_N, 32 * config.num_warps
    if tile > space.max_tile or threads > tile or tile > threads * space.max_elems_per_thread:
        return False
    if space.max_shared_bytes and matmul_shared_bytes(config) > space.max_shared_bytes:
        return False
    return all(g <= limit for g, limit in zip(grid(space.kind, numels, config), CUDA_MAX_GRID))


def _canonical_group(numels: Sequence[int], config: Config) -> Config:
    """GROUP_M past the number of tile rows changes nothing: the smallest equivalent one."""
    rows = math.ceil(int(numels[1]) / config.BLOCK_M)
    return config.replace(GROUP_M=min(config.GROUP_M, next_pow2(rows)))


def fits(space: Space, numels: Sequence[int], config: Config) -> bool:
    """Whether ``config`` survives ``space``'s pruning at these sizes (see module doc)."""
    if space.kind in GEMM_KINDS:
        return _fits_matmul(space, numels, config)
    caps = _block_caps(space.kind, numels)
    blocks = config.blocks()
    if set(blocks) != set(BLOCK_NAMES[space.kind]):
        return False
    if any(v > caps[name] for name, v in blocks.items()):
        return False
    if space.kind == "reduction_persistent" and config.RBLOCK != caps["RBLOCK"]:
        return False
    tile = config.tile
    max_tile = space.max_tile
    if space.kind == "reduction_persistent":   # a whole row must fit, however long
        max_tile = max(max_tile, caps["RBLOCK"])
    if tile > min(max_tile, TRITON_MAX_TENSOR_NUMEL):
        return False
    threads = 32 * config.num_warps
    if threads > max(tile, 32) or tile > threads * space.max_elems_per_thread:
        return False
    return all(g <= limit for g, limit in zip(grid(space.kind, numels, config), CUDA_MAX_GRID))


def candidates(space: Space, numels: Sequence[int]) -> list[Config]:
    """The pruned candidate configs of ``space`` for a kernel of these sizes, sorted."""
    numels = [int(n) for n in numels]
    if len(numels) != len(NUMEL_NAMES[space.kind]):
        raise ValueError(f"{space.kind} takes {len(NUMEL_NAMES[space.kind])} numels, got {numels}")
    caps = _block_caps(space.kind, numels)
    axes = []
    for name, values in space.values:
        if name in caps:
            values = sorted({min(v, caps[name]) for v in values})
        axes.append((name, values))
    if space.kind == "reduction_persistent":
        axes.append(("RBLOCK", [caps["RBLOCK"]]))
    names = [n for n, _ in axes]
    out = set()
    for combo in itertools.product(*(v for _, v in axes)):
        config = Config(**dict(zip(names, combo)))
        if space.kind in GEMM_KINDS:
            config = _canonical_group(numels, config)
        if fits(space, numels, config):
            out.add(config)
    # a GEMM's extern path is one more candidate, timed against the template's configs
    return sorted(out) + ([EXTERN] if space.kind in GEMM_KINDS else [])


def neighbours(space: Space, numels: Sequence[int], config: Config,
               radius: int = 1) -> list[Config]:
    """Configs of ``space`` that differ from ``config`` in one parameter, by at most
    ``radius`` steps along that parameter's (clamped) value list, and that fit."""
    numels = [int(n) for n in numels]
    caps = _block_caps(space.kind, numels)
    out = []
    for name, values in space.values:
        values = sorted({min(v, caps[name]) for v in values}) if name in caps else list(values)
        current = getattr(config, name)
        if current not in values:
            # off the grid (the heuristic default): step to the nearest values on each side
            below = [v for v in values if v < current][-radius:]
            above = [v for v in values if v > current][:radius]
            steps = below + above
        else:
            k = values.index(current)
            steps = values[max(0, k - radius):k] + values[k + 1:k + 1 + radius]
        for v in steps:
            other = config.replace(**{name: v})
            if space.kind in GEMM_KINDS:
                other = _canonical_group(numels, other)
            if other != config and other not in out and fits(space, numels, other):
                out.append(other)
    return out


# ----------------------------------------------------------------------------- the default
def default_config(kind: str, numels: Sequence[int], device_type: str = "cuda",
                   options: Any = None, rows_across: bool = False,
                   stencil: bool = False) -> Config:
    """The heuristic config kiln launches when tuning is off (``codegen.heuristics``).

    Delegates, so there is one heuristic. ``num_stages`` is Triton's default where the
    heuristic passes none. ``rows_across``, ``stencil``: the kernel spec's flags.
    """
    from ..codegen.heuristics import launch_config
    from ..config import load_options
    launch = launch_config(KernelKind(kind), tuple(int(n) for n in numels),
                           load_options(options), device_type, rows_across, stencil)
    return launch.config()
