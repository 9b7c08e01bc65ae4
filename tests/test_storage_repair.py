"""A store that heals (issue 14): verify follows references between records, a run restores
lost kernels rows, and `kiln store repair` quarantines corrupt files, restores what it can,
drops dangling rows and says what it did."""
from __future__ import annotations

import io
import os
from pathlib import Path

import pyarrow.parquet as pq

from storage import KernelRecord, Store
from storage.cli import store_main
from test_storage_integrity import _truncate
from test_storage_support import artifact, binary, kernel, rewrite_file


def _kernels_file(store: Store) -> str:
    (file,) = store.files("kernels")
    return file.path


def test_a_run_restores_a_deleted_kernels_file_and_builds_again(tmp_path):
    """Before: verify said OK with the kernels file deleted, and every rerun failed every
    model with KernelNotStored (nothing checked that a stored module's kernels exist)."""
    from pipeline.config import ModelSpec
    from pipeline.kernel_tasks import BuildJob, build_task
    from pipeline.tasks import LowerJob, capture_task, lower_task
    root = str(tmp_path / "store")
    spec = ModelSpec(name="mlp", factory="pipeline.zoo.tiny:mlp", kwargs_json='{"batch": 4}')
    job = LowerJob(model=spec.name, graph_key=capture_task(spec, root).key, target="cuda")
    assert lower_task(job, root).status == "ok"
    store = Store(root)
    os.remove(_kernels_file(store))
    report = store.verify()
    assert not report.ok and "kernel(s) that no kernels row holds" in str(report.problems[0])

    again = lower_task(job, root)
    assert again.status == "skipped" and again.repaired.startswith("restored ")
    assert store.verify().ok
    shape = again.kernel_shapes[0]
    built = build_task(BuildJob(model="mlp", shape=shape, target="sm_90"), root)
    assert not built.failed, built.message
    assert lower_task(job, root).repaired == ""           # nothing left to restore


def test_repair_quarantines_restores_drops_and_says_so(tmp_path):
    store = Store(tmp_path / "store")
    art = artifact(1, (kernel("triton_poi_0", "    x = tl.load(in_ptr0)\n"),
                       kernel("triton_red_1", "    x = tl.sum(in_ptr0)\n")))
    store.put_artifact(art)
    store.write("binaries", [binary(7)])        # of kernel-7: no kernels row, no module
    keep = store.write("trials", [__import__("test_storage_support").trial(3)])
    _truncate(_kernels_file(store))
    assert not store.verify().ok

    out = io.StringIO()
    assert store_main(["--store", store.root, "repair"], out=out) == 0
    text = out.getvalue()
    assert "repair: quarantined " in text and "unreadable" in text
    assert "repair: restored 2 kernels row(s) named by 1 module(s)" in text
    assert "repair: dropped 1 binaries row(s)" in text
    assert text.splitlines()[-1] == ("repair: 1 file(s) quarantined, 2 row(s) restored, 1 row(s) "
                                     "dropped; verify: 3 files, 4 rows checked: OK")
    quarantined = sorted(p.parent.name for p in Path(store.root, "quarantine").rglob("*.parquet"))
    assert quarantined == ["binaries", "kernels"]
    assert set(store.keys("kernels")) == {k.kernel_key for k in art.kernels}
    assert store.keys("binaries") == [] and store.files("trials")[0].path == keep
    assert store.verify().ok
    assert "nothing to repair" in _repair(store)


def _repair(store: Store) -> str:
    out = io.StringIO()
    store_main(["--store", store.root, "repair"], out=out)
    return out.getvalue()


def test_repair_keeps_the_intact_rows_of_a_file_with_a_tampered_row(tmp_path):
    store = Store(tmp_path / "store")
    path = store.write("binaries", [binary(i) for i in range(3)])
    store.write("kernels", [KernelRecord(kernel_key=f"kernel-{i}", name=f"k{i}", source="s",
                                         meta_json="{}") for i in range(3)])
    table = pq.read_table(path)
    meta = table.column("metadata_json").to_pylist()
    meta[1] = '{"shared": 0}'
    rewrite_file(path, table.set_column(table.schema.get_field_index("metadata_json"),
                                        "metadata_json", [meta]))
    text = _repair(store)
    assert "content hash mismatch" in text and "2 intact row(s) were written to a new" in text
    assert sorted(store.keys("binaries")) == sorted(binary(i).binary_key for i in (0, 2))
