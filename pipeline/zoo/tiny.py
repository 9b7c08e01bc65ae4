"""The tiny zoo: small models defined in the repo, for CI and for trying kiln on a laptop.

Every factory returns ``(module, example_args)`` with the module in eval mode on CPU in
float32, built under a fixed seed (the caller's RNG state is left untouched), so two calls
give identical weights and inputs, hence identical graphs and kernels. Example inputs are
random, never zeros (DESIGN.md: never test or time on zeros).

Example:
    >>> module, (x,) = mlp()
    >>> module(x).shape
    torch.Size([8, 64])
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Example = tuple[nn.Module, tuple[torch.Tensor, ...]]


def _seeded(seed: int, build: Callable[[], Example]) -> Example:
    """Run ``build`` under ``seed`` without disturbing the global RNG of the caller."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module, args = build()
    return module.eval(), args


class MLP(nn.Module):
    """Linear → LayerNorm → GELU → Linear: the fused LayerNorm+GELU is the interesting part."""

    def __init__(self, features: int = 64, hidden: int = 128):
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.norm(self.fc1(x))))


def mlp(batch: int = 8, features: int = 64, hidden: int = 128) -> Example:
    """An MLP on ``(batch, features)`` inputs.

    >>> mlp(batch=2)[1][0].shape
    torch.Size([2, 64])
    """
    return _seeded(0, lambda: (MLP(features, hidden), (torch.randn(batch, features),)))


class ConvNet(nn.Module):
    """Two conv → BatchNorm → ReLU → max-pool blocks, global average pool, a classifier."""

    def __init__(self, channels: int = 3, width: int = 16, classes: int = 10):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                                 nn.ReLU(), nn.MaxPool2d(2))

        self.features = nn.Sequential(block(channels, width), block(width, 2 * width))
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def convnet(batch: int = 2, size: int = 32) -> Example:
    """A small conv net on ``(batch, 3, size, size)`` images; BatchNorm in eval mode.

    >>> convnet()[0](convnet()[1][0]).shape
    torch.Size([2, 10])
    """
    def build() -> Example:
        net = ConvNet()
        # Non-trivial running statistics, so eval-mode BatchNorm is not the identity.
        for bn in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 1.5)
        return net, (torch.randn(batch, 3, size, size),)
    return _seeded(1, build)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + attn(ln(x)), then x + mlp(ln(x)); attention through SDPA."""

    def __init__(self, dim: int = 64, heads: int = 4, mlp_ratio: int = 4):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, mlp_ratio * dim), nn.Linear(mlp_ratio * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (t.reshape(b, s, self.heads, d // self.heads).transpose(1, 2)
                   for t in (q, k, v))
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, s, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


def transformer_block(batch: int = 2, seq: int = 16, dim: int = 64, heads: int = 4) -> Example:
    """One causal transformer block on ``(batch, seq, dim)`` activations.

    >>> transformer_block()[1][0].shape
    torch.Size([2, 16, 64])
    """
    return _seeded(2, lambda: (TransformerBlock(dim, heads), (torch.randn(batch, seq, dim),)))


class DataDependentBranch(nn.Module):
    """Branches in Python on a tensor's value, which torch.export cannot trace."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x - 1


def not_exportable(batch: int = 4, features: int = 8) -> Example:
    """A model whose export fails (data-dependent control flow): a capture failure on purpose.

    >>> m, (x,) = not_exportable()
    >>> m(x).shape  # runs eagerly; only export fails
    torch.Size([4, 8])
    """
    return _seeded(3, lambda: (DataDependentBranch(), (torch.randn(batch, features),)))
