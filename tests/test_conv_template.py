"""The implicit-GEMM conv template (kind "conv", ``compiler/codegen/conv.py``): every case
against eager PyTorch on fresh inputs under Triton's interpreter, what ``conv_kernels``
selects, its search space and default, sm_90 builds, and the cuDNN baseline it is tuned
against. The ``gpu`` test at the end checks ResNet-50's conv shapes in bfloat16.

Sizes are tiny (the interpreter runs every program in Python); float16 and bfloat16 are
compared in float64 by relative error, as ``test_lowering_conv_gemm``.
"""
from __future__ import annotations

import json
import zlib

import pytest
import sympy
import torch
import torch.nn.functional as F

import compiler
from compiler.autotune import Target, build, candidates, launch_from_meta, load_spaces, measure
from compiler.capture import capture_module
from compiler.autotune.spaces import EXTERN, default_config, matmul_shared_bytes
from compiler.codegen.gemm import gemm_of
from compiler.codegen.matmul import generate_matmul
from compiler.ir import BufferRef, ExternKernel, Layout, MatmulTemplate, contiguous_strides
from pipeline.zoo import blocks

B, H = torch.bfloat16, torch.float16
TRITON = {"conv_kernels": "triton"}
ELF_MAGIC = b"\x7fELF"

# name: conv kwargs, channels in/out, image size, layout (input, graph), dtype
CASES = {
    "3x3 stride 1 pad 1": (dict(kernel_size=3, padding=1), 16, 32, 6, "nhwc", H),
    "3x3 stride 2, ragged C_in (window loop)": (dict(kernel_size=3, stride=2, padding=1),
                                                20, 24, 7, "nhwc", B),
    "7x7 stride 2 pad 3, 3 channels (ResNet stem, flat loop)": (
        dict(kernel_size=7, stride=2, padding=3), 3, 16, 12, "nhwc", B),
    "3x3 dilation 2, NCHW": (dict(kernel_size=3, padding=2, dilation=2), 16, 16, 7, "nchw", H),
    "ragged C_out, NCHW": (dict(kernel_size=3, padding=1), 16, 10, 5, "nchw", B),
    "3x3 stride 2 unpadded": (dict(kernel_size=3, stride=2), 32, 16, 7, "nhwc", H),
    "5x3 kernel, stride (2, 1), 4 channels": (
        dict(kernel_size=(5, 3), stride=(2, 1), padding=(2, 1)), 4, 8, 8, "nchw", H),
    "NCHW input into a channels-last graph": (dict(kernel_size=3, padding=1), 16, 16, 5,
                                              "nchw->nhwc", B),
    # reaches aten.convolution as padding [0], one value for both dims
    "padding='valid', stride 2": (dict(kernel_size=3, stride=2, padding="valid"), 16, 16, 7,
                                  "nhwc", H),
}


class ConvResidual(torch.nn.Module):
    """conv (with bias) + residual add + ReLU: the epilogue the template fuses."""

    def __init__(self, cin: int, cout: int, **kwargs):
        super().__init__()
        self.conv = torch.nn.Conv2d(cin, cout, bias=True, **kwargs)

    def forward(self, x, r):
        return torch.relu(self.conv(x) + r)


def _rel_err(got, want) -> float:
    return ((got.double() - want.double()).norm() / want.double().norm()).item()


def _tolerance(dtype) -> float:
    """Sums in another order, rounded to the half type once (bf16 keeps 8 bits)."""
    return 2e-2 if dtype == B else 4e-3


def _inputs(module, cin, size, dtype, nhwc: bool):
    x = torch.randn(2, cin, size, size, dtype=dtype)
    with torch.no_grad():
        r = torch.randn_like(module.conv(x))
    if nhwc:
        x, r = (t.to(memory_format=torch.channels_last) for t in (x, r))
    return x, r


def _kinds(compiled) -> list[str]:
    return [str(k.spec.kind) for k in compiled.compiled.artifact.kernels]


@pytest.mark.parametrize("name", list(CASES))
def test_template_matches_eager(name):
    kwargs, cin, cout, size, layout, dtype = CASES[name]
    torch.manual_seed(zlib.crc32(name.encode()) % 1000)
    module = ConvResidual(cin, cout, **kwargs).to(dtype).eval()
    graph_nhwc = layout.endswith("nhwc")
    if graph_nhwc:
        module = module.to(memory_format=torch.channels_last)
    example = _inputs(module, cin, size, dtype, layout == "nhwc")
    options = {**TRITON, "channels_last": "on" if graph_nhwc else "off"}
    compiled = compiler.compile_module(module, example, options)
    assert "aten.convolution" not in compiled.compiled.source
    kinds = _kinds(compiled)
    if layout == "nchw->nhwc":   # the input copied NHWC first, as cuDNN's path does
        assert kinds.count("conv") == 1 and len(kinds) == 2
    else:                        # bias, residual add and ReLU fused: one kernel
        assert kinds == ["conv"]
    x, r = _inputs(module, cin, size, dtype, layout == "nhwc")   # fresh, never the example
    with torch.no_grad():
        got = compiled(x, r)
        want = module.double()(x.double(), r.double())
    assert got.shape == want.shape and got.dtype == dtype
    assert _rel_err(got, want) < _tolerance(dtype), name


