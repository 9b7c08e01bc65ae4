"""Real model code: tiny random configs of transformers architectures through
``compile_module`` on CPU (kernels under Triton's interpreter), against eager.

Decoders with their KV cache (GPT-2, Llama, Mistral, Qwen2, Phi, OPT, BLOOM), encoders
(BERT, RoBERTa, DistilBERT, ALBERT, DeBERTa-v2, Funnel, with padding masks), a mixture of
experts (Mixtral), encoder-decoders (T5, BART, Whisper), audio (wav2vec 2.0), vision
transformers (ViT, DeiT, Swin, BEiT), MobileViT and CNNs (ResNet, ConvNeXt). Every output
leaf (logits, hidden states, the caches transformers returns) is compared with eager's on
fresh inputs; each decoder also compiles a decode step with a dynamic-length cache and runs
it at two lengths. Kept small for CI (hidden 32, 1-2 layers, 32x32 images). transformers
comes with the ``test`` extra; skipped without it.
"""
from __future__ import annotations

import copy
import inspect
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch
import torch.utils._pytree as pytree
from torch.export import Dim

import compiler
from compiler.capture_pytree import leaf_shapes

transformers = pytest.importorskip("transformers")
pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]

VOCAB = 96
DECODER = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=4, max_position_embeddings=64)
ENCODER = dict(DECODER)
VIT = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
           num_attention_heads=4, intermediate_size=64)


def _text(gen: torch.Generator, seq: int = 8) -> dict:
    return {"input_ids": torch.randint(3, VOCAB, (2, seq), generator=gen)}


def _padded_text(gen: torch.Generator) -> dict:
    """Two sequences, the second padded: the attention mask matters."""
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 5:] = 0
    return {**_text(gen), "attention_mask": mask}


def _seq2seq(gen: torch.Generator) -> dict:
    return {**_text(gen), "decoder_input_ids": torch.randint(3, VOCAB, (2, 5), generator=gen)}


def _speech_seq2seq(gen: torch.Generator) -> dict:
    """Log-mel features (16 bins, 40 frames) and decoder tokens."""
    return {"input_features": torch.randn(2, 16, 40, generator=gen),
            "decoder_input_ids": torch.randint(3, VOCAB, (2, 5), generator=gen)}


def _audio(gen: torch.Generator) -> dict:
    return {"input_values": torch.randn(2, 800, generator=gen)}


def _image(gen: torch.Generator) -> dict:
    return {"pixel_values": torch.randn(2, 3, 32, 32, generator=gen)}


@dataclass(frozen=True)
class Arch:
    """One architecture: its model class (by name: transformers versions differ), config
    class and arguments, and its inputs (a function of a generator: fresh per call)."""
    model: str
    config: str
    config_kwargs: dict
    inputs: Callable[[torch.Generator], dict]
    decoder: bool = False

    def build(self) -> torch.nn.Module:
        model_cls = getattr(transformers, self.model, None)
        config_cls = getattr(transformers, self.config, None)
        if model_cls is None or config_cls is None:
            pytest.skip(f"this transformers has no {self.model}")
        torch.manual_seed(0)
        return model_cls(config_cls(**self.config_kwargs)).eval()


