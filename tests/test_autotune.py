"""Autotuning on CPU: spaces and pruning, config keys, planning, coordinate descent, sm_90
builds of real generated kernels (no GPU needed), and measurement under the interpreter, which
verifies outputs but never times. The same measurement on CUDA is the ``gpu`` test at the end.
"""
from __future__ import annotations

import dataclasses
import json

import math

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

import compiler
from compiler.autotune import (Config, KernelLaunch, Target, Tuner, build, candidates,
                               config_key, coordinate_descent, default_config, device_info,
                               grid, launch_from_meta, load_spaces, make_inputs, measure,
                               neighbours, next_pow2, plan_trials, record_launches, tune)
from compiler.autotune.spaces import SearchSettings, SpaceError, TRITON_MAX_TENSOR_NUMEL
from pipeline.zoo.tiny import mlp

SPACES = load_spaces()
ELF_MAGIC = b"\x7fELF"


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def mlp_launch() -> KernelLaunch:
    """The fused LayerNorm+GELU of the tiny MLP: a persistent reduction over rows of 128."""
    module, args = mlp()
    model = compiler.compile_module(module, args)
    with record_launches(model.compiled) as launches:
        out = model(*args)
    torch.testing.assert_close(out, module(*args), rtol=1e-4, atol=1e-5)
    (launch,) = launches.values()
    return launch


@pytest.fixture(scope="module")
def transpose_kernel():
    """A 2-D tiled pointwise kernel (loads along one dim, stores along the other)."""
    x = torch.randn(64, 96)
    fn = compiler.compile_fx(make_fx(lambda x: (x.t().contiguous() * 2,))(x), [x])
    (kernel,) = fn.artifact.kernels
    assert kernel.spec.kind == "pointwise2d"
    return kernel


# ----------------------------------------------------------------------------- spaces
SIZES = {"pointwise1d": [(1,), (7,), (1000,), (1 << 22,)],
         "pointwise2d": [(3, 5), (64, 96), (17, 1 << 22)],
         "reduction_persistent": [(1, 1), (8, 128), (5, 3), (1 << 16, 4096), (64, 32768)],
         "reduction_looped": [(1, 5000), (8, 8192), (4096, 1 << 20)]}


@pytest.mark.parametrize("kind,numels", [(k, n) for k, ns in SIZES.items() for n in ns])
def test_candidates_are_pruned_by_the_kernel_sizes(kind, numels):
    space = SPACES[kind]
    cands = candidates(space, numels)
    assert cands and len(cands) == len(set(cands)) and cands == sorted(cands)
    for c in cands:
        assert c.XBLOCK <= next_pow2(numels[0])
        if kind == "pointwise2d":
            assert c.YBLOCK <= next_pow2(numels[1])
            assert grid(kind, numels, c)[1] <= 65535
        if kind == "reduction_persistent":
            assert c.RBLOCK >= numels[1] and c.RBLOCK == next_pow2(numels[1])
        if kind == "reduction_looped":
            assert c.RBLOCK <= next_pow2(numels[1])
        row = c.RBLOCK if kind == "reduction_persistent" else 1
        assert c.tile <= min(max(space.max_tile, row), TRITON_MAX_TENSOR_NUMEL)
        threads = 32 * c.num_warps
        assert threads <= max(c.tile, 32) and c.tile <= threads * space.max_elems_per_thread
        assert c.num_stages in space.param("num_stages")


def test_space_file_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[pointwise1d]\nXBLOCK = [128, 100]\nnum_warps = [4]\nnum_stages = [3]\n"
                   "max_tile = 8192\nmax_elems_per_thread = 32\n"
                   "[search]\nsweep_max = 4\ndescent_budget = 4\n")
    with pytest.raises(SpaceError, match=r"pointwise1d\.XBLOCK.*powers of two"):
        load_spaces(bad)
    bad.write_text("[pointwise1d]\nXBLOK = [128]\n")
    with pytest.raises(SpaceError, match="XBLOK"):
        load_spaces(bad)


def test_default_config_is_the_wrappers_heuristic(mlp_launch):
    launch = mlp_launch
    # the launch recorded from the wrapper (compiled for CPU) is the CPU heuristic
    assert launch.default == default_config(launch.kind, launch.numels, "cpu")
    cuda = default_config("pointwise1d", (100_000,), "cuda")
    assert cuda == Config(XBLOCK=1024, num_warps=4, num_stages=3)
    assert grid("pointwise1d", (100_000,), cuda) == (98,)
    looped = default_config("reduction_looped", (64, 10_000), "cuda")
    assert (looped.XBLOCK, looped.RBLOCK) == (1, 2048)


