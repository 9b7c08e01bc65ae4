"""The Store: kiln's records as Parquet datasets under one root, local or any pyarrow URI.

``root/<kind>/`` holds one dataset per record kind (graphs, modules, kernels, binaries,
trials, failures). Writers only ever add whole files (see ``storage.files``); readers scan
whatever finished files exist, skip corrupt ones with a warning, drop rows whose content hash
fails, and collapse duplicate keys. With a signing key (``storage.signing``), the rows that
hold code or binaries are signed when written and used only where their signature verifies.
The store also implements the compiler's ``ArtifactCache`` protocol, so
``compile_module(..., cache=store)`` reads and fills it.

Example:
    >>> import tempfile, pyarrow.compute as pc
    >>> store = Store(tempfile.mkdtemp())
    >>> trial = TrialRecord.timed(kernel_key="k1", sizes=[4096], config={"XBLOCK": 512},
    ...     device_name="NVIDIA H100 80GB HBM3", arch="sm_90", driver="550.54",
    ...     triton_version="3.9.0", torch_version="2.13.0", times_ms=[0.02, 0.021])
    >>> path = store.write("trials", [trial, trial])     # a duplicate is harmless
    >>> store.query("trials", pc.field("arch") == "sm_90").num_rows
    1
    >>> store.has("trials", trial.trial_key)
    True
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .files import (StoreFile, files_for_keys, key_range, list_files, new_file_name, resolve_root,
                    temp_files, write_atomic)
from .integrity import is_hashed, with_hashes
from .reader import (FILENAME, Issue, ReadResult, VanishedFileError, read_dicts, read_rows,
                     report)
from .records import Record, TrialRecord, records_to_table  # noqa: F401 (doctest)
from .schema import (DEFAULT_MIGRATIONS, KEY_COLUMN, KINDS, SCHEMA_VERSION, Migrations,
                     StoreVersionError, check_kind, conform, require_readable)
from .signing import (KeyFrom, Marker, StoreKey, StoreKeyError, read_marker, refusal,
                      resolve_key, with_signatures, write_marker)

if TYPE_CHECKING:
    import pyarrow.dataset as ds

    from compiler.artifact import CompiledArtifact

    from .compact import CompactReport
    from .repair import RepairReport
    from .verify import VerifyReport


# Reads retried when compaction deletes a file between listing and reading it.
_READ_TRIES = 20


class StoreMissError(KeyError):
    """No (intact) record under the asked key; the message names key and store."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "missing"


@dataclass
class KindStats:
    """Numbers for one dataset; ``rows`` counts duplicates, ``unique_keys`` does not."""
    kind: str
    files: int = 0
    bytes: int = 0
    rows: int = 0
    unique_keys: int = 0
    unreadable_files: int = 0
    temp_files: int = 0
    versions: dict[int, int] = field(default_factory=dict)   # schema version -> files


@dataclass
class StoreStats:
    root: str
    kinds: dict[str, KindStats]

    @property
    def total_bytes(self) -> int:
        return sum(k.bytes for k in self.kinds.values())

    @property
    def bytes_per_module(self) -> float | None:
        """Bytes of module and kernel rows per distinct module: what a deployment carries."""
        modules = self.kinds["modules"].unique_keys
        if not modules:
            return None
        return (self.kinds["modules"].bytes + self.kinds["kernels"].bytes) / modules


