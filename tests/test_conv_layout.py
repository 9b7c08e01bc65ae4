"""Convolutions: the output strides kiln predicts for the layouts it actually passes (a wrong
prediction costs a copy of the whole output), checked against real convolutions; and the
bias, left out of the call, added in the next kernel instead of an ATen add of its own."""
from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import compiler
import compiler.runtime as runtime
from compiler.api import lower
from compiler.capture import capture_module
from compiler.lowering.conv_layout import conv_output_stride
from pipeline.zoo import blocks

REST = [[1, 1], [1, 1], [1, 1], False, [0, 0]]     # stride, padding, dilation, transposed, ...
N, C, H, W = 2, 8, 5, 5
NCHW, NHWC = (C * H * W, H * W, W, 1), (C * H * W, 1, W * C, C)
DENSE_W, DEPTH_W = (C, C, 3, 3), (C, 1, 3, 3)
DENSE_W_NCHW, DENSE_W_NHWC, DEPTH_W_NCHW = (C * 9, 9, 3, 1), (C * 9, 1, 3 * C, C), (9, 9, 3, 1)

# (input strides, weight size, weight strides, groups)
CASES = {
    "nhwc_input_depthwise": (NHWC, DEPTH_W, DEPTH_W_NCHW, C),
    "nchw_input_depthwise": (NCHW, DEPTH_W, DEPTH_W_NCHW, C),
    "nhwc_input_dense": (NHWC, DENSE_W, DENSE_W_NCHW, 1),
    "nhwc_weight_dense": (NCHW, DENSE_W, DENSE_W_NHWC, 1),
    "nchw_everything_dense": (NCHW, DENSE_W, DENSE_W_NCHW, 1),
}


def _eager_val(device: str, dtype=torch.bfloat16):
    """The graph's output as capture on a CPU host records it: NCHW (eager's input was)."""
    with FakeTensorMode():
        return torch.empty((N, C, H, W), dtype=dtype, device=device)


def _predicted(val, x_stride, w_size, w_stride, groups):
    got = conv_output_stride(val, ((N, C, H, W), x_stride), (w_size, w_stride), REST + [groups])
    return tuple(val.stride()) if got is None else tuple(int(s) for s in got)


def _real(device, x_stride, w_size, w_stride, groups, dtype=torch.bfloat16):
    x = torch.empty_strided((N, C, H, W), x_stride, dtype=dtype, device=device).normal_()
    w = torch.empty_strided(w_size, w_stride, dtype=dtype, device=device).normal_()
    return tuple(torch.ops.aten.convolution.default(x, w, None, *REST, groups).stride())


def test_cuda_rule_follows_the_input_or_weight_layout():
    val = _eager_val("cuda")
    assert _predicted(val, *CASES["nhwc_input_depthwise"]) == NHWC
    assert _predicted(val, *CASES["nhwc_weight_dense"]) == NHWC
    assert _predicted(val, *CASES["nchw_everything_dense"]) == NCHW
    # A weight with one input channel is NCHW- and NHWC-strided at once: NCHW, as in ATen.
    assert _predicted(val, *CASES["nchw_input_depthwise"]) == NCHW
    assert conv_output_stride(_eager_val("cuda", torch.float64), ((N, C, H, W), NHWC),
                              (DEPTH_W, DEPTH_W_NCHW), REST + [C]) is None   # float64: NCHW


@pytest.mark.parametrize("case", sorted(CASES))
def test_cpu_prediction_matches_a_real_cpu_conv(case):
    assert _predicted(_eager_val("cpu"), *CASES[case]) == _real("cpu", *CASES[case])


def test_symbolic_sizes_keep_the_graph_strides():
    import sympy
    s0 = sympy.Symbol("s0", positive=True, integer=True)
    assert conv_output_stride(_eager_val("cuda"), ((s0, C, H, W), NHWC),
                              (DEPTH_W, DEPTH_W_NCHW), REST + [C]) is None


def _conv_lines(source: str) -> list[tuple[str, str]]:
    lines = source.splitlines()
    return [(line, lines[k + 1]) for k, line in enumerate(lines)
            if "aten_convolution_default(" in line]


