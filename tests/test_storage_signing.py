"""Signed stores (``storage.signing``): rows written with a key carry its HMAC, readers with
the key use only rows it signed, and a signed store is never read or written without it."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage import KernelRecord, ModuleRecord, Store, TamperedRowWarning
from storage.signing import MARKER, StoreKey, StoreKeyError

KEY = b"k" * 32
OTHER = b"o" * 32


def kernel(i: int) -> KernelRecord:
    return KernelRecord(kernel_key=f"kern{i:04d}", name=f"k{i}", source=f"def k{i}(): pass",
                        meta_json="{}")


def keys(table: pa.Table) -> list[str]:
    return sorted(table.column("kernel_key").to_pylist())


def test_a_signed_write_signs_every_row_and_marks_the_store(tmp_path):
    store = Store(tmp_path, key=KEY)
    store.write("kernels", [kernel(1), kernel(2)])
    marker = json.loads((tmp_path / MARKER).read_text())
    assert marker == {"algorithm": "hmac-sha256",
                      "key_fingerprint": StoreKey(KEY).fingerprint}
    assert KEY.decode() not in (tmp_path / MARKER).read_text()
    rows = store.query("kernels", columns=["kernel_key", "signature"]).to_pylist()
    assert len(rows) == 2 and all(len(r["signature"]) == 64 for r in rows)
    assert store.verify().ok


def test_a_signed_store_read_without_a_key_is_refused_clearly(tmp_path):
    Store(tmp_path, key=KEY).write("kernels", [kernel(1)])
    keyless = Store(tmp_path, key=None)
    with pytest.raises(StoreKeyError, match=r"store .* is signed \(key [0-9a-f]{16}\); set "
                                            r"KILN_STORE_KEY_FILE"):
        keyless.query("kernels")
    assert keyless.keys("kernels") == ["kern0001"]       # listing keys runs nothing
    with pytest.raises(StoreKeyError, match="rows written without the key"):
        keyless.write("kernels", [kernel(2)])
    report = keyless.verify()
    assert not report.ok and "no signature was checked" in str(report.problems[0])


def test_a_row_signed_with_another_key_is_refused_naming_key_and_file(tmp_path):
    Store(tmp_path, key=KEY).write("kernels", [kernel(1)])
    other = Store(tmp_path, key=OTHER)
    with pytest.raises(StoreKeyError, match="signed with key .*not with the configured"):
        other.write("kernels", [kernel(2)])
    with pytest.warns(TamperedRowWarning) as caught:
        assert other.query("kernels").num_rows == 0
    message = str(caught[0].message)
    assert "kern0001" in message and "/kernels/part-" in message
    assert "signature does not verify with key" in message
    report = other.verify()
    assert any("configured key" in str(p) for p in report.problems)


def test_an_unsigned_row_in_a_signed_store_is_refused(tmp_path):
    unsigned_path = Store(tmp_path, key=None).write("kernels", [kernel(1)])
    Store(tmp_path, key=KEY).write("kernels", [kernel(2)])
    store = Store(tmp_path, key=KEY)
    with pytest.warns(TamperedRowWarning, match=r"kern0001.*unsigned row \(rows must be signed"):
        assert keys(store.query("kernels")) == ["kern0002"]
    with pytest.warns(TamperedRowWarning):
        assert store.get("kernels", "kern0001") is None
    report = store.verify()
    assert [(p.path, p.key) for p in report.problems] == [(unsigned_path, "kern0001")]


def test_deleting_the_marker_does_not_turn_signing_off(tmp_path):
    Store(tmp_path, key=KEY).write("kernels", [kernel(1)])
    (tmp_path / MARKER).unlink()
    Store(tmp_path, key=None).write("kernels", [kernel(2)])     # now looks unsigned
    with pytest.warns(TamperedRowWarning, match="kern0002"):
        assert keys(Store(tmp_path, key=KEY).query("kernels")) == ["kern0001"]


def test_an_unsigned_duplicate_does_not_shadow_the_signed_row(tmp_path):
    Store(tmp_path, key=None).write("kernels", [kernel(1)])      # first in file order
    Store(tmp_path, key=KEY).write("kernels", [kernel(1)])
    with pytest.warns(TamperedRowWarning):
        row = Store(tmp_path, key=KEY).get("kernels", "kern0001")
    assert row is not None and row["signature"]


def test_the_signature_covers_the_lookup_labels(tmp_path):
    """A signed module relabelled as another model (``model`` is not in the content hash)
    must not be served under that name."""
    module = ModuleRecord(module_key="mod1", graph_key="g", compiler_version="0.1.0",
                          options_hash="o", target="cpu", arch="", torch_version="2.13.0",
                          triton_version="3.9.0", source="def call(args): pass",
                          meta_json="{}", kernel_keys=(), kernels=(), model="mlp")
    path = Store(tmp_path, key=KEY).write("modules", [module])
    table = pq.read_table(path)
    table = table.set_column(table.schema.get_field_index("model"), "model",
                             pa.array(["resnet"], pa.string()))
    pq.write_table(table, path)
    store = Store(tmp_path, key=KEY)
    with pytest.warns(TamperedRowWarning, match="mod1.*signature does not verify"):
        assert store.query("modules").num_rows == 0


def test_repair_quarantines_unsigned_rows_instead_of_signing_them(tmp_path):
    Store(tmp_path, key=None).write("kernels", [kernel(1)])
    Store(tmp_path, key=KEY).write("kernels", [kernel(2)])
    store = Store(tmp_path, key=KEY)
    report = store.repair()
    assert report.quarantined == 1 and report.after.ok
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert keys(store.query("kernels")) == ["kern0002"]


def test_the_key_comes_from_the_environment_through_the_config_module(tmp_path, monkeypatch):
    key_file = tmp_path / "store.key"
    key_file.write_bytes(KEY + b"\n")
    monkeypatch.setenv("KILN_STORE_KEY_FILE", str(key_file))
    Store(tmp_path / "s").write("kernels", [kernel(1)])
    assert Store(tmp_path / "s", key=KEY).query("kernels").num_rows == 1
    monkeypatch.delenv("KILN_STORE_KEY_FILE")
    monkeypatch.setenv("KILN_STORE_KEY", KEY.decode())
    assert Store(tmp_path / "s").key == StoreKey(KEY)
    monkeypatch.setenv("KILN_STORE_KEY_FILE", str(key_file))
    from compiler.config import OptionsError
    with pytest.raises(OptionsError, match="set one"):
        Store(tmp_path / "s")


def test_a_short_key_is_refused():
    with pytest.raises(ValueError, match="at least 16 bytes"):
        StoreKey(b"short")


def test_kiln_run_refuses_a_signed_store_without_its_key_before_any_task(tmp_path,
                                                                         monkeypatch):
    from pipeline.cli import store_problem
    monkeypatch.delenv("KILN_STORE_KEY_FILE", raising=False)
    monkeypatch.delenv("KILN_STORE_KEY", raising=False)
    assert store_problem(str(tmp_path)) is None
    Store(tmp_path, key=KEY).write("kernels", [kernel(1)])
    assert "is signed (key" in store_problem(str(tmp_path))
    monkeypatch.setenv("KILN_STORE_KEY", OTHER.decode())
    assert "not with the configured key" in store_problem(str(tmp_path))
    monkeypatch.setenv("KILN_STORE_KEY", KEY.decode())
    assert store_problem(str(tmp_path)) is None
    monkeypatch.setenv("KILN_STORE_KEY", "short")
    assert "at least 16 bytes" in store_problem(str(tmp_path))


def test_a_key_set_by_mistake_never_makes_repair_quarantine_an_unsigned_store(tmp_path):
    path = Store(tmp_path, key=None).write("kernels", [kernel(1)])
    store = Store(tmp_path, key=KEY)
    report = store.verify()
    assert [p.path for p in report.problems] == [str(tmp_path / MARKER)]
    assert "the store is not signed, and a key is configured" in report.problems[0].reason
    assert store.repair().actions == []
    assert Store(tmp_path, key=None).query("kernels").num_rows == 1 and Path(path).exists()