# ----------------------------------------------------------------------------- keys, planning
def test_config_keys_are_stable_and_match_the_store():
    from storage import BinaryRecord, TrialRecord
    c = Config(XBLOCK=8, RBLOCK=128, num_warps=4, num_stages=3)
    shuffled = dict(reversed(c.as_dict().items()))
    assert c.key == config_key(c) == config_key(c.as_dict()) == config_key(shuffled)
    assert c.key == "%s" % Config.from_dict(c.as_dict()).key and len(c.key) == 32
    assert c.key != c.replace(num_warps=8).key
    binary = BinaryRecord.build(kernel_key="k", config=c.as_dict(), arch="sm_90",
                                target="cuda:90:32", triton_version="3", cubin=b"x", metadata={})
    trial = TrialRecord.timed(kernel_key="k", sizes={"xnumel": 8}, config=c.as_dict(),
                              device_name="d", arch="sm_90", driver="1", triton_version="3",
                              torch_version="2", times_ms=[1.0])
    assert binary.config_key == trial.config_key == c.key


def test_plan_trials_skips_done_and_plans_only_new_candidates():
    space = candidates(SPACES["pointwise1d"], (1 << 20,))
    first = plan_trials(space, done_keys=[])
    assert first == space
    done = {c.key for c in first}
    assert plan_trials(space, done) == []                       # a second sweep times nothing
    extra = [Config(XBLOCK=16384, num_warps=16), Config(XBLOCK=1024, num_warps=4)]
    assert plan_trials(space + extra, done) == [extra[0]]       # only the new candidate
    assert plan_trials(space + space, []) == space              # repeats planned once


def _bowl(optimum: Config):
    def cost(c: Config) -> float:
        return sum(abs(math.log2(getattr(c, n)) - math.log2(getattr(optimum, n)))
                   for n in ("XBLOCK", "RBLOCK", "num_warps", "num_stages")) + 1.0
    return cost


def test_coordinate_descent_finds_the_optimum_within_budget():
    space, numels = SPACES["reduction_looped"], (256, 50_000)
    cands = candidates(space, numels)
    optimum = Config(XBLOCK=8, RBLOCK=512, num_warps=4, num_stages=2)
    assert optimum in cands and len(cands) > 100
    calls = []
    cost = _bowl(optimum)
    result = coordinate_descent(space, numels, default_config("reduction_looped", numels),
                                lambda c: calls.append(c) or cost(c), budget=40)
    assert result.best == optimum and result.best_cost == 1.0
    assert result.calls == len(calls) <= 40 < len(cands)
    assert all(c in cands or c == calls[0] for c in calls)       # never off the pruned space


def test_coordinate_descent_uses_known_costs_and_skips_failures():
    space, numels = SPACES["pointwise1d"], (1 << 20,)
    optimum = Config(XBLOCK=2048, num_warps=8)

    def base(c: Config) -> float:
        return abs(math.log2(c.XBLOCK / 2048)) + abs(math.log2(c.num_warps / 8)) + 1.0

    failing = Config(XBLOCK=2048, num_warps=4)
    first = coordinate_descent(space, numels, Config(XBLOCK=512, num_warps=4),
                               lambda c: None if c == failing else base(c), budget=30)
    assert first.best == optimum and first.evaluated[failing] is None
    # resumed with every cost known: nothing is evaluated again
    again = coordinate_descent(space, numels, Config(XBLOCK=512, num_warps=4),
                               lambda c: pytest.fail(f"re-timed {c}"), budget=30,
                               known=first.evaluated)
    assert again.best == optimum and again.calls == 0


def test_neighbours_step_one_parameter_inside_the_space():
    space, numels = SPACES["pointwise2d"], (64, 96)
    c = Config(XBLOCK=64, YBLOCK=64, num_warps=4)
    for n in neighbours(space, numels, c):
        assert sum(getattr(n, f) != getattr(c, f) for f in ("XBLOCK", "YBLOCK", "num_warps")) == 1
        assert n in candidates(space, numels)


