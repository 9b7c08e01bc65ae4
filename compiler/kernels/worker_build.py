"""What a compile worker (``compile_worker``) runs: Triton compiles that never import torch.

A worker used to import the whole generated module, and with it torch, to get each kernel's
JIT function. Importing torch costs a worker a second or more of CPU (more with CUDA's
libraries), and a cold compile starts one worker per core while the caller captures and
lowers on those same cores. Triton needs only the kernels: ``kernels_only`` keeps the
module's ``@jit`` functions and Triton imports *on their original lines* and blanks the rest,
because Triton keys a compile by a kernel's source text and starting line (and its callees',
such as a scan's combine function), not by its file. The caller's compile of the full module
is then a cache hit on the worker's binary (``tests/test_precompile.py`` counts the entries).
A kernel whose compile fails from the kernels-only module (a name it needs was blanked) is
compiled again from the full module, so the shortcut can cost time but never a binary.

``warm_backend`` and ``build_launcher`` live here for the same reason (``build`` re-exports
them).

Example:
    >>> src = "import torch\\nimport triton\\n\\n@jit\\ndef k(x):\\n    pass\\n\\nbuf = torch.empty(1)\\n"
    >>> kernels_only(src).splitlines()
    ['', 'import triton', '', '@jit', 'def k(x):', '    pass', '', '']
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import triton
import triton.language as tl

from .spec import Target


def kernels_only(source: str) -> str:
    """``source`` with every line blanked but its ``@jit`` functions (decorators included)
    and its imports of Triton alone: the same line count, each kept line where it was."""
    keep: set[int] = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) and _imports_triton_only(node):
            keep.update(range(node.lineno, node.end_lineno + 1))
        elif isinstance(node, ast.FunctionDef) and any(_is_jit(d) for d in node.decorator_list):
            first = min(d.lineno for d in node.decorator_list)
            keep.update(range(first, node.end_lineno + 1))
    lines = source.splitlines()
    return "\n".join(line if k in keep else "" for k, line in enumerate(lines, 1)) + "\n"


def _imports_triton_only(node: ast.Import | ast.ImportFrom) -> bool:
    names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
        [alias.name for alias in node.names]
    return all(n == "triton" or n.startswith("triton.") for n in names)


def _is_jit(decorator: ast.expr) -> bool:
    """``@jit`` or ``@triton.jit`` (with or without arguments)."""
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(target, ast.Name) and target.id == "jit") or \
        (isinstance(target, ast.Attribute) and target.attr == "jit")


@functools.lru_cache(maxsize=8)
def kernel_module(source: str, code_dir: str) -> types.ModuleType:
    """The JIT functions of generated module ``source``, imported from ``kernels_only`` of
    it (once per module, however many of its kernels this worker gets)."""
    from triton.language.extra import libdevice
    key = hashlib.sha256(source.encode()).hexdigest()[:24]
    path = Path(code_dir) / f"kiln_{key}_kernels.py"
    text = kernels_only(source)
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(f".{id(text)}.tmp")
        tmp.write_text(text)
        tmp.replace(path)     # atomic: workers sharing ``code_dir`` never read half a file
    # The caller's module name (``source.load_module``), in case a Triton keys by it.
    spec = importlib.util.spec_from_file_location(f"kiln_generated_{key}", path)
    module = importlib.util.module_from_spec(spec)
    module.__dict__.update({"jit": triton.jit, "libdevice": libdevice})
    spec.loader.exec_module(module)
    return module


def kernel_source(fn, kernel: dict[str, Any]):
    """Triton's ``ASTSource`` of ``fn`` (a JITFunction) specialized as ``kernel`` (a
    ``KernelJob`` as a dict) launches it."""
    from triton.compiler import ASTSource
    attrs = {(k,): [["tt.divisibility", 16]] for k in kernel["divisible_by_16"]}
    return ASTSource(fn, dict(kernel["types"]), dict(kernel["constexprs"]), attrs)


def compile_job(fn, kernel: dict[str, Any], target: Target):
    """``triton.compile`` of JIT function ``fn`` as ``kernel`` (a ``KernelJob`` as a dict)
    launches it: the one compile call of workers and of ``build.compile_kernel``."""
    return triton.compile(kernel_source(fn, kernel), target=Target.of(target).triton(),
                          options=dict(kernel["options"]))


def compile_module_job(job: dict[str, Any]) -> dict[str, Any]:
    """Compile every kernel of ``job`` (a ``precompile.ModuleJob`` as a dict) into its Triton
    cache, with ``build_launchers`` building their host launchers too; errors are kept per
    kernel (the caller's own first launch then compiles and raises it properly)."""
    use_cache_dir(job["cache_dir"])      # the caller's cache, whatever our env said
    errors, launchers, start = {}, 0, time.perf_counter()
    for kernel in job["kernels"]:
        try:
            compiled = _compile_from_source(job["source"], job["code_dir"], kernel,
                                            tuple(job["target"]))
        except Exception as err:  # noqa: BLE001 -- reported, and redone by the first launch
            errors[kernel["name"]] = f"{type(err).__name__}: {err}"
            continue
        if job.get("build_launchers"):
            launchers += build_launcher(compiled)
    return {"errors": errors, "launchers": launchers, "seconds": time.perf_counter() - start}


def _compile_from_source(source: str, code_dir: str, kernel: dict[str, Any], target):
    """The kernel compiled from the kernels-only module; where that fails, from the full
    module (which imports torch: slow once, but the same binary the caller would build)."""
    try:
        return compile_job(getattr(kernel_module(source, code_dir), kernel["name"]), kernel,
                           target)
    except Exception:  # noqa: BLE001 -- retried the slow way, which raises what is real
        from .source import load_module
        full = load_module(source, "cuda", Path(code_dir))
        return compile_job(getattr(full, kernel["name"]), kernel, target)


def use_cache_dir(path: str) -> None:
    """Point this process's Triton cache at ``path`` (a compile worker serving a caller)."""
    triton.knobs.cache.dir = path


def build_launcher(compiled) -> bool:
    """Build the kernel's host launcher into Triton's cache, as its first launch would.

    Triton 3.6 compiles a C launcher per kernel signature with gcc (~0.3 s each, one after
    another, inside the first call); built here, the first call finds it cached. Newer
    Tritons launch through one generic launcher and need an active driver here: nothing to
    build, and any failure only means the first call builds it (False).
    """
    try:
        from triton.backends.nvidia.driver import CudaLauncher
        CudaLauncher(compiled.src, compiled.metadata)
    except Exception:  # noqa: BLE001 -- an optimization only; the first launch does it anyway
        return False
    return True


@triton.jit
def _warm_up_kernel(x_ptr):
    tl.store(x_ptr, tl.load(x_ptr) + 1.0)


def warm_backend(target: Target) -> str | None:
    """Compile a tiny kernel for ``target``: a process's first ``triton.compile`` pays the
    backend's start-up (~0.4 s more than a small kernel's ~0.1 s), which would otherwise land
    on a model's first kernel. A throwaway cache makes it a real compile every time and keeps
    the user's cache clean. Returns None, or why it failed (harmless: the first real compile
    pays the start-up instead).
    """
    from triton.compiler import ASTSource
    try:
        with tempfile.TemporaryDirectory(prefix="kiln-warm-") as scratch, \
                triton.knobs.cache.scope():   # restores the cache dir (and its env variable)
            triton.knobs.cache.dir = scratch
            triton.compile(ASTSource(_warm_up_kernel, {"x_ptr": "*fp32"}),
                           target=Target.of(target).triton())
    except Exception as err:  # noqa: BLE001 -- an optimization only
        return f"{type(err).__name__}: {err}"
    return None
