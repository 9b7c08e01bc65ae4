"""Attention's operands reach torch dense in their last dim (``lowering.extern.lower_attention``).

torch's fused GPU attention (flash, memory-efficient, cuDNN) refuses any operand whose last
stride is not 1 and falls back to the math path: eleven eager fp32 kernels per call, which
was most of T5's attention time in kiln (benchmarks/results/2026-12-07/s8). A mask computed
from a permuted table, or a permuted view itself, kept that layout; each case below is
checked for the strides the wrapper hands torch, and against eager on fresh inputs.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import compiler
from compiler.kernels import host

SDPA = "aten.scaled_dot_product_attention.default"


class ComputedMask(torch.nn.Module):
    """The mask is computed from a (q, k, heads) table: realized the table's way it is
    permuted, as T5's relative position bias was."""
    def forward(self, q, k, v, table):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=table.permute(2, 0, 1) * 0.5,
                                              scale=1.0)


class GatheredMask(torch.nn.Module):
    """An embedding gathered as (q, k, heads), then permuted: a view of a computed buffer."""
    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Embedding(32, 4)

    def forward(self, q, k, v, buckets):
        return F.scaled_dot_product_attention(q, k, v, self.bias(buckets).permute(2, 0, 1))


class PermutedQuery(torch.nn.Module):
    """A query transposed in its last two dims."""
    def forward(self, qt, k, v):
        return F.scaled_dot_product_attention(qt.transpose(-1, -2), k, v)


class BatchBroadcastMask(torch.nn.Module):
    """One bias for every batch row, expanded to the batch before the call: the body of
    the mask never reads the batch index."""
    def forward(self, q, k, v, table):
        bias = (table.permute(2, 0, 1) * 0.5).unsqueeze(0).expand(q.shape[0], -1, -1, -1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.contiguous(), scale=1.0)


class QueryOnlyMask(torch.nn.Module):
    """A bias per query row only, the same for every key and batch row."""
    def forward(self, q, k, v, table):
        bias = (table[:, :1, :].permute(2, 0, 1) * 0.5).unsqueeze(0)   # (1, heads, q, 1)
        bias = bias.expand(q.shape[0], -1, -1, k.shape[2])
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.contiguous(), scale=1.0)


def _inputs(case):
    q, k, v = (torch.randn(2, 4, 16, 8) for _ in range(3))
    if case in (ComputedMask, BatchBroadcastMask, QueryOnlyMask):
        return q, k, v, torch.randn(16, 16, 4)
    if case is GatheredMask:
        return q, k, v, torch.randint(0, 32, (16, 16))
    return q.transpose(-1, -2).contiguous(), k, v


def _spy_attention(monkeypatch) -> list:
    """The strides of every tensor the compiled modules hand torch's attention."""
    seen, real = [], host.extern_op

    def spying(name, *a, **kw):
        call = real(name, *a, **kw)
        if name != SDPA:
            return call

        def spy(*args, **kwargs):
            seen.append([t.stride() for t in (*args, *kwargs.values())
                         if isinstance(t, torch.Tensor)])
            return call(*args, **kwargs)
        return spy
    monkeypatch.setattr(host, "extern_op", spying)
    return seen


def _compiled_like_eager(case):
    torch.manual_seed(0)
    model = case().eval()
    compiled = compiler.compile_module(model, _inputs(case), {"cuda_graphs": False})
    fresh = _inputs(case)
    with torch.no_grad():
        torch.testing.assert_close(compiled(*fresh), model(*fresh))


@pytest.mark.parametrize("case", [ComputedMask, GatheredMask, PermutedQuery])
def test_attention_operands_are_dense_in_their_last_dim(case, monkeypatch):
    seen = _spy_attention(monkeypatch)
    _compiled_like_eager(case)
    assert seen, "the compiled module called no attention"
    for strides in seen:
        assert all(s[-1] == 1 for s in strides), strides


def test_a_mask_the_same_for_every_batch_row_is_stored_once(monkeypatch):
    seen = _spy_attention(monkeypatch)
    _compiled_like_eager(BatchBroadcastMask)
    (strides,) = seen
    q, mask = strides[0], strides[3]
    assert q[-1] == 1 and mask == (0, 256, 16, 1), strides


