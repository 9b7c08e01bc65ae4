"""Versioned Arrow schemas of kiln's record kinds, and the migrations between versions.

Every dataset under a store root holds one record kind. Each row carries ``schema_version``
and each file carries ``kiln.kind`` / ``kiln.schema_version`` in its footer (and ``-vN-`` in
its name, so a reader learns a file's version from a directory listing alone). Every key part
that changes generated code or timings is a column of its own (versions, options hash, GPU
name, arch, driver), never folded into an opaque blob.

A reader that meets an older version upgrades the table with the migration chain
``N -> N+1 -> ... -> SCHEMA_VERSION``; a version with no chain, or a newer one, raises
``StoreVersionError`` naming the file and the version.

Example:
    >>> schema_for("trials").field("median_ms").type
    DataType(double)
    >>> KEY_COLUMN["modules"]
    'module_key'
"""
from __future__ import annotations

import json
from types import MappingProxyType
from typing import Callable, Mapping

import pyarrow as pa

# Bump when a schema changes, and register a migration from the previous version in the
# caller's migration table (see ``migrate``).
SCHEMA_VERSION = 5

KINDS = ("graphs", "modules", "kernels", "binaries", "trials", "failures", "bench")

# The one column that identifies a record; duplicates of it are the same record.
KEY_COLUMN: Mapping[str, str] = MappingProxyType({
    "graphs": "graph_key",
    "modules": "module_key",
    "kernels": "kernel_key",
    "binaries": "binary_key",
    "trials": "trial_key",
    "failures": "failure_key",
    "bench": "bench_key",
})

# Columns covered by the per-row ``content_hash`` (kinds that hold code or binaries). The key
# itself is covered, so a row moved under another key is caught as well as edited content.
HASHED_COLUMNS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    # The loadable graph's columns come last: null in rows before schema v4, and trailing
    # nulls are left out of the hash (``integrity.row_hashes``), so those rows still verify.
    "graphs": ("graph_key", "model", "input_signature", "torch_version", "graph_text",
               "program", "call_json", "constants", "graph_format"),
    "modules": ("module_key", "graph_key", "compiler_version", "options_hash", "target",
                "arch", "torch_version", "triton_version", "source", "meta_json",
                "kernel_keys", "kernels"),
    "kernels": ("kernel_key", "name", "source", "meta_json"),
    "binaries": ("binary_key", "kernel_key", "config_key", "config_json", "arch", "target",
                 "triton_version", "cubin", "metadata_json"),
})

# Large or free-form columns: nobody filters on them by range, and Parquet's min/max
# statistics of a 35 KB source column would be copied into the footer for every row group,
# making the footer (read by every lookup) megabytes long. They get neither statistics nor
# dictionary encoding (their values are nearly all distinct).
PAYLOAD_COLUMNS = frozenset({"graph_text", "input_signature", "program", "call_json",
                             "constants", "source", "meta_json",
                             "kernel_keys", "kernels", "cubin", "metadata_json", "config_json",
                             "error", "message", "traceback", "content_hash", "signature",
                             "details_json"})

TRIAL_ORIGINS = ("timed", "nearby", "pruned")
BENCH_STATUSES = ("ok", "error", "skipped")
TRIAL_STATUSES = ("ok", "build_error", "resource_error", "launch_error", "wrong_result",
                  "timeout", "runtime_error")

_TS = pa.timestamp("us", tz="UTC")
# A graph's lifted constant (``compiler.capture_serde.StoredConstant``): data null where only
# its spec and hash are kept (too big to store; a serving process finds it on the module).
_CONSTANT_ENTRY = pa.struct([
    ("name", pa.string()), ("dtype", pa.string()), ("size", pa.list_(pa.int64())),
    ("sha256", pa.string()), ("data", pa.binary()),
])
_KERNEL_ENTRY = pa.struct([
    ("name", pa.string()), ("kernel_key", pa.string()),
    ("source", pa.string()), ("meta_json", pa.string()),
])


