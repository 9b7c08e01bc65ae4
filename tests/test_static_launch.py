"""torch's generic launcher runs kiln's kernels with no host launcher built: the argument plan
is checked against the parameters the binary actually declares (its PTX entry), for sm_90
binaries built on a CPU; launching itself is checked on the GPU."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
import types

import pytest
import torch
import triton

import compiler
from compiler.kernels import precompile as pc
from compiler.kernels import launch as static_launch
from compiler.api import lower
from compiler.capture import capture_module
from compiler.kernels.load import load_module
from pipeline.zoo import blocks

H100 = ("cuda", 90, 32)
PTX_WIDTH = {"u64": 8, "b64": 8, "s64": 8, "u32": 4, "b32": 4, "s32": 4, "f32": 4}
CODE_WIDTH = {"O": 8, "l": 8, "K": 8, "i": 4, "I": 4, "f": 4, "d": 8}

SOURCE = '''
import triton.language as tl

@jit
def kiln_scale(in_ptr0, out_ptr0, xnumel, ynumel, znumel, XBLOCK: tl.constexpr):
    x = tl.program_id(0) * XBLOCK + tl.arange(0, XBLOCK)
    value = tl.load(in_ptr0 + x, mask=x < xnumel)
    tl.store(out_ptr0 + x, value * ynumel + znumel, mask=x < xnumel)
'''


def _ptx_params(compiled) -> list[str]:
    """The parameter types of the binary's entry point, as its PTX declares them."""
    entry = re.search(r"\.entry\s+\w+\s*\((.*?)\)", compiled.asm["ptx"], re.S).group(1)
    return re.findall(r"\.param\s+\.(\w+)", entry)


def _check_against_ptx(compiled, launch_plan) -> None:
    params = _ptx_params(compiled)
    assert len(launch_plan.arg_types) == len(params)
    assert [CODE_WIDTH[c] for c in launch_plan.arg_types] == [PTX_WIDTH[p] for p in params]


def _scale_kernel(tmp_path, monkeypatch, types_, constexprs):
    monkeypatch.setattr(triton.knobs.cache, "dir", str(tmp_path / "triton"))
    module = load_module(SOURCE, "cuda", tmp_path)
    job = pc.KernelJob("kiln_scale", {}, constexprs, {"num_warps": 4, "num_stages": 1},
                       types_, [0, 1])
    return module.kiln_scale, pc.compile_kernel(module.kiln_scale, job, H100)


def test_integers_specialized_to_one_are_dropped(tmp_path, monkeypatch):
    fn, compiled = _scale_kernel(
        tmp_path, monkeypatch,
        {"in_ptr0": "*bf16", "out_ptr0": "*fp32", "xnumel": "i32", "ynumel": "constexpr",
         "znumel": "i64", "XBLOCK": "constexpr"}, {"ynumel": 1, "XBLOCK": 128})
    launch_plan = static_launch.plan(compiled, fn)
    # Positional arguments are (in, out, xnumel, ynumel, znumel); ynumel became a constant.
    assert launch_plan.keep == (0, 1, 2, 4)
    assert launch_plan.arg_types[:4] == "OOil"
    assert launch_plan.name == "kiln_scale" and launch_plan.cubin_path.endswith(".cubin")
    _check_against_ptx(compiled, launch_plan)


@pytest.mark.parametrize("name", ["bert_layer", "resnet_bottleneck", "gpt2_block"])
def test_plans_match_the_binaries_of_a_block(name, tmp_path, monkeypatch):
    module, args = getattr(blocks, name)("tiny")
    artifact = lower(capture_module(module, args), {}, "cuda")
    monkeypatch.setattr(triton.knobs.cache, "dir", str(tmp_path / "triton"))
    loaded = load_module(artifact.source, "cuda", tmp_path, static_shapes=True)
    assert pc.precompile(artifact, loaded, H100, tmp_path, None)["errors"] == {}
    for kernel in artifact.kernels:
        launcher = getattr(loaded, kernel.name)
        (compiled,) = launcher._compiled.values()    # no GPU: Triton's kernel, unwrapped
        launch_plan = static_launch.plan(compiled, launcher.fn)
        assert not isinstance(launch_plan, str), launch_plan
        _check_against_ptx(compiled, launch_plan)


def _with_metadata(compiled, **changes):
    fake = types.SimpleNamespace(**{k: getattr(compiled, k)
                                    for k in ("src", "name", "metadata_group")})
    fake.metadata = compiled.metadata._replace(**changes)
    return fake


