"""The one-trace capture path (compiler/capture_trace.py) against the torch.export path it
replaces for static modules: the same graph, key, inputs, specs and mutations, and the
export path wherever the one-trace path does not apply."""
from __future__ import annotations

import contextlib
import warnings

import pytest
import torch
import torch.nn as nn

from compiler import capture
from compiler.capture import capture_module
from compiler.capture_trace import trace_static
from pipeline.zoo import blocks

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def _by_export(module, args, kwargs=None):
    """What capture_module built before the one-trace path: export, then decompose."""
    ep = torch.export.export(module, tuple(args), kwargs or {}, strict=False)
    return capture.capture_exported(ep, type(module).__name__, (tuple(args), kwargs or {}))


def _assert_same(fast, slow):
    assert fast.graph_key == slow.graph_key
    assert capture.graph_text(fast.gm) == capture.graph_text(slow.gm)
    assert fast.inputs == slow.inputs          # placeholder names included (errors quote them)
    assert (fast.in_spec, fast.out_spec) == (slow.in_spec, slow.out_spec)
    assert fast.mutated_buffers == slow.mutated_buffers
    assert fast.scalar_inputs == slow.scalar_inputs


@pytest.mark.parametrize("name", sorted(blocks.MODELS))
def test_zoo_block_traced_once_matches_export(name):
    module, inputs = blocks.MODELS[name]("tiny")[:2]
    module.eval()
    assert trace_static(module, tuple(inputs)) is not None
    _assert_same(capture_module(module, tuple(inputs), name=type(module).__name__),
                 _by_export(module, inputs))


@pytest.mark.parametrize("name", ["efficientnet_b0", "convnext_tiny", "llama_small"])
def test_real_zoo_model_traced_once_matches_export(name):
    """Squeeze-excite + SiLU, LayerNorm over permuted channels, RMSNorm + rotary + SDPA."""
    from pipeline.zoo import text, vision
    factory = getattr(vision, name, None) or getattr(text, name)
    small = {"batch": 2, "image": 64} if hasattr(vision, name) else \
        {"batch": 2, "seq": 16, "layers": 2}
    module, inputs = factory(**small)[:2]
    module.eval()
    assert trace_static(module, tuple(inputs)) is not None
    _assert_same(capture_module(module, tuple(inputs), name=type(module).__name__),
                 _by_export(module, inputs))


class BatchNormTrain(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x)).relu()


def test_train_mode_buffer_updates_match_export():
    module, x = BatchNormTrain().train(), torch.randn(2, 3, 8, 8)
    fast = capture_module(module, (x,), name="BatchNormTrain")
    assert fast.mutated_buffers == ("bn.running_mean", "bn.running_var",
                                    "bn.num_batches_tracked")
    _assert_same(fast, _by_export(module, (x,)))


def test_sdpa_and_silu_stay_whole():
    """The composite ops kiln lowers itself are kept by the one-trace path too."""
    class Attn(nn.Module):
        def forward(self, q, k, v):
            return nn.functional.scaled_dot_product_attention(q, k, v).sigmoid() * \
                nn.functional.silu(q)
    q = torch.randn(1, 2, 5, 8)
    text = capture.graph_text(capture_module(Attn(), (q, q, q)).gm)
    assert "aten.scaled_dot_product_attention.default" in text and "aten.silu.default" in text


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(self.a(x))


class WithConstant(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = torch.full((4,), 2.0)      # a plain tensor attribute: export lifts it

    def forward(self, x):
        return x * self.scale


class WithScalar(nn.Module):
    def forward(self, x, k):
        return x * k


class WithKwarg(nn.Module):
    def forward(self, x, y=None):
        return x + y


def test_tied_weights_traced_once_match_export():
    """Both paths keep a placeholder per name; every use reads the last one, as export's."""
    module, x = Tied().eval(), torch.randn(2, 4)
    assert trace_static(module, (x,)) is not None
    _assert_same(capture_module(module, (x,), name="Tied"), _by_export(module, (x,)))


@pytest.mark.parametrize("name", ["bert_4layer", "t5_encoder"])
def test_transformers_traced_once_match_export(name):
    """transformers builds its attention masks one way under export and another in eager
    (``torch.compiler.is_exporting()``); the one trace sets export's flags, so a ``.pt2``
    of the model and the live module get one key. T5 also ties its embeddings."""
    pytest.importorskip("transformers")
    from pipeline.zoo import heldout
    module, (ids,) = getattr(heldout, name)(batch=2, seq=16, layers=1)[:2]
    module.eval()
    assert trace_static(module, (ids,)) is not None
    with torch.no_grad():
        _assert_same(capture_module(module, (ids,), name=name), _by_export(module, (ids,)))


@pytest.mark.parametrize("module, args, kwargs", [
    (WithConstant(), (torch.randn(2, 4),), {}),
    (WithScalar(), (torch.randn(2, 4), 3), {}),
    (WithKwarg(), (torch.randn(2, 4),), {"y": torch.randn(2, 4)}),
], ids=["tensor_constant", "scalar_input", "kwargs"])
def test_cases_outside_the_plain_one_take_the_export_path(module, args, kwargs):
    if not kwargs:   # None, or an error inside the trace, both send capture to export
        assert capture._capture_static(module, args, "m")[0] is None
    _assert_same(capture_module(module, args, kwargs), _by_export(module, args, kwargs))


def test_a_failing_one_trace_path_warns_once_naming_torch(monkeypatch):
    """A torch whose hooks changed must not slow every capture down in silence."""
    def broken(module, args):
        raise TypeError("hooks moved")
    monkeypatch.setattr(capture, "trace_static", broken)
    capture._warn_fast_path_failed.cache_clear()
    module, x = nn.Linear(4, 3).eval(), torch.randn(2, 4)
    with pytest.warns(RuntimeWarning, match=rf"torch {capture.torch_version_for_key()} \(TypeError\)"):
        first = capture_module(module, (x,))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        second = capture_module(module, (x,))
    _assert_same(first, _by_export(module, (x,)))
    assert second.graph_key == first.graph_key


def _stack_traces(captured) -> list:
    return [n.stack_trace for n in captured.gm.graph.nodes if n.stack_trace]


def test_the_one_trace_records_no_stack_traces_and_keeps_the_key(monkeypatch):
    from compiler import capture_trace
    config = capture_trace._fx_config()
    if config is None:
        pytest.skip("this torch has no torch.fx.config.do_not_emit_stack_traces")
    module, args = blocks.bert_layer("tiny")
    quiet = capture_module(module.eval(), args)
    assert _stack_traces(quiet) == [] and config.do_not_emit_stack_traces is False

    class Recording:       # the trace as before: stack traces on
        off = staticmethod(contextlib.nullcontext)
    monkeypatch.setattr(capture_trace, "STACK_TRACES", Recording())
    recorded = capture_module(module, args)
    assert _stack_traces(recorded)
    assert recorded.graph_key == quiet.graph_key


def test_overlapping_uses_restore_the_switch_when_the_last_ends():
    from compiler.capture_trace import StackTraces, _fx_config
    config = _fx_config()
    if config is None:
        pytest.skip("this torch has no torch.fx.config.do_not_emit_stack_traces")
    switch = StackTraces()
    first, second = switch.off(), switch.off()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert config.do_not_emit_stack_traces is True      # the second capture still runs
    second.__exit__(None, None, None)
    assert config.do_not_emit_stack_traces is False
