"""Store API on real Parquet files: writes, queries, lookups, dedup, the artifact cache."""
from __future__ import annotations

import sys
import types
import warnings

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pytest

from compiler.artifact import ArtifactCache
from storage import (SCHEMA_VERSION, FailureRecord, GraphRecord, Store, StoreMissError,
                     TrialRecord, schema_for)
from storage.files import TEMP_PREFIX
from test_storage_support import H100, artifact, binary, kernel, trial, trials, trials_table


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "store")


def test_write_then_query_with_filters(store):
    store.write("trials", trials(0, 40))
    store.write("trials", [trial(i, status="timeout") for i in range(40, 50)])
    ok = store.query("trials", pc.field("status") == "ok")
    assert ok.num_rows == 40
    assert ok.schema.equals(schema_for("trials"), check_metadata=False)
    fast = store.query("trials", (pc.field("status") == "ok") & (pc.field("median_ms") < 0.0125),
                       columns=["trial_key", "median_ms"])
    assert fast.column_names == ["trial_key", "median_ms"]
    assert 0 < fast.num_rows < 40
    assert max(fast["median_ms"].to_pylist()) < 0.0125
    timeouts = store.query("trials", pc.field("status") == "timeout").to_pylist()
    assert {r["median_ms"] for r in timeouts} == {None}
    assert all(r["error"].startswith("out of resources") for r in timeouts)


def test_every_key_part_is_a_column(store):
    store.write("trials", [trial(3)])
    row = store.query("trials").to_pylist()[0]
    assert (row["device_name"], row["arch"], row["driver"]) == (H100, "sm_90", "550.54.15")
    assert (row["triton_version"], row["torch_version"]) == ("3.9.0", "2.13.0")
    assert row["schema_version"] == SCHEMA_VERSION
    assert row["n_repeats"] == 5 and row["min_ms"] <= row["median_ms"] <= row["max_ms"]


def test_files_are_uniquely_named_and_no_temp_left(store):
    paths = [store.write("trials", [trial(i)]) for i in range(5)]
    assert len(set(paths)) == 5
    names = sorted(p.rsplit("/", 1)[1] for p in paths)
    assert [f.name for f in store.files("trials")] == names
    assert not [p for p in (store.fs.get_file_info(pafs.FileSelector(store.dataset_dir("trials"))))
                if p.base_name.startswith(TEMP_PREFIX)]


def test_duplicates_are_harmless_and_deduplicated(store):
    records = trials(0, 20)
    store.write("trials", records)
    store.write("trials", records[5:15])          # a retried task writes its rows again
    store.write("trials", records[:3] + records[:3])
    assert store.query("trials").num_rows == 20
    assert store.query("trials", dedup=False).num_rows == 36
    assert sorted(store.keys("trials")) == sorted(r.trial_key for r in records)


def test_lookup_get_has(store):
    records = trials(0, 30)
    store.write("trials", records[:15])
    store.write("trials", records[15:])
    wanted = [records[2].trial_key, records[20].trial_key]
    assert sorted(store.lookup("trials", wanted)["trial_key"].to_pylist()) == sorted(wanted)
    row = store.get("trials", records[7].trial_key)
    assert row["config_json"] == records[7].config_json
    assert store.has("trials", records[29].trial_key)
    assert not store.has("trials", "no-such-key")
    assert store.get("trials", "no-such-key") is None


def test_write_arrow_table_and_batch(store):
    table = trials_table(trials(0, 10))
    store.write("trials", table)
    store.write("trials", trials_table(trials(10, 12)).to_batches()[0])
    assert store.query("trials").num_rows == 12


def test_write_rejects_bad_tables_and_records(store):
    table = trials_table(trials(0, 2))
    with pytest.raises(ValueError, match="unknown columns"):
        store.write("trials", table.append_column("tiral_key", table["trial_key"]))
    with pytest.raises(ValueError, match="missing required column 'device_name'"):
        store.write("trials", table.drop_columns(["device_name"]))
    with pytest.raises(TypeError, match="cannot write FailureRecord as trials"):
        store.write("trials", [FailureRecord.build(stage="tune", key="k", model="m",
                                                   error_type="E", message="x")])
    with pytest.raises(ValueError, match="unknown record kind"):
        store.write("trial", table)
    with pytest.raises(ValueError, match="trial status"):
        trial(1, status="exploded")
    assert store.files("trials") == []


def test_given_content_hash_is_checked_on_write(store):
    from storage.records import records_to_table
    table = records_to_table("binaries", [binary(1)])
    with pytest.raises(ValueError, match="content_hash"):
        store.write("binaries", table.append_column("content_hash", pa.array(["0" * 64])))
    assert store.files("binaries") == []
    store.write("binaries", table)       # without a hash: computed on write
    assert store.get("binaries", binary(1).binary_key)["cubin"] == binary(1).cubin


def test_binaries_roundtrip_bytes_and_metadata(store):
    records = [binary(i) for i in range(6)]
    store.write("binaries", records)
    got = {r["binary_key"]: r for r in store.query("binaries").to_pylist()}
    for rec in records:
        assert got[rec.binary_key]["cubin"] == rec.cubin
        assert got[rec.binary_key]["metadata_json"] == rec.metadata_json
        assert len(got[rec.binary_key]["content_hash"]) == 64


