"""A dynamic-shape CUDA module launches its kernels through ``kernels.launch.Launcher`` too,
its binaries kept per specialization of the integer arguments (``launch.specialization``),
so a new size reuses the binary of any earlier size alike in what Triton specializes on.

Without it each launch of a dynamic module went through Triton's JIT binding (tens of
microseconds a launch): a Llama-style decode step without CUDA graphs took 2.7 ms on an
H100, barely under eager (benchmarks/results/2026-12-07/s8). The cache rule is checked here
with a stand-in kernel; the GPU test checks results against eager across sizes that change
every specialized property, and that binaries are compiled once per specialization.
"""
from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch
from torch.export import Dim

import compiler
from compiler.api import lower
from compiler.capture import capture_module
from compiler.kernels import launch
from compiler.kernels.launch import Launcher, specialization
from compiler.kernels.load import load_module
from tests.launch_recorder import LaunchRecorder


def test_specialization_is_what_triton_specializes_integers_on():
    x = torch.zeros(4)
    assert specialization((x, 1, 32, 33, 2**31, x)) == (
        (True, False, True), (False, True, True), (False, False, True), (False, True, False))
    assert specialization((True, 2.0, None)) == ()      # bools and floats are not sizes


class _Kernel:
    """A stand-in JIT function: counts compiles; its 'binary' records direct launches."""
    params = [SimpleNamespace(name=n, is_constexpr=n == "XBLOCK")
              for n in ("in_ptr0", "xnumel", "XBLOCK")]

    def __init__(self):
        self.compiles, self.direct = [], []

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.compiles.append(args[1])
            return self.binary()
        return run

    def binary(self):
        outer = self

        class Binary:
            def __getitem__(self, grid):
                return lambda *args: outer.direct.append(args[1])
        return Binary()


@pytest.mark.parametrize("dynamic", [True, False])
def test_binaries_are_kept_per_integer_specialization(dynamic):
    fn = _Kernel()
    launcher = Launcher(fn, dynamic)
    x = torch.zeros(64)
    for n in (32, 48, 33, 35, 1, 1, 64):
        launcher[(1,)](x, n, XBLOCK=128)
    if dynamic:   # 32, 33 and 1 each compile once; 48, 35, 1 and 64 reuse their binary
        assert fn.compiles == [32, 33, 1] and fn.direct == [48, 35, 1, 64]
    else:         # static modules never change sizes: one binary per config
        assert fn.compiles == [32] and fn.direct == [48, 33, 35, 1, 1, 64]


class _Rows(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(24, 40)

    def forward(self, x):
        return torch.softmax(self.proj(x).relu() * 2.0, dim=-1) + x.sum(-1, keepdim=True)


class _Recorder(LaunchRecorder):
    """torch's generic launcher as a recorder, and a stand-in for Triton's JIT compile that
    returns a ``StaticKernel`` launched through it."""

    def __init__(self):
        super().__init__()
        self.compiles = []

    def jit(self, name, positional):
        plan = launch.LaunchPlan(name, "k.cubin", tuple(range(len(positional))),
                                 "O" * len(positional), 0, 4, 0)

        def compile_at(grid):
            def compiled(*args, **kwargs):     # Triton's JIT: compiles and launches
                self.compiles.append((name, specialization(args)))
                return launch.StaticKernel(None, plan, 0)
            return compiled
        return compile_at


def test_a_dynamic_module_launches_directly_after_each_specialization_compiles(
        tmp_path, monkeypatch):
    """On this CPU, a CUDA module's kernels recorded, not run: each size's launches pass the
    run-time grid and sizes straight to torch's launcher once its specialization compiled."""
    recorder = _Recorder()
    monkeypatch.setattr(launch, "_impl", lambda: recorder)
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda d: 7, raising=False)
    model = _Rows().eval()
    captured = capture_module(model, (torch.randn(8, 24),),
                              dynamic_shapes=({0: Dim("n", min=1, max=4096)},))
    artifact = lower(captured, {}, "cuda")
    names = {k.name for k in artifact.kernels}
    loaded = load_module(artifact.source, "cuda", tmp_path, kernels=names, dynamic_shapes=True)
    for name in names:
        launcher = getattr(loaded, name)
        positional = [p.name for p in launcher.fn.params if not p.is_constexpr]
        monkeypatch.setattr(launcher, "fn", _Compiling(recorder.jit(name, positional),
                                                       launcher.fn.params))
    state = dict(model.named_parameters())
    direct = 0
    for n in (8, 24, 40, 1, 17):
        flat = [state[i.target].detach() if i.target in state else torch.randn(n, 24)
                for i in captured.inputs]
        recorder.launches.clear()
        with torch.no_grad():
            loaded.call(flat)
        direct += len(recorder.launches)
        for launch_args in recorder.launches:     # this call's sizes, on its stream
            ints = {a for a in launch_args[7] if type(a) is int}
            assert n in ints or 40 * n in ints, (n, ints)
            assert launch_args[-1] == 7
    # Triton's JIT launches what it compiles; every other launch is direct.
    assert direct + len(recorder.compiles) == 5 * len(names)
    assert sorted(set(recorder.compiles)) == sorted(recorder.compiles)   # each key once
    assert direct > len(recorder.compiles)


class _Compiling:
    def __init__(self, compile_at, params):
        self.compile_at, self.params = compile_at, params

    def __getitem__(self, grid):
        return self.compile_at(grid)


@pytest.mark.gpu
def test_a_dynamic_module_is_right_at_every_size_and_compiles_once_per_specialization():
    torch.manual_seed(0)
    model = _Rows().cuda().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = compiler.compile_module(
            model, (torch.randn(8, 24, device="cuda"),), options={"cuda_graphs": False},
            dynamic_shapes=({0: Dim("n", min=1, max=4096)},))
    launchers = [v for v in vars(compiled.compiled.module).values() if isinstance(v, Launcher)]
    assert launchers and all(launcher._dynamic for launcher in launchers)
    seen = set()
    for n in (8, 24, 1, 17, 33, 48, 64, 2, 1000, 1024, 17):
        x = torch.randn(n, 24, device="cuda")
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
        seen.add(n)
    for launcher in launchers:
        assert 1 <= len(launcher._compiled) < len(seen), launcher._compiled.keys()
