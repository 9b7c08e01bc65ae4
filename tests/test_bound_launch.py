"""The generated wrapper binds its launches, ATen ops and allocators once per module load
(``compiler.kernels.host``), and ``call`` does only positional calls.

Checked on CPU: the module's results are bit-identical to the old path (each kernel launched
as ``kernel[grid](*args, **config)``, buffers from ``torch.empty_strided``, ops through
``torch.ops``); the generated ``call`` holds no dict, kwargs or grid work; ops are looked up
once; every private torch helper has a working fallback. A static CUDA module's launches are
checked on this CPU with torch's generic launcher replaced by a recorder: the bound launch
passes exactly what the ``Launcher`` path passed. On the GPU, bit-exact against Triton's
own launch.
"""
from __future__ import annotations

import ast

import pytest
import torch

import compiler
from compiler.api import lower
from compiler.capture import capture_module
from compiler.codegen import wrapper
from compiler.kernels import host, launch, serve
from compiler.kernels.load import load_module
from compiler.runtime import load_artifact
from pipeline.zoo import blocks
from tests.launch_recorder import LaunchRecorder

BLOCKS = ["bert_layer", "resnet_bottleneck", "convnext_block"]


def _artifact(name: str, target: str):
    module, args = getattr(blocks, name)("tiny")
    captured = capture_module(module.eval(), args)
    return lower(captured, {}, target), captured, module, args


def _flat(captured, module, args) -> list:
    state = dict(module.named_parameters()) | dict(module.named_buffers())
    user = iter(args)
    return [state[i.target].detach() if i.target in state else next(user)
            for i in captured.inputs]


def _bound(module) -> dict[str, host.BoundLaunch]:
    return {n: v for n, v in vars(module).items() if isinstance(v, host.BoundLaunch)}


def _legacy(module, artifact, monkeypatch) -> None:
    """The old path in ``module``: launches as ``kernel[grid](*args, **config)``, public
    allocation, aliasing and op calls."""
    for bound in _bound(module).values():
        def run(*args, b=bound):
            return b.kernel[b.grid](*args[:-1], **b.meta)
        monkeypatch.setattr(bound, "run", run)
    monkeypatch.setattr(module, "allocator", lambda device: lambda size, stride, dtype:
                        torch.empty_strided(size, stride, dtype=dtype, device=device))
    monkeypatch.setattr(module, "reinterpret_tensor", host._reinterpret)
    for op in artifact.meta["extern_ops"]:
        monkeypatch.setattr(module, op.replace(".", "_"),
                            host.functools.reduce(getattr, op.split("."), torch.ops))


@pytest.mark.parametrize("name", BLOCKS)
def test_results_are_bit_identical_to_the_old_path_on_cpu(name, tmp_path, monkeypatch):
    artifact, captured, module, args = _artifact(name, "cpu")
    compiled = load_artifact(artifact, tmp_path)
    flat = _flat(captured, module, args)
    with torch.no_grad():
        new = compiled.run_unchecked(list(flat))
        ref = module(*args)
        _legacy(compiled.module, artifact, monkeypatch)
        old = compiled.run_unchecked(list(flat))
    torch.testing.assert_close(new, old, rtol=0, atol=0)
    torch.testing.assert_close(new[0], ref, rtol=2e-4, atol=2e-4)


def _call_problems(source: str) -> list[str]:
    """What ``call`` does per call that the bound section should have done once."""
    tree = ast.parse(source)
    externs = {t.id for node in tree.body if isinstance(node, ast.Assign)
               for t in node.targets if isinstance(t, ast.Name)
               and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") ==
               "extern_op"}
    (call,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "call"]
    problems = []
    for node in ast.walk(call):
        if isinstance(node, (ast.Dict, ast.DictComp, ast.Lambda)):
            problems.append(f"line {node.lineno}: {type(node).__name__}")
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else None
            if isinstance(func, ast.Subscript):
                problems.append(f"line {node.lineno}: launch by subscript (a grid per call)")
            if (node.keywords or any(isinstance(a, ast.Starred) for a in node.args)) \
                    and name not in externs:     # an ATen op's keyword-only arguments
                problems.append(f"line {node.lineno}: keywords or *args in {ast.unparse(func)}")
        if isinstance(node, ast.Attribute) and ast.unparse(node).startswith("torch.ops"):
            problems.append(f"line {node.lineno}: {ast.unparse(node)} looked up per call")
    return problems


