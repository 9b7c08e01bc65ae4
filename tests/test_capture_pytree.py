"""Model inputs and outputs beyond plain tensors (``compiler.capture_pytree``) and state the
forward reaches outside its module tree (``compiler.capture_export``), without transformers.

- An output torch's pytree does not know is refused with a CaptureError naming the output,
  the type and the fix, on both capture paths (one-trace and export), before any tracing
  error of torch's.
- A registered output type round-trips: ``compile_module`` returns it, values as eager's.
- ``leaf_shapes`` writes ``dynamic_shapes`` for a registered input, which then compiles once
  for every length.
- A buffer written through another object's attribute (a static KV cache's layers hold the
  very tensors the module registered) is exported strictly and written in place, as eager.
"""
from __future__ import annotations

import copy
import dataclasses
import warnings

import pytest
import torch
import torch.utils._pytree as pytree
from torch.export import Dim

import compiler
from compiler.capture import CaptureError, capture_module
from compiler.capture_export import export_program, mutated_constants
from compiler.capture_pytree import leaf_shapes, unknown_leaves


class Opaque:
    """A result object torch's pytree does not know."""

    def __init__(self, t: torch.Tensor):
        self.t = t


class ReturnsOpaque(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x, scale=None):
        return {"y": self.fc(x), "state": Opaque(x * 2)}


@pytest.mark.parametrize("kwargs", [{}, {"scale": torch.ones(1)}], ids=["one-trace", "export"])
def test_unknown_output_type_is_named_with_the_fix(kwargs):
    with pytest.raises(CaptureError) as info:
        capture_module(ReturnsOpaque().eval(), (torch.randn(2, 4),), kwargs)
    message = str(info.value)
    assert "output['state']" in message and f"{__name__}.Opaque" in message
    assert "register_pytree_node(Opaque" in message and "return its tensors" in message


@dataclasses.dataclass
class Pair:
    """A user result type, registered with torch's pytree as torch.export users do."""
    first: torch.Tensor
    second: torch.Tensor


pytree.register_pytree_node(
    Pair, lambda p: ([p.first, p.second], None), lambda values, _: Pair(*values),
    serialized_type_name=f"{__name__}.Pair",
    flatten_with_keys_fn=lambda p: ([(pytree.GetAttrKey("first"), p.first),
                                     (pytree.GetAttrKey("second"), p.second)], None))


class ReturnsPair(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 6)

    def forward(self, x):
        h = self.fc(x)
        return Pair(torch.relu(h), h.softmax(-1))


def test_registered_output_type_round_trips():
    module = ReturnsPair().eval()
    compiled = compiler.compile_module(module, (torch.randn(3, 6),))
    x = torch.randn(3, 6)
    with torch.no_grad():
        got, want = compiled(x), module(x)
    assert isinstance(got, Pair)
    torch.testing.assert_close(got.first, want.first)
    torch.testing.assert_close(got.second, want.second)


def test_unknown_leaves_lists_only_objects():
    assert unknown_leaves((torch.ones(1), 3, None, "s", [2.0])) == []
    assert [t for _, t in unknown_leaves([Opaque(torch.ones(1))])] == [Opaque]


def test_leaf_shapes_follow_the_registered_structure():
    pair = Pair(torch.randn(2, 5), torch.randn(2, 5))
    seq = Dim("seq", max=64)
    shapes = leaf_shapes({"pair": pair, "n": 3, "s": torch.randn(())}, {1: seq})
    assert shapes == {"pair": [{1: seq}, {1: seq}], "n": None, "s": None}


class TakesPair(torch.nn.Module):
    def forward(self, x, pair):
        return x.sum(0) + torch.cat([pair.first, pair.second], 1).mean(1)


def test_dynamic_pytree_input_compiles_once_for_every_length():
    """A registered input (as a KV cache) with a dynamic dim in each leaf."""
    module = TakesPair()
    gen = torch.Generator().manual_seed(0)

    def pair(n):
        return Pair(torch.randn(4, n, generator=gen), torch.randn(4, n, generator=gen))
    example = pair(6)
    compiled = compiler.compile_module(
        module, (torch.randn(3, 4),), example_kwargs={"pair": example},
        dynamic_shapes={"x": None, "pair": leaf_shapes(example, {1: Dim.DYNAMIC})})
    for n in (3, 6, 11):
        x, p = torch.randn(3, 4, generator=gen), pair(n)
        torch.testing.assert_close(compiled(x, pair=p), module(x, pair=p))


class _Layer:
    """Holds a tensor outside the module tree, as a KV cache's layer objects do."""

    def __init__(self, keys: torch.Tensor):
        self.keys = keys


class WritesThroughAnObject(torch.nn.Module):
    """A static cache: the buffer ``keys`` is also reached (and written) as ``layer.keys``."""

    def __init__(self):
        super().__init__()
        self.register_buffer("keys", torch.randn(2, 8))
        self.layer = _Layer(self.keys)

    def forward(self, x, position):
        self.layer.keys.index_copy_(1, position, x)
        return self.layer.keys.softmax(-1) * 2


def test_state_reached_through_another_object_is_exported_strictly_and_written_in_place():
    module = WritesThroughAnObject()
    args = (torch.randn(2, 2), torch.tensor([3, 4]))
    assert mutated_constants(torch.export.export(module, args, strict=False)) != []
    ep = export_program(module, args, {}, None)
    assert mutated_constants(ep) == []
    assert list(ep.run_decompositions().graph_signature.buffers_to_mutate.values()) == ["keys"]

    eager = copy.deepcopy(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = compiler.compile_module(module, args)
    assert compiled.captured.mutated_buffers == ("keys",)
    gen = torch.Generator().manual_seed(1)
    for position in (0, 5, 6):
        x, pos = torch.randn(2, 2, generator=gen), torch.tensor([position, position + 1])
        with torch.no_grad():
            torch.testing.assert_close(compiled(x, pos), eager(x, pos))
        torch.testing.assert_close(module.keys, eager.keys)
    assert module.layer.keys is module.keys      # written in place: still one tensor


@dataclasses.dataclass
class Window:
    """An input keeping a Python int beside its tensor (as transformers' sliding-window
    cache layer keeps its cumulative length): the int is in the pytree context."""
    keys: torch.Tensor
    length: int


pytree.register_pytree_node(
    Window, lambda w: ([w.keys], {"length": w.length}),
    lambda values, ctx: Window(values[0], ctx["length"]),
    serialized_type_name=f"{__name__}.Window",
    flatten_with_keys_fn=lambda w: ([(pytree.GetAttrKey("keys"), w.keys)],
                                    {"length": w.length}))


class TakesWindow(torch.nn.Module):
    def forward(self, x, win):
        return x + win.keys * win.length


def test_a_call_unlike_the_capture_deep_inside_names_the_difference():
    """Two calls alike at the top (same arguments and keywords) read the same in the
    message; it now names the value inside that differs."""
    module = TakesWindow()
    compiled = compiler.compile_module(module, (torch.randn(3),),
                                       example_kwargs={"win": Window(torch.randn(3), 6)})
    x, keys = torch.randn(3), torch.randn(3)
    torch.testing.assert_close(compiled(x, win=Window(keys, 6)), module(x, Window(keys, 6)))
    with pytest.raises(CaptureError, match=r"kwargs\['win'\]\.length is 4, captured with 6 "
                                           r"\(the graph was specialised on this Python value"):
        compiled(x, win=Window(keys, 4))
