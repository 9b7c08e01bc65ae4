"""Compaction on real files: row counts kept, duplicates gone, readers never short of rows."""
from __future__ import annotations

import os
import time
import warnings

import pyarrow.parquet as pq
import pytest

from storage import Store
from storage.compact import CompactOptions, _merge_batch, KindCompaction
from storage.files import TEMP_PREFIX
from test_storage_support import artifact, binary, rewrite_file, trials


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "store")


def _many_small_files(store: Store, n_files: int = 30, per_file: int = 40) -> set[str]:
    keys = set()
    for f in range(n_files):
        # Overlapping ranges: every file repeats half of the previous one.
        records = trials(f * per_file // 2, f * per_file // 2 + per_file)
        store.write("trials", records)
        keys |= {r.trial_key for r in records}
    return keys


def test_compaction_preserves_rows_and_drops_duplicates(store):
    keys = _many_small_files(store)
    before = store.query("trials")
    raw = store.query("trials", dedup=False).num_rows
    report = store.compact(["trials"]).kinds["trials"]
    after = store.query("trials")
    assert (report.files_in, report.files_out) == (30, 1)
    assert (report.rows_in, report.rows_out) == (raw, len(keys))
    assert report.duplicates_removed == raw - len(keys) > 0
    assert set(after["trial_key"].to_pylist()) == keys
    assert after.num_rows == before.num_rows == len(keys)
    assert store.query("trials", dedup=False).num_rows == len(keys)
    # Rows are the same rows, not just the same keys.
    assert after.sort_by("trial_key").equals(before.sort_by("trial_key"))
    assert store.verify().ok


def test_compacted_file_is_sorted_with_small_row_groups(store):
    for i in range(20):
        store.put_artifact(artifact(i))
    store.compact(["modules"], row_group_bytes=8 * 1024)
    [file] = store.files("modules")
    meta = pq.read_metadata(file.path)
    assert meta.num_row_groups > 1
    column = meta.schema.names.index("module_key")
    ranges = [(meta.row_group(g).column(column).statistics.min,
               meta.row_group(g).column(column).statistics.max)
              for g in range(meta.num_row_groups)]
    flat = [v for pair in ranges for v in pair]
    assert flat == sorted(flat), "row groups must hold disjoint, ascending key ranges"
    for i in (0, 7, 19):
        assert store.get_artifact(artifact(i).module_key) == artifact(i)


def test_output_split_into_files_of_target_size(store):
    _many_small_files(store, n_files=10, per_file=200)
    report = store.compact(["trials"], target_file_bytes=64 * 1024,
                           row_group_bytes=16 * 1024).kinds["trials"]
    assert report.files_out == len(store.files("trials")) > 1
    assert store.query("trials").num_rows == report.rows_out == 1100


def test_reader_between_write_and_delete_sees_each_row_once(store):
    keys = _many_small_files(store, n_files=6)
    files = store.files("trials")
    report = KindCompaction("trials")
    written, merged = _merge_batch(store, "trials", files, CompactOptions(), report)
    assert len(written) == 1 and merged == files
    # The merged file and all its inputs are on disk together now.
    assert len(store.files("trials")) == 7
    assert sorted(store.query("trials")["trial_key"].to_pylist()) == sorted(keys)


def test_corrupt_and_tampered_files_are_left_in_place(store):
    good = _many_small_files(store, n_files=4)
    truncated = store.write("trials", trials(500, 510))
    with open(truncated, "r+b") as f:
        f.truncate(100)
    tampered = store.write("binaries", [binary(1), binary(2)])
    table = pq.read_table(tampered)
    rewrite_file(tampered, table.set_column(
        table.schema.get_field_index("cubin"), "cubin",
        [[binary(1).cubin[::-1], binary(2).cubin]]))
    store.write("binaries", [binary(3)])

    report = store.compact(["trials", "binaries"])
    assert not report.ok
    assert [i.path for i in report.kinds["trials"].skipped] == [truncated]
    assert {i.path for i in report.kinds["binaries"].skipped} == {tampered}
    assert os.path.exists(truncated) and os.path.exists(tampered)
    with pytest.warns(UserWarning):
        assert set(store.query("trials")["trial_key"].to_pylist()) == good
    with pytest.warns(UserWarning):
        assert sorted(store.query("binaries")["binary_key"].to_pylist()) == sorted(
            [binary(2).binary_key, binary(3).binary_key])


def test_nothing_to_do_is_a_no_op(store):
    store.write("trials", trials(0, 10))
    store.compact(["trials"])
    [once] = store.files("trials")
    report = store.compact(["trials"]).kinds["trials"]
    assert (report.files_in, report.files_out) == (0, 0)
    assert store.files("trials") == [once]


def test_only_small_files_merge_unless_full(store):
    store.write("trials", trials(0, 3000))
    big = store.files("trials")[0]
    store.write("trials", trials(3000, 3010))
    store.write("trials", trials(3010, 3020))
    report = store.compact(["trials"], small_file_bytes=big.size).kinds["trials"]
    assert report.files_in == 2 and big in store.files("trials")
    report = store.compact(["trials"], full=True).kinds["trials"]
    assert report.files_in == 2 and len(store.files("trials")) == 1
    assert store.query("trials").num_rows == 3020


def test_stale_temp_files_removed_young_ones_kept(store):
    store.write("trials", trials(0, 5))
    directory = store.dataset_dir("trials")
    old, young = f"{directory}/{TEMP_PREFIX}old.parquet", f"{directory}/{TEMP_PREFIX}new.parquet"
    for path in (old, young):
        with open(path, "wb") as f:
            f.write(b"PAR1 half a file")
    hour_ago = time.time() - 7200
    os.utime(old, (hour_ago, hour_ago))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.query("trials").num_rows == 5
    assert store.compact(["trials"]).kinds["trials"].temp_removed == 1
    assert not os.path.exists(old) and os.path.exists(young)
