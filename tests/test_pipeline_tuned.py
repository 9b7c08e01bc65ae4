"""Tuned modules after a sweep, and the questions asked of a sweep's trials, on CPU.

The trials here are written by hand (``_sweep``, a test fixture: made-up timings on a made-up
GPU named "Fake H100"), for the real kernels of the tiny transformer block lowered for CUDA:
for every kernel shape the heuristic default is slow and one other candidate of its real
search space is fast. The relower task must then store a module whose wrapper launches
exactly those candidates, found by ``Store.tuned_module`` under the GPU's name; a rerun
stores nothing. What a real GPU sweep gives is checked by the lead on the GPU machine
(benchmarks/bench_pipeline.py).
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from compiler.autotune import Config, candidates, default_config, load_spaces
from pipeline.config import ModelSpec
from pipeline.runner import _TunedModules
from pipeline.shapes import KernelShape
from pipeline.tasks import LowerJob, capture_task, lower_task
from pipeline.tuned_tasks import RelowerJob, relower_task, tuned_configs
from storage import SCHEMA_VERSION, Store, TrialRecord
from storage.cli import store_main
from storage.files import new_file_name
from storage.schema import file_metadata, schema_for
from storage.tuning import best_config, best_trials, tuning_gains

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
GPU = "Fake H100"
SPEC = ModelSpec(name="block", factory="pipeline.zoo.tiny:transformer_block")


@pytest.fixture(scope="module")
def lowered(tmp_path_factory) -> tuple[Path, str, tuple[KernelShape, ...]]:
    """A store with the tiny transformer block lowered for cuda (6 kernel shapes)."""
    root = tmp_path_factory.mktemp("tuned") / "store"
    captured = capture_task(SPEC, str(root))
    result = lower_task(LowerJob(model=SPEC.name, graph_key=captured.key, target="cuda"), str(root))
    assert result.status == "ok", result.traceback
    return root, captured.key, result.kernel_shapes


def _fast_candidate(shape: KernelShape) -> Config:
    """A candidate of the shape's real search space other than its default."""
    default = default_config(shape.kind, shape.numels, "cuda")
    return next(c for c in candidates(load_spaces("default")[shape.kind], shape.numels)
                if c != default and c.num_warps != default.num_warps)


def _trial(shape: KernelShape, config: Config, ms: float | None, device: str = GPU,
           default: bool = False, status: str = "ok") -> TrialRecord:
    return TrialRecord.timed(kernel_key=shape.kernel_key, sizes=shape.trial_sizes(),
                             config=config.as_dict(), device_name=device, arch="sm_90",
                             driver="555.42", triton_version="3.6.0", torch_version="2.11.0",
                             times_ms=[ms] if ms else [], status=status, is_default=default)


def _sweep(shapes, device: str = GPU, scale: float = 1.0) -> dict[str, Config]:
    """Hand-written trials (a fixture, not a measurement): per shape the default at 1 ms,
    a failed candidate, and a fast candidate at 0.25 ms (x ``scale``)."""
    trials, fast = [], {}
    for shape in shapes:
        default = default_config(shape.kind, shape.numels, "cuda")
        fast[shape.kernel_key] = _fast_candidate(shape)
        wrong = Config(**{**default.as_dict(), "num_warps": 32})
        trials += [_trial(shape, default, 1.0 * scale, device, default=True),
                   _trial(shape, fast[shape.kernel_key], 0.25 * scale, device),
                   _trial(shape, wrong, None, device, status="wrong_result")]
    return trials, fast


def _store(tmp_path: Path, lowered) -> tuple[Store, str, tuple[KernelShape, ...]]:
    root, graph_key, shapes = lowered
    shutil.copytree(root, tmp_path / "store")
    return Store(tmp_path / "store"), graph_key, shapes


