"""Generated source to an importable module, bound for the device it runs on.

The same generated source runs on CUDA (``jit = triton.jit``, CUDA's libdevice) and on CPU
tensors under Triton's interpreter (``jit = InterpretedFunction``, the NumPy shim in
``kernels.interpreter``), which is how CI checks every kernel without a GPU. Modules are
written to a file first because ``triton.jit`` reads a kernel's source through ``inspect``.
Both a whole module (``load_module``) and one kernel's source alone (``load_kernel``: what
build and tune compile and time) load here.

Example:
    >>> sorted(bindings("cpu"))
    ['jit', 'libdevice']
"""
from __future__ import annotations

import functools
import importlib.util
import types
from pathlib import Path
from typing import Any

import torch
import triton

from ..artifact import content_hash
from .launch import Launcher

# A kernel's source alone names ``tl`` and ``triton``; ``jit`` and ``libdevice`` are bound
# by ``load_module`` for the device (CUDA or the interpreter).
PREAMBLE = "import triton\nimport triton.language as tl\n\n"


def bindings(device_type: str) -> dict[str, Any]:
    """Globals the generated module needs for ``device_type`` ("cuda" or "cpu")."""
    if device_type == "cuda":
        from triton.language.extra import libdevice
        return {"jit": triton.jit, "libdevice": libdevice}
    if device_type == "cpu":
        from .interpreter import interpreter_bindings
        return interpreter_bindings()
    raise ValueError(f"kiln runs kernels on 'cuda' or 'cpu' (interpreter), not {device_type!r}")


def load_module(source: str, device_type: str, code_dir: Path,
                constants: dict[str, torch.Tensor] | None = None,
                static_shapes: bool = False, kernels=None,
                dynamic_shapes: bool = False) -> types.ModuleType:
    """Write ``source`` to ``code_dir`` and import it with the device's bindings.

    With ``static_shapes`` or ``dynamic_shapes`` (a module's wrapper, not a build) on CUDA,
    each kernel (the names in ``kernels``; every JIT function when None) is wrapped in a
    ``Launcher``, keyed by its integer arguments' specialization too for dynamic shapes.
    Helper JIT functions the kernels call (a scan's combine function) must stay JIT
    functions: name only the kernels where there are any.
    The wrapping happens as each kernel is defined, so the module's bound launches (made
    below the kernels, see ``codegen.wrapper``) bind the ``Launcher``.
    """
    key = content_hash(source)[:24]
    path = Path(code_dir) / f"kiln_{key}.py"
    # A file already there is imported only if it holds exactly ``source`` (which the store
    # verified): its name alone proves nothing about what an earlier process left in it.
    if not path.exists() or path.read_text() != source:
        tmp = path.with_suffix(f".{id(source)}.tmp")
        tmp.write_text(source)
        tmp.replace(path)   # atomic: concurrent loaders never import a half-written file
    spec = importlib.util.spec_from_file_location(f"kiln_generated_{key}", path)
    module = importlib.util.module_from_spec(spec)
    module.__dict__.update(bindings(device_type))
    if static_shapes and dynamic_shapes:
        raise ValueError("a module's shapes are static or dynamic, not both")
    if device_type == "cuda" and (static_shapes or dynamic_shapes):
        module.jit = _launcher_jit(module.jit, None if kernels is None else frozenset(kernels),
                                   dynamic_shapes)
    module.__dict__.update(constants or {})
    spec.loader.exec_module(module)
    return module


def _launcher_jit(jit, kernels: frozenset | None, dynamic: bool):
    """``jit`` that wraps the named kernels (all when None) in a ``Launcher``."""
    def launcher_jit(fn):
        compiled = jit(fn)
        if kernels is None or fn.__name__ in kernels:
            return Launcher(compiled, dynamic)
        return compiled
    return launcher_jit


@functools.lru_cache(maxsize=64)
def _load(source: str, device_type: str, code_dir: str):
    return load_module(PREAMBLE + source, device_type, Path(code_dir))


def load_kernel(name: str, source: str, device_type: str = "cuda",
                code_dir: Path | None = None):
    """One kernel's source as a JITFunction (``"cuda"``) or InterpretedFunction (``"cpu"``)."""
    if code_dir is None:
        from ..config import load_options
        code_dir = load_options().code_dir()
    return getattr(_load(source, device_type, str(code_dir)), name)