OLD_CALL = """
def call(args):
    arg0, = args
    buf0 = torch.empty_strided((4, ), (1, ), dtype=torch.float32, device=arg0.device)
    kiln_pw_relu_0[(1, )](arg0, buf0, 4, XBLOCK=4, num_warps=1)
    buf1 = torch.ops.aten.mm.default(buf0, buf0)
    return (buf1, )
"""


@pytest.mark.parametrize("target", ["cuda", "cpu"])
@pytest.mark.parametrize("name", BLOCKS + ["gpt2_block", "mobilenet_block"])
def test_call_has_no_dict_kwargs_or_lookup_work(name, target):
    artifact = _artifact(name, target)[0]
    assert _call_problems(artifact.source) == []
    launched = [k for k in artifact.kernels if not k.spec.candidate]
    assert artifact.source.count(" = bind_launch(") == len(launched) > 0
    assert artifact.source.count("_launch.run(") == len(launched)


def test_the_source_check_finds_the_old_calls():
    problems = " ".join(_call_problems(OLD_CALL))
    for wanted in ("line 4: keywords or *args in torch.empty_strided", "line 5: launch by "
                   "subscript", "line 5: keywords or *args in kiln_pw_relu_0[",
                   "line 6: torch.ops.aten.mm.default looked up"):
        assert wanted in problems


def test_extern_ops_are_resolved_once_to_their_c_entry(tmp_path, monkeypatch):
    artifact, captured, module, args = _artifact("bert_layer", "cpu")
    lookups = []
    real = host.extern_op

    def counting(name):
        lookups.append(name)
        return real(name)
    monkeypatch.setattr(host, "extern_op", counting)
    compiled = load_artifact(artifact, tmp_path)
    flat = _flat(captured, module, args)
    assert sorted(lookups) == sorted(set(lookups)) == sorted(artifact.meta["extern_ops"])
    with torch.no_grad():
        compiled.run_unchecked(list(flat))
        compiled.run_unchecked(list(flat))
    assert len(lookups) == len(set(lookups))             # no lookup during calls
    assert compiled.module.aten_addmm_default is torch.ops.aten.addmm.default._op


def test_extern_op_fallbacks(monkeypatch):
    missing = host.extern_op("aten.no_such_op_kiln.default")     # loading still works
    with pytest.raises(AttributeError):                  # at the call, as torch.ops would
        missing(torch.ones(1))
    assert host.extern_op("aten.add.Tensor")(torch.ones(1), torch.ones(1)).item() == 2.0
    plain = lambda a, b: a - b                           # an overload without ``_op``
    monkeypatch.setattr(torch.ops.aten.add, "Tensor", plain)
    assert host.extern_op("aten.add.Tensor") is plain


def test_without_private_torch_helpers_results_are_the_same(tmp_path, monkeypatch):
    artifact, captured, module, args = _artifact("resnet_bottleneck", "cpu")
    flat = _flat(captured, module, args)
    with torch.no_grad():
        want = load_artifact(artifact, tmp_path).run_unchecked(list(flat))
        monkeypatch.setattr(host, "_private", lambda name: None)
        monkeypatch.setattr(host, "reinterpret_tensor", host._reinterpret)
        compiled = load_artifact(artifact, tmp_path)     # imported afresh
        assert isinstance(compiled.module.allocator(torch.device("cpu")), host.functools.partial)
        got = compiled.run_unchecked(list(flat))
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert host.raw_stream(torch.device("cpu")) is None
    monkeypatch.delattr(torch._C, "_cuda_getCurrentRawStream", raising=False)
    assert host.raw_stream(torch.device("cuda", 0)) is None


