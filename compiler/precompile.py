"""Compiling a module's kernels ahead of its first call, in parallel worker processes.

Triton compiles a ``@triton.jit`` kernel on its first launch, one kernel at a time, in the
calling thread: for a model of 20 kernels that first call costs seconds. ``precompile``
instead hands every kernel of a static-shape CUDA module to a pool of processes, which run
``triton.compile`` for the card's architecture and leave the binaries in Triton's on-disk
cache; back in the caller, the same ``triton.compile`` call is then a cache hit (a few
milliseconds) and its compiled kernel is handed to the module's ``Launcher``, so the first
launch is already the direct one.

Both sides build the kernel from the *same module source* loaded the same way, because Triton
keys a kernel by its source text and its starting line number in the file: a kernel compiled
from its own short file would never be found from the module's file.

The pool is one per process, started on first use (``compile_pool``): worker processes import
torch and Triton once (seconds) and are reused by every later compile.

Example:
    >>> job = KernelJob("kiln_pw_relu_0", {"XBLOCK": 1024, "num_warps": 4}, {"XBLOCK": 1024},
    ...                 {"num_warps": 4, "num_stages": 3},
    ...                 {"in_ptr0": "*fp32", "out_ptr0": "*fp32", "xnumel": "i32"}, [])
    >>> job.options["num_warps"]
    4
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import hashlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import triton
import triton.language as tl

from .artifact import CompiledArtifact, KernelArtifact


@dataclass(frozen=True)
class KernelJob:
    """One kernel of a module at its launch config: what ``triton.compile`` needs."""
    name: str
    launch: dict[str, int]               # the keyword arguments the wrapper launches it with
    constexprs: dict[str, int]           # block sizes, and integer arguments equal to 1
    options: dict[str, int]              # num_warps, num_stages
    types: dict[str, str]                # argument name -> Triton type ("*bf16", "i32", ...)
    divisible_by_16: list[int]           # argument positions Triton may assume 16-aligned


@dataclass(frozen=True)
class ModuleJob:
    """Every kernel of one generated module, for one GPU target and Triton cache."""
    source: str
    code_dir: str
    cache_dir: str
    target: tuple[str, int, int]         # ("cuda", 90, 32)
    kernels: tuple[KernelJob, ...] = field(default_factory=tuple)
    build_launchers: bool = False        # also build each kernel's host launcher


def kernel_jobs(kernels: Iterable[KernelArtifact], arg_names: dict[str, Sequence[str]]
                ) -> tuple[KernelJob, ...]:
    """A job per kernel of a static-shape module, at the config its wrapper launches.

    ``arg_names`` maps each kernel's name to its parameters (``JITFunction.arg_names``).
    """
    from .autotune.build import kernel_signature
    from .autotune.spaces import Config
    from .codegen.wrapper import launch_kwargs
    jobs = []
    for kernel in kernels:
        if kernel.meta.get("candidate"):   # a GEMM template kept only to be tuned: never launched
            continue
        launch = launch_kwargs(kernel.meta["launch"])
        config = Config.from_dict(launch)
        sig = kernel_signature(arg_names[kernel.name], kernel, config)
        jobs.append(KernelJob(kernel.name, launch, sig.constexprs, config.options(), sig.types,
                              sorted(k[0] for k in sig.attrs)))
    return tuple(jobs)


def _launcher_jobs(artifact: CompiledArtifact, module) -> tuple[dict[str, Any], tuple]:
    """The ``Launcher`` of each kernel of the loaded ``module`` (static shapes only have
    them) and a job per launched kernel."""
    from .runtime import Launcher
    launchers = {k.name: getattr(module, k.name) for k in artifact.kernels}
    launchers = {n: l for n, l in launchers.items() if isinstance(l, Launcher)}
    jobs = kernel_jobs((k for k in artifact.kernels if k.name in launchers),
                       {n: l.fn.arg_names for n, l in launchers.items()})
    return launchers, jobs


def ast_source(fn, job: KernelJob):
    """Triton's ``ASTSource`` of ``fn`` (a JITFunction) specialized as ``job`` launches it."""
    from triton.compiler import ASTSource
    attrs = {(k,): [["tt.divisibility", 16]] for k in job.divisible_by_16}
    return ASTSource(fn, dict(job.types), dict(job.constexprs), attrs)


