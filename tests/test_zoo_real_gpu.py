"""timm and transformers models at real size on the GPU, bfloat16, against eager (``gpu``).

Each model (random weights: no downloads) is compiled twice, with CUDA graphs on and off
(option ``cuda_graphs``), and called twice on fresh inputs (a replayed graph must not
return the first call's values). Every output leaf's relative error
``||got - ref|| / ||ref||`` against eager float32 on the same rounded weights and inputs must
be within ``BF16_REL_TOL`` or twice eager bfloat16's own error. Prints per model and mode:
kernels, fallbacks, errors. timm cases skip without timm, transformers cases without
transformers (the ``zoo`` extra); all skip without CUDA.
"""
from __future__ import annotations

import copy
import warnings
from typing import Any, Callable

import pytest
import torch
import torch.utils._pytree as pytree

import compiler

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
              pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]

BF16_REL_TOL = 3e-2
TIMM = ["resnet50", "efficientnet_b0", "mobilenetv3_large_100", "densenet121",
        "convnext_tiny", "deit_small_patch16_224", "swin_tiny_patch4_window7_224"]


def _timm(name: str) -> tuple[torch.nn.Module, dict]:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False).eval(), {
        "x": torch.randn(8, 3, 224, 224)}


def _tokens(batch: int, seq: int, vocab: int) -> dict:
    return {"input_ids": torch.randint(3, vocab, (batch, seq))}


def _transformers(model: str, config: str, inputs: Callable[[Any], dict], **kwargs):
    def build():
        transformers = pytest.importorskip("transformers")
        torch.manual_seed(0)
        cfg = getattr(transformers, config)(**kwargs)
        return getattr(transformers, model)(cfg).eval(), inputs(cfg)
    return build


TRANSFORMERS = {
    "bert-base": _transformers("BertModel", "BertConfig",
                               lambda c: _tokens(8, 128, c.vocab_size)),
    "gpt2-small": _transformers("GPT2LMHeadModel", "GPT2Config",
                                lambda c: _tokens(4, 128, c.vocab_size)),
    "llama-1b-ish": _transformers(
        "LlamaForCausalLM", "LlamaConfig", lambda c: _tokens(2, 128, c.vocab_size),
        vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=4,
        num_attention_heads=32, num_key_value_heads=4),
    "t5-small-encoder": _transformers("T5EncoderModel", "T5Config",
                                      lambda c: _tokens(8, 128, c.vocab_size)),
    "vit-base": _transformers("ViTModel", "ViTConfig",
                              lambda c: {"pixel_values": torch.randn(8, 3, 224, 224)}),
    "swin-tiny": _transformers("SwinModel", "SwinConfig",
                               lambda c: {"pixel_values": torch.randn(8, 3, 224, 224)}),
}


def _bf16(inputs: dict) -> dict:
    return {k: (v.to("cuda", torch.bfloat16) if v.is_floating_point() else v.to("cuda"))
            for k, v in inputs.items()}


def _fresh(inputs: dict, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=gen) if v.is_floating_point()
                else torch.randint(3, int(v.max()) + 1, v.shape, generator=gen))
            for k, v in inputs.items()}


def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-12)).item()


def _check(name: str, module: torch.nn.Module, inputs: dict, cuda_graphs: bool) -> None:
    model = module.to("cuda", torch.bfloat16)
    reference = copy.deepcopy(model).float()      # float32 on the same rounded weights
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = compiler.compile_module(model, (), example_kwargs=_bf16(inputs),
                                           options={"cuda_graphs": cuda_graphs})
    worst = []
    for seed in (1, 2):
        fresh = _bf16(_fresh(inputs, seed))
        with torch.no_grad():
            got, eager = compiled(**fresh), model(**fresh)
            ref = reference(**{k: (v.float() if v.is_floating_point() else v)
                               for k, v in fresh.items()})
        for k, (g, e, r) in enumerate(zip(pytree.tree_leaves(got), pytree.tree_leaves(eager),
                                          pytree.tree_leaves(ref))):
            err, eager_err = _rel_err(g, r), _rel_err(e, r)
            assert torch.isfinite(g.float()).all(), f"{name}: non-finite output leaf {k}"
            bound = max(BF16_REL_TOL, 2 * eager_err)
            assert err <= bound, f"{name} leaf {k}: rel err {err:.2e} > {bound:.1e}"
            worst.append((err, eager_err))
    err, eager_err = max(worst)
    print(f"\n{name} bf16 cuda_graphs={cuda_graphs}: kernels={compiled.kernel_count} "
          f"fallbacks={list(compiled.fallback_ops)} rel_err={err:.2e} (eager {eager_err:.2e})")


@pytest.mark.parametrize("cuda_graphs", [True, False], ids=["graphs", "no-graphs"])
@pytest.mark.parametrize("name", TIMM)
def test_timm_bf16_like_eager(name, cuda_graphs):
    module, inputs = _timm(name)
    _check(name, module, inputs, cuda_graphs)


@pytest.mark.parametrize("cuda_graphs", [True, False], ids=["graphs", "no-graphs"])
@pytest.mark.parametrize("name", list(TRANSFORMERS))
def test_transformers_bf16_like_eager(name, cuda_graphs):
    module, inputs = TRANSFORMERS[name]()
    _check(name, module, inputs, cuda_graphs)
