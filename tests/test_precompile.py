"""Parallel precompilation: worker processes fill Triton's cache with exactly the binaries the
module's own launchers then find (a cache hit, not a second compile), for sm_90 on a CPU."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import triton

import compiler
from compiler.kernels import build as kb
from compiler.kernels import precompile as pc
from compiler.kernels.load import launcher_jobs
from compiler.kernels import launch as static_launch
from compiler.api import lower
from compiler.capture import capture_module
from compiler.kernels.launch import Launcher
from compiler.kernels.load import load_module
from pipeline.zoo import blocks

H100 = ("cuda", 90, 32)


@pytest.fixture(scope="module")
def pool():
    pool = pc.CompilePool(2)
    yield pool
    pool.close()


def _cache_groups(root) -> set[str]:
    return {p.name for p in root.iterdir() if p.is_dir()}


def _lowered(name, tmp_path, monkeypatch):
    """A tiny block lowered for CUDA and loaded as a static module, with Triton's cache in
    ``tmp_path/triton`` and the generated code in ``tmp_path/code``."""
    module, args = getattr(blocks, name)("tiny")
    artifact = lower(capture_module(module, args), {}, "cuda")
    monkeypatch.setattr(triton.knobs.cache, "dir", str(tmp_path / "triton"))
    (tmp_path / "code").mkdir()
    return artifact, load_module(artifact.source, "cuda", tmp_path / "code", static_shapes=True)


@pytest.mark.parametrize("name", ["bert_layer", "resnet_bottleneck"])
def test_workers_fill_the_cache_the_launchers_hit(name, pool, tmp_path, monkeypatch):
    artifact, loaded = _lowered(name, tmp_path, monkeypatch)

    result = pc.precompile(artifact, loaded, H100, tmp_path / "code", pool)

    assert result["errors"] == {}
    assert result["kernels"] == len(artifact.kernels) > 0
    # One cache entry per distinct compile: had the launchers' compile missed the workers'
    # entries, it would have compiled again under a different key and left a second entry.
    assert len(_cache_groups(tmp_path / "triton")) == result["compiled"]
    for kernel in artifact.kernels:
        launcher = getattr(loaded, kernel.name)
        assert isinstance(launcher, Launcher)
        (compiled,) = launcher._compiled.values()
        assert compiled.asm["cubin"][:4] == b"\x7fELF"
        assert compiled.metadata.num_warps == kernel.spec.launch.as_json()["num_warps"]


def test_without_a_pool_kernels_compile_in_process(tmp_path, monkeypatch):
    artifact, loaded = _lowered("gpt2_block", tmp_path, monkeypatch)
    result = pc.precompile(artifact, loaded, H100, tmp_path / "code", None)
    assert result["errors"] == {} and result["kernels"] == len(artifact.kernels)
    assert all(getattr(loaded, k.name)._compiled for k in artifact.kernels)


@pytest.mark.parametrize("use_pool", [True, False])
def test_kernels_equal_but_for_their_names_compile_once(use_pool, pool, tmp_path, monkeypatch):
    """bert_layer's two LayerNorms are one kernel under two names: one compile, whose binary
    both launchers get; ``share=False`` (the baseline) compiles each."""
    artifact, loaded = _lowered("bert_layer", tmp_path, monkeypatch)
    by_key: dict[str, list[str]] = {}
    for kernel in artifact.kernels:
        by_key.setdefault(kernel.kernel_key, []).append(kernel.name)
    copies = [names for names in by_key.values() if len(names) > 1]
    assert copies        # else this block no longer tests sharing

    result = pc.precompile(artifact, loaded, H100, tmp_path / "code", pool if use_pool else None)

    assert result["errors"] == {} and result["kernels"] == len(artifact.kernels)
    assert result["compiled"] == len(by_key) == len(_cache_groups(tmp_path / "triton"))
    for names in copies:
        binaries = {id(c) for n in names for c in getattr(loaded, n)._compiled.values()}
        assert len(binaries) == 1
    if use_pool:
        assert sorted(result["compile_seconds"]) == sorted(n[0] for n in by_key.values())
        assert all(s > 0 for s in result["compile_seconds"].values())


def test_without_sharing_every_kernel_compiles(tmp_path, monkeypatch):
    artifact, loaded = _lowered("bert_layer", tmp_path, monkeypatch)
    result = pc.precompile(artifact, loaded, H100, tmp_path / "code", None, share=False)
    assert result["errors"] == {}
    assert result["compiled"] == len(artifact.kernels) == len(_cache_groups(tmp_path / "triton"))


def test_jobs_differing_in_more_than_their_names_do_not_share():
    job = kb.KernelJob("k0", {"XBLOCK": 64}, {"XBLOCK": 64}, {"num_warps": 4, "num_stages": 3},
                       {"in_ptr0": "*bf16", "xnumel": "i32"}, [0])
    variants = [dataclasses.replace(job, name="k1", options={"num_warps": 8, "num_stages": 3}),
                dataclasses.replace(job, name="k2", types={"in_ptr0": "*bf16", "xnumel": "i64"}),
                dataclasses.replace(job, name="k3", divisible_by_16=[]),
                dataclasses.replace(job, name="k4")]           # another kernel_key, below
    keys = {"k0": "a", "k1": "a", "k2": "a", "k3": "a", "k4": "b"}
    shared = pc.share_compiles((job, *variants), keys)
    assert list(shared) == ["k0", "k1", "k2", "k3", "k4"]
    assert pc.share_compiles((job, dataclasses.replace(job, name="k5")),
                             {"k0": "a", "k5": "a"}) == {"k0": (job, dataclasses.replace(job, name="k5"))}


def test_workers_compile_without_importing_torch(tmp_path, monkeypatch):
    """Workers import only the module's kernels (a scan's combine helper included): torch,
    seconds per worker, stays out, and the caller's compile still hits their binaries."""
    class Model(torch.nn.Module):
        def forward(self, x):
            return x.logcumsumexp(1).relu() + 1

    x = torch.randn(4, 33)
    artifact = lower(capture_module(Model(), (x,)), {}, "cuda")
    monkeypatch.setattr(triton.knobs.cache, "dir", str(tmp_path / "triton"))
    (tmp_path / "code").mkdir()
    loaded = load_module(artifact.source, "cuda", tmp_path / "code", static_shapes=True,
                         kernels={k.name for k in artifact.kernels})
    _, jobs = launcher_jobs(artifact, loaded)
    pool = pc.CompilePool(1)
    try:
        # The compiles alone: Triton's host launchers, built after them where torch has no
        # generic launcher (as here, on a CPU), bring in Triton's driver and torch with it.
        reply = pool.submit(pc.ModuleJob(artifact.source, str(tmp_path / "code"),
                                         kb.cache_dir(), H100, jobs)).result()
        (ping,) = pool.warm()
    finally:
        pool.close()
    assert reply["errors"] == {} and len(jobs) == 2
    assert ping["torch"] is False
    result = pc.precompile(artifact, loaded, H100, tmp_path / "code", None)
    assert result["errors"] == {}
    # the caller's compiles of the full module found the worker's binaries
    assert len(_cache_groups(tmp_path / "triton")) == len(jobs)


