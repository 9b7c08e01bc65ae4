"""Real architectures, a few blocks deep: the zoo issue 3 checks kiln against (eager, Inductor).

Each factory takes ``size`` ("tiny" | "mid" | "bench") and returns ``(module.eval(), args)``
on CPU in float32, built under a fixed seed (the caller's RNG is left alone), so two calls
give identical weights, inputs, graphs and kernels. Weights are random (nothing downloaded);
BatchNorm running statistics and ConvNeXt layer scales are drawn away from their trivial
initial values so no branch of a model is the identity. Inputs are random, never zeros.

    "tiny"   runs on CPU through Triton's interpreter in a second or two (CI)
    "mid"    a GPU test size: small batch, realistic channel counts
    "bench"  the realistic sizes the benchmark times: batch 32 at 224x224 for vision,
             batch 16 x 256 tokens for text

| factory             | what it is                                                         |
|---------------------|--------------------------------------------------------------------|
| resnet_bottleneck   | ResNet-50 stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool), its layer1 |
|                     | (3 bottlenecks, 64->256) and layer2's first (strided) bottleneck,  |
|                     | global average pool, linear head; BatchNorm in inference mode     |
| mobilenet_block     | MobileNetV3-Large-style: 3x3/2 stem + BN + hardswish, 4 inverted   |
|                     | residuals (depthwise 3x3/5x5, ReLU or hardswish, squeeze-excite    |
|                     | with hardsigmoid), 1x1 head conv, pool, 2-layer classifier        |
| convnext_block      | ConvNeXt-T stage 1: 4x4/4 patchify stem + LayerNorm, 3 blocks of   |
|                     | depthwise 7x7 -> channels-last LayerNorm -> MLP (GELU) -> layer    |
|                     | scale -> residual, pooled LayerNorm head                          |
| vit_block           | ViT-B/16 front: 16x16 patch embedding, class token, position       |
|                     | embedding, 2 pre-LN encoder blocks (SDPA attention, GELU MLP),     |
|                     | final LayerNorm, linear head on the class token                   |
| bert_layer          | one BERT-base encoder layer (post-LN), attention written out       |
|                     | (matmul, additive padding mask, softmax) as HF's eager path does   |
| gpt2_block          | one GPT-2 block (pre-LN, tanh GELU) with a static KV cache held in |
|                     | buffers, written in forward by ``index_copy_`` at ``cache_position``|
|                     | and attended through SDPA with a boolean mask (HF StaticCache)    |
| gpt2_block_dynamic  | the same block exported with dynamic batch and sequence length;   |
|                     | returns ``(module, args, dynamic_shapes)``                        |

Example:
    >>> model, (x,) = resnet_bottleneck("tiny")
    >>> model(x).shape
    torch.Size([2, 10])
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

Example = tuple[nn.Module, tuple[torch.Tensor, ...]]
SIZES = ("tiny", "mid", "bench")


def _seeded(seed: int, build: Callable[[], Example]) -> Example:
    """Run ``build`` under ``seed`` without disturbing the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module, args = build()
    return module.eval(), args


def _pick(size: str, table: dict[str, Any]) -> Any:
    if size not in table:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    return table[size]


def _randomize_norm_stats(module: nn.Module) -> None:
    """Non-trivial BatchNorm statistics and affine parameters (eval BN is not the identity)."""
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.2, 0.2)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout)]


# ============================================================================ ResNet
class Bottleneck(nn.Module):
    """torchvision's ResNet-50 bottleneck (v1.5: stride on the 3x3 conv)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        cout = planes * self.expansion
        self.conv1, self.bn1 = _conv_bn(cin, planes, 1)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3, stride)
        self.conv3, self.bn3 = _conv_bn(planes, cout, 1)
        self.downsample = (nn.Sequential(*_conv_bn(cin, cout, 1, stride))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNetFront(nn.Module):
    """Stem, ``layer1`` (``blocks`` bottlenecks), the first block of ``layer2``, pooled head."""

    def __init__(self, stem: int, blocks: int, classes: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 7, 2, 3, bias=False), nn.BatchNorm2d(stem),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], stem
        for _ in range(blocks):
            layers.append(Bottleneck(cin, stem))
            cin = stem * Bottleneck.expansion
        layers.append(Bottleneck(cin, 2 * stem, stride=2))
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(2 * stem * Bottleneck.expansion, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnet_bottleneck(size: str = "tiny") -> Example:
    """ResNet-50's stem + layer1 + first layer2 block. bench: (32, 3, 224, 224), stem 64.

    >>> resnet_bottleneck("tiny")[1][0].shape
    torch.Size([2, 3, 16, 16])
    """
    batch, image, stem, blocks, classes = _pick(size, {
        "tiny": (2, 16, 8, 2, 10), "mid": (4, 64, 32, 2, 100), "bench": (32, 224, 64, 3, 1000)})

    def build() -> Example:
        net = ResNetFront(stem, blocks, classes)
        _randomize_norm_stats(net)
        return net, (torch.randn(batch, 3, image, image),)
    return _seeded(10, build)


# ============================================================================ MobileNet
class SqueezeExcite(nn.Module):
    """MobileNetV3 squeeze-excite: pool, 1x1 reduce, ReLU, 1x1 expand, hardsigmoid, scale."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))