class Store:
    """kiln's record store rooted at ``root`` (a local path or a URI such as ``s3://b/p``).

    ``filesystem`` gives an explicit pyarrow filesystem (``root`` is then a path inside it);
    ``migrations`` upgrades older schema versions (``{kind: {N: fn}}``); ``strict`` raises
    ``CorruptStoreError`` where the default warns and skips (a corrupt file, a tampered or
    unsigned row); ``durable`` fsyncs local files before they are renamed into place.

    ``key`` signs what is written and is required of what is read (``storage.signing``):
    bytes, a ``StoreKey``, None for none, or by default kiln's configured key
    (``KILN_STORE_KEY_FILE`` / ``KILN_STORE_KEY``). ``require_signatures=False`` reads
    without checking signatures although a key is given (``export`` signing an unsigned
    store's rows); by default they are required whenever there is a key.
    """

    def __init__(self, root: str | os.PathLike = "kiln-store", *,
                 filesystem: pafs.FileSystem | None = None,
                 migrations: Migrations = DEFAULT_MIGRATIONS, strict: bool = False,
                 durable: bool = True, key: bytes | StoreKey | KeyFrom | None = KeyFrom.CONFIG,
                 require_signatures: bool | None = None) -> None:
        self.fs, self.root = resolve_root(root, filesystem)
        self.migrations = migrations
        self.strict = strict
        self.durable = durable
        self.key = resolve_key(key)
        self.require_signatures = (self.key is not None if require_signatures is None
                                   else require_signatures)
        self._marker: Marker | None = None     # once seen, a store stays signed

    def __repr__(self) -> str:
        return f"Store({self.root!r})"

    # --- files -----------------------------------------------------------------------------

    def dataset_dir(self, kind: str) -> str:
        return f"{self.root}/{check_kind(kind)}"

    def files(self, kind: str) -> list[StoreFile]:
        """Finished data files of ``kind``, in name order (temporary files excluded)."""
        return list_files(self.fs, self.dataset_dir(kind), kind)[0]

    def exists(self) -> bool:
        """Whether the root directory exists (a store with no records yet may not)."""
        return self.fs.get_file_info(self.root).type == pafs.FileType.Directory

    # --- signing ---------------------------------------------------------------------------

    def marker(self) -> Marker | None:
        """The signing marker at the root (the key fingerprint a signed store was written
        with), or None for an unsigned store."""
        if self._marker is None:
            self._marker = read_marker(self.fs, self.root)
        return self._marker

    def checking_key(self, kind: str) -> StoreKey | None:
        """The key ``kind``'s rows must be signed with when read, or None (not a hashed
        kind, or an unsigned store read without a key). Raises ``StoreKeyError`` for a
        signed store read without a key: its rows are never used unchecked."""
        if not is_hashed(kind):
            return None
        if self.key is not None:
            return self.key if self.require_signatures else None
        marker = self.marker()
        if marker is not None:
            raise StoreKeyError(refusal(self.root, marker))
        return None

    def signing_problem(self) -> str | None:
        """Why readers of this store would refuse what this ``Store`` writes (the store is
        signed, and this has no key or another key), or None. ``kiln run`` asks before any
        task runs; every write checks it again."""
        marker = read_marker(self.fs, self.root)   # afresh: another writer may have signed
        if marker is None:
            return None
        if self.key is None:
            return (f"{refusal(self.root, marker)}: rows written without the key would be "
                    f"refused by every reader")
        if marker.fingerprint != self.key.fingerprint:
            return (f"store {self.root} is signed with key {marker.fingerprint}, not with "
                    f"the configured key {self.key.fingerprint}")
        return None

    def _signed(self, kind: str, table: pa.Table) -> pa.Table:
        """``table`` signed with the store's key (the marker written on the first signed
        write); a keyless or wrong-key write to a signed store is a ``StoreKeyError``."""
        if not is_hashed(kind):
            return table
        if self.key is not None and read_marker(self.fs, self.root) is None:
            write_marker(self.fs, self.root, self.key)     # the first signed write
        problem = self.signing_problem()
        if problem is not None:
            raise StoreKeyError(problem)
        return table if self.key is None else with_signatures(kind, table, self.key)

    # --- writing ---------------------------------------------------------------------------

    def write(self, kind: str, data: pa.Table | pa.RecordBatch | Iterable[Record]) -> str | None:
        """Write one batch of ``kind`` rows as one new file; returns its path (None if empty).

        ``data`` is a list of records (``TrialRecord``...) or an Arrow table/batch with the
        kind's columns (``schema_version``, ``content_hash`` and ``signature`` may be left
        out: they are filled in; a given hash is checked, a given signature replaced when the
        store has a key and kept as it is otherwise).
        """
        table = self._prepare(kind, data)
        if table.num_rows == 0:
            return None
        table = self._signed(kind, table)
        name = new_file_name("part", SCHEMA_VERSION, key_range(table, KEY_COLUMN[kind]))
        return write_atomic(self.fs, self.dataset_dir(kind), name, table, durable=self.durable)

    @staticmethod
    def _prepare(kind: str, data: pa.Table | pa.RecordBatch | Iterable[Record]) -> pa.Table:
        check_kind(kind)
        if isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        elif not isinstance(data, pa.Table):
            data = records_to_table(kind, data)
        return conform(kind, with_hashes(kind, data))

    # --- reading ---------------------------------------------------------------------------

    def query(self, kind: str, filter: ds.Expression | None = None,
              columns: list[str] | None = None, *, verify: bool = True,
              dedup: bool = True) -> pa.Table:
        """Rows of ``kind`` matching ``filter`` (a ``pyarrow.dataset`` expression).

        ``verify`` checks content hashes (kinds holding code or binaries) and drops failing
        rows with a warning; ``dedup`` keeps one row per key.

        Example: ``store.query("trials", (pc.field("status") == "ok") &
        (pc.field("arch") == "sm_90"), columns=["config_json", "median_ms"])``
        """
        return self._query(kind, filter, columns, verify, dedup, keys=None)

    def query_with_refusals(self, kind: str, filter: ds.Expression | None = None,
                            columns: list[str] | None = None) -> tuple[pa.Table, list[Issue]]:
        """``query``, and the rows it refused (tampered, unsigned...) as ``Issue``s naming
        file and key, so that a caller can say what it refused, not only that it missed."""
        return self._query_issues(kind, filter, columns, True, True, None)

    def _query(self, kind: str, filter: ds.Expression | None, columns: list[str] | None,
               verify: bool, dedup: bool, keys: list[str] | None) -> pa.Table:
        return self._query_issues(kind, filter, columns, verify, dedup, keys)[0]

    def _query_issues(self, kind: str, filter: ds.Expression | None,
                      columns: list[str] | None, verify: bool, dedup: bool,
                      keys: list[str] | None) -> tuple[pa.Table, list[Issue]]:
        result = self._read(kind, filter, columns, verify, dedup, keys)
        report(result.issues, self.strict)
        table = result.table.drop_columns([FILENAME])
        return (table.select(columns) if columns is not None else table), result.issues

    def _read(self, kind: str, filter: ds.Expression | None, columns: list[str] | None,
              verify: bool, dedup: bool, keys: list[str] | None = None) -> ReadResult:
        """``read_rows`` over a fresh listing, listed again if a file vanished meanwhile.

        With ``keys``, only files whose name range may hold one of them are read. A listed
        file can vanish only because a compaction merged it, and a compaction writes its
        output before deleting its inputs: the next listing has those rows.
        """
        key = self.checking_key(kind) if verify else None
        for attempt in range(_READ_TRIES):
            files = self.files(kind)
            if keys is not None:
                files = files_for_keys(files, keys)
            try:
                return read_rows(self.fs, kind, files, self.migrations, filter, columns,
                                 verify, dedup, key)
            except VanishedFileError:
                if attempt == _READ_TRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def rows(self, kind: str, keep: Any = None, *, keys: Iterable[str] | None = None,
             columns: list[str] | None = None, verify: bool = True) -> list[dict[str, Any]]:
        """Rows of ``kind`` as dicts: those under ``keys`` (only files whose name range may
        hold one are read) that ``keep(row)`` accepts, checked as ``query`` checks them.
        Row by row with ``pyarrow.parquet`` alone (``reader.read_dicts``): the few rows a
        serving process reads, without importing ``pyarrow.dataset``."""
        wanted = None if keys is None else set(keys)
        key = KEY_COLUMN[check_kind(kind)]
        signing = self.checking_key(kind)   # a signed store without its key: refused

        def accept(row: dict[str, Any]) -> bool:
            return (wanted is None or row[key] in wanted) and (keep is None or keep(row))

        for attempt in range(_READ_TRIES):
            files = self.files(kind)
            if wanted is not None:
                files = files_for_keys(files, sorted(wanted))
            try:
                found, issues = read_dicts(self.fs, kind, files, self.migrations, accept,
                                           columns, verify, signing if verify else None)
            except VanishedFileError:
                if attempt == _READ_TRIES - 1:
                    raise
                continue
            report(issues, self.strict)
            return found
        raise AssertionError("unreachable")

    def lookup(self, kind: str, keys: str | Iterable[str],
               columns: list[str] | None = None) -> pa.Table:
        """Rows of ``kind`` whose key column is in ``keys`` (one key or many)."""
        import pyarrow.compute as pc
        keys = [keys] if isinstance(keys, str) else list(keys)
        if not keys:
            return self.query(kind, pc.scalar(False), columns)
        key = pc.field(KEY_COLUMN[check_kind(kind)])
        expr = key == keys[0] if len(keys) == 1 else key.isin(keys)
        return self._query(kind, expr, columns, verify=True, dedup=True, keys=keys)

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        """The row of ``kind`` under ``key`` as a dict, or None."""
        rows = self.lookup(kind, key).to_pylist()
        return rows[0] if rows else None

    def has(self, kind: str, key: str) -> bool:
        """Whether an intact row of ``kind`` exists under ``key``."""
        return self.lookup(kind, key, columns=[KEY_COLUMN[kind]]).num_rows > 0

    def keys(self, kind: str) -> list[str]:
        """Distinct keys of ``kind`` in file order (hashes not checked: see ``verify``)."""
        column = KEY_COLUMN[check_kind(kind)]
        return self.query(kind, columns=[column], verify=False).column(column).to_pylist()

    def graph_for_source(self, source_key: str) -> str | None:
        """The ``graph_key`` of the intact graphs row written with ``source_key``, or None.

        Several rows may name the same source (a graph written twice); they name one graph,
        so the first is returned. Rows from before schema v2 have no source key and never
        match.
        """
        import pyarrow.compute as pc
        table = self.query("graphs", pc.field("source_key") == source_key,
                           columns=["graph_key"])
        return table.column("graph_key")[0].as_py() if table.num_rows else None

    def load_graph(self, graph_key: str) -> Any:
        """The stored graph ``graph_key`` as a ``CapturedGraph`` to lower, with no model code
        (``storage.graphs``); ``GraphMissError`` where none is stored loadable,
        ``GraphFormatError`` where this torch cannot read it."""
        from .graphs import load_graph
        return load_graph(self, graph_key)

    # --- the compiler's cache protocol -----------------------------------------------------

    def get_artifact(self, module_key: str) -> CompiledArtifact | None:
        """The compiled module under ``module_key``, or None on a miss.

        A row whose content hash (or, with a key, signature) fails is a miss with a
        ``TamperedRowWarning`` (the caller recompiles) or, on a ``strict`` store, a
        ``CorruptStoreError``: nothing of it is imported.
        """
        from .artifacts import artifact_from_row   # the compiler is imported only when used
        rows = self.rows("modules", keys=[module_key])
        return artifact_from_row(rows[0]) if rows else None

    def put_artifact(self, artifact: CompiledArtifact, tuned_for: str | None = None) -> None:
        """Store ``artifact``: its kernels rows first, then the module row that names them,
        so a reader never finds a module whose kernels are not yet there. Idempotent: a
        second put only adds duplicates, which reads and compaction collapse.

        ``tuned_for`` names the GPU (device name) whose trials chose the artifact's launch
        configs, so ``tuned_module`` finds it; None for a heuristic-config module."""
        from .artifacts import kernel_records, module_record
        kernels = kernel_records(artifact)
        if kernels:
            self.write("kernels", kernels)
        self.write("modules", [module_record(artifact, tuned_for=tuned_for)])

    def tuned_module(self, graph_key: str, device_name: str, target: str = "cuda",
                     options_hash: str | None = None) -> str | None:
        """The key of the newest module of ``graph_key`` tuned for ``device_name``, or None.

        A deployment knows its graph key and its GPU (``torch.cuda.get_device_name()``);
        ``target`` ("cuda") and ``options_hash`` (``CompilerOptions.options_hash()``) narrow
        the choice when a store holds several lowerings of one graph. A later sweep that
        found better configs stores a newer module; the newest wins.
        """
        import pyarrow.compute as pc
        expr = ((pc.field("graph_key") == graph_key) & (pc.field("tuned_for") == device_name)
                & (pc.field("target") == target))
        if options_hash is not None:
            expr &= pc.field("options_hash") == options_hash
        table = self.query("modules", expr, columns=["module_key", "created_at"])
        if not table.num_rows:
            return None
        newest = table.sort_by([("created_at", "descending")])
        return newest.column("module_key")[0].as_py()

    def load_tuned(self, graph_key: str, device_name: str, target: str = "cuda",
                   **load_options: Any) -> Any:
        """``load`` of ``tuned_module(graph_key, device_name, target)``; a miss raises
        ``StoreMissError`` naming graph, GPU and store (never a silent fallback)."""
        key = self.tuned_module(graph_key, device_name, target)
        if key is None:
            raise StoreMissError(f"no module of graph {graph_key} tuned for {device_name!r} "
                                 f"({target}) in store {self.root}")
        return self.load(key, **load_options)

    def load_model(self, name: str, module: Any, *, device: Any = None,
                   tuned: bool = True) -> Any:
        """The module ``kiln run`` stored for the model ``name`` (its zoo config's name), as a
        callable used like ``module`` with ``module``'s live weights: no capture, no compile
        (``storage.deploy``). ``device``: where to run, by default that of ``module``'s
        parameters; ``tuned``: prefer the module tuned for this GPU. A miss raises
        ``ModelMissError`` naming what differs from the nearest record."""
        from .deploy import load_model
        return load_model(self, name, module, device=device, tuned=tuned)

    def serve(self, artifact: CompiledArtifact) -> Any:
        """``artifact`` as ``load_model`` runs it: on CUDA, every kernel from its stored cubin
        with no Triton compile (``compile_module`` takes this path when it hits); None where
        it cannot be (not CUDA, a binary missing or built for another launch)."""
        from .deploy import served
        return served(self, artifact)

    def why_not(self, graph_key: str, target: str, options_hash: str) -> str:
        """Why no module of ``graph_key`` for ``target`` and ``options_hash`` is stored here,
        named against the nearest stored one (``compile_module`` warns with it)."""
        from .deploy import why_not
        return why_not(self, graph_key, target, options_hash)

    def load(self, module_key: str, **load_options: Any) -> Any:
        """The stored module as a callable, via ``compiler.runtime.load_artifact``.

        ``load_options`` pass through (``constants=``, ``code_dir=``, ``check_inputs=``,
        ``compile_workers=``). Raises ``StoreMissError`` naming the key and the store if
        nothing intact is there: a deployment must not recompile silently.

        On a CUDA machine the kernels' stored binaries for its architecture (the build
        stage's cubins) are handed to the module, so its first call compiles nothing;
        ``binaries=False`` leaves compiling to Triton.
        """
        artifact = self.get_artifact(module_key)
        if artifact is None:
            raise StoreMissError(f"module {module_key} is not in store {self.root}")
        from compiler.runtime import load_artifact   # lazy: loading needs Triton/torch
        binaries = None
        if load_options.pop("binaries", True) and artifact.meta.get("device") == "cuda":
            arch = _cuda_arch()
            if arch is not None:
                from .artifacts import kernel_binaries
                binaries = kernel_binaries(self, artifact, arch)
        return load_artifact(artifact, binaries=binaries, **load_options)

    # --- maintenance -----------------------------------------------------------------------

    def stats(self) -> StoreStats:
        """Files, bytes, rows and distinct keys per kind, read from footers and key columns."""
        return StoreStats(self.root, {kind: self._kind_stats(kind) for kind in KINDS})

    def _kind_stats(self, kind: str) -> KindStats:
        stats = KindStats(kind)
        files = self.files(kind)
        for file in files:
            stats.files += 1
            stats.bytes += file.size
            stats.versions[file.version] = stats.versions.get(file.version, 0) + 1
            try:
                stats.rows += pq.read_metadata(file.path, filesystem=self.fs).num_rows
            except (pa.ArrowException, OSError):
                stats.unreadable_files += 1
        stats.temp_files = len(temp_files(self.fs, self.dataset_dir(kind)))
        try:
            keys = read_rows(self.fs, kind, self._readable(kind, files), self.migrations,
                             columns=[KEY_COLUMN[kind]], verify=False)
            stats.unique_keys = keys.table.num_rows
        except VanishedFileError:     # compacted meanwhile: count what is there now
            stats.unique_keys = len(self.keys(kind))
        return stats

    def _readable(self, kind: str, files: list[StoreFile]) -> list[StoreFile]:
        """``files`` less those whose schema version this kiln cannot read."""
        readable = []
        for file in files:
            try:
                require_readable(kind, file.version, self.migrations, file.path)
                readable.append(file)
            except StoreVersionError:
                pass
        return readable

    def verify(self, kinds: Iterable[str] = KINDS) -> "VerifyReport":
        """Check every file and row; see ``storage.verify``."""
        from .verify import verify_store
        return verify_store(self, kinds)

    def repair(self) -> "RepairReport":
        """Quarantine corrupt files, restore lost kernels rows, drop dangling binaries; see
        ``storage.repair``."""
        from .repair import repair_store
        return repair_store(self)

    def compact(self, kinds: Iterable[str] = KINDS, **options: Any) -> "CompactReport":
        """Merge small files into large sorted ones; see ``storage.compact``."""
        from .compact import compact_store
        return compact_store(self, kinds, **options)


def _cuda_arch() -> int | None:
    """This machine's GPU architecture (90 for an H100), or None without CUDA."""
    import torch
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    return 10 * major + minor
