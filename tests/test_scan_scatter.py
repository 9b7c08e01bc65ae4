"""Scans and scatters beyond the op table: kernel shapes, sm_90 builds, in-place KV caches.

The op table (tests/optable_scatter.py) checks values against eager; these tests check what
the table cannot see: that long rows use the looped scan, that every new kernel (scans,
scatter stores and atomics, in float32/float16/bfloat16) cross-compiles to an sm_90 cubin,
and that KV-cache writes go into the caller's tensor, only over the new rows.
"""
from __future__ import annotations

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

import compiler
from compiler.api import _lower_graph, _trace
from compiler.autotune.build import Target, build
from compiler.autotune.spaces import Config
from compiler.config import load_options

HALF_AND_FLOAT = (torch.float32, torch.float16, torch.bfloat16)


def _cuda_artifact(fn, *args):
    """``fn`` traced on CPU inputs and lowered for target "cuda" (no GPU is needed)."""
    traced = _trace(make_fx(fn)(*args), list(args))
    artifact, _ = _lower_graph(traced, "test", load_options(), "cuda")
    return artifact


def _build_all(artifact) -> dict[str, str]:
    """Each kernel built for sm_90 at its heuristic launch config: name -> status (+ error)."""
    out = {}
    for kernel in artifact.kernels:
        launch = kernel.meta["launch"]
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
    kinds = sorted(k.meta["kind"] for k in compiled.artifact.kernels)
    assert kinds == ["reduction_looped", "reduction_persistent"]
    a, b = torch.rand(2, 20000), torch.randn(33, 6)
    for got, want in zip(compiled(a, b), fn(a, b)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", HALF_AND_FLOAT)
def test_scan_kernels_build_for_sm90(dtype):
    def fn(a, b):
        return (a.cumsum(0), a.cumprod(1), a.logcumsumexp(1), a.int().cumsum(1),
                b.cumsum(1), b.logcumsumexp(1))

    artifact = _cuda_artifact(fn, torch.randn(7, 300, dtype=dtype), torch.randn(2, 20000, dtype=dtype))
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
