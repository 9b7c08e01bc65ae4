"""Whole vision networks, defined in the repo: what torchvision builds, with random weights.

torchvision and timm are not installed where kiln runs (nothing is downloaded either), so the
architectures are written here, layer for layer as torchvision defines them, from the blocks
of ``pipeline.zoo.blocks``. Weights are random under a fixed seed (the caller's RNG is left
alone); BatchNorm statistics are drawn away from their initial values so eval-mode BatchNorm
is not the identity. Inputs are random images, never zeros. Every factory takes ``batch`` and
``image`` (square side) and returns ``(module.eval(), (images,))`` on CPU in float32; the
pipeline casts to the config's dtype.

| factory            | torchvision equivalent      | params  | blocks                          |
|--------------------|-----------------------------|---------|---------------------------------|
| resnet50           | ``resnet50()``              | 25.6 M  | bottlenecks [3, 4, 6, 3]        |
| mobilenet_v3_small | ``mobilenet_v3_small()``    | 2.5 M   | 11 inverted residuals, SE, HS   |
| efficientnet_b0    | ``efficientnet_b0()``       | 5.3 M   | 16 MBConv (SiLU, SE)            |
| convnext_tiny      | ``convnext_tiny()``         | 28.6 M  | ConvNeXt blocks [3, 3, 9, 3]    |
| vit_b16            | ``vit_b_16()``              | 86.6 M  | 12 pre-LN encoder blocks, 768   |
| vit_s16            | timm ``vit_small_patch16``  | 22.1 M  | 12 pre-LN encoder blocks, 384   |

Dropout and stochastic depth are identities in eval mode and are left out.

Example:
    >>> model, (x,) = resnet50(batch=1, image=32)
    >>> model(x).shape
    torch.Size([1, 1000])
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.zoo.blocks import (Bottleneck, ConvNeXtBlock, Example, LayerNorm2d,
                                 MobileNetFront, ViTFront, _conv_bn, _randomize_norm_stats,
                                 _seeded)

CLASSES = 1000


def _images(batch: int, image: int) -> tuple[torch.Tensor]:
    return (torch.randn(batch, 3, image, image),)


def _bn_net(seed: int, make: Callable[[], nn.Module], batch: int, image: int) -> Example:
    """``make()`` with non-trivial BatchNorm statistics, on random images, under ``seed``."""
    def build() -> Example:
        net = make()
        _randomize_norm_stats(net)
        return net, _images(batch, image)
    return _seeded(seed, build)


# ============================================================================ ResNet-50
class ResNet(nn.Module):
    """torchvision's ResNet with bottleneck blocks (v1.5: the stride sits on the 3x3 conv)."""

    def __init__(self, layers: tuple[int, ...] = (3, 4, 6, 3), classes: int = CLASSES):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        stages, cin = [], 64
        for i, blocks in enumerate(layers):
            planes = 64 * 2 ** i
            for j in range(blocks):
                stages.append(Bottleneck(cin, planes, stride=2 if i and not j else 1))
                cin = planes * Bottleneck.expansion
        self.layers = nn.Sequential(*stages)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnet50(batch: int = 32, image: int = 224) -> Example:
    """ResNet-50 on ``(batch, 3, image, image)``; as many parameters as torchvision's.

    >>> sum(p.numel() for p in resnet50(1, 32)[0].parameters())
    25557032
    """
    return _bn_net(20, ResNet, batch, image)


# ============================================================================ MobileNetV3
# (kernel, expand, out, squeeze-excite, activation, stride): torchvision's V3-Small table.
_MBV3_SMALL = [(3, 16, 16, True, "RE", 2), (3, 72, 24, False, "RE", 2),
               (3, 88, 24, False, "RE", 1), (5, 96, 40, True, "HS", 2),
               (5, 240, 40, True, "HS", 1), (5, 240, 40, True, "HS", 1),
               (5, 120, 48, True, "HS", 1), (5, 144, 48, True, "HS", 1),
               (5, 288, 96, True, "HS", 2), (5, 576, 96, True, "HS", 1),
               (5, 576, 96, True, "HS", 1)]


def mobilenet_v3_small(batch: int = 32, image: int = 224) -> Example:
    """MobileNetV3-Small: 16-channel stem, 11 blocks, 576-channel head, 1024 hidden.

    >>> sum(p.numel() for p in mobilenet_v3_small(1, 32)[0].parameters())
    2542856
    """
    return _bn_net(21, lambda: MobileNetFront(16, _MBV3_SMALL, head=576, hidden=1024,
                                              classes=CLASSES), batch, image)


