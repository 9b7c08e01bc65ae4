"""Deployment without compiling: a store's binaries (the build stage's cubins) are handed to a
loaded module's launchers when, and only when, they were built for exactly that launch."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from compiler.api import lower
from compiler.kernels.build import build
from compiler.autotune.spaces import Config
from compiler.capture import capture_module
from compiler.kernels import build as kb
from compiler.kernels import precompile as pc
from compiler.kernels.load import launcher_jobs
from compiler.kernels import launch as static_launch
from compiler.kernels.load import StoredBinary, preload_binaries
from compiler.kernels.launch import Launcher
from compiler.kernels.load import load_module
from pipeline.kernel_tasks import binary_row
from pipeline.zoo import blocks
from storage import Store
from storage.artifacts import kernel_binaries


def _launch_config(kernel) -> Config:
    return Config.from_dict(kernel.spec.launch.kwargs())


def _stored(tmp_path, name="bert_layer", arch=90):
    """A store holding one module and, as the build stage writes them, its kernels' binaries
    at the configs the module launches."""
    module, args = getattr(blocks, name)("tiny")
    artifact = lower(capture_module(module, args), {}, "cuda")
    store = Store(tmp_path / "store")
    store.put_artifact(artifact)
    results = [build(k, _launch_config(k), ("cuda", arch, 32)) for k in artifact.kernels]
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    store.write("binaries", [binary_row(r) for r in results])
    return store, artifact, results


def test_store_finds_the_binary_of_every_launched_kernel(tmp_path):
    store, artifact, results = _stored(tmp_path)
    found = kernel_binaries(store, artifact, 90)
    assert set(found) == {k.name for k in artifact.kernels}
    for kernel in artifact.kernels:
        # Kernels with one source (names aside) and config share one binary, whichever name
        # it was built under: the binary launches by the name in its own metadata.
        same = {r.cubin for k, r in zip(artifact.kernels, results)
                if k.kernel_key == kernel.kernel_key}
        assert found[kernel.name].cubin in same
    assert kernel_binaries(store, artifact, 80) == {}       # another architecture: none


def test_binaries_preload_the_launchers(tmp_path):
    store, artifact, _ = _stored(tmp_path)
    (tmp_path / "code").mkdir()
    loaded = load_module(artifact.source, "cuda", tmp_path / "code", static_shapes=True)
    found = kernel_binaries(store, artifact, 90)
    report = preload_binaries(artifact, loaded, found, tmp_path / "bin")
    assert report["preloaded"] == len(artifact.kernels) and report["skipped"] == {}
    for kernel in artifact.kernels:
        launcher = getattr(loaded, kernel.name)
        assert isinstance(launcher, Launcher)
        (compiled,) = launcher._compiled.values()
        assert compiled.asm["cubin"] == found[kernel.name].cubin
        assert compiled.metadata.name in {k.name for k in artifact.kernels
                                          if k.kernel_key == kernel.kernel_key}


def test_a_binary_specialized_differently_is_not_used(tmp_path):
    store, artifact, _ = _stored(tmp_path)
    (tmp_path / "code").mkdir()
    loaded = load_module(artifact.source, "cuda", tmp_path / "code", static_shapes=True)
    found = kernel_binaries(store, artifact, 90)
    victim = artifact.kernels[0].name
    meta = copy.deepcopy(found[victim].metadata)
    meta["signature"]["divisible_by_16"] = meta["signature"]["divisible_by_16"][:-1]
    stale = dict(found, **{victim: dataclasses.replace(found[victim], metadata=meta)})
    old = dict(found, **{victim: StoredBinary(found[victim].cubin,
                                              {**found[victim].metadata, "triton_version": "0"})})
    for binaries, reason in ((stale, "divisible_by_16"), (old, "Triton 0")):
        report = preload_binaries(artifact, loaded, binaries, tmp_path / "bin")
        assert report["preloaded"] == len(artifact.kernels) - 1
        assert reason in report["skipped"][victim]


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["bert_layer", "resnet_bottleneck"])
def test_store_load_runs_stored_binaries_without_compiling(name, tmp_path):
    major, minor = torch.cuda.get_device_capability()
    store, artifact, _ = _stored(tmp_path, name, 10 * major + minor)
    module, args = getattr(blocks, name)("tiny")
    captured = capture_module(module, args)
    fn = store.load(artifact.module_key)
    assert fn.preloaded["preloaded"] == len(artifact.kernels) and fn.preloaded["skipped"] == {}
    # torch's generic launcher runs them all, or one host launcher per distinct key is built.
    _, jobs = launcher_jobs(artifact, fn.module)
    static = static_launch.available()
    assert fn.preloaded["static"] == (len(jobs) if static else 0)
    assert fn.preloaded["launchers_built"] == (
        0 if static else len({kb.launcher_key(j) for j in jobs}))
    flat = [t.cuda() for t in captured.flatten_call(module, args, {})]
    got = fn(flat)
    want = module.cuda()(*[a.cuda() for a in args])
    torch.testing.assert_close(got[-1], want, rtol=1e-3, atol=1e-3)
    for kernel in artifact.kernels:   # Triton's JIT never compiled anything
        launcher = getattr(fn.module, kernel.name)
        assert not any(cache[0] for cache in launcher.fn.device_caches.values())
