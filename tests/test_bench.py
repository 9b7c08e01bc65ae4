"""``kiln bench``: the real command on the tiny zoo (CPU: eager against kiln, kernels under
Triton's interpreter), rows in the store with the bench schema, the report and its plots, a
failing system or model recorded as an error while the rest goes on, and ``--quick``'s
limits. The timings here check the path, never speed. One GPU test runs the quick set."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from pipeline.bench import bandwidth, report
from pipeline.bench.cli import QUICK, bench_main
from pipeline.bench.systems import SYSTEMS, System, select
from pipeline.cli import main as kiln_main
from storage import Store, schema_for

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "configs" / "zoo-tiny.toml")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _bench(argv: list[str], registry=SYSTEMS) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = bench_main(argv, out, err, registry=registry)
    return status, out.getvalue(), err.getvalue()


def _rows(store: Path) -> dict[tuple[str, str], dict]:
    return {(r["model"], r["system"]): r for r in Store(store).query("bench").to_pylist()}


def _zoo_of(tmp_path: Path, *entries: str) -> str:
    """A zoo config of ``entries``, each a ``[[models]]`` body."""
    text = '[run]\nname = "bench-test"\ntargets = ["cpu"]\n' + "".join(
        f"\n[[models]]\n{e}\n" for e in entries)
    path = tmp_path / "zoo.toml"
    path.write_text(text)
    return str(path)


def _zoo(tmp_path: Path, *factories: str) -> str:
    return _zoo_of(tmp_path, *(f'factory = "{f}"' for f in factories))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """``kiln bench`` (through the ``kiln`` entry point) on the tiny zoo's MLP, --quick."""
    root = tmp_path_factory.mktemp("bench")
    store, out = root / "store", root / "report"
    status = kiln_main(["bench", TINY, "--store", str(store), "--out", str(out), "--quick",
                        "--models", "mlp", "--device", "cpu"])
    return status, store, out


def test_rows_land_in_the_store_with_the_bench_schema(quick_run):
    status, store, _ = quick_run
    assert status == 0
    table = Store(store).query("bench")
    assert table.schema.names == schema_for("bench").names
    rows = _rows(store)
    assert {s for _, s in rows} == {s.name for s in select(None, True, False, SYSTEMS)}
    assert len({r["run_id"] for r in rows.values()}) == 1
    for system in ("eager", "kiln_nographs"):
        row = rows[("mlp", system)]
        assert row["status"] == "ok", row["error"]
        assert 0 < row["q1_ms"] <= row["median_ms"] <= row["q3_ms"]
        assert row["cold_s"] > 0 and row["device_name"] == "cpu" and row["quick"]
        assert row["config"] == "zoo-tiny" and row["dtype"] == "float32"
    kiln = rows[("mlp", "kiln_nographs")]
    import compiler
    from pipeline.zoo import tiny
    module, args = tiny.mlp()
    assert kiln["kernel_count"] == compiler.compile_module(module, args).kernel_count
    # kiln's cold start split into its compile's phases and the rest (the first call)
    split = json.loads(kiln["details_json"])["kiln_cold_s"]
    assert list(split) == ["capture", "lower", "load", "rest"]
    assert split["capture"] > 0 and split["lower"] > 0 and split["load"] >= 0
    assert sum(split.values()) == pytest.approx(kiln["cold_s"], abs=1e-3)
    assert "kiln_cold_s" not in json.loads(rows[("mlp", "eager")]["details_json"])


def test_quick_limits_repeats_and_systems(quick_run):
    _, store, _ = quick_run
    rows = _rows(store)
    assert rows[("mlp", "eager")]["n_repeats"] == QUICK["repeats"]
    # the systems outside the quick set were not even planned
    assert not {("mlp", "inductor_max"), ("mlp", "kiln_tuned_nographs")} & set(rows)


