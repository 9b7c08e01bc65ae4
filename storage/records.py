"""Typed constructors for store rows, so callers never hand-build dicts with typo'd keys.

Each record type is a frozen dataclass with the columns of its kind. Keys derived from other
columns (``trial_key``, ``binary_key``, ``failure_key``, ``config_key``) are computed here,
in one place, from canonical JSON, so two workers that time the same thing get the same key.

Example:
    >>> t = TrialRecord.timed(kernel_key="k1", sizes={"xnumel": 4096},
    ...                       config={"XBLOCK": 1024, "num_warps": 4},
    ...                       device_name="NVIDIA H100 80GB HBM3", arch="sm_90",
    ...                       driver="550.54", triton_version="3.9.0",
    ...                       torch_version="2.13.0", times_ms=[0.011, 0.010, 0.012])
    >>> t.status, t.median_ms, t.n_repeats
    ('ok', 0.011, 3)
    >>> t.trial_key == TrialRecord.make_key("k1", {"xnumel": 4096}, t.config_key,
    ...     "NVIDIA H100 80GB HBM3", "sm_90", "550.54", "default", "3.9.0", "2.13.0")
    True
"""
from __future__ import annotations

import dataclasses
import json
import socket
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar, Iterable, Sequence

import pyarrow as pa

from .integrity import hash_values
from .schema import BENCH_STATUSES, TRIAL_ORIGINS, TRIAL_STATUSES, check_kind, schema_for


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal values give equal text (and keys)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def derived_key(*parts: Any) -> str:
    """32 hex digits of sha256 over ``parts``: the key of a record identified by columns."""
    return hash_values([canonical_json(p) for p in parts])[:32]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _json_text(value: Any) -> str:
    """Already-JSON text is kept (re-canonicalized); anything else is encoded."""
    if isinstance(value, str):
        return canonical_json(json.loads(value))
    return canonical_json(value)


@dataclass(frozen=True)
class GraphRecord:
    """A captured ATen graph. ``input_signature`` is JSON text (shapes, dtypes, dynamic).

    ``program``, ``call_json``, ``constants`` and ``graph_format`` make it loadable
    (``compiler.capture_serde.SerializedGraph``, see ``storage.graphs``); None in a record
    that only names its graph."""
    KIND: ClassVar[str] = "graphs"
    graph_key: str
    model: str
    input_signature: str
    torch_version: str
    graph_text: str
    source_key: str | None = None
    created_at: datetime = field(default_factory=_now)
    program: str | None = None
    call_json: str | None = None
    constants: tuple[dict[str, Any], ...] | None = None
    graph_format: str | None = None

    @classmethod
    def build(cls, *, graph_key: str, model: str, input_signature: Any, torch_version: str,
              graph_text: str, source_key: str | None = None) -> "GraphRecord":
        """A record with ``input_signature`` (a list/dict, or JSON text) made canonical.

        ``source_key`` identifies what the graph was captured from (see
        ``Store.graph_for_source``); None when unknown."""
        return cls(graph_key=graph_key, model=model,
                   input_signature=_json_text(input_signature), torch_version=torch_version,
                   graph_text=graph_text, source_key=source_key)


@dataclass(frozen=True)
class KernelRecord:
    """One kernel source, stored once per ``kernel_key`` however many modules use it."""
    KIND: ClassVar[str] = "kernels"
    kernel_key: str
    name: str
    source: str
    meta_json: str
    created_at: datetime = field(default_factory=_now)


@dataclass(frozen=True)
class ModuleRecord:
    """A compiled module for one target. ``kernels`` holds (name, key, source, meta) dicts."""
    KIND: ClassVar[str] = "modules"
    module_key: str
    graph_key: str
    compiler_version: str
    options_hash: str
    target: str
    arch: str
    torch_version: str
    triton_version: str
    source: str
    meta_json: str
    kernel_keys: tuple[str, ...]
    kernels: tuple[dict[str, str], ...]
    created_at: datetime = field(default_factory=_now)
    tuned_for: str | None = None      # device name whose best trials set the launch configs
    model: str | None = None          # the model's name in its zoo config


