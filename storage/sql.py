"""SQL over a store: DuckDB views named after the record kinds (``graphs``, ``modules``,
``kernels``, ``binaries``, ``trials``, ``failures``), for ``kiln store sql`` and notebooks.

By default the views hold what kiln's own reader returns (``Store.query``): one row per key,
rows whose content hash fails dropped with a warning, corrupt files skipped, older schema
versions migrated to the current columns. A query sees exactly the rows ``Store.load``
would trust, whatever duplicates concurrent writers or an unfinished compaction left. The
price is that each view is read into memory (Arrow, handed to DuckDB without a copy), so
``sql`` reads only the kinds a query names; ``binaries`` carries every cubin.

``raw=True`` points each view at the dataset's Parquet files as they are (DuckDB's
``read_parquet``, only the columns a query uses, a local store only): quicker on a large
store, but a key may appear more than once and nothing is verified. Columns a file's older
schema lacks read as NULL.

Needs DuckDB (``pip install 'kiln[query]'``).

Example:
    >>> import tempfile
    >>> from storage import FailureRecord, Store
    >>> store = Store(tempfile.mkdtemp())
    >>> _ = store.write("failures", [FailureRecord.build(stage="capture", key="s1", model="m",
    ...                              error_type="CaptureError", message="no export")])
    >>> sql(store, "SELECT stage, count(*) AS n FROM failures GROUP BY stage").to_pylist()
    [{'stage': 'capture', 'n': 1}]
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Iterable

import pyarrow as pa

from .files import is_local
from .schema import KINDS, schema_for
from .store import Store

if TYPE_CHECKING:
    import duckdb


def _duckdb() -> Any:
    try:
        import duckdb
    except ImportError:
        raise ImportError("SQL over a store needs DuckDB: pip install 'kiln[query]'") from None
    return duckdb


def connect(store: Store | str, kinds: Iterable[str] = KINDS, *,
            raw: bool = False) -> "duckdb.DuckDBPyConnection":
    """An in-memory DuckDB connection with one view per kind of ``kinds``.

    ``connect("kiln-store").sql("SELECT model, target FROM modules").df()`` is a DataFrame
    (pandas), ``.to_arrow_table()`` an Arrow table.
    """
    store = store if isinstance(store, Store) else Store(store)
    con = _duckdb().connect()
    for kind in kinds:
        if raw:
            _raw_view(con, store, kind)
        else:
            # A view over the Arrow table: DuckDB scans it in place.
            con.register(kind, store.query(kind))
    return con


def _raw_view(con: Any, store: Store, kind: str) -> None:
    if not is_local(store.fs):
        raise ValueError(f"raw views read local stores only; {store.root} is not local")
    paths = [f.path for f in store.files(kind)]
    if not paths:      # an empty dataset still has its columns
        con.register(kind, schema_for(kind).empty_table())
        return
    files = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
    con.execute(f"CREATE VIEW {kind} AS SELECT * FROM read_parquet([{files}], "
                f"union_by_name = true)")


def kinds_in(query: str) -> list[str]:
    """The record kinds a query names (as words; a name in a string literal counts too,
    which only costs reading that kind).

    >>> kinds_in("SELECT model FROM modules m JOIN graphs USING (graph_key)")
    ['graphs', 'modules']
    """
    return [kind for kind in KINDS if re.search(rf"\b{kind}\b", query, re.IGNORECASE)]


def sql(store: Store | str, query: str, *, raw: bool = False) -> pa.Table:
    """The result of ``query`` over ``store``'s views, as an Arrow table."""
    result = connect(store, kinds_in(query), raw=raw).sql(query)
    if result is None:         # a statement that returns nothing (SET, CREATE ...)
        return pa.table({})
    table = result.arrow()
    # DuckDB 2 hands back a batch reader, older releases a table.
    return table.read_all() if isinstance(table, pa.RecordBatchReader) else table