def test_bias_is_added_by_the_next_kernel():
    module, args = blocks.convnext_block("tiny")
    artifact = lower(capture_module(module, args), {}, "cuda")
    convs = _conv_lines(artifact.source)
    assert convs and all(", None, (" in call for call, _ in convs)   # no bias argument
    # Eager's convs here all have biases, so every one was moved into a kernel.
    assert all(m.bias is not None for m in module.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.fixture
def copies(monkeypatch):
    """Every extern output the generated wrapper copies to the strides it predicted
    (``ensure_strides``: the generated module imports it when loaded)."""
    seen, original = [], runtime.ensure_strides

    def ensure_strides(t, size, stride):
        out = original(t, size, stride)
        if t is not None and out is not t:
            seen.append((tuple(size), t.stride(), tuple(stride)))
        return out

    monkeypatch.setattr(runtime, "ensure_strides", ensure_strides)
    return seen


@pytest.mark.parametrize("name", ["convnext_block", "mobilenet_block", "resnet_bottleneck"])
def test_conv_outputs_are_never_copied(name, copies):
    """Run on CPU (the interpreter): no extern output is copied to other strides, and the
    convs, biases moved, still match eager."""
    module, args = getattr(blocks, name)("tiny")
    module = module.eval()
    compiled = compiler.compile_module(module, args)
    with torch.no_grad():
        torch.testing.assert_close(compiled(*args), module(*args), rtol=2e-4, atol=2e-4)
    assert _conv_lines(compiled.compiled.source) and copies == []


# ----------------------------------------------------------------------------- on the GPU
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("case", sorted(CASES))
def test_cuda_rule_matches_cudnn(case, dtype):
    assert _predicted(_eager_val("cuda", dtype), *CASES[case]) == _real("cuda", *CASES[case],
                                                                        dtype=dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["convnext_block", "mobilenet_block"])
def test_no_conv_output_is_copied_on_the_gpu(name, copies):
    module, args = getattr(blocks, name)("mid")
    module = module.cuda().to(torch.bfloat16).eval()
    args = tuple(a.cuda().to(torch.bfloat16) for a in args)
    with torch.no_grad():
        compiled = compiler.compile_module(module, args, {"cuda_graphs": False})
        got, want = compiled(*args), module(*args)
    torch.testing.assert_close(got, want, rtol=3e-2, atol=3e-2)
    assert copies == []


class _ConvThenRowNorm(torch.nn.Module):
    """A depthwise conv (a kiln kernel of 18 loads an element), then its NHWC permute
    centred over channels (ConvNeXt's block order): the permuted value has two readers and
    many loads, so it is stored."""
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(C, C, 3, padding=1, groups=C)

    def forward(self, x):
        y = self.conv(x).permute(0, 2, 3, 1)
        return (y - y.mean(-1, keepdim=True)).square().sum(-1)


def test_a_value_in_storage_order_is_stored_row_major_in_a_channels_last_graph():
    """Channels-last strides are for NCHW activations. A permuted (N, H, W, C) value whose
    loads run along its last dim is stored row major (its storage order already), not with
    H innermost, where every load computing it would be a gather."""
    module, x = _ConvThenRowNorm().eval(), torch.randn(N, C, H, W)
    stored = [op for op in _lowered_ops(module, x) if tuple(op.layout.size) == (N, H, W, C)]
    assert stored and all(tuple(int(s) for s in op.layout.stride) == (H * W * C, W * C, C, 1)
                          for op in stored), [op.layout for op in stored]
    compiled = compiler.compile_module(module, (x,), {"channels_last": "on"})
    fresh = torch.randn_like(x)
    with torch.no_grad():
        torch.testing.assert_close(compiled(fresh), module(fresh), rtol=1e-4, atol=1e-4)


def _lowered_ops(module, x):
    from compiler.config import load_options
    from compiler.graph import GraphLowering
    from compiler.ir import ComputedBuffer
    from compiler.lowering import default_table
    lowered = GraphLowering(capture_module(module, (x,)).gm, default_table(),
                            load_options({"channels_last": "on"}), target="cuda").lower()
    return [op for op in lowered.operations if type(op) is ComputedBuffer]
