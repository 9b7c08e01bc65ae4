"""Serving a model whose output holds a library's type (transformers' ``DynamicCache``): the
stored calling convention names the type, and a fresh process that never captured must
register it before it can rebuild the outputs (``CallConvention.from_json``). kiln's stand-in
does (``capture_pytree.register_stored_types``), without importing transformers' exporter."""
from __future__ import annotations

import inspect
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
    """The cache type is rebuilt by kiln's stand-in, without transformers' exporter (about
    1-2 s to import in transformers 5.17: every exporter and some hundred model files); the
    rebuilt cache holds eager's tensors, decodes on as eager's does, and flattening it hands
    over to transformers' registration, which gives back the stored spec."""
    kwargs = dict(part.split(" = ") for part in sizes.split(", "))
    script = textwrap.dedent(f"""
        import sys, torch, storage
        import torch.utils._pytree as pytree
        from pipeline.zoo import heldout
        tried = []
        class Spy:
            def find_spec(self, name, path=None, target=None):
                if name.startswith("transformers.exporters"):
                    tried.append(name)
                return None
        module, (ids,) = heldout.{name}(**{{k: int(v) for k, v in {kwargs!r}.items()}})
        assert "transformers.exporters" not in sys.modules, "imported before loading"
        sys.meta_path.insert(0, Spy())
        model = storage.Store({str(baked)!r}).load_model({name!r}, module)
        assert model.cache_hit
        with torch.no_grad():
            fresh = torch.randint(3, 96, ids.shape)
            got, want = model(fresh), module(fresh)
        print("exporter", sorted(set(tried)))
        assert type(got.past_key_values) is type(want.past_key_values), type(got.past_key_values)
        torch.testing.assert_close(got.logits, want.logits, rtol=1e-4, atol=1e-4)
        leaves = pytree.tree_leaves(want.past_key_values)   # hands over to transformers
        for g, w in zip(pytree.tree_leaves(got.past_key_values), leaves, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
        stored = model.captured.out_spec.children_specs[1]
        assert pytree.tree_flatten(got.past_key_values)[1] == stored
        with torch.no_grad():
            step = torch.randint(3, 96, (ids.shape[0], 1))
            on = module(step, past_key_values=got.past_key_values)
            eager_on = module(step, past_key_values=want.past_key_values)
        torch.testing.assert_close(on.logits, eager_on.logits, rtol=1e-4, atol=1e-4)
        print("ok", len(leaves))
        """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0] == "exporter []", lines[0]
    assert lines[1].split()[0] == "ok" and int(lines[1].split()[1]) >= 2


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


def test_a_decode_step_served_elsewhere_takes_a_cache_in(tmp_path):
    """A decode step's stored call holds the cache as an input. Loading it needs no exporter;
    the first flatten of a cache passed in hands the type over to transformers' own
    registration, so the cache flattens to the very spec captured."""
    from compiler.capture import capture_module
    from pipeline.zoo import heldout
    kwargs = dict(batch=2, seq=4, layers=1, vocab_size=96, hidden_size=32,
                  intermediate_size=64, num_attention_heads=4, num_key_value_heads=2)
    module, (ids,) = heldout.llama_lm(**kwargs)
    with torch.no_grad():
        cache = module(ids).past_key_values
    name = "cache" if "cache" in inspect.signature(module.forward).parameters \
        else "past_key_values"
    step = {"input_ids": ids[:, :1], name: cache}
    (tmp_path / "call.json").write_text(capture_module(module, (), step).convention.to_json())
    script = textwrap.dedent(f"""
        import sys, torch
        from compiler.convention import CallConvention
        from pipeline.zoo import heldout
        module, (ids,) = heldout.llama_lm(**{kwargs!r})
        with torch.no_grad():
            cache = module(torch.randint(3, 96, ids.shape)).past_key_values
        text = open({str(tmp_path / "call.json")!r}).read()
        conv = CallConvention.from_json(text, module)
        print("loaded", "transformers.exporters.exporter_dynamo" in sys.modules)
        flat = conv.flatten_call(module, (), {{"input_ids": ids[:, :1], {name!r}: cache}})
        print("flat", len(flat) == len(conv.inputs))
        """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["loaded", "False", "flat", "True"], out.stdout