def _req(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=False)


def _opt(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=True)


_FIELDS: Mapping[str, list[pa.Field]] = MappingProxyType({
    "graphs": [
        _req("graph_key", pa.string()),
        _req("model", pa.string()),
        _req("input_signature", pa.string()),     # JSON: shapes, dtypes, dynamic dims
        _req("torch_version", pa.string()),
        _req("graph_text", pa.string()),          # canonical ATen graph text
        # sha256 of what the graph was captured from (model spec, dtype, dynamic dims, torch
        # and compiler versions, factory source): a run finds the graph without capturing.
        # Null in rows written before schema v2. Not hashed: v1 rows were hashed without it.
        _opt("source_key", pa.string()),
        # The loadable graph (``compiler.capture_serde``): torch.export's JSON of the graph,
        # the calling convention, the lifted constants, the format (kiln's and torch.export's
        # schema versions). Lower and relower read these, never the model's code. Null in
        # rows written before schema v4: such a graph must be captured again.
        _opt("program", pa.string()),
        _opt("call_json", pa.string()),
        _opt("constants", pa.list_(_CONSTANT_ENTRY)),
        _opt("graph_format", pa.string()),
        _req("content_hash", pa.string()),
        # HMAC of the content hash and lookup labels, by the store's key (storage.signing);
        # null in an unsigned store. Not hashed: it is made from the hash.
        _opt("signature", pa.string()),
        _req("created_at", _TS),
        _req("schema_version", pa.int32()),
    ],
    "modules": [
        _req("module_key", pa.string()),
        _req("graph_key", pa.string()),
        _req("compiler_version", pa.string()),
        _req("options_hash", pa.string()),
        _req("target", pa.string()),              # e.g. "cuda:90:32", "cpu-interpreter"
        _req("arch", pa.string()),                # e.g. "sm_90"
        _req("torch_version", pa.string()),
        _req("triton_version", pa.string()),
        _req("source", pa.string()),              # importable Python defining call(args)
        _req("meta_json", pa.string()),
        _req("kernel_keys", pa.list_(pa.string())),
        # Each kernel exactly as this module names it: the kernels dataset keeps one row per
        # kernel_key, whose name may be another module's, so a module is rebuilt from its own.
        _req("kernels", pa.list_(_KERNEL_ENTRY)),
        # The GPU (device name, e.g. "NVIDIA H100 80GB HBM3") whose trials chose this module's
        # launch configs; null for a module launched with the heuristic configs. A lookup
        # label (``Store.tuned_module``), not hashed: the configs themselves are in the source
        # and the module key. Null in rows written before schema v3.
        _opt("tuned_for", pa.string()),
        # The model's name in its zoo config (what ``Store.load_model`` is asked for); a
        # lookup label like tuned_for, not hashed. Null in rows written before schema v4.
        _opt("model", pa.string()),
        _req("content_hash", pa.string()),
        _opt("signature", pa.string()),          # storage.signing; null if unsigned
        _req("created_at", _TS),
        _req("schema_version", pa.int32()),
    ],
    "kernels": [
        _req("kernel_key", pa.string()),
        _req("name", pa.string()),
        _req("source", pa.string()),
        _req("meta_json", pa.string()),
        _req("content_hash", pa.string()),
        _opt("signature", pa.string()),          # storage.signing; null if unsigned
        _req("created_at", _TS),
        _req("schema_version", pa.int32()),
    ],
    "binaries": [
        _req("binary_key", pa.string()),          # hash(kernel, config, arch, target, triton)
        _req("kernel_key", pa.string()),
        _req("config_key", pa.string()),
        _req("config_json", pa.string()),
        _req("arch", pa.string()),
        _req("target", pa.string()),
        _req("triton_version", pa.string()),
        _req("cubin", pa.binary()),
        _req("metadata_json", pa.string()),       # Triton compile metadata (shared, warps...)
        # "ok", "build_error" or "resource_error", and why a config did not build. Rows
        # before schema v4 kept both inside metadata_json; the migration reads them out.
        _opt("status", pa.string()),
        _opt("error", pa.string()),
        _req("content_hash", pa.string()),
        _opt("signature", pa.string()),          # storage.signing; null if unsigned
        _req("created_at", _TS),
        _req("schema_version", pa.int32()),
    ],
    "trials": [
        _req("trial_key", pa.string()),
        _req("kernel_key", pa.string()),
        _req("sizes_json", pa.string()),          # canonical JSON of the sizes timed
        _req("config_key", pa.string()),
        _req("config_json", pa.string()),
        _req("device_name", pa.string()),         # e.g. "NVIDIA H100 80GB HBM3"
        _req("arch", pa.string()),
        _req("driver", pa.string()),
        _req("clocks", pa.string()),              # clock state while timing: default, locked
        _req("triton_version", pa.string()),
        _req("torch_version", pa.string()),
        _opt("median_ms", pa.float64()),          # null unless status == "ok"
        _opt("mean_ms", pa.float64()),
        _opt("min_ms", pa.float64()),
        _opt("max_ms", pa.float64()),
        _opt("std_ms", pa.float64()),
        _req("n_repeats", pa.int32()),
        _req("status", pa.string()),
        _opt("error", pa.string()),
        _req("is_best", pa.bool_()),
        # Whether this config is the heuristic default the untuned module launches (the
        # baseline of "how much did tuning gain"); null in rows written before schema v3.
        _opt("is_default", pa.bool_()),
        # Schema v5 (null in older rows): why the config is in the trials ("timed": a
        # candidate; "nearby": a winner at a nearby size of the kernel, tried first;
        # "pruned": never built or run, a limit it exceeds for sure, see error), the GPU
        # seconds spent on it, why its kernel's search stopped ("roofline", "budget",
        # "halving") and the card's copy bandwidth (GB/s) the roofline was judged by.
        _opt("origin", pa.string()),
        _opt("gpu_s", pa.float64()),
        _opt("stop_reason", pa.string()),
        _opt("copy_gbps", pa.float64()),
        _req("timestamp", _TS),
        _req("worker", pa.string()),
        _req("host", pa.string()),
        _req("schema_version", pa.int32()),
    ],
    "failures": [
        _req("failure_key", pa.string()),         # hash(stage, key, error type, message)
        _req("stage", pa.string()),
        _req("key", pa.string()),
        _req("model", pa.string()),
        _req("error_type", pa.string()),
        _req("message", pa.string()),
        _req("traceback", pa.string()),
        _req("attempts", pa.int32()),
        _req("timestamp", _TS),
        _req("worker", pa.string()),
        _req("host", pa.string()),
        _req("schema_version", pa.int32()),
    ],
    # One system (eager, torch.compile's modes, kiln's variants) on one model in one
    # ``kiln bench`` run (``pipeline.bench``): its steady time, cold start, kernels and the
    # bandwidth its memory-bound kernels reach. Measurements, not code: not hashed.
    "bench": [
        _req("bench_key", pa.string()),           # hash(run_id, model, system[, attempt])
        _req("run_id", pa.string()),
        _req("config", pa.string()),              # the zoo's run.name
        _req("model", pa.string()),
        _req("system", pa.string()),              # pipeline.bench.systems.SYSTEMS
        _req("status", pa.string()),              # "ok", "error" or "skipped"
        _opt("error", pa.string()),               # why not ok
        _req("device_name", pa.string()),
        _opt("dtype", pa.string()),
        _opt("median_ms", pa.float64()),          # steady time per call
        _opt("q1_ms", pa.float64()),              # spread: the interquartile range
        _opt("q3_ms", pa.float64()),
        _opt("n_repeats", pa.int32()),
        _opt("cold_s", pa.float64()),             # built model -> first result, fresh caches
        _opt("kernel_count", pa.int32()),         # GPU kernels per call (profiler)
        _opt("copy_gbps", pa.float64()),          # device-to-device copy, same process
        _opt("membound_kernels", pa.int32()),
        _opt("bandwidth_fraction", pa.float64()), # median over memory-bound kernels
        _opt("details_json", pa.string()),        # per kernel ms, bytes, fraction; notes
        _req("quick", pa.bool_()),
        _req("torch_version", pa.string()),
        _req("triton_version", pa.string()),
        _req("compiler_version", pa.string()),
        _req("timestamp", _TS),
        _req("host", pa.string()),
        _req("schema_version", pa.int32()),
    ],
})