def test_reinterpret_fallback_matches_torchs_alias():
    t = torch.arange(24.0).reshape(4, 6)[1:]
    fast = host.reinterpret_tensor(t, (3, 2), (1, 6), 2)
    assert torch.equal(fast, host._reinterpret(t, (3, 2), (1, 6), 2))
    assert fast.data_ptr() == t.data_ptr() + 2 * t.element_size()


# ------------------------------------------------------ static CUDA modules, launcher recorded
def _recorded_module(name, tmp_path, monkeypatch):
    """A static-shape CUDA module loaded on this CPU, each ``Launcher`` holding a
    ``StaticKernel`` whose launches are recorded."""
    recorder = LaunchRecorder()
    monkeypatch.setattr(launch, "_impl", lambda: recorder)
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda d: 77, raising=False)
    artifact, captured, module, args = _artifact(name, "cuda")
    launched = {k.name: k for k in artifact.kernels if not k.spec.candidate}
    loaded = load_module(artifact.source, "cuda", tmp_path, static_shapes=True,
                         kernels=set(launched))
    for kernel_name, kernel in launched.items():
        launcher = getattr(loaded, kernel_name)
        positional = [p.name for p in launcher.fn.params if not p.is_constexpr]
        plan = launch.LaunchPlan(kernel_name, "k.cubin", tuple(range(len(positional))),
                                 "O" * len(positional), 0, 4, 0)
        launcher._compiled[launch.Launcher._key(kernel.spec.launch.kwargs())] = \
            launch.StaticKernel(None, plan, 0)
    return loaded, recorder, _flat(captured, module, args), launched


def _shape(launch_args):
    function, gx, gy, gz, warps, shared, types, args, stream = launch_args
    return (function, gx, gy, gz, warps, shared, types, stream,
            tuple((a.shape, a.dtype) if isinstance(a, torch.Tensor) else a for a in args))


@pytest.mark.parametrize("name", ["bert_layer", "resnet_bottleneck"])
def test_bound_launch_passes_what_the_launcher_passed(name, tmp_path, monkeypatch):
    loaded, recorder, flat, launched = _recorded_module(name, tmp_path, monkeypatch)
    with torch.no_grad():
        loaded.call(list(flat))          # first call: through each Launcher
        first = list(recorder.launches)
        recorder.launches.clear()
        loaded.call(list(flat))          # then each bound launch calls the launcher directly
    assert len(first) == len(recorder.launches) == len(launched)
    assert [_shape(a) for a in first] == [_shape(a) for a in recorder.launches]
    for bound in _bound(loaded).values():
        assert bound.run.__name__ != "_first_launch"
    assert all(launch_args[-1] == 77 for launch_args in first)


def test_a_misaligned_input_takes_tritons_path(tmp_path, monkeypatch):
    loaded, recorder, flat, launched = _recorded_module("bert_layer", tmp_path, monkeypatch)
    with torch.no_grad():
        loaded.call(list(flat))          # every bound launch is direct now
        recorder.launches.clear()
        slow = []                        # Triton's launch (it would compile for the pointer)
        for launcher in {getattr(loaded, n) for n in launched}:
            monkeypatch.setattr(launcher, "launch", lambda grid, args, kwargs:
                                slow.append(grid))
        misaligned = []
        for t in flat:                   # every input one element off 16-byte alignment
            storage = torch.empty(t.numel() + 1, dtype=t.dtype)[1:]
            misaligned.append(storage.view(t.shape).copy_(t))
        loaded.call(misaligned)
    assert slow and len(slow) + len(recorder.launches) == len(launched)


def test_static_run_picks_the_binarys_arguments():
    recorder = LaunchRecorder()
    kernel = type("K", (), {})()
    kernel.plan = launch.LaunchPlan("k", "k.cubin", (0, 1, 2, 4), "OOil" + "O", 1, 4, 0)
    kernel.function, kernel._launch, kernel.device = "f", recorder._launch_kernel, 0
    kernel._stream = lambda device: 5
    host._static_run(kernel, (2, 1, 1), 5)("a", "b", 3, 1, 9, None)
    host._static_run(kernel, None, 5)((4,), "a", "b", 3, 1, 9, 6)
    assert recorder.launches == [("f", 2, 1, 1, 4, 0, "OOilO", ("a", "b", 3, 9, None), 5),
                                 ("f", 4, 1, 1, 4, 0, "OOilO", ("a", "b", 3, 9, None), 6)]
    kernel.plan = launch.LaunchPlan("k", "k.cubin", (0, 1), "OO", 0, 4, 0)
    host._static_run(kernel, (1, 1, 1), 2)("a", "b", 8)
    assert recorder.launches[-1][-2:] == (("a", "b"), 8)


