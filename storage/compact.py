"""``kiln store compact``: merge many small files into few large, sorted ones.

The pipeline writes one small file per task; a deployment wants one key lookup to open one
file and read one row group. Compaction reads a batch of small files, migrates older
versions, drops duplicate keys, sorts by key and writes the rows as new ``compact-`` files
(each atomically, row groups sized so that a key lookup reads about ``row_group_bytes``),
and only then deletes the inputs. No lock is taken: a reader that lists files between the
two steps sees every row twice, which dedup on read collapses, so readers neither block nor
miss rows. Two concurrent compactions at worst leave duplicates for the next one.

A file that does not decode or holds a row whose hash fails is left where it is, untouched,
and reported: compaction never launders a corrupt row into a fresh file with a valid name.

Example:
    >>> import tempfile
    >>> from storage import Store
    >>> report = compact_store(Store(tempfile.mkdtemp()), ["trials"])
    >>> report.kinds["trials"].files_in
    0
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

import pyarrow as pa
import pyarrow.compute as pc

from .files import (StoreFile, key_range, new_file_name, remove_files, temp_files,
                    write_atomic)
from .reader import FILENAME, Issue, VanishedFileError, dedup, read_rows
from .schema import (KEY_COLUMN, KINDS, SCHEMA_VERSION, StoreVersionError, conform,
                     require_readable)

if TYPE_CHECKING:
    from .store import Store

MiB = 1 << 20

# Kinds queried by kernel more than by their own key are sorted by kernel first, so the
# row-group statistics on kernel_key prune "all trials of kernel K" scans.
SORT_COLUMNS = {"trials": ("kernel_key", "trial_key"), "binaries": ("kernel_key", "binary_key")}


@dataclass(frozen=True)
class CompactOptions:
    """Knobs of one compaction; the defaults suit both 20 KB module rows and 200 B trials."""
    full: bool = False                  # rewrite every file, not only small ones
    small_file_bytes: int = 64 * MiB    # files under this size are merged
    target_file_bytes: int = 256 * MiB  # in-memory size of one output file (before zstd)
    row_group_bytes: int = 1 * MiB      # in-memory size of one row group: a lookup's read
    batch_bytes: int = 512 * MiB        # on-disk input bytes merged in memory at once
    stale_temp_s: float = 3600.0        # temp files untouched this long are from dead writers


@dataclass
class KindCompaction:
    kind: str
    files_in: int = 0
    files_out: int = 0
    rows_in: int = 0
    rows_out: int = 0
    temp_removed: int = 0
    skipped: list[Issue] = field(default_factory=list)

    @property
    def duplicates_removed(self) -> int:
        return self.rows_in - self.rows_out


@dataclass
class CompactReport:
    kinds: dict[str, KindCompaction] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every file asked for was merged (skipped corrupt files make it False)."""
        return not any(k.skipped for k in self.kinds.values())


def _candidates(files: list[StoreFile], options: CompactOptions) -> list[StoreFile]:
    """Files to merge: small or older-version ones (all with ``full``); [] if nothing gains."""
    chosen = [f for f in files if options.full or f.size < options.small_file_bytes
              or f.version != SCHEMA_VERSION]
    if (not options.full and len(chosen) == 1 and chosen[0].role == "compact"
            and chosen[0].version == SCHEMA_VERSION):
        return []   # already one merged, sorted, current file
    return chosen


def _batches(files: list[StoreFile], limit: int) -> list[list[StoreFile]]:
    batches: list[list[StoreFile]] = [[]]
    size = 0
    for file in files:
        if batches[-1] and size + file.size > limit:
            batches.append([])
            size = 0
        batches[-1].append(file)
        size += file.size
    return [b for b in batches if b]


def _readable(store: "Store", kind: str, batch: list[StoreFile],
              report: KindCompaction) -> list[StoreFile]:
    """``batch`` less files of versions that cannot be migrated (reported as skipped)."""
    readable = []
    for file in batch:
        try:
            require_readable(kind, file.version, store.migrations, file.path)
            readable.append(file)
        except StoreVersionError as err:
            report.skipped.append(Issue(file.path, str(err).removeprefix(f"{file.path}: ")))
    return readable


def _read_intact(store: "Store", kind: str, batch: list[StoreFile],
                 report: KindCompaction) -> tuple[pa.Table | None, list[StoreFile]]:
    """(rows of the intact files of ``batch``, those files); (None, []) if a concurrent
    compaction took a file meanwhile (the next run picks up whatever is left)."""
    files = _readable(store, kind, batch, report)
    try:
        result = read_rows(store.fs, kind, files, store.migrations, deduplicate=False)
    except VanishedFileError:
        return None, []
    # A file with any bad row stays whole where it is, for verify to report and a human to
    # judge; only the files read cleanly are merged (and later deleted).
    bad = {issue.path for issue in result.issues}
    report.skipped += result.issues
    table = result.table
    if bad:
        table = table.filter(pc.invert(pc.is_in(table[FILENAME], pa.array(sorted(bad)))))
    return table.drop_columns([FILENAME]), [f for f in files if f.path not in bad]


def _split(table: pa.Table, options: CompactOptions) -> tuple[list[pa.Table], int]:
    """(output tables, row group size) for a merged, sorted table."""
    row_bytes = max(1, table.nbytes // max(1, table.num_rows))
    group = max(16, min(1 << 20, options.row_group_bytes // row_bytes))
    per_file = max(group, options.target_file_bytes // row_bytes // group * group)
    return [table.slice(i, per_file) for i in range(0, table.num_rows, per_file)], group


def _merge_batch(store: "Store", kind: str, batch: list[StoreFile], options: CompactOptions,
                 report: KindCompaction) -> tuple[list[str], list[StoreFile]]:
    """Write the merged rows of ``batch``; returns (new paths, input files now redundant)."""
    merged, merged_files = _read_intact(store, kind, batch, report)
    if merged is None or not merged_files:
        return [], []
    report.rows_in += merged.num_rows
    sort = SORT_COLUMNS.get(kind, (KEY_COLUMN[kind],))
    merged = dedup(merged, KEY_COLUMN[kind]).sort_by([(c, "ascending") for c in sort])
    merged = conform(kind, merged)      # exact schema, footer metadata included
    report.rows_out += merged.num_rows
    parts, group = _split(merged, options)
    key = KEY_COLUMN[kind]
    paths = [write_atomic(store.fs, store.dataset_dir(kind),
                          new_file_name("compact", SCHEMA_VERSION, key_range(part, key)), part,
                          row_group_size=group, durable=store.durable) for part in parts]
    return paths, merged_files


def compact_kind(store: "Store", kind: str, options: CompactOptions) -> KindCompaction:
    """Compact one dataset; see the module docstring."""
    report = KindCompaction(kind)
    candidates = _candidates(store.files(kind), options)
    for batch in _batches(candidates, options.batch_bytes):
        written, done = _merge_batch(store, kind, batch, options, report)
        # Delete only after every output of the batch is durably in place.
        remove_files(store.fs, [f.path for f in done])
        report.files_in += len(done)
        report.files_out += len(written)
    stale = temp_files(store.fs, store.dataset_dir(kind), older_than_s=options.stale_temp_s)
    report.temp_removed = remove_files(store.fs, stale)
    return report


def compact_store(store: "Store", kinds: Iterable[str] = KINDS, **options: object) -> CompactReport:
    """Compact each of ``kinds``; ``options`` are ``CompactOptions`` fields."""
    opts = CompactOptions(**options)  # type: ignore[arg-type]
    return CompactReport({kind: compact_kind(store, kind, opts) for kind in kinds})
