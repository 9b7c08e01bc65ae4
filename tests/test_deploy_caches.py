"""Serving a model whose output holds a library's type (transformers' ``DynamicCache``): the
stored calling convention names the type, and a fresh process that never captured must
register it before it can rebuild the outputs (``CallConvention.from_json``)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parent.parent

# Tiny decoders (the held-out zoo's factories with small configs) so the interpreter runs them.
_ZOO = """
[run]
name = "deploy-caches"
targets = ["cpu"]
[cluster]
workers = 1
[[models]]
factory = "pipeline.zoo.heldout:gpt2_lm"
kwargs = {{ {gpt2} }}
[[models]]
factory = "pipeline.zoo.heldout:llama_lm"
kwargs = {{ {llama} }}
[[models]]
factory = "pipeline.zoo.heldout:bert_4layer"
kwargs = {{ {bert} }}
"""
_GPT2 = "batch = 2, seq = 8, n_layer = 1, n_embd = 32, n_head = 2, vocab_size = 96"
_LLAMA = ("batch = 2, seq = 8, layers = 1, vocab_size = 96, hidden_size = 32, "
          "intermediate_size = 64, num_attention_heads = 4, num_key_value_heads = 2")
_BERT = ("batch = 2, seq = 8, layers = 1, vocab_size = 96, hidden_size = 32, "
         "intermediate_size = 64, num_attention_heads = 2")


@pytest.fixture(scope="module")
def baked(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("deploy-caches")
    config = root / "zoo.toml"
    config.write_text(_ZOO.format(gpt2=_GPT2, llama=_LLAMA, bert=_BERT))
    run = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(config),
                          "--store", str(root / "store")], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return root / "store"


@pytest.mark.parametrize("name,sizes", [("gpt2_lm", _GPT2), ("llama_lm", _LLAMA)])
def test_a_fresh_process_loads_a_decoder_and_its_cache_matches_eager(baked, name, sizes):
    kwargs = dict(part.split(" = ") for part in sizes.split(", "))
    script = textwrap.dedent(f"""
        import torch, storage
        from pipeline.zoo import heldout
        module, (ids,) = heldout.{name}(**{{k: int(v) for k, v in {kwargs!r}.items()}})
        model = storage.Store({str(baked)!r}).load_model({name!r}, module)
        assert model.cache_hit
        with torch.no_grad():
            fresh = torch.randint(3, 96, ids.shape)
            got, want = model(fresh), module(fresh)
        assert type(got.past_key_values) is type(want.past_key_values), type(got.past_key_values)
        torch.testing.assert_close(got.logits, want.logits, rtol=1e-4, atol=1e-4)
        for g, w in zip(torch.utils._pytree.tree_leaves(got.past_key_values),
                        torch.utils._pytree.tree_leaves(want.past_key_values)):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
        print("ok", len(torch.utils._pytree.tree_leaves(got.past_key_values)))
        """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[0] == "ok" and int(out.stdout.split()[1]) >= 2


def test_a_model_without_library_types_in_its_call_skips_their_registration(baked):
    """BERT returns a ModelOutput (registered by transformers' import) and no cache: loading
    it must not import transformers' exporter, which costs seconds on a serving process."""
    kwargs = dict(part.split(" = ") for part in _BERT.split(", "))
    script = textwrap.dedent(f"""
        import sys, torch, storage
        from pipeline.zoo import heldout
        module, (ids,) = heldout.bert_4layer(**{{k: int(v) for k, v in {kwargs!r}.items()}})
        model = storage.Store({str(baked)!r}).load_model("bert_4layer", module)
        with torch.no_grad():
            got, want = model(ids), module(ids)
        torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state,
                                   rtol=1e-4, atol=1e-4)
        print("exporter", "transformers.exporters.exporter_dynamo" in sys.modules)
        """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["exporter", "False"], out.stdout


def test_an_unregistered_type_is_named_with_the_fix():
    from compiler.convention import _load_specs
    text = ('[1, {"type": "no_such_lib.Cache", "context": "null", "children_spec": []}]')
    with pytest.raises(ValueError, match="no_such_lib.Cache.*Fix: import and register"):
        _load_specs(None, text, None)
    with pytest.raises(ValueError, match="no_such_lib.Cache.*Fix: import and register"):
        _load_specs(None, text, torch.nn.Linear(2, 2))    # no library to ask
