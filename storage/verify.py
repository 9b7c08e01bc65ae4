"""``kiln store verify``: read every file and every row of a store and report what is wrong.

A *problem* makes verify fail: a file that does not decode (truncated, a flipped byte caught
by a page checksum or the decoder), a footer that disagrees with the file's name or dataset,
row-group statistics that disagree with the data, keys outside the range the file's name
promises, a schema that is not the one its version promises, a version this kiln cannot
read, a row whose content hash does not match (reported with its key), a module naming
kernels that no kernels row holds (``storage.references``); with a signing key, a row whose
signature is missing or does not verify, and a marker naming another key; without one, a
signed store (whose signatures then go unchecked). A *note* does not: leftover
temporary files of killed writers, unrecognized files, duplicate keys awaiting compaction,
binaries and trials of kernels the store no longer holds, modules without a graph row.
``kiln store repair`` (``storage.repair``) fixes what verify reports.

Example:
    >>> import tempfile
    >>> from storage import Store
    >>> report = verify_store(Store(tempfile.mkdtemp()))
    >>> report.ok, report.files_checked
    (True, 0)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .files import StoreFile, list_files, temp_files
from .integrity import bad_rows
from .reader import Issue
from .references import REF_COLUMNS, References, describe
from .signing import KEY_HELP, StoreKeyError, bad_signatures, marker_path
from .schema import (KEY_COLUMN, KINDS, SCHEMA_VERSION, StoreVersionError, metadata_version,
                     migrate, require_readable, schema_for)

if TYPE_CHECKING:
    from .store import Store


@dataclass
class VerifyReport:
    problems: list[Issue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files_checked: int = 0
    rows_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


class _Mismatch(Exception):
    """A file that decodes but is not what its name and place say."""


def _check_footer(kind: str, file: StoreFile, schema: pa.Schema) -> str | None:
    """Why the footer disagrees with the file's name and dataset, or None."""
    meta_kind, meta_version = metadata_version(schema)
    if meta_kind != kind:
        return f"footer says kind {meta_kind!r}, file is in the {kind} dataset"
    if meta_version != file.version:
        return f"footer says schema version {meta_version}, name says {file.version}"
    return None


def _check_schema(kind: str, table: pa.Table) -> str | None:
    want = schema_for(kind)
    if table.schema.remove_metadata().equals(want.remove_metadata()):
        return None
    if table.schema.names != want.names:
        return f"columns {table.schema.names} are not those of {kind} v{SCHEMA_VERSION}"
    diff = next(f"{g} (want {w})" for g, w in zip(table.schema, want) if not g.equals(w))
    return f"schema differs from {kind} v{SCHEMA_VERSION}: column {diff}"


def _exact(stats: pq.Statistics) -> bool:
    return (stats.has_min_max and getattr(stats, "is_min_value_exact", True)
            and getattr(stats, "is_max_value_exact", True))


def _check_statistics(parquet: pq.ParquetFile, groups: list[pa.Table]) -> str | None:
    """Whether each row group's footer min/max match its data.

    Readers skip row groups by these statistics, so a flipped byte in the footer that
    changes one would turn a present key into a silent miss; no page checksum covers them.
    """
    for index, table in enumerate(groups):
        meta = parquet.metadata.row_group(index)
        for j in range(meta.num_columns):
            column = meta.column(j)
            stats, name = column.statistics, column.path_in_schema
            if stats is None or not _exact(stats) or name not in table.column_names:
                continue
            actual = pc.min_max(table.column(name)).as_py()
            if (stats.min, stats.max) != (actual["min"], actual["max"]):
                return (f"row group {index} statistics of {name!r} do not match its data "
                        "(corrupt footer)")
    return None


def _read_checked(store: "Store", kind: str, file: StoreFile) -> pa.Table:
    """The whole file, every page checksum verified, migrated to the current version."""
    require_readable(kind, file.version, store.migrations, file.path)
    parquet = pq.ParquetFile(file.path, filesystem=store.fs, page_checksum_verification=True)
    footer = _check_footer(kind, file, parquet.schema_arrow)
    if footer:
        raise _Mismatch(footer)
    groups = [parquet.read_row_group(i) for i in range(parquet.num_row_groups)]
    stats = _check_statistics(parquet, groups)
    if stats:
        raise _Mismatch(stats)
    table = pa.concat_tables(groups) if groups else parquet.schema_arrow.empty_table()
    if file.version != SCHEMA_VERSION:
        table = migrate(kind, table, file.version, store.migrations, file.path)
    return table


@dataclass
class FileCheck:
    """What checking one data file found. ``table`` is the whole file (None when it could not
    be read as what it claims to be); ``bad`` the indices of rows whose hash fails; ``whole``
    whether the problems are the file's as a whole (unreadable, mislabelled, keys outside its
    name's range) rather than single rows'; ``newer`` a version this kiln cannot read."""
    kind: str
    problems: list[Issue] = field(default_factory=list)
    table: pa.Table | None = None
    bad: list[int] = field(default_factory=list)
    whole: bool = False
    newer: bool = False

    @property
    def keys(self) -> list[str]:
        return [] if self.table is None else self.table.column(KEY_COLUMN[self.kind]).to_pylist()

    def intact(self) -> pa.Table | None:
        """The file's rows whose hash holds (None if the file as a whole is bad)."""
        if self.table is None or self.whole:
            return None
        if not self.bad:
            return self.table
        keep = sorted(set(range(self.table.num_rows)) - set(self.bad))
        return self.table.take(pa.array(keep, pa.int64()))


