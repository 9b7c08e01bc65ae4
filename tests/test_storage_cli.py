"""``kiln store`` commands through store_main and as ``python -m storage.cli``."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from storage import Store
from storage.cli import store_main
from test_storage_support import artifact, binary, kernel, rewrite_file, trials

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "store")
    store.write("trials", trials(0, 30))
    store.write("trials", trials(20, 40))
    store.write("binaries", [binary(i) for i in range(3)])
    return store


def _run(store: Store, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = store_main(["--store", store.root, *argv], out=out)
    return code, out.getvalue()


def test_ls_lists_datasets_and_keys(store):
    code, text = _run(store, "ls")
    assert code == 0
    lines = {line.split()[0]: line.split() for line in text.splitlines()}
    assert lines["trials"][1] == "2" and lines["binaries"][1] == "1"
    assert lines["modules"][1] == "0"
    code, text = _run(store, "ls", "trials", "--limit", "0")
    assert code == 0 and sorted(text.split()) == sorted(t.trial_key for t in trials(0, 40))
    code, text = _run(store, "ls", "trials", "--limit", "5")
    assert len(text.splitlines()) == 6 and "35 more" in text


def test_show_by_key_and_prefix(store):
    key = binary(1).binary_key
    code, text = _run(store, "show", key)
    assert code == 0 and "[binaries]" in text
    assert f"binary_key: {key}" in text and "<4,096 bytes, sha256" in text
    code, prefix_text = _run(store, "show", key[:10])
    assert code == 0 and prefix_text == text
    assert _run(store, "show", "nonexistent-key")[0] == 1


def test_show_truncates_long_text_unless_full(store):
    art = artifact(3, (kernel("triton_poi_0", "    x = tl.load(in_ptr0)\n" * 40),))
    store.put_artifact(art)
    code, text = _run(store, "show", art.module_key, "--kind", "modules")
    assert code == 0 and "--full for all" in text
    code, text = _run(store, "show", art.module_key, "--kind", "modules", "--full")
    assert code == 0 and art.source.splitlines()[-1] in text


def test_stats(store):
    code, text = _run(store, "stats")
    assert code == 0
    row = next(line.split() for line in text.splitlines() if line.startswith("trials"))
    assert row[1:4] == ["2", "50", "40"]      # files, rows, distinct keys


def test_verify_exit_status(store):
    assert _run(store, "verify") == (0, _run(store, "verify")[1])
    assert "OK" in _run(store, "verify")[1]
    path = store.files("binaries")[0].path
    table = pq.read_table(path)
    rewrite_file(path, table.set_column(table.schema.get_field_index("metadata_json"),
                                        "metadata_json", [['{"shared": 0}'] * 3]))
    code, text = _run(store, "verify")
    assert code == 1
    assert text.count("PROBLEM") == 3 and path in text and "3 problem(s)" in text
    assert _run(store, "verify", "trials")[0] == 0


def test_compact_command(store):
    code, text = _run(store, "compact", "trials")
    assert code == 0 and "rows 50 -> 40 (10 duplicates dropped)" in text
    assert len(store.files("trials")) == 1


def test_usage_errors_and_missing_store(tmp_path):
    assert store_main(["--store", str(tmp_path / "nope"), "stats"]) == 2
    assert store_main(["--store", str(tmp_path), "frobnicate"]) == 2
    assert store_main(["--store", str(tmp_path), "compact", "trails"]) == 2


def test_python_dash_m(store):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "storage.cli", "--store", store.root,
                           "verify"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and "verify: 3 files, 53 rows checked: OK" in done.stdout
    assert "10 duplicate rows" in done.stdout


def test_store_option_is_accepted_after_the_command(tmp_path, capsys):
    from storage.cli import _parser
    for argv in (["--store", str(tmp_path), "stats"], ["stats", "--store", str(tmp_path)]):
        assert _parser().parse_args(argv).store == str(tmp_path)
    assert _parser().parse_args(["stats"]).store == "./kiln-store"


def test_ls_modules_names_model_target_arch_and_tuned_for(tmp_path):
    from storage import GraphRecord
    store = Store(tmp_path / "store")
    art = artifact(1)
    store.put_artifact(art)
    store.put_artifact(artifact(2, ()), tuned_for="NVIDIA H100 80GB HBM3")
    store.write("graphs", [GraphRecord(graph_key=art.graph_key, model="resnet",
                                       input_signature="[]", torch_version="2.13",
                                       graph_text="g")])
    code, text = _run(store, "ls", "modules")
    lines = text.splitlines()
    assert code == 0 and lines[0].split() == ["module_key", "model", "target", "arch", "tuned_for"]
    rows = {line.split()[0]: line.split(maxsplit=4)[1:] for line in lines[1:]}
    assert rows[art.module_key][0] == "resnet"
    assert rows[artifact(2, ()).module_key][0] == "-"
    assert rows[artifact(2, ()).module_key][3] == "NVIDIA H100 80GB HBM3"


def test_show_says_a_prefix_needs_four_characters(store, capsys):
    assert _run(store, "show", "ab")[0] == 1
    assert "a key prefix needs at least 4 characters" in capsys.readouterr().err


def test_ctrl_c_in_compact_is_one_line(store, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(Store, "compact", interrupted)
    assert _run(store, "compact")[0] == 130
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "interrupted; nothing was lost" in err