# ----------------------------------------------------------------------------- on the GPU
@pytest.mark.gpu
@pytest.mark.parametrize("name", ["bert_layer", "resnet_bottleneck", "gpt2_block"])
def test_bound_launch_is_bit_exact_with_tritons_launch_on_cuda(name):
    """Every bound launch of a compiled block against the same kernel launched by Triton
    (``fn[grid](*args, **config)``) on copies of its arguments: bit-identical outputs."""
    model, args = getattr(blocks, name)("tiny")
    model, args = model.cuda().eval(), tuple(a.cuda() for a in args)
    compiled = compiler.compile_module(model, args, {"cuda_graphs": False})
    module = compiled.compiled.module
    assert launch.available()
    with torch.no_grad():
        compiled(*args)            # loads every kernel: every bound launch is direct after
    mismatches, launches = [], 0
    for bound in _bound(module).values():
        direct = bound.run

        def run(*args, b=bound, direct=direct):
            nonlocal launches
            launches += 1
            copies = [a.clone() if isinstance(a, torch.Tensor) else a for a in args[:-1]]
            b.kernel.fn[b.grid](*copies, **b.meta)
            direct(*args)
            torch.cuda.synchronize()
            if not all(torch.equal(c, a) for c, a in zip(copies, args)
                       if isinstance(a, torch.Tensor)):
                mismatches.append(b.kernel.fn.__name__)
        bound.run = run
    with torch.no_grad():
        compiled(*args)
    assert launches and mismatches == []
    assert all(launch.is_static(k) for b in _bound(module).values()
               for k in b.kernel._compiled.values())
    with torch.no_grad():
        torch.testing.assert_close(compiled(*args), model(*args), rtol=2e-3, atol=2e-3)


# ------------------------------------------------------------- modules generated before
OLD_MODULE = '''
import torch
import triton
import triton.language as tl
from compiler.runtime import ensure_strides, reinterpret

@jit
def kiln_pw_add_0(in_ptr0, out_ptr0, xnumel, XBLOCK: tl.constexpr):
    x = tl.program_id(0) * XBLOCK + tl.arange(0, XBLOCK)
    tl.store(out_ptr0 + x, tl.load(in_ptr0 + x, mask=x < xnumel) + 1.0, mask=x < xnumel)


def call(args):
    arg0, = args
    args.clear()
    device = arg0.device
    buf0 = torch.empty_strided((8, ), (1, ), dtype=torch.float32, device=device)
    kiln_pw_add_0[(1, )](arg0, buf0, 8, XBLOCK=8, num_warps=1)
    buf1 = torch.ops.aten.mul.Tensor(buf0, reinterpret(arg0, (8, ), (1, ), 0))
    return (buf1, )
'''


def test_a_module_generated_before_bound_launches_still_runs(tmp_path):
    """Stored modules keep their keys, so a store may hold wrappers of the old form."""
    x = torch.arange(8.0)
    (out,) = load_module(OLD_MODULE, "cpu", tmp_path).call([x])
    assert torch.equal(out, (x + 1) * x)
    static = load_module(OLD_MODULE, "cuda", tmp_path, static_shapes=True)
    assert isinstance(static.kiln_pw_add_0, launch.Launcher)
    assert serve.wrapper_source(OLD_MODULE).endswith(OLD_MODULE[OLD_MODULE.index("\n\n\ndef call"):])


def test_serving_keeps_the_bound_section():
    source = _artifact("bert_layer", "cuda")[0].source
    served = serve.wrapper_source(source)
    assert serve._BOUND.strip() == wrapper.BOUND
    assert wrapper.BOUND_IMPORT in served and " = bind_launch(" in served
    assert "@jit" not in served and "def call(args):" in served
