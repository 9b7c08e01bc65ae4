"""The serving path's stand-in for transformers' cache registration (``compiler.pytree_stand_in``,
``capture_pytree.register_stored_types``): it rebuilds what transformers' own unflatten
builds, refuses what it does not know, registers all of a spec's types or none, and falls
back to transformers' registration where unsure."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.utils._pytree as pytree

pytest.importorskip("transformers")
from transformers.cache_utils import DynamicCache, DynamicLayer, EncoderDecoderCache  # noqa: E402

from compiler.capture_pytree import register_stored_types  # noqa: E402
from compiler.pytree_stand_in import readable, rebuild, transformers_stand_in  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _caches() -> list:
    torch.manual_seed(0)
    kv = lambda n: (torch.randn(2, 2, n, 4), torch.randn(2, 2, n, 4))   # noqa: E731
    dynamic = DynamicCache()
    dynamic.update(*kv(3), 0)
    dynamic.update(*kv(3), 1)
    both = EncoderDecoderCache(DynamicCache(), DynamicCache())
    both.self_attention_cache.update(*kv(3), 0)
    both.cross_attention_cache.update(*kv(5), 0)
    both.is_updated[0] = True       # int keys: transformers 5.25 writes them as "items"
    return [dynamic, both]


def _same(a, b) -> bool:
    """The same structure, classes and values; tensors the very same objects."""
    if isinstance(a, torch.Tensor):
        return a is b
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if hasattr(a, "__dict__") and not isinstance(a, type):
        return _same(vars(a), vars(b))
    return a == b


@pytest.mark.parametrize("which", [0, 1], ids=["DynamicCache", "EncoderDecoderCache"])
def test_rebuild_builds_what_transformers_own_unflatten_builds(which):
    exporter = pytest.importorskip("transformers.exporters.exporter_dynamo")
    if not hasattr(exporter, "_pytree_flatten"):
        pytest.skip("this transformers names its pytree functions otherwise")
    cache = _caches()[which]
    leaves, context = exporter._pytree_flatten(cache)
    context = json.loads(json.dumps(context))       # as a stored spec gives it back
    assert readable(context)
    ours, theirs = rebuild(context, leaves), exporter._pytree_unflatten(leaves, context)
    assert type(ours) is type(cache) and _same(ours, theirs)


_LAYER = "transformers.cache_utils:DynamicLayer"


@pytest.mark.parametrize("context", [
    {"_t": "obj", "p": _LAYER, "s": {"x": {"_t": "from_the_future"}}},   # an unknown tag
    {"_t": "obj", "p": _LAYER, "s": {"x": {"_t": "tensor"}}},            # a key missing
    {"_t": "obj", "p": "transformers.cache_utils:NoSuchLayer", "s": {}},  # no such class
    {"_t": "obj", "p": "no_such_package.x:Layer", "s": {}},
    {"_t": "obj", "p": _LAYER, "s": {"d": {"_t": "dtype", "n": "float99"}}},
    {"_t": "obj", "p": _LAYER, "s": {"m": {"_t": "items", "v": [[1]]}}},  # not pairs
], ids=["tag", "key", "class", "package", "dtype", "items"])
def test_what_the_stand_in_does_not_know_it_refuses(context):
    assert not readable(context)
    assert transformers_stand_in(_LAYER, [context]) is None


def test_only_names_transformers_exporter_writes_get_a_stand_in():
    context = {"_t": "obj", "p": _LAYER, "s": {}}
    assert transformers_stand_in(_LAYER, [context]) is not None
    assert transformers_stand_in(_LAYER.replace(":", "."), [context]) is None
    assert transformers_stand_in(_LAYER, [{**context, "p": "builtins:dict"}]) is None


def _spec(*children: tuple[str, dict]) -> str:
    nodes = [{"type": name, "context": json.dumps(ctx), "children_spec": [
        {"type": None, "context": None, "children_spec": []}]} for name, ctx in children]
    return json.dumps([1, {"type": "builtins.tuple", "context": "null", "children_spec": nodes}])


def test_a_spec_is_stood_in_for_all_or_none_and_rebuilds_its_objects():
    """DynamicLayer: a transformers class that no registration of transformers' own covers, so
    registering it here leaves every other test as it was."""
    assert DynamicLayer not in pytree.SUPPORTED_NODES
    good = {"_t": "obj", "p": _LAYER, "s": {"keys": {"_t": "tensor", "i": 0}, "n": 3}}
    bad_name = "transformers.cache_utils:StaticLayer"
    bad = {"_t": "obj", "p": bad_name, "s": {"k": {"_t": "from_the_future"}}}
    assert not register_stored_types(_spec((_LAYER, good), (bad_name, bad)))
    assert DynamicLayer not in pytree.SUPPORTED_NODES
    text = _spec((_LAYER, good))
    assert register_stored_types(text)
    try:
        t = torch.randn(2)
        (layer,) = pytree.tree_unflatten([t], pytree.treespec_loads(text))
        assert type(layer) is DynamicLayer and layer.keys is t and layer.n == 3
        # Flattening hands over to transformers, which does not register layers: said so.
        with pytest.raises(TypeError, match="DynamicLayer: its library no longer registers"):
            pytree.tree_flatten(layer)
    finally:
        if DynamicLayer in pytree.SUPPORTED_NODES:
            pytree._deregister_pytree_node(DynamicLayer)
    assert DynamicLayer not in pytree.SUPPORTED_NODES


def test_where_the_stand_in_is_unsure_transformers_registers_the_cache():
    """A fresh process (registration is for the whole process): a stored cache context with a
    tag this kiln does not know loads through transformers' own registration, as before."""
    script = textwrap.dedent("""
        import json, sys, torch
        import torch.utils._pytree as pytree
        import transformers
        from transformers.cache_utils import DynamicCache
        from compiler.convention import _load_specs
        assert DynamicCache not in pytree.SUPPORTED_NODES
        name = "transformers.cache_utils:DynamicCache"
        ctx = {"_t": "obj", "p": name, "s": {"layers": [], "later": {"_t": "from_the_future"}}}
        text = json.dumps([1, {"type": name, "context": json.dumps(ctx), "children_spec": []}])
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
            n_layer=1, n_embd=8, n_head=2, vocab_size=16))
        _, spec = _load_specs(None, text, model)
        assert spec.type is DynamicCache
        flatten = pytree.SUPPORTED_NODES[DynamicCache].flatten_fn
        print(flatten.__module__)
        """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-1].startswith("transformers."), out.stdout
