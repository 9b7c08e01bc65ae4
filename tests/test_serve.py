"""Serving from stored binaries loads each distinct kernel binary once.

A model repeats its layers, so its wrapper launches many kernels that share one source and
one stored cubin. ``serve_module`` plans every launch (checking each kernel's
specialization against the binary's) but loads a binary into the CUDA context once per
distinct plan. Loading needs a GPU; here the generic launcher is replaced by a recorder at
the CUDA boundary (``StaticKernel``), and everything above it is kiln's own code, with real
sm_90 cubins cross-compiled on this CPU.
"""
from __future__ import annotations

import torch
from torch import nn

from compiler.api import lower
from compiler.capture import capture_module
from compiler.kernels import serve
from compiler.kernels.build import build
from compiler.kernels.spec import Target

H100 = Target("cuda", 90, 32)


class _Stack(nn.Module):
    """Three identical layers (a GEMM between them ends each fusion): the same kernels
    three times."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(64, 64), nn.LayerNorm(64), nn.GELU())
                                    for _ in range(3))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class _Recorder:
    """Stands in for the generic launcher's kernel: records each load, and each launch the
    wrapper's bound launches make of it (the generic launcher's call)."""
    loads: list = []
    launches: list = []

    def __init__(self, compiled, plan, device):
        self.plan, self.device, self.function = plan, device, f"loaded {len(self.loads)}"
        _Recorder.loads.append(plan)

    @staticmethod
    def _launch(*launch):
        _Recorder.launches.append(launch)

    @staticmethod
    def _stream(device):
        return 1000 + device


def test_each_distinct_binary_is_loaded_once(monkeypatch, tmp_path):
    module, artifact, binaries, by_key = _served(monkeypatch, tmp_path)
    assert len(_Recorder.loads) == len(set(_Recorder.loads)) == len(by_key)
    launched = [k for k in artifact.kernels if not k.spec.candidate]
    for kernel in launched:     # every launch is bound, to the load of its own binary
        served = getattr(module, kernel.name)
        assert served.static.plan.cubin_path.endswith(".cubin")
    names = {getattr(module, k.name).static.plan.name for k in launched}
    assert len(names) == len(by_key)
    assert len(list((tmp_path / "scratch").glob("*.cubin"))) == len(by_key)


def test_served_call_launches_each_kernel_through_its_bound_launch(monkeypatch, tmp_path):
    """The served wrapper's bound section runs: ``call`` launches every kernel in order,
    each with its own loaded function, its grid, and the pointers it is passed."""
    module, artifact, _, _ = _served(monkeypatch, tmp_path)
    _Recorder.launches = []
    x = torch.randn(8, 64)
    module.call([*(p.detach() for p in _Stack().parameters()), x])   # weights, then x
    # (CPU tensors: the stand-in launches nothing)
    launched = [k for k in artifact.kernels if not k.spec.candidate]
    assert len(_Recorder.launches) == len(launched)
    for kernel, launch in zip(launched, _Recorder.launches):
        function, gx, gy, gz, warps, shared, types, args, stream = launch
        static = getattr(module, kernel.name).static
        assert function == static.function and stream == 1000   # device 0's stream
        grid = kernel.spec.launch.grid
        assert (gx, gy, gz) == tuple(grid) + (1,) * (3 - len(grid))
        assert (warps, types) == (static.plan.num_warps, static.plan.arg_types)
        assert len(args) == len(types) and all(
            isinstance(a, torch.Tensor) for a in args[:len(kernel.spec.buffers)])


def _served(monkeypatch, tmp_path):
    captured = capture_module(_Stack().eval(), (torch.randn(8, 64),))
    artifact = lower(captured, None, target="cuda")
    launched = [k for k in artifact.kernels if not k.spec.candidate]
    by_key = {}
    for kernel in launched:     # one build per source, as kiln run stores them
        if kernel.kernel_key not in by_key:
            result = build(kernel, kernel.spec.launch.config(), H100)
            assert result.ok, result.error
            by_key[kernel.kernel_key] = serve.StoredBinary(result.cubin, result.metadata)
    binaries = {k.name: by_key[k.kernel_key] for k in launched}
    assert len(binaries) > len(by_key), "the model should repeat kernels"

    _Recorder.loads = []
    monkeypatch.setattr(serve, "available", lambda: True)
    monkeypatch.setattr(serve, "StaticKernel", _Recorder)
    module = serve.serve_module(artifact, binaries, tmp_path / "scratch", device=0)
    return module, artifact, binaries, by_key
