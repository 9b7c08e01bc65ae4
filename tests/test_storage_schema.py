"""Schemas, versions and migrations: an older store is upgraded on read or refused clearly."""
from __future__ import annotations

import json
import warnings

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from storage import KEY_COLUMN, KINDS, SCHEMA_VERSION, Store, StoreVersionError, schema_for
from storage.files import WRITE_OPTIONS, new_file_name
from storage.schema import DEFAULT_MIGRATIONS, file_metadata
from storage.cli import store_main
from test_storage_support import trials, trials_table


def _plain(type_: pa.DataType) -> bool:
    """Text, bytes, numbers, booleans, times, and lists/structs of those: nothing pickled."""
    if pa.types.is_list(type_):
        return _plain(type_.value_type)
    if pa.types.is_struct(type_):
        return all(_plain(type_.field(i).type) for i in range(type_.num_fields))
    return (pa.types.is_string(type_) or type_ == pa.binary() or pa.types.is_integer(type_)
            or pa.types.is_floating(type_) or pa.types.is_boolean(type_)
            or pa.types.is_timestamp(type_))


def test_every_kind_has_key_version_and_no_python_objects(tmp_path):
    for kind in KINDS:
        schema = schema_for(kind)
        assert KEY_COLUMN[kind] in schema.names and "schema_version" in schema.names
        assert schema.metadata[b"kiln.schema_version"] == str(SCHEMA_VERSION).encode()
        assert all(_plain(f.type) for f in schema), kind
    store = Store(tmp_path / "s")
    path = store.write("trials", trials(0, 3))
    footer = pq.read_metadata(path).metadata
    assert not any(b"pandas" in k or b"pickle" in k for k in footer)


def test_key_parts_are_columns():
    trials_cols = set(schema_for("trials").names)
    assert {"device_name", "arch", "driver", "clocks", "triton_version", "torch_version",
            "config_json", "sizes_json", "status", "error", "is_best", "median_ms",
            "std_ms", "n_repeats", "worker", "host", "timestamp"} <= trials_cols
    assert {"compiler_version", "options_hash", "target", "arch", "torch_version",
            "triton_version", "kernel_keys"} <= set(schema_for("modules").names)
    assert {"cubin", "metadata_json", "config_json", "arch", "target", "triton_version",
            "content_hash"} <= set(schema_for("binaries").names)


# -- a store written by an older kiln: trials v0 timed one number, "time_ms", and had no
# -- driver or clocks columns.

V0_SCHEMA = pa.schema([("trial_key", pa.string()), ("kernel_key", pa.string()),
                       ("sizes_json", pa.string()), ("config_key", pa.string()),
                       ("config_json", pa.string()), ("device_name", pa.string()),
                       ("arch", pa.string()), ("triton_version", pa.string()),
                       ("torch_version", pa.string()), ("time_ms", pa.float64()),
                       ("status", pa.string()), ("timestamp", pa.timestamp("us", tz="UTC")),
                       ("schema_version", pa.int32())],
                      metadata=file_metadata("trials", 0))


def _write_v0(store: Store, n: int) -> tuple[str, pa.Table]:
    new = trials_table(trials(0, n))
    old = pa.table({name: new[name] for name in V0_SCHEMA.names if name in new.column_names}
                   | {"time_ms": new["median_ms"],
                      "schema_version": pa.array([0] * n, pa.int32())}).select(V0_SCHEMA.names)
    old = old.cast(V0_SCHEMA)
    directory = store.dataset_dir("trials")
    store.fs.create_dir(directory)
    path = f"{directory}/{new_file_name('part', 0)}"
    pq.write_table(old, path, **WRITE_OPTIONS)
    return path, old


def _trials_v0_to_v1(table: pa.Table) -> pa.Table:
    """v0 -> v1: one timing becomes the statistics of one repeat; driver/clocks unknown."""
    n = table.num_rows
    t = table.rename_columns(["median_ms" if c == "time_ms" else c for c in table.column_names])
    for name in ("mean_ms", "min_ms", "max_ms"):
        t = t.append_column(name, t["median_ms"])
    return (t.append_column("std_ms", pa.array([0.0] * n))
             .append_column("n_repeats", pa.array([1] * n, pa.int32()))
             .append_column("driver", pa.array(["unknown"] * n))
             .append_column("clocks", pa.array(["unknown"] * n))
             .append_column("is_best", pa.array([False] * n))
             .append_column("worker", pa.array([""] * n))
             .append_column("host", pa.array([""] * n)))


