"""``kiln bench`` across children and sessions: what the parent measures once and hands to
every child (the copy rate), a child's leftover processes ended with it rather than waited
for, and ``--resume``: a run finished over several sessions, its ok pairs never run twice,
its report covering the whole run. CPU only; the timings check the path, never speed."""
from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import pytest

from pipeline.bench.cli import FULL, QUICK, parse
from pipeline.bench.child import Job
from pipeline.bench.run import BenchPlan, run_bench
from pipeline.bench.systems import SYSTEMS, System
from storage import Store
from tests.test_bench import _bench
from tests.test_bench import _zoo_of as _zoo


def _store_rows(store: Path) -> list[dict]:
    return Store(store).query("bench").to_pylist()


def _plan(zoo: str, models: tuple[str, ...], systems: tuple[System, ...]) -> BenchPlan:
    return BenchPlan(zoo, "bench-test", models, systems, "cpu", True, 3, 1, float("inf"),
                     120.0, 30.0, QUICK["profile_calls"])


@pytest.fixture(scope="module")
def two_children(tmp_path_factory):
    """Eager on two models, with the parent's copy-rate measurement counted."""
    tmp_path = tmp_path_factory.mktemp("children")
    calls = []

    def copy_gbps(device: str) -> float:
        calls.append(device)
        return 1234.5
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("pipeline.bench.bandwidth.copy_gbps", copy_gbps)
        zoo = _zoo(tmp_path, 'factory = "pipeline.zoo.tiny:mlp"',
                   'factory = "pipeline.zoo.tiny:convnet"')
        progress = io.StringIO()
        records = run_bench(_plan(zoo, ("mlp", "convnet"), (SYSTEMS["eager"],)),
                            Store(tmp_path / "s"), "r1", progress)
    return calls, records, progress.getvalue()


def test_the_copy_rate_is_measured_once_and_handed_to_every_child(two_children):
    """The parent times the copy once per run; each child reports the rate it was given
    (a child measuring its own would report None: there is no CUDA copy on a CPU)."""
    calls, records, _ = two_children
    assert calls == ["cpu"]
    assert [(r.model, r.status, r.copy_gbps) for r in records] == [
        ("mlp", "ok", 1234.5), ("convnet", "ok", 1234.5)]


def test_a_row_says_where_its_child_spent_its_time(two_children):
    """Each phase's wall seconds, in order, within the child's whole wall time; the cold
    phase is the cold start; the progress line shows them."""
    _, records, progress = two_children
    for r in records:
        details = json.loads(r.details_json)
        phases, wall = details["phases_s"], details["child_wall_s"]
        assert list(phases) == ["import torch", "model", "to device", "cold", "timed",
                                "kernels"]
        assert all(s >= 0 for s in phases.values()) and sum(phases.values()) <= wall
        assert phases["cold"] == pytest.approx(r.cold_s, abs=0.01)
        assert phases["import torch"] > 0.05       # a fresh interpreter imports torch
    assert "mlp eager:" in progress and "; import torch " in progress and ", rest " in progress


def test_the_job_carries_the_copy_rate_and_the_profiler_calls():
    plan = _plan("zoo.toml", ("mlp",), (SYSTEMS["eager"],))
    job = plan.job("mlp", SYSTEMS["eager"], 2900.0)
    assert Job.from_json(job.to_json()) == job
    assert (job.copy_gbps, job.profile_calls) == (2900.0, QUICK["profile_calls"])
    # --quick profiles one call, a full run three (kernel counts are per call either way)
    assert (QUICK["profile_calls"], FULL["profile_calls"]) == (1, 3)


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in state      # killed, not yet reaped by whoever adopted it


def test_a_process_the_child_leaves_is_ended_not_waited_for(tmp_path):
    """A worker holding the child's stderr (as compile workers do) neither keeps the parent
    waiting for it after the child's result nor outlives the child."""
    pid_file = tmp_path / "worker.pid"
    zoo = _zoo(tmp_path, f'factory = "pipeline.zoo.faults:leaves_worker"\n'
                         f'kwargs = {{ pid_file = "{pid_file}", seconds = 120 }}')
    start = time.perf_counter()
    records = run_bench(_plan(zoo, ("leaves_worker",), (SYSTEMS["eager"],)),
                        Store(tmp_path / "s"), "r1", io.StringIO())
    assert time.perf_counter() - start < 60
    assert records[0].status == "ok", records[0].error
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(pid)


# --resume: a run over two sessions ----------------------------------------------------------

FLAKY_BROKEN = System("flaky", "pipeline.bench.systems:kiln", "fails: an unknown option",
                      '{"no_such_option": 1}')
FLAKY_FIXED = System("flaky", "pipeline.bench.systems:eager", "works this time")


def _registry(flaky: System) -> dict[str, System]:
    return {"eager": SYSTEMS["eager"], "flaky": flaky}


