"""GraphedCall's protocol, checked on CPU with a stand-in for CUDA graphs: the first call of a
set of weights runs directly, the second captures and replays, later calls replay; outputs
are fresh tensors; new weight storage starts over."""
from __future__ import annotations

import contextlib

import torch

from compiler import runtime


class _Graph:
    """Records what a capture ran, and runs it again on replay (a CUDA graph's semantics:
    the same buffers, read and written again)."""
    capturing: "_Graph | None" = None

    def __init__(self):
        self.replays = 0
        self.work = None

    def replay(self):
        self.replays += 1
        self.work()


class _Compiled:
    """Writes ``x * w`` into one output buffer it owns (as a captured graph's memory is)."""

    def __init__(self):
        self.out = torch.empty(4)
        self.runs = 0

    def run_unchecked(self, flat):
        def work():
            torch.mul(flat[1], flat[0], out=self.out)
        self.runs += 1
        if _Graph.capturing is not None:
            _Graph.capturing.work = work
        else:
            work()
        return (self.out,)


def test_first_call_runs_directly_second_captures_later_replay(monkeypatch):
    @contextlib.contextmanager
    def capture(graph):
        _Graph.capturing = graph
        try:
            yield
        finally:
            _Graph.capturing = None
    monkeypatch.setattr(torch.cuda, "CUDAGraph", _Graph)
    monkeypatch.setattr(torch.cuda, "graph", capture)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    compiled, weight = _Compiled(), torch.randn(4)
    call = runtime.GraphedCall(compiled, inputs=[1])
    results = []
    for step in range(4):
        x = torch.randn(4)
        (out,) = call([weight, x])
        torch.testing.assert_close(out, weight * x)
        results.append((out, out.clone()))
        if step == 0:
            assert call._graph is None and compiled.runs == 1       # no capture yet
    assert call._graph.replays == 3 and compiled.runs == 2          # one run, one capture
    for returned, snapshot in results[1:]:    # replays never overwrote an earlier result
        assert torch.equal(returned, snapshot)
    moved = weight.clone()                    # new weight storage: a direct run first again
    (out,) = call([moved, torch.ones(4)])
    assert torch.equal(out, moved) and call._graph.replays == 3 and compiled.runs == 3
