"""Files of a store: where they live, how they are named, written atomically and listed.

Every writer writes its own files, named
``part-v3-<utc time>-<host>-<pid>-<uuid>-k<lo>-<hi>.parquet``, where ``lo``/``hi`` are the
hex UTF-8 bytes of the first ``KEY_PREFIX`` characters of the smallest and largest key in
the file. A key lookup opens only the files whose name range can hold the key: one module
among ten thousand one-module files costs a directory listing, not ten thousand footer reads.

A file is written under the temporary name ``.tmp-<final name>`` in the same directory and
renamed when complete (``os.replace`` locally, after an fsync; the filesystem's ``move``
elsewhere), so a reader, which lists only final names, never sees a partial file and two
writers never pick the same name. A killed writer leaves at most a ``.tmp-`` file, which
readers ignore and compaction removes once it is old. (On object stores ``move`` is a copy
and a delete; the final object still appears whole, since a put is atomic there.)

Example:
    >>> name = new_file_name("part", 1, ("0a3f9c", "0b77e1"))
    >>> parsed = parse_name(name)
    >>> parsed.version, parsed.may_contain("0a99"), parsed.may_contain("0c00")
    (1, True, False)
"""
from __future__ import annotations

import bisect
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .schema import PAYLOAD_COLUMNS

TEMP_PREFIX = ".tmp-"
_NAME_RE = re.compile(r"^(?P<role>part|compact)-v(?P<version>\d+)-(?P<rest>.+?)"
                      r"(?:-k(?P<lo>[0-9a-f]+)-(?P<hi>[0-9a-f]+))?\.parquet$")
# Characters of the smallest/largest key kept in a file name. Truncating keeps order (a key
# between lo and hi has a prefix between theirs), so pruning by prefix never skips a match.
KEY_PREFIX = 8
_HOST_RE = re.compile(r"[^A-Za-z0-9_.]+")

# zstd keeps source text and trial columns small; page checksums let a reader detect a
# flipped byte in any page (a cubin included) before it decodes garbage.
WRITE_OPTIONS = dict(compression="zstd", write_page_checksum=True)


def _column_options(table: pa.Table) -> dict[str, list[str]]:
    """Statistics and dictionaries for the small columns only (see PAYLOAD_COLUMNS)."""
    indexed = [name for name in table.column_names if name not in PAYLOAD_COLUMNS]
    return {"write_statistics": indexed, "use_dictionary": indexed}


def _may_contain(lo: bytes | None, hi: bytes | None, key: str) -> bool:
    if lo is None or hi is None:
        return True         # no range in the name: the file must be opened to know
    prefix = key[:KEY_PREFIX].encode()
    return lo <= prefix <= hi


@dataclass(frozen=True)
class FileName:
    role: str       # "part" (one writer's batch) or "compact" (merged by compaction)
    version: int
    key_lo: bytes | None = None
    key_hi: bytes | None = None

    def may_contain(self, key: str) -> bool:
        return _may_contain(self.key_lo, self.key_hi, key)


@dataclass(frozen=True)
class StoreFile:
    """One finished data file of a dataset."""
    kind: str
    path: str
    size: int
    role: str
    version: int
    mtime: float
    key_lo: bytes | None = None
    key_hi: bytes | None = None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def may_contain(self, key: str) -> bool:
        """False only if the key range in the file's name excludes ``key``."""
        return _may_contain(self.key_lo, self.key_hi, key)


