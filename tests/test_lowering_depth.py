"""GraphLowering in depth (issue 3): row fusion, memory reuse, mutation, layouts, dynamic shapes.

Each test compiles on CPU (kernels under Triton's interpreter) and checks eager's results
on fresh random inputs, plus the structural property the feature exists for.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.fx.experimental.proxy_tensor import make_fx

import compiler
from compiler.capture import capture_module, decomposition_table
from compiler.config import load_options
from compiler.graph import GraphLowering
from compiler.ir import ExternKernel, MutationBuffer, ScatterBuffer
from compiler.lowering import default_table
from compiler.runtime import InputMismatchError
from pipeline.zoo import blocks


def _fx(fn, *args):
    gm = make_fx(fn, decomposition_table=decomposition_table())(*args)
    return compiler.compile_fx(gm, list(args))


@pytest.mark.parametrize("name, fn, kernels", [
    ("softmax", lambda x: (torch.softmax(x, -1),), 1),
    ("log_softmax", lambda x: (torch.log_softmax(x, -1),), 1),
    ("layer_norm", lambda x: (F.layer_norm(x, (x.shape[-1],)),), 1),
    ("var_mean", lambda x: tuple(torch.var_mean(x, -1)), 1),
    ("rms_norm", lambda x: (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6),), 1),
])
@pytest.mark.parametrize("cols", [37, 5000])   # persistent rows and looped rows
def test_row_ops_are_one_kernel(name, fn, kernels, cols):
    x = torch.randn(6, cols)
    compiled = _fx(fn, x)
    for got, want in zip(compiled(x), fn(x)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert compiled.kernel_count == kernels, compiled.source
    assert compiled.fallback_ops == ()


def test_dead_kernel_outputs_hand_on_their_storage():
    w = torch.randn(32, 32)

    def chain(x, w):
        a = (x * 2).relu() @ w
        b = torch.sigmoid(a) @ w
        return (torch.tanh(b) * 3,)

    x = torch.randn(32, 32)
    compiled = _fx(chain, x, w)
    torch.testing.assert_close(compiled(x, w)[0], chain(x, w)[0], rtol=1e-4, atol=1e-5)
    assert "reuses dead storage" in compiled.source


class _KVCache(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("k", torch.zeros(2, 3, 16, 4))

    def forward(self, x):
        self.k[:, :, 5:7] = x
        return self.k.sum(-1)


def test_kv_cache_update_writes_only_new_rows_in_place():
    module, reference = _KVCache(), _KVCache()
    x = torch.randn(2, 3, 2, 4)
    compiled = compiler.compile_module(module, (x,))
    storage = module.k.data_ptr()
    torch.testing.assert_close(compiled(x), reference(x))
    torch.testing.assert_close(module.k, reference.k)
    assert module.k.data_ptr() == storage          # written in place, not replaced
    lowered = GraphLowering(compiled.captured.gm, default_table(), load_options(),
                            {0: 0}).lower()
    writes = [op for op in lowered.operations if isinstance(op, MutationBuffer)]
    # one write whose grid is the new rows (2 x 3 x 2 x 4), not the 2 x 3 x 16 x 4 cache
    assert len(writes) == 1 and isinstance(writes[0], ScatterBuffer), writes
    assert writes[0].size == (2, 3, 2, 4) and writes[0].store_mask is None
    scatter = [k for k in compiled.compiled.artifact.kernels if "scatter" in k.name]
    assert [list(k.spec.numels) for k in scatter] == [["48"]]


def test_batchnorm_training_updates_running_stats_like_eager():
    bn, ref = torch.nn.BatchNorm2d(4).train(), torch.nn.BatchNorm2d(4).train()
    compiled = compiler.compile_module(bn, (torch.randn(3, 4, 5, 5),))
    for _ in range(3):
        x = torch.randn(3, 4, 5, 5)
        torch.testing.assert_close(compiled(x), ref(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    torch.testing.assert_close(bn.running_var, ref.running_var)
    assert int(bn.num_batches_tracked) == int(ref.num_batches_tracked) == 3


def test_copy_into_an_input_is_applied_in_place():
    def step(stats, x):
        stats.mul_(0.5).add_(x.sum(0))
        return (x * 2,)

    stats, x = torch.randn(4), torch.randn(3, 4)
    expected_stats = stats.clone()
    expected = step(expected_stats, x.clone())
    gm = make_fx(step)(stats.clone(), x)
    compiled = compiler.compile_fx(gm, [stats, x])
    got = compiled(stats, x)
    torch.testing.assert_close(got[0], expected[0])
    torch.testing.assert_close(stats, expected_stats)


@pytest.mark.parametrize("name", ["resnet_bottleneck", "mobilenet_block", "convnext_block"])
def test_channels_last_convolutions_match_eager(name):
    module, args = getattr(blocks, name)("tiny")
    compiled = compiler.compile_module(module, args, {"channels_last": "on"})
    got, want = compiled(*args), module(*args)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert got.stride() == want.stride()            # outputs keep eager's strides
    captured = capture_module(module, args)
    lowered = GraphLowering(captured.gm, default_table(), load_options({"channels_last": "on"}),
                            target="cpu").lower()
    convs = [op for op in lowered.operations
             if isinstance(op, ExternKernel) and op.kernel.startswith("aten.convolution")]
    assert convs and all(op.layouts[0].stride[1] == 1 for op in convs)   # NHWC


def test_channels_last_auto_decides_by_graph_and_target():
    def decide(name, target, dtype=torch.bfloat16):
        module, args = getattr(blocks, name)("tiny")
        module = module.to(dtype)
        args = tuple(a.to(dtype) if a.is_floating_point() else a for a in args)
        gm = capture_module(module, args).gm
        return GraphLowering(gm, default_table(), load_options(), target=target).channels_last

    assert decide("resnet_bottleneck", "cuda")
    assert not decide("resnet_bottleneck", "cuda", torch.float32)   # NHWC fp32 would be TF32
    assert not decide("resnet_bottleneck", "cpu")       # the interpreter gains nothing
    assert not decide("bert_layer", "cuda")             # no convolution at all


class _Attention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(16, 16)
        self.norm = torch.nn.LayerNorm(16)

    def forward(self, x):
        y = self.norm(self.proj(x))
        return torch.softmax(y @ y.transpose(-1, -2), -1) @ y + y.mean()


def test_dynamic_batch_and_sequence_compile_once():
    module = _Attention().eval()
    b = torch.export.Dim("b", min=1, max=64)
    t = torch.export.Dim("t", min=2, max=512)
    compiled = compiler.compile_module(module, (torch.randn(2, 5, 16),),
                                       dynamic_shapes={"x": {0: b, 1: t}})
    for shape in [(2, 5, 16), (3, 7, 16), (5, 33, 16)]:
        x = torch.randn(*shape)
        torch.testing.assert_close(compiled(x), module(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(InputMismatchError, match=r"dim 1 .* outside its allowed range \[2, 512\]"):
        compiled(torch.randn(2, 600, 16))


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["resnet_bottleneck", "bert_layer", "gpt2_block"])
def test_cuda_graph_replay_matches_eager_and_keeps_earlier_outputs(name):
    module, args = getattr(blocks, name)("tiny")
    module = module.cuda()
    args = tuple(a.cuda() for a in args)
    reference = copy.deepcopy(module)
    compiled = compiler.compile_module(module, args, {"cuda_graphs": True})
    assert compiled._graph is not None
    results = []
    for _ in range(3):   # a direct run first, the capture on the second call, replay after
        fresh = tuple(torch.randn_like(a) if a.is_floating_point() else a for a in args)
        got, want = compiled(*fresh), reference(*fresh)
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
        results.append((got.clone(), got))
    for snapshot, returned in results:    # a later replay never overwrote an earlier output
        torch.testing.assert_close(returned, snapshot, rtol=0, atol=0)
    assert compiled._graph._graph is not None


def test_tuned_launch_configs_are_used_keyed_and_checked():
    """A tuned config from the store replaces the heuristic where it can run the kernel."""
    module, args = blocks.vit_block("tiny")
    plain = compiler.compile_module(module, args)
    kernels = [k for k in plain.compiled.artifact.kernels]
    persistent = next(k for k in kernels if k.spec.kind == "reduction_persistent")
    pointwise = next(k for k in kernels if k.spec.kind == "pointwise1d")
    rnumel = int(list(persistent.spec.numels)[1])
    configs = {
        persistent.kernel_key: {"XBLOCK": 1, "RBLOCK": 1 << (rnumel - 1).bit_length(),
                                "num_warps": 2},
        pointwise.kernel_key: {"XBLOCK": 16, "num_warps": 1},
    }
    tuned = compiler.compile_module(module, args, configs=configs)
    by_key = {k.kernel_key: k.spec.launch.as_json() for k in tuned.compiled.artifact.kernels}
    assert by_key[persistent.kernel_key]["XBLOCK"] == 1 and by_key[persistent.kernel_key]["tuned"]
    assert by_key[pointwise.kernel_key]["XBLOCK"] == 16
    assert tuned.compiled.artifact.module_key != plain.compiled.artifact.module_key
    torch.testing.assert_close(tuned(*args), module(*args), rtol=1e-4, atol=1e-5)
    # a persistent config whose RBLOCK cannot hold a row is not used
    short = {persistent.kernel_key: {"XBLOCK": 1, "RBLOCK": 1, "num_warps": 1}}
    fallback = compiler.compile_module(module, args, configs=short)
    launch = {k.kernel_key: k.spec.launch.as_json() for k in fallback.compiled.artifact.kernels}
    assert "tuned" not in launch[persistent.kernel_key]


def test_same_shaped_outputs_sharing_inputs_are_one_kernel():
    """Horizontal fusion: three outputs over the same elements read their inputs once."""
    def three(a, b):
        s = a + b
        return (s.sigmoid(), s * 3, (s.sigmoid() * s).exp())

    a, b = torch.randn(33, 17), torch.randn(33, 17)
    compiled = _fx(three, a, b)
    for got, want in zip(compiled(a, b), three(a, b)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert compiled.kernel_count == 1
    assert compiled.source.count("tl.load(") == 2    # a and b, once each


def test_unrelated_same_shaped_outputs_stay_apart():
    """No shared read, no bytes saved: fusing would only make a bigger kernel."""
    def apart(a, b):
        return (a.sigmoid() * a.exp() + a.sin() * a.cos(), b.tanh() * b.exp() + b.sin())

    a, b = torch.randn(9, 13), torch.randn(9, 13)
    compiled = _fx(apart, a, b)
    for got, want in zip(compiled(a, b), apart(a, b)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert compiled.kernel_count == 2


@pytest.mark.parametrize("norm,shape", [(torch.nn.BatchNorm2d(6), (2, 6, 5, 7)),
                                        (torch.nn.BatchNorm2d(6, affine=False), (2, 6, 5, 7)),
                                        (torch.nn.BatchNorm1d(4), (3, 4, 9))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_inference_batch_norm_lowers_whole(norm, shape, dtype):
    """Eval-mode BatchNorm is kept at capture and lowered as one pointwise op per channel
    (computed in float32 for half inputs, as eager does), with random running statistics."""
    gen = torch.Generator().manual_seed(7)
    norm.running_mean.copy_(torch.randn(norm.num_features, generator=gen))
    norm.running_var.copy_(torch.rand(norm.num_features, generator=gen) + 0.5)
    if norm.affine:
        torch.nn.init.normal_(norm.weight, generator=gen)
        torch.nn.init.normal_(norm.bias, generator=gen)
    norm = norm.eval().to(dtype)
    x = torch.randn(shape, generator=gen).to(dtype)
    compiled = compiler.compile_module(norm, (x,))
    assert compiled.fallback_ops == () and compiled.kernel_count == 1
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(compiled(x), norm(x), rtol=tol, atol=tol)
