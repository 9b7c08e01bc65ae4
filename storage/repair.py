"""``kiln store repair``: make a store whole again, and say what was done.

1. A corrupt file (it does not decode, or is not what its name and footer say) is moved to
   ``ROOT/quarantine/<kind>/``, where readers never look; nothing is deleted. A file that
   decodes but holds rows whose content hash fails keeps its intact rows: they are written
   to a new file first, then the original is quarantined. Files written by a newer kiln are
   left alone (they are not corrupt; this kiln cannot read them).
2. Kernels rows that modules name but the kernels dataset lost (a deleted or quarantined
   file) are restored from the module rows, which embed their kernels.
3. Dangling binaries rows (of a kernel no kernels row and no module holds) are dropped: the
   rest of their file is written anew and the original quarantined.

Then the store is verified again. Run it while no ``kiln run`` writes to the store. A run
restores lost kernels rows by itself (``pipeline.tasks.lower_task``); ``repair`` is for the
files that readers skip with a warning on every read.

Example:
    >>> import tempfile
    >>> from storage import Store
    >>> report = repair_store(Store(tempfile.mkdtemp()))
    >>> report.actions, report.after.ok
    ([], True)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from .files import StoreFile, list_files
from .references import References
from .schema import KINDS
from .verify import VerifyReport, inspect_file, verify_store

if TYPE_CHECKING:
    from .store import Store

QUARANTINE = "quarantine"


@dataclass
class RepairReport:
    """One line per thing done (``actions``), counts, and the verify run afterwards."""
    actions: list[str] = field(default_factory=list)
    quarantined: int = 0
    restored: int = 0
    dropped: int = 0
    after: VerifyReport = field(default_factory=VerifyReport)


def _quarantine(store: "Store", kind: str, file: StoreFile) -> str:
    """Move ``file`` out of its dataset into ``ROOT/quarantine/<kind>/``; returns the new
    path relative to the root."""
    directory = f"{store.root}/{QUARANTINE}/{kind}"
    store.fs.create_dir(directory, recursive=True)
    target, n = f"{directory}/{file.name}", 1
    while store.fs.get_file_info(target).type != pafs.FileType.NotFound:
        target, n = f"{directory}/{file.name}.{n}", n + 1
    store.fs.move(file.path, target)
    return target.removeprefix(f"{store.root}/")


def _replace(store: "Store", kind: str, file: StoreFile, keep: pa.Table | None) -> str:
    """Write ``keep`` (the rows worth keeping) as a new file, then quarantine ``file``."""
    if keep is not None and keep.num_rows:
        store.write(kind, keep)
    return _quarantine(store, kind, file)


def _quarantine_corrupt(store: "Store", report: RepairReport) -> None:
    for kind in KINDS:
        for file in list_files(store.fs, store.dataset_dir(kind), kind)[0]:
            check = inspect_file(store, kind, file)
            if check.newer or not check.problems:
                continue
            keep = check.intact()
            moved = _replace(store, kind, file, keep)
            report.quarantined += 1
            kept = f"; its {keep.num_rows} intact row(s) were written to a new file" \
                if keep is not None and keep.num_rows else ""
            report.actions.append(f"quarantined {file.path} -> {moved}: "
                                  f"{check.problems[0].reason}{kept}")


def restore_kernels(store: "Store", modules: list[dict]) -> int:
    """Write the kernels rows that the ``modules`` rows (each with its ``kernels`` column)
    name but the kernels dataset lacks; returns how many. A run calls it for every module it
    finds stored, so a lost kernels file heals by itself."""
    from .records import KernelRecord
    entries = {k["kernel_key"]: k for row in modules for k in row["kernels"]}
    if not entries:
        return 0
    have = set(store.lookup("kernels", sorted(entries), columns=["kernel_key"])
               .column("kernel_key").to_pylist())
    records = [KernelRecord(kernel_key=key, name=k["name"], source=k["source"],
                            meta_json=k["meta_json"])
               for key, k in entries.items() if key not in have]
    if records:
        store.write("kernels", records)
    return len(records)


def _restore_kernels(store: "Store", refs: References, report: RepairReport) -> None:
    missing = refs.missing_kernels()
    if not missing:
        return
    rows = store.lookup("modules", sorted(missing), columns=["kernels"]).to_pylist()
    restored = restore_kernels(store, rows)
    report.restored += restored
    report.actions.append(f"restored {restored} kernels row(s) named by {len(missing)} "
                          f"module(s) from the module rows")


def _drop_dangling_binaries(store: "Store", refs: References, report: RepairReport) -> None:
    dangling = set(refs.dangling("binaries"))
    if not dangling:
        return
    for file in list_files(store.fs, store.dataset_dir("binaries"), "binaries")[0]:
        check = inspect_file(store, "binaries", file)
        table = check.intact()
        if table is None:
            continue
        drop = pc.is_in(table.column("binary_key"), pa.array(sorted(dangling)))
        n = pc.sum(drop).as_py() or 0
        if not n:
            continue
        rest = table.filter(pc.invert(drop))
        moved = _replace(store, "binaries", file, rest)
        report.dropped += n
        kept = f"; its other {rest.num_rows} row(s) were written to a new file" \
            if rest.num_rows else ""
        report.actions.append(f"dropped {n} binaries row(s) of kernels no kernels row or "
                              f"module holds: {file.path} -> {moved}{kept}")


def repair_store(store: "Store") -> RepairReport:
    """Quarantine corrupt files, restore lost kernels rows, drop dangling binaries, verify."""
    report = RepairReport()
    _quarantine_corrupt(store, report)
    refs = References.read(store)
    _restore_kernels(store, refs, report)
    _drop_dangling_binaries(store, refs, report)
    report.after = verify_store(store)
    return report
