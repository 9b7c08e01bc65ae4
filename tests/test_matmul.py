"""The GEMM template (kind "matmul") against eager PyTorch, the off/auto/on choice, its
search space, sm_90 builds of its configs, and tuning it against the extern baseline.

CPU tests run the template under Triton's interpreter (float32 and float16: bfloat16 casts
are unreliable there, see optable_known.py), at dims of at most 70 to keep them quick. The
``gpu`` tests at the end check bfloat16 at BERT's sizes and time template against cuBLAS.
"""
from __future__ import annotations

import dataclasses

import hashlib
import json
import zlib

import pytest
import torch
import torch.nn.functional as F
from torch.fx.experimental.proxy_tensor import make_fx

import compiler
from compiler.autotune import (Config, Target, Tuner, build, candidates, launch_from_meta,
                               load_spaces, measure, tune)
from compiler.autotune.spaces import EXTERN, SearchSettings, matmul_shared_bytes, next_pow2
from compiler.codegen.matmul_select import use_template
from compiler.config import CompilerOptions

SPACE = load_spaces()["matmul"]
ON = {"matmul_template": "on"}
ELF_MAGIC = b"\x7fELF"


def _compile(fn, args, options=None, configs=None):
    gm = make_fx(fn)(*args)
    if configs is None:
        return compiler.compile_fx(gm, list(args), options=options)
    # compile_fx takes no tuned configs: run the passes with them
    from compiler.passes import compile_graph, trace_fx
    from compiler.config import load_options
    from compiler.runtime import load_artifact
    opts = load_options(options)
    artifact, constants = compile_graph(trace_fx(gm, args), "test", opts, "cpu", configs=configs)
    return load_artifact(artifact, opts.code_dir(), constants)


def _check(out, ref, half=False):
    """``half``: the inputs were float16, so even a float32 result went through a float16
    product, which rounds by the accumulation order (kiln's tiles differ from eager's)."""
    if ref.dtype == torch.float32 and not half:
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    else:   # one rounding apart at most: float16 keeps 11 bits
        torch.testing.assert_close(out.float(), ref.float(), rtol=2e-3, atol=2e-3)


def _rand(*size, dtype=torch.float32):
    return torch.randn(*size).to(dtype)


def linear_gelu(x, w, b):
    return (F.gelu(F.linear(x, w, b)),)


def linear_relu_residual(x, w, b, r):
    return (F.linear(x, w, b).relu() + r,)


def mm(a, b):
    return (a @ b,)


def addmm_scaled(c, a, b):
    return (torch.addmm(c, a, b, beta=0.5, alpha=2.0).sigmoid(),)


def bmm(a, b):
    return (torch.bmm(a, b),)


def mm_then_float(a, b):
    return ((a @ b).float() * 3,)


