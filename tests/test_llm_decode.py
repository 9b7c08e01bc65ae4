"""An LLM's decode step, as people warm caches for it: transformers' Llama (tiny random
config) captured for prefill and for decode, checked against eager on fresh tokens.

- Prefill returns transformers' own ``DynamicCache`` (registered with torch's pytree by
  capture), equal to eager's, and usable by eager decoding.
- Decode with a ``DynamicCache`` input whose sequence length is dynamic: one compile serves
  past lengths 3, 6, 11 and a greedy loop that feeds each step's cache to the next.
- Decode with a static cache held as mutated buffers (transformers' export recipe: the
  cache tensors registered on a wrapper module, written in place at ``cache_position``):
  one compile with a dynamic chunk length serves a prefill, single-token steps and a
  chunk; logits and every cache buffer match eager's.
"""
from __future__ import annotations

import copy
import inspect
import warnings

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


def _llama(layers: int = 2):
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def _cache_name(model) -> str:
    """The forward's cache argument: ``cache`` in transformers 5, ``past_key_values`` before."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _tokens(gen, batch: int, seq: int) -> torch.Tensor:
    return torch.randint(3, VOCAB, (batch, seq), generator=gen)


def _assert_same(got, want):
    got_leaves, want_leaves = pytree.tree_leaves(got), pytree.tree_leaves(want)
    assert len(got_leaves) == len(want_leaves)
    for a, b in zip(got_leaves, want_leaves):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def _compile(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compiler.compile_module(*args, **kwargs)


def test_prefill_returns_transformers_dynamic_cache_like_eager():
    model = _llama()
    gen = torch.Generator().manual_seed(1)
    compiled = _compile(model, (_tokens(gen, 2, 8),))
    ids = _tokens(gen, 2, 8)
    with torch.no_grad():
        got, want = compiled(ids), model(ids)
    assert type(got.past_key_values) is transformers.DynamicCache
    assert got.past_key_values.get_seq_length() == 8
    _assert_same(got, want)
    step = _tokens(gen, 2, 1)       # eager decodes on from the compiled prefill's cache
    with torch.no_grad():
        after_compiled = model(step, **{_cache_name(model): got.past_key_values})
        after_eager = model(step, **{_cache_name(model): want.past_key_values})
    torch.testing.assert_close(after_compiled.logits, after_eager.logits, rtol=1e-4, atol=1e-4)


def test_decode_with_dynamic_cache_compiles_once_for_every_length():
    model = _llama()
    name = _cache_name(model)
    gen = torch.Generator().manual_seed(2)

    def prefill(n):
        with torch.no_grad():
            return model(_tokens(gen, 2, n)).past_key_values
    example = prefill(6)
    compiled = _compile(model, (), example_kwargs={"input_ids": _tokens(gen, 2, 1), name: example},
                        dynamic_shapes={"input_ids": None,
                                        name: leaf_shapes(example, {2: Dim.DYNAMIC})})
    assert compiled.compiled.size_ranges          # one module, symbolic in the cache length
    for past in (6, 3, 11):
        cache = prefill(past)
        eager_cache = copy.deepcopy(cache)
        step = _tokens(gen, 2, 1)
        with torch.no_grad():
            got = compiled(input_ids=step, **{name: cache})
            want = model(input_ids=step, **{name: eager_cache})
        assert got.past_key_values.get_seq_length() == past + 1
        _assert_same(got, want)

    # a greedy loop: each compiled step's cache feeds the next, as eager's does
    cache, eager_cache = prefill(4), None
    eager_cache = copy.deepcopy(cache)
    token = eager_token = _tokens(gen, 2, 1)
    for _ in range(4):
        with torch.no_grad():
            out = compiled(input_ids=token, **{name: cache})
            ref = model(input_ids=eager_token, **{name: eager_cache})
        torch.testing.assert_close(out.logits, ref.logits, rtol=1e-4, atol=1e-4)
        cache, eager_cache = out.past_key_values, ref.past_key_values
        token, eager_token = out.logits[:, -1:].argmax(-1), ref.logits[:, -1:].argmax(-1)
        assert torch.equal(token, eager_token)
    assert cache.get_seq_length() == 8


def _static_cache_module(model, **kwargs):
    """transformers' export recipe for a static cache (its tensors registered as buffers on
    the wrapper), or None where this transformers has none."""
    try:
        from transformers.integrations.executorch import TorchExportableModuleWithStaticCache
    except ImportError:
        return None
    model.generation_config.cache_implementation = "static"

    class StaticCacheLM(TorchExportableModuleWithStaticCache):
        """The recipe's forward with the positions given to the model: a chunk of any
        length then writes at ``cache_position`` (the recipe derives them from the cache's
        length counter instead, as ``test_transformers_static_cache_recipe_as_it_is``
        checks too)."""

        def forward(self, input_ids, cache_position):
            for layer in self.static_cache.layers:
                layer.cumulative_length.copy_(cache_position[0])
            out = self.model(input_ids=input_ids, position_ids=cache_position.unsqueeze(0),
                             use_cache=True, **{_cache_name(self.model): self.static_cache})
            return out.logits

    return StaticCacheLM(model, **kwargs).eval()


def test_decode_with_static_cache_buffers_written_in_place_at_every_length():
    module = _static_cache_module(_llama(), batch_size=2, max_cache_len=32)
    if module is None:
        pytest.skip("this transformers has no TorchExportableModuleWithStaticCache")
    for buf in module.buffers():     # a non-trivial starting cache (never zeros)
        if buf.is_floating_point():
            buf.normal_()
    eager = copy.deepcopy(module)
    gen = torch.Generator().manual_seed(3)
    chunk = Dim("chunk", min=1, max=16)
    compiled = _compile(module, (), example_kwargs={"input_ids": _tokens(gen, 2, 4),
                                                    "cache_position": torch.arange(4)},
                        dynamic_shapes={"input_ids": {1: chunk}, "cache_position": {0: chunk}})
    assert {n for n in compiled.captured.mutated_buffers if n.startswith("key_cache")} == \
        {"key_cache_0", "key_cache_1"}
    static_steps_like_eager(compiled, module, eager, (5, 1, 1, 3, 1),   # prefill, steps, chunk
                            lambda n: _tokens(gen, 2, n))


def static_steps_like_eager(compiled, module, eager, chunks, tokens) -> None:
    """Feed ``chunks`` (lengths) at consecutive positions to ``compiled`` and ``eager``:
    logits and every cache buffer of ``module`` (the compiled one's) match eager's."""
    start = 0
    for n in chunks:
        ids, pos = tokens(n), torch.arange(start, start + n)
        with torch.no_grad():
            torch.testing.assert_close(compiled(input_ids=ids, cache_position=pos),
                                       eager(input_ids=ids, cache_position=pos),
                                       rtol=1e-4, atol=1e-4)
        for (name, got), want in zip(module.named_buffers(), eager.buffers()):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=name)
        start += n


def test_transformers_static_cache_recipe_as_it_is():
    model = _llama(layers=1)
    model.generation_config.cache_implementation = "static"
    try:
        from transformers.integrations.executorch import TorchExportableModuleWithStaticCache
    except ImportError:
        pytest.skip("this transformers has no TorchExportableModuleWithStaticCache")
    module = TorchExportableModuleWithStaticCache(model, batch_size=1, max_cache_len=16).eval()
    eager = copy.deepcopy(module)
    gen = torch.Generator().manual_seed(4)
    compiled = _compile(module, (), example_kwargs={"input_ids": _tokens(gen, 1, 1),
                                                    "cache_position": torch.tensor([0])})
    for position in range(3):
        ids, pos = _tokens(gen, 1, 1), torch.tensor([position])
        with torch.no_grad():
            torch.testing.assert_close(compiled(input_ids=ids, cache_position=pos),
                                       eager(input_ids=ids, cache_position=pos),
                                       rtol=1e-4, atol=1e-4)
