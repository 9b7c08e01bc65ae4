"""Dynamic-shape CUDA graphs on CPU: a real compiled dynamic module (Triton interpreter)
replayed through a fake graph backend whose replay re-runs the captured work into the
captured output buffers (a CUDA graph's semantics). Checked: a size runs directly, then
captures, then replays; the pool is bounded and evicts the least recently used; every
capture gets the one shared pool handle; bucket padding is planned only where the graph is
row-wise independent, refused with the op named otherwise, and padded results are sliced
back to eager's; a failed capture warns and that size runs directly from then on."""
from __future__ import annotations

import types
import warnings

import pytest
import torch
from torch.export import Dim

import compiler
from compiler.capture import capture_module
from compiler.config import OptionsError, load_options
from compiler.graph_padding import PaddingRefusedError, plan_padding
from compiler.graph_pool import (DynamicGraphedCall, GraphCaptureWarning, GraphPolicy,
                                 dynamic_graphed_call, sizes_from_data)


class _Graph:
    def __init__(self, run, outputs):
        self.run, self.outputs, self.replays = run, outputs, 0

    def replay(self):
        self.replays += 1
        for out, new in zip(self.outputs, self.run()):
            out.copy_(new)


class _Graphs:
    """A CudaGraphBackend without CUDA; ``fail_at``: batch sizes whose capture raises.
    Unlike CUDA, its capture runs the work once (in-place writes then happen twice, which
    the static-cache test's writes at fixed positions tolerate)."""

    def __init__(self, fail_at=()):
        self.handles, self.pools, self.fail_at = [], [], set(fail_at)

    def pool_handle(self):
        self.handles.append(object())
        return self.handles[-1]

    def capture(self, run, pool):
        self.pools.append(pool)
        outputs = tuple(run())
        if outputs[0].dim() and outputs[0].shape[0] in self.fail_at:
            raise RuntimeError("operation not permitted when stream is capturing")
        return _Graph(run, outputs), outputs

    def synchronize(self):
        pass


class _Rows(torch.nn.Module):
    """Row by row along the batch: padding the batch is legal."""
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(16, 8)

    def forward(self, x):
        return torch.relu(self.lin(x)).softmax(-1)


@pytest.fixture(scope="module")
def rows():
    torch.manual_seed(0)
    model = _Rows().eval()
    compiled = compiler.compile_module(model, (torch.randn(5, 16),),
                                       dynamic_shapes=({0: Dim("b", min=1, max=64)},))
    return model, compiled


def _call(rows, policy, backend, padded=False):
    model, compiled = rows
    plans = [plan_padding(compiled.captured.gm, s) for s in compiled.compiled.size_ranges] \
        if padded else []
    call = DynamicGraphedCall(compiled.compiled, compiled._user, policy, plans, backend)

    def step(batch):
        x = torch.randn(batch, 16)
        (out,) = call(compiled.captured.flatten_call(model, (x,), {}))
        with torch.no_grad():
            torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-5)
        return out
    return call, step


def test_a_size_runs_directly_then_captures_then_replays(rows):
    backend = _Graphs()
    call, step = _call(rows, GraphPolicy(max_graphs=4), backend)
    first = step(3)
    assert len(call.pool) == 0                       # seen once: run directly
    step(3)
    assert len(call.pool) == 1 and call.pool.captures == 1
    for _ in range(3):
        step(3)
    (entry,) = call.pool._entries.values()
    assert entry.graph.replays == 4 and call.pool.captures == 1
    step(5), step(5)
    assert len(call.pool) == 2 and call.pool.captures == 2
    assert first.shape == (3, 8)


def test_replayed_outputs_are_fresh_tensors(rows):
    call, step = _call(rows, GraphPolicy(max_graphs=2), _Graphs())
    outs = [step(4) for _ in range(4)]
    snapshots = [o.clone() for o in outs]
    step(4)
    for out, snap in zip(outs, snapshots):   # a later replay never overwrote them
        assert torch.equal(out, snap)