def compile_kernel(fn, job: KernelJob, target: tuple[str, int, int]):
    """``triton.compile`` of ``fn`` (a JITFunction) for ``job``: a cache hit when a worker
    (or an earlier run) compiled the same kernel into the same Triton cache."""
    from triton.backends.compiler import GPUTarget
    return triton.compile(ast_source(fn, job), target=GPUTarget(*target),
                          options=dict(job.options))


def launcher_key(job: KernelJob) -> tuple[str, ...]:
    """What the kernel's host launcher depends on: kernels of equal keys share one.

    Triton 3.6 generates a launcher's C source from the argument types alone, in order:
    every pointer is the same ``CUdeviceptr`` whatever it points to, a constexpr a
    placeholder whatever its value (tensor descriptors would add metadata; kiln's kernels
    have none). Triton caches a built launcher by the hash of that source, so a coarser key
    would only leave a launcher to the first launch, never run a wrong one.
    """
    return tuple("*" if t.startswith("*") else t for t in job.types.values())


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


def warm_backend(target: tuple[str, int, int]) -> str | None:
    """Compile a tiny kernel for ``target``: a process's first ``triton.compile`` pays the
    backend's start-up (~0.4 s more than a small kernel's ~0.1 s), which would otherwise land
    on a model's first kernel. A throwaway cache makes it a real compile every time and keeps
    the user's cache clean. Returns None, or why it failed (harmless: the first real compile
    pays the start-up instead).
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    try:
        with tempfile.TemporaryDirectory(prefix="kiln-warm-") as scratch, \
                triton.knobs.cache.scope():   # restores the cache dir (and its env variable)
            triton.knobs.cache.dir = scratch
            triton.compile(ASTSource(_warm_up_kernel, {"x_ptr": "*fp32"}),
                           target=GPUTarget(*target))
    except Exception as err:  # noqa: BLE001 -- an optimization only
        return f"{type(err).__name__}: {err}"
    return None


def compile_module_job(job: ModuleJob) -> dict[str, Any]:
    """Worker side: compile every kernel of ``job`` into its Triton cache (and with
    ``build_launchers`` build their launchers); errors are kept per kernel (the caller's own
    first launch will then compile and raise it properly)."""
    triton.knobs.cache.dir = job.cache_dir       # the caller's cache, whatever our env said
    module = _worker_module(job.source, job.code_dir)
    errors, launchers, start = {}, 0, time.perf_counter()
    for kernel in job.kernels:
        try:
            compiled = compile_kernel(getattr(module, kernel.name), kernel, job.target)
        except Exception as err:  # noqa: BLE001 -- reported, and redone by the first launch
            errors[kernel.name] = f"{type(err).__name__}: {err}"
            continue
        if job.build_launchers:
            launchers += build_launcher(compiled)
    return {"errors": errors, "launchers": launchers, "seconds": time.perf_counter() - start}


@functools.lru_cache(maxsize=8)
def _worker_module(source: str, code_dir: str):
    """A worker's import of a module: once per module, however many of its kernels it gets."""
    from .runtime import load_module
    return load_module(source, "cuda", Path(code_dir))


class CompilePool:
    """Worker processes that compile kernels into Triton's cache.

    Each worker is ``python -m compiler.compile_worker``, fed one JSON job per line. Not
    ``multiprocessing``: its spawned children re-run the caller's main script (a script
    without a ``__main__`` guard would recurse), and forked ones cannot touch a CUDA context
    the caller may hold.
    """

    def __init__(self, workers: int):
        self.workers = workers
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self._procs = [_start_worker() for _ in range(workers)]
        for proc in self._procs:
            self._idle.put(proc)
        self._threads = cf.ThreadPoolExecutor(workers, thread_name_prefix="kiln-compile")

    def warm(self, target: tuple[str, int, int] | None = None, wait: bool = True
             ) -> list[dict[str, Any]]:
        """Have every worker import torch and Triton (seconds, paid once) and, given a
        ``target``, start Triton's backend for it (``warm_backend``; once per worker and
        target, so warming a warm pool costs a round trip). Returns each worker's reply, or
        with ``wait`` False nothing at once: jobs given later queue behind the warm-up, and
        each worker takes them as soon as its own warm-up is done.
        """
        request = {"ping": True} if target is None else {"ping": True, "target": list(target)}
        # One request per worker: each thread holds the worker it took until it answers.
        futures = [self._threads.submit(self._ask, request) for _ in range(self.workers)]
        return [f.result() for f in futures] if wait else []

    def submit(self, job: ModuleJob) -> cf.Future:
        """Queue ``job`` for the next free worker; the future's result is its reply."""
        return self._threads.submit(self._ask, dataclasses.asdict(job))

    def _ask(self, request: dict) -> dict[str, Any]:
        proc = self._idle.get()
        try:
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
        except OSError as err:
            line = ""
            reason = str(err)
        else:
            reason = f"exit status {proc.poll()}"
        if not line:     # the worker died: replace it; the first launch compiles instead
            self._procs = [p for p in self._procs if p is not proc] + [_start_worker()]
            self._idle.put(self._procs[-1])
            return {"errors": {"*": f"compile worker died ({reason})"}, "seconds": 0.0}
        self._idle.put(proc)
        return json.loads(line)

    def close(self) -> None:
        for proc in self._procs:     # a worker ends when its stdin closes
            try:
                proc.stdin.close()
            except OSError:          # already dead
                pass
        self._threads.shutdown(wait=False)


