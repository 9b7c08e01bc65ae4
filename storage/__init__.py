"""kiln's store: graphs, modules, kernels, binaries, trials and failures as Parquet datasets.

Example:
    >>> import tempfile
    >>> store = Store(tempfile.mkdtemp())
    >>> store.write("failures", [FailureRecord.build(stage="lower", key="g1", model="m",
    ...                                             error_type="KeyError", message="aten.foo")])
    ... # doctest: +ELLIPSIS
    '.../failures/part-v4-...parquet'
    >>> store.keys("failures") == [FailureRecord.build(stage="lower", key="g1", model="m",
    ...     error_type="KeyError", message="aten.foo").failure_key]
    True
"""
from .compact import CompactOptions, CompactReport
from .reader import CorruptFileWarning, CorruptStoreError, Issue, TamperedRowWarning
from .records import (BinaryRecord, FailureRecord, GraphRecord, KernelRecord, ModuleRecord,
                      TrialRecord, canonical_json, derived_key)
from .schema import (KEY_COLUMN, KINDS, SCHEMA_VERSION, StoreVersionError, schema_for)
from .signing import StoreKey, StoreKeyError
from .store import KindStats, Store, StoreMissError, StoreStats
from .verify import VerifyReport

__all__ = [
    "BinaryRecord", "CompactOptions", "CompactReport", "CorruptFileWarning",
    "CorruptStoreError", "FailureRecord", "GraphRecord", "Issue", "KEY_COLUMN", "KINDS",
    "KernelRecord", "KindStats", "ModuleRecord", "SCHEMA_VERSION", "Store", "StoreKey",
    "StoreKeyError", "StoreMissError", "StoreStats", "StoreVersionError", "TamperedRowWarning",
    "TrialRecord", "VerifyReport", "canonical_json", "derived_key", "schema_for",
]
