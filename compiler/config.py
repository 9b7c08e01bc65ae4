"""Compiler options: one frozen dataclass, loaded from TOML, overridable by the caller.

This is the only module of the compiler that reads the environment (DESIGN.md conventions):
``KILN_DEBUG_DIR`` makes every compile dump its generated code there, ``KILN_CACHE_DIR`` moves
the directory generated modules are written to before import, and ``KILN_STORE_KEY_FILE`` /
``KILN_STORE_KEY`` give the key that signs store rows (``store_signing_key``; the store
reads it through here). It is also the one place that
finds kiln's shipped TOML files (``config_file``): package data of the installed
distribution (``kiln_configs``, the repo's ``configs/``), read through importlib.resources.

Options are resolved once, where a compile or a run starts (defaults, then the
environment, then the caller's overrides); what travels to a pipeline worker is the
resolved whole (``to_json``), rebuilt there by ``options_from_json`` without reading the
worker's own files or environment, so runner and workers compute the same module keys.

Example:
    >>> opts = load_options({"debug_dir": "/tmp/kiln-code"})
    >>> opts.debug_dir
    '/tmp/kiln-code'
    >>> options_from_json(opts.to_json()) == opts
    True
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import json
import os
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

# How an option takes part in ``options_hash`` (``field(metadata={"code": ...})``):
# "always": it changes generated code; "unless_default": it changes generated code, and is
# hashed only when set away from its default, so module keys made before the option
# existed stay valid. Untagged options (where code is written) never change a key.
ALWAYS, UNLESS_DEFAULT = "always", "unless_default"


def _code(default: Any, how: str = ALWAYS) -> Any:
    return field(default=default, metadata={"code": how})


@dataclass(frozen=True)
class CompilerOptions:
    """Everything that changes generated code, plus where code is written.

    Only fields tagged ``code`` enter ``options_hash``: a debug dump directory does not
    change the kernels, so it must not change cache keys.
    """
    # Pointwise 1-D kernels: elements per program and warps, used when tuning is off.
    xblock: int = _code(1024)
    num_warps: int = _code(4)
    # 2-D tiles for kernels whose loads and stores are contiguous along different dims.
    tile_x: int = _code(64)
    tile_y: int = _code(64)
    # A lazy value read by several consumers is recomputed in each while it does at most
    # this many loads and ops; past that it is realized into a buffer once.
    inline_max_reads: int = _code(4)
    inline_max_ops: int = _code(32)
    # Fusion size limits: a kernel the scheduler fuses computes at most this many buffers,
    # this many distinct ops (after CSE) and reads at most this many distinct buffers.
    # Within them it fuses only what saves global-memory bytes (scheduler.fusion_bytes_saved).
    fusion_max_nodes: int = _code(12)
    fusion_max_ops: int = _code(256)
    fusion_max_inputs: int = _code(16)
    # Constants with at most this many elements are inlined into kernels as literals.
    inline_constant_numel: int = _code(1)
    # Check inputs (shape, dtype, device, strides) on every call of a compiled module.
    check_inputs: bool = _code(True)
    # Convolutions on CUDA in channels-last (NHWC) layout: "auto" when the graph is
    # conv-heavy (Inductor's decide_layout_opt idea), "on", or "off".
    channels_last: str = _code("auto")
    # Replay static-shape CUDA modules as one CUDA graph: a few microseconds of launch cost
    # instead of one Python launch per kernel. Inputs are copied into the graph's own
    # buffers and outputs cloned out of them, so callers see ordinary fresh tensors.
    cuda_graphs: bool = True
    # Dynamic-shape CUDA modules keep one CUDA graph per size seen twice, at most this many
    # (least recently used evicted), all in one shared memory pool; 0 turns them off
    # (compiler/graph_pool.py, docs/cuda-graphs.md).
    cuda_graph_max_graphs: int = 64
    # ... and at most this many bytes held by those graphs of their own (input buffers and
    # outputs; the scratch is shared): sizes recur across requests, and small graphs are
    # cheap to keep, but a graph of a long KV cache holds two copies of it.
    cuda_graph_max_bytes: int = 1 << 30
    # Sizes a dynamic dim is padded up to (ascending), so nearby sizes share a graph; only
    # dims the graph treats row by row are padded (compiler/graph_padding.py), e.g. a batch.
    cuda_graph_buckets: tuple = ()
    # Compile a static-shape CUDA module's kernels before its first call, in this many
    # worker processes (-1: one per core, up to 16; 0: in the calling process), rather
    # than one by one as each is first launched.
    compile_workers: int = -1
    # mm/addmm/bmm as kiln's Triton GEMM template with the pointwise ops after it fused in:
    # "off" (cuBLAS plus a separate epilogue kernel), "on" (the template wherever eligible),
    # or "auto" (the template only where tuned configs say it beat cuBLAS at that shape;
    # see codegen/matmul_select.py).
    matmul_template: str = _code("off", UNLESS_DEFAULT)
    # Convolutions kiln computes itself, where that spares cuDNN's per-shape set-up (seconds
    # for a depthwise net's first call; half of a served ResNet-50's first result): "auto"
    # lowers depthwise convs to kiln kernels, half-type convs whose kernel is 1 or its stride
    # (patchify, 1x1) to one mm, and, for a GPU target, every other half-type ungrouped conv
    # to kiln's implicit-GEMM template (codegen/conv.py), which a tuned config can give back
    # to cuDNN where cuDNN won its search (with matmul_template "auto" the template is only a
    # tuning candidate: codegen/matmul_select.py, conv_mode); "library" leaves every conv to
    # cuDNN, which computes 7x7 depthwise convs up to 1.6x faster (compiler/lowering/
    # depthwise.py has the measurements); "triton" takes the template wherever it can, tuned
    # or not, and on any target (how CI runs it under the interpreter).
    conv_kernels: str = _code("auto", UNLESS_DEFAULT)
    # Depthwise conv kernels carry cuDNN's conv as their tuning baseline (the kernel spec's
    # ``baseline``, codegen/depthwise_baseline.py), as the GEMM and conv templates carry
    # cuBLAS's and cuDNN's: the tune stage times cuDNN at each such kernel's shape, and a
    # module relowered with the tuned configs calls cuDNN for the convs where it won
    # (``conv_kernels`` "auto"). Off by default: it adds a title line and the baseline to
    # those kernels, so it changes their keys and specs, and untuned modules stay as before.
    depthwise_baseline: bool = _code(False, UNLESS_DEFAULT)
    # Depthwise windows of at least this many taps (5x5 and up) are summed in a loop over
    # the window's rows instead of unrolled, which builds ConvNeXt-T's 7x7 kernels 2-3x
    # faster (compiler/lowering/depthwise.py, ``_loops``). 0 unrolls every window.
    depthwise_loop_taps: int = _code(25, UNLESS_DEFAULT)
    # Which attention backend torch tries first in kiln's wrappers: "torch" keeps its own
    # order (cuDNN's attention first on Hopper); "flash_first" asks for flash, then memory-
    # efficient, then cuDNN (compiler/kernels/host.py: ordered_attention), which spares
    # cuDNN's per-shape set-up in a fresh process's first call (80-95 ms for ViT-B/16's
    # attention on an H100, 18 ms with flash) at a steady-state cost not yet measured;
    # "auto" is "flash_first" for a module with dynamic sizes, whose every new size would
    # pay cuDNN's set-up again (a decode step with a growing cache: 50-60 ms a token on an
    # H100, s9 call 1), and "torch" for a static one.
    attention: str = _code("auto", UNLESS_DEFAULT)
    debug_dir: str | None = None
    cache_dir: str | None = None

    def attention_order(self, dynamic: bool) -> str:
        """Option ``attention`` resolved for a module: "auto" is "flash_first" where its
        sizes are ``dynamic``, else "torch".

        Example:
            >>> CompilerOptions().attention_order(True), CompilerOptions().attention_order(False)
            ('flash_first', 'torch')
        """
        if self.attention != "auto":
            return self.attention
        return "flash_first" if dynamic else "torch"

    def options_hash(self) -> str:
        """16 hex digits of the code-changing options (see ``ALWAYS``/``UNLESS_DEFAULT``)."""
        code = {}
        for f in dataclasses.fields(self):
            how, value = f.metadata.get("code"), getattr(self, f.name)
            if how == ALWAYS or (how == UNLESS_DEFAULT and value != f.default):
                code[f.name] = value
        return hashlib.sha256(json.dumps(code, sort_keys=True).encode()).hexdigest()[:16]

    def to_json(self) -> str:
        """Every option, resolved: what a pipeline worker is handed."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def code_dir(self) -> Path:
        """Directory that generated modules are written to (triton.jit needs real files)."""
        root = self.cache_dir or os.path.join(tempfile.gettempdir(), f"kiln-{os.getuid()}")
        path = Path(root) / "code"
        path.mkdir(parents=True, exist_ok=True)
        return path