# ============================================================================ EfficientNet-B0
class MBConv(nn.Module):
    """torchvision's MBConv: 1x1 expand (SiLU) -> depthwise kxk (SiLU) -> squeeze-excite
    (SiLU, sigmoid; squeezed to a quarter of the block's *input* channels) -> 1x1 project,
    residual when the shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = cin * expand_ratio
        layers: list[nn.Module] = []
        if hidden != cin:
            layers += [*_conv_bn(cin, hidden, 1), nn.SiLU()]
        layers += [*_conv_bn(hidden, hidden, kernel, stride, groups=hidden), nn.SiLU()]
        self.block = nn.Sequential(*layers)
        squeeze = max(1, cin // 4)
        self.se_reduce, self.se_expand = nn.Conv2d(hidden, squeeze, 1), nn.Conv2d(squeeze,
                                                                                   hidden, 1)
        self.project = nn.Sequential(*_conv_bn(hidden, cout, 1))
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        scale = torch.sigmoid(self.se_expand(F.silu(self.se_reduce(F.adaptive_avg_pool2d(y, 1)))))
        y = self.project(y * scale)
        return x + y if self.use_residual else y


# (expand ratio, kernel, stride, in, out, repeats): the B0 stages.
_B0 = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2),
       (6, 3, 2, 40, 80, 3), (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4),
       (6, 3, 1, 192, 320, 1)]


class EfficientNet(nn.Module):
    def __init__(self, classes: int = CLASSES):
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, 32, 3, 2), nn.SiLU())
        blocks = [MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, ratio)
                  for ratio, kernel, stride, cin, cout, repeats in _B0 for i in range(repeats)]
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(*_conv_bn(320, 1280, 1), nn.SiLU())
        self.fc = nn.Linear(1280, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def efficientnet_b0(batch: int = 32, image: int = 224) -> Example:
    """EfficientNet-B0: 16 MBConv blocks, 1280-channel head.

    >>> sum(p.numel() for p in efficientnet_b0(1, 32)[0].parameters())
    5288548
    """
    return _bn_net(22, EfficientNet, batch, image)


# ============================================================================ ConvNeXt-Tiny
class ConvNeXt(nn.Module):
    """4x4/4 patchify stem + LayerNorm; four stages of ConvNeXt blocks, each stage after the
    first entered through LayerNorm + 2x2/2 conv; pooled LayerNorm head."""

    def __init__(self, depths: tuple[int, ...] = (3, 3, 9, 3),
                 dims: tuple[int, ...] = (96, 192, 384, 768), classes: int = CLASSES):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0], eps=1e-6)]
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            if i:
                layers += [LayerNorm2d(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], dim, 2, 2)]
            layers += [ConvNeXtBlock(dim) for _ in range(depth)]
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.features(x).mean(dim=(2, 3))))


def convnext_tiny(batch: int = 32, image: int = 224) -> Example:
    """ConvNeXt-T: depths (3, 3, 9, 3), widths 96..768.

    >>> sum(p.numel() for p in convnext_tiny(1, 32)[0].parameters())
    28589128
    """
    return _seeded(23, lambda: (ConvNeXt(), _images(batch, image)))


# ============================================================================ ViT
def vit_b16(batch: int = 32, image: int = 224) -> Example:
    """ViT-B/16: 12 blocks of width 768, 12 heads; ``image`` a multiple of 16.

    >>> sum(p.numel() for p in vit_b16(1, 224)[0].parameters())   # torchvision's count
    86567656
    """
    return _seeded(24, lambda: (ViTFront(image, 16, 768, 12, 12, CLASSES),
                                _images(batch, image)))


def vit_s16(batch: int = 32, image: int = 224) -> Example:
    """ViT-S/16: 12 blocks of width 384, 6 heads.

    >>> vit_s16(1, 32)[0].blocks[0].heads
    6
    """
    return _seeded(25, lambda: (ViTFront(image, 16, 384, 6, 12, CLASSES),
                                _images(batch, image)))


MODELS = {"resnet50": resnet50, "mobilenet_v3_small": mobilenet_v3_small,
          "efficientnet_b0": efficientnet_b0, "convnext_tiny": convnext_tiny,
          "vit_b16": vit_b16, "vit_s16": vit_s16}