def test_pool_is_bounded_and_evicts_least_recently_used(rows):
    call, step = _call(rows, GraphPolicy(max_graphs=2), _Graphs())
    for batch in (2, 2, 3, 3):
        step(batch)
    step(2)                                          # 2 used last: 3 is the oldest now
    for _ in range(3):           # seen more often than 3 (twice): evicts it
        step(4)
    keys = [dict(k) for k in call.pool._entries]
    assert len(call.pool) == 2 and call.pool.evictions == 1
    assert sorted(v for k in keys for v in k.values()) == [2, 4]
    step(3), step(3)             # evicted, now seen 4 times: the oldest (2, 3 times) goes
    assert call.pool.captures == 4 and call.pool.evictions == 2 and len(call.pool) == 2


def test_sizes_cycling_past_the_pool_do_not_evict_each_other(rows):
    """A loop over more sizes than the pool holds (a decode loop repeated over one range of
    lengths) keeps the graphs it captured first: each other size runs directly rather than
    paying a capture at every step."""
    call, step = _call(rows, GraphPolicy(max_graphs=2), _Graphs())
    for _ in range(4):
        for batch in (2, 3, 4, 5, 6):
            step(batch)
    assert call.pool.captures == 2 and call.pool.evictions == 0
    assert sorted(v for k in call.pool._entries for v in dict(k).values()) == [2, 3]


def test_pool_is_bounded_by_the_bytes_its_graphs_hold(rows):
    """Each graph holds its input buffer (batch x 16 floats) and its output (batch x 8):
    96 bytes a row. Past ``max_bytes`` the least recently used go, the newest stays."""
    call, step = _call(rows, GraphPolicy(max_graphs=64, max_bytes=500), _Graphs())
    for batch in (2, 2, 3, 3):
        step(batch)
    assert [e.nbytes for e in call.pool._entries.values()] == [192, 288]
    assert call.pool.bytes == 480 and not call.pool.full()
    for batch in (4, 4, 4):
        step(batch)
    assert call.pool.evictions == 2 and call.pool.bytes == 384
    assert [v for k in call.pool._entries for v in dict(k).values()] == [4]
    step(9), step(9)              # 864 bytes alone: kept, the only graph
    assert [v for k in call.pool._entries for v in dict(k).values()] == [9]
    assert call.pool.bytes == 864 and call.pool.full()


def test_a_byte_bound_below_one_graph_keeps_the_newest(rows):
    call, step = _call(rows, GraphPolicy(max_graphs=64, max_bytes=0), _Graphs())
    for batch in (2, 2, 3, 3, 3):
        step(batch)
    assert [v for k in call.pool._entries for v in dict(k).values()] == [3]
    assert call.pool.captures == 2 and call.pool.evictions == 1


def test_every_capture_shares_one_pool_handle(rows):
    backend = _Graphs()
    _, step = _call(rows, GraphPolicy(max_graphs=8), backend)
    for batch in (2, 2, 3, 3, 7, 7):
        step(batch)
    assert len(backend.handles) == 1 and len(backend.pools) == 3
    assert all(p is backend.handles[0] for p in backend.pools)


def test_buckets_pad_sizes_into_one_graph_and_slice_back(rows):
    call, step = _call(rows, GraphPolicy(max_graphs=4, buckets=(4, 8)), _Graphs(),
                       padded=True)
    shapes = [tuple(step(b).shape) for b in (5, 7, 6, 8, 3)]
    assert shapes == [(5, 8), (7, 8), (6, 8), (8, 8), (3, 8)]
    assert [dict(k) for k in call.pool._entries] == [{"s77": 8}]  # 5, 7, 6, 8 share it
    (entry,) = call.pool._entries.values()
    assert entry.static[0].shape == (8, 16) and entry.graph.replays == 3   # 7 (captured), 6, 8


