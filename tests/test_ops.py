"""Every lowered op × shapes × dtypes against eager, on fresh random inputs (tests/optable.py).

Each case is traced with ``make_fx``, compiled with ``compiler.compile_fx`` from one draw of
inputs and called on a second, fresh draw (so nothing of the example values can be baked
in), then compared with eager on that draw. A case must also really lower: no fallback op,
and at least one kernel for pointwise work (none for pure views), so a silent ATen fallback
cannot pass. Output strides must be eager's, views must alias their input, and every input
is compared after the call, so in-place writes must match eager's (and stray ones fail).
CPU runs float32 under Triton's interpreter; ``gpu`` runs float32, float16 and bfloat16 on
CUDA. A failure message carries the seed: ``KILN_TEST_SEED=<seed>`` replays it.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

import compiler
from compiler.passes import trace_fx
from compiler.graph import KilnFallbackWarning
from compiler.lowering import default_table

import optable
from optable import Param
import optable_known

# torch.export / make_fx deprecation chatter is not what these tests are about.
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def _as_tuple_fn(fn):
    """make_fx and compile_fx work on graphs returning a tuple; a case may return one tensor."""
    def graph_fn(*args):
        out = fn(*args)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)
    return graph_fn


def _compile(fn, inputs):
    """compile_fx of make_fx(fn), and the KilnFallbackWarnings it raised."""
    gm = make_fx(fn)(*inputs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", KilnFallbackWarning)
        compiled = compiler.compile_fx(gm, inputs)
    fallbacks = [str(w.message) for w in caught if issubclass(w.category, KilnFallbackWarning)]
    return compiled, fallbacks


def _replica(t: torch.Tensor) -> torch.Tensor:
    """An independent copy of ``t`` with the same strides and storage offset, even for
    layouts with holes (``clone`` would make a step-sliced tensor contiguous)."""
    out = torch.empty(0, dtype=t.dtype, device=t.device)
    return out.set_(t.untyped_storage().clone(), t.storage_offset(), t.size(), t.stride())


def _dense_stride_differs(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Strides differ in a dim that matters (size-1 dims may have any stride)."""
    return any(n != 1 and a != b for n, a, b in zip(want.shape, got.stride(), want.stride()))


