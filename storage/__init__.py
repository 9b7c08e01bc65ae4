"""kiln's store: graphs, modules, kernels, binaries, trials, failures and bench rows as
Parquet datasets.

Example:
    >>> import tempfile
    >>> from storage import FailureRecord, Store
    >>> store = Store(tempfile.mkdtemp())
    >>> store.write("failures", [FailureRecord.build(stage="lower", key="g1", model="m",
    ...                                             error_type="KeyError", message="aten.foo")])
    ... # doctest: +ELLIPSIS
    '.../failures/part-v5-...parquet'
    >>> store.keys("failures") == [FailureRecord.build(stage="lower", key="g1", model="m",
    ...     error_type="KeyError", message="aten.foo").failure_key]
    True
"""
# Where each public name lives; imported on first use, so a serving process that opens a
# store and loads a model never imports what it does not run (pyarrow.dataset and compute
# cost ~0.15 s; see ``Store.rows``).
_PUBLIC = {
    **dict.fromkeys(("CompactOptions", "CompactReport"), ".compact"),
    **dict.fromkeys(("CorruptFileWarning", "CorruptStoreError", "Issue", "TamperedRowWarning"),
                    ".reader"),
    **dict.fromkeys(("BenchRecord", "BinaryRecord", "FailureRecord", "GraphRecord", "KernelRecord",
                     "ModuleRecord", "TrialRecord", "canonical_json", "derived_key"),
                    ".records"),
    **dict.fromkeys(("KEY_COLUMN", "KINDS", "SCHEMA_VERSION", "StoreVersionError",
                     "schema_for"), ".schema"),
    **dict.fromkeys(("KindStats", "Store", "StoreMissError", "StoreStats"), ".store"),
    **dict.fromkeys(("StoreKey", "StoreKeyError"), ".signing"),
    "ModelMissError": ".deploy", "VerifyReport": ".verify",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib
        return getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    raise AttributeError(f"module 'storage' has no attribute {name!r}")
