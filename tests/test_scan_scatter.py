"""Scans and scatters beyond the op table: kernel shapes, sm_90 builds, in-place KV caches.

The op table (tests/optable_scatter.py) checks values against eager; these tests check what
the table cannot see: that long rows use the looped scan, that every new kernel (scans,
scatter stores and atomics, in float32/float16/bfloat16) cross-compiles to an sm_90 cubin,
and that KV-cache writes go into the caller's tensor, only over the new rows.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

import compiler
from compiler.passes import compile_graph, trace_fx
from compiler.kernels.build import Target, build
from compiler.autotune.spaces import Config
from compiler.config import load_options

HALF_AND_FLOAT = (torch.float32, torch.float16, torch.bfloat16)


def _cuda_artifact(fn, *args):
    """``fn`` traced on CPU inputs and lowered for target "cuda" (no GPU is needed)."""
    traced = trace_fx(make_fx(fn)(*args), list(args))
    artifact, _ = compile_graph(traced, "test", load_options(), "cuda")
    return artifact


def _build_all(artifact) -> dict[str, str]:
    """Each kernel built for sm_90 at its heuristic launch config: name -> status (+ error)."""
    out = {}
    for kernel in artifact.kernels:
        launch = kernel.spec.launch.as_json()
        blocks = {b: launch[b] for b in ("XBLOCK", "YBLOCK", "RBLOCK") if b in launch}
        result = build(kernel, Config(**blocks, num_warps=launch["num_warps"]),
                       Target("cuda", 90, 32))
        out[kernel.name] = result.status if result.ok else f"{result.status}: {result.error}"
    return out


# ----------------------------------------------------------------------------- scans
def test_long_rows_scan_in_a_loop_short_rows_in_registers():
    def fn(a, b):
        return (a.cumsum(1), b.logcumsumexp(0))

    a, b = torch.rand(2, 20000), torch.randn(33, 6)
    compiled = compiler.compile_fx(make_fx(fn)(a, b), [a, b])
    kinds = sorted(k.spec.kind for k in compiled.artifact.kernels)
    assert kinds == ["reduction_looped", "reduction_persistent"]
    a, b = torch.rand(2, 20000), torch.randn(33, 6)
    for got, want in zip(compiled(a, b), fn(a, b)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", HALF_AND_FLOAT)
def test_scan_kernels_build_for_sm90(dtype):
    def fn(a, b):
        return (a.cumsum(0), a.cumprod(1), a.logcumsumexp(1), a.int().cumsum(1),
                b.cumsum(1), b.logcumsumexp(1))

    artifact = _cuda_artifact(fn, torch.randn(7, 300, dtype=dtype),
                              torch.randn(2, 20000, dtype=dtype))
    statuses = _build_all(artifact)
    assert len(statuses) == 6 and set(statuses.values()) == {"ok"}, statuses


# ----------------------------------------------------------------------------- scatters
@pytest.mark.parametrize("dtype", HALF_AND_FLOAT)
def test_scatter_stores_and_atomics_build_for_sm90(dtype):
    """Stores in every float dtype; atomics on the float32 accumulator half types use, and
    on float32, int32 and int64 destinations directly."""
    def fn(a, i, v, n):
        return (a.index_put((i,), v), a.index_put((i,), v, accumulate=True),
                a.scatter_add(1, i[None].expand(4, -1) % 5, v),
                n.index_put((i,), n[:4], accumulate=True), n.int().index_add(0, i, n[:4].int()))

    a, v = torch.randn(6, 5, dtype=dtype), torch.randn(4, 5, dtype=dtype)
    i, n = torch.tensor([0, 2, 0, 5]), torch.randint(-9, 9, (6, 5))
    statuses = _build_all(_cuda_artifact(fn, a, i, v, n))
    assert sum("scatter" in name for name in statuses) == 5, statuses
    assert set(statuses.values()) == {"ok"}, statuses


# ----------------------------------------------------------------------------- KV caches
class _IndexCopyCache(torch.nn.Module):
    """A KV cache written with ``index_copy_`` (or accumulated with ``index_add_``) at given
    positions, then read: the write must go into the caller's buffer, over the new rows."""

    def __init__(self, dtype, accumulate=False, read_old=False):
        super().__init__()
        cache = torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(0))
        self.register_buffer("kv", cache.to(dtype))     # the same in module and reference
        self.accumulate, self.read_old = accumulate, read_old

    def forward(self, new, positions):
        old = self.kv * 2 if self.read_old else None
        if self.accumulate:
            self.kv.index_add_(1, positions, new)
        else:
            self.kv.index_copy_(1, positions, new)
        out = self.kv.sum(1)
        return out + old.sum(1) if self.read_old else out


