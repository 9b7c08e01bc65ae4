"""The tune task launches candidates from the build stage's stored binaries (issue 16), and
stops a launch-bound kernel early. On CPU a cubin cannot launch, so a fake loader stands in
for ``kernels.stored.load_stored`` (it runs the kernel under the interpreter); everything
else (the store's binaries rows, which config gets which binary, the JIT path that must not
run) is real. The GPU tests launch real stored cubins.
"""
from __future__ import annotations

import json
import shutil

import pytest
import triton

from compiler.autotune import Config, launch_from_meta
from compiler.autotune.halving import successive_halving
from compiler.kernels.build import build
from compiler.kernels.serve import StoredBinary, binary_mismatch
from compiler.kernels.source import load_kernel
from compiler.kernels.spec import Target
from compiler.kernels.stored import config_job
from pipeline.tune_tasks import TuneJob, tune_kernel
from storage import BinaryRecord, Store
from tests.given_timer import GivenTimer
from tests.test_autotune_cost import (A, B, C, fake_measure, lowered, shape_default,  # noqa: F401
                                      speed_of, store, trials, with_space)

SM90 = Target("cuda", 90, 32)


def put_binaries(root: str, shape, configs, status="ok") -> None:
    """Binaries rows as the build stage writes them, with a fake cubin naming its config."""
    Store(root).write("binaries", [BinaryRecord.build(
        kernel_key=shape.kernel_key, config=c.as_dict(), arch="sm_90", target=SM90.name,
        triton_version=triton.__version__, cubin=f"fake:{c.key}".encode(),
        metadata={"fake": True}, status=status) for c in configs])


class FakeLoader:
    """Loads a "binary" by running the kernel's source under the interpreter, checking it
    got the binary of the config asked for; ``refuse`` configs get a reason instead."""

    def __init__(self, refuse=()):
        self.loaded: list[Config] = []
        self.refuse = set(refuse)

    def __call__(self, launch, config, binary):
        assert binary.cubin == f"fake:{config.key}".encode()
        if config in self.refuse:
            return "built for divisible_by_16 [0, 1], launched with [0, 1, 2]"
        self.loaded.append(config)
        fn = load_kernel(launch.kernel.name, launch.kernel.source, "cpu")
        return FakeKernel(fn, config)


class FakeKernel:
    def __init__(self, fn, config):
        self.fn, self.config = fn, config

    def __getitem__(self, grid):
        assert len(grid) == 3                   # the generic launcher takes three dims
        return lambda *args: self.fn[grid](*args, **self.config.blocks())


