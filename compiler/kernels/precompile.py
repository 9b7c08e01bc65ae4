"""Compiling a module's kernels ahead of its first call, in parallel worker processes.

Triton compiles a ``@triton.jit`` kernel on its first launch, one kernel at a time, in the
calling thread: for a model of 20 kernels that first call costs seconds. ``precompile``
instead hands every kernel of a static-shape CUDA module to a pool of processes, which run
``triton.compile`` for the card's architecture and leave the binaries in Triton's on-disk
cache; back in the caller, the same ``triton.compile`` call is then a cache hit (a few
milliseconds) and its compiled kernel is handed to the module's ``Launcher``, so the first
launch is already the direct one.

Both sides build the kernel from the *same module source*, because Triton keys a kernel by its
source text and its starting line number in the file: a kernel compiled from its own short
file would never be found from the module's file. Workers import only the module's kernels,
on their original lines, and never torch (``worker_build``). Kernels that differ only in
their names compile once (``share_compiles``).

The pool is one per process, started on first use (``compile_pool``): worker processes import
Triton once and are reused by every later compile.

Example:
    >>> default_workers() >= 1
    True
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import json
import os
import queue
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifact import CompiledArtifact
from .build import KernelJob, Target, cache_dir, compile_kernel, launcher_key
from .load import launcher_jobs


@dataclass(frozen=True)
class ModuleJob:
    """Every kernel of one generated module, for one GPU target and Triton cache."""
    source: str
    code_dir: str
    cache_dir: str
    target: tuple[str, int, int]         # ("cuda", 90, 32)
    kernels: tuple[KernelJob, ...] = field(default_factory=tuple)
    build_launchers: bool = False        # also build each kernel's host launcher


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

    def warm(self, target: Target | None = None, wait: bool = True
             ) -> list[dict[str, Any]]:
        """Have every worker import torch and Triton (seconds, paid once) and, given a
        ``target``, start Triton's backend for it (``warm_backend``; once per worker and
        target, so warming a warm pool costs a round trip). Returns each worker's reply, or
        with ``wait`` False nothing at once: jobs given later queue behind the warm-up, and
        each worker takes them as soon as its own warm-up is done.
        """
        request = ({"ping": True} if target is None else
                   {"ping": True, "target": list(dataclasses.astuple(Target.of(target)))})
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
    root = str(Path(__file__).resolve().parent.parent.parent)
    code = (f"import sys; sys.path.insert(0, {root!r}); "
            f"from compiler.kernels.compile_worker import main; main()")
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, bufsize=1)


@functools.lru_cache(maxsize=None)
def compile_pool(workers: int) -> CompilePool:
    """The process's pool of ``workers`` compile processes, started once and reused (a pool
    costs seconds to start; a compile with a warm pool costs what its slowest kernel does)."""
    return CompilePool(workers)


def default_workers() -> int:
    """Compile processes to use when the options say "auto": the cores, up to 16."""
    return max(1, min(16, os.cpu_count() or 1))


def precompile(artifact: CompiledArtifact, module, target: Target,
               code_dir: Path, pool: CompilePool | None, share: bool = True) -> dict[str, Any]:
    """Compile every kernel of the loaded static-shape ``module`` before its first call and
    give each ``Launcher`` its compiled kernel. Returns ``{"kernels", "compiled", "errors",
    "static", "launchers_built", "seconds", "compile_seconds"}``: kernels given a binary,
    distinct compiles (``share_compiles``), kernels torch's generic launcher runs
    (``static_launch``), host launchers the workers built for the others, one per
    ``launcher_key`` (see ``build_launcher``), and each compile's seconds in its worker.

    With ``share`` (the default) kernels that differ only in their names (a model's repeated
    blocks) compile once and share the binary; False compiles every copy (the baseline
    ``benchmarks/bench_compile.py`` measures against). With ``pool`` None the kernels are
    compiled here, one after another (still sparing the first call, and the way to
    precompile where spawning processes is unwanted).
    """
    start = time.perf_counter()
    launchers, jobs = launcher_jobs(artifact, module)
    jobs = tuple(j for j in jobs if not launchers[j.name].has(j.launch))   # stored binaries
    keys = {k.name: k.kernel_key for k in artifact.kernels}
    copies = share_compiles(jobs, keys) if share else {j.name: (j,) for j in jobs}
    errors: dict[str, str] = {}
    static: set[str] = set()

    def load(job: KernelJob) -> bool:
        """Compile ``job`` here (a cache hit once a worker compiled it) and hand the binary
        to its Launcher and its copies'; whether it still needs Triton's host launcher."""
        try:
            compiled = compile_kernel(launchers[job.name].fn, job, target)
        except Exception as err:  # noqa: BLE001 -- the first launch compiles it and raises
            errors.update({c.name: f"{type(err).__name__}: {err}" for c in copies[job.name]})
            return False
        for copy in copies[job.name]:
            if launchers[copy.name].preload(copy.launch, compiled):
                static.add(copy.name)
        return job.name not in static

    launchers_built, seconds = 0, {}
    distinct = longest_first(tuple(shared[0] for shared in copies.values()), artifact)
    if pool is None:
        for job in distinct:
            load(job)
    elif distinct:
        whole = ModuleJob(artifact.source, str(code_dir), cache_dir(),
                          dataclasses.astuple(Target.of(target)), distinct)
        launchers_built, seconds = _compile_in_pool(pool, whole, load, errors)
        for name, shared in copies.items():     # a worker's error holds for every copy
            if name in errors:
                errors.update({c.name: errors[name] for c in shared})
    return {"kernels": len(jobs), "compiled": len(copies), "errors": errors,
            "static": len(static), "launchers_built": launchers_built,
            "seconds": time.perf_counter() - start, "compile_seconds": seconds}


def longest_first(jobs: tuple[KernelJob, ...], artifact: CompiledArtifact
                  ) -> tuple[KernelJob, ...]:
    """``jobs`` with the kernels of the longest source first (ties keep their order).

    The pool's wall is set by its last compile to finish, and compile times differ by 20x
    within one model: ConvNeXt-T's 7x7 depthwise kernels (49 unrolled taps) take ~2 s each,
    its copies 0.1 s. Queued in module order, a stage's depthwise kernel can start behind a
    row of short ones and finish last. Started first, the long compiles overlap the short
    ones (longest-processing-time-first scheduling); source length stands in for compile
    time, which grows with the ops Triton must lower.

    >>> src = {"a": "x", "b": "xxxx", "c": "xx"}
    >>> art = type("A", (), {"kernels": [type("K", (), {"name": n, "source": s})()
    ...                                  for n, s in src.items()]})()
    >>> jobs = tuple(KernelJob(n, {}, {}, {}, {}, []) for n in "abc")
    >>> [j.name for j in longest_first(jobs, art)]
    ['b', 'c', 'a']
    """
    size = {k.name: len(k.source) for k in artifact.kernels}
    return tuple(sorted(jobs, key=lambda j: -size.get(j.name, 0)))


def share_compiles(jobs: tuple[KernelJob, ...], keys: dict[str, str]
                   ) -> dict[str, tuple[KernelJob, ...]]:
    """The name of each distinct compile's job among ``jobs`` -> the jobs its binary serves
    (that job first), in ``jobs``' order.

    Triton keys a compile by the kernel's source text, name included, so a model's repeated
    blocks (ResNet-50: 68 kernels, 24 distinct; BERT-base: 98, 8) would compile every copy.
    Two jobs share a binary where their kernels' ``kernel_key`` (the source with the name
    replaced, and pointer dtypes) and everything else Triton compiles them with are equal:
    the binary then differs only in its symbol's name, which nothing but a profiler sees
    (stored binaries are shared the same way, ``launch.plan``).

    >>> job = KernelJob("k0", {"XBLOCK": 64}, {"XBLOCK": 64}, {"num_warps": 4},
    ...                 {"in_ptr0": "*fp32", "xnumel": "i32"}, [0])
    >>> other = dataclasses.replace(job, name="k1")
    >>> wider = dataclasses.replace(job, name="k2", launch={"XBLOCK": 128},
    ...                             constexprs={"XBLOCK": 128})
    >>> shared = share_compiles((job, other, wider), {"k0": "a", "k1": "a", "k2": "a"})
    >>> {name: [j.name for j in c] for name, c in shared.items()}
    {'k0': ['k0', 'k1'], 'k2': ['k2']}
    """
    groups: dict[str, list[KernelJob]] = {}
    for job in jobs:
        same = json.dumps([keys[job.name], dataclasses.asdict(job) | {"name": None}],
                          sort_keys=True)
        groups.setdefault(same, []).append(job)
    return {group[0].name: tuple(group) for group in groups.values()}


def _compile_in_pool(pool: CompilePool, whole: ModuleJob, load, errors: dict[str, str]
                     ) -> tuple[int, dict[str, float]]:
    """Compile ``whole``'s kernels in ``pool``, calling ``load`` on each as it is done (True:
    it needs Triton's host launcher); returns the host launchers built and each kernel's
    compile seconds in its worker.

    One job per kernel, each taken by the next free worker: kernels differ a lot in compile
    time, and equal shares would leave workers idle behind the slowest share. Launchers are
    jobs of their own, one per ``launcher_key``, queued as their first kernel compiles and so
    behind every compile: with K kernels on W workers the wall is about ceil(K/W) compiles
    plus what launchers the tail leaves, not ceil(K/W) * (compile + gcc). Where torch's
    generic launcher runs the kernels, none is built.
    """
    compiles = {pool.submit(dataclasses.replace(whole, kernels=(k,))): k for k in whole.kernels}
    builds, keys, seconds = [], set(), {}
    for future in cf.as_completed(compiles):
        kernel = compiles[future]
        seconds[kernel.name] = future.result().get("seconds", 0.0)
        error = future.result()["errors"].get(kernel.name)
        if error:        # a dead worker's "*" is not: its kernel compiles in ``load``
            errors[kernel.name] = error
            continue
        if load(kernel) and launcher_key(kernel) not in keys:
            keys.add(launcher_key(kernel))
            builds.append(pool.submit(dataclasses.replace(whole, kernels=(kernel,),
                                                          build_launchers=True)))
    return sum(f.result().get("launchers", 0) for f in builds), seconds