def check_param(param: Param) -> None:
    case = param.case
    gen, seed = optable.generator()
    where = f"{param.id} (KILN_TEST_SEED={seed})"
    fn = _as_tuple_fn(case.fn)
    example = optable.make_inputs(case, param.shapes, param.dtype, param.device, gen)
    compiled, fallbacks = _compile(fn, example)

    # It must really have lowered: a fallback would match eager trivially.
    assert compiled.fallback_ops == () and not fallbacks, \
        f"{where}: fell back to ATen for {compiled.fallback_ops} {fallbacks}"
    if case.kernels == "some":
        assert compiled.kernel_count >= 1, f"{where}: generated no kernel"
    elif case.kernels == "none":
        assert compiled.kernel_count == 0, \
            f"{where}: a pure view generated {compiled.kernel_count} kernel(s)"

    fresh = optable.make_inputs(case, param.shapes, param.dtype, param.device, gen)
    # eager runs on its own copy: a case may mutate its inputs, and kiln must mutate them the
    # same way (and leave alone the ones eager leaves alone)
    eager_inputs = [_replica(t) for t in fresh]
    fresh_copy = [_replica(t) for t in fresh]     # untouched by either call
    got = compiled(*fresh)
    want = fn(*eager_inputs)
    if case.tol == "accumulate" and param.dtype in (torch.float16, torch.bfloat16):
        # A half-type sum's result depends on where it rounds: eager CUDA rounds after each
        # atomic add or sums in another order, kiln adds in float32 and rounds once. Both
        # are compared with the float64 result rounded once (DESIGN.md: references in
        # float64 or float32), not with each other.
        want = tuple(w64.to(w.dtype) if w.is_floating_point() else w
                     for w64, w in zip(fn(*[_replica(t).double() if t.is_floating_point()
                                             else _replica(t) for t in fresh_copy]), want))
    assert isinstance(got, tuple) and len(got) == len(want), \
        f"{where}: {len(got)} outputs, eager gives {len(want)}"
    for k, (g, w) in enumerate(zip(got, want)):
        rtol, atol = optable.tolerance(case, w.dtype)
        torch.testing.assert_close(g, w, rtol=rtol, atol=atol, equal_nan=True,
                                   msg=lambda m, k=k: f"{where}: output {k}: {m}")
        # GraphLowering promises eager's output strides (exemptions: see the set's comment).
        if case.name not in optable.META_STRIDES_DIFFER:
            differs = _dense_stride_differs(g, w)
            assert not differs, f"{where}: output {k} strides {g.stride()}, eager {w.stride()}"
        aliases = g.untyped_storage().data_ptr() in {t.untyped_storage().data_ptr() for t in fresh}
        if case.kernels == "none":
            # a view must alias its input like eager's does, not be a copy
            assert aliases, f"{where}: output {k} is a copy, eager returns a view of an input"
        elif case.kernels == "copy":
            # a *_copy op returns a new tensor: writing to it must not change an input
            assert not aliases, f"{where}: output {k} aliases an input, eager returns a new tensor"
    for k, (g, w) in enumerate(zip(fresh, eager_inputs)):
        # inputs are left alone or written like eager's (exactly, unless written by sums
        # in another order: then within the case's tolerance)
        rtol, atol = optable.tolerance(case, g.dtype) if case.tol == "accumulate" else (0, 0)
        torch.testing.assert_close(g, w, rtol=rtol, atol=atol, equal_nan=True,
                                   msg=lambda m, k=k: f"{where}: input {k} after the call: {m}")


def _pytest_params(device: str):
    out = []
    for p in optable.params(device):
        bug = optable_known.known_bug(p)
        marks = [pytest.mark.xfail(strict=True, reason=bug.reason)] if bug else []
        out.append(pytest.param(p, id=p.id, marks=marks))
    return out


@pytest.mark.parametrize("param", _pytest_params("cpu"))
def test_op_cpu(param: Param):
    check_param(param)


@pytest.mark.gpu
@pytest.mark.parametrize("param", _pytest_params("cuda"))
def test_op_gpu(param: Param):
    check_param(param)


# ----------------------------------------------------------------------------- creation
def _check_no_input_graph(device: str):
    """A graph with no inputs at all: only creation ops, on ``device``."""
    def fn():
        return (torch.arange(5, 50, 7, device=device), torch.full((3, 4), -2.5, device=device),
                torch.ones(6, dtype=torch.int32, device=device) * 3)
    compiled, fallbacks = _compile(fn, [])
    assert compiled.fallback_ops == () and not fallbacks
    assert compiled.kernel_count >= 1
    got, want = compiled(), fn()
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.device.type == w.device.type, f"output on {g.device}, eager on {w.device}"
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_creation_without_inputs_cpu():
    _check_no_input_graph("cpu")


@pytest.mark.gpu
@pytest.mark.xfail(strict=True, reason="a graph with no tensor inputs always targets CPU "
                   "(compile_fx takes the target from the first input): torch.ones(6, "
                   "device='cuda') compiles to a module returning CPU tensors")
def test_creation_without_inputs_gpu():
    _check_no_input_graph("cuda")


