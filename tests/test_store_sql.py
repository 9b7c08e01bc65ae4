"""The store as data: `kiln store sql` over DuckDB views, every example query of the README's
"Querying the store" section, and what one `kiln run` of the tiny zoo leaves for people to
look at (plain progress in a log, the dashboard's address, Dask's performance report, the
per-model time chart).

The tiny zoo is baked once for the session (``conftest.tiny_bake``), by `python -m pipeline.cli
run` in a subprocess (not a terminal: its output must be plain text).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from storage import FailureRecord, Store, TrialRecord
from storage.cli import store_main
from storage.timeline import latest_timeline, load_timeline

duckdb = pytest.importorskip("duckdb")
from storage.sql import connect, sql  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
H100 = "NVIDIA H100 80GB HBM3"


class Baked:
    """The tiny zoo's store and what the run printed."""

    def __init__(self, root: Path, report: Path, done: subprocess.CompletedProcess):
        self.root, self.report, self.stdout, self.stderr = root, report, done.stdout, done.stderr


@pytest.fixture(scope="module")
def baked(tiny_bake) -> Baked:
    return Baked(tiny_bake.root, tiny_bake.report, tiny_bake.done)


@pytest.fixture
def tuned(baked, tmp_path) -> Store:
    """A copy of the baked store with trials of one kernel of mlp on an H100 (default
    XBLOCK=1024 at 0.04 ms, the best XBLOCK=256 at 0.02 ms) and one capture failure."""
    root = tmp_path / "store"
    shutil.copytree(baked.root, root)
    store = Store(root)
    kernel = sql(store, "SELECT unnest(kernel_keys) AS k FROM modules m JOIN graphs g "
                        "USING (graph_key) WHERE g.model = 'mlp' LIMIT 1").column("k")[0].as_py()

    def trial(block: int, ms: float, default: bool = False) -> TrialRecord:
        return TrialRecord.timed(kernel_key=kernel, sizes={"xnumel": 4096},
                                 config={"XBLOCK": block}, device_name=H100, arch="sm_90",
                                 driver="550", triton_version="3.9", torch_version="2.13",
                                 times_ms=[ms, ms], is_default=default)
    store.write("trials", [trial(1024, 0.04, True), trial(256, 0.02), trial(512, 0.03)])
    store.write("failures", [FailureRecord.build(
        stage="capture", key="src", model="broken", error_type="CaptureError",
        message="torch.export failed\ntraceback...")])
    return store