def test_failed_capture_warns_and_that_size_runs_directly(rows):
    backend = _Graphs(fail_at={3})
    call, step = _call(rows, GraphPolicy(max_graphs=4), backend)
    step(3)
    with pytest.warns(GraphCaptureWarning, match="capture failed at sizes"):
        step(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step(3), step(3)                             # remembered: no second attempt
    assert len(backend.pools) == 1 and len(call.pool) == 0
    step(6), step(6)
    assert len(call.pool) == 1


def test_new_weight_storage_starts_over(rows):
    model, compiled = rows
    call = DynamicGraphedCall(compiled.compiled, compiled._user, GraphPolicy(4), (), _Graphs())
    x = torch.randn(3, 16)
    flat = compiled.captured.flatten_call(model, (x,), {})
    call(flat), call(flat)
    assert len(call.pool) == 1
    flat[0] = flat[0].clone() * 2                    # weight moved: the graph would read old
    (out,) = call(flat)
    assert len(call.pool) == 0
    torch.testing.assert_close(out, torch.relu(x @ flat[0].T + flat[1]).softmax(-1))


def test_sizes_from_data_reads_bare_symbols(rows):
    model, compiled = rows
    flat = compiled.captured.flatten_call(model, (torch.randn(9, 16),), {})
    assert sizes_from_data(compiled.compiled.input_specs, flat) == {"s77": 9}


# ----------------------------------------------------------------------- padding decisions
def _plan(forward, shape, dim, lo=3):
    module = types.new_class("M", (torch.nn.Module,), exec_body=lambda ns: ns.update(
        forward=lambda self, x: forward(x)))()
    captured = capture_module(module, (torch.randn(*shape),), None,
                              dynamic_shapes=({dim: Dim("n", min=lo, max=64)},))
    (symbol,) = {str(s.node.expr) for n in captured.gm.graph.nodes if n.op == "placeholder"
                 for s in n.meta["val"].shape if isinstance(s, torch.SymInt)}
    return plan_padding(captured.gm, symbol)


def test_row_independent_graphs_are_planned():
    plan = _plan(lambda x: ((x * 2).relu().view(x.shape[0], 4, 4).transpose(1, 2),
                            x.sum(-1)), (5, 16), 0)
    assert plan.inputs == ((0, (0,)),) and plan.outputs == ((0,), (0,))
    plan = _plan(lambda x: x[:, :, :8] + torch.arange(x.shape[1])[None, :, None],
                 (2, 5, 16), 1)
    assert plan.outputs == ((1,),)
    # flattened with a constant inner dim (a matmul's M), then split back: k * s rows
    plan = _plan(lambda x: (x.reshape(-1, 4) @ torch.ones(4, 3)).view(x.shape[0], 4, 3),
                 (5, 16), 0)
    assert plan.outputs == ((0,),)


@pytest.mark.parametrize("forward, shape, dim, why", [
    (lambda x: x.softmax(0), (5, 16), 0, "reduces over the padded dim"),
    (lambda x: x.sum(0), (5, 16), 0, "reduces over the padded dim"),
    (lambda x: x[:, -1], (2, 5, 16), 1, "indexes along the padded dim"),
    (lambda x: x / x.shape[0], (5, 16), 0, "computes with the size as a value"),
    (lambda x: x + torch.arange(x.shape[0], 2 * x.shape[0])[:, None], (5, 16), 0,
     "computes with the size as a value"),
    (lambda x: x.T @ x, (5, 16), 0, "contracts over the padded dim"),
    (lambda x: torch.cat([x, x]), (5, 16), 0, "concatenates along the padded dim"),
    (lambda x: x[1:], (5, 16), 0, "indexes along the padded dim"),
    (lambda x: x.t().reshape(-1), (5, 16), 0, "reshapes across the padded dim"),
    (lambda x: x.new_zeros(x.shape[0] + 1), (5, 16), 0, "or a constant times it"),
    (lambda x: x + torch.ones(64, 16)[:x.shape[0]], (5, 16), 0,
     "computes with the size as a value"),      # a fixed dim cut to s: past 64 it clamps
    (lambda x: torch.nn.functional.scaled_dot_product_attention(
        x.new_ones(1, 2, 1, 8), x, x), (1, 2, 5, 8), 2, "attends over the padded dim"),
])
def test_padding_is_refused_where_rows_mix(forward, shape, dim, why):
    with pytest.raises(PaddingRefusedError, match=why):
        _plan(forward, shape, dim)


def test_a_refused_symbol_warns_and_is_not_padded():
    captured = capture_module(types.new_class("Soft", (torch.nn.Module,), exec_body=lambda ns:
                                              ns.update(forward=lambda self, x: x.softmax(0)))(),
                              (torch.randn(5, 4),), None,
                              dynamic_shapes=({0: Dim("n", min=2, max=64)},))
    compiled = types.SimpleNamespace(static_cuda=False, size_ranges={"s0": (2, 64)}, input_specs=(),
                                     artifact=types.SimpleNamespace(meta={"device": "cuda"}))
    symbol = str(next(s for n in captured.gm.graph.nodes if n.op == "placeholder"
                      for s in n.meta["val"].shape).node.expr)
    compiled.size_ranges = {symbol: (2, 64)}
    with pytest.warns(GraphCaptureWarning, match="reduces over the padded dim"):
        call = dynamic_graphed_call(compiled, [0], GraphPolicy(4, (8, 16)), captured)
    assert call.plans == ()
    assert dynamic_graphed_call(compiled, [0], False, captured) is None
    compiled.artifact.meta["device"] = "cpu"
    assert dynamic_graphed_call(compiled, [0], True, captured) is None


def test_options_and_policy():
    opts = load_options({"cuda_graph_buckets": [1, 8, 32], "cuda_graph_max_graphs": 3})
    assert GraphPolicy.of(opts) == GraphPolicy(3, (1, 8, 32))
    assert GraphPolicy(3, (8, 32)).bucket(9) == 32 and GraphPolicy(3, (8,)).bucket(9) == 9
    with pytest.raises(ValueError, match="ascending"):
        GraphPolicy(3, (32, 8))
    with pytest.raises(OptionsError, match="cuda_graph_max_graphs"):
        load_options({"cuda_graph_max_graphs": "many"})


def test_static_cache_decode_replays_one_graph_through_the_module():
    """A decode loop with transformers' static cache (buffers written in place at
    ``cache_position``): every single-token step shares chunk size 1, so it is captured
    once and replayed, and the replays write the module's own cache buffers like eager."""
    pytest.importorskip("transformers")
    import copy

    from test_llm_decode import _llama, _static_cache_module, static_steps_like_eager
    module = _static_cache_module(_llama(layers=1), batch_size=1, max_cache_len=16)
    if module is None:
        pytest.skip("this transformers has no TorchExportableModuleWithStaticCache")
    for buf in module.buffers():
        if buf.is_floating_point():
            buf.normal_()
    eager = copy.deepcopy(module)
    chunk = Dim("chunk", min=1, max=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = compiler.compile_module(
            module, (), example_kwargs={"input_ids": torch.randint(3, 96, (1, 3)),
                                        "cache_position": torch.arange(3)},
            dynamic_shapes={"input_ids": {1: chunk}, "cache_position": {0: chunk}})
    compiled._graph = DynamicGraphedCall(compiled.compiled, compiled._user, GraphPolicy(4),
                                         (), _Graphs())
    static_steps_like_eager(compiled, module, eager, (3, 1, 1, 1, 1),   # prefill, steps
                            lambda n: torch.randint(3, 96, (1, n)))
    (entry,) = compiled._graph.pool._entries.values()   # chunk 1: seen, captured, replayed
    assert compiled._graph.pool.captures == 1 and entry.graph.replays == 3


def test_llama_prefill_pads_its_batch_like_eager():
    """transformers' Llama (no cache), batch dynamic: its mask code indexes rows with
    ``arange(batch)`` and its matmuls flatten batch with sequence; RowCheck accepts both,
    and padded batches (3 and 5 run as 8) give eager's logits, sliced back."""
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=1, num_attention_heads=4,
                                      num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    llama = transformers.LlamaForCausalLM(config).eval()

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.llama = llama

        def forward(self, ids):
            return self.llama(ids, use_cache=False).logits
    model = Logits().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = compiler.compile_module(model, (torch.randint(3, 96, (3, 6)),),
                                           dynamic_shapes=({0: Dim("b", min=1, max=16)},))
    (symbol,) = compiled.compiled.size_ranges
    call = DynamicGraphedCall(compiled.compiled, compiled._user, GraphPolicy(4, (8, 16)),
                              [plan_padding(compiled.captured.gm, symbol)], _Graphs())
    for batch in (3, 5, 5, 3):
        ids = torch.randint(3, 96, (batch, 6))
        (got,) = call(compiled.captured.flatten_call(model, (ids,), {}))
        with torch.no_grad():
            torch.testing.assert_close(got, model(ids), rtol=1e-4, atol=1e-4)
    assert [dict(k) for k in call.pool._entries] == [{symbol: 8}]