def no_jit(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a config with a stored binary was JIT compiled")
    monkeypatch.setattr("compiler.autotune.measurement.load_kernel", refuse)
    monkeypatch.setattr(triton, "compile", refuse)


def test_candidates_with_stored_binaries_launch_from_them_and_nothing_compiles(store,
                                                                               monkeypatch):
    root, shape = store
    configs = [shape_default(shape), A, B, C]
    with_space(monkeypatch, configs[1:])
    put_binaries(root, shape, configs)
    put_binaries(root, shape, [Config(XBLOCK=8, RBLOCK=128, num_warps=8)], "build_error")
    no_jit(monkeypatch)
    loader = FakeLoader()
    result = tune_kernel(TuneJob(model="mlp", shape=shape, targets=("sm_90",)), root, "cpu",
                         timer=GivenTimer(speed_of), load=loader)
    assert result.status == "ok", result.note
    assert sorted(loader.loaded, key=str) == sorted(configs, key=str)
    assert (result.from_binary, result.jit_compiled, result.timed) == (4, 0, 4)
    assert "4 launched from stored binaries, 0 compiled" in result.note
    assert set(trials(root)) == set(configs)


def test_loading_is_not_gpu_time(store, monkeypatch):
    import time
    root, shape = store
    with_space(monkeypatch, [A, B])
    put_binaries(root, shape, [shape_default(shape), A, B])
    inner = FakeLoader()

    def slow(launch, config, binary):
        time.sleep(0.4)
        return inner(launch, config, binary)
    result = tune_kernel(TuneJob(model="mlp", shape=shape, targets=("sm_90",)), root, "cpu",
                         timer=GivenTimer(speed_of), load=slow)
    assert result.load_seconds >= 3 * 0.4
    assert result.gpu_seconds < result.load_seconds     # the sleeps are not in GPU-s
    rows = trials(root).values()
    assert abs(sum(r["gpu_s"] for r in rows) - result.gpu_seconds) < 1e-6


def test_configs_without_a_usable_binary_are_compiled_and_counted(store, monkeypatch):
    root, shape = store
    with_space(monkeypatch, [A, B, C])
    put_binaries(root, shape, [A, B])             # none for the default and C; B refused
    loader = FakeLoader(refuse={B})
    result = tune_kernel(TuneJob(model="mlp", shape=shape, targets=("sm_90",)), root, "cpu",
                         timer=GivenTimer(speed_of), load=loader)
    assert loader.loaded == [A]
    assert (result.from_binary, result.jit_compiled, result.timed) == (1, 3, 4)
    assert "1 stored binaries unusable (first: built for divisible_by_16" in result.note


def test_the_real_loader_falls_back_to_compiling_where_no_gpu_can_load_a_cubin(store,
                                                                               monkeypatch):
    root, shape = store
    with_space(monkeypatch, [A])
    put_binaries(root, shape, [shape_default(shape), A])
    result = tune_kernel(TuneJob(model="mlp", shape=shape, targets=("sm_90",)), root, "cpu",
                         timer=GivenTimer(speed_of))
    assert (result.from_binary, result.jit_compiled, result.timed) == (0, 2, 2)


def test_a_built_binary_matches_its_launch_only_at_the_same_specialization(lowered):
    root, shape = lowered
    from pipeline.kernel_tasks import load_stored_kernel
    kernel = load_stored_kernel(Store(str(root)), shape.kernel_key)
    built = build(kernel, A, SM90, dtypes=shape.dtypes, sizes=shape.int_args)
    assert built.ok, built.error
    binary = StoredBinary(built.cubin, built.metadata)
    job, positional = config_job(kernel, A, shape.dtypes, shape.int_args)
    assert binary_mismatch(job, binary, triton.__version__) is None
    assert positional == [p for p in job.types if p not in A.blocks()]
    odd = tuple(n + 1 if n % 16 == 0 else n for n in shape.int_args)  # loses divisibility
    if odd != shape.int_args:
        assert "divisible_by_16" in binary_mismatch(
            config_job(kernel, A, shape.dtypes, odd)[0], binary, triton.__version__)
    other = config_job(kernel, B, shape.dtypes, shape.int_args)[0]
    assert "constexprs" in binary_mismatch(other, binary, triton.__version__)


# ----------------------------------------------------------------------------- launch bound
def test_halving_stops_when_the_default_runs_near_the_launch_latency():
    speed = {Config(XBLOCK=b): ms for b, ms in ((128, 0.0052), (256, 0.005), (512, 0.0049))}
    default = Config(XBLOCK=128)
    measure, reps = fake_measure(speed)
    out = successive_halving(list(speed), default, measure, launch_ms=0.005)
    assert out.stop_reason == "launch_bound" and set(reps) == {default}
    assert out.not_reached == [Config(XBLOCK=256), Config(XBLOCK=512)]
    far = successive_halving(list(speed), default, fake_measure(speed)[0], launch_ms=0.004)
    assert far.stop_reason == "halving"             # 0.0052 > 1.1 * 0.004: may still gain
    known = successive_halving([Config(XBLOCK=256)], None, fake_measure(speed)[0],
                               launch_ms=0.005, default_ms=0.0052)
    assert known.stop_reason == "launch_bound" and not known.measurements


def test_the_tune_path_stops_a_launch_bound_kernel_and_does_not_tune_it_again(store,
                                                                              monkeypatch):
    root, shape = store
    job = TuneJob(model="mlp", shape=shape, targets=("sm_90",))
    with_space(monkeypatch, [A, B, C])
    launch = speed_of(shape_default(shape))           # the default takes a bare launch
    result = tune_kernel(job, root, "cpu", timer=GivenTimer(speed_of), launch_ms=launch)
    assert (result.stop_reason, result.timed, result.not_reached) == ("launch_bound", 1, 3)
    (row,) = trials(root).values()
    assert row["stop_reason"] == "launch_bound" and row["is_default"]
    again = tune_kernel(job, root, "cpu", timer=GivenTimer(speed_of), launch_ms=launch)
    assert again.status == "skipped" and "launch_bound" in again.note


# ----------------------------------------------------------------------------- on a GPU
@pytest.mark.gpu
def test_a_stored_binary_launch_computes_what_the_jit_kernel_does(lowered):
    import torch
    from compiler.autotune import make_inputs
    from compiler.autotune.spaces import grid
    from compiler.kernels.build import current_target
    from compiler.kernels.stored import load_stored
    from pipeline.kernel_tasks import load_stored_kernel
    root, shape = lowered
    kernel = load_stored_kernel(Store(str(root)), shape.kernel_key)
    launch = launch_from_meta(kernel, shape.dtypes, shape.extents, sizes=shape.numels)
    target = current_target()
    outs = {}
    for config in (launch.default, A):
        built = build(kernel, config, target, dtypes=shape.dtypes, sizes=launch.int_args)
        assert built.ok, built.error
        stored = load_stored(kernel, config, launch.dtypes, launch.int_args,
                             StoredBinary(built.cubin, built.metadata),
                             root.parent / "cubins", torch.cuda.current_device())
        assert not isinstance(stored, str), stored
        g = grid(launch.kind, launch.numels, config)
        via_binary, via_jit = make_inputs(launch, "cuda"), make_inputs(launch, "cuda")
        stored[tuple(g) + (1,) * (3 - len(g))](*via_binary, *launch.int_args)
        fn = load_kernel(kernel.name, kernel.source, "cuda")
        fn[g](*via_jit, *launch.int_args, **config.blocks(), **config.options())
        torch.cuda.synchronize()
        for k, arg in enumerate(launch.args):
            if arg.is_output:
                assert torch.equal(via_binary[k], via_jit[k])
                outs[config] = via_binary[k]
    assert torch.allclose(outs[launch.default], outs[A], rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
def test_the_tune_task_on_the_gpu_launches_built_candidates_without_compiling(tmp_path,
                                                                             lowered):
    import torch
    from pipeline.kernel_tasks import BuildJob, build_task
    from pipeline.tune_tasks import tune_task
    root, shape = lowered
    shutil.copytree(root, tmp_path / "store")
    major, minor = torch.cuda.get_device_capability()
    arch = f"sm_{major}{minor}"
    built = build_task(BuildJob(model="mlp", shape=shape, target=arch, tuning=True),
                       str(tmp_path / "store"))
    assert built.status == "ok" and built.built >= 2, built.message
    result = tune_task(TuneJob(model="mlp", shape=shape, targets=(arch,)),
                       str(tmp_path / "store"))
    assert result.status == "ok", result.traceback
    assert result.from_binary >= 1 and result.jit_compiled == 0, result.note
    rows = Store(str(tmp_path / "store")).query("trials").to_pylist()
    assert all(json.loads(r["config_json"]) for r in rows)