# The test's v0 -> v1 step, then kiln's own v1 -> v2 chain.
MIGRATIONS = {**DEFAULT_MIGRATIONS,
              "trials": {0: _trials_v0_to_v1, **DEFAULT_MIGRATIONS["trials"]}}


def test_older_version_without_migration_is_refused_naming_file_and_version(tmp_path):
    store = Store(tmp_path / "s")
    store.write("trials", trials(100, 110))
    path, _ = _write_v0(store, 5)
    with pytest.raises(StoreVersionError) as err:
        store.query("trials")
    message = str(err.value)
    assert path in message and "schema version 0" in message
    assert "no migration from version 0" in message
    report = store.verify()
    assert [p.path for p in report.problems] == [path]
    assert "schema version 0" in report.problems[0].reason
    assert store_main(["--store", str(tmp_path / "s"), "ls", "trials"]) == 1


def test_older_version_is_migrated_on_read_and_by_compaction(tmp_path):
    store = Store(tmp_path / "s", migrations=MIGRATIONS)
    store.write("trials", trials(100, 110))
    _, old = _write_v0(store, 5)
    rows = store.query("trials", pc.field("driver") == "unknown").sort_by("trial_key")
    assert rows.num_rows == 5
    assert rows["median_ms"].to_pylist() == old.sort_by("trial_key")["time_ms"].to_pylist()
    assert set(rows["schema_version"].to_pylist()) == {SCHEMA_VERSION}
    assert store.query("trials").num_rows == 15
    assert store.verify().ok

    report = store.compact(["trials"]).kinds["trials"]
    assert report.rows_out == 15 and {f.version for f in store.files("trials")} == {SCHEMA_VERSION}
    # After compaction even a kiln without the migration reads everything.
    plain = Store(tmp_path / "s")
    assert plain.query("trials", pc.field("n_repeats") == 1).num_rows == 5


