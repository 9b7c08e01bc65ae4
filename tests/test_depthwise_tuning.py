"""Depthwise conv kernels tuned against cuDNN (``compiler/codegen/depthwise_baseline.py``):
the baseline a kernel carries with option ``depthwise_baseline`` computes what the kernel
computes (both checked against eager, under Triton's interpreter and ATen on CPU), the
tuner runs it as ``Config(extern=1)``, and relowering with a tuned config that says cuDNN
won calls cuDNN for exactly that conv. Nothing is timed here: no GPU.
"""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

import compiler
from compiler.autotune import Target, Tuner, build, candidates, launch_from_meta, load_spaces
from compiler.autotune import measure, make_inputs
from compiler.autotune.baseline import extern_launcher
from compiler.autotune.measurement import device_info, tune
from compiler.autotune.spaces import EXTERN, SearchSettings, grid
from compiler.capture import capture_module
from compiler.codegen.depthwise_baseline import depthwise_choices
from compiler.graph import GraphLowering
from compiler.ir import ExternKernel
from compiler.kernels.load import load_kernel
from compiler.lowering import default_table
from compiler.config import load_options
from pipeline.kernel_tasks import _extern

ON = {"depthwise_baseline": True}

# name: conv kwargs, image size, channels_last
CASES = {
    "3x3 same": (dict(kernel_size=3, padding=1), 9, "off"),
    "5x5 stride 2, NHWC": (dict(kernel_size=5, stride=2, padding=2), 9, "on"),
    "3x3 dilated": (dict(kernel_size=3, padding=2, dilation=2), 8, "off"),
    "1x5 uneven, NHWC": (dict(kernel_size=(1, 5), stride=(1, 2), padding=(0, 2)), 8, "on"),
    "7x7 valid": (dict(kernel_size=7), 9, "off"),
}


class ConvSiLU(torch.nn.Module):
    """A depthwise conv with bias and an activation after it: the kernel's epilogue."""

    def __init__(self, channels: int, **kwargs):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, groups=channels, **kwargs)

    def forward(self, x):
        return F.silu(self.conv(x * 2.0))


class TwoConvs(torch.nn.Module):
    """Two depthwise convs of other shapes, a ReLU between."""

    def __init__(self, channels: int):
        super().__init__()
        self.a = torch.nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.b = torch.nn.Conv2d(channels, channels, 5, stride=2, padding=2, groups=channels)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def _lower(module, x, options, configs=None):
    return compiler.lower(capture_module(module, (x,)), options, "cpu", configs)


def _tuned_kernels(artifact):
    return [k for k in artifact.kernels if k.spec.baseline is not None]


def _run_kernel(kernel, launch, args):
    fn = load_kernel(kernel.name, kernel.source, "cpu")
    config = launch.default
    fn[grid(launch.kind, launch.numels, config)](*args, *launch.int_args, **config.blocks(),
                                                 **config.options())


@pytest.mark.parametrize("case", list(CASES))
def test_baseline_writes_what_the_kernel_writes(case):
    """On the same fresh inputs, the kernel and its baseline (cuDNN's path: ATen's conv,
    then the bias and SiLU as their own kernel) both write eager's result."""
    kwargs, size, layout = CASES[case]
    torch.manual_seed(len(case))
    module, x0 = ConvSiLU(6, **kwargs).eval(), torch.randn(2, 6, size, size)
    art = _lower(module, x0, {**ON, "channels_last": layout})
    (kernel,) = _tuned_kernels(art)
    assert kernel.source.startswith("# depthwise conv 2x6x")
    spec = kernel.spec
    baseline = json.loads(spec.baseline)
    assert baseline["op"] == "aten.convolution.default" and baseline["epilogue"] is not None
    assert baseline["key"].startswith("depthwise:")
    launch = launch_from_meta(kernel, spec.dtypes, spec.extents, device_type="cpu")
    inputs = make_inputs(launch, "cpu", seed=3)
    ours, theirs = [t.clone() for t in inputs], [t.clone() for t in inputs]
    _run_kernel(kernel, launch, ours)
    extern_launcher(kernel, theirs, "cpu")()
    x_arg, w_arg = baseline["args"][:2]
    x = inputs[x_arg["ptr"]].as_strided(x_arg["size"], x_arg["stride"], x_arg["offset"])
    w = inputs[w_arg["ptr"]].as_strided(w_arg["size"], w_arg["stride"], w_arg["offset"])
    (bias,) = [t for k, t in enumerate(inputs[:-1]) if k not in (x_arg["ptr"], w_arg["ptr"])]
    kw = {k: v for k, v in kwargs.items() if k != "kernel_size"}
    want = F.silu(F.conv2d(x, w, bias[:6], groups=6, **kw))
    with torch.no_grad():   # the kernel writes the graph's output: eager's strides
        stride = module(x0).stride()
    for got in (ours[-1], theirs[-1]):
        torch.testing.assert_close(got.as_strided(want.shape, stride), want,
                                   rtol=1e-4, atol=1e-5)


