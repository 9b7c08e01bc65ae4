"""Reading a dataset that may hold corrupt files, tampered rows, duplicates and old versions.

``read_rows`` scans all current-version files of one kind as one ``pyarrow.dataset`` (filters
pushed down, row groups pruned by their key statistics). A file that fails to decode is
isolated by rescanning fragment by fragment and skipped with a ``CorruptFileWarning`` that
names it; the rest of the store is still served. Older-version files are read one by one and
migrated. Then rows whose content hash fails are dropped with a warning naming file and key,
and so are, when a signing key is given, rows whose signature does not verify with it
(``storage.signing``); duplicate keys are collapsed to the first row in file order, so an
unsigned duplicate never shadows a signed row.

Example:
    >>> import pyarrow.fs as pafs
    >>> result = read_rows(pafs.LocalFileSystem(), "trials", [], {})
    >>> result.table.num_rows, result.issues
    (0, [])
"""
from __future__ import annotations

import functools
import warnings
from datetime import datetime, timedelta, timezone
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .files import StoreFile
from .integrity import bad_rows, hash_values, is_hashed
from .signing import SIGNED_LABELS, StoreKey, bad_signatures, row_signature_problem
from .schema import (HASHED_COLUMNS, KEY_COLUMN, SCHEMA_VERSION, Migrations, migrate,
                     require_readable, schema_for)

if TYPE_CHECKING:
    import pyarrow.dataset as ds

FILENAME = "__filename"   # pyarrow.dataset's per-row source-file column
_DECODE_ERRORS = (pa.ArrowException, OSError, ValueError)


@functools.lru_cache(maxsize=1)
def _parquet_format() -> "ds.ParquetFileFormat":
    # pyarrow.dataset (and compute, which it loads) cost ~0.15 s to import: only the
    # vectorized scans need them, not a serving process's row reads (``read_dicts``)
    import pyarrow.dataset as ds
    return ds.ParquetFileFormat(default_fragment_scan_options=ds.ParquetFragmentScanOptions(
        page_checksum_verification=True))


class CorruptFileWarning(UserWarning):
    """A data file that could not be decoded was skipped."""


class TamperedRowWarning(UserWarning):
    """A row whose content hash did not match was skipped."""


class VanishedFileError(FileNotFoundError):
    """A listed file was gone when read: a compaction merged it; list again and retry."""


class CorruptStoreError(RuntimeError):
    """Raised instead of a warning when the store is opened with ``strict=True``."""


@dataclass(frozen=True)
class Issue:
    """Something wrong with one file, or one row (``key``) of one file."""
    path: str
    reason: str
    key: str | None = None

    def __str__(self) -> str:
        where = f"{self.path} [{self.key}]" if self.key else self.path
        return f"{where}: {self.reason}"


@dataclass
class ReadResult:
    table: pa.Table
    issues: list[Issue] = field(default_factory=list)


def read_file(fs: pafs.FileSystem, kind: str, file: StoreFile,
              migrations: Migrations) -> pa.Table:
    """One whole file as a current-schema table (migrated if older). Decode errors raise."""
    table = pq.read_table(file.path, filesystem=fs, page_checksum_verification=True)
    if file.version != SCHEMA_VERSION:
        return migrate(kind, table, file.version, migrations, file.path)
    return table


def needed_columns(kind: str, columns: Iterable[str] | None, verify: bool,
                   signed: bool = False) -> list[str] | None:
    """Columns to read: the asked ones plus the key and whatever the hash check (and with
    ``signed``, the signature check) needs."""
    if columns is None:
        return None
    wanted = list(dict.fromkeys([*columns, KEY_COLUMN[kind]]))
    if verify and is_hashed(kind):
        checked = (*HASHED_COLUMNS[kind], "content_hash")
        if signed:
            checked += (*SIGNED_LABELS[kind], "signature")
        wanted += [c for c in checked if c not in wanted]
    return wanted


def _scan(fs: pafs.FileSystem, kind: str, paths: list[str], filter: ds.Expression | None,
          columns: list[str] | None) -> pa.Table:
    import pyarrow.dataset as ds
    names = (columns or schema_for(kind).names) + [FILENAME]
    dataset = ds.dataset(paths, schema=schema_for(kind), format=_parquet_format(),
                         filesystem=fs)
    return dataset.to_table(columns=names, filter=filter)


def _scan_isolating(fs: pafs.FileSystem, kind: str, files: list[StoreFile],
                    filter: ds.Expression | None, columns: list[str] | None,
                    issues: list[Issue]) -> list[pa.Table]:
    """Scan all files at once; if that fails, once per file, reporting the bad ones."""
    if not files:
        return []
    try:
        return [_scan(fs, kind, [f.path for f in files], filter, columns)]
    except _DECODE_ERRORS:
        pass   # some file is bad: find which, keep the others
    tables = []
    for file in files:
        try:
            tables.append(_scan(fs, kind, [file.path], filter, columns))
        except FileNotFoundError as err:
            raise VanishedFileError(file.path) from err
        except _DECODE_ERRORS as err:
            issues.append(Issue(file.path, f"unreadable: {type(err).__name__}: {err}"))
    return tables


