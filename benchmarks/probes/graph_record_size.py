"""Bytes per graph record of a store, with and without its loadable program (issue 19).

    python benchmarks/probes/graph_record_size.py STORE [STORE ...]

Reads every graphs file of each store, then writes all its rows into one Parquet file with
the store's compression twice: as stored, and without the columns issue 19 added (the
serialized program, its calling convention, constants and format), which leaves what a
record held before (``graph_text`` and the signature). Rewriting into one file takes the
per-file overhead of many small files out of both figures.
"""
from __future__ import annotations

import glob
import os
import sys
import tempfile

import pyarrow.dataset as ds
import pyarrow.parquet as pq

ADDED = ("program", "call_json", "constants", "graph_format")   # issue 19's columns


def _size_of(table, compression: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "rows.parquet")
        pq.write_table(table, path, compression=compression)
        return os.path.getsize(path)


def report(root: str) -> str:
    files = glob.glob(os.path.join(root, "graphs", "**", "*.parquet"), recursive=True)
    if not files:
        return f"{root}: no graphs files"
    table = ds.dataset(files, format="parquet").to_table()
    compression = pq.ParquetFile(files[0]).metadata.row_group(0).column(0).compression.lower()
    before = table.drop_columns([c for c in ADDED if c in table.schema.names])
    n = table.num_rows
    on_disk = sum(os.path.getsize(f) for f in files)
    return (f"{root}: {n} graphs, {on_disk} B on disk; rewritten in one {compression} file: "
            f"{_size_of(table, compression) // n} B per graph with the loadable program, "
            f"{_size_of(before, compression) // n} B without it (as before issue 19)")


def main(argv=None) -> int:
    roots = (argv if argv is not None else sys.argv[1:])
    if not roots:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    for root in roots:
        print(report(root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