# ----------------------------------------------------------------------------- builds
def test_build_real_kernel_for_sm90_gives_a_cubin_and_metadata(mlp_launch):
    from storage import BinaryRecord   # the result is what the store's records take
    kernel, config = mlp_launch.kernel, Config(XBLOCK=8, RBLOCK=128, num_warps=4)
    result = build(kernel, config, Target("cuda", 90, 32), dtypes=mlp_launch.dtypes)
    assert result.status == "ok", result.error
    assert result.cubin[:4] == ELF_MAGIC and result.error is None
    meta = result.metadata
    assert meta["num_warps"] == 4 and meta["num_stages"] == 3 and meta["shared"] >= 0
    assert meta["target"] == "cuda:90:32" and meta["name"] == kernel.name
    assert meta["signature"]["types"]["in_ptr0"] == "*fp32"
    assert meta["signature"]["constexprs"] == {"XBLOCK": 8, "RBLOCK": 128}
    if "n_regs" in meta:      # cuobjdump ships with Triton's CUDA backend
        assert meta["n_regs"] > 0 and meta["local_bytes"] == 0
    record = BinaryRecord.build(kernel_key=kernel.kernel_key, config=config.as_dict(),
                                arch=result.target.arch_name, target=result.target.name,
                                triton_version=result.triton_version, cubin=result.cubin,
                                metadata=result.metadata_json)
    assert record.config_key == config.key


def test_build_failures_are_results_not_exceptions(mlp_launch, transpose_kernel):
    kernel = mlp_launch.kernel
    bare = dataclasses.replace(kernel, spec=dataclasses.replace(kernel.spec, dtypes=()))  # older
    no_dtypes = build(bare, Config(XBLOCK=8, RBLOCK=128))
    assert no_dtypes.status == "build_error" and "dtypes" in no_dtypes.error
    odd_warps = build(kernel, Config(XBLOCK=8, RBLOCK=128, num_warps=3), dtypes=mlp_launch.dtypes)
    assert odd_warps.status == "build_error" and "num_warps" in odd_warps.error
    too_many = build(kernel, Config(XBLOCK=8, RBLOCK=128, num_warps=64), dtypes=mlp_launch.dtypes)
    assert too_many.status == "resource_error" and too_many.cubin is None
    huge_tile = build(transpose_kernel, Config(XBLOCK=256, YBLOCK=256, num_warps=32),
                      dtypes=["float32", "float32"])
    assert huge_tile.status == "resource_error" and "shared memory" in huge_tile.error
    assert huge_tile.metadata["shared"] > 232448
    wrong_blocks = build(kernel, Config(XBLOCK=8), dtypes=mlp_launch.dtypes)
    assert wrong_blocks.status == "build_error"


def test_dynamic_kernels_build_and_run_at_the_recorded_sizes():
    """A dynamic-shape kernel takes size symbols after its numels; a launch records them."""
    from torch.export import Dim

    class Transpose(torch.nn.Module):
        def forward(self, x):
            return (x.t().contiguous() * 2,)

    x = torch.randn(40, 33)
    model = compiler.compile_module(Transpose(), (x,),
                                    dynamic_shapes={"x": {0: Dim("b", min=2, max=4096)}})
    with record_launches(model.compiled) as launches:
        model(x)
    (launch,) = launches.values()
    assert launch.size_args == (40,) and launch.sizes()["size_args"] == [40]
    result = build(launch.kernel, launch.default, dtypes=launch.dtypes, sizes=launch.int_args)
    assert result.status == "ok", result.error
    assert len(result.metadata["signature"]["types"]) == 7       # 2 pointers, 3 ints, 2 blocks
    unsized = build(launch.kernel, launch.default, dtypes=launch.dtypes)
    assert unsized.status == "build_error" and "size arguments" in unsized.error
    result = measure(launch, candidates(SPACES[launch.kind], launch.numels)[:2], "cpu")
    assert {m.status for m in result.measurements} == {"not_timed"}


# ----------------------------------------------------------------------------- measuring
def test_measure_on_cpu_verifies_outputs_but_never_times(mlp_launch):
    launch = mlp_launch
    good = [c for c in candidates(SPACES[launch.kind], launch.numels) if c.XBLOCK in (1, 2)][:3]
    wrong = Config(XBLOCK=8, RBLOCK=64, num_warps=4)      # a row split in two: wrong sums
    result = measure(launch, good + [wrong], "cpu")
    assert not result.device.timed and "not timed" in result.note
    by_config = {m.config: m for m in result.measurements}
    assert by_config[launch.default].status == "not_timed"
    for c in good:
        m = by_config[c]
        assert m.status == "not_timed" and m.times_ms == () and m.median_ms is None
        assert m.max_abs_error < 1e-4
    assert by_config[wrong].status == "wrong_result" and "differs" in by_config[wrong].error
    assert result.best is None and result.speedup is None     # nothing pretends to be timed
    assert all(m.status != "ok" for m in result.measurements)