def test_relower_stores_a_module_that_launches_the_best_stored_configs(tmp_path, lowered):
    store, graph_key, shapes = _store(tmp_path, lowered)
    trials, fast = _sweep(shapes)
    store.write("trials", trials)
    assert tuned_configs(store, GPU, shapes) == {k: c.as_dict() for k, c in sorted(fast.items())}
    job = RelowerJob(model=SPEC.name, graph_key=graph_key, device_name=GPU, shapes=shapes)

    result = relower_task(job, str(store.root))
    assert result.status == "ok", result.traceback
    assert store.tuned_module(graph_key, GPU) == result.key
    assert store.tuned_module(graph_key, "Other GPU") is None
    artifact = store.get_artifact(result.key)
    for kernel in artifact.kernels:
        launch = kernel.spec.launch.as_json()
        want = fast[kernel.kernel_key]
        assert launch["tuned"] and launch["num_warps"] == want.num_warps
        assert {k: v for k, v in launch.items() if k.endswith("BLOCK")} == {
            k: v for k, v in want.as_dict().items() if k.endswith("BLOCK")}
        (bound,) = [line for line in artifact.source.splitlines()
                    if line.startswith(f"{kernel.name}_launch = bind_launch(")]
        assert all(f"'{k}': {v}" in bound for k, v in want.as_dict().items() if k != "num_stages")
    untuned = [m for m in store.query("modules").to_pylist() if m["tuned_for"] is None]
    assert len(untuned) == 1 and untuned[0]["module_key"] != result.key

    modules = len(store.files("modules"))
    again = relower_task(job, str(store.root))
    assert (again.status, again.key) == ("skipped", result.key)
    assert len(store.files("modules")) == modules          # a second run stores nothing


def test_each_gpu_kind_gets_its_own_tuned_module(tmp_path, lowered):
    store, graph_key, shapes = _store(tmp_path, lowered)
    store.write("trials", _sweep(shapes)[0])
    other = []
    for shape in shapes:      # on the other GPU the default is the fastest
        default = default_config(shape.kind, shape.numels, "cuda")
        other += [_trial(shape, default, 0.1, "Other GPU", default=True),
                  _trial(shape, _fast_candidate(shape), 0.3, "Other GPU")]
    store.write("trials", other)
    keys = {}
    for device in (GPU, "Other GPU"):
        job = RelowerJob(model=SPEC.name, graph_key=graph_key, device_name=device, shapes=shapes)
        keys[device] = relower_task(job, str(store.root)).key
        assert store.tuned_module(graph_key, device) == keys[device]
    assert keys[GPU] != keys["Other GPU"]
    kernel = store.get_artifact(keys["Other GPU"]).kernels[0]
    shape = next(s for s in shapes if s.kernel_key == kernel.kernel_key)
    assert kernel.spec.launch.as_json()["num_warps"] == default_config(
        shape.kind, shape.numels, "cuda").num_warps


def test_relower_without_trials_is_skipped_and_says_so(tmp_path, lowered):
    store, graph_key, shapes = _store(tmp_path, lowered)
    job = RelowerJob(model=SPEC.name, graph_key=graph_key, device_name=GPU, shapes=shapes)
    result = relower_task(job, str(store.root))
    assert result.status == "skipped" and "no kernel of block has an ok trial" in result.note


def test_best_config_and_gains_queries(tmp_path, lowered):
    store, _, shapes = _store(tmp_path, lowered)
    trials, fast = _sweep(shapes)
    store.write("trials", trials + _sweep(shapes[:1], "Other GPU", scale=2.0)[0])
    shape = shapes[0]
    best = best_config(store, shape.kernel_key, GPU)
    assert best.config == fast[shape.kernel_key].as_dict() and best.median_ms == 0.25
    assert best.timed == 2                                 # the failed trial does not count
    assert best_config(store, shape.kernel_key, GPU, sizes={"xnumel": 1}) is None
    assert best_config(store, "no-such-kernel", GPU) is None
    assert {b.device_name for b in best_trials(store, kernel_keys=[shape.kernel_key])} == {
        GPU, "Other GPU"}

    gains = tuning_gains(store, GPU)
    assert len(gains) == len({(s.kernel_key, s.digest) for s in shapes})
    assert {g.speedup for g in gains} == {4.0} and all(g.name.startswith("kiln_") for g in gains)
    assert {g.kind for g in gains} == {s.kind for s in shapes}
    # a trial without a default (as rows from before schema v3) has no gain to report
    lone = _trial(shape, Config(XBLOCK=1, RBLOCK=64, num_warps=1), 0.5, "Third GPU")
    store.write("trials", [lone])
    (third,) = tuning_gains(store, "Third GPU")
    assert third.default_ms is None and third.speedup is None


