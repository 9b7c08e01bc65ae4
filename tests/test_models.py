"""The tiny zoo end to end: an MLP (LayerNorm, GELU), a conv net (BatchNorm, max-pool) and a
transformer block (attention), compiled three ways and compared with eager on fresh inputs.

    compile_module(module, args)             torch.export capture, live weights as inputs
    compile_fx(make_fx(module)(*args), args) an ATen graph with the weights as constants
    torch.compile(module, backend="kiln")    dynamo + aot_autograd, then compile_fx

CPU runs float32 (kernels under Triton's interpreter); ``gpu`` runs float32, float16 and
bfloat16 on CUDA. Each compile prints ``model, dtype, kernels=N, fallbacks=[...]``.
Accuracy is the relative error (``||got - ref|| / ||ref||``) against eager float64 on CPU,
on the same (rounded) weights and inputs. It must be within a per-dtype bound, or at most
twice eager's own error at that dtype (cuDNN convolutions run in TF32 by default, and kiln
may run them in another layout, so float32 results can differ from eager's by more than
float32 rounding); both errors are printed.
"""
from __future__ import annotations

import re
import warnings

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

import compiler
from compiler.graph import KilnFallbackWarning
from pipeline.zoo import tiny

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

MODELS = {"mlp": tiny.mlp, "convnet": tiny.convnet, "transformer_block": tiny.transformer_block}
# Relative error vs float64 eager. float32: reassociated sums only. Half types: kiln keeps
# fused intermediates in float32, so it is usually closer to the reference than eager is.
REL_TOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}
GPU_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _build(name: str, device: str, dtype: torch.dtype):
    module, args = MODELS[name]()
    return module.to(device=device, dtype=dtype), tuple(a.to(device=device, dtype=dtype) for a in args)


def _fresh_like(args) -> tuple[torch.Tensor, ...]:
    """New random inputs of the same signature (nothing of the example may be baked in)."""
    return tuple(torch.randn(a.shape, dtype=torch.float32).to(a.device, a.dtype) for a in args)


def _reference(name: str, module, args) -> torch.Tensor:
    """Eager float64 on CPU, on the (already rounded) weights and inputs of ``module``."""
    ref_module, _ = MODELS[name]()
    ref_module.load_state_dict({k: v.double().cpu() for k, v in module.state_dict().items()})
    with torch.no_grad():
        return ref_module.double()(*(a.double().cpu() for a in args))


def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.double().cpu() - ref).norm() / ref.norm()).item()


def _report(how: str, name: str, dtype, kernels, fallbacks, err: float, eager_err: float):
    print(f"\n{how}: {name}, {str(dtype).removeprefix('torch.')}, kernels={kernels}, "
          f"fallbacks={list(fallbacks)}, rel_err={err:.2e} (eager {eager_err:.2e})")


def _check(how: str, name: str, compiled_call, module, args, dtype, kernels, fallbacks):
    fresh = _fresh_like(args)
    with torch.no_grad():
        got = compiled_call(*fresh)
        eager = module(*fresh)
    assert isinstance(got, torch.Tensor), f"{how} {name}: returned {type(got).__name__}"
    assert got.shape == eager.shape and got.dtype == eager.dtype and \
        got.device == eager.device, f"{how} {name}: {got.shape} {got.dtype} {got.device} " \
                                    f"vs eager {eager.shape} {eager.dtype} {eager.device}"
    ref = _reference(name, module, fresh)
    err, eager_err = _rel_err(got, ref), _rel_err(eager, ref)
    _report(how, name, dtype, kernels, fallbacks, err, eager_err)
    assert torch.isfinite(got).all(), f"{how} {name}: non-finite outputs"
    bound = max(REL_TOL[dtype], 2 * eager_err)
    assert err <= bound, f"{how} {name} {dtype}: relative error {err:.2e} > {bound:.1e} " \
                         f"(eager's own: {eager_err:.2e})"