def test_a_bare_conv_writes_the_output_itself():
    """No epilogue: the library conv writes the kernel's output (``aten.convolution.out``)."""
    torch.manual_seed(0)
    module = torch.nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False).eval()
    (kernel,) = _tuned_kernels(_lower(module, torch.randn(1, 4, 6, 6), ON))
    baseline = json.loads(kernel.spec.baseline)
    assert baseline["epilogue"] is None
    launch = launch_from_meta(kernel, kernel.spec.dtypes, kernel.spec.extents, device_type="cpu")
    result = measure(launch, [EXTERN], "cpu")
    assert {m.config: m.status for m in result.measurements} == {
        launch.default: "not_timed", EXTERN: "not_timed"}
    assert max(m.max_abs_error for m in result.measurements) < 1e-5


def test_bfloat16_convnext_norm_kernel_is_found_through_its_permute():
    """ConvNeXt's conv is stored NHWC (permuted) for its norm: its kernel is found, and the
    weight reaches the library conv as bfloat16 (the kernel reads a float32 copy)."""
    from tests.test_lowering_depthwise import ConvNeXtMixer
    torch.manual_seed(0)
    module = ConvNeXtMixer(16).eval().to(torch.bfloat16)
    for layout in ("off", "on"):
        art = _lower(module, torch.randn(2, 16, 10, 10, dtype=torch.bfloat16),
                     {**ON, "channels_last": layout})
        (kernel,) = _tuned_kernels(art)
        weight = json.loads(kernel.spec.baseline)["args"][1]
        assert kernel.spec.dtypes[weight["ptr"]] == "torch.float32"
        assert weight["copy"]["dtype"] == "torch.bfloat16"
        launch = launch_from_meta(kernel, kernel.spec.dtypes, kernel.spec.extents,
                                  device_type="cpu")
        (extern,) = [m for m in measure(launch, [EXTERN], "cpu").measurements
                     if m.config == EXTERN]
        assert extern.status == "not_timed", extern.error


def test_untuned_lowering_has_no_baseline():
    """Option off (the default): the kernel is as before, no title line, no baseline."""
    module, x = ConvSiLU(6, kernel_size=3, padding=1).eval(), torch.randn(2, 6, 9, 9)
    plain, tuned = _lower(module, x, {}), _lower(module, x, ON)
    assert not _tuned_kernels(plain)
    assert not any(k.source.startswith("# depthwise") for k in plain.kernels)
    # the same kernel but its title: another key, so a store keeps both specs apart
    (with_baseline,) = _tuned_kernels(tuned)
    body = with_baseline.source.split("\n", 1)[1]
    assert body in [k.source for k in plain.kernels]
    assert with_baseline.kernel_key not in {k.kernel_key for k in plain.kernels}


def _convs(module, x, configs, options=ON) -> list[str]:
    lowered = GraphLowering(capture_module(module, (x,)).gm, default_table(),
                            load_options(options), target="cpu", configs=configs).lower()
    return [op.kernel for op in lowered.operations if isinstance(op, ExternKernel)]


def test_relowering_sends_exactly_the_conv_cudnn_won_to_cudnn():
    torch.manual_seed(5)
    module, x = TwoConvs(6).eval(), torch.randn(2, 6, 9, 9)
    art = _lower(module, x, ON)
    first, second = _tuned_kernels(art)
    keys = {json.loads(k.spec.baseline)["key"] for k in (first, second)}
    assert len(keys) == 2
    configs = {first.kernel_key: EXTERN.as_dict(),
               second.kernel_key: {"XBLOCK": 64, "num_warps": 2, "num_stages": 2}}
    configs.update(depthwise_choices(art.kernels, configs))
    won = json.loads(first.spec.baseline)["key"]
    assert configs[won] == {"extern": 1} and len(configs) == 3
    assert _convs(module, x, configs) == ["aten.convolution.default"]
    assert _convs(module, x, {}) == []
    # ``conv_kernels = "triton"`` keeps kiln's kernels, tuned or not
    assert _convs(module, x, configs, {**ON, "conv_kernels": "triton"}) == []
    relowered = _lower(module, x, ON, configs)
    assert [json.loads(k.spec.baseline)["key"] for k in _tuned_kernels(relowered)] == [
        json.loads(second.spec.baseline)["key"]]
    compiled = compiler.compile_module(module, (x,), ON, configs=configs)
    assert "aten.convolution" in compiled.compiled.source
    for seed in (1, 2):
        torch.manual_seed(seed)
        fresh = torch.randn_like(x)
        with torch.no_grad():
            torch.testing.assert_close(compiled(fresh), module(fresh), rtol=1e-4, atol=1e-5)