_NEEDS_A_BLANKED_NAME = """import torch
import triton
import triton.language as tl
SCALE = tl.constexpr(2)

@jit
def kiln_scale_0(x_ptr, XBLOCK: tl.constexpr):
    i = tl.arange(0, XBLOCK)
    tl.store(x_ptr + i, tl.load(x_ptr + i) * SCALE)
"""


def test_a_kernel_the_kernels_alone_cannot_compile_compiles_from_the_full_module(tmp_path):
    from compiler.kernels import worker_build
    assert not hasattr(worker_build.kernel_module(_NEEDS_A_BLANKED_NAME, str(tmp_path)), "SCALE")
    kernel = {"name": "kiln_scale_0", "launch": {"XBLOCK": 64}, "constexprs": {"XBLOCK": 64},
              "options": {"num_warps": 1}, "types": {"x_ptr": "*fp32"}, "divisible_by_16": [0]}
    job = {"source": _NEEDS_A_BLANKED_NAME, "code_dir": str(tmp_path),
           "cache_dir": str(tmp_path / "triton"), "target": list(H100), "kernels": [kernel]}
    try:
        reply = worker_build.compile_module_job(job)
    finally:
        worker_build.use_cache_dir(kb.cache_dir())
    assert reply["errors"] == {}
    assert [p.name for p in (tmp_path / "triton").rglob("*.cubin")] == ["kiln_scale_0.cubin"]