def test_resnet_front_has_no_cudnn_conv_left():
    """ResNet-50's stem, a bottleneck and a strided one (the repo's zoo block, tiny), in
    bfloat16 channels-last: 7x7 and 3x3 convs are templates with their BN and ReLU fused,
    1x1 ones are mms, and no convolution is left to cuDNN."""
    module, (x,) = blocks.resnet_bottleneck("tiny")
    module = module.to(B, memory_format=torch.channels_last)
    x = x.to(B, memory_format=torch.channels_last)
    compiled = compiler.compile_module(module, (x,), {**TRITON, "channels_last": "on"})
    assert "aten.convolution" not in compiled.compiled.source
    kinds = _kinds(compiled)
    assert kinds.count("conv") == 4   # the stem and three 3x3s, each with its BN and ReLU
    assert all("rsqrt" in k.spec.ops for k in compiled.compiled.artifact.kernels
               if k.spec.kind == "conv")
    torch.manual_seed(5)
    fresh = torch.randn_like(x)
    with torch.no_grad():
        got, want = compiled(fresh), module.double()(fresh.double())
    assert _rel_err(got, want) < 3e-2


# ----------------------------------------------------------------------------- selection
def _conv_relu():
    torch.manual_seed(6)
    module = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU())
    return module.to(H).eval(), torch.randn(1, 16, 5, 5, dtype=H)


def _lowered_kinds(module, x, options: dict, target: str) -> list[tuple[str, bool]]:
    artifact = compiler.lower(capture_module(module, (x,)), options, target)
    return [(str(k.spec.kind), k.spec.candidate) for k in artifact.kernels], artifact.source


def test_auto_prefers_the_template_on_gpu_targets_only():
    """``conv_kernels = "auto"`` (the default): the template for a CUDA target, where it spares
    cuDNN's set-up; ATen's conv for a CPU one; under ``matmul_template = "auto"`` the
    template is an unlaunched tuning candidate with cuDNN running."""
    module, x = _conv_relu()
    kinds, source = _lowered_kinds(module, x, {}, "cuda")    # NHWC copies in and out, too
    assert ("conv", False) in kinds and "aten.convolution" not in source
    kinds, source = _lowered_kinds(module, x, {}, "cpu")
    assert kinds == [("pointwise1d", False)] and "aten.convolution" in source
    kinds, source = _lowered_kinds(module, x, {"matmul_template": "auto"}, "cuda")
    assert ("conv", True) in kinds and ("conv", False) not in kinds   # the template waits
    assert "aten.convolution" in source                                # cuDNN runs
    kinds, source = _lowered_kinds(module, x, {"conv_kernels": "library"}, "cuda")
    assert "conv" not in {k for k, _ in kinds} and "aten.convolution" in source


def test_a_tuned_extern_gives_the_conv_back_to_cudnn():
    """Under "auto" a tuned ``{"extern": 1}`` for the template's kernel key (cuDNN won the
    search at that shape) puts the library call back; "triton" keeps the template."""
    module, x = _conv_relu()
    captured = capture_module(module, (x,))
    (kernel,) = [k for k in compiler.lower(captured, {}, "cuda").kernels
                 if str(k.spec.kind) == "conv"]
    tuned = {kernel.kernel_key: {"extern": 1}}
    back = compiler.lower(captured, {}, "cuda", configs=tuned)
    assert "aten.convolution" in back.source
    assert [k.spec.candidate for k in back.kernels if str(k.spec.kind) == "conv"] == [True]
    kept = compiler.lower(captured, TRITON, "cuda", configs=tuned)
    assert "aten.convolution" not in kept.source


@pytest.mark.parametrize("why, dtype, kwargs", [
    ("float32: cuDNN's TF32 would be lost", torch.float32, dict(kernel_size=3, padding=1)),
    ("grouped", H, dict(kernel_size=3, padding=1, groups=2)),
])
def test_ineligible_convs_stay_with_cudnn(why, dtype, kwargs):
    module = torch.nn.Conv2d(4, 8, **kwargs).to(dtype).eval()
    compiled = compiler.compile_module(module, (torch.randn(1, 4, 6, 6, dtype=dtype),), TRITON)
    assert "aten.convolution" in compiled.compiled.source and "conv" not in _kinds(compiled), why