H = torch.float16
CASES = {   # name: (fn, inputs); every case is one template kernel with its epilogue fused
    "mm_ragged": (mm, lambda: (_rand(33, 70), _rand(70, 47))),
    "mm_ragged_fp16": (mm, lambda: (_rand(33, 70, dtype=H), _rand(70, 47, dtype=H))),
    "mm_transposed_weight": (mm, lambda: (_rand(33, 70), _rand(47, 70).t())),
    "addmm_beta_alpha_column_bias": (addmm_scaled, lambda: (_rand(20, 1), _rand(20, 30),
                                                            _rand(30, 18))),
    "bmm": (bmm, lambda: (_rand(3, 33, 20), _rand(3, 20, 17))),
    "bmm_fp16_transposed": (bmm, lambda: (_rand(3, 33, 20, dtype=H),
                                          _rand(3, 17, 20, dtype=H).transpose(1, 2))),
    "linear_bias_gelu": (linear_gelu, lambda: (_rand(4, 6, 16), _rand(40, 16), _rand(40))),
    "linear_relu_residual_fp16": (linear_relu_residual,
                                  lambda: (_rand(4, 6, 16, dtype=H), _rand(40, 16, dtype=H),
                                           _rand(40, dtype=H), _rand(4, 6, 40, dtype=H))),
    "mm_then_cast": (mm_then_float, lambda: (_rand(33, 70, dtype=H), _rand(70, 47, dtype=H))),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_template_matches_eager(name):
    fn, make = CASES[name]
    torch.manual_seed(zlib.crc32(name.encode()) % 1000)   # str hash() varies per process
    args = make()
    compiled = _compile(fn, args, ON)
    assert [k.spec.kind for k in compiled.artifact.kernels] == ["matmul"]
    assert "extern_op('aten." not in compiled.source and "tl.dot(" in compiled.source
    _check(compiled(*args)[0], fn(*args)[0], half=any(a.dtype == H for a in args))


def test_product_with_two_readers_is_stored_and_read_back():
    """The product feeds a reduction too: no epilogue fused, the template stores it."""
    def fn(a, b):
        y = a @ b
        return (y.relu(), y.sum(-1))
    args = (_rand(20, 30), _rand(30, 18))
    compiled = _compile(fn, args, ON)
    template, *rest = compiled.artifact.kernels
    assert template.spec.kind == "matmul" and template.spec.ops == () and rest
    for out, ref in zip(compiled(*args), fn(*args)):
        _check(out, ref)


# The options that changed code before matmul_template existed (the hash of module keys
# stored then).
PRE_TEMPLATE_CODE_FIELDS = ("xblock", "num_warps", "tile_x", "tile_y", "inline_max_reads",
                            "inline_max_ops", "fusion_max_nodes", "fusion_max_ops",
                            "fusion_max_inputs", "inline_constant_numel", "check_inputs",
                            "channels_last")


def test_off_leaves_generated_code_unchanged():
    args = (_rand(4, 6, 16), _rand(40, 16), _rand(40))
    default = _compile(linear_gelu, args)
    off = _compile(linear_gelu, args, {"matmul_template": "off"})
    assert off.source == default.source
    assert "aten_addmm_default(" in off.source and "tl.dot(" not in off.source
    assert [k.spec.kind for k in off.artifact.kernels] == ["pointwise1d"]
    # "off" hashes the options as before the option existed: stored module keys stay valid
    opts = CompilerOptions()
    before = {name: getattr(opts, name) for name in PRE_TEMPLATE_CODE_FIELDS}
    assert opts.options_hash() == hashlib.sha256(
        json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    assert CompilerOptions(matmul_template="on").options_hash() != opts.options_hash()


def test_auto_follows_the_tuned_choice_per_kernel_key():
    torch.manual_seed(1)
    args = (_rand(4, 6, 16), _rand(40, 16), _rand(40))
    ref = linear_gelu(*args)[0]
    auto = {"matmul_template": "auto"}
    untuned = _compile(linear_gelu, args, auto)
    kinds = [(k.spec.kind, k.spec.candidate) for k in untuned.artifact.kernels]
    assert kinds == [("pointwise1d", False), ("matmul", True)]   # cuBLAS runs; template waits
    assert "aten_addmm_default(" in untuned.source
    _check(untuned(*args)[0], ref)
    template = untuned.artifact.kernels[1]
    assert json.loads(template.spec.baseline)["op"] == "aten.addmm.default"
    tuned = {"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 16, "GROUP_M": 1, "num_warps": 4,
             "num_stages": 2}
    won = _compile(linear_gelu, args, auto, {template.kernel_key: tuned})
    assert [k.kernel_key for k in won.artifact.kernels] == [template.kernel_key]
    assert won.artifact.kernels[0].spec.launch.as_json()["tuned"] and "'BLOCK_N': 64" in won.source
    assert "extern_op('aten." not in won.source
    _check(won(*args)[0], ref)
    lost = _compile(linear_gelu, args, auto, {template.kernel_key: EXTERN.as_dict()})
    assert lost.source == untuned.source


def test_dynamic_shapes_keep_the_extern_path():
    """The template is static-shape only: a dynamic batch runs cuBLAS, still correct."""
    from torch.export import Dim
    torch.manual_seed(4)
    model = torch.nn.Sequential(torch.nn.Linear(16, 24), torch.nn.GELU())
    x = torch.randn(6, 16)
    compiled = compiler.compile_module(model, (x,), options=ON,
                                       dynamic_shapes={"input": {0: Dim("b", min=2, max=64)}})
    assert "matmul" not in {k.spec.kind for k in compiled.compiled.artifact.kernels}
    y = torch.randn(9, 16)
    _check(compiled(y), model(y))


def test_precompile_skips_unlaunched_candidates():
    from compiler.kernels.build import kernel_jobs
    args = (_rand(4, 6, 16), _rand(40, 16), _rand(40))
    for mode, expected in (("auto", ["pointwise1d"]), ("on", ["matmul"])):
        compiled = _compile(linear_gelu, args, {"matmul_template": mode})
        kernels = {k.name: k for k in compiled.artifact.kernels}
        names = {n: getattr(compiled.module, n).arg_names for n in kernels}
        jobs = kernel_jobs(compiled.artifact.kernels, names)
        assert [kernels[j.name].spec.kind for j in jobs] == expected


def test_use_template_rejects_unknown_modes():
    assert use_template("on", {"extern": 1}) and not use_template("off", {"BLOCK_M": 64})
    with pytest.raises(ValueError, match="matmul_template"):
        use_template("always", None)


# ----------------------------------------------------------------------------- tuning
@pytest.mark.parametrize("numels", [(1, 4096, 768, 3072), (1, 33, 47, 70), (12, 16, 64, 8)])
def test_matmul_candidates_are_pruned(numels):
    _, m, n, k = numels
    cands = candidates(SPACE, numels)
    assert cands[-1] == EXTERN and EXTERN not in cands[:-1]
    templates = cands[:-1]
    assert templates and len(set(templates)) == len(templates)
    for c in templates:
        assert 16 <= c.BLOCK_M <= max(16, next_pow2(m)) and 16 <= c.BLOCK_N <= max(16, next_pow2(n))
        assert 16 <= c.BLOCK_K <= max(16, next_pow2(k))
        assert matmul_shared_bytes(c) <= SPACE.max_shared_bytes
        assert c.BLOCK_M * c.BLOCK_N <= SPACE.max_tile
        assert c.GROUP_M <= next_pow2(-(-m // c.BLOCK_M))   # equivalent GROUP_Ms collapsed
    assert EXTERN.as_dict() == {"extern": 1} and Config.from_dict({"extern": 1}) == EXTERN


@pytest.fixture(scope="module")
def template_kernel():
    torch.manual_seed(2)
    args = (_rand(4, 6, 16), _rand(40, 16), _rand(40), _rand(4, 6, 40))
    (kernel,) = _compile(linear_relu_residual, args, ON).artifact.kernels
    return kernel


def test_template_configs_build_to_sm90_cubins(template_kernel):
    small = [c for c in candidates(SPACE, (1, 24, 40, 16)) if not c.extern][:2]
    for config in small:
        result = build(template_kernel, config, Target("cuda", 90, 32))
        assert result.status == "ok", result.error
        assert result.cubin[:4] == ELF_MAGIC and result.metadata["shared"] > 0
    extern = build(template_kernel, EXTERN, Target("cuda", 90, 32))
    assert extern.status == "ok" and extern.cubin is None and extern.metadata["extern"]


def test_too_large_template_config_is_a_resource_error():
    a, b = _rand(512, 256, dtype=H), _rand(256, 512, dtype=H)
    (kernel,) = _compile(lambda a, b: (torch.relu(a @ b),), (a, b), ON).artifact.kernels
    huge = Config(BLOCK_M=256, BLOCK_N=256, BLOCK_K=128, GROUP_M=8, num_warps=8, num_stages=5)
    result = build(kernel, huge, Target("cuda", 90, 32))
    assert result.status == "resource_error" and "shared memory" in result.error


def test_tuner_checks_template_configs_and_the_extern_baseline(template_kernel):
    spec = template_kernel.spec
    launch = launch_from_meta(template_kernel, spec.dtypes, spec.extents, device_type="cpu")
    others = [c for c in candidates(SPACE, launch.numels) if c != launch.default][:1]
    result = measure(launch, others + [EXTERN], "cpu")
    statuses = {m.config: m.status for m in result.measurements}
    assert statuses == {launch.default: "not_timed", others[0]: "not_timed",
                        EXTERN: "not_timed"}
    extern = next(m for m in result.measurements if m.config == EXTERN)
    assert extern.max_abs_error < 1e-4


def test_extern_baseline_that_computes_something_else_is_a_wrong_result(template_kernel):
    spec = template_kernel.spec
    baseline = json.loads(spec.baseline)
    baseline["epilogue"]["source"] = baseline["epilogue"]["source"].replace(
        "tl.where(", "-tl.where(")   # the relu's sign flipped
    assert "-tl.where(" in baseline["epilogue"]["source"]
    broken = dataclasses.replace(template_kernel, spec=dataclasses.replace(
        spec, baseline=json.dumps(baseline)))
    launch = launch_from_meta(broken, spec.dtypes, spec.extents, device_type="cpu")
    assert Tuner(launch, "cpu").run(EXTERN).status == "wrong_result"


def test_descent_always_measures_the_extern_baseline():
    a, b = _rand(64, 64), _rand(64, 64)
    (kernel,) = _compile(mm, (a, b), ON).artifact.kernels
    launch = launch_from_meta(kernel, kernel.spec.dtypes, kernel.spec.extents, device_type="cpu")
    cands = candidates(SPACE, launch.numels)
    assert len(cands) > 3
    result = tune(Tuner(launch, "cpu"), SPACE, cands, SearchSettings(sweep_max=2,
                                                                     descent_budget=3))
    assert result.searched == "descent"
    assert EXTERN in {m.config for m in result.measurements}


# ----------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("m,n,k", [(4096, 3072, 768), (4096, 768, 3072), (1000, 700, 300)])
def test_template_matches_eager_bf16_on_gpu(m, n, k):
    torch.manual_seed(3)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k ** 0.5
    b = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    r = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
    fn = lambda x, w, b, r: (F.gelu(F.linear(x, w, b)) + r,)   # noqa: E731
    gm = make_fx(fn)(x, w, b, r)
    compiled = compiler.compile_fx(gm, [x, w, b, r], options=ON)
    assert [k.spec.kind for k in compiled.artifact.kernels] == ["matmul"]
    out = compiled(x, w, b, r)[0].float()
    ref = fn(x.float(), w.float(), b.float(), r.float())[0]
    rel = ((out - ref).norm() / ref.norm()).item()
    assert rel < 1e-2, rel


@pytest.mark.gpu
def test_tuning_times_template_and_cublas_on_gpu():
    x = torch.randn(4096, 768, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(3072, 768, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(3072, device="cuda", dtype=torch.bfloat16)
    gm = make_fx(linear_gelu)(x, w, b)
    (kernel,) = compiler.compile_fx(gm, [x, w, b], options=ON).artifact.kernels
    launch = launch_from_meta(kernel, kernel.spec.dtypes, kernel.spec.extents, device_type="cuda")
    result = measure(launch, [EXTERN], "cuda")
    assert {m.config: m.status for m in result.measurements} == {launch.default: "ok",
                                                                 EXTERN: "ok"}
    assert all(m.median_ms > 0 for m in result.measurements)
