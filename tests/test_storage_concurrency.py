"""Real processes against one store: a writer killed mid-write, concurrent writers and a
compactor running while they write."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

from storage import Store
from storage.files import TEMP_PREFIX
from test_storage_support import trials

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent

WRITER = textwrap.dedent("""
    import os, sys, time
    import pyarrow as pa
    from storage import Store
    from test_storage_support import trials, trials_table

    root, worker, mode, gate = sys.argv[1:5]
    store = Store(root)
    print("ready", flush=True)
    while not os.path.exists(gate):
        time.sleep(0.005)
    if mode == "kill-me":
        for b in range(5):
            store.write("trials", trials(b * 100, (b + 1) * 100, worker))
            print(f"finished {b}", flush=True)
        big = trials_table(trials(10_000, 11_000, worker))
        big = pa.concat_tables([big] * 400)      # 400k rows: a write that takes a while
        print("big write", flush=True)
        store.write("trials", big)
        print("big write finished", flush=True)
    elif mode == "write":
        for b in range(25):
            store.write("trials", trials(b * 200, (b + 1) * 200, worker))
        print("done", flush=True)
    elif mode == "compact":
        passes = 0
        while not os.path.exists(gate + ".stop"):
            store.compact(["trials"], small_file_bytes=1 << 30)
            passes += 1
            time.sleep(0.02)
        print(f"compactions {passes}", flush=True)
""")


def _spawn(tmp_path: Path, *args: str) -> subprocess.Popen:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)])}
    proc = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _temp_files(store: Store) -> list[str]:
    directory = Path(store.dataset_dir("trials"))
    return [p.name for p in directory.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_sigkill_mid_write_leaves_finished_records(tmp_path):
    store = Store(tmp_path / "store")
    gate = tmp_path / "go"
    proc = _spawn(tmp_path, store.root, "w1", "kill-me", str(gate))
    gate.touch()
    lines = [proc.stdout.readline().strip() for _ in range(6)]
    assert lines == [f"finished {b}" for b in range(5)] + ["big write"]
    deadline = time.monotonic() + 30
    while not _temp_files(store) and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert len(_temp_files(store)) == 1, "the kill must land while the big file is written"

    with warnings.catch_warnings():
        warnings.simplefilter("error")        # the partial file is invisible, not "corrupt"
        rows = store.query("trials")
    assert sorted(rows["trial_key"].to_pylist()) == sorted(
        t.trial_key for t in trials(0, 500, "w1"))
    report = store.verify()
    assert report.ok and any("temporary file" in note for note in report.notes)
    # A young temp file may be a live writer's: kept. An old one is removed.
    assert store.compact(["trials"]).kinds["trials"].temp_removed == 0
    assert store.compact(["trials"], stale_temp_s=0).kinds["trials"].temp_removed == 1
    assert _temp_files(store) == [] and store.query("trials").num_rows == 500


def test_two_writers_and_a_compactor_concurrently(tmp_path):
    store = Store(tmp_path / "store")
    gate = tmp_path / "go"
    writers = [_spawn(tmp_path, store.root, w, "write", str(gate)) for w in ("wA", "wB")]
    compactor = _spawn(tmp_path, store.root, "c", "compact", str(gate))
    gate.touch()
    seen = []
    while any(w.poll() is None for w in writers):
        seen.append(store.query("trials", columns=["trial_key"]).num_rows)  # never blocked
        time.sleep(0.01)
    (tmp_path / "go.stop").touch()
    out, _ = compactor.communicate(timeout=60)
    assert [w.wait() for w in writers] == [0, 0] and compactor.returncode == 0
    assert int(out.split()[-1]) >= 1

    want = {t.trial_key for w in ("wA", "wB") for t in trials(0, 5000, w)}
    assert len(want) == 10_000
    got = store.query("trials", columns=["trial_key"])["trial_key"].to_pylist()
    assert len(got) == 10_000 and set(got) == want
    assert seen == sorted(seen), "a reader saw rows disappear while compaction ran"
    assert len(set(seen)) > 3, "the reader should have seen the store grow"
    assert store.verify().ok
    store.compact(["trials"])
    assert store.query("trials").num_rows == 10_000 and len(store.files("trials")) == 1
