"""Build and tune tasks in-process (no cluster): kernel shapes, sm_90 builds into the store,
configs that do not build, and the tune path with faked GPU timings.

The tune path runs for real up to the clock: the kernel is loaded from the store, launched
under Triton's CPU interpreter at its real sizes for every planned config, its outputs are
checked against the default config's; only the clock (which needs a GPU) is a given timer
(``tests/given_timer.py``) with made-up times, and the device is announced as an sm_90 card. The same task on a GPU worker
is what the lead checks on the GPU machine (see the report).
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from compiler.kernels.spec import KernelKind, KernelSpec, LaunchConfig
from pipeline.config import ModelSpec, parse_config
from pipeline.kernel_tasks import BuildJob, build_task, kernel_launch
from pipeline.tune_tasks import TuneJob, tune_kernel, tune_task
from pipeline.report import RunReport, format_summary
from pipeline.shapes import KernelShape, kernel_shapes
from pipeline.tasks import LowerJob, TaskResult, capture_task, lower_task

storage = pytest.importorskip("storage", exc_type=ImportError)
autotune = pytest.importorskip("compiler.autotune", exc_type=ImportError)
from compiler.autotune import Config, DeviceInfo  # noqa: E402
from storage import Store  # noqa: E402
from tests.given_timer import GivenTimer  # noqa: E402

ELF_MAGIC = b"\x7fELF"
ABSURD = Config(XBLOCK=8, RBLOCK=128, num_warps=64)     # 2048 threads: no GPU runs that


@pytest.fixture(scope="module")
def lowered(tmp_path_factory) -> tuple[Path, KernelShape]:
    """A store holding the tiny MLP lowered for cuda: one persistent-reduction kernel."""
    root = tmp_path_factory.mktemp("lowered") / "store"
    spec = ModelSpec(name="mlp", factory="pipeline.zoo.tiny:mlp")
    captured = capture_task(spec, str(root))
    result = lower_task(LowerJob(model=spec.name, graph_key=captured.key, target="cuda"), str(root))
    assert result.status == "ok", result.traceback
    (shape,) = result.kernel_shapes
    return root, shape


def fresh(tmp_path: Path, lowered) -> tuple[str, KernelShape]:
    root, shape = lowered
    shutil.copytree(root, tmp_path / "store")
    return str(tmp_path / "store"), shape


def binaries(root: str) -> dict[Config, dict]:
    rows = Store(root).query("binaries").to_pylist()
    return {Config.from_dict(json.loads(r["config_json"])): r for r in rows}


# ----------------------------------------------------------------------------- shapes
def test_kernel_shapes_bind_size_symbols_to_the_example_sizes():
    module = {"inputs": [{"size": [128]}, {"size": ["s0", "s1", 32]}, {"size": ["s1"]}]}
    launch = LaunchConfig((), ())
    kernel = KernelSpec(KernelKind.REDUCTION_PERSISTENT, ("a", "b"), ("torch.float32",) * 2,
                        ("32*s1*(s0 - 1) + 32*s1", 128), 1, ("s0*s1", "32"), ("s1",), launch)
    static = KernelSpec(KernelKind.POINTWISE_1D, ("a", "b"), ("torch.float32", "torch.bfloat16"),
                        (8, 8), 1, ("8",), (), launch)
    shapes = kernel_shapes(module, [("k1", kernel), ("k2", static), ("k2", static)],
                           lambda: [[128], [2, 6, 32], [6]])
    assert [(s.kernel_key, s.numels, s.extents, s.size_args) for s in shapes] == [
        ("k1", (12, 32), (384, 128), (6,)), ("k2", (8,), (8, 8), ())]
    assert shapes[0].int_args == (12, 32, 6) and shapes[0].describe() == "12x32 (sizes [6])"
    asked = []
    kernel_shapes(module, [("k2", static)], lambda: asked.append(1) or [])
    assert not asked                       # static kernels need no example sizes
    (unbound,) = kernel_shapes({"inputs": []}, [("k1", kernel)], lambda: [])
    assert unbound.error.startswith("sizes unknown") and "s0" in unbound.error


# ----------------------------------------------------------------------------- build
def test_build_task_stores_the_default_config_for_sm90_then_builds_nothing(tmp_path, lowered):
    root, shape = fresh(tmp_path, lowered)
    job = BuildJob(model="mlp", shape=shape, target="sm_90")
    first = build_task(job, root)
    assert (first.status, first.built, first.build_errors) == ("ok", 1, 0), first.traceback
    (config, row), = binaries(root).items()
    assert config == autotune.default_config(shape.kind, shape.numels, "cuda")
    assert row["cubin"][:4] == ELF_MAGIC and row["arch"] == "sm_90"
    assert row["target"] == "cuda:90:32" and row["kernel_key"] == shape.kernel_key
    assert row["status"] == "ok" and row["error"] is None
    again = build_task(job, root)
    assert (again.status, again.built) == ("skipped", 0)
    assert len(Store(root).files("binaries")) == 1


def test_a_config_that_does_not_build_is_a_row_with_its_status(tmp_path, lowered, monkeypatch):
    root, shape = fresh(tmp_path, lowered)
    monkeypatch.setattr("pipeline.kernel_tasks._candidates", lambda shape, spaces, **_: [ABSURD])
    # with pruning off, as for a config whose excess only its build can see
    monkeypatch.setattr("compiler.autotune.prune.why_unbuildable", lambda *args: None)
    job = BuildJob(model="mlp", shape=shape, target="sm_90", tuning=True)
    result = build_task(job, root)
    assert (result.status, result.built, result.build_errors) == ("ok", 1, 1)
    row = binaries(root)[ABSURD]
    assert row["status"] == "resource_error" and "2048 threads" in row["error"]
    assert row["cubin"] == b"" and Store(root).verify().ok
    assert build_task(job, root).status == "skipped"     # a failed config is not retried


def test_a_default_config_that_does_not_build_fails_the_task(tmp_path, lowered, monkeypatch):
    root, shape = fresh(tmp_path, lowered)
    real = kernel_launch
    monkeypatch.setattr("pipeline.kernel_tasks.kernel_launch", lambda *args: dataclasses.replace(
        real(*args), default=ABSURD))
    job = BuildJob(model="mlp", shape=shape, target="sm_90")
    result = build_task(job, root)
    assert (result.status, result.error_type, result.build_errors) == ("failed", "BuildError", 1)
    assert "did not build for sm_90: resource_error" in result.message
    assert binaries(root)[ABSURD]["status"] == "resource_error"
    again = build_task(job, root)     # still a failure on a rerun, without building again
    assert (again.status, again.build_errors) == ("failed", 0)


def depthwise(batch: int = 2, channels: int = 32, size: int = 12):
    """A 7x7 depthwise conv over channels-last input (a factory): its kernel is a stencil,
    whose heuristic tile differs from a plain pointwise2d kernel's."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(channels, channels, 7, padding=3, groups=channels).eval()
    return conv, (torch.randn(batch, channels, size, size).to(memory_format=torch.channels_last),)


