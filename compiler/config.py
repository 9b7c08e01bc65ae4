"""Compiler options: one frozen dataclass, loaded from TOML, overridable by the caller.

This is the only module of the compiler that reads the environment (DESIGN.md conventions):
``KILN_DEBUG_DIR`` makes every compile dump its generated code there, ``KILN_CACHE_DIR`` moves
the directory generated modules are written to before import.

Example:
    >>> opts = load_options({"debug_dir": "/tmp/kiln-code"})
    >>> opts.debug_dir
    '/tmp/kiln-code'
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

DEFAULTS_TOML = Path(__file__).resolve().parent.parent / "configs" / "compiler.toml"


@dataclass(frozen=True)
class CompilerOptions:
    """Everything that changes generated code, plus where code is written.

    Only fields in ``CODE_FIELDS`` enter ``options_hash``: a debug dump directory does not
    change the kernels, so it must not change cache keys.
    """
    # Pointwise 1-D kernels: elements per program and warps, used when tuning is off.
    xblock: int = 1024
    num_warps: int = 4
    # 2-D tiles for kernels whose loads and stores are contiguous along different dims.
    tile_x: int = 64
    tile_y: int = 64
    # A lazy value read by several consumers is recomputed in each while it does at most
    # this many loads and ops; past that it is realized into a buffer once.
    inline_max_reads: int = 4
    inline_max_ops: int = 32
    # Fusion size limits: a kernel the scheduler fuses computes at most this many buffers,
    # this many distinct ops (after CSE) and reads at most this many distinct buffers.
    # Within them it fuses only what saves global-memory bytes (scheduler.fusion_bytes_saved).
    fusion_max_nodes: int = 12
    fusion_max_ops: int = 256
    fusion_max_inputs: int = 16
    # Constants with at most this many elements are inlined into kernels as literals.
    inline_constant_numel: int = 1
    # Check inputs (shape, dtype, device, strides) on every call of a compiled module.
    check_inputs: bool = True
    # Convolutions on CUDA in channels-last (NHWC) layout: "auto" when the graph is
    # conv-heavy (Inductor's decide_layout_opt idea), "on", or "off".
    channels_last: str = "auto"
    # Replay static-shape CUDA modules as one CUDA graph: a few microseconds of launch cost
    # instead of one Python launch per kernel. Inputs are copied into the graph's own
    # buffers and outputs cloned out of them, so callers see ordinary fresh tensors.
    cuda_graphs: bool = True
    # Compile a static-shape CUDA module's kernels before its first call, in this many
    # worker processes (-1: one per core, up to 16; 0: in the calling process), rather
    # than one by one as each is first launched.
    compile_workers: int = -1
    # mm/addmm/bmm as kiln's Triton GEMM template with the pointwise ops after it fused in:
    # "off" (cuBLAS plus a separate epilogue kernel), "on" (the template wherever eligible),
    # or "auto" (the template only where tuned configs say it beat cuBLAS at that shape;
    # see codegen/matmul_select.py).
    matmul_template: str = "off"
    debug_dir: str | None = None
    cache_dir: str | None = None

    CODE_FIELDS = ("xblock", "num_warps", "tile_x", "tile_y", "inline_max_reads",
                   "inline_max_ops", "fusion_max_nodes", "fusion_max_ops", "fusion_max_inputs",
                   "inline_constant_numel", "check_inputs", "channels_last")

    def options_hash(self) -> str:
        code = {name: getattr(self, name) for name in self.CODE_FIELDS}
        if self.matmul_template != "off":   # so "off" keeps every module key made before it
            code["matmul_template"] = self.matmul_template
        return hashlib.sha256(json.dumps(code, sort_keys=True).encode()).hexdigest()[:16]

    def code_dir(self) -> Path:
        """Directory that generated modules are written to (triton.jit needs real files)."""
        root = self.cache_dir or os.path.join(tempfile.gettempdir(), f"kiln-{os.getuid()}")
        path = Path(root) / "code"
        path.mkdir(parents=True, exist_ok=True)
        return path


class OptionsError(ValueError):
    """A bad option name or value; the message names the key."""


def _from_env() -> dict[str, Any]:
    env = {}
    if os.environ.get("KILN_DEBUG_DIR"):
        env["debug_dir"] = os.environ["KILN_DEBUG_DIR"]
    if os.environ.get("KILN_CACHE_DIR"):
        env["cache_dir"] = os.environ["KILN_CACHE_DIR"]
    return env


def _validated(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(CompilerOptions)}
    out = {}
    for key, value in values.items():
        if key not in fields:
            raise OptionsError(f"{source}: unknown compiler option {key!r}; "
                               f"known: {', '.join(sorted(fields))}")
        default = fields[key].default
        if default is not None and value is not None and type(value) is not type(default):
            raise OptionsError(f"{source}: option {key!r} must be {type(default).__name__}, "
                               f"got {type(value).__name__} ({value!r})")
        out[key] = value
    return out


def load_options(overrides: Mapping[str, Any] | CompilerOptions | None = None,
                 toml_path: Path | None = DEFAULTS_TOML) -> CompilerOptions:
    """Defaults from ``configs/compiler.toml``, then the environment, then ``overrides``."""
    if isinstance(overrides, CompilerOptions):
        return overrides
    values: dict[str, Any] = {}
    if toml_path is not None and Path(toml_path).exists():
        with open(toml_path, "rb") as f:
            values.update(_validated(tomllib.load(f).get("compiler", {}), str(toml_path)))
    values.update(_from_env())
    values.update(_validated(dict(overrides or {}), "options"))
    return CompilerOptions(**values)
