"""Keys that do not depend on where capture ran (issue 12, item 1).

The pipeline captures on CPU workers for a CUDA target; a serving process captures the same
model on its GPU. Both must give the same graph key and module key, or the serving process
never finds the stored module. On CPU the GPU capture is emulated two ways: tensors on the
meta device, and fake CUDA tensors (``FakeTensorMode`` makes CUDA tensors without a GPU).
The test marked ``gpu`` captures on a real GPU, every zoo model at small sizes.
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils._pytree as pytree
from torch._subclasses.fake_tensor import FakeTensorMode

from compiler import capture_device
from compiler.api import _target_of, lower, module_key
from compiler.capture import capture_module, graph_text
from compiler.config import load_options
from pipeline.config import load_config
from pipeline.tasks import build_model

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

ROOT = Path(__file__).resolve().parent.parent
# Small sizes of the full-size zoos (the GPU test runs them all).
SMALL = {"zoo-vision": {"batch": 2, "image": 64},
         "zoo-text": {"batch": 2, "seq": 16, "layers": 2}}


def _specs(*zoos: str) -> dict:
    out = {}
    for zoo in zoos:
        for spec in load_config(ROOT / "configs" / f"{zoo}.toml").models:
            kwargs = {**spec.kwargs, **SMALL.get(zoo, {})}
            out[f"{zoo}/{spec.name}"] = dataclasses.replace(spec, kwargs_json=json.dumps(kwargs))
    return out


CPU_ZOO = _specs("zoo-tiny", "zoo-blocks")
ALL_ZOO = _specs("zoo-tiny", "zoo-blocks", "zoo-vision", "zoo-text")


# ------------------------------------------------------------------------- moving a model
def _fake_cuda(mode: FakeTensorMode):
    """A CUDA tensor without a GPU: sizes, strides and dtype, no values."""
    def move(t: torch.Tensor) -> torch.Tensor:
        with mode:
            return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="cuda")
    return move


def _moved(module: nn.Module, args: tuple, device: str) -> tuple[nn.Module, tuple]:
    """``module`` (in place, plain tensor attributes too) and ``args`` on ``device``:
    "meta", "fake-cuda" or a real one. Strides are kept (channels-last stays so)."""
    def move(t: torch.Tensor) -> torch.Tensor:
        out = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=device)
        return out if device == "meta" else out.copy_(t)
    if device == "fake-cuda":
        move = _fake_cuda(FakeTensorMode())
    module._apply(move)
    for sub in module.modules():     # plain tensor attributes: what export lifts as constants
        for name, value in list(vars(sub).items()):
            if isinstance(value, torch.Tensor):
                setattr(sub, name, move(value))
    return module, pytree.tree_map_only(torch.Tensor, move, args)


def _both(build, device: str, **capture_kw):
    """A CPU capture of ``build()`` and a capture of a second ``build()`` on ``device``."""
    module, args = build()
    on_cpu = capture_module(module, args, **capture_kw)
    module, args = build()
    return on_cpu, capture_module(*_moved(module, args, device), **capture_kw)


def _assert_same_keys(on_cpu, other, device: str) -> None:
    assert graph_text(other.gm) == graph_text(on_cpu.gm)
    assert other.graph_key == on_cpu.graph_key
    options = load_options()
    # the pipeline keys the CPU capture's module for the target it lowers for; the serving
    # process keys its own capture's module for the device its tensors are on
    target = "cuda" if "cuda" in device else "cpu"
    assert _target_of(other) == target
    assert module_key(other.graph_key, options, _target_of(other)) == \
        module_key(on_cpu.graph_key, options, target)
    # the calling convention is the real tensors' (the device checks at a call read it)
    assert {s.device for s in other.inputs} == {"cuda" if "cuda" in device else device}
    assert [dataclasses.replace(s, device="cpu") for s in other.inputs] == list(on_cpu.inputs)


# ------------------------------------------------------------------------- the zoo on CPU
def _zoo_captures(spec, device: str):
    """The pipeline's CPU capture of a zoo model (``capture_model``), and the same model's
    capture on ``device``."""
    module, args, dynamic = build_model(spec)
    on_cpu = capture_module(module, args, dynamic_shapes=dynamic, name=spec.name)
    module, args, dynamic = build_model(spec)
    return on_cpu, capture_module(*_moved(module, args, device), dynamic_shapes=dynamic,
                                  name=spec.name)


@pytest.mark.parametrize("device", ["meta", "fake-cuda"])
@pytest.mark.parametrize("name", sorted(CPU_ZOO))
def test_zoo_keys_do_not_depend_on_capture_device(name, device):
    _assert_same_keys(*_zoo_captures(CPU_ZOO[name], device), device)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(ALL_ZOO) - set(CPU_ZOO)))
def test_full_size_zoos_at_small_sizes_key_as_on_fake_cuda(name):
    """ResNet-50, ConvNeXt-T, EfficientNet, MobileNetV3, ViTs, BERT, GPT-2, Llama (bf16)."""
    _assert_same_keys(*_zoo_captures(ALL_ZOO[name], "fake-cuda"), "fake-cuda")


# ------------------------------------------------------------------------- device-dependent ops
class ConvBN(nn.Module):
    """Eval BatchNorm: its saved statistics are [C] on CUDA, [0] on CPU."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)

    def forward(self, x):
        return self.dw(F.relu(self.bn(self.conv(x)))).flatten(1)


