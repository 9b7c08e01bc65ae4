"""The real-architecture zoos (``pipeline.zoo.vision``, ``pipeline.zoo.text``) on CPU.

Kept cheap for CI: every factory is built at a tiny batch and resolution and checked to be
the architecture it claims (torchvision's / HF's parameter counts); ResNet-50 and a 2-layer
GPT-2 are captured and lowered for CUDA (nothing runs: no GPU needed); the Llama-style stack
(1 layer) and MobileNetV3-Small (32x32) run end to end through Triton's interpreter against
eager on fresh inputs. The full-size zoos run on the GPU machine (configs/zoo-vision.toml,
configs/zoo-text.toml, benchmarks/bench_pipeline.py).
"""
from __future__ import annotations

import warnings

import pytest
import torch

import compiler
from compiler.api import lower
from compiler.capture import capture_module
from pipeline.config import load_config
from pipeline.zoo import text, vision

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]

# torchvision's and HF's own counts: a layer left out or mis-sized changes them.
PARAMS = {vision.resnet50: 25_557_032, vision.mobilenet_v3_small: 2_542_856,
          vision.efficientnet_b0: 5_288_548, vision.convnext_tiny: 28_589_128,
          text.bert_base: 109_482_240, text.gpt2_small: 124_439_808}


@pytest.mark.parametrize("factory", list(PARAMS), ids=lambda f: f.__name__)
def test_real_models_have_their_reference_parameter_counts(factory):
    tiny = dict(batch=1, image=32) if factory in vision.MODELS.values() else dict(batch=1, seq=8)
    module, args = factory(**tiny)
    assert sum(p.numel() for p in module.parameters()) == PARAMS[factory]
    assert not module.training and all(a.abs().sum() > 0 for a in args)
    again, args2 = factory(**tiny)       # seeded: identical weights and inputs
    assert all(torch.equal(a, b) for a, b in zip(args, args2))
    assert torch.equal(next(module.parameters()), next(again.parameters()))


def test_zoo_configs_name_every_factory_and_load():
    for path, zoo in (("configs/zoo-vision.toml", vision.MODELS),
                      ("configs/zoo-text.toml", text.MODELS)):
        config = load_config(path)
        factories = {m.factory.rsplit(":", 1)[1] for m in config.models}
        assert factories == set(zoo), path
        assert config.targets == ("sm_90",) and config.tuning.enabled
        assert {m.dtype for m in config.models} == {"bfloat16"}


@pytest.mark.parametrize("factory, kwargs", [
    (vision.resnet50, dict(batch=1, image=32)),
    (text.gpt2_small, dict(batch=1, seq=8, layers=2)),
], ids=["resnet50", "gpt2_small"])
def test_real_models_capture_and_lower_for_cuda_without_fallbacks(factory, kwargs):
    module, args = factory(**kwargs)
    artifact = lower(capture_module(module, args), {}, "cuda")
    assert artifact.meta["target"] == "cuda" and artifact.meta["fallback_ops"] == []
    assert len(artifact.kernels) > 5   # (2-layer GPT-2: 7 since LayerNorms are one row kernel)
    compile(artifact.source, "wrapper", "exec")     # the wrapper is valid Python


@pytest.mark.parametrize("factory, kwargs", [
    (text.llama_small, dict(batch=2, seq=8, layers=1)),
    (vision.mobilenet_v3_small, dict(batch=1, image=32)),
], ids=["llama_small", "mobilenet_v3_small"])
def test_real_models_run_through_the_interpreter_like_eager(factory, kwargs):
    module, args = factory(**kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = compiler.compile_module(module, args)
    gen = torch.Generator().manual_seed(5)
    fresh = tuple(torch.randint(1, 1000, a.shape, generator=gen) if not a.is_floating_point()
                  else torch.randn(a.shape, generator=gen) for a in args)
    with torch.no_grad():
        torch.testing.assert_close(compiled(*fresh), module(*fresh), rtol=1e-4, atol=1e-4)