def test_tune_gates_build_failures_and_descends_on_cpu(mlp_launch):
    launch = mlp_launch
    cands = candidates(SPACES[launch.kind], launch.numels)
    from compiler.autotune.measurement import Measurement
    failed = cands[0]
    gate = lambda c: Measurement(c, "build_error", error="boom") if c == failed else None
    tuner = Tuner(launch, "cpu")
    result = tune(tuner, SPACES[launch.kind], cands[:3], SPACES.search, gate=gate)
    statuses = {m.config: m.status for m in result.measurements}
    assert statuses[failed] == "build_error" and statuses[launch.default] == "not_timed"
    assert result.searched == "sweep" and set(statuses) == {launch.default, *cands[:3]}
    # a space larger than sweep_max is searched within the descent budget
    small = SearchSettings(sweep_max=2, descent_budget=4)
    descended = tune(Tuner(launch, "cpu"), SPACES[launch.kind], cands, small)
    assert descended.searched == "descent" and len(descended.measurements) <= 4


def test_inputs_are_random_never_zeros_and_keep_recorded_indices():
    x = torch.randn(6, 5)
    idx = torch.tensor([3, 0, 5, 1])
    gm = make_fx(lambda x, i: (torch.relu(x[i]) + 1,))(x, idx)
    fn = compiler.compile_fx(gm, [x, idx])
    with record_launches(fn) as launches:
        fn(x, idx)
    (launch,) = launches.values()
    inputs = make_inputs(launch, "cpu", seed=1)
    for arg, t in zip(launch.args, inputs):
        assert t.numel() == arg.numel and str(t.dtype) == arg.dtype
        if t.dtype.is_floating_point:
            assert bool((t != 0).all())
        else:
            assert torch.equal(t, idx)          # gather indices stay in range
    k = next(k for k, t in enumerate(inputs) if t.dtype.is_floating_point)
    assert not torch.equal(inputs[k], make_inputs(launch, "cpu", seed=2)[k])
    result = measure(launch, candidates(SPACES[launch.kind], launch.numels)[:2], "cpu")
    assert {m.status for m in result.measurements} == {"not_timed"}


def test_launch_from_meta_takes_dtypes_from_the_caller(transpose_kernel):
    with pytest.raises(ValueError, match="2 pointers"):
        launch_from_meta(transpose_kernel, ["float32"])
    launch = launch_from_meta(transpose_kernel, ["float32", "float32"], device_type="cpu")
    assert launch.numels == (64, 96) and launch.args[1].is_output
    assert launch.sizes() == {"xnumel": 64, "ynumel": 96, "dtypes": ["torch.float32"] * 2}
    result = measure(launch, [Config(XBLOCK=32, YBLOCK=16, num_warps=2)], "cpu")
    assert {m.status for m in result.measurements} == {"not_timed"}


def test_device_info_on_cpu_says_not_timed():
    info = device_info("cpu")
    assert info.timed is False and info.arch == "cpu" and info.clocks == "n/a"


# ----------------------------------------------------------------------------- GPU
@pytest.mark.gpu
def test_measure_on_cuda_times_verified_candidates_and_matches_the_build():
    module, args = mlp(batch=256)
    model = compiler.compile_module(module.cuda(), [a.cuda() for a in args])
    with record_launches(model.compiled) as launches:
        model(*[a.cuda() for a in args])
    (launch,) = launches.values()
    cands = candidates(SPACES[launch.kind], launch.numels)[:4]
    result = measure(launch, cands, "cuda", rep_ms=20)
    assert result.device.timed and result.device.arch.startswith("sm_")
    assert all(m.status == "ok" and m.median_ms > 0 for m in result.measurements)
    major, minor = torch.cuda.get_device_capability()
    built = build(launch.kernel, launch.default, ("cuda", 10 * major + minor, 32),
                  dtypes=launch.dtypes)
    assert built.status == "ok"
    assert result.default.cubin_sha256 in (None, built.metadata["cubin_sha256"])