def test_huge_conv_indexes_in_int64():
    """Offsets past 2**31 elements widen the tile indices (codegen only: nothing runs)."""
    n = sympy.Integer
    x = BufferRef("x", (n(64), n(256), n(512), n(512)), (n(256 * 512 * 512), n(1),
                                                         n(512 * 256), n(256)), n(0), True)
    w = BufferRef("w", (n(256), n(256), n(3), n(3)), (n(2304), n(1), n(768), n(256)), n(0), True)
    size = (n(64), n(256), n(512), n(512))
    out = Layout("cuda", B, size, contiguous_strides(size))
    op = ExternKernel(("y",), (out,), "aten.convolution.default",
                      (x, w, None, (1, 1), (1, 1), (1, 1), False, (0, 0), 1), (), False, False)
    assert gemm_of(op).conv is not None
    source = generate_matmul(MatmulTemplate(op), 0, {}).source
    assert "rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)" in source


# ----------------------------------------------------------------------------- tuning
RESNET_SHAPES = {   # (1, M, N, K) at batch 32: stem, a layer1 3x3, a layer4 3x3
    "stem": (1, 32 * 112 * 112, 64, 147), "3x3 64": (1, 32 * 56 * 56, 64, 576),
    "3x3 512": (1, 32 * 7 * 7, 512, 4608)}


@pytest.mark.parametrize("shape", list(RESNET_SHAPES))
def test_conv_space_and_default(shape):
    numels = RESNET_SHAPES[shape]
    space = load_spaces()["conv"]
    cands = candidates(space, numels)
    assert cands[-1] == EXTERN and 20 <= len(cands) <= 80
    assert all(matmul_shared_bytes(c) <= space.max_shared_bytes for c in cands[:-1])
    default = default_config("conv", numels)
    # 64 rows where 128x128 tiles would be too few for the SMs (layer4: 13 x 4 tiles)
    assert default.BLOCK_M == (64 if shape == "3x3 512" else 128)
    assert default.BLOCK_N == min(128, numels[2])
    assert default.BLOCK_K == (32 if shape == "stem" else 64)
    assert matmul_shared_bytes(default) <= 101376    # builds for every listed target


@pytest.fixture(scope="module")
def conv_kernels():
    """One template of each K walk (window, flat), with their epilogues."""
    out = {}
    for name in ("3x3 stride 2, ragged C_in (window loop)",
                 "7x7 stride 2 pad 3, 3 channels (ResNet stem, flat loop)"):
        kwargs, cin, cout, size, _, dtype = CASES[name]
        torch.manual_seed(7)
        module = ConvResidual(cin, cout, **kwargs).to(dtype).eval()
        compiled = compiler.compile_module(module, _inputs(module, cin, size, dtype, False),
                                           {**TRITON, "channels_last": "off"})
        (out[name],) = compiled.compiled.artifact.kernels
    return out


def test_conv_configs_build_to_sm90_cubins(conv_kernels):
    for kernel in conv_kernels.values():
        numels = [int(v) for v in kernel.spec.numels]
        configs = {default_config("conv", numels)}
        configs.add(next(c for c in candidates(load_spaces()["conv"], numels) if not c.extern))
        for config in configs:
            result = build(kernel, config, Target("cuda", 90, 32))
            assert result.status == "ok", result.error
            assert result.cubin[:4] == ELF_MAGIC


def test_tuner_checks_the_cudnn_baseline(conv_kernels):
    for kernel in conv_kernels.values():
        spec = kernel.spec
        launch = launch_from_meta(kernel, spec.dtypes, spec.extents, device_type="cpu")
        result = measure(launch, [EXTERN], "cpu")
        assert {m.config: m.status for m in result.measurements} == \
            {launch.default: "not_timed", EXTERN: "not_timed"}
        extern = next(m for m in result.measurements if m.config == EXTERN)
        assert extern.max_abs_error < 0.1     # half outputs of size ~10


# ----------------------------------------------------------------------------- GPU
# ResNet-50's convs that reach the template (batch 8 here): C_in, C_out, kernel, stride,
# image
GPU_SHAPES = [(3, 64, 7, 2, 224), (64, 64, 3, 1, 56), (128, 128, 3, 2, 56),
              (256, 256, 3, 2, 28), (512, 512, 3, 1, 7)]


@pytest.mark.gpu
@pytest.mark.parametrize("cin, cout, kernel, stride, image", GPU_SHAPES)
def test_template_matches_eager_bf16_on_gpu(cin, cout, kernel, stride, image):
    torch.manual_seed(8)
    conv = torch.nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=True)
    module = torch.nn.Sequential(conv, torch.nn.ReLU())
    module = module.to("cuda", B, memory_format=torch.channels_last).eval()
    x = torch.randn(8, cin, image, image, device="cuda", dtype=B)
    x = x.to(memory_format=torch.channels_last)
    compiled = compiler.compile_module(module, (x,), TRITON)
    assert "aten.convolution" not in compiled.compiled.source
    assert _kinds(compiled) == ["conv"]
    fresh = torch.randn_like(x)
    with torch.no_grad():
        got = compiled(fresh)
        want = F.relu(F.conv2d(fresh.float(), conv.weight.float(), conv.bias.float(),
                               stride, kernel // 2))
    assert got.stride() == module(fresh).stride() and _rel_err(got, want) < 1e-2