def test_gpu_only_systems_are_skipped_with_the_reason(quick_run):
    _, store, _ = quick_run
    rows = _rows(store)
    for system in ("inductor", "inductor_ro", "kiln_graphs", "kiln_tuned"):
        row = rows[("mlp", system)]
        assert row["status"] == "skipped" and row["median_ms"] is None
        assert row["error"] == SYSTEMS[system].needs_cuda


def test_report_and_plots_are_written(quick_run):
    _, _, out = quick_run
    text = (out / "report.md").read_text()
    assert "# kiln bench: zoo-tiny" in text and "### mlp" in text
    assert "| kiln_graphs | skipped |" in text and "| eager |" in text
    rows = json.loads((out / "rows.json").read_text())
    assert {r["system"] for r in rows} >= {"eager", "kiln_nographs"}
    pytest.importorskip("matplotlib")
    for name in ("speedup.png", "cold_start.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
        assert f"]({name})" in text


def test_the_readme_query_reads_the_run(quick_run):
    pytest.importorskip("duckdb")
    import re
    from storage.sql import sql
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Benchmarking: `kiln bench`"):text.index("## Layout")]
    (query,) = re.findall(r"```sql\n(.*?)```", section, re.S)
    rows = {(r["model"], r["system"]): r for r in sql(quick_run[1], query).to_pylist()}
    assert rows[("mlp", "eager")]["vs_eager"] == 1.0
    assert rows[("mlp", "kiln_nographs")]["status"] == "ok"
    assert rows[("mlp", "kiln_graphs")]["ms"] is None


def test_a_failing_system_and_a_crashing_model_are_error_rows_and_the_rest_goes_on(tmp_path):
    broken = System("broken", "pipeline.bench.systems:kiln", "kiln with an unknown option",
                    '{"no_such_option": 1}')
    registry = {"eager": SYSTEMS["eager"], "broken": broken}
    zoo = _zoo(tmp_path, "pipeline.zoo.faults:exit", "pipeline.zoo.tiny:mlp")
    status, out, err = _bench([zoo, "--store", str(tmp_path / "s"), "--out",
                               str(tmp_path / "r"), "--systems", "eager,broken",
                               "--repeats", "3", "--device", "cpu"], registry)
    assert status == 1, err
    rows = _rows(tmp_path / "s")
    assert rows[("exit", "eager")]["status"] == "error"
    assert "exited with status 3" in rows[("exit", "eager")]["error"]
    assert rows[("mlp", "eager")]["status"] == "ok"
    assert rows[("mlp", "broken")]["status"] == "error"
    assert "OptionsError" in rows[("mlp", "broken")]["error"]
    assert "2 failed" in out or "3 failed" in out


def checked(module, args, dynamic_shapes, context):
    """A system (for the test below) whose row gets notes from checks run after timing."""
    from pipeline.bench.systems import Built

    def fails() -> str:
        raise ValueError("no such thing")
    return Built(module, checks=(lambda: f"checked after {module.__class__.__name__}", fails))


def test_checks_run_after_the_timings_and_a_failing_one_is_a_note(tmp_path):
    registry = {"checked": System("checked", "tests.test_bench:checked", "checks")}
    zoo = _zoo(tmp_path, "pipeline.zoo.tiny:mlp")
    status, _, err = _bench([zoo, "--store", str(tmp_path / "s"), "--out", str(tmp_path / "r"),
                             "--systems", "checked", "--repeats", "3", "--device", "cpu"],
                            registry)
    assert status == 0, err
    row = _rows(tmp_path / "s")[("mlp", "checked")]
    notes = json.loads(row["details_json"])["notes"]
    assert row["status"] == "ok" and row["median_ms"] > 0
    assert notes == ["checked after MLP", "check failed: ValueError: no such thing"]


def told(module, args, dynamic_shapes, context):
    """A system (for the test below) that notes what its context says of ``--same-process``."""
    from pipeline.bench.systems import Built
    return Built(module, notes=(f"same_process={context.same_process}",))


@pytest.mark.parametrize("flag", [True, False])
def test_same_process_reaches_the_child_and_notes_reach_the_progress_line(tmp_path, flag):
    registry = {"told": System("told", "tests.test_bench:told", "notes its context")}
    zoo = _zoo(tmp_path, "pipeline.zoo.tiny:mlp")
    status, _, err = _bench([zoo, "--store", str(tmp_path / "s"), "--out", str(tmp_path / "r"),
                             "--systems", "told", "--repeats", "3", "--device", "cpu"]
                            + ["--same-process"] * flag, registry)
    assert status == 0, err
    row = _rows(tmp_path / "s")[("mlp", "told")]
    assert json.loads(row["details_json"])["notes"] == [f"same_process={flag}"]
    assert f"\n  same_process={flag}\n" in err


def test_a_hanging_child_is_killed_at_its_timeout(tmp_path):
    zoo = _zoo(tmp_path, "pipeline.zoo.faults:hang")
    status, _, _ = _bench([zoo, "--store", str(tmp_path / "s"), "--out", str(tmp_path / "r"),
                           "--systems", "eager", "--timeout-s", "10", "--device", "cpu"])
    assert status == 1
    assert _rows(tmp_path / "s")[("hang", "eager")]["error"] == "timed out after 10 s"


def test_past_the_budget_nothing_starts(tmp_path):
    status, out, _ = _bench([TINY, "--store", str(tmp_path / "s"), "--out", str(tmp_path / "r"),
                             "--quick", "--budget-s", "0", "--device", "cpu"])
    assert status == 0
    rows = _rows(tmp_path / "s")
    assert len(rows) == 3 * len(select(None, True, False, SYSTEMS))
    assert all(r["status"] == "skipped" for r in rows.values())
    assert rows[("mlp", "eager")]["error"] == "past the time budget of 0 s"


def test_a_model_whose_library_is_missing_is_skipped(tmp_path):
    try:
        import timm  # noqa: F401
        pytest.skip("timm is installed here")
    except ImportError:
        pass
    zoo = _zoo(tmp_path, "pipeline.zoo.heldout:resnet50")
    status, _, _ = _bench([zoo, "--store", str(tmp_path / "s"), "--out", str(tmp_path / "r"),
                           "--systems", "eager,kiln_nographs", "--device", "cpu"])
    assert status == 0
    rows = _rows(tmp_path / "s")
    assert {r["status"] for r in rows.values()} == {"skipped"}
    assert "needs timm" in rows[("resnet50", "kiln_nographs")]["error"]


def test_bad_command_lines_are_refused(tmp_path):
    status, _, err = _bench([TINY, "--systems", "eager,nope", "--store", str(tmp_path)])
    assert status == 2 and "unknown systems ['nope']" in err
    status, _, err = _bench([TINY, "--models", "nope", "--store", str(tmp_path)])
    assert status == 2 and "unknown models ['nope']" in err


def test_tuning_wires_through_on_cpu():
    """The tuned system's search runs each kernel's candidates (checked against the default
    under the interpreter); off a GPU nothing is timed, so every kernel keeps its default."""
    import compiler
    from pipeline.bench.tuned import tune_module
    from pipeline.zoo import tiny
    module, args = tiny.mlp()
    untuned = compiler.compile_module(module, args)
    with torch.no_grad():
        summary = tune_module(untuned, args, "cpu", quick=True, budget_s=60)
    assert summary.kernels == untuned.kernel_count == summary.tuned
    assert summary.configs == {}
    with torch.no_grad():
        assert tune_module(untuned, args, "cpu", quick=True, budget_s=-1).tuned == 0


def test_same_process_ab_tells_the_slower_module():
    """The tuned system's A/B note times both modules in one process, alternating: a module
    made slower by a sleep shows as such, whichever argument it is."""
    import time
    from pipeline.bench.systems import same_process_ab
    fast, slow = (lambda x: x + 1), (lambda x: time.sleep(0.002) or x)
    worse = same_process_ab(fast, slow, (1,), "cpu", rounds=2, calls=5)
    better = same_process_ab(slow, fast, (1,), "cpu", rounds=2, calls=5)
    ratio = lambda note: float(note.rsplit("(", 1)[1].split("x")[0])   # untuned / tuned
    assert ratio(worse) < 0.5 < 2.0 < ratio(better), (worse, better)
    assert worse.startswith("same process, alternating 2x5 calls: untuned ")
    named = same_process_ab(slow, fast, (1,), "cpu", rounds=1, calls=3,
                            labels=("torch.compile default", "kiln"))
    assert named.startswith("same process, alternating 1x3 calls: torch.compile default ")
    assert " ms, kiln " in named and ratio(named) > 2.0


def test_bandwidth_fractions_count_memory_bound_kernels_only():
    times = [bandwidth.KernelTime("pw", 0.02, 2), bandwidth.KernelTime("mm", 0.5, 1),
             bandwidth.KernelTime("aten_kernel", 0.1, 1)]
    facts = {"pw": bandwidth.KernelFacts(20_000_000, "pointwise"),
             "mm": bandwidth.KernelFacts(1_000_000, "matmul")}
    rows = bandwidth.fractions(times, facts, copy_rate_gbps=4000.0)
    assert [r["name"] for r in rows] == ["pw"]
    # 20 MB per launch in 0.01 ms = 2000 GB/s: half the copy rate
    assert rows[0]["fraction"] == pytest.approx(0.5)
    assert bandwidth.overall_fraction(rows, 4000.0) == pytest.approx(0.5)


def test_goals_name_the_models_that_miss():
    rows = [{"model": m, "system": s, "status": "ok", "median_ms": ms, "cold_s": 1.0}
            for m, s, ms in (("a", "inductor", 1.0), ("a", "kiln_nographs", 0.5),
                             ("b", "inductor", 1.0), ("b", "kiln_nographs", 2.0))]
    text = report.markdown(rows, {"config": "z"}, {"kiln_nographs": "inductor"}, [], "none")
    line = next(x for x in text.splitlines() if x.startswith("| kiln without CUDA graphs"))
    assert "| NO |" in line and "b 0.50x" in line and "a 2.00x" not in line
    assert "| 1.00x |" in line      # geomean of 2.0 and 0.5


@pytest.mark.gpu
def test_quick_set_on_a_gpu(tmp_path):
    status, out, err = _bench([TINY, "--store", str(tmp_path / "s"), "--out", str(tmp_path / "r"),
                               "--quick", "--models", "mlp,convnet"])
    assert status == 0, err
    rows = _rows(tmp_path / "s")
    assert all(r["status"] == "ok" for r in rows.values()), rows
    kiln = rows[("convnet", "kiln_nographs")]
    assert kiln["copy_gbps"] > 100 and kiln["kernel_count"] > 0
    assert kiln["membound_kernels"] > 0 and 0 < kiln["bandwidth_fraction"] < 2
    assert (tmp_path / "r" / "bandwidth.png").exists()


@pytest.mark.gpu
def test_same_process_times_kiln_against_its_baseline_on_a_gpu(tmp_path):
    status, _, err = _bench([TINY, "--store", str(tmp_path / "s"), "--out", str(tmp_path / "r"),
                             "--models", "mlp", "--systems", "kiln_graphs,kiln_nographs",
                             "--repeats", "5", "--same-process"])
    assert status == 0, err
    rows = _rows(tmp_path / "s")
    for system, baseline in (("kiln_graphs", "reduce-overhead"), ("kiln_nographs", "default")):
        (note,) = json.loads(rows[("mlp", system)]["details_json"])["notes"]
        assert note.startswith("same process, alternating 3x20 calls: torch.compile "
                               f"{baseline} "), note
        assert " ms, kiln " in note and note.endswith("x)"), note
