"""`kiln` command line, dry-run plan, summary and progress text, and the tasks run in-process.

No cluster here (fast); test_pipeline_run.py runs zoos on a real LocalCluster.
"""
from __future__ import annotations

import io
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.config import ModelSpec, parse_config
from pipeline.progress import Progress
from pipeline.report import RunReport, format_summary
from pipeline.tasks import LowerJob, TaskResult, capture_task, lower_task, source_key

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "configs" / "zoo-tiny.toml"


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "zoo.toml"
    path.write_text(text)
    return path


def stage_lines(plan: str) -> list[str]:
    """The five stage rows of a printed plan."""
    lines = plan.splitlines()
    start = lines.index("stages:") + 3
    return lines[start:start + 5]


def test_dry_run_prints_the_plan_and_touches_nothing(tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["run", str(TINY), "--dry-run", "--store", str(store), "--workers", "3"]) == 0
    out = capsys.readouterr().out
    assert f"store    {store} (does not exist yet" in out
    assert "3 CPU worker process(es)" in out
    assert "targets  cpu, sm_90 (lowered as cpu, cuda)" in out
    for name in ("mlp", "convnet", "transformer_block"):
        assert f"  {name} " in out
    lines = {line.split()[0]: line for line in stage_lines(out)}
    assert lines["capture"].split()[1] == "3"
    assert lines["lower"].split()[1] == "6"           # 3 models x (cpu, cuda)
    assert "one task per distinct kernel x architecture (sm_90): its default config" in \
        lines["build"]
    assert "off (tuning.enabled = false)" in lines["tune"]
    assert "off (nothing tuned)" in lines["relower"]
    assert "checks: all 3 model(s) load" in out
    assert not store.exists()