def test_store_cli_best_gains_and_plot(tmp_path, lowered, capsys):
    store, _, shapes = _store(tmp_path, lowered)
    store.write("trials", _sweep(shapes)[0])
    root = str(store.root)
    assert store_main(["--store", root, "best", shapes[0].kernel_key[:10]]) == 0
    out = capsys.readouterr().out
    assert f"kernel {shapes[0].kernel_key}" in out and "0.2500 ms (best of 2)" in out
    assert store_main(["--store", root, "best", "zzzz"]) == 1
    assert store_main(["--store", root, "gains", "--device", GPU]) == 0
    out = capsys.readouterr().out
    assert "4.00x" in out and "4.000x geomean speedup" in out
    pytest.importorskip("matplotlib")
    png = tmp_path / "tuning.png"
    assert store_main(["--store", root, "plot-tuning", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "empty").mkdir()                   # a store without trials
    assert store_main(["--store", str(tmp_path / "empty"), "plot-tuning",
                       "--out", str(tmp_path / "none.png")]) == 1
    assert "nothing to plot" in capsys.readouterr().err


def test_trials_and_modules_of_schema_v2_are_migrated(tmp_path):
    store = Store(tmp_path / "s")
    shape = KernelShape("k" * 64, "pointwise1d", ("torch.float32",) * 2, (64, 64), (64,))
    table = pa.Table.from_pylist([vars(_trial(shape, Config(XBLOCK=64, num_warps=1), 0.5))])
    v2_fields = [f for f in schema_for("trials") if f.name != "is_default"]
    table = table.drop_columns(["is_default"]).append_column(
        "schema_version", pa.array([2], pa.int32()))
    table = table.select([f.name for f in v2_fields]).cast(
        pa.schema(v2_fields, metadata=file_metadata("trials", 2)))
    store.fs.create_dir(store.dataset_dir("trials"))
    pq.write_table(table, f"{store.dataset_dir('trials')}/{new_file_name('part', 2)}")
    (row,) = store.query("trials").to_pylist()
    assert row["is_default"] is None and row["schema_version"] == SCHEMA_VERSION
    assert store.verify().ok


def test_models_wait_for_every_shape_then_get_one_job_per_gpu_kind():
    def shape(key: str) -> KernelShape:
        return KernelShape(key, "pointwise1d", ("torch.float32",) * 2, (8, 8), (8,))
    a, b, c = shape("a"), shape("b"), shape("c")
    tuned = _TunedModules()
    job = lambda name: LowerJob(model=name, graph_key=name, target="cuda")
    tuned.expect(job("m1"), (a, b), "{}")
    assert tuned.tuned(a, GPU) == [] and tuned.ready("m1") == []
    tuned.expect(job("m2"), (a, c), "{}")          # a: tuned already (shared kernel)
    assert tuned.tuned(c, None) == ["m2"]          # c: its tune failed
    (m2,) = tuned.ready("m2")
    assert (m2.device_name, m2.shapes) == (GPU, (a, c))
    assert tuned.ready("m2") == []                  # never twice
    assert tuned.tuned(b, "Other GPU") == ["m1"]
    assert [j.device_name for j in tuned.ready("m1")] == [GPU, "Other GPU"]
    tuned.expect(job("m3"), (c,), "{}")             # only an untuned shape: nothing to do
    assert tuned.ready("m3") == []


def test_summary_reports_throughput_tuned_modules_and_placement():
    from pipeline.config import parse_config
    from pipeline.report import RunReport, format_summary
    from pipeline.tasks import TaskResult
    cfg = parse_config({"run": {"targets": ["sm_90"]}, "tuning": {"enabled": True},
                        "models": [{"factory": "a.b:one"}, {"factory": "a.b:two"}]}, "z.toml")
    results = [TaskResult("lower", m, "ok", key=f"mod-{m}", target="cuda") for m in ("one", "two")]
    results += [TaskResult("build", "one", "ok", target="sm_90", built=30)] * 3
    results += [TaskResult("build", "one", "skipped", target="sm_90")]
    results += [TaskResult("tune", "one", "ok", target="sm_90", device=GPU, timed=10,
                           gpu_seconds=2.0)] * 4
    results += [TaskResult("tune", "one", "skipped", target="sm_90", device=GPU)]
    results += [TaskResult("relower", "one", "ok", target="cuda", device=GPU),
                TaskResult("relower", "two", "skipped", target="cuda", device=GPU)]
    report = RunReport(config=cfg, store="s", results=results, wall_s=60.0, gpu_s=8.0,
                       stage_spans={"tune": [10.0, 40.0]},
                       placement={"build": {"cpu-0": 3}, "tune": {"gpu-0": 2, "gpu-1": 3}})
    t = report.throughput()
    assert (t.graphs, t.kernels_built, t.kernels_tuned, t.configs_timed) == (2, 3, 4, 40)
    assert (t.graphs_per_min, t.built_per_min, t.tuned_per_min) == (2.0, 3.0, 8.0)
    text = format_summary(report)
    assert ("throughput: 2.0 graphs/min, 3.0 kernels built/min over 60.0 s; 8.0 kernels "
            "tuned/min over the tune stage's 30.0 s (40 configs timed); 8.0 GPU-s") in text
    assert f"tuned modules ({GPU}): 1 new, 1 stored or without trials, 0 failed" in text
    assert "workers: build cpu-0:3; tune gpu-0:2 gpu-1:3" in text


@pytest.mark.gpu
def test_tuned_zoo_run_stores_a_tuned_module_that_loads_and_matches_eager(tmp_path):
    """On a GPU: the tiny MLP tuned for real; its tuned module is found under this GPU's
    name, launches the best stored configs, and computes what eager computes."""
    import torch
    from compiler.capture import capture_module
    from pipeline.config import load_config
    from pipeline.runner import run_zoo
    from pipeline.tasks import source_key
    from pipeline.zoo import tiny
    config = load_config("configs/zoo-tiny-tune.toml")
    config = dataclasses.replace(config, models=config.models[:1],
                                 # a budget that times every candidate: a smaller one
                                 # leaves the rest for the next run, by design
                                 tuning=dataclasses.replace(config.tuning, budget_s=120.0),
                                 cluster=dataclasses.replace(config.cluster, gpus=1))
    store = Store(tmp_path / "store")
    report = run_zoo(config, str(store.root))
    assert report.exit_code == 0, [r.message for r in report.failures]
    device = torch.cuda.get_device_name()
    graph_key = store.graph_for_source(source_key(config.models[0]))
    key = store.tuned_module(graph_key, device)
    assert key is not None and [r.status for r in report.stage("relower")] == ["ok"]
    artifact = store.get_artifact(key)
    for kernel in artifact.kernels:
        best = best_config(store, kernel.kernel_key, device)
        assert kernel.spec.launch.as_json()["num_warps"] == best.config["num_warps"]
    module, (x,) = tiny.mlp()
    module = module.cuda()
    # The serving process captures on its GPU: graph keys are device-neutral, so this is the
    # graph the CPU workers captured, and its flat inputs are CUDA tensors.
    captured = capture_module(module, (x.cuda(),))
    assert captured.graph_key == graph_key
    fresh = torch.randn(x.shape, device="cuda")
    loaded = store.load(key)
    out = captured.finish_call(module, loaded(captured.flatten_call(module, (fresh,), {})))
    torch.testing.assert_close(out, module(fresh), rtol=1e-4, atol=1e-4)
    again = run_zoo(config, str(store.root))
    assert again.nothing_new and [r.status for r in again.stage("relower")] == ["skipped"]