ARCHS: dict[str, Arch] = {
    "gpt2": Arch("GPT2LMHeadModel", "GPT2Config",
                 dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64),
                 _text, decoder=True),
    "llama": Arch("LlamaForCausalLM", "LlamaConfig", dict(num_key_value_heads=2, **DECODER),
                  _text, decoder=True),
    # no sliding window: transformers' sliding-window cache keeps its length as a Python
    # int, which export specialises, so its decode step cannot have a dynamic length
    "mistral": Arch("MistralForCausalLM", "MistralConfig",
                    dict(num_key_value_heads=2, sliding_window=None, **DECODER),
                    _text, decoder=True),
    "qwen2": Arch("Qwen2ForCausalLM", "Qwen2Config", dict(num_key_value_heads=2, **DECODER),
                  _text, decoder=True),
    "phi": Arch("PhiForCausalLM", "PhiConfig", dict(partial_rotary_factor=0.5, **DECODER),
                _text, decoder=True),
    "opt": Arch("OPTForCausalLM", "OPTConfig",
                dict(vocab_size=VOCAB, hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=32),
                _text, decoder=True),
    # ALiBi: position biases from per-head slopes (repeated over the batch), no positions
    "bloom": Arch("BloomForCausalLM", "BloomConfig",
                  dict(vocab_size=VOCAB, hidden_size=32, n_layer=2, n_head=4), _text,
                  decoder=True),
    # mixture of experts: top-k routing, sorted and histogrammed tokens, transformers' own
    # grouped-matmul op
    "mixtral": Arch("MixtralForCausalLM", "MixtralConfig",
                    dict(num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                         sliding_window=None, **DECODER), _text, decoder=True),
    "bert": Arch("BertModel", "BertConfig", ENCODER, _padded_text),
    # pooling between blocks shortens the sequence (and its mask) mid-model
    "funnel": Arch("FunnelModel", "FunnelConfig",
                   dict(vocab_size=VOCAB, block_sizes=[1, 1], d_model=32, n_head=4, d_head=8,
                        d_inner=64), _padded_text),
    "roberta": Arch("RobertaModel", "RobertaConfig", ENCODER, _padded_text),
    "distilbert": Arch("DistilBertModel", "DistilBertConfig",
                       dict(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                            max_position_embeddings=64), _padded_text),
    "albert": Arch("AlbertModel", "AlbertConfig", dict(embedding_size=16, **ENCODER),
                   _padded_text),
    # disentangled attention: relative-position buckets gathered both ways (c2p, p2c)
    "deberta_v2": Arch("DebertaV2Model", "DebertaV2Config",
                       dict(relative_attention=True, position_buckets=8,
                            pos_att_type=["p2c", "c2p"], **ENCODER), _padded_text),
    "t5": Arch("T5ForConditionalGeneration", "T5Config",
               dict(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                    num_decoder_layers=2, num_heads=4, decoder_start_token_id=0), _seq2seq),
    "bart": Arch("BartForConditionalGeneration", "BartConfig",
                 dict(vocab_size=VOCAB, d_model=32, encoder_layers=1, decoder_layers=1,
                      encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                      decoder_ffn_dim=64, max_position_embeddings=64), _seq2seq),
    "whisper": Arch("WhisperForConditionalGeneration", "WhisperConfig",
                    dict(vocab_size=VOCAB, num_mel_bins=16, d_model=32, encoder_layers=1,
                         decoder_layers=1, encoder_attention_heads=4,
                         decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                         max_source_positions=20, max_target_positions=32,
                         decoder_start_token_id=1, pad_token_id=0, bos_token_id=1,
                         eos_token_id=2), _speech_seq2seq),
    # a conv feature extractor over raw audio, a weight-normed grouped conv for positions
    "wav2vec2": Arch("Wav2Vec2Model", "Wav2Vec2Config",
                     dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                          intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 2),
                          conv_kernel=(10, 3), num_conv_pos_embeddings=16,
                          num_conv_pos_embedding_groups=4), _audio),
    "vit": Arch("ViTModel", "ViTConfig", VIT, _image),
    "deit": Arch("DeiTModel", "DeiTConfig", VIT, _image),
    "swin": Arch("SwinModel", "SwinConfig",
                 dict(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
                      num_heads=[2, 4], window_size=2), _image),
    # a relative position bias table gathered per window position
    "beit": Arch("BeitModel", "BeitConfig", dict(use_relative_position_bias=True, **VIT), _image),
    # convolutions and attention over unfolded patches
    "mobilevit": Arch("MobileViTModel", "MobileViTConfig",
                      dict(image_size=32, patch_size=2, hidden_sizes=[16, 24, 32],
                           neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64],
                           num_attention_heads=2), _image),
    "resnet": Arch("ResNetForImageClassification", "ResNetConfig",
                   dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                        layer_type="basic", num_labels=10), _image),
    "convnext": Arch("ConvNextForImageClassification", "ConvNextConfig",
                     dict(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=10),
                     _image),
}

def _compile(model, kwargs: dict, **more):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compiler.compile_module(model, (), example_kwargs=kwargs, **more)


def _assert_same(name: str, got: Any, want: Any) -> int:
    got_leaves, want_leaves = pytree.tree_leaves(got), pytree.tree_leaves(want)
    assert len(got_leaves) == len(want_leaves), (name, len(got_leaves), len(want_leaves))
    for k, (a, b) in enumerate(zip(got_leaves, want_leaves)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=f"{name} output leaf {k}")
    return len(got_leaves)


@pytest.mark.parametrize("name", list(ARCHS))
def test_compiles_like_eager(name):
    arch = ARCHS[name]
    model = arch.build()
    compiled = _compile(model, arch.inputs(torch.Generator().manual_seed(1)))
    fresh = arch.inputs(torch.Generator().manual_seed(2))
    with torch.no_grad():
        got, want = compiled(**fresh), model(**fresh)
    assert type(got) is type(want)
    leaves = _assert_same(name, got, want)
    print(f"\n{name}: kernels={compiled.kernel_count} fallbacks={list(compiled.fallback_ops)} "
          f"outputs={type(got).__name__} ({leaves} tensors)")


def _cache_name(model) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@pytest.mark.parametrize("name", [n for n, a in ARCHS.items() if a.decoder])
def test_decode_step_with_dynamic_cache_like_eager(name):
    model = ARCHS[name].build()
    cache_name = _cache_name(model)
    gen = torch.Generator().manual_seed(3)

    def prefill(seq: int):
        with torch.no_grad():
            return model(**_text(gen, seq)).past_key_values
    example = prefill(6)
    compiled = _compile(model, {"input_ids": _text(gen, 1)["input_ids"], cache_name: example},
                        dynamic_shapes={"input_ids": None,
                                        cache_name: leaf_shapes(example, {2: Dim.DYNAMIC})})
    for past in (4, 9):
        cache = prefill(past)
        step = {"input_ids": _text(gen, 1)["input_ids"]}
        with torch.no_grad():
            got = compiled(**step, **{cache_name: cache})
            want = model(**step, **{cache_name: copy.deepcopy(cache)})
        _assert_same(f"{name} decode after {past}", got, want)
    print(f"\n{name} decode: kernels={compiled.kernel_count} "
          f"fallbacks={list(compiled.fallback_ops)}")