def test_dry_run_imports_every_factory_and_checks_pt2_files(tmp_path, capsys):
    """Before: --dry-run passed a factory no worker could import."""
    (tmp_path / "bad.pt2").write_bytes(b"not a zip archive")
    cfg = write_config(tmp_path, '[[models]]\nfactory = "nowhere_models:net"\n'
                                 '[[models]]\npt2 = "bad.pt2"\n'
                                 '[[models]]\nfactory = "pipeline.zoo.tiny:mlp"\n')
    assert main(["run", str(cfg), "--dry-run", "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0].startswith("kiln run: error: model 'net': ModuleNotFoundError: factory "
                             f"'nowhere_models:net': no module named 'nowhere_models' in "
                             f"{tmp_path}")
    assert "PYTHONPATH" in err[0]
    assert err[1].endswith("bad.pt2: not a .pt2 archive (torch.export.save writes a zip file)")


def test_run_without_config_uses_the_tiny_zoo(tmp_path, capsys):
    assert main(["run", "--dry-run", "--store", str(tmp_path / "s")]) == 0
    assert capsys.readouterr().out.startswith("kiln run zoo-tiny (")


def test_dry_run_with_scheduler_names_it(tmp_path, capsys):
    assert main(["run", str(TINY), "--dry-run", "--store", str(tmp_path / "s"),
                 "--scheduler", "tcp://10.0.0.1:8786"]) == 0
    assert "existing Dask cluster at tcp://10.0.0.1:8786" in capsys.readouterr().out


def test_bad_config_exits_2_naming_the_key(tmp_path, capsys):
    cfg = write_config(tmp_path, '[[models]]\nfactory = "pipeline.zoo.tiny:mlp"\n'
                                 'dtype = "float33"\n')
    assert main(["run", str(cfg), "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "models[0].dtype" in err and "float33" in err
    assert not (tmp_path / "s").exists()


def test_tuning_enabled_is_accepted_and_the_plan_says_what_a_cpu_only_cluster_skips(
        tmp_path, capsys):
    cfg = write_config(tmp_path, '[run]\ntargets = ["sm_90"]\n[tuning]\nenabled = true\n'
                                 '[cluster]\ngpus = 0\n'
                                 '[[models]]\nfactory = "pipeline.zoo.tiny:mlp"\n')
    assert main(["run", str(cfg), "--dry-run", "--store", str(tmp_path / "s")]) == 0
    lines = {line.split()[0]: line for line in stage_lines(capsys.readouterr().out)}
    assert "every candidate config of search space 'default'" in lines["build"]
    assert "skipped: no GPU workers" in lines["tune"]
    assert "off (nothing tuned)" in lines["relower"]
    cfg.write_text(cfg.read_text().replace("gpus = 0", "gpus = 1"))
    assert main(["run", str(cfg), "--dry-run", "--store", str(tmp_path / "s")]) == 0
    lines = {line.split()[0]: line for line in stage_lines(capsys.readouterr().out)}
    assert "one task per distinct kernel x sizes on a GPU worker; budget 60 GPU-s" in \
        lines["tune"]
    assert "stored with tuned_for = the GPU's name" in lines["relower"]


def test_command_line_errors(capsys):
    assert main(["bake"]) == 2
    assert "unknown command 'bake'" in capsys.readouterr().err
    assert main([]) == 2
    assert main(["run", "--dry-run", "--workers", "0"]) == 2


def test_store_subcommand_delegates_to_storage(tmp_path, capsys):
    assert main(["store", "--store", str(tmp_path), "verify"]) == 0
    assert "verify:" in capsys.readouterr().out


def test_progress_bars_in_a_log_print_one_line_per_finished_task():
    out = io.StringIO()
    bars = Progress(["capture", "lower"], out, live=False)
    bars.add("capture", 2)
    bars.add("lower", 4)
    bars.finish("capture", "ok")
    bars.finish("capture", "failed")
    bars.add("lower", -2)                      # the failed model's lowerings never run
    bars.finish("lower", "skipped")
    lines = out.getvalue().splitlines()
    assert lines == ["capture  [##########----------]   1/2    ok 1",
                     "capture  [####################]   2/2    ok 1  failed 1",
                     "lower    [##########----------]   1/2    skipped 1"]


def test_summary_counts_reused_kernels_and_lists_failures():
    cfg = parse_config({"run": {"targets": ["cpu", "sm_90"]},
                        "models": [{"factory": "a.b:one"}, {"factory": "a.b:two"},
                                   {"factory": "a.b:three"}]}, "z.toml")
    results = [
        TaskResult("capture", "one", "ok", key="g1"), TaskResult("capture", "two", "ok", key="g2"),
        TaskResult("capture", "three", "failed", error_type="CaptureError",
                   message="model 'three': torch.export failed\nmore", attempts=1),
        # one: k1 new, k2 new; its cuda module has the same kernels (one lowering of the graph)
        TaskResult("lower", "one", "ok", target="cpu", kernel_keys=("k1", "k2"),
                   new_kernel_keys=("k1", "k2")),
        TaskResult("lower", "one", "ok", target="cuda", kernel_keys=("k1", "k2")),
        # two: shares k1 with one, adds k3
        TaskResult("lower", "two", "skipped", target="cpu", kernel_keys=("k1", "k3"),
                   new_kernel_keys=("k3",)),
        TaskResult("lower", "two", "failed", target="cuda", error_type="KilledWorker",
                   message="workers died", attempts=3),
    ]
    report = RunReport(config=cfg, store="s", results=results, wall_s=1.5)
    text = format_summary(report)
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line}
    assert rows["one"][1:6] == ["new", "new", "new", "2", "0"] and rows["one"][-1] == "ok"
    assert rows["two"][1:4] == ["new", "stored", "FAILED"]
    assert rows["three"][1:3] == ["FAILED", "-"]
    # kernels: 3 distinct, all new (none was in the store before the run): 0 reused. The
    # cuda module sharing the cpu module's kernels is not reuse (it read "reused 3" on a
    # first run); 2 failures
    totals = text.splitlines()[text.splitlines().index(
        next(line for line in text.splitlines() if line.startswith("models"))) + 2].split()
    assert totals[:6] == ["1/3", "3", "-", "off", "0", "2"]
    assert "three: capture: CaptureError after 1 attempt(s): model 'three': torch.export " \
           "failed" in text
    assert "two: lower[cuda]: KilledWorker after 3 attempt(s)" in text
    assert report.exit_code == 1
    rerun = [TaskResult("lower", "one", "skipped", target="cpu", kernel_keys=("k1", "k2")),
             TaskResult("build", "one", "skipped", target="sm_90"),
             TaskResult("build", "one", "ok", target="sm_90", built=1)]
    rerun_text = format_summary(RunReport(config=cfg, store="s", results=rerun, wall_s=1.0))
    lines = rerun_text.splitlines()
    totals = lines[lines.index(next(line for line in lines if line.startswith("models"))) + 2]
    assert totals.split()[1:5] == ["2", "1/2", "off", "2"]   # 1 of 2 builds built ("2/2" before)


def test_tasks_in_process_write_and_then_skip(tmp_path):
    """capture_task and lower_task without a cluster: new records, then skips."""
    from storage import Store
    store = str(tmp_path / "store")
    spec = ModelSpec(name="mlp", factory="pipeline.zoo.tiny:mlp", kwargs_json='{"batch": 4}')
    first = capture_task(spec, store)
    assert (first.status, first.stage, len(first.key)) == ("ok", "capture", 64), first
    assert capture_task(spec, store).status == "skipped"
    job = LowerJob(model=spec.name, graph_key=first.key, target="cpu")
    lowered = lower_task(job, store)
    assert lowered.status == "ok", lowered.traceback
    assert lowered.kernel_keys and set(lowered.new_kernel_keys) == set(lowered.kernel_keys)
    again = lower_task(job, store)
    assert (again.status, again.key, again.kernel_keys) == ("skipped", lowered.key,
                                                            lowered.kernel_keys)
    graph = Store(store).get("graphs", first.key)
    assert graph["model"] == "mlp" and "aten.addmm" in graph["graph_text"]
    assert graph["source_key"] == source_key(spec)
    assert Store(store).graph_for_source(source_key(spec)) == first.key
    other = ModelSpec(name="mlp", factory="pipeline.zoo.tiny:mlp", kwargs_json='{"batch": 8}')
    assert source_key(other) != source_key(spec)
    assert Store(store).graph_for_source(source_key(other)) is None
    assert Store(store).has("modules", lowered.key)


def test_tasks_return_failures_instead_of_raising(tmp_path):
    store = str(tmp_path / "store")
    bad = capture_task(ModelSpec(name="n", factory="pipeline.zoo.tiny:not_exportable"), store)
    assert (bad.status, bad.error_type) == ("failed", "CaptureError")
    assert "torch.export failed" in bad.message and "Traceback" in bad.traceback
    missing = capture_task(ModelSpec(name="m", factory="pipeline.zoo.tiny:nope"), store)
    assert missing.error_type == "AttributeError" and "has no attribute 'nope'" in missing.message
    missing_graph = lower_task(LowerJob(model="mlp", graph_key="0" * 64, target="cpu"), store)
    assert missing_graph.error_type == "GraphMissError" and "not in store" in missing_graph.message


def test_dynamic_dims_from_the_config_or_from_the_factory():
    from pipeline.config import DynamicDim
    from pipeline.tasks import capture_model
    spec = ModelSpec(name="mlp", factory="pipeline.zoo.tiny:mlp",
                     dynamic=(DynamicDim(input=0, dim=0, min=2, max=64, name="batch"),))
    user = [s for s in capture_model(spec).inputs if s.kind == "user"]
    assert [s.dynamic_dims for s in user] == [(0,)]
    own = ModelSpec(name="g", factory="pipeline.zoo.blocks:gpt2_block_dynamic")
    assert [s.dynamic_dims for s in capture_model(own).inputs if s.kind == "user"] == [
        (0, 1), (0,)]
    both = ModelSpec(name="g", factory="pipeline.zoo.blocks:gpt2_block_dynamic",
                     dynamic=spec.dynamic)
    with pytest.raises(ValueError, match="returns its own dynamic_shapes"):
        capture_model(both)


@pytest.mark.parametrize("factory", ["pipeline.zoo.tiny:mlp", "pipeline.zoo.tiny:convnet",
                                     "pipeline.zoo.tiny:transformer_block"])
def test_tiny_factories_are_deterministic(factory):
    from pipeline.tasks import import_factory
    fn = import_factory(factory)
    (m1, a1), (m2, a2) = fn(), fn()
    import torch
    assert all(torch.equal(x, y) for x, y in zip(a1, a2))
    assert all(torch.equal(p, q) for p, q in zip(m1.state_dict().values(),
                                                 m2.state_dict().values()))
    assert not m1.training and all(x.abs().sum() > 0 for x in a1)


def test_a_train_mode_factory_is_compiled_in_eval_mode_with_a_warning(tmp_path):
    """Before: dropout and batch statistics were compiled silently."""
    from pipeline.config import DynamicDim
    from pipeline.tasks import capture_model
    from storage import Store
    spec = ModelSpec(name="train", factory="pipeline.zoo.faults:train_mode")
    result = capture_task(spec, str(tmp_path / "store"))
    assert result.status == "ok" and "train mode; compiled in eval mode" in result.warning
    graph = Store(str(tmp_path / "store")).get("graphs", result.key)["graph_text"]
    assert "dropout" not in graph and "batch_norm_legit_no_training" in graph
    assert capture_model(spec).mutated_buffers == ()      # running stats are read, not updated
    deep = ModelSpec(name="d", factory="pipeline.zoo.tiny:mlp",
                     dynamic=(DynamicDim(input=0, dim=2, min=1, max=8, name="b"),))
    with pytest.raises(ValueError, match="dynamic dim 'b' is dim 2 of input 0, which has 2"):
        capture_model(deep)


def test_version_and_a_top_level_help_that_lists_the_commands(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("kiln 0.1.0 (torch ")
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "run [CONFIG]" in out and "store CMD" in out and "repair" in out


def test_a_closed_stdout_is_not_a_traceback(tmp_path):
    """`kiln store ls | head -1` raised BrokenPipeError."""
    import os
    import subprocess
    import sys
    from storage import Store
    from test_storage_support import trials
    Store(tmp_path).write("trials", trials(0, 50))
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "store", "--store",
                             str(tmp_path), "ls", "trials"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    proc.stdout.close()                     # the reader is gone before kiln writes a line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and err == ""


def test_a_config_path_that_is_a_directory_or_binary_is_one_line(tmp_path, capsys):
    (tmp_path / "zoo.toml").write_bytes(b"\x00\xff\xfe binary \x80")
    for path, reason in ((tmp_path, "is a directory"), (tmp_path / "zoo.toml", "not a text")):
        assert main(["run", str(path), "--dry-run"]) == 2
        err = capsys.readouterr().err
        assert reason in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_the_store_path_is_checked_before_anything_runs(tmp_path, capsys):
    """Before: a --store that is a file failed every model, and the summary said the
    failures were recorded in that store."""
    file = tmp_path / "file"
    file.write_text("")
    for store, reason in ((file, "is a file, not a directory"),
                          (file / "sub", f"({file} is a file)")):
        assert main(["run", str(TINY), "--store", str(store)]) == 2
        err = capsys.readouterr().err
        assert reason in err and len(err.splitlines()) == 1
    from pipeline.report import _failure_lines
    failed = [TaskResult("capture", "m", "failed", error_type="E", message="x")]
    assert "recorded in the store's" in _failure_lines(failed, unrecorded=0)[1]
    assert "NOT recorded in the store" in _failure_lines(failed, unrecorded=1)[1]


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root writes into read-only directories")
def test_a_read_only_store_directory_is_refused(tmp_path, capsys):
    store = tmp_path / "ro"
    store.mkdir(mode=0o555)
    assert main(["run", str(TINY), "--store", str(store), "--dry-run"]) == 2
    assert "cannot write in" in capsys.readouterr().err


def test_model_status_comes_from_the_store(tmp_path):
    """Before: a model whose worker died after its graph (or module) was stored was reported
    FAILED. A failure the store contradicts becomes a warning; a model whose lowering never
    ran is incomplete (exit 1), not failed."""
    from pipeline.runner import reconcile_with_store
    root = str(tmp_path / "store")
    cfg = parse_config({"models": [{"factory": "pipeline.zoo.tiny:mlp", "kwargs": {"batch": 4}},
                                   {"factory": "pipeline.zoo.tiny:convnet"}]}, "z.toml")
    mlp, convnet = cfg.models
    graph = capture_task(mlp, root).key
    lowered = lower_task(LowerJob(model=mlp.name, graph_key=graph, target="cpu"), root)
    died = dict(status="failed", error_type="KilledWorker", message="workers died", attempts=3)
    report = RunReport(config=cfg, store=root, results=[
        TaskResult("capture", "mlp", "ok", key=graph),
        TaskResult("lower", "mlp", key=f"{graph}:cpu", target="cpu", **died),
        TaskResult("capture", "convnet", key=convnet.source, **died)])
    reconcile_with_store(report, root)
    assert [r.failed for r in report.results] == [False, False, True]
    assert "but its records are in the store" in report.results[1].warning
    assert report.exit_code == 1 and report.failed_models() == {"convnet"}

    capture_task(convnet, root)           # its graph is stored, its module is not
    report.results[2] = TaskResult("capture", "convnet", key=convnet.source, **died)
    reconcile_with_store(report, root)
    assert not report.failures and report.incomplete_models() == ["convnet"]
    assert report.exit_code == 1
    text = format_summary(report)
    assert "1 model(s) incomplete: run again to finish them" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line}
    assert rows["mlp"][-1] == "ok" and rows["convnet"][-1] == "incomplete"
    assert lowered.key