class Attention(nn.Module):
    """SDPA, then a reshape whose view-or-copy depends on the attention output's layout."""

    def __init__(self, dim=32, heads=4, causal=True):
        super().__init__()
        self.qkv, self.out, self.heads, self.causal = nn.Linear(dim, 3 * dim), \
            nn.Linear(dim, dim), heads, causal

    def forward(self, x, mask=None):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           is_causal=self.causal and mask is None)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class Upsample(nn.Module):
    """Nearest and bilinear upsampling: index dtype and output layout differ by device."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)

    def forward(self, x):
        y = self.conv(x)
        return F.interpolate(y, scale_factor=2, mode="nearest") + \
            F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)


def _seeded(make):
    def build():
        torch.manual_seed(0)
        return make()
    return build


def _channels_last(make):
    def build():
        module, (x,) = make()
        return module.to(memory_format=torch.channels_last), \
            (x.contiguous(memory_format=torch.channels_last),)
    return build


CASES = {
    "batchnorm_eval": _seeded(lambda: (ConvBN().eval(), (torch.randn(2, 3, 8, 8),))),
    "batchnorm_train": _seeded(lambda: (ConvBN().train(), (torch.randn(2, 3, 8, 8),))),
    "channels_last": _channels_last(_seeded(lambda: (ConvBN().eval(),
                                                     (torch.randn(2, 3, 8, 8),)))),
    "channels_last_input_only": _seeded(lambda: (
        ConvBN().eval(), (torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last),))),
    "sdpa_causal": _seeded(lambda: (Attention().eval(), (torch.randn(2, 16, 32),))),
    "sdpa_mask": _seeded(lambda: (Attention(causal=False).eval(),
                                  (torch.randn(2, 16, 32), torch.randn(2, 4, 16, 16)))),
    "upsample": _seeded(lambda: (Upsample().eval(), (torch.randn(2, 3, 8, 8),))),
    "upsample_channels_last": _channels_last(_seeded(lambda: (Upsample().eval(),
                                                              (torch.randn(2, 3, 8, 8),)))),
}


@pytest.mark.parametrize("device", ["meta", "fake-cuda"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_device_dependent_ops_key_the_same(case, device):
    _assert_same_keys(*_both(CASES[case], device), device)


def test_batchnorm_train_mutations_survive_the_standins():
    on_cpu, other = _both(CASES["batchnorm_train"], "meta")
    assert other.mutated_buffers == on_cpu.mutated_buffers != ()


def test_conv_net_lowers_to_the_same_cuda_module():
    """Same graph key, same code: the module the pipeline stores is the one served."""
    on_cpu, other = _both(_channels_last(_seeded(lambda: (ConvBN().eval(),
                                                          (torch.randn(2, 3, 8, 8),)))),
                          "fake-cuda")
    a, b = lower(on_cpu, target="cuda"), lower(other, target="cuda")
    assert (a.module_key, a.source) == (b.module_key, b.source)


# ------------------------------------------------------------- constants, state, fallback
class AddConst(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = torch.tensor([1.0, 2.0])     # plain attribute: a lifted, tiny constant
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(x) + self.c


def test_cpu_constant_keeps_its_bytes_in_the_key_with_weights_elsewhere():
    torch.manual_seed(0)
    module = AddConst()
    on_cpu = capture_module(module, (torch.randn(3, 2),))
    to_cuda = _fake_cuda(FakeTensorMode())
    module._apply(to_cuda)                     # as module.to(): the constant stays on CPU
    other = capture_module(module, (to_cuda(torch.randn(3, 2)),))
    assert other.graph_key == on_cpu.graph_key
    assert other.constants["c"] is module.c    # a fake device: nowhere real to move it to


def test_module_state_is_put_back():
    module, args = _moved(*CASES["batchnorm_eval"](), "meta")
    before = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    capture_module(module, args)
    after = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    assert before.keys() == after.keys() and all(after[k] is before[k] for k in before)


class MakesMetaTensor(nn.Module):
    """Creates a tensor on a fixed device: the CPU stand-ins cannot trace it."""

    def forward(self, x):
        return x + torch.ones(x.shape, device="meta")


def test_fallback_traces_on_the_real_device_and_warns():
    with pytest.warns(UserWarning, match="own device"):
        cg = capture_module(MakesMetaTensor(), (torch.randn(3, device="meta"),))
    assert cg.inputs[0].device == "meta"


def test_without_fake_tensors_capture_traces_on_the_real_device(monkeypatch):
    monkeypatch.setattr(capture_device, "FakeTensorMode", None)
    module, args = _moved(*CASES["batchnorm_eval"](), "meta")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        cg = capture_module(module, args)
    assert cg.inputs[-1].device == "meta"


def test_cpu_capture_does_not_use_standins(monkeypatch):
    monkeypatch.setattr(capture_device, "cpu_standins", None)   # would raise if called
    capture_module(*CASES["batchnorm_eval"]())


# ------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(ALL_ZOO))
def test_zoo_cpu_and_cuda_captures_share_keys_and_module(name):
    """What the pipeline stores (CPU capture, lowered for cuda) is what a serving process
    asks for (capture on its GPU): same graph key, module key and generated source."""
    on_cpu, on_gpu = _zoo_captures(ALL_ZOO[name], "cuda")
    _assert_same_keys(on_cpu, on_gpu, "cuda")
    stored, served = lower(on_cpu, target="cuda"), lower(on_gpu, target=_target_of(on_gpu))
    assert (stored.module_key, stored.source) == (served.module_key, served.source)


class _DictCache:
    """The compiler's cache protocol over a dict (what ``storage.Store`` implements)."""

    def __init__(self):
        self.artifacts = {}

    def get_artifact(self, key):
        return self.artifacts.get(key)

    def put_artifact(self, artifact):
        self.artifacts[artifact.module_key] = artifact


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["zoo-blocks/resnet_bottleneck", "zoo-blocks/convnext_block",
                                  "zoo-tiny/convnet"])