class OptionsError(ValueError):
    """A bad option name or value; the message names the key."""


def config_file(*parts: str) -> Path:
    """A TOML file kiln ships (``config_file("autotune", "default.toml")``).

    Run from a source tree (an editable install, ``PYTHONPATH=.``, or a ``git worktree`` of
    another commit beside an installed checkout), they are that tree's own ``configs/``, so
    its code reads the options it knows; installed from a wheel, the package data of
    ``kiln_configs`` (the repo's ``configs/``). Missing is an error, never a silent default.
    """
    root = Path(__file__).resolve().parent.parent / "configs"
    if not (root / "compiler.toml").is_file():
        try:
            root = importlib.resources.files("kiln_configs")
        except ModuleNotFoundError:
            pass
    path = root.joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(2, f"kiln's shipped config {'/'.join(parts)} is missing "
                                   f"(reinstall kiln)", str(path))
    return Path(str(path))


def _from_env() -> dict[str, Any]:
    env = {}
    if os.environ.get("KILN_DEBUG_DIR"):
        env["debug_dir"] = os.environ["KILN_DEBUG_DIR"]
    if os.environ.get("KILN_CACHE_DIR"):
        env["cache_dir"] = os.environ["KILN_CACHE_DIR"]
    return env


# The values an option spelled as a word may take.
CHOICES = {"channels_last": ("auto", "on", "off"), "matmul_template": ("off", "on", "auto"),
           "conv_kernels": ("auto", "library", "triton"), "attention": ("auto", "torch", "flash_first")}