def test_what_only_tritons_launcher_runs_is_refused(tmp_path, monkeypatch):
    fn, compiled = _scale_kernel(
        tmp_path, monkeypatch,
        {"in_ptr0": "*fp32", "out_ptr0": "*fp32", "xnumel": "i32", "ynumel": "i32",
         "znumel": "i32", "XBLOCK": "constexpr"}, {"XBLOCK": 64})
    assert not isinstance(static_launch.plan(compiled, fn), str)
    assert "num_ctas" in static_launch.plan(_with_metadata(compiled, num_ctas=2), fn)
    assert "launch_pdl" in static_launch.plan(_with_metadata(compiled, launch_pdl=True), fn)
    assert "global_scratch_size" in static_launch.plan(
        _with_metadata(compiled, global_scratch_size=256), fn)
    hooks = triton.knobs.runtime.launch_enter_hook
    if hasattr(hooks, "add"):                 # Triton >= 3.5: a chain that is never None
        monkeypatch.setattr(hooks, "calls", [lambda *a, **k: None])
    else:
        monkeypatch.setattr(triton.knobs.runtime, "launch_enter_hook", lambda *a, **k: None)
    assert "hook" in static_launch.plan(compiled, fn)


def test_without_the_generic_launcher_kernels_stay_tritons(tmp_path, monkeypatch):
    fn, compiled = _scale_kernel(
        tmp_path, monkeypatch,
        {"in_ptr0": "*fp32", "out_ptr0": "*fp32", "xnumel": "i32", "ynumel": "i32",
         "znumel": "i32", "XBLOCK": "constexpr"}, {"XBLOCK": 64})
    monkeypatch.setattr(static_launch, "_impl", lambda: None)
    assert static_launch.wrap(compiled, fn) is compiled


# ----------------------------------------------------------------------------- on the GPU
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_static_launch_computes_what_tritons_does(dtype, tmp_path):
    assert static_launch.available(), "this torch lacks torch._C._StaticCudaLauncher"
    module = load_module(SOURCE, "cuda", tmp_path)
    x = torch.randn(1000, device="cuda", dtype=dtype)
    want = torch.empty(1000, device="cuda", dtype=torch.float32)
    compiled = module.kiln_scale[(8,)](x, want, 1000, 3, 7, XBLOCK=128)
    kernel = static_launch.wrap(compiled, module.kiln_scale)
    assert static_launch.is_static(kernel)
    got = torch.zeros_like(want)
    kernel[(8, 1, 1)](x, got, 1000, 3, 7, 128)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(got, x.float() * 3 + 7)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["vit_block", "mobilenet_block"])
def test_compiled_blocks_launch_statically_in_graphs(name):
    module, args = getattr(blocks, name)("tiny")
    module, args = module.cuda().eval(), tuple(a.cuda() for a in args)
    compiled = compiler.compile_module(module, args, {"compile_workers": 2})
    report = compiled.compiled.precompiled
    assert report["errors"] == {} and report["static"] == report["kernels"] > 0
    assert report["launchers_built"] == 0          # nothing for gcc to build
    with torch.no_grad():
        torch.testing.assert_close(compiled(*args), module(*args), rtol=2e-3, atol=2e-3)
        fresh = tuple(torch.randn_like(a) if a.is_floating_point() else a for a in args)
        torch.testing.assert_close(compiled(*fresh), module(*fresh), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("name", ["bert_layer", "resnet_bottleneck"])
def test_serving_plans_from_stored_binaries_match_tritons_own(name, tmp_path, monkeypatch):
    """What a serving process derives from a stored row (no Triton): the same job as the
    JIT's, and the same launch plan as from Triton's compiled kernel."""
    from compiler.kernels import serve
    from compiler.kernels.build import build, kernel_jobs
    module, args = getattr(blocks, name)("tiny")
    artifact = lower(capture_module(module, args), {}, "cuda")
    monkeypatch.setattr(triton.knobs.cache, "dir", str(tmp_path / "triton"))
    loaded = load_module(artifact.source, "cuda", tmp_path, static_shapes=True)
    pc.precompile(artifact, loaded, H100, tmp_path, None)
    for kernel in artifact.kernels:
        launcher = getattr(loaded, kernel.name)
        (jit_job,) = kernel_jobs([kernel], {kernel.name: launcher.fn.arg_names})
        job, positional = serve.kernel_job(kernel)
        assert job == jit_job
        result = build(kernel, kernel.spec.launch.config(), H100)
        assert result.ok, result.error
        binary = serve.StoredBinary(result.cubin, result.metadata)
        served = serve._plan(kernel, binary, {}, tmp_path / "scratch", triton.__version__)
        (compiled,) = launcher._compiled.values()
        own = static_launch.plan(compiled, launcher.fn)
        # precompile compiles kernels equal up to their name once (share_compiles), so the
        # JIT launcher may hold a sibling's binary: the plans agree but for the symbol name
        assert served.name == kernel.name
        assert dataclasses.replace(served, cubin_path="", name="") == \
            dataclasses.replace(own, cubin_path="", name="")
        assert Path(served.cubin_path).read_bytes() == result.cubin
    assert "def call(args):" in serve.wrapper_source(artifact.source)
    assert "@jit" not in serve.wrapper_source(artifact.source)