def _read_old(fs: pafs.FileSystem, kind: str, file: StoreFile, filter: ds.Expression | None,
              columns: list[str] | None, migrations: Migrations,
              issues: list[Issue]) -> pa.Table | None:
    try:
        table = read_file(fs, kind, file, migrations)
    except FileNotFoundError as err:
        raise VanishedFileError(file.path) from err
    except _DECODE_ERRORS as err:
        issues.append(Issue(file.path, f"unreadable: {type(err).__name__}: {err}"))
        return None
    if filter is not None:
        table = table.filter(filter)
    if columns is not None:
        table = table.select(columns)
    return table.append_column(FILENAME, pa.array([file.path] * table.num_rows, pa.string()))


def check_versions(kind: str, files: list[StoreFile], migrations: Migrations) -> None:
    """Refuse, before reading anything, a file whose version cannot be brought current."""
    for file in files:
        require_readable(kind, file.version, migrations, file.path)


def drop_tampered(kind: str, table: pa.Table, issues: list[Issue]) -> pa.Table:
    """``table`` without the rows whose content hash fails, each one reported."""
    bad = bad_rows(kind, table)
    if not bad:
        return table
    keys = table.column(KEY_COLUMN[kind]).to_pylist()
    paths = table.column(FILENAME).to_pylist()
    for i in bad:
        issues.append(Issue(paths[i], "content hash mismatch (tampered or corrupt row)",
                            keys[i]))
    mask = np.ones(table.num_rows, dtype=bool)
    mask[bad] = False
    return table.filter(pa.array(mask))


def drop_unsigned(kind: str, table: pa.Table, key: StoreKey, issues: list[Issue]) -> pa.Table:
    """``table`` without the rows whose signature does not verify with ``key`` (missing, or
    made by another key, or over edited labels), each one reported with its file and key."""
    bad = bad_signatures(kind, table, key)
    if not bad:
        return table
    keys = table.column(KEY_COLUMN[kind]).to_pylist()
    paths = table.column(FILENAME).to_pylist()
    issues += [Issue(paths[i], why, keys[i]) for i, why in bad]
    mask = np.ones(table.num_rows, dtype=bool)
    mask[[i for i, _ in bad]] = False
    return table.filter(pa.array(mask))


def _drop_incomplete(kind: str, table: pa.Table, issues: list[Issue]) -> pa.Table:
    """``table`` less rows with nulls in required columns, their files reported.

    A scan fills columns a file lacks with nulls; such a file is not of this kind (another
    kind's file put in this dataset), and its rows must not pass for records.
    """
    schema = schema_for(kind)
    required = [f.name for f in schema if not f.nullable and f.name in table.column_names]
    if not any(table.column(name).null_count for name in required):
        return table
    import pyarrow.compute as pc
    complete = functools.reduce(pc.and_, [pc.is_valid(table[n]) for n in required])
    paths = pc.unique(table.filter(pc.invert(complete))[FILENAME]).to_pylist()
    issues += [Issue(path, f"rows missing required columns: not a {kind} file")
               for path in paths]
    return table.filter(complete)


def dedup(table: pa.Table, key: str) -> pa.Table:
    """One row per ``key``: the first in table order (file order, then row order).

    Example:
        >>> dedup(pa.table({"k": ["a", "b", "a"], "v": [1, 2, 3]}), "k")["v"].to_pylist()
        [1, 2]
    """
    if table.num_rows < 2:
        return table
    import pyarrow.compute as pc
    keys = table.column(key)
    if pc.count_distinct(keys).as_py() == table.num_rows:
        return table
    index = pa.table({"k": keys, "i": pa.array(np.arange(table.num_rows))})
    first = index.group_by("k", use_threads=False).aggregate([("i", "min")])["i_min"]
    # Keep table order: the surviving row indices, sorted.
    return table.take(pc.take(first, pc.sort_indices(first)))


def _check_request(kind: str, filter: ds.Expression | None,
                   columns: list[str] | None) -> None:
    """Raise on a bad column or filter before scanning, where the error would otherwise be
    taken for a corrupt file."""
    schema = schema_for(kind)
    unknown = [c for c in columns or () if c not in schema.names]
    if unknown:
        raise KeyError(f"{kind} has no columns {unknown}; it has {schema.names}")
    if filter is not None:
        schema.empty_table().filter(filter)     # ArrowInvalid/TypeError names the problem


