"""2-D tiling of stencil kernels over channels-last outputs (``codegen/triton.py``:
``_channel_loads``): a depthwise conv's kernel tiles channels along X and positions along Y,
so each tap's weight is a column vector loaded once per tile (masked by ``xmask`` alone),
not a load per element; results checked against eager under Triton's interpreter."""
from __future__ import annotations

import re

import pytest
import torch

import compiler
from compiler.api import lower
from compiler.capture import capture_module


class DepthwiseNorm(torch.nn.Module):
    """A depthwise conv and what follows it in ConvNeXt: the kernel's consumers fuse in."""

    def __init__(self, channels: int, kernel: int, stride: int = 1):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, kernel, stride, kernel // 2,
                                    groups=channels)

    def forward(self, x):
        return torch.nn.functional.gelu(self.conv(x)) + 1.0


def _kernels(module, x, target="cpu"):
    with torch.no_grad():
        art = lower(capture_module(module, (x,)), {"channels_last": "on"}, target)
    return art.kernels


def _stencil(kernels):
    (found,) = [k for k in kernels if "logical_and" in k.name]   # the masked-tap kernel
    return found


@pytest.mark.parametrize("channels,kernel,stride", [(24, 5, 1), (40, 5, 2), (96, 7, 1)])
def test_depthwise_kernel_is_tiled_2d_and_matches_eager(channels, kernel, stride):
    torch.manual_seed(channels)
    module = DepthwiseNorm(channels, kernel, stride).eval()
    x = torch.randn(2, channels, 11, 9).to(memory_format=torch.channels_last)
    found = _stencil(_kernels(module, x))
    assert found.spec.kind == "pointwise2d" and found.spec.stencil
    # a weight load per tap of a window row and the bias's, masked by the channel axis only:
    # row vectors. The rows are a loop (``ir.loop_sum``), its first row emitted before it.
    channel_loads = re.findall(r"tl\.load\(in_ptr\d \+ \(([^)]*)\), xmask\)", found.source)
    assert all("xindex" in index and "yindex" not in index for index in channel_loads)
    assert len(channel_loads) == 2 * kernel + 1
    assert f"for tap0 in range(1, {kernel}):" in found.source
    compiled = compiler.compile_module(module, (x,), {"channels_last": "on"})
    for seed in (1, 2):
        torch.manual_seed(seed)
        fresh = torch.randn_like(x)
        with torch.no_grad():
            torch.testing.assert_close(compiled(fresh), module(fresh), rtol=1e-4, atol=1e-5)


def test_small_windows_few_channels_unaligned_rows_and_affines_stay_1d():
    """3x3 windows went either way on a GPU; under 16 channels a tile would be mostly
    masked lanes; rows that do not fill whole 32-byte sectors (20 float32 channels: 80
    bytes) keep the 1-D kernel, which the 2-D one lost to there; a BatchNorm reads four
    per-channel vectors, one load each, and is already at copy bandwidth in 1-D."""
    for channels, kernel in ((32, 3), (8, 5), (20, 5)):
        x = torch.randn(2, channels, 10, 10).to(memory_format=torch.channels_last)
        found = _stencil(_kernels(DepthwiseNorm(channels, kernel).eval(), x))
        assert found.spec.kind == "pointwise1d" and found.spec.stencil   # its own warps
    bn = torch.nn.BatchNorm2d(32).eval()
    bn.running_var.uniform_(0.5, 2.0)
    y = torch.randn(2, 32, 10, 10).to(memory_format=torch.channels_last)
    kinds = {(k.spec.kind, k.spec.stencil) for k in _kernels(bn, y)}
    assert kinds == {("pointwise1d", False)}


def test_stencil_kernels_take_their_own_tile():
    """The spec carries the stencil flag (stored with the kernel), and its heuristic tile
    is ``STENCIL_TILE`` square, not the transposes' ``tile_x`` by ``tile_y``."""
    from compiler.codegen.heuristics import STENCIL_PER_THREAD, STENCIL_TILE
    from compiler.kernels.spec import KernelSpec
    x = torch.randn(2, 64, 12, 12).to(memory_format=torch.channels_last)
    found = _stencil(_kernels(DepthwiseNorm(64, 5).eval(), x, target="cuda"))
    assert found.spec.stencil
    assert KernelSpec.from_json(found.spec.to_json()) == found.spec
    params = dict(found.spec.launch.params)
    assert (params["XBLOCK"], params["YBLOCK"]) == (STENCIL_TILE, STENCIL_TILE)
    assert params["num_warps"] == STENCIL_TILE ** 2 // (32 * STENCIL_PER_THREAD[2])


@pytest.mark.parametrize("channels,kernel", [(32, 3), (20, 5)])
def test_1d_stencils_take_more_warps_than_a_copy(channels, kernel):
    """A 1-D kernel of 9 taps or more runs ``STENCIL_PER_THREAD[1]`` elements a thread
    where a plain 1-D kernel of the same block runs 8; a pointwise kernel without taps keeps
    the plain heuristic."""
    from compiler.codegen.heuristics import STENCIL_PER_THREAD
    x = torch.randn(2, channels, 16, 16).to(memory_format=torch.channels_last)
    kernels = _kernels(DepthwiseNorm(channels, kernel).eval(), x, target="cuda")
    found = _stencil(kernels)
    params = dict(found.spec.launch.params)
    assert found.spec.kind == "pointwise1d" and found.spec.stencil
    assert params["num_warps"] == min(16, params["XBLOCK"] // (32 * STENCIL_PER_THREAD[1]))
    plain = [k for k in kernels if k.spec.kind == "pointwise1d" and not k.spec.stencil]
    for k in plain:
        p = dict(k.spec.launch.params)
        assert p["num_warps"] == max(1, min(4, p["XBLOCK"] // 256))


def test_stencil_candidates_stop_at_their_elements_per_thread():
    """A stencil kernel's candidates hold at most ``STENCIL_MAX_ELEMS_PER_THREAD`` elements a
    thread (past it a 7x7 kernel spills); the same kind's plain kernels keep the space's
    own limit, which admits more."""
    from compiler.autotune import candidates, load_spaces
    from compiler.autotune.spaces import STENCIL_MAX_ELEMS_PER_THREAD
    spaces = load_spaces()
    per_thread = lambda c: c.tile / (32 * c.num_warps)
    for kind, numels in (("pointwise2d", (96, 100352)), ("pointwise1d", (4816896,))):
        plain = candidates(spaces.of_kernel(kind), numels)
        stencil = candidates(spaces.of_kernel(kind, stencil=True), numels)
        assert max(map(per_thread, plain)) > STENCIL_MAX_ELEMS_PER_THREAD
        assert max(map(per_thread, stencil)) == STENCIL_MAX_ELEMS_PER_THREAD
        assert set(stencil) == {c for c in plain if per_thread(c) <= STENCIL_MAX_ELEMS_PER_THREAD}