def _compile_quietly(build):
    """Run a compile; the fallback warnings it raises are reported by the test, not pytest."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", KilnFallbackWarning)
        compiled = build()
    warned = sorted({re.search(r"no lowering for (\S+);", str(w.message)).group(1)
                     for w in caught if issubclass(w.category, KilnFallbackWarning)})
    return compiled, warned


def run_compile_module(name: str, device: str, dtype: torch.dtype):
    module, args = _build(name, device, dtype)
    compiled, warned = _compile_quietly(lambda: compiler.compile_module(module, args))
    assert compiled.kernel_count >= 1, f"{name}: no kernels generated"
    # every fallback is announced by a warning, and only those are
    assert sorted(compiled.fallback_ops) == warned, (compiled.fallback_ops, warned)
    _check("compile_module", name, compiled, module, args, dtype, compiled.kernel_count,
           compiled.fallback_ops)


def run_compile_fx(name: str, device: str, dtype: torch.dtype):
    module, args = _build(name, device, dtype)
    with torch.no_grad():
        gm = make_fx(module)(*args)
    compiled, warned = _compile_quietly(lambda: compiler.compile_fx(gm, list(args)))
    assert compiled.kernel_count >= 1, f"{name}: no kernels generated"
    assert sorted(compiled.fallback_ops) == warned, (compiled.fallback_ops, warned)

    def call(*xs):
        outs = compiled(*xs)
        assert len(outs) == 1, f"{name}: {len(outs)} outputs"
        return outs[0]

    _check("compile_fx", name, call, module, args, dtype, compiled.kernel_count,
           compiled.fallback_ops)


def run_torch_compile(name: str, device: str, dtype: torch.dtype):
    try:
        import compiler.backend  # noqa: F401  registers backend="kiln"
    except ImportError as err:
        pytest.skip(f"compiler.backend does not import: {err}")
    import compiler.api
    torch._dynamo.reset()
    module, args = _build(name, device, dtype)
    compiled = torch.compile(module, backend="kiln")
    graphs = []
    real_compile_fx = compiler.api.compile_fx

    def recording_compile_fx(*a, **kw):   # the backend calls compiler.api.compile_fx
        graphs.append(real_compile_fx(*a, **kw))
        return graphs[-1]

    with torch.no_grad(), warnings.catch_warnings(), pytest.MonkeyPatch.context() as patch:
        warnings.simplefilter("ignore", KilnFallbackWarning)
        patch.setattr(compiler.api, "compile_fx", recording_compile_fx)
        compiled(*args)   # compile on the example, then check on fresh inputs
    # one graph: a graph break would run part of the model in eager, unseen by this test
    assert len(graphs) == 1, f"{name}: dynamo handed kiln {len(graphs)} graphs"
    kernels = sum(g.kernel_count for g in graphs)
    assert kernels >= 1, f"{name}: no kernels generated"
    fallbacks = sorted({op for g in graphs for op in g.fallback_ops})
    _check("torch.compile", name, compiled, module, args, dtype, kernels, fallbacks)


RUNNERS = {"compile_module": run_compile_module, "compile_fx": run_compile_fx,
           "torch_compile": run_torch_compile}

# Compiler bugs these runs found: (model, how, device, dtype) -> the symptom. Strict xfails,
# so a fix shows up as XPASS and the entry must go.
MODEL_BUGS: dict = {}   # none open; an entry turns a run into a strict xfail


def _run(name, how, device, dtype, request):
    reason = MODEL_BUGS.get((name, how, device, dtype))
    if reason:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    RUNNERS[how](name, device, dtype)


@pytest.mark.parametrize("how", list(RUNNERS))
@pytest.mark.parametrize("name", list(MODELS))
def test_model_cpu(name, how, request):
    _run(name, how, "cpu", torch.float32, request)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("how", list(RUNNERS))
@pytest.mark.parametrize("name", list(MODELS))
def test_model_gpu(name, how, dtype, request):
    _run(name, how, "cuda", dtype, request)