def test_serving_process_finds_the_module_the_pipeline_stored(name):
    """The issue's miss: a conv net stored by the pipeline (CPU capture, lowered for cuda),
    then ``compile_module(model_on_gpu, args, cache=...)`` in a serving process: a hit."""
    from compiler.api import compile_module
    spec = ALL_ZOO[name]
    cache = _DictCache()
    module, args, _ = build_model(spec)
    cache.put_artifact(lower(capture_module(module, args, name=spec.name), target="cuda"))
    module, args, _ = build_model(spec)
    module, args = _moved(module, args, "cuda")
    compiled = compile_module(module, args, cache=cache)
    assert compiled.cache_hit and len(cache.artifacts) == 1
    torch.testing.assert_close(compiled(*args), module(*args), rtol=1e-2, atol=1e-2)


class MakesConstant(nn.Module):
    """A constant made in ``forward`` (on CPU, under the stand-ins) and one left on CPU by
    ``module.to()`` (a plain attribute): both must reach the device the module runs on."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(100, 100)
        self.table = torch.linspace(0, 1, 100)

    def forward(self, x):
        return self.fc(x) + torch.arange(100.0, device=x.device).sin() * \
            self.table.to(x.device) + torch.tensor([0.5] * 100, device=x.device)


def test_constants_go_to_the_device_the_module_runs_on():
    on_cpu = capture_module(MakesConstant(), (torch.randn(2, 100),))
    module = MakesConstant()
    module.fc.to("meta")                   # as module.to(): the plain attribute stays on CPU
    other = capture_module(module, (torch.randn(2, 100, device="meta"),))
    assert other.graph_key == on_cpu.graph_key
    assert [s.target for s in other.inputs if s.kind == "constant"] == \
        ["table", "lifted_tensor_0"]
    assert {v.device.type for v in other.constants.values()} == {"meta"}
    assert {s.device for s in other.inputs} == {"meta"}


@pytest.mark.gpu
def test_constants_reach_the_gpu_and_the_module_runs():
    from compiler.api import compile_module
    torch.manual_seed(0)
    module, x = MakesConstant().cuda(), torch.randn(2, 100, device="cuda")
    compiled = compile_module(module, (x,))
    assert compiled.captured.graph_key == capture_module(MakesConstant(),
                                                         (torch.randn(2, 100),)).graph_key
    torch.testing.assert_close(compiled(x), module(x), rtol=1e-4, atol=1e-4)