@dataclass(frozen=True)
class BinaryRecord:
    """A kernel compiled for one config and target: cubin bytes plus Triton's metadata."""
    KIND: ClassVar[str] = "binaries"
    binary_key: str
    kernel_key: str
    config_key: str
    config_json: str
    arch: str
    target: str
    triton_version: str
    cubin: bytes
    metadata_json: str
    created_at: datetime = field(default_factory=_now)
    status: str = "ok"                # "ok", "build_error", "resource_error"
    error: str | None = None          # why it did not build

    @staticmethod
    def key(*, kernel_key: str, config: Any, arch: str, target: str, triton_version: str) -> str:
        """The ``binary_key`` of (kernel, config, architecture, target, Triton version): how
        a reader finds a binary without building its record."""
        config_key = derived_key(_json_text(config))
        return derived_key(kernel_key, config_key, arch, target, triton_version)

    @classmethod
    def build(cls, *, kernel_key: str, config: Any, arch: str, target: str,
              triton_version: str, cubin: bytes, metadata: Any, status: str = "ok",
              error: str | None = None) -> "BinaryRecord":
        """A record with its keys derived; ``config``/``metadata`` are dicts or JSON text."""
        config_json = _json_text(config)
        key = cls.key(kernel_key=kernel_key, config=config_json, arch=arch, target=target,
                      triton_version=triton_version)
        return cls(binary_key=key, kernel_key=kernel_key, config_key=derived_key(config_json),
                   config_json=config_json, arch=arch, target=target,
                   triton_version=triton_version, cubin=cubin,
                   metadata_json=_json_text(metadata), status=status, error=error)


@dataclass(frozen=True)
class TrialRecord:
    """One timing of one config of one kernel at one size on one GPU kind."""
    KIND: ClassVar[str] = "trials"
    trial_key: str
    kernel_key: str
    sizes_json: str
    config_key: str
    config_json: str
    device_name: str
    arch: str
    driver: str
    clocks: str
    triton_version: str
    torch_version: str
    median_ms: float | None
    mean_ms: float | None
    min_ms: float | None
    max_ms: float | None
    std_ms: float | None
    n_repeats: int
    status: str
    error: str | None
    is_best: bool
    timestamp: datetime = field(default_factory=_now)
    worker: str = ""
    host: str = field(default_factory=socket.gethostname)
    is_default: bool | None = None    # the heuristic config the untuned module launches
    origin: str | None = None         # "timed", "nearby" or "pruned" (schema v5)
    gpu_s: float | None = None        # GPU seconds spent on this config
    stop_reason: str | None = None    # why the kernel's search stopped
    copy_gbps: float | None = None    # the card's measured copy bandwidth

    def __post_init__(self) -> None:
        if self.status not in TRIAL_STATUSES:
            raise ValueError(f"trial status {self.status!r} is not one of {TRIAL_STATUSES}")
        if self.origin is not None and self.origin not in TRIAL_ORIGINS:
            raise ValueError(f"trial origin {self.origin!r} is not one of {TRIAL_ORIGINS}")

    @staticmethod
    def make_key(kernel_key: str, sizes: Any, config_key: str, device_name: str, arch: str,
                 driver: str, clocks: str, triton_version: str, torch_version: str) -> str:
        """The identity of a trial: everything that changes its timing, nothing measured."""
        return derived_key(kernel_key, _json_text(sizes), config_key, device_name, arch,
                           driver, clocks, triton_version, torch_version)

    @classmethod
    def timed(cls, *, kernel_key: str, sizes: Any, config: Any, device_name: str, arch: str,
              driver: str, triton_version: str, torch_version: str,
              times_ms: Sequence[float] = (), status: str = "ok", error: str | None = None,
              clocks: str = "default", is_best: bool = False, worker: str = "",
              **extra: Any) -> "TrialRecord":
        """A trial from raw timings (statistics computed here) or a failed status."""
        config_json = _json_text(config)
        config_key = derived_key(config_json)
        stats = _time_stats(times_ms) if status == "ok" else dict.fromkeys(_STAT_NAMES)
        key = cls.make_key(kernel_key, sizes, config_key, device_name, arch, driver, clocks,
                           triton_version, torch_version)
        return cls(trial_key=key, kernel_key=kernel_key, sizes_json=_json_text(sizes),
                   config_key=config_key, config_json=config_json, device_name=device_name,
                   arch=arch, driver=driver, clocks=clocks, triton_version=triton_version,
                   torch_version=torch_version, n_repeats=len(times_ms), status=status,
                   error=error, is_best=is_best, worker=worker, **stats, **extra)


_STAT_NAMES = ("median_ms", "mean_ms", "min_ms", "max_ms", "std_ms")