def test_a_mask_constant_along_the_keys_keeps_its_last_dim_dense(monkeypatch):
    seen = _spy_attention(monkeypatch)
    _compiled_like_eager(QueryOnlyMask)
    (strides,) = seen
    assert strides[3][0] == 0 and strides[3][-1] == 1, strides


class IndexMask(torch.nn.Module):
    """A bool mask built from positions, as export traces transformers' masks:
    ``arange(n) + offset`` compared with ``bound``, expanded to (batch, 1, q, k)."""
    def __init__(self, offset: int, bound: int, causal: bool = False):
        super().__init__()
        self.offset, self.bound, self.causal = offset, bound, causal

    def forward(self, q, k, v):
        n = q.shape[2]
        keys = torch.arange(n, device=q.device) + self.offset
        mask = (keys >= self.bound)[None, None, None, :].expand(q.shape[0], 1, n, n)
        if self.causal:
            mask = mask & (keys[None, :] <= torch.arange(n, device=q.device)[:, None])
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _masks_passed(monkeypatch, model) -> list:
    """How many masks the compiled module hands torch's attention per call (checked against
    eager on fresh inputs)."""
    passed, real = [], host.extern_op

    def spying(name, *a, **kw):
        call = real(name, *a, **kw)

        def spy(*args, **kwargs):
            passed.append(sum(isinstance(t, torch.Tensor) for t in
                              (*args[3:4], kwargs.get("attn_mask"))))
            return call(*args, **kwargs)
        return spy if name == SDPA else call
    monkeypatch.setattr(host, "extern_op", spying)
    inputs = [torch.randn(2, 4, 16, 8) for _ in range(3)]
    compiled = compiler.compile_module(model, inputs, {"cuda_graphs": False})
    fresh = [torch.randn(2, 4, 16, 8) for _ in range(3)]
    with torch.no_grad():
        torch.testing.assert_close(compiled(*fresh), model(*fresh))
    return passed


def test_a_mask_that_masks_nothing_is_not_passed(monkeypatch):
    """arange(n) >= 0 holds everywhere: torch gets no mask, so its flash kernel can run."""
    assert _masks_passed(monkeypatch, IndexMask(offset=0, bound=0)) == [0]
    assert _masks_passed(monkeypatch, IndexMask(offset=3, bound=2)) == [0]


@pytest.mark.parametrize("model", [IndexMask(offset=0, bound=1),
                                   IndexMask(offset=0, bound=0, causal=True)],
                         ids=["first_key_masked", "causal"])
def test_a_mask_that_masks_something_is_passed(monkeypatch, model):
    assert _masks_passed(monkeypatch, model) == [1]


class SharedBias(torch.nn.Module):
    """T5's pattern: one position bias, gathered from an embedding and permuted, handed to
    two attention layers (export records a clone of it per layer)."""
    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Embedding(32, 4)

    def forward(self, q, k, v, buckets):
        bias = self.bias(buckets).permute(2, 0, 1).unsqueeze(0)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.clone())
        return F.scaled_dot_product_attention(x, k, v, attn_mask=bias.clone())


def test_a_mask_shared_by_two_attentions_is_computed_once(monkeypatch):
    """Before: each attention realized its own copy (T5-small: six bias kernels a call)."""
    seen = []
    real = host.extern_op

    def spying(name, *a, **kw):
        call = real(name, *a, **kw)

        def spy(*args, **kwargs):
            seen.append(args[3].data_ptr())
            return call(*args, **kwargs)
        return spy if name == SDPA else call
    monkeypatch.setattr(host, "extern_op", spying)
    torch.manual_seed(0)
    model, inputs = SharedBias().eval(), _inputs(GatheredMask)
    compiled = compiler.compile_module(model, inputs, {"cuda_graphs": False})
    fresh = _inputs(GatheredMask)
    with torch.no_grad():
        torch.testing.assert_close(compiled(*fresh), model(*fresh))
    assert len(seen) == 2 and seen[0] == seen[1]
    art = compiler.lower(compiled.captured, target="cuda")
    assert len(art.kernels) == 1, [k.name for k in art.kernels]   # the bias, gathered once