@pytest.fixture(scope="module")
def two_sessions(tmp_path_factory):
    """Session 1: eager ok and flaky failing on two models. Session 2 resumes the run with
    flaky fixed. Returns the store, the report dirs and each session's (status, out, err)."""
    root = tmp_path_factory.mktemp("resume")
    zoo = _zoo(root, 'factory = "pipeline.zoo.tiny:mlp"',
               'factory = "pipeline.zoo.tiny:convnet"')
    store = root / "store"
    common = [zoo, "--store", str(store), "--systems", "eager,flaky", "--repeats", "3",
              "--device", "cpu"]
    first = _bench(common + ["--out", str(root / "r1")], _registry(FLAKY_BROKEN))
    (run_id,) = {r["run_id"] for r in _store_rows(store)}
    second = _bench(common + ["--out", str(root / "r2"), "--resume", run_id],
                    _registry(FLAKY_FIXED))
    return store, run_id, root, first, second


def test_resume_runs_only_the_pairs_without_an_ok_row(two_sessions):
    store, run_id, _, first, second = two_sessions
    assert first[0] == 1 and second[0] == 0, second[2]
    # the second session's children: flaky only, on both models
    lines = [x.split(":")[0] for x in second[2].splitlines() if x.strip()]
    assert lines == ["mlp flaky", "convnet flaky"]
    rows = _store_rows(store)
    assert {r["run_id"] for r in rows} == {run_id}
    count = {}
    for r in rows:
        count[(r["model"], r["system"])] = count.get((r["model"], r["system"]), 0) + 1
    assert count == {("mlp", "eager"): 1, ("convnet", "eager"): 1,
                     ("mlp", "flaky"): 2, ("convnet", "flaky"): 2}
    # the error row stays, the new attempt has a key of its own (the store keeps a key's first)
    flaky = sorted((r for r in rows if r["system"] == "flaky"), key=lambda r: r["timestamp"])
    assert [r["status"] for r in flaky if r["model"] == "mlp"] == ["error", "ok"]
    assert len({r["bench_key"] for r in rows}) == len(rows)


def test_the_resumed_report_covers_the_whole_run(two_sessions):
    _, run_id, root, _, second = two_sessions
    rows = json.loads((root / "r2" / "rows.json").read_text())
    assert [(r["model"], r["system"], r["status"]) for r in rows] == [
        ("mlp", "eager", "ok"), ("mlp", "flaky", "ok"),
        ("convnet", "eager", "ok"), ("convnet", "flaky", "ok")]
    text = (root / "r2" / "report.md").read_text()
    assert f"- run: {run_id}" in text and "### mlp" in text and "### convnet" in text
    # a timed row for each pair: eager from the first session, flaky from the second
    for system in ("eager", "flaky"):
        assert len(re.findall(rf"^\| {system} \| \d+\.\d{{3}} \|", text, re.M)) == 2
    assert "the run holds 4 (4 ok)" in second[1]


def test_a_pair_skipped_again_keeps_its_row(two_sessions, tmp_path):
    """A third session past its budget at once runs nothing and writes nothing."""
    store, run_id, root, _, _ = two_sessions
    before = len(_store_rows(store))
    zoo = str(root / "zoo.toml")
    status, out, err = _bench([zoo, "--store", str(store), "--systems", "eager,flaky",
                               "--device", "cpu", "--budget-s", "0", "--out", str(tmp_path),
                               "--resume", run_id], _registry(FLAKY_FIXED))
    assert status == 0 and err == ""
    assert len(_store_rows(store)) == before
    assert "kiln bench: 0 rows" in out and "the run holds 4 (4 ok)" in out


def test_the_readme_query_reads_one_row_per_pair_of_a_resumed_run(two_sessions):
    pytest.importorskip("duckdb")
    from storage.sql import sql
    store = two_sessions[0]
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text[text.index("## Benchmarking: `kiln bench`"):text.index("## Layout")]
    (query,) = re.findall(r"```sql\n(.*?)```", section, re.S)
    rows = sql(store, query).to_pylist()
    assert sorted((r["model"], r["system"], r["status"]) for r in rows) == [
        ("convnet", "eager", "ok"), ("convnet", "flaky", "ok"),
        ("mlp", "eager", "ok"), ("mlp", "flaky", "ok")]


def test_resume_refuses_an_unknown_run_and_another_mode(two_sessions, tmp_path):
    store, run_id, root, _, _ = two_sessions
    zoo = str(root / "zoo.toml")
    base = [zoo, "--store", str(store), "--device", "cpu", "--systems", "eager",
            "--out", str(tmp_path)]
    status, _, err = _bench(base + ["--resume", "no-such-run"], _registry(FLAKY_FIXED))
    assert status == 2 and "no bench rows of that run" in err
    status, _, err = _bench(base + ["--quick", "--resume", run_id], _registry(FLAKY_FIXED))
    assert status == 2 and "full" in err and "--quick" in err


def test_resume_is_on_the_command_line():
    assert parse(["zoo.toml", "--resume", "20261206T000000-abcdef"]).resume == \
        "20261206T000000-abcdef"
    assert parse(["zoo.toml"]).resume is None