# ----------------------------------------------------------------------------- not lowered
def test_unlowered_ops_fall_back_and_match_eager():
    """Ops kiln does not lower run as ATen fallbacks: each warns naming the op, appears in
    ``fallback_ops``, and the module still matches eager. The list found is printed."""
    found, problems = {}, []
    for entry in optable_known.UNLOWERED:
        gen, seed = optable.generator()
        case = optable.OpCase(entry.name, entry.fn, entry.args, (entry.shapes,), tol=entry.tol)
        fn = _as_tuple_fn(entry.fn)
        inputs = optable.make_inputs(case, entry.shapes, torch.float32, "cpu", gen)
        compiled, warned = _compile(fn, inputs)
        found[entry.name] = compiled.fallback_ops
        if entry.op not in compiled.fallback_ops:
            problems.append(f"{entry.name}: {entry.op} not in fallback_ops {compiled.fallback_ops}")
        if not any(entry.op in message for message in warned):
            problems.append(f"{entry.name}: no KilnFallbackWarning names {entry.op}: {warned}")
        fresh = optable.make_inputs(case, entry.shapes, torch.float32, "cpu", gen)
        for k, (g, w) in enumerate(zip(compiled(*fresh), fn(*fresh))):
            rtol, atol = optable.tolerance(case, w.dtype)
            try:
                torch.testing.assert_close(g, w, rtol=rtol, atol=atol)
            except AssertionError as err:
                problems.append(f"{entry.name} output {k} (KILN_TEST_SEED={seed}): {err}")
    print("\nops kiln does not lower (ATen fallbacks found):")
    for name, ops in found.items():
        print(f"  {name:14s} -> {', '.join(ops)}")
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------- coverage
# Lowered overloads no case exercises, each with the reason none can.
NOT_EXERCISED = {
    "aten.empty.memory_format": "contents undefined in eager: nothing to compare",
    "aten.empty_like.default": "contents undefined in eager: nothing to compare",
    "aten.new_empty.default": "contents undefined in eager: nothing to compare",
    "aten.contiguous.default": "CompositeImplicit: make_fx records clone, never contiguous",
    "aten.reshape.default": "CompositeImplicit: make_fx records view / _unsafe_view",
    "aten.scaled_dot_product_attention.default":
        "make_fx records the backend kernel; compile_module keeps this op (test_models.py)",
    # each backend's own fused attention kernel, run as an extern: make_fx on this machine
    # records only one of them (sdpa cases), the GPU records the others
    "aten._scaled_dot_product_efficient_attention.default": "CUDA backend kernel (GPU sdpa cases)",
    "aten._scaled_dot_product_flash_attention.default": "CUDA backend kernel (GPU sdpa cases)",
    "aten._scaled_dot_product_cudnn_attention.default": "CUDA backend kernel (GPU sdpa cases)",
    "aten._scaled_dot_product_flash_attention_for_cpu.default": "recorded by the CPU sdpa cases",
}


def _trace_or_none(gm, inputs):
    try:
        return trace_fx(gm, inputs).graph
    except Exception:   # a case that fails to compile is reported by its own test
        return None


def test_table_covers_every_lowered_op():
    """Each ATen op in kiln's lowering table appears in some case's graph (after kiln's own
    decompositions), so a new lowering cannot land without a row in the table."""
    table = default_table()
    seen = set()
    for c in optable.CASE_LIST:
        gen, _ = optable.generator()
        inputs = optable.make_inputs(c, c.shapes[0], torch.float32, "cpu", gen)
        gm = make_fx(_as_tuple_fn(c.fn))(*inputs)
        # the op as the user's graph has it, and as kiln's decompositions hand it to lowering
        for graph in (gm.graph, _trace_or_none(gm, inputs)):
            seen |= {str(n.target) for n in getattr(graph, "nodes", ()) if n.op == "call_function"}
    # an op counts as covered when any of its overloads is exercised
    packets = {str(op).rsplit(".", 1)[0] for op in table.entries}
    seen_packets = {name.rsplit(".", 1)[0] for name in seen}
    skipped = {name.rsplit(".", 1)[0] for name in NOT_EXERCISED}
    missing = sorted(packets - seen_packets - skipped)
    assert not missing, f"lowered ops with no case in tests/optable.py: {missing}"