def test_warming_compiles_in_a_throwaway_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(triton.knobs.cache, "dir", str(tmp_path / "triton"))
    assert kb.warm_backend(H100) is None
    assert triton.knobs.cache.dir == str(tmp_path / "triton")   # restored
    assert not (tmp_path / "triton").exists()                    # and left untouched
    assert kb.warm_backend(("cuda", 1, 32)) is not None          # a failure is only reported


def test_a_warmed_worker_answers_then_compiles(tmp_path, monkeypatch):
    pool = pc.CompilePool(1)
    try:
        (reply,) = pool.warm(H100)
        assert reply["pid"] == pool._procs[0].pid and reply["warm_error"] is None
        (reply,) = pool.warm(H100)
        assert "warm_error" not in reply          # warm once per target, then only pinged
        artifact, loaded = _lowered("gpt2_block", tmp_path, monkeypatch)
        result = pc.precompile(artifact, loaded, H100, tmp_path / "code", pool)
        assert result["errors"] == {} and result["kernels"] == len(artifact.kernels)
        assert len(_cache_groups(tmp_path / "triton")) == result["compiled"]
    finally:
        pool.close()


def test_a_dead_worker_is_replaced_and_reported(tmp_path):
    pool = pc.CompilePool(1)
    try:
        (proc,) = pool._procs
        proc.kill()
        proc.wait()
        reply = pool._ask({"ping": True})
        assert "compile worker died" in reply["errors"]["*"]
        assert "pid" in pool._ask({"ping": True})      # its replacement answers
    finally:
        pool.close()


def test_launcher_key_is_the_argument_types_with_pointers_alike():
    def job(types):
        return kb.KernelJob("k", {}, {}, {}, types, [])
    key = kb.launcher_key(job({"in_ptr0": "*bf16", "out_ptr0": "*fp32", "xnumel": "i32",
                               "XBLOCK": "constexpr"}))
    assert key == ("*", "*", "i32", "constexpr")
    assert key == kb.launcher_key(job({"a": "*fp16", "b": "*i64", "n": "i32", "B": "constexpr"}))
    assert key != kb.launcher_key(job({"a": "*fp16", "b": "*i64", "n": "i64", "B": "constexpr"}))
    assert key != kb.launcher_key(job({"a": "*fp16", "n": "i32", "b": "*i64", "B": "constexpr"}))


def test_launchers_are_built_once_per_key_after_the_compiles(pool, tmp_path, monkeypatch):
    artifact, loaded = _lowered("bert_layer", tmp_path, monkeypatch)
    submitted = []
    submit = pool.submit
    monkeypatch.setattr(pool, "submit", lambda job: submitted.append(job) or submit(job))

    result = pc.precompile(artifact, loaded, H100, tmp_path / "code", pool)

    assert result["errors"] == {}
    compiles = [j for j in submitted if not j.build_launchers]
    builds = [j for j in submitted if j.build_launchers]
    _, jobs = launcher_jobs(artifact, loaded)
    distinct = pc.share_compiles(jobs, {k.name: k.kernel_key for k in artifact.kernels})
    assert sorted(k.name for j in compiles for k in j.kernels) == sorted(distinct)
    assert submitted[:len(compiles)] == compiles            # no build before every compile
    keys = [kb.launcher_key(k) for j in builds for k in j.kernels]
    assert all(len(j.kernels) == 1 for j in submitted) and len(set(keys)) == len(keys)
    assert set(keys) == {kb.launcher_key(k) for j in compiles for k in j.kernels}
    # The builds found the workers' binaries: still one cache entry per distinct compile.
    assert len(_cache_groups(tmp_path / "triton")) == len(distinct)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["bert_layer", "resnet_bottleneck", "gpt2_block"])
