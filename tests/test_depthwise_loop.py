"""Depthwise windows summed in a loop over their rows (``ir.loop_sum``, option
``depthwise_loop_taps``): eager's results whatever the window, the same as the unrolled
sum, a loop in the kernel where the window is large enough and every row is live, the
analyses (fusion cost, traffic) counting the loop as if unrolled, and the loop kernels
building for Hopper."""
from __future__ import annotations

import pytest
import torch

import compiler
from compiler.api import lower
from compiler.autotune.spaces import Config
from compiler.capture import capture_module
from compiler.config import OptionsError
from compiler.ir import LOOP_SYMBOL, Load, count_reads_and_ops, index_symbol, loop_sum
from compiler.kernels.build import build

LOOP = f"for {LOOP_SYMBOL} in range(1, "


class Depthwise(torch.nn.Module):
    def __init__(self, channels: int, kernel, stride=1, padding=0, dilation=1, pool=False):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, kernel, stride, padding, dilation,
                                    groups=channels)
        self.pool = pool

    def forward(self, x):
        y = torch.nn.functional.gelu(self.conv(x))
        return y.mean((2, 3)) if self.pool else y


CASES = {   # name: (module kwargs, whether the kernel loops)
    "7x7 same": (dict(kernel=7, padding=3), True),
    "5x5 stride 2": (dict(kernel=5, stride=2, padding=2), True),
    "5x5 dilated 2, one-sided pad": (dict(kernel=5, padding=(1, 3), dilation=2), True),
    "5x7 valid": (dict(kernel=(5, 7)), True),
    "3x3 (too small to loop)": (dict(kernel=3, padding=1), False),
    "7x7 past a 3-row image (dead rows)": (dict(kernel=7, padding=3), False),
    # the conv fuses into the mean's reduction kernel, loop and all
    "7x7 into a mean": (dict(kernel=7, padding=3, pool=True), True),
}


def _sources(module, x, options) -> str:
    with torch.no_grad():
        art = lower(capture_module(module, (x,)), options, "cpu")
    return "\n".join(k.source for k in art.kernels)


@pytest.mark.parametrize("layout", ["off", "on"])
@pytest.mark.parametrize("case", list(CASES))
def test_loop_matches_eager_and_the_unrolled_sum(case, layout):
    kwargs, loops = CASES[case]
    torch.manual_seed(len(case))
    module = Depthwise(8, **kwargs).eval()
    x = torch.randn(2, 8, 3 if "3-row" in case else 11, 10)
    compiled = {taps: compiler.compile_module(module, (x,), {"channels_last": layout,
                                                            "depthwise_loop_taps": taps})
                for taps in (25, 0)}
    source = _sources(module, x, {"channels_last": layout})
    assert (LOOP in source) == loops
    assert LOOP not in _sources(module, x, {"channels_last": layout, "depthwise_loop_taps": 0})
    for seed in (1, 2):
        torch.manual_seed(seed)
        fresh = torch.randn_like(x)
        with torch.no_grad():
            want = module(fresh)
            got = {taps: fn(fresh) for taps, fn in compiled.items()}
        torch.testing.assert_close(got[25], want, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got[25], got[0], rtol=1e-5, atol=1e-6)


def test_analyses_count_the_loop_as_unrolled():
    i0 = index_symbol("i", 0)
    body = Load("arg0", i0 + 16 * LOOP_SYMBOL, torch.float32)
    summed = loop_sum(body, 7)
    assert count_reads_and_ops(summed)[0] == 7       # seven loads, as unrolled
    wider = loop_sum(body, 9)
    assert summed != wider and hash(summed) != hash(wider)


def test_the_option_takes_only_counts():
    with pytest.raises(OptionsError, match="depthwise_loop_taps"):
        compiler.compile_module(Depthwise(2, kernel=5).eval(), (torch.randn(1, 2, 6, 6),),
                                {"depthwise_loop_taps": "yes"})


@pytest.mark.parametrize("kwargs", [dict(kernel=7, padding=3, pool=True),
                                    dict(kernel=5, stride=2, padding=2)])
def test_loop_kernels_build_for_hopper(kwargs):
    """Triton's interpreter (CI's) does not check that a loop keeps its accumulator's type
    and shape; a Hopper build does. Where the mean's reduction reads the conv, the loop sits
    inside the reduction kernel (on the CPU target)."""
    module = Depthwise(32, **kwargs).eval()
    x = torch.randn(2, 32, 14, 14)
    for target in ("cuda", "cpu"):
        with torch.no_grad():
            art = lower(capture_module(module, (x,)), {"channels_last": "on"}, target)
        looped = [k for k in art.kernels if LOOP in k.source]
        assert looped
        for kernel in looped:
            result = build(kernel, Config(**dict(kernel.spec.launch.params)), limits=None)
            assert result.status == "ok", (kernel.name, result.error)


def test_a_loop_sum_sums_its_terms_and_refuses_to_nest(tmp_path):
    """Emitted alone, under the interpreter: ``sum over k < 3 of x[i + 4k]``; a loop inside
    a loop (one counter name for all) is refused at emission, not emitted wrong."""
    import sympy

    from compiler.codegen.triton import generate_kernel
    from compiler.ir import ComputedBuffer, Layout
    from compiler.kernels.source import load_kernel
    i0 = index_symbol("i", 0)
    layout = Layout("cpu", torch.float32, (sympy.Integer(4),), (sympy.Integer(1),))
    body = loop_sum(Load("arg0", i0 + 4 * LOOP_SYMBOL, torch.float32), 3)
    kernel = generate_kernel(ComputedBuffer("buf0", layout, body), 0)
    assert kernel.buffers == ("arg0", "buf0") and not kernel.size_args   # no counter argument
    x, out = torch.randn(12), torch.empty(4)
    load_kernel(kernel.name, kernel.source, "cpu", tmp_path)[(1,)](x, out, 4, XBLOCK=4)
    torch.testing.assert_close(out, x.view(3, 4).sum(0))
    with pytest.raises(ValueError, match="inside another"):
        generate_kernel(ComputedBuffer("buf1", layout, loop_sum(body, 2)), 0)
