"""Whole text networks, defined in the repo: BERT-base, GPT-2 small and a Llama-style stack.

transformers is not installed where kiln runs, so the architectures are written here as HF
defines them (eager attention paths), with random weights under a fixed seed (the caller's RNG
is left alone) and random token ids, never zeros. Every factory takes ``batch``, ``seq`` and
``layers`` (the real depth by default; tests pass fewer) and returns ``(module.eval(), args)``
on CPU in float32; token ids and masks are int64 and stay so when the pipeline casts.

| factory      | what it is                                                               |
|--------------|--------------------------------------------------------------------------|
| bert_base    | HF ``BertModel``: word + position + token-type embeddings, LayerNorm,     |
|              | 12 post-LN layers (``blocks.BertLayer``, additive padding mask), tanh     |
|              | pooler on the first token; returns (sequence output, pooled)              |
| gpt2_small   | HF ``GPT2LMHeadModel``: token + position embeddings, 12 pre-LN blocks     |
|              | with causal SDPA and tanh GELU, final LayerNorm, LM head tied to the     |
|              | token embedding (logits over 50257 tokens)                                |
| llama_small  | a Llama-architecture stack: RMSNorm, rotary position embedding (HF's     |
|              | rotate-half form), grouped-query causal attention (16 query / 4 KV heads),|
|              | SwiGLU MLP, untied LM head; 8 layers of width 1024, vocab 32000          |

Example:
    >>> model, (ids,) = gpt2_small(batch=1, seq=8, layers=1)
    >>> model(ids).shape
    torch.Size([1, 8, 50257])
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.zoo.blocks import BertLayer, Example, _padding_mask, _seeded


def _token_ids(batch: int, seq: int, vocab: int) -> torch.Tensor:
    # From 1: token 0 is padding in most vocabularies.
    return torch.randint(1, vocab, (batch, seq))


# ============================================================================ BERT-base
class Bert(nn.Module):
    """HF ``BertModel`` (absolute positions, token type 0 for every token, eval mode)."""

    def __init__(self, layers: int = 12, hidden: int = 768, heads: int = 12,
                 intermediate: int = 3072, vocab: int = 30522, positions: int = 512):
        super().__init__()
        self.word = nn.Embedding(vocab, hidden, padding_idx=0)
        self.position = nn.Embedding(positions, hidden)
        self.token_type = nn.Embedding(2, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.layers = nn.ModuleList(BertLayer(hidden, heads, intermediate)
                                    for _ in range(layers))
        self.pooler = nn.Linear(hidden, hidden)

    def forward(self, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seq = input_ids.shape[1]
        positions = torch.arange(seq, device=input_ids.device)
        x = self.word(input_ids) + self.position(positions)[None] + self.token_type.weight[0]
        x = self.norm(x)
        for layer in self.layers:
            x = layer(x, attention_mask)
        return x, torch.tanh(self.pooler(x[:, 0]))


def bert_base(batch: int = 16, seq: int = 256, layers: int = 12) -> Example:
    """BERT-base on ``(batch, seq)`` token ids plus a padding mask (1 = token, 0 = padding).

    >>> sum(p.numel() for p in bert_base(1, 8)[0].parameters())   # HF bert-base-uncased
    109482240
    """
    return _seeded(30, lambda: (Bert(layers), (_token_ids(batch, seq, 30522),
                                              _padding_mask(batch, seq))))


# ============================================================================ GPT-2 small
class GPT2Layer(nn.Module):
    """HF ``GPT2Block`` without a cache: pre-LN causal self-attention, pre-LN tanh-GELU MLP."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.c_attn, self.c_proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.c_fc, self.mlp_proj = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (t.view(b, s, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(attn.transpose(1, 2).reshape(b, s, d))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT2(nn.Module):
    def __init__(self, layers: int = 12, dim: int = 768, heads: int = 12, vocab: int = 50257,
                 positions: int = 1024):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, dim), nn.Embedding(positions, dim)
        self.h = nn.ModuleList(GPT2Layer(dim, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.wte(input_ids) + self.wpe(positions)[None]
        for layer in self.h:
            x = layer(x)
        return F.linear(self.ln_f(x), self.wte.weight)     # LM head tied to wte


def gpt2_small(batch: int = 16, seq: int = 256, layers: int = 12) -> Example:
    """GPT-2 small (124 M parameters) on ``(batch, seq)`` token ids; returns logits.

    >>> sum(p.numel() for p in gpt2_small(1, 8)[0].parameters())   # HF gpt2
    124439808
    """
    return _seeded(31, lambda: (GPT2(layers), (_token_ids(batch, seq, 50257),)))


# ============================================================================ Llama-style
class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, computed in float32 as HF's ``LlamaRMSNorm``."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim).uniform_(0.5, 1.5))  # not the identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LlamaLayer(nn.Module):
    """Pre-RMSNorm grouped-query attention with rotary embeddings, then a SwiGLU MLP."""

    def __init__(self, dim: int, heads: int, kv_heads: int, ffn: int):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)
        self.gate, self.up = nn.Linear(dim, ffn, bias=False), nn.Linear(dim, ffn, bias=False)
        self.down = nn.Linear(ffn, dim, bias=False)
        self.attn_norm, self.mlp_norm = RMSNorm(dim), RMSNorm(dim)

    def _split(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        b, s, _ = x.shape
        return x.view(b, s, heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        h = self.attn_norm(x)
        q = self._split(self.q_proj(h), self.heads)
        k = self._split(self.k_proj(h), self.kv_heads)
        v = self._split(self.v_proj(h), self.kv_heads)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        groups = self.heads // self.kv_heads      # HF's repeat_kv
        k, v = (t.repeat_interleave(groups, dim=1) for t in (k, v))
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o_proj(attn.transpose(1, 2).reshape(b, s, d))
        h = self.mlp_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Llama(nn.Module):
    def __init__(self, layers: int = 8, dim: int = 1024, heads: int = 16, kv_heads: int = 4,
                 ffn: int = 2816, vocab: int = 32000, max_len: int = 2048,
                 theta: float = 10000.0):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(LlamaLayer(dim, heads, kv_heads, ffn) for _ in range(layers))
        self.norm = RMSNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        head_dim = dim // heads
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
        angles = torch.outer(torch.arange(max_len).float(), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)        # HF's (freqs, freqs) layout
        self.register_buffer("cos_cached", angles.cos(), persistent=False)
        self.register_buffer("sin_cached", angles.sin(), persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[1]
        x = self.embed(input_ids)
        cos = self.cos_cached[:seq].to(x.dtype)
        sin = self.sin_cached[:seq].to(x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))


def llama_small(batch: int = 16, seq: int = 256, layers: int = 8) -> Example:
    """A Llama-architecture model (about 156 M parameters at 8 layers) on ``(batch, seq)`` token ids.

    >>> model, (ids,) = llama_small(batch=1, seq=8, layers=1)
    >>> model(ids).shape
    torch.Size([1, 8, 32000])
    """
    return _seeded(32, lambda: (Llama(layers), (_token_ids(batch, seq, 32000),)))


MODELS = {"bert_base": bert_base, "gpt2_small": gpt2_small, "llama_small": llama_small}