def read_rows(fs: pafs.FileSystem, kind: str, files: list[StoreFile],
              migrations: Migrations, filter: ds.Expression | None = None,
              columns: list[str] | None = None, verify: bool = True,
              deduplicate: bool = True, key: StoreKey | None = None) -> ReadResult:
    """Rows of ``kind`` from ``files`` matching ``filter``; see the module docstring.

    With ``verify`` and a ``key``, rows of the hashed kinds must also carry a signature
    that verifies with it. The result keeps a ``__filename`` column naming each row's file
    (callers drop it). Raises ``VanishedFileError`` if a file was deleted after it was
    listed.
    """
    check_versions(kind, files, migrations)
    _check_request(kind, filter, columns)
    issues: list[Issue] = []
    signed = verify and key is not None and is_hashed(kind)
    read_cols = needed_columns(kind, columns, verify, signed)
    current = [f for f in files if f.version == SCHEMA_VERSION]
    tables = _scan_isolating(fs, kind, current, filter, read_cols, issues)
    for file in files:
        if file.version != SCHEMA_VERSION:
            old = _read_old(fs, kind, file, filter, read_cols, migrations, issues)
            if old is not None:
                tables.append(old)
    schema = _result_schema(kind, read_cols)
    tables = [_drop_incomplete(kind, t, issues).cast(schema) for t in tables]
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    if verify and is_hashed(kind):
        table = drop_tampered(kind, table, issues)
    if signed:
        table = drop_unsigned(kind, table, key, issues)
    if deduplicate:
        table = dedup(table, KEY_COLUMN[kind])
    return ReadResult(table=table, issues=issues)


def read_dicts(fs: pafs.FileSystem, kind: str, files: list[StoreFile],
               migrations: Migrations, keep: Callable[[dict[str, Any]], bool],
               columns: list[str] | None = None, verify: bool = True,
               key: StoreKey | None = None) -> tuple[list[dict[str, Any]], list[Issue]]:
    """The rows ``keep`` accepts, as dicts: ``read_rows``' checks (versions, undecodable
    files, rows of another kind, content hashes, with ``key`` signatures, duplicates) done
    row by row, with ``pyarrow.parquet`` alone. For the few rows a serving process reads (a
    model's module, its kernels' binaries): no dataset scan, so no ``pyarrow.dataset`` or
    ``compute`` import. Raises ``VanishedFileError`` if a file was deleted after it was
    listed.
    """
    check_versions(kind, files, migrations)
    signed = verify and key is not None and is_hashed(kind)
    read_cols = needed_columns(kind, columns, verify, signed)
    required = [f.name for f in schema_for(kind) if not f.nullable]
    name, issues, seen, out = KEY_COLUMN[kind], [], set(), []
    for file in files:
        try:
            if file.version == SCHEMA_VERSION:
                table = pq.ParquetFile(file.path, filesystem=fs).read(columns=read_cols)
            else:   # a migration works on whole rows (conform requires every column)
                table = migrate(kind, pq.ParquetFile(file.path, filesystem=fs).read(),
                                file.version, migrations, file.path)
        except FileNotFoundError as err:
            raise VanishedFileError(file.path) from err
        except _DECODE_ERRORS as err:
            issues.append(Issue(file.path, f"unreadable: {type(err).__name__}: {err}"))
            continue
        for row in _pylist(table):
            if row.get(name) in seen or not keep(row):
                continue
            if any(row.get(c, "") is None for c in required):
                issues.append(Issue(file.path, f"rows missing required columns: not a {kind} file"))
                continue
            if verify and is_hashed(kind) and hash_values(
                    [row[c] for c in HASHED_COLUMNS[kind]]) != row["content_hash"]:
                issues.append(Issue(file.path, "content hash mismatch (tampered or corrupt row)",
                                    row[name]))
                continue
            why = row_signature_problem(kind, row, key) if signed else None
            if why:     # dropped before it can shadow a signed duplicate, as in read_rows
                issues.append(Issue(file.path, why, row[name]))
                continue
            seen.add(row[name])
            out.append({c: row[c] for c in columns} if columns is not None else row)
    return out, issues


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _pylist(table: pa.Table) -> list[dict[str, Any]]:
    """``table.to_pylist()``, with timestamps converted here: pyarrow imports pandas to
    convert one when pandas is installed (~0.3 s, on a serving process's load path)."""
    stamps = [f.name for f in table.schema if pa.types.is_timestamp(f.type)]
    for column in stamps:
        unit = table.schema.field(column).type.unit
        index = table.schema.get_field_index(column)
        raw = pa.chunked_array([c.view(pa.int64()) for c in table.column(column).chunks],
                               pa.int64())    # a view, not a cast: cast imports compute
        table = table.set_column(index, column, raw)
    rows = table.to_pylist()
    for row in rows:
        for column in stamps:
            if row[column] is not None:
                row[column] = _EPOCH + timedelta(microseconds=_micros(row[column], unit))
    return rows


def _micros(value: int, unit: str) -> float:
    return value * {"s": 1e6, "ms": 1e3, "us": 1, "ns": 1e-3}[unit]


def _result_schema(kind: str, columns: list[str] | None) -> pa.Schema:
    schema = schema_for(kind)
    fields = [schema.field(c) for c in (columns or schema.names)]
    return pa.schema(fields + [pa.field(FILENAME, pa.string())])


def report(issues: list[Issue], strict: bool) -> None:
    """Warn about each issue (one warning per issue), or raise on the first if ``strict``."""
    for issue in issues:
        if strict:
            raise CorruptStoreError(str(issue))
        category = TamperedRowWarning if issue.key else CorruptFileWarning
        warnings.warn(str(issue), category, stacklevel=3)