@pytest.mark.parametrize("tuning", [False, True])
def test_a_stencil_kernel_builds_the_default_its_module_launches(tmp_path, tuning):
    """The build's default is the launch's, which follows the spec's ``stencil`` flag: the
    build once took the plain 2-D default, so an untuned module's binary was missing and a
    tuning build failed looking the default up among the configs the search covers."""
    from tests.given_timer import small_space
    root = str(tmp_path / "store")
    spec = ModelSpec(name="dw", factory="tests.test_pipeline_kernels:depthwise")
    captured = capture_task(spec, root)
    lowered = lower_task(LowerJob(model="dw", graph_key=captured.key, target="cuda",
                                  options_json=json.dumps({"channels_last": "on"})), root)
    assert lowered.status == "ok", lowered.traceback
    ((shape, kernel),) = [(s, k) for s in lowered.kernel_shapes
                          for k in [storage_kernel(root, s.kernel_key)] if k.spec.stencil]
    launched = kernel_launch(kernel, shape, "{}").default
    assert launched != autotune.default_config(shape.kind, shape.numels, "cuda")
    job = BuildJob(model="dw", shape=shape, target="sm_90", tuning=tuning,
                   space=str(small_space(tmp_path)))
    built = build_task(job, root)
    assert built.status == "ok", built.traceback
    assert launched in binaries(root) and len(binaries(root)) == (3 if tuning else 1)


def storage_kernel(root: str, key: str):
    from pipeline.kernel_tasks import load_stored_kernel
    return load_stored_kernel(Store(root), key)


def test_build_task_failures_are_results(tmp_path):
    shape = KernelShape("0" * 64, "pointwise1d", ("torch.float32",) * 2, (8, 8), (8,))
    missing = build_task(BuildJob(model="m", shape=shape, target="sm_90"), str(tmp_path))
    assert (missing.status, missing.error_type) == ("failed", "KernelNotStored")
    unsized = KernelShape("k", "pointwise1d", (), (), (), error="sizes unknown: s0")
    result = build_task(BuildJob(model="m", shape=unsized, target="sm_90"), str(tmp_path))
    assert result.status == "failed" and "sizes unknown" in result.message


# ----------------------------------------------------------------------------- tune
FAKE_GPU = DeviceInfo("Fake GPU", "sm_90", "555.42", "default", True)