def _lowered(compiled):
    from compiler.passes import mutated_inputs
    from compiler.graph import GraphLowering
    from compiler.lowering import default_table
    captured = compiled.captured
    return GraphLowering(captured.gm, default_table(), load_options(),
                         mutated_inputs(captured)).lower()


def _cache_writes(lowered):
    """(scatters into graph inputs, kernels that copy or otherwise read a whole input)."""
    from compiler.ir import ComputedBuffer, ScatterBuffer
    inputs = {b.name for b in lowered.inputs}
    scatters = [op for op in lowered.operations
                if isinstance(op, ScatterBuffer) and op.name in inputs]
    copies = [op for op in lowered.operations
              if type(op) is ComputedBuffer and op.layout.size == (2, 16, 8)]
    return scatters, copies


def _check_cache_module(make, device, dtype, starts=(5, 1, 11)):
    """Compile ``make()``; each call (3 new rows from each of ``starts``) must match eager's
    output and leave eager's cache, in the module's own buffer object."""
    module, reference = make().to(device), make().to(device)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    compiled = compiler.compile_module(module, (torch.randn(2, 3, 8).to(device, dtype),
                                                torch.arange(5, 8, device=device)))
    assert compiled.compiled.fallback_ops == ()
    storage = module.kv.data_ptr()
    for start in starts:
        positions = torch.randperm(5, device=device)[:3] + start     # distinct, unordered
        new = torch.randn(2, 3, 8).to(device, dtype)
        torch.testing.assert_close(compiled(new, positions), reference(new, positions),
                                   rtol=tol, atol=tol)
        torch.testing.assert_close(module.kv, reference.kv, rtol=tol, atol=tol)
    assert module.kv.data_ptr() == storage     # written in place, never replaced
    return compiled


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("accumulate", [False, True])
def test_index_copy_kv_cache_writes_new_rows_in_place(dtype, accumulate):
    compiled = _check_cache_module(lambda: _IndexCopyCache(dtype, accumulate), "cpu", dtype)
    scatters, copies = _cache_writes(_lowered(compiled))
    if accumulate and dtype == torch.float16:
        # half types accumulate in a float32 copy (rounded once), written back after
        assert copies and all(s.size != (2, 3, 8) for s in scatters)
        return
    assert [s.size for s in scatters] == [(2, 3, 8)], scatters   # the new rows only
    assert not copies, copies                                    # no copy of the cache


def test_cache_whose_old_value_is_read_keeps_a_copy():
    compiled = _check_cache_module(lambda: _IndexCopyCache(torch.float32, read_old=True),
                                   "cpu", torch.float32)
    _, copies = _cache_writes(_lowered(compiled))
    assert copies     # the write goes to a copy: the old value is still read after it


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gpt2_block_cache_update_is_a_scatter_into_the_caller_buffer(dtype):
    from pipeline.zoo import blocks
    module, (x, pos) = blocks.gpt2_block("tiny")
    reference = copy.deepcopy(module).to(dtype)
    module = module.to(dtype)
    compiled = compiler.compile_module(module, (x.to(dtype), pos))
    assert compiled.compiled.fallback_ops == ()
    lowered = _lowered(compiled)
    names = {b.name for b in lowered.inputs}
    from compiler.ir import ScatterBuffer
    writes = [op for op in lowered.operations if isinstance(op, ScatterBuffer)]
    assert len(writes) == 2 and {w.name for w in writes} <= names
    assert all(w.size == (2, 2, 8, 16) for w in writes)      # batch, heads, new rows, dim
    storage = (module.k_cache.data_ptr(), module.v_cache.data_ptr())
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    for start in (4, 0):
        x, pos = blocks.gpt2_inputs(module, 2, 8, start)
        torch.testing.assert_close(compiled(x.to(dtype), pos), reference(x.to(dtype), pos),
                                   rtol=tol, atol=tol)
        torch.testing.assert_close(module.k_cache, reference.k_cache, rtol=tol, atol=tol)
        torch.testing.assert_close(module.v_cache, reference.v_cache, rtol=tol, atol=tol)
    assert (module.k_cache.data_ptr(), module.v_cache.data_ptr()) == storage


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", HALF_AND_FLOAT)
@pytest.mark.parametrize("accumulate", [False, True])
def test_index_copy_kv_cache_in_place_gpu(dtype, accumulate):
    _check_cache_module(lambda: _IndexCopyCache(dtype, accumulate), "cuda", dtype)