def test_tuner_times_cudnn_as_a_candidate_of_the_kernel():
    """The extern path is a candidate of a kernel with a baseline (``pipeline.kernel_tasks``
    adds it), built as "ok" with no
    cubin, checked against the kernel, always reached by a descent, and a baseline that
    computes something else is a wrong result."""
    torch.manual_seed(1)
    module = ConvSiLU(8, kernel_size=5, padding=2).eval()
    (kernel,) = _tuned_kernels(_lower(module, torch.randn(2, 8, 8, 8), ON))
    spec = kernel.spec
    launch = launch_from_meta(kernel, spec.dtypes, spec.extents, device_type="cpu")
    space = load_spaces()[launch.kind]
    cands = candidates(space, launch.numels)
    assert EXTERN not in cands and _extern(kernel) == [EXTERN]   # as the pipeline adds it
    cands.append(EXTERN)
    assert build(kernel, EXTERN, Target("cuda", 90, 32)).status == "ok"
    result = tune(Tuner(launch, "cpu"), space, cands, SearchSettings(sweep_max=2,
                                                                     descent_budget=2))
    assert result.searched == "descent"
    extern = next(m for m in result.measurements if m.config == EXTERN)
    assert extern.status == "not_timed" and extern.max_abs_error < 1e-4
    baseline = json.loads(spec.baseline)
    weight = baseline["args"][1]   # the filter read transposed
    weight["stride"] = weight["stride"][:2] + weight["stride"][2:][::-1]
    broken = dataclasses.replace(kernel, spec=dataclasses.replace(
        spec, baseline=json.dumps(baseline)))
    launch = launch_from_meta(broken, spec.dtypes, spec.extents, device_type="cpu")
    assert Tuner(launch, "cpu").run(EXTERN).status == "wrong_result"


def test_tune_and_relower_tasks_call_cudnn_where_it_won(tmp_path):
    """The pipeline: the tune task runs ConvNeXt's depthwise kernel and its cuDNN path
    (verified under the interpreter; the times are made up, cuDNN's the faster), and the
    relower task then stores a tuned module that calls cuDNN for those convs."""
    from pipeline.config import ModelSpec
    from pipeline.kernel_tasks import load_stored_kernel
    from pipeline.tasks import LowerJob, capture_task, lower_task
    from pipeline.tune_tasks import TuneJob, tune_kernel
    from pipeline.tuned_tasks import RelowerJob, relower_task, tuned_configs
    from storage import Store
    spec, root = ModelSpec(name="convnext", factory="pipeline.zoo.blocks:convnext_block"), \
        str(tmp_path / "store")
    captured = capture_task(spec, root)
    options = load_options(ON).to_json()
    lowered = lower_task(LowerJob(model=spec.name, graph_key=captured.key, target="cuda",
                                  options_json=options), root)
    assert lowered.status == "ok", lowered.traceback
    store = Store(root)
    shapes = [s for s in lowered.kernel_shapes
              if load_stored_kernel(store, s.kernel_key).spec.baseline]
    assert shapes and all(s.kind.startswith("pointwise") for s in shapes)

    def made_up(launch, reps, config):   # a timer: runs the launch, says cuDNN is faster
        launch()
        return [0.5 if config.extern else 1.0] * reps
    for shape in shapes:
        tuned = tune_kernel(TuneJob(model=spec.name, shape=shape, targets=("sm_90",),
                                    options_json=options), root, "cpu", timer=made_up)
        assert tuned.status == "ok" and "best extern=1" in tuned.note, tuned.note
    device = device_info("cpu").name
    configs = tuned_configs(store, device, lowered.kernel_shapes)
    assert [k for k in configs if k.startswith("depthwise:")]
    job = RelowerJob(model=spec.name, graph_key=captured.key, device_name=device,
                     shapes=lowered.kernel_shapes, options_json=options)
    result = relower_task(job, root)
    assert result.status == "ok", result.traceback
    artifact = store.get_artifact(result.key)
    assert "aten.convolution" in artifact.source
    assert not [k for k in artifact.kernels if k.spec.baseline and k.spec.kind != "conv"]
