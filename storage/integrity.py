"""Per-row content hashes for the kinds that hold code or binaries, and their checks.

A row's ``content_hash`` is sha256 over its ``HASHED_COLUMNS`` (key included), each value
tagged with its type and length so that no two different rows encode to the same bytes;
trailing nulls are left out, so a nullable column appended to a kind's list leaves the
hashes of older rows (null there) as they were. The
hash is computed when a record is written and checked whenever rows are read back, so a
flipped byte in a cubin or an edited source is a reported miss, never served code.

Example:
    >>> import pyarrow as pa
    >>> t = pa.table({"kernel_key": ["k"], "name": ["f"], "source": ["def f(): pass"],
    ...               "meta_json": ["{}"]})
    >>> h = row_hashes("kernels", t)
    >>> t = t.append_column("content_hash", pa.array(h))
    >>> bad_rows("kernels", t)
    []
"""
from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

import pyarrow as pa

from .schema import HASHED_COLUMNS


def _encode(value: Any) -> bytes:
    """Type-tagged, length-prefixed bytes of one cell (str, bytes, None, list, dict, int)."""
    if value is None:
        return b"n"
    if isinstance(value, bytes):
        tag, data = b"b", value
    elif isinstance(value, str):
        tag, data = b"s", value.encode()
    else:
        # Lists (kernel_keys) and lists of structs (kernels, constants): canonical JSON,
        # bytes inside them as hex.
        tag, data = b"j", json.dumps(value, sort_keys=True, separators=(",", ":"),
                                     default=_hex).encode()
    return tag + struct.pack("<Q", len(data)) + data


def _hex(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot hash a {type(value).__name__}")


def hash_values(values: list[Any]) -> str:
    """sha256 hex of the encoded cells, in order."""
    digest = hashlib.sha256()
    for value in values:
        digest.update(_encode(value))
    return digest.hexdigest()


def is_hashed(kind: str) -> bool:
    return kind in HASHED_COLUMNS


def row_hashes(kind: str, table: pa.Table) -> list[str]:
    """The content hash every row of ``table`` should carry."""
    columns = [table.column(name).to_pylist() for name in HASHED_COLUMNS[kind]]
    return [hash_values(_without_trailing_nulls(cells)) for cells in zip(*columns)]


def _without_trailing_nulls(cells: tuple) -> list[Any]:
    """The cells up to the last non-null one (see the module doc).

    >>> _without_trailing_nulls(("k", None, "x", None, None))
    ['k', None, 'x']
    """
    end = len(cells)
    while end and cells[end - 1] is None:
        end -= 1
    return list(cells[:end])


def bad_rows(kind: str, table: pa.Table) -> list[int]:
    """Indices of rows whose stored ``content_hash`` does not match their content."""
    if not is_hashed(kind) or table.num_rows == 0:
        return []
    stored = table.column("content_hash").to_pylist()
    return [i for i, (want, got) in enumerate(zip(row_hashes(kind, table), stored))
            if want != got]


def with_hashes(kind: str, table: pa.Table) -> pa.Table:
    """``table`` with ``content_hash`` filled where missing, checked where given.

    A caller-supplied hash that disagrees with the content is a ValueError: writing it would
    plant a row that every later read rejects.
    """
    if not is_hashed(kind):
        return table
    computed = row_hashes(kind, table)
    if "content_hash" not in table.column_names:
        return table.append_column("content_hash", pa.array(computed, pa.string()))
    index = table.column_names.index("content_hash")
    given = table.column(index).to_pylist()
    for i, (want, got) in enumerate(zip(computed, given)):
        if got is not None and got != want:
            raise ValueError(f"{kind}: row {i} has content_hash {got[:12]}... but its "
                             f"content hashes to {want[:12]}...")
    return table.set_column(index, "content_hash", pa.array(computed, pa.string()))