def resolve_root(root: str | os.PathLike,
                 filesystem: pafs.FileSystem | None = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a local path, a URI pyarrow knows (``s3://``, ``file://``...)
    or a path inside a given filesystem."""
    root = os.fspath(root)
    if filesystem is not None:
        return filesystem, root.rstrip("/") or "/"
    if "://" in root:
        fs, path = pafs.FileSystem.from_uri(root)
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(root)


def is_local(fs: pafs.FileSystem) -> bool:
    return isinstance(fs, pafs.LocalFileSystem)


def new_file_name(role: str, version: int, key_range: tuple[str, str] | None = None) -> str:
    """A name no other writer, process or machine will pick (time, host, pid and a uuid),
    carrying the file's key range (smallest, largest key) when given."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    host = _HOST_RE.sub("_", socket.gethostname())[:40] or "host"
    keys = ""
    if key_range is not None:
        lo, hi = (k[:KEY_PREFIX].encode().hex() for k in key_range)
        keys = f"-k{lo}-{hi}"
    return (f"{role}-v{version}-{stamp}-{host}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
            f"{keys}.parquet")


def parse_name(name: str) -> FileName | None:
    """Role, schema version and key range from a data file's name; None for anything else."""
    match = _NAME_RE.match(name)
    if match is None:
        return None
    lo, hi = match["lo"], match["hi"]
    return FileName(role=match["role"], version=int(match["version"]),
                    key_lo=bytes.fromhex(lo) if lo and len(lo) % 2 == 0 else None,
                    key_hi=bytes.fromhex(hi) if hi and len(hi) % 2 == 0 else None)


def files_for_keys(files: list[StoreFile], keys: list[str]) -> list[StoreFile]:
    """The files whose name's key range may hold at least one of ``keys``.

    Example:
        >>> f = StoreFile("trials", "/s/a", 1, "part", 1, 0.0, b"aa", b"ac")
        >>> [len(files_for_keys([f], keys)) for keys in (["ab9"], ["b", "a"], [])]
        [1, 0, 0]
    """
    prefixes = sorted({key[:KEY_PREFIX].encode() for key in keys})

    def hit(file: StoreFile) -> bool:
        if file.key_lo is None or file.key_hi is None:
            return bool(prefixes)
        i = bisect.bisect_left(prefixes, file.key_lo)
        return i < len(prefixes) and prefixes[i] <= file.key_hi

    return [f for f in files if hit(f)]


def key_range(table: pa.Table, column: str) -> tuple[str, str] | None:
    """(smallest, largest) value of ``column``, the range a file's name records."""
    if table.num_rows == 0:
        return None
    import pyarrow.compute as pc   # writers only: a serving read never needs it
    bounds = pc.min_max(table.column(column)).as_py()
    return bounds["min"], bounds["max"]


def _fsync_dir(directory: str) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(fs: pafs.FileSystem, directory: str, name: str, table: pa.Table,
                 row_group_size: int | None = None, durable: bool = True) -> str:
    """Write ``table`` as ``directory/name`` through a temporary name; returns the path.

    On a local disk the data is fsynced before the rename (``durable``), so a finished
    record survives a crash of the machine, not only of the process.
    """
    if b"kiln.kind" not in (table.schema.metadata or {}):
        # A file without its kind and version in the footer could never be verified.
        raise ValueError("refusing to write a table without kiln schema metadata")
    fs.create_dir(directory, recursive=True)
    tmp, final = f"{directory}/{TEMP_PREFIX}{name}", f"{directory}/{name}"
    try:
        if is_local(fs):
            with open(tmp, "wb") as sink:
                pq.write_table(table, sink, row_group_size=row_group_size, **WRITE_OPTIONS,
                               **_column_options(table))
                if durable:
                    sink.flush()
                    os.fsync(sink.fileno())
            os.replace(tmp, final)
            if durable:
                _fsync_dir(directory)
        else:
            with fs.open_output_stream(tmp) as sink:
                pq.write_table(table, sink, row_group_size=row_group_size, **WRITE_OPTIONS,
                               **_column_options(table))
            fs.move(tmp, final)
    except BaseException:
        _remove_quietly(fs, tmp)
        raise
    return final


def _remove_quietly(fs: pafs.FileSystem, path: str) -> None:
    try:
        fs.delete_file(path)
    except (FileNotFoundError, OSError):
        pass


def remove_files(fs: pafs.FileSystem, paths: list[str]) -> int:
    """Delete ``paths``, ignoring ones already gone (a concurrent compaction took them)."""
    removed = 0
    for path in paths:
        try:
            fs.delete_file(path)
            removed += 1
        except FileNotFoundError:
            pass
    return removed


_LIST_TRIES = 20


def _infos(fs: pafs.FileSystem, directory: str) -> list[pafs.FileInfo]:
    selector = pafs.FileSelector(directory, allow_not_found=True, recursive=False)
    for _ in range(_LIST_TRIES - 1):
        try:
            infos = fs.get_file_info(selector)
            break
        except FileNotFoundError:
            # A file deleted between readdir and stat (a compaction at work): list again.
            continue
    else:
        infos = fs.get_file_info(selector)
    return [info for info in infos if info.type == pafs.FileType.File]


def _mtime(info: pafs.FileInfo) -> float:
    return info.mtime.timestamp() if info.mtime is not None else 0.0


def list_files(fs: pafs.FileSystem, directory: str, kind: str) -> tuple[list[StoreFile],
                                                                         list[str]]:
    """(finished data files sorted by name, other names found) in one dataset directory.

    Temporary files are skipped silently; any other unrecognized file is returned in the
    second list so that ``verify`` can report it.

    A directory listing is not a snapshot: one that runs while a compaction renames its
    output in and deletes its inputs can miss both. So the directory is listed until two
    listings in a row agree; the second then started after any such change had finished,
    and sees the compaction's output (which lives far longer than a listing takes).
    """
    infos = _infos(fs, directory)
    for _ in range(_LIST_TRIES):
        again = _infos(fs, directory)
        if _names(again) == _names(infos):
            break
        infos = again
    found, other = [], []
    for info in infos:
        if info.base_name.startswith(TEMP_PREFIX):
            continue
        parsed = parse_name(info.base_name)
        if parsed is None:
            other.append(info.path)
            continue
        found.append(StoreFile(kind=kind, path=info.path, size=info.size, role=parsed.role,
                               version=parsed.version, mtime=_mtime(info),
                               key_lo=parsed.key_lo, key_hi=parsed.key_hi))
    found.sort(key=lambda f: f.name)
    return found, sorted(other)


def _names(infos: list[pafs.FileInfo]) -> set[str]:
    return {info.base_name for info in infos if not info.base_name.startswith(TEMP_PREFIX)}


def temp_files(fs: pafs.FileSystem, directory: str, older_than_s: float = 0.0,
               now: float | None = None) -> list[str]:
    """Temporary files left in ``directory`` whose last change is over ``older_than_s`` ago.

    A temp file that is still changing belongs to a live writer; only old ones are litter.
    """
    now = time.time() if now is None else now
    return sorted(info.path for info in _infos(fs, directory)
                  if info.base_name.startswith(TEMP_PREFIX)
                  and now - _mtime(info) >= older_than_s)
