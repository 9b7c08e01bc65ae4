"""Corrupt files and tampered rows: caught by verify and by reads, never served, never fatal."""
from __future__ import annotations

import warnings

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage import (CorruptFileWarning, CorruptStoreError, Store, TamperedRowWarning)
from test_storage_support import artifact, binary, rewrite_file, trials


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "store")


def _truncate(path: str, keep: float = 0.5) -> None:
    with open(path, "r+b") as f:
        size = f.seek(0, 2)
        f.truncate(int(size * keep))


def _flip_byte_in_column(path: str, column: str) -> None:
    """Flip one byte in the middle of ``column``'s data in the first row group, on disk."""
    meta = pq.read_metadata(path)
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    chunk = meta.row_group(0).column(names.index(column))
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    offset = start + chunk.total_compressed_size // 2
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))


def test_truncated_file_is_skipped_with_warning_naming_it(store):
    good = store.write("trials", trials(0, 50))
    bad = store.write("trials", trials(50, 100))
    _truncate(bad)
    with pytest.warns(CorruptFileWarning, match=bad.rsplit("/", 1)[1]):
        rows = store.query("trials")
    assert sorted(rows["trial_key"].to_pylist()) == sorted(
        t.trial_key for t in trials(0, 50))
    report = store.verify()
    assert not report.ok
    assert [p.path for p in report.problems] == [bad]
    assert "unreadable" in report.problems[0].reason
    assert good not in {p.path for p in report.problems}


def test_truncated_file_raises_in_strict_mode(tmp_path):
    store = Store(tmp_path / "s", strict=True)
    store.write("trials", trials(0, 5))
    _truncate(store.write("trials", trials(5, 10)), keep=0.9)
    with pytest.raises(CorruptStoreError, match="unreadable"):
        store.query("trials")


def test_flipped_byte_in_cubin_on_disk(store):
    records = [binary(i) for i in range(8)]
    store.write("binaries", records[:4])
    bad = store.write("binaries", records[4:])
    _flip_byte_in_column(bad, "cubin")
    report = store.verify(["binaries"])
    assert [p.path for p in report.problems] == [bad]
    with pytest.warns(CorruptFileWarning, match=bad.rsplit("/", 1)[1]):
        served = store.query("binaries").to_pylist()
    # Only rows from the intact file come back, and each is byte-exact.
    assert {r["binary_key"] for r in served} == {r.binary_key for r in records[:4]}
    want = {r.binary_key: r.cubin for r in records}
    assert all(r["cubin"] == want[r["binary_key"]] for r in served)
    with pytest.warns(CorruptFileWarning):
        assert store.get("binaries", records[5].binary_key) is None


def test_tampered_cubin_row_is_reported_by_key_and_not_served(store):
    records = [binary(i) for i in range(5)]
    path = store.write("binaries", records)
    table = pq.read_table(path)
    cubins = table["cubin"].to_pylist()
    flipped = bytearray(cubins[2])
    flipped[100] ^= 0x01
    cubins[2] = bytes(flipped)
    rewrite_file(path, table.set_column(table.schema.get_field_index("cubin"), "cubin",
                                        pa.array(cubins, pa.binary())))
    tampered_key = table["binary_key"][2].as_py()

    report = store.verify()
    assert [(p.path, p.key) for p in report.problems] == [(path, tampered_key)]
    with pytest.warns(TamperedRowWarning, match=tampered_key):
        rows = store.query("binaries")
    assert rows.num_rows == 4 and tampered_key not in rows["binary_key"].to_pylist()
    with pytest.warns(TamperedRowWarning):
        assert not store.has("binaries", tampered_key)


def test_tampered_module_is_a_miss_and_intact_copy_wins(store):
    art = artifact(1)
    store.put_artifact(art)
    path = store.files("modules")[0].path
    table = pq.read_table(path)
    evil = art.source.replace("return 1", "return __import__('os').system('true')")
    rewrite_file(path, table.set_column(table.schema.get_field_index("source"), "source",
                                        pa.array([evil])))
    with pytest.warns(TamperedRowWarning, match=art.module_key):
        assert store.get_artifact(art.module_key) is None
    store.put_artifact(art)          # recompiled and stored again: the intact row is served
    with pytest.warns(TamperedRowWarning):
        assert store.get_artifact(art.module_key) == art
    strict = Store(store.root, strict=True)
    with pytest.raises(CorruptStoreError, match="content hash mismatch"):
        strict.get_artifact(art.module_key)


def test_key_moved_to_other_row_is_caught(store):
    """A row relabelled with another key (say, to serve wrong code for it) fails its hash."""
    store.put_artifact(artifact(1))
    path = store.files("modules")[0].path
    table = pq.read_table(path)
    moved = artifact(2).module_key
    rewrite_file(path, table.set_column(0, "module_key", pa.array([moved])))
    with pytest.warns(TamperedRowWarning, match=moved):
        assert store.query("modules").num_rows == 0
    assert store.get_artifact(moved) is None
    problems = store.verify().problems
    assert [(p.path, p.key) for p in problems] == [(path, moved), (path, None)]
    assert "outside the key range" in problems[1].reason


def test_clean_store_verifies_ok_without_warnings(store):
    store.write("trials", trials(0, 30))
    store.write("binaries", [binary(i) for i in range(3)])
    store.put_artifact(artifact(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = store.verify()
        assert store.query("binaries").num_rows == 3
    assert report.ok and report.files_checked == 4 and report.rows_checked == 30 + 3 + 2


def test_foreign_and_mislabelled_files(store):
    path = store.write("trials", trials(0, 3))
    moved = path.replace("/trials/", "/failures/")
    store.fs.create_dir(store.dataset_dir("failures"))
    store.fs.copy_file(path, moved)
    (lambda p: open(p, "w").write("not parquet"))(f"{store.dataset_dir('trials')}/notes.txt")
    report = store.verify()
    assert [p.path for p in report.problems] == [moved]
    assert "footer says kind 'trials'" in report.problems[0].reason
    assert any("notes.txt" in note for note in report.notes)
    with pytest.warns(CorruptFileWarning, match="not a failures file"):
        assert store.query("failures").num_rows == 0
    assert store.query("trials").num_rows == 3


def test_flipped_byte_in_footer_statistics_is_caught_by_verify(store):
    """No page checksum covers the footer; verify re-derives the statistics readers prune by."""
    records = trials(0, 20)
    path = store.write("trials", records)
    lowest = min(r.trial_key for r in records).encode()
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        at = data.rindex(lowest)              # the footer's min statistic (it comes last)
        data[at + 5] ^= 0x01
        f.seek(0)
        f.write(data)
    report = store.verify()
    assert [p.path for p in report.problems] == [path]
    assert "statistics of 'trial_key'" in report.problems[0].reason


def test_file_whose_name_range_misses_its_keys_is_reported(store):
    path = store.write("trials", trials(0, 10))
    lo_hi = path.rsplit("-k", 1)[1]
    wrong = path.replace(lo_hi, "00-01.parquet")
    store.fs.move(path, wrong)
    report = store.verify()
    assert [p.path for p in report.problems] == [wrong]
    assert "outside the key range" in report.problems[0].reason