def _time_stats(times_ms: Sequence[float]) -> dict[str, float]:
    if not times_ms:
        raise ValueError("an ok trial needs at least one timing")
    times = [float(t) for t in times_ms]
    return {"median_ms": statistics.median(times), "mean_ms": statistics.fmean(times),
            "min_ms": min(times), "max_ms": max(times),
            "std_ms": statistics.pstdev(times) if len(times) > 1 else 0.0}


@dataclass(frozen=True)
class FailureRecord:
    """A task that failed for good: which stage, on what key, how, after how many tries."""
    KIND: ClassVar[str] = "failures"
    failure_key: str
    stage: str
    key: str
    model: str
    error_type: str
    message: str
    traceback: str
    attempts: int
    timestamp: datetime = field(default_factory=_now)
    worker: str = ""
    host: str = field(default_factory=socket.gethostname)

    @classmethod
    def build(cls, *, stage: str, key: str, model: str, error_type: str, message: str,
              traceback: str = "", attempts: int = 1, worker: str = "") -> "FailureRecord":
        """A failure keyed by (stage, key, error type, message): a retry that fails the same
        way is the same failure."""
        return cls(failure_key=derived_key(stage, key, error_type, message), stage=stage,
                   key=key, model=model, error_type=error_type, message=message,
                   traceback=traceback, attempts=attempts, worker=worker)


@dataclass(frozen=True)
class BenchRecord:
    """One system on one model in one ``kiln bench`` run (``pipeline.bench``).

    >>> r = BenchRecord.build(run_id="r1", config="zoo-tiny", model="mlp", system="eager",
    ...                       status="ok", device_name="cpu", torch_version="2.13.0",
    ...                       triton_version="3.9.0", compiler_version="0.1.0",
    ...                       median_ms=1.5, q1_ms=1.4, q3_ms=1.7, n_repeats=9)
    >>> r.bench_key == derived_key("r1", "mlp", "eager"), r.median_ms
    (True, 1.5)
    """
    KIND: ClassVar[str] = "bench"
    bench_key: str
    run_id: str
    config: str
    model: str
    system: str
    status: str
    device_name: str
    torch_version: str
    triton_version: str
    compiler_version: str
    error: str | None = None
    dtype: str | None = None
    median_ms: float | None = None
    q1_ms: float | None = None
    q3_ms: float | None = None
    n_repeats: int | None = None
    cold_s: float | None = None
    kernel_count: int | None = None
    copy_gbps: float | None = None
    membound_kernels: int | None = None
    bandwidth_fraction: float | None = None
    details_json: str | None = None
    quick: bool = False
    timestamp: datetime = field(default_factory=_now)
    host: str = field(default_factory=socket.gethostname)

    def __post_init__(self) -> None:
        if self.status not in BENCH_STATUSES:
            raise ValueError(f"bench status {self.status!r} is not one of {BENCH_STATUSES}")

    @classmethod
    def build(cls, *, run_id: str, model: str, system: str, attempt: int = 0,
              **columns: Any) -> "BenchRecord":
        """A record keyed by (run, model, system): one row per system and model per run.
        ``attempt`` > 0: the pair run again in the same run (``kiln bench --resume``), under
        a key of its own, since the store keeps the first row of a key."""
        parts = (run_id, model, system) + ((attempt,) if attempt else ())
        return cls(bench_key=derived_key(*parts), run_id=run_id, model=model, system=system,
                   **columns)


Record = (GraphRecord | KernelRecord | ModuleRecord | BinaryRecord | TrialRecord
          | FailureRecord | BenchRecord)


def _row(record: Record) -> dict[str, Any]:
    row = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    for name, value in row.items():
        if isinstance(value, tuple):
            row[name] = list(value)
    return row


def records_to_table(kind: str, records: Iterable[Record]) -> pa.Table:
    """Rows of ``kind`` as an Arrow table (no hashes, signatures or versions yet:
    ``Store.write`` adds them). A record of another kind is a TypeError."""
    check_kind(kind)
    rows = []
    for record in records:
        if getattr(record, "KIND", None) != kind:
            raise TypeError(f"cannot write {type(record).__name__} as {kind}")
        rows.append(_row(record))
    schema = schema_for(kind)
    fields = [f for f in schema
              if f.name not in ("content_hash", "signature", "schema_version")]
    return pa.Table.from_pylist(rows, schema=pa.schema(fields))