class StoreVersionError(RuntimeError):
    """A file whose schema version this kiln cannot read; the message names file and version."""


def check_kind(kind: str) -> str:
    """``kind`` itself, or ValueError naming the known kinds."""
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}; known: {', '.join(KINDS)}")
    return kind


def schema_for(kind: str) -> pa.Schema:
    """The current Arrow schema of ``kind``, with kind and version in its metadata."""
    return pa.schema(_FIELDS[check_kind(kind)], metadata=file_metadata(kind, SCHEMA_VERSION))


def file_metadata(kind: str, version: int) -> dict[bytes, bytes]:
    """Footer key-value metadata that names a file's kind and schema version."""
    return {b"kiln.kind": kind.encode(), b"kiln.schema_version": str(version).encode()}


def metadata_version(schema: pa.Schema) -> tuple[str | None, int | None]:
    """(kind, version) read back from a file's Arrow schema metadata; None where absent."""
    meta = schema.metadata or {}
    kind = meta.get(b"kiln.kind")
    version = meta.get(b"kiln.schema_version")
    return (kind.decode() if kind else None,
            int(version) if version and version.isdigit() else None)


# A migration upgrades a table of one kind from version N to N+1. Tables are keyed
# ``{kind: {N: function}}``; the store takes one as an argument (no global registry to mutate).
Migration = Callable[[pa.Table], pa.Table]
Migrations = Mapping[str, Mapping[int, Migration]]