def test_precompiled_module_runs_without_jit(name):
    module, args = getattr(blocks, name)("tiny")
    module, args = module.cuda(), tuple(a.cuda() for a in args)
    reference = copy.deepcopy(module)
    compiled = compiler.compile_module(module, args, {"cuda_graphs": False,
                                                      "compile_workers": 4})
    report = compiled.compiled.precompiled
    assert report["errors"] == {}
    # torch's generic launcher runs every kernel; without it the workers build every host
    # launcher instead (Triton 3.6 compiles one per signature).
    _, jobs = launcher_jobs(compiled.compiled.artifact, compiled.compiled.module)
    static = static_launch.available()
    assert report["static"] == (len(jobs) if static else 0)
    assert report["launchers_built"] == (0 if static else len({kb.launcher_key(j) for j in jobs}))
    torch.testing.assert_close(compiled(*args), reference(*args), rtol=1e-3, atol=1e-3)
    for kernel in compiled.compiled.artifact.kernels:
        launcher = getattr(compiled.compiled.module, kernel.name)
        assert len(launcher._compiled) == 1
        # Triton's JIT never compiled: every launch took the preloaded binary.
        assert not any(cache[0] for cache in launcher.fn.device_caches.values())


def test_helper_jit_functions_stay_jit_functions(tmp_path):
    """A scan's combine function is called from inside its kernel: wrapping it in a Launcher
    (as kernels are, for static CUDA modules) would make the kernel fail to compile."""
    from triton.runtime.jit import JITFunction

    class Model(torch.nn.Module):
        def forward(self, x):
            return x.logcumsumexp(1)

    x = torch.randn(4, 33)
    artifact = lower(capture_module(Model(), (x,)), {}, "cuda")
    (tmp_path / "code").mkdir()
    loaded = load_module(artifact.source, "cuda", tmp_path / "code", static_shapes=True,
                         kernels={k.name for k in artifact.kernels})
    helpers = [n for n, v in vars(loaded).items() if isinstance(v, JITFunction)]
    assert helpers and all(n.endswith("_combine") for n in helpers)
    assert all(isinstance(getattr(loaded, k.name), Launcher) for k in artifact.kernels)
    result = pc.precompile(artifact, loaded, H100, tmp_path / "code", None)
    assert result["errors"] == {}


class _CudaLooking(torch.Tensor):
    """A CPU tensor that says it is on CUDA: enough for the pool-starting decision."""
    is_cuda = property(lambda self: True)


@pytest.mark.parametrize("on_cuda, workers, started", [
    (True, -1, True), (True, 3, True), (True, 0, False), (False, -1, False)])
def test_compile_module_starts_the_pool_before_capture_only_for_cuda_inputs(
        on_cuda, workers, started, monkeypatch):
    from compiler import api
    asked = []

    class Pool:
        def __init__(self, n):
            self.n = n

        def warm(self, target, wait=True):
            asked.append((self.n, target, wait))
    monkeypatch.setattr(pc, "compile_pool", Pool)
    monkeypatch.setattr(pc, "default_workers", lambda: 16)
    monkeypatch.setattr(kb, "current_target", lambda: H100)
    x = torch.randn(2, 3)
    api._start_compile_pool(({"x": x.as_subclass(_CudaLooking) if on_cuda else x},), None,
                            workers)
    expect = [(16 if workers < 0 else workers, H100, False)] if started else []
    assert asked == expect