def _start_worker() -> subprocess.Popen:
    root = str(Path(__file__).resolve().parent.parent)
    code = f"import sys; sys.path.insert(0, {root!r}); from compiler.compile_worker import main; main()"
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, bufsize=1)


@functools.lru_cache(maxsize=None)
def compile_pool(workers: int) -> CompilePool:
    """The process's pool of ``workers`` compile processes, started once and reused (a pool
    costs seconds to start; a compile with a warm pool costs what its slowest kernel does)."""
    return CompilePool(workers)


def current_target() -> tuple[str, int, int]:
    """The active card's Triton target, as ``KernelJob``s and workers take it."""
    current = triton.runtime.driver.active.get_current_target()
    return (current.backend, current.arch, current.warp_size)


def default_workers() -> int:
    """Compile processes to use when the options say "auto": the cores, up to 16."""
    return max(1, min(16, os.cpu_count() or 1))


def precompile(artifact: CompiledArtifact, module, target: tuple[str, int, int],
               code_dir: Path, pool: CompilePool | None) -> dict[str, Any]:
    """Compile every kernel of the loaded static-shape ``module`` before its first call and
    give each ``Launcher`` its compiled kernel. Returns ``{"kernels", "errors", "static",
    "launchers_built", "seconds"}``: kernels torch's generic launcher runs
    (``static_launch``), and host launchers the workers built for the others, one per
    ``launcher_key`` (see ``build_launcher``).

    With ``pool`` None the kernels are compiled here, one after another (still sparing the
    first call, and the way to precompile where spawning processes is unwanted).
    """
    start = time.perf_counter()
    launchers, jobs = _launcher_jobs(artifact, module)
    jobs = tuple(j for j in jobs if not launchers[j.name].has(j.launch))   # stored binaries
    errors: dict[str, str] = {}
    static: set[str] = set()

    def load(job: KernelJob) -> bool:
        """Compile ``job`` here (a cache hit once a worker compiled it) for its Launcher;
        whether it still needs Triton's host launcher."""
        try:
            compiled = compile_kernel(launchers[job.name].fn, job, target)
        except Exception as err:  # noqa: BLE001 -- the first launch compiles it and raises
            errors[job.name] = f"{type(err).__name__}: {err}"
            return False
        if launchers[job.name].preload(job.launch, compiled):
            static.add(job.name)
            return False
        return True

    launchers_built = 0
    if pool is None:
        for job in jobs:
            load(job)
    elif jobs:
        whole = ModuleJob(artifact.source, str(code_dir), str(triton.knobs.cache.dir), target,
                          jobs)
        launchers_built = _compile_in_pool(pool, whole, load, errors)
    return {"kernels": len(jobs), "errors": errors, "static": len(static),
            "launchers_built": launchers_built, "seconds": time.perf_counter() - start}