def test_light_reads_of_a_few_columns_migrate_older_files_too(tmp_path):
    """Store.rows (load_model's reader) with a column subset: an older file is migrated
    whole, then projected; migrating the projection alone lacked required columns, so every
    row of an upgraded store was skipped as unreadable."""
    store = Store(tmp_path / "s", migrations=MIGRATIONS)
    store.write("trials", trials(100, 110))
    _, old = _write_v0(store, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = store.rows("trials", keys=old["trial_key"].to_pylist(),
                          columns=["trial_key", "median_ms"])
    got = sorted((r["trial_key"], r["median_ms"]) for r in rows)
    want = sorted(zip(old["trial_key"].to_pylist(), old["time_ms"].to_pylist()))
    assert got == want and len(store.rows("trials", columns=["trial_key"])) == 15


def test_newer_version_is_refused_with_upgrade_hint(tmp_path):
    store = Store(tmp_path / "s")
    directory = store.dataset_dir("trials")
    store.fs.create_dir(directory)
    table = trials_table(trials(0, 2))
    table = table.replace_schema_metadata(file_metadata("trials", SCHEMA_VERSION + 1))
    path = f"{directory}/{new_file_name('part', SCHEMA_VERSION + 1)}"
    pq.write_table(table, path)
    with pytest.raises(StoreVersionError, match="newer kiln.*Upgrade kiln") as err:
        store.query("trials")
    assert path in str(err.value)


def test_records_store_canonical_json(tmp_path):
    store = Store(tmp_path / "s")
    a = trials(0, 1)[0]
    store.write("trials", [a])
    row = store.get("trials", a.trial_key)
    assert json.loads(row["config_json"])["i"] == 0
    assert row["config_json"] == json.dumps(json.loads(row["config_json"]), sort_keys=True,
                                            separators=(",", ":"))


# -- graphs v1 had no source_key column (added in v2, null in migrated rows).

def _write_graphs_v1(store: Store, records: list) -> str:
    from storage.integrity import with_hashes
    from storage.records import records_to_table
    table = records_to_table("graphs", records).drop_columns(["source_key"])
    table = with_hashes("graphs", table)
    table = table.append_column("schema_version", pa.array([1] * table.num_rows, pa.int32()))
    v1_fields = [f for f in schema_for("graphs") if f.name not in ("source_key", "signature")]
    table = table.select([f.name for f in v1_fields]).cast(
        pa.schema(v1_fields, metadata=file_metadata("graphs", 1)))
    directory = store.dataset_dir("graphs")
    store.fs.create_dir(directory)
    path = f"{directory}/{new_file_name('part', 1)}"
    pq.write_table(table, path, **WRITE_OPTIONS)
    return path


def test_graphs_v1_without_source_key_is_migrated_on_read(tmp_path):
    from storage import GraphRecord
    store = Store(tmp_path / "s")
    old = [GraphRecord.build(graph_key=f"g{i}", model="m", input_signature=[],
                             torch_version="2.13.0", graph_text=f"graph {i}") for i in range(3)]
    path = _write_graphs_v1(store, old)
    assert "-v1-" in path and pq.read_schema(path).get_field_index("source_key") == -1
    new = GraphRecord.build(graph_key="g9", model="m", input_signature=[],
                            torch_version="2.13.0", graph_text="graph 9", source_key="s9")
    store.write("graphs", [new])

    rows = {r["graph_key"]: r for r in store.query("graphs").to_pylist()}
    assert set(rows) == {"g0", "g1", "g2", "g9"}
    assert [rows[f"g{i}"]["source_key"] for i in range(3)] == [None] * 3
    assert rows["g9"]["source_key"] == "s9"
    assert {r["schema_version"] for r in rows.values()} == {SCHEMA_VERSION}
    assert store.get("graphs", "g1")["graph_text"] == "graph 1"    # hash still checks
    assert store.graph_for_source("s9") == "g9"
    assert store.graph_for_source("nope") is None
    assert store.verify().ok

    report = store.compact(["graphs"]).kinds["graphs"]
    assert report.rows_out == 4
    assert {f.version for f in store.files("graphs")} == {SCHEMA_VERSION}
    assert store.graph_for_source("s9") == "g9" and store.get("graphs", "g0")["source_key"] is None


def test_graph_for_source_dedups_and_ignores_other_sources(tmp_path):
    from storage import GraphRecord
    store = Store(tmp_path / "s")
    rec = dict(model="m", input_signature=[], torch_version="2.13.0", graph_text="x")
    store.write("graphs", [GraphRecord.build(graph_key="ga", source_key="sa", **rec)])
    store.write("graphs", [GraphRecord.build(graph_key="ga", source_key="sa", **rec)])
    store.write("graphs", [GraphRecord.build(graph_key="gb", source_key="sb", **rec)])
    store.write("graphs", [GraphRecord.build(graph_key="gc", **rec)])
    assert store.graph_for_source("sa") == "ga"
    assert store.graph_for_source("sb") == "gb"
    assert store.graph_for_source("sc") is None


# -- binaries v3 kept status and error inside metadata_json (columns of their own in v4,
# which also added the signature).

def test_binaries_v3_status_inside_metadata_is_migrated_to_columns(tmp_path):
    from storage import BinaryRecord
    from storage.integrity import with_hashes
    from storage.records import records_to_table
    store = Store(tmp_path / "s")
    old = [BinaryRecord.build(kernel_key="k", config={"XBLOCK": 2 ** i}, arch="sm_90",
                              target="cuda:90:32", triton_version="3.6.0", cubin=b"\x7fELF",
                              metadata={"shared": 0, **extra})
           for i, extra in enumerate([{"status": "ok"}, {},
                                      {"status": "build_error", "error": "no dot"}])]
    table = records_to_table("binaries", old).drop_columns(["status", "error"])
    table = with_hashes("binaries", table)
    table = table.append_column("schema_version", pa.array([3] * table.num_rows, pa.int32()))
    v3 = [f for f in schema_for("binaries") if f.name not in ("status", "error", "signature")]
    table = table.select([f.name for f in v3]).cast(
        pa.schema(v3, metadata=file_metadata("binaries", 3)))
    store.fs.create_dir(store.dataset_dir("binaries"))
    pq.write_table(table, f"{store.dataset_dir('binaries')}/{new_file_name('part', 3)}",
                   **WRITE_OPTIONS)
    rows = {r["binary_key"]: r for r in store.query("binaries").to_pylist()}
    assert [(rows[b.binary_key]["status"], rows[b.binary_key]["error"]) for b in old] == [
        ("ok", None), ("ok", None), ("build_error", "no dot")]
    assert store.verify().ok