def _validated(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(CompilerOptions)}
    out = {}
    for key, value in values.items():
        if key not in fields:
            raise OptionsError(f"{source}: unknown compiler option {key!r}; "
                               f"known: {', '.join(sorted(fields))}")
        default = fields[key].default
        if isinstance(default, tuple) and isinstance(value, list):   # TOML and JSON arrays
            value = tuple(value)
        if default is not None and value is not None and type(value) is not type(default):
            raise OptionsError(f"{source}: option {key!r} must be {type(default).__name__}, "
                               f"got {type(value).__name__} ({value!r})")
        if key in CHOICES and value not in CHOICES[key]:
            raise OptionsError(f"{source}: option {key!r} must be one of "
                               f"{', '.join(map(repr, CHOICES[key]))}, got {value!r}")
        out[key] = value
    return out


def load_options(overrides: Mapping[str, Any] | CompilerOptions | None = None,
                 toml_path: Path | None = None) -> CompilerOptions:
    """Defaults from the shipped ``compiler.toml`` (or ``toml_path``), then the environment,
    then ``overrides``."""
    if isinstance(overrides, CompilerOptions):
        return overrides
    path = toml_path or config_file("compiler.toml")
    with open(path, "rb") as f:
        values = _validated(tomllib.load(f).get("compiler", {}), str(path))
    values.update(_from_env())
    values.update(_validated(dict(overrides or {}), "options"))
    return CompilerOptions(**values)


def store_signing_key(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The key that signs and verifies store rows (``storage.signing``), or None.

    ``KILN_STORE_KEY_FILE`` names a file holding it (its bytes, less a trailing newline, so
    ``openssl rand -hex 32 > FILE`` makes one); ``KILN_STORE_KEY`` holds it inline (UTF-8).
    Read per store opened, never at import, and never sent to pipeline workers: each
    process reads its own. Both set, a file that cannot be read or an empty key is an
    ``OptionsError``: a misconfigured key must not pass for no key.

    Example:
        >>> store_signing_key({"KILN_STORE_KEY": "correct horse battery staple"})
        b'correct horse battery staple'
        >>> store_signing_key({}) is None
        True
    """
    env = os.environ if environ is None else environ
    path, inline = env.get("KILN_STORE_KEY_FILE"), env.get("KILN_STORE_KEY")
    if path and inline:
        raise OptionsError("both KILN_STORE_KEY_FILE and KILN_STORE_KEY are set; set one")
    if path:
        try:
            key = Path(path).read_bytes().rstrip(b"\r\n")
        except OSError as err:
            raise OptionsError(f"KILN_STORE_KEY_FILE={path}: cannot read the store key: "
                               f"{err.strerror or err}") from None
        source = f"KILN_STORE_KEY_FILE={path}"
    elif inline:
        key, source = inline.encode(), "KILN_STORE_KEY"
    else:
        return None
    if not key:
        raise OptionsError(f"{source}: the store key is empty")
    return key


def options_from_json(text: str) -> CompilerOptions:
    """Options resolved elsewhere (``CompilerOptions.to_json``), taken as they are: no TOML
    and no environment are read, so every process given the text gets equal options."""
    return CompilerOptions(**_validated(json.loads(text), "resolved options"))
