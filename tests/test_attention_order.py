"""Option ``attention = "flash_first"``: a module's attention asks torch for flash and
memory-efficient attention before cuDNN's (``compiler.kernels.host.ordered_attention``). The
wrapper binds the ordered op only under that option; the order holds inside the call only,
the caller's comes back after it (also when the call raises), and results are torch's own.
Which backend runs on a GPU is the dispatcher's choice under that order
(benchmarks/probes/first_ops.py times it on the card)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import compiler
from compiler.capture import capture_module
from compiler.config import load_options
from compiler.kernels.host import ATTENTION_ORDER, extern_op, ordered_attention

pytestmark = pytest.mark.skipif(not hasattr(torch._C, "_set_sdp_priority_order"),
                                reason="this torch has no attention priority order")


def test_the_order_holds_inside_the_call_and_is_put_back():
    seen = []
    before = torch._C._get_sdp_priority_order()

    def call():
        seen.append(torch._C._get_sdp_priority_order())
        raise ValueError("inside")

    with pytest.raises(ValueError, match="inside"):
        ordered_attention(call)()
    assert seen[0][:len(ATTENTION_ORDER)] == list(ATTENTION_ORDER)
    assert sorted(seen[0]) == sorted(before)          # every backend still listed once
    assert torch._C._get_sdp_priority_order() == before


def test_the_wrapper_op_computes_torch_attention():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8) for _ in range(3))
    mask = torch.randn(2, 1, 7, 7)
    sdpa = extern_op("aten.scaled_dot_product_attention.default", ordered=True)
    assert sdpa is not extern_op("aten.scaled_dot_product_attention.default")
    torch.testing.assert_close(sdpa(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, mask))
    torch.testing.assert_close(sdpa(q, k, v, None, 0.0, True),
                               F.scaled_dot_product_attention(q, k, v, is_causal=True))


class Attention(torch.nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


@pytest.mark.parametrize("option, ordered", [("torch", False), ("flash_first", True),
                                             ("auto", False)])
def test_the_option_picks_the_bound_op(option, ordered):
    q = torch.randn(1, 2, 5, 8)
    artifact = compiler.lower(capture_module(Attention().eval(), (q, q, q)), {"attention": option}, "cuda")
    (line,) = [l for l in artifact.source.splitlines() if "extern_op(" in l]
    assert line.endswith("ordered=True)") == ordered
    compiled = compiler.compile_module(Attention().eval(), (q, q, q), {"attention": option})
    fresh = [torch.randn(1, 2, 5, 8) for _ in range(3)]
    torch.testing.assert_close(compiled(*fresh), Attention()(*fresh))


def test_an_unknown_attention_choice_is_refused():
    with pytest.raises(ValueError, match="attention.*'auto', 'torch', 'flash_first'"):
        load_options({"attention": "cudnn"})


def test_auto_orders_attention_in_dynamic_modules_only():
    """A dynamic module meets a new size at every decode step, and cuDNN's attention sets
    itself up per shape: "auto" asks flash first there, keeps torch's order when static."""
    qkv = tuple(torch.randn(1, 2, 6, 8) for _ in range(3))
    seq = torch.export.Dim("seq", min=2, max=64)
    dynamic = {"q": {2: seq}, "k": {2: seq}, "v": {2: seq}}
    captured = capture_module(Attention().eval(), qkv, dynamic_shapes=dynamic)
    (line,) = [l for l in compiler.lower(captured, None, "cuda").source.splitlines()
               if "extern_op(" in l]
    assert line.endswith("ordered=True)")
    compiled = compiler.compile_module(Attention().eval(), qkv, dynamic_shapes=dynamic)
    fresh = [torch.randn(1, 2, 9, 8) for _ in range(3)]
    torch.testing.assert_close(compiled(*fresh), Attention()(*fresh))
