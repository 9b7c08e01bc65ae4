"""A compiled model binds its weights and buffers once: a call with keyword arguments looks
nothing up by name, and buffers the call wrote in place are not copied onto themselves.

Before: every keyword call (transformers' decode steps are called so) looked up each
parameter and buffer by its dotted name, ~60 lookups, 0.8 ms a call on a 2-core host for a
4-layer Llama with a static cache: more host time than its CUDA-graph replay
(``benchmarks/bench_call_host.py``)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch.export import Dim

import compiler


class Counter(torch.nn.Module):
    """A buffer written in place each call, a weight, keyword-only inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros(1))
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, *, x, scale):
        self.calls.add_(1)
        return self.lin(x) * self.calls * scale


@pytest.mark.parametrize("dynamic", [False, True])
def test_keyword_calls_look_up_no_state_by_name(dynamic, monkeypatch):
    torch.manual_seed(0)
    model = Counter().eval()
    eager = copy.deepcopy(model)
    example = {"x": torch.randn(3, 4), "scale": torch.randn(1)}
    shapes = {"x": {0: Dim("rows", min=1, max=16)}, "scale": None} if dynamic else None
    compiled = compiler.compile_module(model, (), example_kwargs=example, dynamic_shapes=shapes)

    def by_name(self, target):
        raise AssertionError(f"looked up {target!r} by name during a call")
    monkeypatch.setattr(torch.nn.Module, "get_parameter", by_name)
    monkeypatch.setattr(torch.nn.Module, "get_buffer", by_name)
    with torch.no_grad():
        for rows in (3, 5, 3) if dynamic else (3, 3, 3):
            kwargs = {"x": torch.randn(rows, 4), "scale": torch.randn(1)}
            torch.testing.assert_close(compiled(**kwargs), eager(**kwargs))
    assert model.calls.item() == eager.calls.item() == 3


def test_finish_call_copies_a_new_value_and_skips_the_buffer_itself():
    model = Counter().eval()
    compiled = compiler.compile_module(model, (), example_kwargs={
        "x": torch.randn(3, 4), "scale": torch.randn(1)})
    conv = compiled.captured
    (bound,) = conv.mutated_state(model, conv.state_inputs(model))
    assert bound is model.calls
    out = torch.ones(2)
    version = model.calls._version
    assert conv.finish_call(model, [model.calls, out], [model.calls]) is out
    assert model.calls._version == version          # written in place: no copy onto itself
    conv.finish_call(model, [torch.full((1,), 7.0), out], [model.calls])
    assert model.calls.item() == 7.0 and model.calls._version > version
    conv.finish_call(model, [torch.full((1,), 9.0), out])   # no bound buffers: by name
    assert model.calls.item() == 9.0


def _replace_weight(m):
    m.lin.weight = torch.nn.Parameter(torch.randn(4, 4))


def _assign_state(m):
    m.load_state_dict({k: torch.randn_like(v) for k, v in m.state_dict().items()}, assign=True)


def _swap_submodule(m):
    m.lin = torch.nn.Linear(4, 4)


@pytest.mark.parametrize("replace", [_replace_weight, _assign_state, _swap_submodule])
@pytest.mark.parametrize("keywords", [False, True])
def test_replaced_weights_buffers_and_submodules_are_rebound(replace, keywords):
    """Before: the positional path kept using the objects bound at compile time."""
    class Plain(Counter):
        def forward(self, x, scale):
            return super().forward(x=x, scale=scale)
    torch.manual_seed(0)
    model = Plain().eval()
    x, scale = torch.randn(3, 4), torch.randn(1)
    if keywords:
        compiled = compiler.compile_module(model, (), example_kwargs={"x": x, "scale": scale})
        call = lambda: compiled(x=x, scale=scale)     # noqa: E731
    else:
        compiled = compiler.compile_module(model, (x, scale))
        call = lambda: compiled(x, scale)             # noqa: E731
    with torch.no_grad():
        call()
        replace(model)
        eager = copy.deepcopy(model)
        torch.testing.assert_close(call(), eager(x, scale))
        torch.testing.assert_close(call(), eager(x, scale))   # the new buffer is written
    assert model.calls.item() == eager.calls.item()
