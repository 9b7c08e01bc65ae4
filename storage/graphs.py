"""Captured graphs to graphs records and back: the stored graph that lower, build, tune and
relower work from, so no worker but capture's ever needs the model's code.

``graph_record`` writes a ``CapturedGraph`` as a row (the canonical text that makes its key,
plus the loadable graph of ``compiler.capture_serde``); ``load_graph`` reads it back. A row
written before schema v4 names its graph but cannot be loaded: ``GraphMissError`` says to
capture the model again.

Example:
    >>> import tempfile, torch
    >>> from compiler.capture import capture_module
    >>> from storage import Store
    >>> cg = capture_module(torch.nn.Linear(4, 2), (torch.randn(3, 4),), name="lin")
    >>> store = Store(tempfile.mkdtemp())
    >>> path = store.write("graphs", [graph_record(cg, "lin")])
    >>> store.load_graph(cg.graph_key).graph_key == cg.graph_key
    True
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from .records import GraphRecord, canonical_json
from .store import StoreMissError

if TYPE_CHECKING:
    from compiler.capture import CapturedGraph
    from compiler.capture_serde import SerializedGraph

    from .store import Store


class GraphMissError(StoreMissError):
    """No loadable graph under the key: none stored, or one stored before graphs were kept
    loadable (schema v4). The message says which, and what to do."""


def graph_record(captured: "CapturedGraph", model: str, source_key: str | None = None,
                 serialized: "SerializedGraph | None" = None) -> GraphRecord:
    """The graphs row of ``captured`` (``serialized``: its ``dump_graph``, if made already).
    Raises ``GraphFormatError`` where torch cannot serialize the graph."""
    from compiler.capture import graph_text
    from compiler.capture_serde import dump_graph
    stored = serialized if serialized is not None else dump_graph(captured)
    return GraphRecord(
        graph_key=captured.graph_key, model=model,
        input_signature=canonical_json([dataclasses.asdict(s) for s in captured.inputs]),
        torch_version=stored.torch_version, graph_text=graph_text(captured.gm),
        source_key=source_key, program=stored.program, call_json=stored.call,
        constants=tuple({"name": c.name, "dtype": c.dtype, "size": list(c.size),
                         "sha256": c.sha256, "data": c.data} for c in stored.constants),
        graph_format=stored.format.to_json())


def serialized_graph(row: dict[str, Any]) -> "SerializedGraph":
    """A graphs row (``Store.get("graphs", key)``) as ``SerializedGraph``; ``GraphMissError``
    for a row that holds no loadable graph."""
    from compiler.capture_serde import GraphFormat, SerializedGraph, StoredConstant
    if row.get("program") is None:
        raise GraphMissError(
            f"graph {row['graph_key'][:12]} of model {row['model']!r} was stored before kiln "
            f"kept loadable graphs (schema v4): capture the model again (kiln capture CONFIG)")
    return SerializedGraph(
        graph_key=row["graph_key"], program=row["program"], call=row["call_json"],
        constants=tuple(StoredConstant(c["name"], c["dtype"], tuple(c["size"]), c["sha256"],
                                       c["data"]) for c in row["constants"] or ()),
        format=GraphFormat.from_json(row["graph_format"]), torch_version=row["torch_version"])


def load_graph(store: "Store", graph_key: str) -> "CapturedGraph":
    """The stored graph ``graph_key`` as a ``CapturedGraph``, keyed for this torch (see
    ``compiler.capture_serde.load_graph``; ``GraphFormatError`` where it cannot be read)."""
    import pyarrow.compute as pc
    from compiler.capture_serde import load_graph as load
    key = pc.field("graph_key") == graph_key
    rows = store.query("graphs", key & pc.field("program").is_valid()).to_pylist()
    row = rows[0] if rows else store.get("graphs", graph_key)   # for the message
    if row is None:
        raise GraphMissError(f"graph {graph_key} is not in store {store.root}")
    captured = load(serialized_graph(row))
    return captured if captured.name else dataclasses.replace(captured, name=row["model"])


__all__ = ["GraphMissError", "graph_record", "load_graph", "serialized_graph"]
