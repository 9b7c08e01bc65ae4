"""Dynamic-shape CUDA graphs on a GPU: a dynamic module replays a real CUDA graph per size
with eager's results, keeps at most ``cuda_graph_max_graphs``, pads to buckets, shares one
memory pool across its graphs (less memory than a pool per graph), and a static-cache
decode step (chunk length 1 every step) replays one graph."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch.export import Dim

import compiler
from compiler.graph_pool import DynamicGraphedCall, TorchCudaGraphs

pytestmark = pytest.mark.gpu


class _Wide(torch.nn.Module):
    """A large intermediate (batch x 16384), small output: its scratch memory dominates."""
    def __init__(self):
        super().__init__()
        self.up, self.down = torch.nn.Linear(64, 16384), torch.nn.Linear(16384, 16)

    def forward(self, x):
        return self.down(torch.relu(self.up(x))).softmax(-1)


def _compiled(options=None):
    torch.manual_seed(0)
    model = _Wide().cuda().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = compiler.compile_module(model, (torch.randn(8, 64, device="cuda"),),
                                           options=options,
                                           dynamic_shapes=({0: Dim("b", min=1, max=256)},))
    assert isinstance(compiled._graph, DynamicGraphedCall)
    return model, compiled


def _check(model, compiled, batch):
    x = torch.randn(batch, 64, device="cuda")
    with torch.no_grad():
        got, want = compiled(x), model(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    return got


def test_replays_per_size_like_eager():
    model, compiled = _compiled()
    outs = [(b, _check(model, compiled, b)) for b in (3, 3, 3, 5, 5, 5, 17, 17, 3)]
    pool = compiled._graph.pool
    assert len(pool) == 3 and pool.captures == 3
    assert [o.shape[0] for _, o in outs] == [b for b, _ in outs]


def test_pool_is_bounded():
    """A size evicts the least recently used graph only once seen more often than it
    (``DynamicGraphedCall._admits``): 4 and 5 on their third call, 2 on its fourth."""
    model, compiled = _compiled({"cuda_graph_max_graphs": 2})
    for b in (2, 2, 3, 3, 4, 4, 4, 5, 5, 5, 2, 2):
        _check(model, compiled, b)
    pool = compiled._graph.pool
    assert len(pool) == 2 and pool.evictions == 3


def test_buckets_pad_batches_into_few_graphs():
    model, compiled = _compiled({"cuda_graph_buckets": [4, 8, 16, 32]})
    assert [p.symbol for p in compiled._graph.plans]
    for b in (3, 3, 5, 6, 7, 8, 9, 13, 16, 31, 2):
        _check(model, compiled, b)
    assert len(compiled._graph.pool) <= 4


class _OwnPools(TorchCudaGraphs):
    """Each capture in its own memory pool: what sharing saves is measured against this."""
    def capture(self, run, pool):
        return super().capture(run, torch.cuda.graph_pool_handle())


def _reserved_for_captures(backend) -> int:
    model, compiled = _compiled()
    call = compiled._graph
    call.pool.backend = backend
    _check(model, compiled, 256)                     # kernels loaded, workspace allocated
    torch.cuda.synchronize()
    before = torch.cuda.memory_reserved()
    for b in (256, 240, 224, 208, 192, 176):
        _check(model, compiled, b), _check(model, compiled, b)
    torch.cuda.synchronize()
    assert len(call.pool) == 6
    return torch.cuda.memory_reserved() - before


def test_graphs_share_one_memory_pool():
    shared = _reserved_for_captures(TorchCudaGraphs())
    torch.cuda.empty_cache()
    separate = _reserved_for_captures(_OwnPools())
    print(f"\nreserved for 6 graphs: shared pool {shared / 2**20:.1f} MiB, "
          f"a pool each {separate / 2**20:.1f} MiB")
    assert shared * 2 < separate


def test_static_cache_decode_replays_one_graph():
    pytest.importorskip("transformers")
    from test_llm_decode import _llama, _static_cache_module
    # the model on the GPU first: the recipe makes its cache where the model is
    module = _static_cache_module(_llama().cuda(), batch_size=2, max_cache_len=64)
    if module is None:
        pytest.skip("this transformers has no TorchExportableModuleWithStaticCache")
    for buf in module.buffers():                     # a non-trivial starting cache
        if buf.is_floating_point():
            buf.normal_()
    eager = copy.deepcopy(module)
    chunk = Dim("chunk", min=1, max=16)
    gen = torch.Generator().manual_seed(3)
    ids = lambda n: torch.randint(3, 96, (2, n), generator=gen).cuda()   # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = compiler.compile_module(
            module, (), example_kwargs={"input_ids": ids(4),
                                        "cache_position": torch.arange(4, device="cuda")},
            dynamic_shapes={"input_ids": {1: chunk}, "cache_position": {0: chunk}})
    start = 0
    for n in (5, 1, 1, 1, 1, 1, 1):
        tokens, pos = ids(n), torch.arange(start, start + n, device="cuda")
        with torch.no_grad():
            torch.testing.assert_close(compiled(input_ids=tokens, cache_position=pos),
                                       eager(input_ids=tokens, cache_position=pos),
                                       rtol=1e-3, atol=1e-3)
        start += n
    pool = compiled._graph.pool
    assert pool.captures == 1 and len(pool) == 1     # chunk 1: captured once, replayed
    (entry,) = pool._entries.values()
    assert entry.graph is not None