def readme_blocks(language: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    start = text.index("## Querying the store\n")
    section = text[start:text.index("\n## ", start + 1)]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


QUERIES = readme_blocks("sql")


def test_the_readme_has_the_promised_queries():
    text = "\n".join(QUERIES)
    assert len(QUERIES) == 5
    for words in ("arg_min(t.config_json", "geomean_speedup", "FROM failures", "b.status"):
        assert words in text


@pytest.mark.parametrize("query", QUERIES, ids=[f"query{i}" for i in range(len(QUERIES))])
def test_every_readme_query_runs_on_the_tiny_zoo_store(baked, query, capsys):
    assert store_main(["--store", str(baked.root), "sql", query]) == 0, capsys.readouterr()
    verified = sql(baked.root, query)
    raw = sql(baked.root, query, raw=True)      # a fresh store has no duplicates
    assert verified.num_rows == raw.num_rows


def test_readme_queries_answer_the_questions(baked, tuned):
    modules, best, gain, failures, builds = (sql(tuned, q).to_pylist() for q in QUERIES)
    assert sorted((r["model"], r["target"], r["modules"]) for r in modules) == sorted(
        (m, t, 1) for m in ("mlp", "convnet", "transformer_block") for t in ("cpu", "cuda"))
    (row,) = best
    assert (row["gpu"], json.loads(row["best_config"]), row["best_ms"], row["timed"]) == (
        H100, {"XBLOCK": 256}, 0.02, 3)
    (row,) = gain
    assert (row["model"], row["gpu"], row["geomean_speedup"], row["ms_saved"]) == (
        "mlp", H100, 2.0, 0.02)
    assert failures == [{"stage": "capture", "error_type": "CaptureError", "failures": 1,
                         "models": 1, "example": "torch.export failed"}]
    assert builds == []          # every default config of the tiny zoo builds for sm_90


def test_views_hold_verified_rows_once_raw_views_the_files(tuned):
    """A second writer of the same records leaves duplicates in the files; the views (kiln's
    reader) count each key once, the raw views every row."""
    again = tuned.query("failures")
    tuned.write("failures", again)
    count = "SELECT count(*) AS n FROM failures"
    assert sql(tuned, count).to_pylist() == [{"n": 1}]
    assert sql(tuned, count, raw=True).to_pylist() == [{"n": 2}]
    con = connect(tuned)          # every kind, for a notebook
    assert {r[0] for r in con.sql("SHOW TABLES").fetchall()} == {
        "graphs", "modules", "kernels", "binaries", "trials", "failures", "bench"}


def test_readme_python_block_runs(baked, monkeypatch):
    (block,) = readme_blocks("python")
    block = block.replace('"kiln-store"', repr(str(baked.root)))
    try:
        import pandas  # noqa: F401
    except ImportError:         # .df() needs pandas; the rest runs without it
        block = "\n".join(line for line in block.splitlines() if ".df()" not in line)
    scope: dict = {}
    exec(block, scope)
    assert scope["table"].num_rows == 6 and scope["table"].column_names == ["model", "target"]


def test_sql_command_formats_and_errors(baked, capsys):
    store = str(baked.root)
    query = "SELECT model, target FROM modules ORDER BY ALL"
    assert store_main(["--store", store, "sql", query, "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[:3] == ["model,target", "convnet,cpu",
                                                         "convnet,cuda"]
    assert store_main(["--store", store, "sql", query, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0]) == {"model": "convnet",
                                                                   "target": "cpu"}
    assert store_main(["--store", store, "sql", "SELECT nope FROM modules"]) == 1
    assert 'kiln store: sql: Binder Error: Referenced column "nope"' in capsys.readouterr().err


# --- what the run left to look at -------------------------------------------------------------

def test_progress_in_a_log_is_plain_lines(baked):
    assert "\x1b" not in baked.stderr and "\x1b" not in baked.stdout
    lines = baked.stderr.splitlines()
    assert re.fullmatch(r"  dashboard: http://127\.0\.0\.1:\d+/status", lines[1]), lines[:3]
    stages = [line for line in lines if re.match(r"(capture|lower|build) +\[", line)]
    assert stages[-1].startswith("build    [####################]   9/9")
    assert "capture  [####################]   3/3    ok 3" in stages
    assert "lower    [####################]   6/6    ok 6" in stages
    out = baked.stdout.splitlines()
    assert out[0].split() == ["model", "graph", "module[cpu]", "module[cuda]", "kernels",
                              "fallback", "ops", "status"]
    assert f"dask performance report: {baked.report}" in out
    assert out[-1] == "all models done"


def test_dask_performance_report_is_saved(baked):
    html = baked.report.read_text()
    assert "Dask Performance Report" in html and "Task Stream" in html


def test_run_timeline_covers_every_model_and_stage(baked, tmp_path, capsys):
    path = latest_timeline(baked.root)
    run = load_timeline(path)
    assert run.name == "zoo-tiny" and run.wall_s > 0
    seconds = run.seconds_by_model()
    assert set(seconds) == {"mlp", "convnet", "transformer_block"}
    stages = {(s.model, s.stage) for s in run.spans}
    assert {(m, st) for m in seconds for st in ("capture", "lower")} <= stages
    assert sum(s.stage == "build" for s in run.spans) == 9
    assert all(0 <= s.start_s <= s.end_s <= run.wall_s + 1 for s in run.spans)
    pytest.importorskip("matplotlib")
    png = Path(str(path).removesuffix(".tasks.json") + ".times.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert f"time per model: {png}" in baked.stdout
    out = tmp_path / "again.png"
    assert store_main(["--store", str(baked.root), "plot-run", "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"plot-run: 3 model(s) -> {out}\n"
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_plot_run_without_a_run_says_so(tmp_path, capsys):
    Store(tmp_path).write("failures", [FailureRecord.build(
        stage="capture", key="k", model="m", error_type="E", message="m")])
    assert store_main(["--store", str(tmp_path), "plot-run"]) == 1
    assert "no run timeline" in capsys.readouterr().err


def test_a_taken_dashboard_port_moves_and_the_link_says_where(recwarn):
    """Another cluster (another kiln run) on 127.0.0.1:8787 moves ours to a free port,
    without a warning on the terminal."""
    import socket

    from pipeline.cluster import Cluster
    from pipeline.config import ClusterSpec
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        spec = ClusterSpec(workers=1, gpus=0, dashboard=f"127.0.0.1:{port}")
        with Cluster(spec, retries=0) as cluster:
            link = cluster.info.dashboard
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/status", link) and f":{port}/" not in link
    assert not [w for w in recwarn if "already in use" in str(w.message)]