def test_graphs_and_failures(store):
    graph = GraphRecord.build(graph_key="g" * 64, model="resnet18",
                              input_signature=[{"shape": [1, 3, 224, 224], "dtype": "float32"}],
                              torch_version="2.13.0", graph_text="graph():\n  %x : placeholder")
    assert graph.input_signature == '[{"dtype":"float32","shape":[1,3,224,224]}]'
    store.write("graphs", [graph])
    assert store.get("graphs", graph.graph_key)["graph_text"] == graph.graph_text
    fail = FailureRecord.build(stage="lower", key=graph.graph_key, model="resnet18",
                               error_type="NotImplementedError", message="aten.foo",
                               traceback="Traceback...", attempts=3)
    store.write("failures", [fail, fail])
    rows = store.query("failures").to_pylist()
    assert len(rows) == 1 and rows[0]["attempts"] == 3 and rows[0]["stage"] == "lower"


def test_trial_key_is_identity_not_measurement():
    a, b = trial(4), trial(4)
    assert a.trial_key == b.trial_key
    other_driver = TrialRecord.timed(
        kernel_key=a.kernel_key, sizes=a.sizes_json, config=a.config_json, device_name=H100,
        arch="sm_90", driver="560.1", triton_version="3.9.0", torch_version="2.13.0",
        times_ms=[1.0])
    assert other_driver.trial_key != a.trial_key
    assert other_driver.config_key == a.config_key


def test_store_is_an_artifact_cache(store):
    assert isinstance(store, ArtifactCache)
    shared = kernel("triton_poi_fused_add_0", "    x = tl.load(in_ptr0) * 2\n")
    renamed = kernel("triton_poi_fused_add_7", "    x = tl.load(in_ptr0) * 2\n")
    assert shared.kernel_key == renamed.kernel_key and shared.source != renamed.source
    own = kernel("triton_red_1", "    x = tl.sum(tl.load(in_ptr0))\n")
    first, second = artifact(1, (shared, own)), artifact(2, (renamed,))
    assert store.get_artifact(first.module_key) is None
    store.put_artifact(first)
    store.put_artifact(second)
    store.put_artifact(first)                          # idempotent
    assert store.get_artifact(first.module_key) == first
    assert store.get_artifact(second.module_key) == second   # its own kernel name back
    kernels = store.query("kernels")
    assert sorted(kernels["kernel_key"].to_pylist()) == sorted({shared.kernel_key,
                                                                own.kernel_key})
    module = store.get("modules", first.module_key)
    assert (module["arch"], module["target"], module["compiler_version"]) == (
        "sm_90", "cuda:90:32", "0.1.0")
    assert module["kernel_keys"] == [shared.kernel_key, own.kernel_key]


def test_load_goes_through_compiler_runtime(store, monkeypatch):
    art = artifact(5)
    store.put_artifact(art)
    seen = []
    runtime = types.ModuleType("compiler.runtime")
    # A CPU artifact: no binaries are looked up (that is for CUDA modules on a GPU).
    runtime.load_artifact = lambda a, binaries: (seen.append((a, binaries))
                                                 or (lambda *args: ("called", args)))
    monkeypatch.setitem(sys.modules, "compiler.runtime", runtime)
    fn = store.load(art.module_key)
    assert seen == [(art, None)] and fn(1) == ("called", (1,))
    with pytest.raises(StoreMissError, match="not in store"):
        store.load("f" * 64)


def test_memory_filesystem_uses_generic_move():
    fs = pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem("memory")))
    store = Store("/kiln-test-store", filesystem=fs)
    store.write("trials", trials(0, 10))
    store.write("trials", trials(5, 15))
    assert store.query("trials").num_rows == 15
    store.compact(["trials"])
    assert len(store.files("trials")) == 1 and store.query("trials").num_rows == 15
    fs.delete_dir("/kiln-test-store")


def test_file_uri_root(tmp_path):
    store = Store(f"file://{tmp_path}/uri-store")
    store.write("trials", trials(0, 3))
    assert Store(tmp_path / "uri-store").query("trials").num_rows == 3


def test_stats_counts_files_rows_keys(store):
    store.write("trials", trials(0, 10))
    store.write("trials", trials(5, 15))
    store.put_artifact(artifact(1))
    stats = store.stats()
    t = stats.kinds["trials"]
    assert (t.files, t.rows, t.unique_keys, t.versions) == (2, 20, 15, {SCHEMA_VERSION: 2})
    assert stats.kinds["modules"].unique_keys == 1
    assert stats.bytes_per_module == stats.kinds["modules"].bytes + stats.kinds["kernels"].bytes
    assert stats.total_bytes == sum(f.size for k in stats.kinds for f in store.files(k))


def test_empty_store_reads_empty(store):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.query("modules").num_rows == 0
        assert store.get_artifact("0" * 64) is None
        assert store.keys("graphs") == []
    assert store.write("trials", []) is None


def test_bad_filter_or_column_is_an_error_not_a_corrupt_store(store):
    store.write("trials", trials(0, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(pa.ArrowInvalid, match="no_such_column"):
            store.query("trials", pc.field("no_such_column") == 1)
        with pytest.raises(KeyError, match="median"):
            store.query("trials", columns=["median"])
    assert store.query("trials").num_rows == 3


def test_lookup_opens_only_files_whose_name_range_holds_the_key(store, monkeypatch):
    arts = [artifact(i) for i in range(40)]
    for art in arts:
        store.put_artifact(art)
    import storage.store as store_module
    opened = []
    real = store_module.read_dicts    # get_artifact reads row by row (Store.rows)
    monkeypatch.setattr(store_module, "read_dicts",
                        lambda fs, kind, files, *a: opened.append(len(files)) or real(
                            fs, kind, files, *a))
    for art in arts:
        assert store.get_artifact(art.module_key) == art
    assert max(opened) == 1 and len(opened) == 40
    store.compact(["modules"], target_file_bytes=4096, row_group_bytes=1024)  # 3 files
    assert len(store.files("modules")) > 2
    opened.clear()
    for art in arts:
        assert store.get_artifact(art.module_key) == art
    assert max(opened) == 1
    assert store.lookup("modules", []).num_rows == 0