def xblock_timer() -> GivenTimer:
    """Made-up timings: the fastest config is XBLOCK=4."""
    return GivenTimer(lambda config: 0.01 * (1 + abs(math.log2(config.XBLOCK) - 2)))


def test_tune_path_writes_every_trial_marks_the_best_and_resumes(tmp_path, lowered,
                                                                  monkeypatch):
    root, shape = fresh(tmp_path, lowered)
    fast = Config(XBLOCK=4, RBLOCK=128, num_warps=4)
    slow = Config(XBLOCK=2, RBLOCK=128, num_warps=2)
    for where in ("pipeline.kernel_tasks._candidates", "pipeline.tune_tasks._candidates"):
        monkeypatch.setattr(where, lambda shape, spaces, **_: [fast, slow, ABSURD])
    built = build_task(BuildJob(model="mlp", shape=shape, target="sm_90", tuning=True), root)
    assert (built.build_errors, built.pruned) == (0, 1)         # ABSURD: never built
    assert ABSURD not in binaries(root) and "1 pruned" in built.note
    monkeypatch.setattr(autotune, "device_info", lambda device: FAKE_GPU)
    job = TuneJob(model="mlp", shape=shape, targets=("sm_90",), budget_s=0.0)

    timer = xblock_timer()
    first = tune_kernel(job, root, "cpu", timer=timer)   # budget spent by the default
    assert (first.status, first.timed, first.device) == ("ok", 1, "Fake GPU"), first
    assert (first.pruned, first.trial_errors, first.stop_reason) == (1, 0, "budget")
    assert "left for the next run (budget)" in first.note
    second = tune_kernel(TuneJob(model="mlp", shape=shape, targets=("sm_90",)), root, "cpu",
                         timer=xblock_timer())
    # the default was stored by the first run: it is not timed again
    assert (second.status, second.timed, second.trial_errors) == ("ok", 2, 0)
    assert second.gpu_seconds > 0 and "best RBLOCK=128 XBLOCK=4" in second.note
    trials = Store(root).query("trials").to_pylist()
    by_config = {Config.from_dict(json.loads(t["config_json"])): t for t in trials}
    default = autotune.default_config(shape.kind, shape.numels, "cuda")
    assert len(trials) == 4 and set(by_config) == {default, fast, slow, ABSURD}
    assert by_config[ABSURD]["status"] == "resource_error"
    assert by_config[ABSURD]["origin"] == "pruned" and "2048 threads" in by_config[ABSURD]["error"]
    assert all(by_config[c]["status"] == "ok" and by_config[c]["origin"] == "timed"
               and by_config[c]["gpu_s"] > 0 for c in (default, fast, slow))
    best = min((t for t in trials if t["is_best"]), key=lambda t: t["median_ms"])
    assert Config.from_dict(json.loads(best["config_json"])) == fast
    assert {t["device_name"] for t in trials} == {"Fake GPU"}
    assert json.loads(trials[0]["sizes_json"])["rnumel"] == 128
    third = tune_kernel(TuneJob(model="mlp", shape=shape, targets=("sm_90",)), root, "cpu",
                        timer=xblock_timer())
    assert (third.status, third.timed) == ("skipped", 0)          # nothing re-timed

    other = tune_kernel(TuneJob(model="mlp", shape=shape, targets=("sm_80",)), root, "cpu")
    assert other.status == "skipped" and "not one of the run's targets sm_80" in other.note


def test_a_tuning_build_builds_what_the_search_times_and_no_more(tmp_path, lowered,
                                                                 monkeypatch):
    """With ``descent_budget = 2`` a search times the default and the cost model's first two
    candidates, so the build compiles those three and not the fourth: a cubin no search
    reaches is CPU time for nothing (issue 16). Build and tune cover the same configs."""
    from tests.given_timer import small_space
    root, shape = fresh(tmp_path, lowered)
    space = small_space(tmp_path)
    candidates = [Config(XBLOCK=x, RBLOCK=128, num_warps=w) for x, w in ((1, 1), (2, 2),
                                                                         (4, 4), (8, 4))]
    for where in ("pipeline.kernel_tasks._candidates", "pipeline.tune_tasks._candidates"):
        monkeypatch.setattr(where, lambda shape, spaces, **_: candidates)
    built = build_task(BuildJob(model="mlp", shape=shape, target="sm_90", tuning=True,
                                space=str(space)), root)
    assert (built.status, built.built, built.build_errors) == ("ok", 3, 0), built.traceback
    default = autotune.default_config(shape.kind, shape.numels, "cuda")
    assert default in binaries(root) and len(set(binaries(root)) & set(candidates)) >= 2
    monkeypatch.setattr(autotune, "device_info", lambda device: FAKE_GPU)
    timer = xblock_timer()
    tuned = tune_kernel(TuneJob(model="mlp", shape=shape, targets=("sm_90",),
                                space=str(space)), root, "cpu", timer=timer)
    assert tuned.status == "ok" and set(timer.reps) == set(binaries(root))


