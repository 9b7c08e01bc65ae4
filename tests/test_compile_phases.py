"""compile_module says where its time went (``CompiledModel.phases``): capture, lower, load,
each measured once, together no more than the whole call; static and dynamic modules alike.
``kiln bench`` reads them to split a cold start into its phases."""
from __future__ import annotations

import time

import torch
from torch.export import Dim

import compiler
from compiler.runtime import CompilePhases


def _mlp() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(),
                               torch.nn.Linear(16, 4)).eval()


def test_phases_cover_the_compile_and_no_more():
    for dynamic in (None, {"input": {0: Dim("batch", min=2, max=64)}}):
        start = time.perf_counter()
        compiled = compiler.compile_module(_mlp(), (torch.randn(4, 8),),
                                           dynamic_shapes=dynamic)
        wall = time.perf_counter() - start
        phases = compiled.phases
        assert isinstance(phases, CompilePhases)
        parts = (phases.capture_s, phases.lower_s, phases.load_s)
        assert all(p >= 0 for p in parts) and phases.capture_s > 0 and phases.lower_s > 0
        assert sum(parts) <= wall
