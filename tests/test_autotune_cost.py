"""Autotuning that pays for itself (issue 16), on CPU: pruning before building, the cost
model's order, successive halving, the roofline stop, a grown space timing only its new
configs, nearby winners, and the trials schema's v4 -> v5 migration.

The tune path runs for real up to the clock (the tiny MLP's kernel under the interpreter,
outputs checked); ``tests/given_timer.py`` gives the times.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from compiler.autotune import Config, DeviceInfo, Measurement, default_config, load_spaces
from compiler.autotune.cost import estimate_ms, rank
from compiler.autotune.halving import successive_halving
from compiler.autotune.prune import prune, why_unbuildable
from compiler.kernels.spec import EXTERN, TargetLimits
from pipeline.config import ModelSpec
from pipeline.shapes import KernelShape
from pipeline.tasks import LowerJob, capture_task, lower_task
from pipeline.tune_tasks import TuneJob, tune_kernel
from storage import Store, TrialRecord
from tests.given_timer import GivenTimer, small_space

SM90 = TargetLimits(90, max_shared_bytes=232448, regs_per_sm=65536, max_local_bytes=0)
F16 = ("torch.float16",) * 3


def mm(m=128, n=128, k=64, warps=4, stages=3) -> Config:
    return Config(BLOCK_M=m, BLOCK_N=n, BLOCK_K=k, GROUP_M=8, num_warps=warps, num_stages=stages)


# ----------------------------------------------------------------------------- pruning
def test_prune_rules_threads_shared_memory_and_registers():
    assert "2048 threads" in why_unbuildable("pointwise1d", Config(XBLOCK=4096, num_warps=64),
                                             SM90, 4)
    # (256 + 256) * 64 * 2 bytes * 4 stages past the first = 262144 > 232448
    assert why_unbuildable("matmul", mm(256, 256, 64, 8, 5), SM90, 2).startswith("shared")
    assert why_unbuildable("matmul", mm(256, 128, 64, 8, 4), SM90, 2) is None
    # the same tiles in float32 need twice the bytes
    assert why_unbuildable("matmul", mm(256, 128, 64, 8, 4), SM90, 4).startswith("shared")
    # a 256x256 float32 accumulator over 128 threads: 512 registers a thread
    assert "registers" in why_unbuildable("matmul", mm(256, 256, 32, 4, 2), SM90, 2)
    # 128 registers x 1024 threads > 65536
    assert "x 1024 threads" in why_unbuildable("matmul", mm(256, 512, 32, 32, 2), SM90, 2)
    assert why_unbuildable("matmul", EXTERN, SM90, 2) is None
    assert why_unbuildable("matmul", mm(256, 256, 64, 8, 5), None, 2) is None   # no limits


def test_prune_keeps_the_default_and_records_every_pruned_config_with_its_reason():
    bad, good = mm(256, 256, 64, 8, 5), mm()
    kept, pruned = prune("matmul", [good, bad, EXTERN], SM90, F16, default=good)
    assert kept == [good, EXTERN] and [p.config for p in pruned] == [bad]
    assert "232448" in pruned[0].reason
    kept, pruned = prune("matmul", [good, bad], SM90, F16, default=bad)
    assert kept == [good, bad] and pruned == []


def test_no_candidate_of_the_shipped_space_is_pruned_that_the_space_admits_at_fp16():
    """The shipped matmul space already bounds shared memory: pruning must not cut more of
    it at 16-bit operands (a lower bound that did would be wrong, not merely cautious)."""
    from compiler.autotune import candidates
    spaces = load_spaces()
    configs = candidates(spaces["matmul"], (1, 4096, 4096, 4096))
    kept, pruned = prune("matmul", configs, spaces.limits(90), F16)
    assert len(configs) > 10 and not [p for p in pruned if "shared" in p.reason]


# ----------------------------------------------------------------------------- the cost model
def test_rank_puts_masked_waste_and_tiny_grids_last_and_the_extern_path_first():
    numels = (1000 * 1024 + 1,)        # one element past a multiple of 1024
    moved = numels[0] * 4 * 2
    configs = [Config(XBLOCK=8192, num_warps=8), Config(XBLOCK=1024, num_warps=4),
               Config(XBLOCK=128, num_warps=1)]
    order = rank("pointwise1d", numels, configs, moved)
    assert order[0] == Config(XBLOCK=1024, num_warps=4)
    small = (1, 4096, 4096, 4096)
    order = rank("matmul", small, [mm(64, 64, 32), mm(128, 256, 64, 8), EXTERN], 0)
    assert order == [EXTERN, mm(128, 256, 64, 8), mm(64, 64, 32)]
    # a 128-row reduction: XBLOCK=1 uses 128 programs, fewer than the 132 SMs: slower
    assert (estimate_ms("reduction_persistent", (128, 4096), Config(XBLOCK=64, RBLOCK=4096,
                                                                   num_warps=8), 10**6)
            > estimate_ms("reduction_persistent", (128, 4096),
                          Config(XBLOCK=1, RBLOCK=4096, num_warps=8), 10**6))


# ----------------------------------------------------------------------------- halving
def fake_measure(speed: dict[Config, float], failing=()):
    reps: dict[Config, int] = {}

    def measure(config: Config, n: int) -> Measurement:
        if config in failing:
            return Measurement(config, "launch_error", error="boom")
        reps[config] = reps.get(config, 0) + n
        return Measurement(config, "ok", (speed[config],) * reps[config])
    return measure, reps


def test_halving_keeps_the_default_every_round_and_drops_the_slow_half():
    speed = {Config(XBLOCK=2 ** k): 1.0 / k for k in range(4, 12)}   # larger is faster
    default = Config(XBLOCK=16)                                       # the slowest
    measure, reps = fake_measure(speed, failing={Config(XBLOCK=2048)})
    out = successive_halving(list(speed), default, measure, first_reps=2)
    assert out.stop_reason == "halving" and out.not_reached == []
    assert out.best.config == Config(XBLOCK=1024)
    assert out.measurements[Config(XBLOCK=2048)].status == "launch_error"
    assert reps[default] == reps[Config(XBLOCK=1024)] > reps[Config(XBLOCK=512)]
    assert reps[Config(XBLOCK=32)] == 2                              # dropped after round 1
    assert out.rounds >= 3


def test_roofline_stop_ends_the_search_at_the_first_config_near_the_copy_bandwidth():
    speed = {Config(XBLOCK=b): ms for b, ms in ((128, 2.0), (256, 1.05), (512, 1.0),
                                                (1024, 0.5))}
    measure, reps = fake_measure(speed)
    out = successive_halving(list(speed), Config(XBLOCK=128), measure, floor_ms=1.0)
    # 1.05 ms * 0.9 <= 1.0 ms: within 90% of the floor, so nothing after it is timed
    assert out.stop_reason == "roofline" and out.best.config == Config(XBLOCK=256)
    assert out.not_reached == [Config(XBLOCK=512), Config(XBLOCK=1024)]
    assert set(reps) == {Config(XBLOCK=128), Config(XBLOCK=256)}
    slow = successive_halving(list(speed), Config(XBLOCK=128), fake_measure(speed)[0],
                              floor_ms=0.1)
    assert slow.stop_reason == "halving" and slow.best.config == Config(XBLOCK=1024)


def test_budget_stops_the_search_and_leaves_the_rest_unreached():
    speed = {Config(XBLOCK=b): 1.0 for b in (128, 256, 512)}
    measure, reps = fake_measure(speed)
    out = successive_halving(list(speed), Config(XBLOCK=128), measure,
                             over_budget=lambda: len(reps) >= 2)
    assert out.stop_reason == "budget" and out.not_reached == [Config(XBLOCK=512)]


# ----------------------------------------------------------------------------- the tune path
FAKE_GPU = DeviceInfo("Fake GPU", "sm_90", "555.42", "default", True)


@pytest.fixture(scope="module")
def lowered(tmp_path_factory) -> tuple[Path, KernelShape]:
    root = tmp_path_factory.mktemp("lowered") / "store"
    spec = ModelSpec(name="mlp", factory="pipeline.zoo.tiny:mlp")
    captured = capture_task(spec, str(root))
    result = lower_task(LowerJob(model=spec.name, graph_key=captured.key, target="cuda"),
                        str(root))
    assert result.status == "ok", result.traceback
    (shape,) = result.kernel_shapes
    return root, shape


@pytest.fixture
def store(tmp_path, lowered, monkeypatch) -> tuple[str, KernelShape]:
    root, shape = lowered
    shutil.copytree(root, tmp_path / "store")
    monkeypatch.setattr("compiler.autotune.device_info", lambda device: FAKE_GPU)
    return str(tmp_path / "store"), shape


def with_space(monkeypatch, configs):
    monkeypatch.setattr("pipeline.tune_tasks._candidates", lambda shape, spaces, **_: list(configs))


def trials(root: str) -> dict[Config, dict]:
    return {Config.from_dict(json.loads(t["config_json"])): t
            for t in Store(root).query("trials").to_pylist()}


def speed_of(config: Config) -> float:
    return 0.01 * (1 + abs(config.XBLOCK - 4) + config.num_warps / 100)


A = Config(XBLOCK=4, RBLOCK=128, num_warps=4)
B = Config(XBLOCK=2, RBLOCK=128, num_warps=2)
C = Config(XBLOCK=1, RBLOCK=128, num_warps=1)


def test_a_grown_space_times_only_its_new_configs(store, monkeypatch):
    root, shape = store
    job = TuneJob(model="mlp", shape=shape, targets=("sm_90",))
    with_space(monkeypatch, [B])
    first = GivenTimer(speed_of)
    assert tune_kernel(job, root, "cpu", timer=first).timed == 2     # default and B
    with_space(monkeypatch, [B, A, C])                               # the space grows
    grown = GivenTimer(speed_of)
    result = tune_kernel(job, root, "cpu", timer=grown)
    assert set(grown.reps) == {A, C} and result.timed == 2
    rows = trials(root)
    assert set(rows) == {shape_default(shape), A, B, C} and len(rows) == 4
    assert result.speedup and "best RBLOCK=128 XBLOCK=4" in result.note   # vs the stored default
    assert tune_kernel(job, root, "cpu", timer=GivenTimer(speed_of)).status == "skipped"


def shape_default(shape: KernelShape) -> Config:
    return default_config(shape.kind, shape.numels, "cuda")


def test_the_tune_path_stops_at_the_roofline_and_does_not_tune_that_kernel_again(store,
                                                                                  monkeypatch):
    root, shape = store
    job = TuneJob(model="mlp", shape=shape, targets=("sm_90",))
    with_space(monkeypatch, [A, B, C])
    # bytes moved / 1e-3 GB/s is far beyond any made-up time: the first timing is at the roofline
    result = tune_kernel(job, root, "cpu", timer=GivenTimer(speed_of), gbps=1e-3)
    assert (result.stop_reason, result.timed, result.not_reached) == ("roofline", 1, 3)
    (row,) = trials(root).values()
    assert row["stop_reason"] == "roofline" and row["copy_gbps"] == 1e-3 and row["is_default"]
    with_space(monkeypatch, [A, B, C, Config(XBLOCK=8, RBLOCK=128, num_warps=8)])
    again = tune_kernel(job, root, "cpu", timer=GivenTimer(speed_of), gbps=1e-3)
    assert again.status == "skipped" and "roofline" in again.note


def test_nearby_winners_are_timed_first_and_recorded_as_such(store, monkeypatch):
    root, shape = store
    sizes = {"xnumel": 16, "rnumel": 128, "dtypes": list(shape.dtypes)}
    Store(root).write("trials", [TrialRecord.timed(
        kernel_key=shape.kernel_key, sizes=sizes, config=c.as_dict(), device_name="Fake GPU",
        arch="sm_90", driver="555.42", triton_version="3.6.0", torch_version="2.11",
        times_ms=[ms]) for c, ms in ((A, 0.02), (C, 0.01))])
    with_space(monkeypatch, [A, B, C])
    timer = GivenTimer(speed_of)
    tune_kernel(TuneJob(model="mlp", shape=shape, targets=("sm_90",)), root, "cpu",
                timer=timer)
    first_timed = sorted(timer.first_at, key=timer.first_at.get)
    assert first_timed[:2] == [shape_default(shape), C]            # C won at xnumel=16
    rows = trials(root)
    mine = {c: r for c, r in rows.items() if json.loads(r["sizes_json"])["xnumel"] == 8}
    assert mine[C]["origin"] == "nearby" and mine[A]["origin"] == "timed"


def test_nearby_winners_need_the_same_numels_and_dtypes_within_the_ratio(tmp_path):
    from storage.tuning import nearby_winners
    store = Store(tmp_path / "s")

    def trial(kernel, sizes, block, ms):
        return TrialRecord.timed(kernel_key=kernel, sizes=sizes, config={"XBLOCK": block},
                                 device_name="H200", arch="sm_90", driver="d",
                                 triton_version="3.6.0", torch_version="2.11", times_ms=[ms])
    f32 = ["torch.float32"] * 2
    store.write("trials", [
        trial("k", {"xnumel": 2048, "dtypes": f32}, 256, 1.0),
        trial("k", {"xnumel": 2048, "dtypes": f32}, 512, 2.0),       # not the winner
        trial("other", {"xnumel": 4096, "dtypes": f32}, 1024, 1.0),
        trial("k", {"xnumel": 1 << 20, "dtypes": f32}, 4096, 1.0),   # too far
        trial("k", {"xnumel": 4096, "dtypes": ["torch.float16"] * 2}, 128, 1.0),
        trial("k", {"xnumel": 4096, "dtypes": f32}, 2048, 1.0),      # the same size
    ])
    found = nearby_winners(store, "k", {"xnumel": 4096, "dtypes": f32}, "H200")
    assert found == [{"XBLOCK": 256}, {"XBLOCK": 1024}]
    assert nearby_winners(store, "k", {"xnumel": 4096, "dtypes": f32}, "H100") == []


# ----------------------------------------------------------------------------- schema v5
def test_trials_v4_files_migrate_to_v5_with_null_tuning_columns(tmp_path):
    from storage.files import WRITE_OPTIONS, new_file_name
    from storage.records import records_to_table
    from storage.schema import SCHEMA_VERSION, file_metadata, schema_for
    assert SCHEMA_VERSION == 5
    store = Store(tmp_path / "s")
    old = TrialRecord.timed(kernel_key="k", sizes={"xnumel": 8}, config={"XBLOCK": 8},
                            device_name="H200", arch="sm_90", driver="d",
                            triton_version="3.6.0", torch_version="2.11", times_ms=[0.5])
    added = ("origin", "gpu_s", "stop_reason", "copy_gbps")
    table = records_to_table("trials", [old]).drop_columns(list(added))
    table = table.append_column("schema_version", pa.array([4], pa.int32()))
    v4 = [f for f in schema_for("trials") if f.name not in added]
    table = table.select([f.name for f in v4]).cast(
        pa.schema(v4, metadata=file_metadata("trials", 4)))
    store.fs.create_dir(store.dataset_dir("trials"))
    pq.write_table(table, f"{store.dataset_dir('trials')}/{new_file_name('part', 4)}",
                   **WRITE_OPTIONS)
    new = TrialRecord.timed(kernel_key="k", sizes={"xnumel": 8}, config={"XBLOCK": 16},
                            device_name="H200", arch="sm_90", driver="d",
                            triton_version="3.6.0", torch_version="2.11", times_ms=[0.4],
                            origin="nearby", gpu_s=0.1, stop_reason="halving", copy_gbps=4e3)
    store.write("trials", [new])
    rows = {r["trial_key"]: r for r in store.query("trials").to_pylist()}
    assert [rows[old.trial_key][c] for c in added] == [None] * 4
    assert [rows[new.trial_key][c] for c in added] == ["nearby", 0.1, "halving", 4e3]
    assert {r["schema_version"] for r in rows.values()} == {5} and store.verify().ok
    with pytest.raises(ValueError, match="origin"):
        TrialRecord.timed(kernel_key="k", sizes={}, config={}, device_name="H200",
                          arch="sm_90", driver="d", triton_version="3", torch_version="2",
                          times_ms=[1.0], origin="guessed")


# ----------------------------------------------------------------------------- kiln store gains
def test_store_gains_show_per_model_gains_and_where_tuning_time_went(store, monkeypatch, capsys):
    from storage.cli import store_main
    root, shape = store
    with_space(monkeypatch, [A, B, C, Config(XBLOCK=8, RBLOCK=128, num_warps=64)])
    result = tune_kernel(TuneJob(model="mlp", shape=shape, targets=("sm_90",)), root, "cpu",
                         timer=GivenTimer(speed_of), gbps=4000.0)
    assert (result.pruned, result.stop_reason) == (1, "halving")
    assert store_main(["--store", root, "gains"]) == 0
    out = capsys.readouterr().out
    time_line = next(line for line in out.splitlines() if line.startswith("tuning time:"))
    assert "over 1 kernel sizes" in time_line and "4 configs timed, 1 pruned" in time_line
    assert "0 kernel sizes stopped at the roofline" in time_line
    model = next(line for line in out.splitlines() if line.startswith("mlp "))
    default_ms, best_ms = speed_of(shape_default(shape)), speed_of(A)
    assert f"{default_ms / best_ms:.2f}x" in model and "Fake GPU" in model
    assert " halving " in out                       # the per-kernel stop reason column
    pytest.importorskip("matplotlib")
    png = Path(root).parent / "tuning.png"
    assert store_main(["--store", root, "plot-tuning", "--out", str(png)]) == 0
    assert "GPU-s of 1 kernel size(s)" in capsys.readouterr().out
    assert (png.parent / "tuning-time.png").read_bytes()[:4] == b"\x89PNG"


def test_the_search_covers_the_cost_models_first_candidates_and_a_rerun_times_nothing(
        store, monkeypatch, tmp_path):
    root, shape = store
    job = TuneJob(model="mlp", shape=shape, targets=("sm_90",),
                  space=str(small_space(tmp_path)))
    with_space(monkeypatch, [A, B, C])
    timer = GivenTimer(speed_of)
    result = tune_kernel(job, root, "cpu", timer=timer)
    assert len(timer.reps) == 3 and result.not_reached == 1          # the default and two
    assert "1 beyond the cost model's first 2" in result.note
    again = tune_kernel(job, root, "cpu", timer=GivenTimer(speed_of))
    assert again.status == "skipped"


# ----------------------------------------------------------------------------- on a GPU
@pytest.mark.gpu
def test_the_copy_bandwidth_is_measured_once_and_events_time_each_repetition():
    import torch
    from compiler.autotune.timing import EventTimer, copy_gbps_of
    gbps = copy_gbps_of("cuda")
    assert 200 < gbps < 20_000 and copy_gbps_of("cuda") == gbps     # an H200: about 4300
    x = torch.randn(1 << 24, device="cuda")
    times = EventTimer()(lambda: x.mul_(1.0), 5, None)
    assert len(times) == 5 and all(t > 0 for t in times)


@pytest.mark.gpu
def test_the_tune_task_on_the_gpu_records_gpu_seconds_stop_reason_and_bandwidth(tmp_path,
                                                                                lowered):
    import torch
    from compiler.autotune.halving import STOP_REASONS
    from pipeline.tune_tasks import tune_task
    root, shape = lowered
    shutil.copytree(root, tmp_path / "store")
    major, minor = torch.cuda.get_device_capability()
    job = TuneJob(model="mlp", shape=shape, targets=(f"sm_{major}{minor}",))
    result = tune_task(job, str(tmp_path / "store"))
    assert result.status == "ok", result.traceback
    assert result.stop_reason in STOP_REASONS and result.timed >= 1
    rows = Store(str(tmp_path / "store")).query("trials").to_pylist()
    timed = [r for r in rows if r["status"] == "ok"]
    assert all(r["gpu_s"] > 0 and r["copy_gbps"] > 200 for r in timed)
    assert {r["stop_reason"] for r in rows} == {result.stop_reason}
    assert abs(sum(r["gpu_s"] for r in rows) - result.gpu_seconds) < 0.05 * result.gpu_seconds
