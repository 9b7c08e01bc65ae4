"""Fusion decisions by bytes saved (issue 3 item 3), and the bytes each kernel records.

Byte counts are checked exactly where they are computable by hand: ``N`` elements of
float32 are ``4 N`` bytes, a row statistic of 6 rows is 24 bytes. Every compiled graph is
also checked against eager on fresh random inputs.
"""
from __future__ import annotations

import re
import warnings

import pytest
import sympy
import torch
import torch.nn.functional as F
from torch.fx.experimental.proxy_tensor import make_fx

import compiler
from compiler.api import lower
from compiler.capture import capture_module, decomposition_table
from compiler.config import load_options
from compiler.graph import GraphLowering
from compiler.ir import ComputedBuffer, ReductionBuffer, loads_of
from compiler.lowering import default_table
from compiler.codegen.planner import TritonPlanner
from compiler.scheduler import (FusedKernel, FusionCosts, FusionLimits, fusion_bytes_saved,
                                remove_dead, schedule)
from pipeline.zoo import blocks

# RuntimeWarning: the interpreter divides in masked-off lanes of unfused kernels too
pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning")]


def _compile(fn, *args, options=None):
    gm = make_fx(fn, decomposition_table=decomposition_table())(*args)
    compiled = compiler.compile_fx(gm, list(args), options)
    for got, want in zip(compiled(*args), fn(*args)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    return compiled


def _ops(fn, *args):
    gm = make_fx(fn, decomposition_table=decomposition_table())(*args)
    lowered = GraphLowering(gm, default_table(), load_options()).lower()
    return lowered, remove_dead(lowered)


def _softmax(x):
    return (torch.softmax(x, -1),)


def _residual_norm(a, b, c, d, e):
    """``s`` reads five inputs and has two users, so lowering realizes it before the norm."""
    s = a * b + c * d - e
    return s, F.layer_norm(s, (s.shape[-1],))


# ----------------------------------------------------------------------------- kernel bytes
def test_pointwise_bytes_count_a_broadcast_read_once_per_element_it_touches():
    x, bias = torch.randn(33, 17), torch.randn(17)
    spec = _compile(lambda x, b: ((x + b).relu(),), x, bias).artifact.kernels[0].spec
    assert spec.bytes_read == 33 * 17 * 4 + 17 * 4      # x, then the 17 biases once
    assert spec.bytes_written == 33 * 17 * 4
    assert spec.bytes == spec.bytes_read + spec.bytes_written


def test_softmax_bytes_and_what_fusion_saved_are_exact():
    x = torch.randn(6, 37)
    n = 6 * 37 * 4                    # the input, or the output, in bytes
    artifact = _compile(_softmax, x).artifact
    (kernel,) = artifact.kernels
    assert (kernel.spec.bytes_read, kernel.spec.bytes_written) == (n, n)
    # unfused: max reads x, writes 6 maxima; sum reads x and the maxima, writes 6 sums;
    # the division reads x, maxima and sums and writes the output
    unfused = (n + 24) + (n + 24 + 24) + (n + 24 + 24 + n)
    assert artifact.meta["fusion"] == {"kernels": 1, "unfused_kernels": 3, "bytes": 2 * n,
                                       "unfused_bytes": unfused, "saved_bytes": unfused - 2 * n}


def test_module_fusion_meta_adds_up_its_kernels():
    module, args = blocks.gpt2_block("tiny")
    artifact = lower(capture_module(module, args), {}, "cuda")
    fusion = artifact.meta["fusion"]
    kernels = [k for k in artifact.kernels if k.spec.kind != "matmul"]   # GEMM templates
    assert fusion["bytes"] == sum(k.spec.bytes for k in kernels)
    assert fusion["kernels"] == len(kernels) < fusion["unfused_kernels"]
    assert fusion["saved_bytes"] == fusion["unfused_bytes"] - fusion["bytes"] > 0


# ----------------------------------------------------------------------------- decisions
def test_division_joining_the_softmax_kernel_saves_the_reread():
    x = torch.randn(6, 37)
    lowered, ops = _ops(_softmax, x)
    costs = FusionCosts(ops, lowered, TritonPlanner())
    (row_max, row_sum, div) = ops
    assert isinstance(row_max, ReductionBuffer) and isinstance(div, ComputedBuffer)
    n = 6 * 37 * 4
    # the maxima joining: x read once, not twice; the maxima still written (div reads them)
    assert fusion_bytes_saved((row_max,), row_sum, costs) == n + 24
    # the division joining: x, maxima and sums not read again, sums and maxima not written
    assert fusion_bytes_saved((row_max, row_sum), div, costs) == n + 2 * (24 + 24)


@pytest.mark.parametrize("cols, kernels", [(37, 1), (20000, 2)])
def test_prologue_fuses_in_registers_but_not_where_a_loop_would_reread_its_inputs(cols, kernels):
    """Persistent rows hold ``s`` in registers: fusing saves re-reading it. A looped row
    kernel would recompute ``s`` in the mean's loop, reading five inputs instead of one."""
    xs = [torch.randn(6, cols) for _ in range(5)]
    lowered, ops = _ops(_residual_norm, *xs)
    prologue, mean = ops[0], ops[1]
    assert type(prologue) is ComputedBuffer and isinstance(mean, ReductionBuffer)
    n = 6 * cols * 4
    saved = fusion_bytes_saved((prologue,), mean, FusionCosts(ops, lowered, TritonPlanner()))
    assert saved == (n if cols == 37 else n - 5 * n)
    compiled = _compile(_residual_norm, *[torch.randn(6, cols) for _ in range(5)])
    assert compiled.kernel_count == kernels


def _excite(x, w):
    """A KxK stencil (K from ``w``) over channels-last ``x`` (NHWC storage read as NCHW),
    activated, then squeeze-excite: the mean over H and W reads its rows with stride C."""
    k = w.shape[0]
    y = F.pad(x.permute(0, 3, 1, 2), (k // 2,) * 4)
    h, wd = x.shape[1], x.shape[2]
    s = F.silu(sum(y[:, :, i:i + h, j:j + wd] * w[i, j] for i in range(k) for j in range(k)))
    return (s * torch.sigmoid(s.mean((2, 3), keepdim=True)),)


@pytest.mark.parametrize("side, taps, steps", [(8, 3, [3]), (48, 3, [1, 2]), (8, 5, [1, 2])])
def test_many_loads_stay_out_of_a_row_kernel_reading_across_rows(side, taps, steps):
    """Rows of 64 run 64 a program, so adjacent channels fill a sector: a 3x3 stencil joins
    the mean's kernel. Rows of 2304 run 4 a program, where each of its nine loads would read
    one element per sector: the stencil gets its own kernel and the mean reads its result
    (the excitation, one load a row, still joins the mean). A 5x5 stencil (25 loads) always
    gets its own kernel."""
    x, w = torch.randn(2, side, side, 16), torch.randn(taps, taps)
    compiled = _compile(_excite, x, w)
    assert compiled.kernel_count == len(steps)
    fresh = torch.randn_like(x)
    torch.testing.assert_close(compiled(fresh, w)[0], _excite(fresh, w)[0],
                               rtol=1e-4, atol=1e-5)
    lowered, _ = _ops(_excite, x, w)
    assert [len(s.nodes) for s in schedule(lowered, FusionLimits(), TritonPlanner())] == steps


@pytest.mark.parametrize("side, taps", [(8, 3), (8, 5), (48, 3)])
def test_moving_loads_counted_before_planning_are_at_most_the_plans(side, taps):
    """The planner refuses a row kernel holding a many-load stencil on a count made before
    planning it (``moving_loads_unplanned``): a lower bound of the moving loads the plan's
    stencil makes, for every group of consecutive operations with a reduction."""
    from compiler.codegen.reduction import load_step, moving_loads_unplanned, plan_row_group
    _, ops = _ops(_excite, torch.randn(2, side, side, 16), torch.randn(taps, taps))
    tried = 0
    for start in range(len(ops)):
        for end in range(start + 2, min(start + 5, len(ops)) + 1):
            nodes = tuple(ops[start:end])
            plan = plan_row_group(nodes) if all(
                isinstance(n, (ComputedBuffer, ReductionBuffer)) for n in nodes) else None
            if plan is None or not plan.rdims:
                continue
            zero = {s: 0 for s, _ in plan.xdims + plan.rdims}
            own = {n.name for n in nodes}
            moving = [sum(load_step(ld, plan.rdims[-1][0], zero) != 0 for ld in loads_of(b)
                          if ld.buffer not in own)
                      for b, kind in zip(plan.bodies, plan.kinds) if kind == "full"]
            assert moving_loads_unplanned(nodes) <= max(moving, default=0)
            tried += 1
    assert tried


class _MeanHW(torch.nn.Module):
    def forward(self, x):
        return x.mean((2, 3))


@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
def test_rows_across_memory_are_read_several_a_program(layout):
    """A mean over H and W of a channels-last tensor reduces rows whose elements are C apart
    and whose neighbours are adjacent: its kernel is marked ``rows_across`` and, for CUDA,
    walks 16 rows a program in a loop (one row a program reads one element per sector). The
    same mean over a contiguous tensor reads along its rows: four rows of 2304 a program,
    held whole."""
    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(2, 64, 48, 48).to(memory_format=memory_format)
    (kernel,) = lower(capture_module(_MeanHW(), (x,)), target="cuda").kernels
    across = layout == "channels_last"
    assert kernel.spec.rows_across is across
    assert dict(kernel.spec.launch.params)["XBLOCK"] == (16 if across else 4)
    assert type(kernel.spec).from_json(kernel.spec.to_json()) == kernel.spec
    compiled = _compile(lambda t: (t.mean((2, 3)),), x)
    fresh = torch.randn_like(x)
    torch.testing.assert_close(compiled(fresh)[0], fresh.mean((2, 3)), rtol=1e-4, atol=1e-5)


def test_same_shaped_buffers_sharing_an_input_save_its_second_read():
    a, b = torch.randn(33, 17), torch.randn(33, 17)

    def two(a, b):
        return ((a * 2).exp() + b.sin() * a, (a.tanh() - b).sigmoid() * a.cos())

    lowered, ops = _ops(two, a, b)
    first, second = ops
    costs = FusionCosts(ops, lowered, TritonPlanner())
    assert fusion_bytes_saved((first,), second, costs) == 2 * 33 * 17 * 4
    assert _compile(two, torch.randn(33, 17), torch.randn(33, 17)).kernel_count == 1


@pytest.mark.parametrize("limit, kernels", [({"fusion_max_nodes": 1}, 3),
                                            ({"fusion_max_nodes": 2}, 2),
                                            ({"fusion_max_inputs": 0}, 3),
                                            ({}, 1)])
def test_size_limits_from_the_options_cap_fusion(limit, kernels):
    compiled = _compile(_softmax, torch.randn(6, 37), options=limit)
    assert compiled.kernel_count == kernels


# ----------------------------------------------------------------------------- zoo structure
def _steps(name: str):
    module, args = getattr(blocks, name)("tiny")
    module = module.to(torch.bfloat16)
    args = tuple(a.to(torch.bfloat16) if a.is_floating_point() else a for a in args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = capture_module(module, args).gm
    lowered = GraphLowering(gm, default_table(), load_options(), target="cuda").lower()
    return lowered, schedule(lowered, FusionLimits(), TritonPlanner())


@pytest.mark.parametrize("name", ["bert_layer", "gpt2_block", "vit_block", "convnext_block"])
def test_normalizations_and_softmax_finish_in_their_row_kernel(name):
    """No pointwise kernel over a normalized tensor re-reads its row statistics: LayerNorm's
    normalization and softmax's division run in the kernel that reduced the rows, whatever
    view they are written as. (ViT's head normalizes only the class token, a slice of the
    rows its final LayerNorm reduced: that one stays a small kernel of its own.)"""
    lowered, steps = _steps(name)
    statistics = {op.name: sympy.Mul(*op.src_size) for op in lowered.operations
                  if isinstance(op, ReductionBuffer)}
    pointwise = [s for s in steps if isinstance(s, FusedKernel)
                 and not any(isinstance(n, ReductionBuffer) for n in s.nodes)]
    for step in pointwise:
        for node in step.nodes:
            rows = {statistics[load.buffer] for load in loads_of(node.body)
                    if load.buffer in statistics}
            assert node.layout.numel() not in rows, (name, step.names)


def test_bert_softmax_is_one_kernel_writing_the_layout_the_bmm_reads():
    lowered, steps = _steps("bert_layer")
    (softmax,) = [s for s in steps if isinstance(s, FusedKernel)
                  and any(isinstance(n, ReductionBuffer) and n.reduction_type == "max"
                          for n in s.nodes)]
    (out,) = softmax.stores
    bmm = [s for s in steps if not isinstance(s, FusedKernel) and s.kernel == "aten.bmm.default"]
    assert any(arg.name == out and arg.is_whole for arg in bmm[1].args)


# ----------------------------------------------------------------------------- realized values
def test_a_value_realized_for_a_matmul_is_read_back_not_recomputed():
    """``h = a + b`` is written once for the matmul; the residual add after it loads ``h``
    (one read) rather than recomputing it from ``a`` and ``b`` (two)."""
    def residual(a, b, w):
        h = a + b
        return (h @ w + h,)

    a, b, w = torch.randn(32, 32), torch.randn(32, 32), torch.randn(32, 32)
    compiled = _compile(residual, a, b, w)
    last = compiled.artifact.kernels[-1].spec
    assert last.bytes_read == 2 * 32 * 32 * 4      # the matmul's output and h
    torch.testing.assert_close(compiled(a, b, w)[0], residual(a, b, w)[0], rtol=1e-4, atol=1e-5)


def test_a_broadcast_realized_for_a_matmul_is_still_read_from_its_source():
    """Expanding 32 biases to 32x32 for the matmul does not make later users read 32x32."""
    def broadcast(bias, w):
        h = bias.expand(32, 32) * 2
        return (h @ w + h,)

    bias, w = torch.randn(32), torch.randn(32, 32)
    compiled = _compile(broadcast, bias, w)
    assert compiled.artifact.kernels[-1].spec.bytes_read == 32 * 32 * 4 + 32 * 4


def test_a_value_several_matmuls_read_through_views_is_written_once():
    """An RMSNorm's output feeding q, k and v projections, each through a view of its own
    (T5, Llama): one kernel computes and writes it, read by all three matmuls; before,
    each matmul realized a copy (two extra kernels and writes per layer)."""
    def qkv(x, w, wq, wk, wv):
        h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w
        return tuple(h.view(-1, 16) @ m for m in (wq, wk, wv))

    args = (torch.randn(2, 8, 16), torch.randn(16), *(torch.randn(16, 16) for _ in range(3)))
    compiled = _compile(qkv, *args)
    assert len(compiled.artifact.kernels) == 1
    for got, want in zip(compiled(*args), qkv(*args)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["bert_layer", "convnext_block"])
def test_reshaped_and_permuted_row_kernels_build_for_sm90(name):
    """The row kernels that write a reshape (BERT's softmax) or a permutation (ConvNeXt's
    channels-first LayerNorm) of their rows compile to sm_90 cubins (no GPU needed)."""
    from compiler.autotune import Config, Target, build
    module, args = getattr(blocks, name)("tiny")
    module = module.to(torch.bfloat16)
    args = tuple(a.to(torch.bfloat16) if a.is_floating_point() else a for a in args)
    artifact = lower(capture_module(module, args), {}, "cuda")
    rows = [k for k in artifact.kernels if k.spec.kind.startswith("reduction")]
    assert rows
    for kernel in rows:
        launch = kernel.spec.launch.as_json()
        config = Config(**{k: v for k, v in launch.items()
                           if k.endswith("BLOCK") or k == "num_warps"})
        result = build(kernel, config, Target("cuda", 90, 32))
        assert result.status == "ok" and result.cubin[:4] == b"\x7fELF", (kernel.name, result.error)


def test_swin_shifted_windows_are_one_kernel():
    """Swin's cyclic shift (roll over two dims: an index_select of an index_select), its
    padding and its window partition compose into one load binding both loaded indices,
    so they fuse with the bias add into one kernel (the inner gather's index symbol once
    leaked unbound into the outer load: NameError '_ind1' in the kernel)."""
    def shifted_windows(x, bias):
        shifted = torch.nn.functional.pad(torch.roll(x, (-2, -2), (1, 2)), (0, 0, 0, 2, 0, 2))
        windows = shifted.view(2, 2, 4, 2, 4, 8).permute(0, 1, 3, 2, 4, 5).reshape(-1, 16, 8)
        return (windows + bias,)

    x, bias = torch.randn(2, 6, 6, 8), torch.randn(8)
    compiled = _compile(shifted_windows, x, bias)
    assert compiled.kernel_count == 1
    fresh = torch.randn(2, 6, 6, 8)
    torch.testing.assert_close(compiled(fresh, bias)[0], shifted_windows(fresh, bias)[0],
                               rtol=0, atol=0)


def test_a_padded_read_fills_the_lanes_it_skips_in_the_load_itself():
    """A read under a mask (padding, a window tap) is one masked load with ``other``: no
    select after it, which was one instruction per tap and element of a depthwise conv."""
    x = torch.randn(4, 6)
    compiled = _compile(lambda t: (F.pad(t, (1, 1, 1, 1)) * 2.0,), x)
    (kernel,) = compiled.artifact.kernels
    assert "other=0.0" in kernel.source
    assert not re.search(r"tl\.where\(.*, 0\.0\)", kernel.source)   # no select of the fill
    fresh = torch.randn_like(x)
    torch.testing.assert_close(compiled(fresh)[0], F.pad(fresh, (1, 1, 1, 1)) * 2.0)