def test_tune_task_without_cuda_is_a_failure_not_a_fake(tmp_path, lowered):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    root, shape = fresh(tmp_path, lowered)
    result = tune_task(TuneJob(model="mlp", shape=shape, targets=("sm_90",)), root)
    assert (result.status, result.error_type) == ("failed", "RuntimeError")
    assert Store(root).keys("trials") == []


@pytest.mark.gpu
def test_tune_task_on_the_gpu_times_real_candidates_and_a_rerun_times_nothing(tmp_path,
                                                                               lowered):
    root, shape = fresh(tmp_path, lowered)
    major, minor = torch.cuda.get_device_capability()
    arch = f"sm_{major}{minor}"
    built = build_task(BuildJob(model="mlp", shape=shape, target=arch, tuning=True), root)
    assert built.status == "ok" and built.built > 1, built.message
    job = TuneJob(model="mlp", shape=shape, targets=(arch,), budget_s=120.0)
    first = tune_task(job, root)
    assert first.status == "ok", first.traceback
    assert first.target == arch and first.timed > 1 and first.gpu_seconds > 0
    trials = Store(root).query("trials").to_pylist()
    ok = [t for t in trials if t["status"] == "ok"]
    assert len(ok) == first.timed and all(t["median_ms"] > 0 for t in ok)
    assert {t["device_name"] for t in trials} == {torch.cuda.get_device_name()}
    (best,) = [t for t in trials if t["is_best"]]
    assert best["median_ms"] == min(t["median_ms"] for t in ok)
    second = tune_task(job, root)
    assert (second.status, second.timed) == ("skipped", 0)
    assert len(Store(root).query("trials")) == len(trials)


# ----------------------------------------------------------------------------- summary
def test_summary_counts_builds_tuning_and_gpu_seconds():
    cfg = parse_config({"run": {"targets": ["sm_90", "sm_80"]}, "tuning": {"enabled": True},
                        "models": [{"factory": "a.b:one"}]}, "z.toml")
    results = [
        TaskResult("capture", "one", "ok", key="g1"),
        TaskResult("lower", "one", "ok", target="cuda", kernel_keys=("k1", "k2"),
                   new_kernel_keys=("k1", "k2")),
        TaskResult("build", "one", "ok", target="sm_90", built=10, build_errors=2, pruned=4),
        TaskResult("build", "one", "skipped", target="sm_90"),
        TaskResult("build", "one", "ok", target="sm_80", built=12),
        TaskResult("build", "one", "ok", target="sm_80", built=9),
        TaskResult("tune", "one", "ok", target="sm_90", device="NVIDIA H100", timed=11,
                   trial_errors=1, gpu_seconds=3.25, speedup=1.5),
        TaskResult("tune", "one", "ok", target="sm_90", device="NVIDIA H100", timed=8,
                   gpu_seconds=1.0, speedup=1.0, stop_reason="roofline", pruned=3,
                   not_reached=5, from_binary=6, jit_compiled=2, load_seconds=0.5),
    ]
    report = RunReport(config=cfg, store="s", results=results, wall_s=9.0,
                       gpu_s=sum(r.gpu_seconds for r in results))
    text = format_summary(report)
    lines = text.splitlines()
    totals = lines[lines.index(next(x for x in lines if x.startswith("models"))) + 2].split()
    # built: 3 of the 4 builds built binaries (the skipped one found its binaries stored)
    assert totals[:6] == ["1/1", "2", "3/4", "2/2", "0", "0"] and totals[-1] == "4.2"
    assert ("build (sm_90, sm_80): 31 binaries built, 2 config(s) did not build, 4 pruned "
            "before building") in text
    assert ("tune: 1 kernel search(es), 1.00 GPU-s each; stopped by roofline 1; 3 config(s) "
            "pruned, 5 never reached; 6 launched from stored binaries, 2 JIT compiled (0.5 s "
            "loading, not GPU-s)") in text
    assert "tune: 19 configs timed, 1 failed trials, on NVIDIA H100 (sm_90); 4.2 GPU-s" in text
    assert "1.22x geomean over 2 kernel(s)" in text
    assert "tune: sm_80: not tuned: no GPU of this architecture" in text
    assert report.exit_code == 0 and text.endswith("all models done")

    skipped = RunReport(config=cfg, store="s", results=results[:6], untuned=(2, 3))
    text = format_summary(skipped)
    assert "tune: skipped: no GPU workers: 2 kernels not tuned (3 kernel x sizes)" in text
    assert text.endswith("all models done (tuning skipped: no GPU workers)")
    assert skipped.exit_code == 0 and "0/3" in text