class InvertedResidual(nn.Module):
    """1x1 expand -> depthwise kxk -> (SE) -> 1x1 project, residual when shapes allow."""

    def __init__(self, cin: int, kernel: int, expand: int, cout: int, se: bool, act: str,
                 stride: int):
        super().__init__()
        act_layer = nn.Hardswish if act == "HS" else nn.ReLU
        layers: list[nn.Module] = []
        if expand != cin:
            layers += [*_conv_bn(cin, expand, 1), act_layer()]
        layers += [*_conv_bn(expand, expand, kernel, stride, groups=expand), act_layer()]
        if se:
            layers.append(SqueezeExcite(expand, _make_divisible(expand // 4, 8)))
        layers += _conv_bn(expand, cout, 1)
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


def _make_divisible(v: float, divisor: int) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class MobileNetFront(nn.Module):
    def __init__(self, stem: int, config: list[tuple], head: int, hidden: int, classes: int):
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, stem, 3, 2), nn.Hardswish())
        blocks, cin = [], stem
        for kernel, expand, cout, se, act, stride in config:
            blocks.append(InvertedResidual(cin, kernel, expand, cout, se, act, stride))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(*_conv_bn(cin, head, 1), nn.Hardswish())
        self.classifier = nn.Sequential(nn.Linear(head, hidden), nn.Hardswish(),
                                        nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# (kernel, expand, out, squeeze-excite, activation, stride), MobileNetV3-Large rows 2, 4, 7, 11
_MBV3_BENCH = [(3, 64, 24, False, "RE", 2), (5, 72, 40, True, "RE", 2),
               (3, 240, 80, False, "HS", 2), (3, 480, 112, True, "HS", 1)]
_MBV3_TINY = [(3, 16, 8, False, "RE", 2), (5, 24, 16, True, "RE", 2),
              (3, 32, 16, False, "HS", 1), (3, 48, 24, True, "HS", 1)]


def mobilenet_block(size: str = "tiny") -> Example:
    """MobileNetV3-style front. bench: (32, 3, 224, 224), stem 16, 4 blocks to 112 channels.

    >>> mobilenet_block("tiny")[0](mobilenet_block("tiny")[1][0]).shape
    torch.Size([2, 10])
    """
    batch, image, stem, config, head, hidden, classes = _pick(size, {
        "tiny": (2, 16, 8, _MBV3_TINY, 48, 32, 10),
        "mid": (4, 64, 16, _MBV3_BENCH, 672, 256, 100),
        "bench": (32, 224, 16, _MBV3_BENCH, 672, 1280, 1000)})

    def build() -> Example:
        net = MobileNetFront(stem, config, head, hidden, classes)
        _randomize_norm_stats(net)
        return net, (torch.randn(batch, 3, image, image),)
    return _seeded(11, build)


# ============================================================================ ConvNeXt
class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over channels of an NCHW tensor, by permuting to channels-last (as timm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """dwconv 7x7 -> NHWC -> LayerNorm -> Linear 4x -> GELU -> Linear -> gamma -> NCHW -> + x."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        # Trained with layer scale initialised to 1e-6; a trained model's gammas are far from
        # that, and at 1e-6 the block would be the identity and hide any error in it.
        self.gamma = nn.Parameter(torch.empty(dim).uniform_(0.5, 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class ConvNeXtFront(nn.Module):
    def __init__(self, dim: int, depth: int, classes: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 4, 4), LayerNorm2d(dim, eps=1e-6))
        self.blocks = nn.Sequential(*(ConvNeXtBlock(dim) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(self.norm(x.mean(dim=(2, 3))))


def convnext_block(size: str = "tiny") -> Example:
    """ConvNeXt-T stage 1 (3 blocks at dim 96). bench: (32, 3, 224, 224) -> 56x56x96.

    >>> convnext_block("tiny")[1][0].shape
    torch.Size([2, 3, 16, 16])
    """
    batch, image, dim, depth, classes = _pick(size, {
        "tiny": (2, 16, 16, 2, 10), "mid": (4, 64, 96, 3, 100), "bench": (32, 224, 96, 3, 1000)})
    return _seeded(12, lambda: (ConvNeXtFront(dim, depth, classes),
                                (torch.randn(batch, 3, image, image),)))


# ============================================================================ ViT
class ViTBlock(nn.Module):
    """Pre-LN encoder block: x + proj(SDPA(qkv(ln1 x))), then x + fc2(GELU(fc1(ln2 x)))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, mlp_ratio * dim), nn.Linear(mlp_ratio * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViTFront(nn.Module):
    def __init__(self, image: int, patch: int, dim: int, heads: int, depth: int, classes: int):
        super().__init__()
        tokens = (image // patch) ** 2 + 1
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, tokens, dim))
        self.blocks = nn.Sequential(*(ViTBlock(dim, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def vit_block(size: str = "tiny") -> Example:
    """ViT-B/16 front, 2 blocks. bench: (32, 3, 224, 224) -> 197 tokens of 768, 12 heads.

    >>> vit_block("tiny")[0](vit_block("tiny")[1][0]).shape
    torch.Size([2, 10])
    """
    batch, image, patch, dim, heads, depth, classes = _pick(size, {
        "tiny": (2, 16, 4, 32, 2, 2, 10), "mid": (4, 64, 16, 384, 6, 2, 100),
        "bench": (32, 224, 16, 768, 12, 2, 1000)})
    return _seeded(13, lambda: (ViTFront(image, patch, dim, heads, depth, classes),
                                (torch.randn(batch, 3, image, image),)))


# ============================================================================ BERT
class BertLayer(nn.Module):
    """HF ``BertLayer`` (eager attention): post-LN attention block, then post-LN GELU MLP.

    ``attention_mask`` is ``(batch, seq)`` int64 with 1 for real tokens and 0 for padding; it
    becomes an additive ``finfo.min`` bias on the scores, as HF's extended attention mask.
    """

    def __init__(self, hidden: int, heads: int, intermediate: int):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.intermediate = nn.Linear(hidden, intermediate)
        self.output = nn.Linear(intermediate, hidden)
        self.out_norm = nn.LayerNorm(hidden, eps=1e-12)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        return x.view(b, s, self.heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        b, s, d = hidden.shape
        q, k, v = (self._heads(f(hidden)) for f in (self.query, self.key, self.value))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        keep = attention_mask[:, None, None, :].to(hidden.dtype)
        bias = (1.0 - keep) * torch.finfo(hidden.dtype).min
        probs = torch.softmax(scores + bias, dim=-1)
        context = torch.matmul(probs, v).permute(0, 2, 1, 3).reshape(b, s, d)
        attn = self.attn_norm(self.attn_out(context) + hidden)
        return self.out_norm(self.output(F.gelu(self.intermediate(attn))) + attn)


def _padding_mask(batch: int, seq: int) -> torch.Tensor:
    """1 for tokens, 0 for padding; every row keeps at least half its tokens."""
    lengths = torch.randint(seq // 2, seq + 1, (batch,))
    lengths[0] = seq
    return (torch.arange(seq)[None, :] < lengths[:, None]).to(torch.int64)


def bert_layer(size: str = "tiny") -> Example:
    """One BERT-base layer. bench: hidden (16, 256, 768) + a (16, 256) padding mask.

    >>> [tuple(a.shape) for a in bert_layer("tiny")[1]]
    [(2, 16, 32), (2, 16)]
    """
    batch, seq, hidden, heads, inter = _pick(size, {
        "tiny": (2, 16, 32, 2, 64), "mid": (4, 64, 768, 12, 3072),
        "bench": (16, 256, 768, 12, 3072)})
    return _seeded(14, lambda: (BertLayer(hidden, heads, inter),
                                (torch.randn(batch, seq, hidden), _padding_mask(batch, seq))))


# ============================================================================ GPT-2
class GPT2Block(nn.Module):
    """HF ``GPT2Block`` (pre-LN, tanh GELU) with a static KV cache (HF ``StaticCache``).

    ``k_cache``/``v_cache`` are ``(max_batch, heads, max_len, head_dim)`` buffers holding
    earlier context (random here: "previous tokens"). ``forward(x, cache_position)`` writes the
    new keys/values at ``cache_position`` with ``index_copy_`` (torch.export functionalizes
    the mutation: the new buffers become outputs kiln writes back), then attends over the
    whole cache with a mask that lets query ``i`` see cache slots ``<= cache_position[i]``.
    A batch smaller than ``max_batch`` uses the first rows of the cache.
    """

    def __init__(self, dim: int, heads: int, max_batch: int, max_len: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.ln_1, self.ln_2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.c_attn, self.c_proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.c_fc, self.mlp_proj = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        shape = (max_batch, heads, max_len, dim // heads)
        self.register_buffer("k_cache", torch.randn(shape))
        self.register_buffer("v_cache", torch.randn(shape))

    def forward(self, x: torch.Tensor, cache_position: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (t.view(b, s, self.heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        k_cache, v_cache = self.k_cache[:b], self.v_cache[:b]
        k_cache.index_copy_(2, cache_position, k)
        v_cache.index_copy_(2, cache_position, v)
        slots = torch.arange(k_cache.shape[2], device=x.device)
        mask = slots[None, :] <= cache_position[:, None]            # (s, max_len), bool
        attn = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=mask)
        x = x + self.c_proj(attn.transpose(1, 2).reshape(b, s, d))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


_GPT2 = {  # batch, seq (new tokens), start position, dim, heads, max_len
    "tiny": (2, 8, 4, 32, 2, 16), "mid": (4, 64, 64, 768, 12, 256),
    "bench": (16, 256, 256, 768, 12, 512)}


def gpt2_block(size: str = "tiny") -> Example:
    """GPT-2 block, KV cache update. bench: x (16, 256, 768) written at slots 256..511 of a
    512-slot cache (the second 256-token chunk of a prompt), cache_position int64 (256,).

    >>> m, (x, pos) = gpt2_block("tiny")
    >>> m(x, pos).shape, pos.tolist()[:3]
    (torch.Size([2, 8, 32]), [4, 5, 6])
    """
    batch, seq, start, dim, heads, max_len = _pick(size, _GPT2)
    return _seeded(15, lambda: (GPT2Block(dim, heads, batch, max_len),
                                (torch.randn(batch, seq, dim), torch.arange(start, start + seq))))


def gpt2_inputs(module: GPT2Block, batch: int, seq: int,
                start: int = 0) -> tuple[torch.Tensor, ...]:
    """Inputs for ``module`` at another (batch, seq): new tokens written from ``start``.

    >>> m, _ = gpt2_block("tiny")
    >>> [tuple(a.shape) for a in gpt2_inputs(m, 1, 3)]
    [(1, 3, 32), (3,)]
    """
    dim = module.c_proj.out_features
    return torch.randn(batch, seq, dim), torch.arange(start, start + seq)


def gpt2_block_dynamic(size: str = "tiny") -> tuple[nn.Module, tuple[torch.Tensor, ...], Any]:
    """The GPT-2 block with batch in [1, max_batch] and sequence in [2, max_len - start]
    dynamic: returns ``(module, args, dynamic_shapes)`` for ``torch.export``. The cache has
    room for the largest batch; the example is a smaller one so that no size is at a bound.

    >>> m, (x, pos), shapes = gpt2_block_dynamic("tiny")
    >>> tuple(x.shape), sorted(shapes)
    ((2, 6, 32), ['cache_position', 'x'])
    """
    batch, seq, start, dim, heads, max_len = _pick(size, _GPT2)
    max_batch = 2 * batch
    batch_dim = torch.export.Dim("batch", min=1, max=max_batch)
    seq_dim = torch.export.Dim("seq", min=2, max=max_len - start)

    def build() -> Example:
        module = GPT2Block(dim, heads, max_batch, max_len)
        return module, (torch.randn(batch, seq - 2, dim), torch.arange(start, start + seq - 2))
    module, args = _seeded(16, build)
    shapes = {"x": {0: batch_dim, 1: seq_dim}, "cache_position": {0: seq_dim}}
    return module, args, shapes


# Factories by name, in the order the tests and the benchmark run them.
MODELS: dict[str, Callable[[str], Example]] = {
    "resnet_bottleneck": resnet_bottleneck,
    "mobilenet_block": mobilenet_block,
    "convnext_block": convnext_block,
    "vit_block": vit_block,
    "bert_layer": bert_layer,
    "gpt2_block": gpt2_block,
}