def _with_null_columns(*columns: tuple[str, pa.DataType]) -> Migration:
    """A step that added the nullable ``columns``: null in every older row."""
    def step(table: pa.Table) -> pa.Table:
        for name, type_ in columns:
            if name not in table.column_names:
                table = table.append_column(pa.field(name, type_, nullable=True),
                                            pa.nulls(table.num_rows, type_))
        return table
    step.__doc__ = (f"Adds the nullable columns {[c[0] for c in columns]} (null: older rows "
                    f"never recorded them).")
    return step


def _binary_status(table: pa.Table) -> pa.Table:
    """v3 -> v4 binaries: status and error read out of metadata_json (no status: "ok")."""
    if "status" in table.column_names:
        return table
    metas = [json.loads(m) if m else {} for m in table.column("metadata_json").to_pylist()]
    table = table.append_column(pa.field("status", pa.string()),
                                pa.array([m.get("status", "ok") for m in metas], pa.string()))
    return table.append_column(pa.field("error", pa.string()),
                               pa.array([m.get("error") for m in metas], pa.string()))


# Version 1 is the first released schema. Version 2 added graphs.source_key; version 3
# added modules.tuned_for and trials.is_default; version 4 modules.model, binaries'
# status and error (moved out of metadata_json), the graphs' loadable graph, and the
# signature of every hashed kind; version 5 the trials' origin, gpu_s, stop_reason and
# copy_gbps (issue 16: where tuning time went).
_ADDED: Mapping[int, Mapping[str, tuple[tuple[str, pa.DataType], ...]]] = {
    1: {"graphs": (("source_key", pa.string()),)},
    2: {"modules": (("tuned_for", pa.string()),), "trials": (("is_default", pa.bool_()),)},
    3: {"modules": (("model", pa.string()), ("signature", pa.string())),
        "graphs": (("program", pa.string()), ("call_json", pa.string()),
                   ("constants", pa.list_(_CONSTANT_ENTRY)), ("graph_format", pa.string()),
                   ("signature", pa.string())),
        "kernels": (("signature", pa.string()),), "binaries": (("signature", pa.string()),)},
    4: {"trials": (("origin", pa.string()), ("gpu_s", pa.float64()),
                   ("stop_reason", pa.string()), ("copy_gbps", pa.float64()))},
}
# Steps that do more than add null columns (kind -> function), applied after those.
_CUSTOM: Mapping[int, Mapping[str, Migration]] = {3: {"binaries": _binary_status}}


