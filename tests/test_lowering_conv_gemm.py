"""Convolutions computed as one mm (``compiler/lowering/conv_gemm.py``): 1x1 kernels and
patchify kernels, checked against eager on fresh inputs in both layouts, and the convs that
must stay convolutions."""
from __future__ import annotations

import pytest
import torch

import compiler
from compiler.capture import capture_module
from compiler.config import load_options
from compiler.graph import GraphLowering
from compiler.ir import ExternKernel
from compiler.lowering import default_table

CASES = {
    "1x1": dict(kernel=1),
    "1x1 stride 2": dict(kernel=1, stride=2),
    "4x4 patches (ConvNeXt stem)": dict(kernel=4, stride=4),
    "2x2 patches, odd image (rows dropped)": dict(kernel=2, stride=2, size=9),
    "16x16 patches (ViT)": dict(kernel=16, stride=16, size=32, cin=3),
    "2x1 kernel, 2x3 stride": dict(kernel=(2, 1), stride=(2, 3)),
}


class Conv(torch.nn.Module):
    def __init__(self, cin, cout, kernel, stride=1, bias=True):
        super().__init__()
        self.conv = torch.nn.Conv2d(cin, cout, kernel, stride, bias=bias)

    def forward(self, x):
        return torch.relu(self.conv(x + 1.0))


def _externs(module, x, options) -> list[str]:
    lowered = GraphLowering(capture_module(module, (x,)).gm, default_table(),
                            load_options(options), target="cpu").lower()
    return [op.kernel for op in lowered.operations if isinstance(op, ExternKernel)]


def _rel_err(got, want) -> float:
    return ((got.double() - want.double()).norm() / want.double().norm()).item()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["off", "on"])
@pytest.mark.parametrize("case", list(CASES))
def test_gemm_convs_are_one_mm_matching_eager(case, layout, dtype):
    spec = dict(CASES[case])
    size, cin = spec.pop("size", 8), spec.pop("cin", 6)
    torch.manual_seed(len(case))
    module = Conv(cin, 10, bias=layout == "on", **spec).to(dtype).eval()
    x = torch.randn(2, cin, size, size, dtype=dtype)
    if layout == "on":     # the module and its input channels-last, as users convert them
        module, x = module.to(memory_format=torch.channels_last), \
            x.to(memory_format=torch.channels_last)
    options = {"channels_last": layout}
    compiled = compiler.compile_module(module, (x,), options)
    for seed in (1, 2):
        torch.manual_seed(seed)
        fresh = torch.randn_like(x)
        with torch.no_grad():
            got, want = compiled(fresh), module(fresh)
        assert got.shape == want.shape and got.stride() == want.stride()
        # the same products summed in another order: rounding of the half-type output
        assert _rel_err(got, want) < (2e-2 if dtype == torch.bfloat16 else 4e-3)
    assert _externs(module, x, options) == ["aten.mm.default"]


@pytest.mark.parametrize("why, dtype, kwargs", [
    ("padded", torch.bfloat16, dict(kernel_size=3, padding=1)),
    ("overlapping windows", torch.bfloat16, dict(kernel_size=3, stride=2)),
    ("grouped", torch.bfloat16, dict(kernel_size=1, groups=2)),
    ("float32: cuDNN's TF32 would be lost", torch.float32, dict(kernel_size=1)),
])
def test_other_convs_stay_convolutions(why, dtype, kwargs):
    module = torch.nn.Conv2d(4, 8, **kwargs).to(dtype).eval()
    assert _externs(module, torch.randn(1, 4, 8, 8, dtype=dtype), {}) == \
        ["aten.convolution.default"], why


@pytest.mark.gpu
@pytest.mark.parametrize("case", list(CASES))
def test_gemm_convs_match_eager_on_cuda(case):
    spec = dict(CASES[case])
    size, cin = spec.pop("size", 16), spec.pop("cin", 32)
    torch.manual_seed(len(case))
    module = Conv(cin, 64, **spec).to("cuda", torch.bfloat16,
                                      memory_format=torch.channels_last).eval()
    x = torch.randn(4, cin, size, size, device="cuda", dtype=torch.bfloat16)
    compiled = compiler.compile_module(module, (x.to(memory_format=torch.channels_last),))
    for seed in (1, 2):
        torch.manual_seed(seed)
        fresh = torch.randn_like(x).to(memory_format=torch.channels_last)
        with torch.no_grad():
            got, want = compiled(fresh), module(fresh)
        assert got.stride() == want.stride() and _rel_err(got, want) < 2e-2
