"""Held-out models (issue 15): architectures nobody tuned kiln for, from timm and transformers.

Random weights under a fixed seed (nothing is downloaded); random inputs, never zeros. timm is
installed on the GPU machine only, and transformers is the ``zoo`` extra: a factory whose
library is missing raises ``MissingLibrary`` (an ImportError naming the package), which
``kiln bench`` records as a skipped model with that message.

| factory           | library      | model                               | input            |
|-------------------|--------------|-------------------------------------|------------------|
| resnet50          | timm         | ``resnet50``                        | b32, 224x224     |
| efficientnet_b0   | timm         | ``efficientnet_b0``                 | b64, 224x224     |
| deit_small        | timm         | ``deit_small_patch16_224``          | b64, 224x224     |
| mobilenetv3_large | timm         | ``mobilenetv3_large_100``           | b64, 224x224     |
| densenet121       | timm         | ``densenet121``                     | b32, 224x224     |
| convnext_tiny     | timm         | ``convnext_tiny``                   | b32, 224x224     |
| bert_4layer       | transformers | ``BertModel``, 4 layers, base width | 16 x 256 tokens  |
| t5_encoder        | transformers | ``T5EncoderModel``, 6 layers (small) | 16 x 256 tokens |
| swin_tiny         | timm         | ``swin_tiny_patch4_window7_224``    | b32, 224x224     |
| gpt2_lm           | transformers | ``GPT2LMHeadModel`` (small), KV cache out | 16 x 256 tokens |
| llama_lm          | transformers | ``LlamaForCausalLM``, 4 layers, 2048 wide, GQA, cache out | 4 x 256 |

The last three are issue 13's: Swin's shifted windows, and decoders whose output holds
transformers' ``DynamicCache`` (``configs/zoo-thirdparty.toml`` runs all eleven).

Example:
    >>> try:
    ...     _library("no_such_library_kiln", "m")
    ... except MissingLibrary as exc:
    ...     print(exc)
    model m needs no_such_library_kiln, which is not installed here (pip install no_such_library_kiln)
"""
from __future__ import annotations

import importlib
from typing import Any

import torch

Example = tuple[torch.nn.Module, tuple[torch.Tensor, ...]]


class MissingLibrary(ImportError):
    """The model's library is not installed: the model is skipped, not failed."""


def _library(name: str, model: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise MissingLibrary(f"model {model} needs {name}, which is not installed here "
                             f"(pip install {name})", name=name) from exc


def _timm(name: str, batch: int, image: int) -> Example:
    timm = _library("timm", name)
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    return model, (torch.randn(batch, 3, image, image),)


def resnet50(batch: int = 32, image: int = 224) -> Example:
    return _timm("resnet50", batch, image)


def efficientnet_b0(batch: int = 64, image: int = 224) -> Example:
    return _timm("efficientnet_b0", batch, image)


def deit_small(batch: int = 64, image: int = 224) -> Example:
    return _timm("deit_small_patch16_224", batch, image)


def mobilenetv3_large(batch: int = 64, image: int = 224) -> Example:
    return _timm("mobilenetv3_large_100", batch, image)


def densenet121(batch: int = 32, image: int = 224) -> Example:
    return _timm("densenet121", batch, image)


def convnext_tiny(batch: int = 32, image: int = 224) -> Example:
    return _timm("convnext_tiny", batch, image)


def _transformers(model: str, config: str, name: str, batch: int, seq: int,
                  **kwargs: Any) -> Example:
    transformers = _library("transformers", name)
    torch.manual_seed(0)
    cfg = getattr(transformers, config)(**kwargs)
    module = getattr(transformers, model)(cfg).eval()
    return module, (torch.randint(3, cfg.vocab_size, (batch, seq)),)


def bert_4layer(batch: int = 16, seq: int = 256, layers: int = 4, **config: Any) -> Example:
    """transformers' BertModel at BERT-base width with ``layers`` layers, or as ``config``
    (BertConfig fields) says."""
    return _transformers("BertModel", "BertConfig", "bert_4layer", batch, seq,
                         **{"num_hidden_layers": layers, **config})


def t5_encoder(batch: int = 16, seq: int = 256, layers: int = 6) -> Example:
    """transformers' T5EncoderModel at t5-small size (``layers`` layers)."""
    return _transformers("T5EncoderModel", "T5Config", "t5_encoder", batch, seq,
                         num_layers=layers)


def swin_tiny(batch: int = 32, image: int = 224) -> Example:
    return _timm("swin_tiny_patch4_window7_224", batch, image)


def gpt2_lm(batch: int = 16, seq: int = 256, **config: Any) -> Example:
    """transformers' GPT2LMHeadModel at GPT-2 small size, or as ``config`` (GPT2Config
    fields) says; its output holds the KV cache."""
    return _transformers("GPT2LMHeadModel", "GPT2Config", "gpt2_lm", batch, seq, **config)


def llama_lm(batch: int = 4, seq: int = 256, layers: int = 4, **config: Any) -> Example:
    """transformers' LlamaForCausalLM, 2048 wide with grouped-query attention (32 heads,
    4 KV heads), ``layers`` layers, each overridable by ``config`` (LlamaConfig fields); its
    output holds the KV cache."""
    sizes = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632,
                 num_attention_heads=32, num_key_value_heads=4)
    return _transformers("LlamaForCausalLM", "LlamaConfig", "llama_lm", batch, seq,
                         **{**sizes, "num_hidden_layers": layers, **config})
