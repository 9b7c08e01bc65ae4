"""Depthwise convolutions lowered to kiln kernels (``compiler/lowering/depthwise.py``),
checked against eager on fresh inputs, in both layouts, with every window parameter."""
from __future__ import annotations

import pytest
import torch

import compiler
from compiler.capture import capture_module
from compiler.config import load_options
from compiler.graph import GraphLowering
from compiler.ir import ExternKernel
from compiler.lowering import default_table


class Depthwise(torch.nn.Module):
    def __init__(self, channels: int, kernel, stride=1, padding=0, dilation=1, bias=True,
                 multiplier: int = 1):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels * multiplier, kernel, stride, padding,
                                    dilation, groups=channels, bias=bias)

    def forward(self, x):
        return torch.nn.functional.silu(self.conv(x * 2.0))


CASES = {
    "3x3 same": dict(kernel=3, padding=1),
    "5x5 stride 2": dict(kernel=5, stride=2, padding=2, bias=False),
    "7x7 convnext": dict(kernel=7, padding=3),
    "3x3 dilated": dict(kernel=3, padding=2, dilation=2),
    "3x3 valid": dict(kernel=3),
    "1x5 uneven": dict(kernel=(1, 5), padding=(0, 2), stride=(1, 2)),
    "padding past the image": dict(kernel=3, padding=4),
    # string paddings reach aten.convolution as one value for both dims ([0])
    "padding='valid', stride 2": dict(kernel=3, stride=2, padding="valid"),
    "padding='same', 3x5": dict(kernel=(3, 5), padding="same"),
}


def _extern_kinds(module, x, options) -> list[str]:
    lowered = GraphLowering(capture_module(module, (x,)).gm, default_table(),
                            load_options(options), target="cpu").lower()
    return [op.kernel for op in lowered.operations if isinstance(op, ExternKernel)]


@pytest.mark.parametrize("layout", ["off", "on"])
@pytest.mark.parametrize("case", list(CASES))
def test_depthwise_convs_are_kiln_kernels_matching_eager(case, layout):
    torch.manual_seed(len(case))
    module, x = Depthwise(6, **CASES[case]).eval(), torch.randn(2, 6, 9, 8)
    options = {"channels_last": layout}
    compiled = compiler.compile_module(module, (x,), options)
    for seed in (1, 2):
        torch.manual_seed(seed)
        fresh = torch.randn_like(x)
        with torch.no_grad():
            got, want = compiled(fresh), module(fresh)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        assert got.stride() == want.stride()
    assert _extern_kinds(module, x, options) == []      # no cuDNN call left


def test_bfloat16_accumulates_in_float32_like_cudnn():
    torch.manual_seed(0)
    module = Depthwise(16, kernel=7, padding=3).eval().to(torch.bfloat16)
    x = torch.randn(2, 16, 12, 12, dtype=torch.bfloat16)
    compiled = compiler.compile_module(module, (x,), {"channels_last": "on"})
    with torch.no_grad():
        got = compiled(x)
        reference = torch.nn.functional.silu(torch.nn.functional.conv2d(
            x.float() * 2.0, module.conv.weight.float(), module.conv.bias.float(),
            padding=3, groups=16))
    torch.testing.assert_close(got.float(), reference, rtol=1.6e-2, atol=1e-2)


class ConvNeXtMixer(torch.nn.Module):
    """ConvNeXt's depthwise conv, then its channels-last LayerNorm (which widens to float32)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = torch.nn.LayerNorm(channels)

    def forward(self, x):
        return self.norm(self.conv(x).permute(0, 2, 3, 1))


def test_a_half_conv_feeding_a_norm_is_stored_half_and_widened_by_its_readers():
    """The norm reads its input three times (mean, variance, normalize), so the conv is
    stored; it is stored as the conv's own bfloat16, not the float32 the norm widens it to
    (same numbers, half the bytes)."""
    torch.manual_seed(0)
    module = ConvNeXtMixer(16).eval().to(torch.bfloat16)
    x = torch.randn(2, 16, 10, 10, dtype=torch.bfloat16)
    for layout in ("off", "on"):
        art = compiler.lower(capture_module(module, (x,)), {"channels_last": layout}, "cpu")
        allocs = [line for line in art.source.splitlines() if "alloc((2, " in line]
        assert allocs and not any("float32" in line for line in allocs), allocs
        # Its 49 taps (a loop over the 7 window rows) read the input once from DRAM, not 49
        # times: the kernel's bytes meta (bandwidth reports) counts shifted loads of one
        # buffer once, the loop's as if unrolled.
        (conv,) = [k for k in art.kernels if "for tap0 in range(1, 7):" in k.source]
        assert conv.spec.bytes_read < 3 * x.numel() * x.element_size()
        assert conv.spec.bytes_read >= x.numel() * x.element_size()
        compiled = compiler.compile_module(module, (x,), {"channels_last": layout})
        for seed in (1, 2):
            torch.manual_seed(seed)
            fresh = torch.randn_like(x)
            with torch.no_grad():
                got, want = compiled(fresh), module(fresh)
            torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)


def test_other_grouped_convs_stay_library_calls():
    module, x = Depthwise(4, kernel=3, padding=1, multiplier=2).eval(), torch.randn(1, 4, 6, 6)
    assert _extern_kinds(module, x, {}) == ["aten.convolution.default"]
    compiled = compiler.compile_module(module, (x,))
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), module(x), rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("case", list(CASES))
def test_depthwise_convs_match_cudnn_on_cuda(case):
    torch.manual_seed(len(case))
    module = Depthwise(48, **CASES[case]).to("cuda", torch.bfloat16,
                                            memory_format=torch.channels_last).eval()
    x = torch.randn(4, 48, 19, 17, device="cuda", dtype=torch.bfloat16)
    compiled = compiler.compile_module(module, (x.to(memory_format=torch.channels_last),))
    for seed in (1, 2):
        torch.manual_seed(seed)
        fresh = torch.randn_like(x).to(memory_format=torch.channels_last)
        with torch.no_grad():
            got, want = compiled(fresh).float(), module(fresh).float()
        assert got.stride() == want.stride()
        assert ((got - want).norm() / want.norm()).item() < 2e-2


def test_conv_kernels_library_leaves_every_conv_to_cudnn():
    """``conv_kernels = "library"`` keeps depthwise (and patchify) convs as library calls;
    a misspelt value is refused by name."""
    module, x = Depthwise(6, kernel=3, padding=1).eval(), torch.randn(2, 6, 9, 8)
    assert _extern_kinds(module, x, {"conv_kernels": "library"}) == ["aten.convolution.default"]
    compiled = compiler.compile_module(module, (x,), {"conv_kernels": "library"})
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), module(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="conv_kernels.*'auto', 'library'.*'cudnn'"):
        load_options({"conv_kernels": "cudnn"})