def _step(step: int, kind: str) -> Migration:
    add = _with_null_columns(*_ADDED[step].get(kind, ()))
    custom = _CUSTOM.get(step, {}).get(kind)
    return add if custom is None else (lambda table: custom(add(table)))


DEFAULT_MIGRATIONS: Migrations = MappingProxyType({
    kind: MappingProxyType({step: _step(step, kind) for step in _ADDED}) for kind in KINDS
})


def require_readable(kind: str, version: int, migrations: Migrations, where: str) -> None:
    """Raise ``StoreVersionError`` unless ``version`` is current or has a full migration
    chain to it; ``where`` names the file in the message."""
    if version > SCHEMA_VERSION:
        raise StoreVersionError(
            f"{where}: {kind} schema version {version} was written by a newer kiln; this "
            f"kiln reads versions up to {SCHEMA_VERSION}. Upgrade kiln to read it.")
    steps = migrations.get(kind, {})
    for step in range(version, SCHEMA_VERSION):
        if step not in steps:
            raise StoreVersionError(
                f"{where}: {kind} schema version {version} cannot be read: this kiln reads "
                f"version {SCHEMA_VERSION} and has no migration from version {step}. "
                f"Read or compact it with the kiln release that wrote it.")


def migrate(kind: str, table: pa.Table, version: int, migrations: Migrations,
            where: str) -> pa.Table:
    """Upgrade ``table`` (of ``kind`` at ``version``) to the current schema.

    ``where`` names the file in errors. Raises ``StoreVersionError`` for a newer version or
    an older one with a gap in the migration chain.

    Example:
        >>> t = pa.table({"x": [1]})
        >>> migrate("trials", t, 0, {"trials": {}}, "f.parquet")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        storage.schema.StoreVersionError: f.parquet: trials schema version 0 cannot be read...
    """
    require_readable(kind, version, migrations, where)
    for step in range(version, SCHEMA_VERSION):
        table = migrations[kind][step](table)
    return conform(kind, table)


def conform(kind: str, table: pa.Table) -> pa.Table:
    """``table`` with exactly the current columns of ``kind``, in order, cast to their types.

    Missing nullable columns become nulls and ``schema_version`` is filled in; a missing
    required column is a ValueError naming it. Extra columns are an error too, since a typo'd
    column name would otherwise be dropped silently.
    """
    schema = schema_for(kind)
    extra = set(table.column_names) - set(schema.names)
    if extra:
        raise ValueError(f"{kind}: unknown columns {sorted(extra)}")
    columns = []
    for field in schema:
        if field.name in table.column_names:
            column = table.column(field.name)
        elif field.name == "schema_version":
            column = pa.array([SCHEMA_VERSION] * table.num_rows, pa.int32())
        elif field.nullable:
            column = pa.nulls(table.num_rows, field.type)
        else:
            raise ValueError(f"{kind}: missing required column {field.name!r}")
        if column.null_count and not field.nullable:
            raise ValueError(f"{kind}: column {field.name!r} has nulls but is required")
        columns.append(column.cast(field.type) if column.type != field.type else column)
    if "schema_version" in table.column_names:
        columns[schema.get_field_index("schema_version")] = pa.array(
            [SCHEMA_VERSION] * table.num_rows, pa.int32())
    return pa.Table.from_arrays(columns, schema=schema)