def inspect_file(store: "Store", kind: str, file: StoreFile) -> FileCheck:
    """Check one data file, decoding every page of it (see the module doc)."""
    try:
        table = _read_checked(store, kind, file)
    except FileNotFoundError:
        return FileCheck(kind)  # compacted away since it was listed: its rows live on elsewhere
    except StoreVersionError as err:
        return FileCheck(kind, [Issue(file.path, str(err).removeprefix(f"{file.path}: "))],
                         newer=True)
    except _Mismatch as err:
        return FileCheck(kind, [Issue(file.path, str(err).removeprefix(f"{file.path}: "))],
                         whole=True)
    except (pa.ArrowException, OSError, ValueError) as err:
        return FileCheck(kind, [Issue(file.path, f"unreadable: {type(err).__name__}: {err}")],
                         whole=True)
    mismatch = _check_schema(kind, table)
    if mismatch:
        return FileCheck(kind, [Issue(file.path, mismatch)], whole=True)
    keys = table.column(KEY_COLUMN[kind]).to_pylist()
    bad = bad_rows(kind, table)
    check = FileCheck(kind, [Issue(file.path, "content hash mismatch (tampered or corrupt "
                                              "row)", keys[i]) for i in bad], table, bad)
    _check_signatures(store, check, file)
    outside = [key for key in keys if not file.may_contain(key)]
    if outside:
        # Lookups trust the name's key range and would never open this file for these keys.
        check.problems.append(Issue(file.path, f"{len(outside)} keys outside the key range "
                                               f"in the file name, e.g. {outside[0]}"))
        check.whole = True
    return check


def _check_signatures(store: "Store", check: FileCheck, file: StoreFile) -> None:
    """In a signed store, add the rows whose signature fails to ``check``'s problems and
    bad rows (so that ``repair`` never rewrites, and re-signs, a row the key did not sign).
    An unsigned store's rows are not each a problem: ``_check_marker`` says it once."""
    try:
        key = store.checking_key(check.kind)
        if key is None or check.table is None or store.marker() is None:
            return
    except StoreKeyError:
        return      # reported once for the whole store by ``_check_marker``
    keys = check.keys
    hashed_bad = set(check.bad)
    unsigned = [(i, why) for i, why in bad_signatures(check.kind, check.table, key)
                if i not in hashed_bad]
    check.problems += [Issue(file.path, why, keys[i]) for i, why in unsigned]
    check.bad = sorted(hashed_bad | {i for i, _ in unsigned})


def _check_marker(store: "Store") -> list[Issue]:
    """A signed store checked without its key, or a marker naming another key."""
    try:
        marker = store.marker()
    except StoreKeyError as err:
        return [Issue(marker_path(store.root), str(err))]
    if marker is None:
        return [] if store.key is None else [Issue(
            marker_path(store.root), f"the store is not signed, and a key is configured "
                                     f"({store.key.fingerprint}): readers with it refuse "
                                     f"every row (`kiln store export` with the key makes a "
                                     f"signed copy)")]
    if store.key is None:
        return [Issue(marker_path(store.root), f"the store is signed (key "
                                               f"{marker.fingerprint}) and no key is "
                                               f"configured, so no signature was checked; "
                                               f"{KEY_HELP}")]
    if marker.fingerprint != store.key.fingerprint:
        return [Issue(marker_path(store.root), f"the store is signed with key "
                                               f"{marker.fingerprint}, the configured key "
                                               f"is {store.key.fingerprint}")]
    return []


def check_file(store: "Store", kind: str, file: StoreFile) -> tuple[list[Issue], list[str]]:
    """(problems, keys of the rows read) for one data file; decodes every page of it."""
    check = inspect_file(store, kind, file)
    return check.problems, check.keys


def _duplicate_note(kind: str, keys: list[str]) -> str | None:
    duplicates = len(keys) - len(set(keys))
    if duplicates:
        return f"{kind}: {duplicates} duplicate rows (harmless; `compact` removes them)"
    return None


def verify_store(store: "Store", kinds: Iterable[str] = ()) -> VerifyReport:
    """Check every file of ``kinds`` (all kinds if empty), then the references between
    records (``storage.references``); never raises on bad data."""
    report = VerifyReport(problems=_check_marker(store))
    refs: dict[str, list[pa.Table]] = {}
    for kind in kinds or KINDS:
        files, unknown = list_files(store.fs, store.dataset_dir(kind), kind)
        keys: list[str] = []
        for file in files:
            check = inspect_file(store, kind, file)
            report.problems += check.problems
            report.files_checked += 1
            report.rows_checked += len(check.keys)
            keys += check.keys
            intact = check.intact()
            if intact is not None and kind in REF_COLUMNS:
                refs.setdefault(kind, []).append(intact.select(REF_COLUMNS[kind]))
        report.notes += [f"{path}: not a kiln data file name (ignored by readers)"
                         for path in unknown]
        report.notes += [f"{path}: temporary file of an unfinished write (ignored by readers)"
                         for path in temp_files(store.fs, store.dataset_dir(kind))]
        note = _duplicate_note(kind, keys)
        if note:
            report.notes.append(note)
    tables = {kind: pa.concat_tables(parts) for kind, parts in refs.items()}
    try:
        references = References.read(store, tables)
    except StoreKeyError:      # a signed store without its key: reported by _check_marker
        return report
    problems, notes = describe(references, store.root)
    report.problems += problems
    report.notes += notes
    return report