def _compile_in_pool(pool: CompilePool, whole: ModuleJob, load, errors: dict[str, str]) -> int:
    """Compile ``whole``'s kernels in ``pool``, calling ``load`` on each as it is done (True:
    it needs Triton's host launcher); returns the host launchers built.

    One job per kernel, each taken by the next free worker: kernels differ a lot in compile
    time, and equal shares would leave workers idle behind the slowest share. Launchers are
    jobs of their own, one per ``launcher_key``, queued as their first kernel compiles and so
    behind every compile: with K kernels on W workers the wall is about ceil(K/W) compiles
    plus what launchers the tail leaves, not ceil(K/W) * (compile + gcc). Where torch's
    generic launcher runs the kernels, none is built.
    """
    compiles = {pool.submit(dataclasses.replace(whole, kernels=(k,))): k for k in whole.kernels}
    builds, keys = [], set()
    for future in cf.as_completed(compiles):
        kernel = compiles[future]
        error = future.result()["errors"].get(kernel.name)
        if error:        # a dead worker's "*" is not: its kernel compiles in ``load``
            errors[kernel.name] = error
            continue
        if load(kernel) and launcher_key(kernel) not in keys:
            keys.add(launcher_key(kernel))
            builds.append(pool.submit(dataclasses.replace(whole, kernels=(kernel,),
                                                          build_launchers=True)))
    return sum(f.result().get("launchers", 0) for f in builds)


# ----------------------------------------------------------------------------- stored binaries
@dataclass(frozen=True)
class StoredBinary:
    """A kernel binary built ahead of time (a store ``binaries`` row): the cubin and the
    build's metadata (``signature``, ``triton_metadata``, ``triton_version``)."""
    cubin: bytes
    metadata: dict


def binary_mismatch(job: KernelJob, binary: StoredBinary) -> str | None:
    """Why ``binary`` cannot run ``job``'s launch, or None. A kernel key names source and
    dtypes, not sizes: a binary built where a size was divisible by 16 (or was 1) assumes it,
    so it is used only where this launch specializes exactly the same way."""
    meta = binary.metadata
    if meta.get("triton_version") != triton.__version__:
        return f"built by Triton {meta.get('triton_version')}, running {triton.__version__}"
    if "triton_metadata" not in meta:
        return "built without Triton's metadata"
    sig = meta.get("signature", {})
    want = {"types": job.types, "constexprs": job.constexprs,
            "divisible_by_16": sorted(job.divisible_by_16)}
    for part, value in want.items():
        if sig.get(part) != value:
            return f"built for {part} {sig.get(part)}, launched with {value}"
    return None


def preload_binaries(artifact: CompiledArtifact, module, binaries: dict[str, StoredBinary],
                     scratch: Path) -> dict[str, Any]:
    """Give each ``Launcher`` of the loaded static-shape ``module`` its stored binary: no
    compiling at all, so a deployment's first call costs module loads, not compiles.

    ``binaries`` maps kernel names to binaries of the config the wrapper launches;
    ``scratch`` receives the files Triton reads a binary from. Returns ``{"preloaded",
    "skipped": {kernel: why}, "static", "launchers_built"}`` (kernels torch's generic
    launcher runs, and host launchers built for the others, one per ``launcher_key``); a
    skipped kernel compiles at its first launch as usual.
    """
    from triton.compiler.compiler import CompiledKernel
    launchers, jobs = _launcher_jobs(artifact, module)
    by_launcher, skipped, preloaded, static = {}, {}, 0, 0
    for job in jobs:
        binary = binaries.get(job.name)
        why = "no stored binary" if binary is None else binary_mismatch(job, binary)
        if why:
            skipped[job.name] = why
            continue
        digest = hashlib.sha256(binary.cubin).hexdigest()
        folder = Path(scratch) / digest[:32]
        folder.mkdir(parents=True, exist_ok=True)
        files = {f"{job.name}.json": folder / f"{job.name}.json",
                 f"{job.name}.cubin": folder / f"{job.name}.cubin"}
        files[f"{job.name}.json"].write_text(binary.metadata["triton_metadata"])
        files[f"{job.name}.cubin"].write_bytes(binary.cubin)
        kernel = CompiledKernel(ast_source(launchers[job.name].fn, job),
                                {k: str(v) for k, v in files.items()}, digest)
        if launchers[job.name].preload(job.launch, kernel):
            static += 1
        else:                                                    # Triton's launcher runs it
            by_launcher.setdefault(launcher_key(job), kernel)
        preloaded += 1
    # Triton 3.6 builds each signature's host launcher with gcc when a kernel first runs, one
    # after another; built here side by side (gcc runs outside the GIL), one per
    # ``launcher_key`` as in ``precompile``, the first call finds them in Triton's cache.
    with cf.ThreadPoolExecutor(max(1, min(8, len(by_launcher)))) as threads:
        built = sum(threads.map(build_launcher, by_launcher.values()))
    return {"preloaded": preloaded, "skipped": skipped, "static": static,
            "launchers_built": built}
