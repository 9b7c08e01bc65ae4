"""Captured graphs as stored data (compiler.capture_serde, storage.graphs): every zoo graph
reads back with its key and lowers to the same code; formats this torch cannot read are
refused with the reason; constants, pytree specs torch cannot rebuild here and the .pt2
fallback writer; store rows from before graphs were loadable."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from compiler import capture_serde
from compiler.api import lower
from compiler.capture import capture_module, torch_version_for_key
from compiler.capture_serde import (PT2_ARCHIVE, GraphFormatError, dump_graph, load_graph)
from compiler.convention import MAX_STORED_CONSTANT_BYTES, OpaqueSpec
from pipeline.config import load_config
from pipeline.tasks import capture_model

REPO = Path(__file__).resolve().parent.parent
ZOOS = ("zoo-tiny.toml", "zoo-blocks.toml")


def _specs():
    return [spec for zoo in ZOOS for spec in load_config(REPO / "configs" / zoo).models]


def _node_types(gm: torch.fx.GraphModule) -> list:
    """What lowering reads of every node: its target and its value's sizes and strides."""
    out = []
    for node in gm.graph.nodes:
        val = node.meta.get("val")
        meta = (str(val.dtype), str(val.shape), str(val.stride())) \
            if isinstance(val, torch.Tensor) else None
        out.append((node.op, str(node.target), meta))
    return out


def test_every_zoo_graph_reads_back_with_its_key():
    """Tiny and blocks zoos (the dynamic GPT-2 block included): same key, same nodes, same
    calling convention; the dynamic block lowers to the same module source and kernels."""
    seen = []
    for spec in _specs():
        captured = capture_model(spec)
        back = load_graph(dump_graph(captured))
        assert back.graph_key == captured.graph_key, spec.name
        assert _node_types(back.gm) == _node_types(captured.gm), spec.name
        assert back.convention.to_json() == captured.convention.to_json(), spec.name
        assert back.example_args is None
        seen.append(spec.name)
        if spec.name == "gpt2_block_dynamic":
            assert back.size_ranges and back.mutated_buffers == ("k_cache", "v_cache")
            before, after = lower(captured, target="cuda"), lower(back, target="cuda")
            assert after.source == before.source and after.meta_json == before.meta_json
            assert [k.source for k in after.kernels] == [k.source for k in before.kernels]
    assert len(seen) == 10 and "gpt2_block_dynamic" in seen


class _Consts(torch.nn.Module):
    """Tensors held as plain attributes: export lifts them as constants."""

    def __init__(self):
        super().__init__()
        self.scale = torch.tensor([2.0, 3.0, 4.0, 5.0])
        self.table = torch.randn(MAX_STORED_CONSTANT_BYTES // 4 + 1)    # just over the limit

    def forward(self, x):
        return x * self.scale + self.table[:4]


def test_constants_are_stored_once_with_their_hash_or_referenced():
    module = _Consts().eval()
    captured = capture_module(module, (torch.randn(3, 4),), name="consts")
    stored = dump_graph(captured)
    by_name = {c.name: c for c in stored.constants}
    assert by_name["scale"].data == module.scale.numpy().tobytes()
    assert by_name["table"].data is None and len(by_name["table"].sha256) == 64
    assert '"constants": {}' in stored.call      # not a second time in the convention
    back = load_graph(stored)
    assert back.graph_key == captured.graph_key
    assert torch.equal(back.constants["scale"], module.scale)
    assert back.constants["table"].is_meta and back.constants["table"].shape == module.table.shape

    bad = dataclasses.replace(by_name["scale"], data=b"\0" * 16)
    with pytest.raises(GraphFormatError, match="does not match its sha256"):
        load_graph(dataclasses.replace(stored, constants=(bad, by_name["table"])))


def test_formats_this_torch_cannot_read_are_refused_with_the_reason():
    captured = capture_module(torch.nn.Linear(4, 2), (torch.randn(3, 4),), name="lin")
    stored = dump_graph(captured)
    major, minor = stored.format.schema
    old = dataclasses.replace(stored, torch_version="2.4.0", format=dataclasses.replace(
        stored.format, schema=(major - 1, 0)))
    with pytest.raises(GraphFormatError) as err:
        load_graph(old)
    text = str(err.value)
    assert "written by torch 2.4.0" in text and f"read by torch {torch_version_for_key()}" in text
    assert f"schema {major - 1}.0" in text and "capture the model again" in text
    newer = dataclasses.replace(stored, format=dataclasses.replace(stored.format, version=2))
    with pytest.raises(GraphFormatError, match="kiln graph format 2"):
        load_graph(newer)
    with pytest.raises(GraphFormatError, match="torch cannot read it"):
        load_graph(dataclasses.replace(stored, program=stored.program.replace('"nodes"', '"x"')))
    # Written by another torch release and readable: keyed again for this torch.
    other = dataclasses.replace(stored, torch_version="2.12.0", graph_key="f" * 64)
    assert load_graph(other).graph_key == captured.graph_key


def test_the_pt2_archive_writer_where_torch_serde_is_missing(monkeypatch):
    captured = capture_module(torch.nn.Linear(4, 2), (torch.randn(3, 4),), name="lin")
    json_written = dump_graph(captured)
    monkeypatch.setattr(capture_serde, "_serde", lambda: None)
    stored = dump_graph(captured)
    assert stored.format.writer == PT2_ARCHIVE and stored.format.schema is None
    assert load_graph(stored).graph_key == captured.graph_key
    with pytest.raises(GraphFormatError, match="no torch._export.serde"):
        load_graph(json_written)


def test_a_pytree_spec_this_process_cannot_rebuild_is_kept_as_text():
    """A relower worker has not imported the library that registered a call's types: the
    spec stays text, and the relowered module's convention writes it back unchanged."""
    captured = capture_module(torch.nn.Linear(4, 2), (torch.randn(3, 4),), name="lin")
    stored = dump_graph(captured)
    alien = json.dumps([1, {"type": "nowhere.Cache", "context": "null", "children_spec": []}])
    call = json.loads(stored.call)
    call["out_spec"] = alien
    back = load_graph(dataclasses.replace(stored, call=json.dumps(call)))
    assert back.out_spec == OpaqueSpec(alien)
    assert json.loads(back.convention.to_json())["out_spec"] == alien


def test_rows_before_loadable_graphs_say_capture_again(tmp_path):
    from storage import GraphRecord, Store
    from storage.graphs import GraphMissError, graph_record
    store = Store(tmp_path)
    captured = capture_module(torch.nn.Linear(4, 2), (torch.randn(3, 4),), name="lin")
    old = GraphRecord.build(graph_key=captured.graph_key, model="lin", input_signature=[],
                            torch_version=torch_version_for_key(), graph_text="g")
    store.write("graphs", [old])
    with pytest.raises(GraphMissError, match="capture the model again"):
        store.load_graph(captured.graph_key)
    store.write("graphs", [graph_record(captured, "lin")])
    assert store.load_graph(captured.graph_key).name == "lin"
    assert store.verify().ok


def test_a_v3_graphs_file_still_verifies_and_reads_as_not_loadable(tmp_path):
    """Rows written before the loadable columns were hashed over the first five columns;
    the columns added in v4 are null there and left out of the hash."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from storage import Store
    from storage.files import new_file_name
    from storage.graphs import GraphMissError
    from storage.integrity import hash_values
    from storage.schema import file_metadata, schema_for
    cells = ["a" * 64, "lin", "[]", torch_version_for_key(), "g"]
    added = {"program", "call_json", "constants", "graph_format"}
    v3 = [f for f in schema_for("graphs") if f.name not in added]
    row = dict(zip(["graph_key", "model", "input_signature", "torch_version", "graph_text"],
                   cells), source_key=None, content_hash=hash_values(cells),
               created_at=pa.scalar(0, pa.timestamp("us", tz="UTC")).as_py(), schema_version=3)
    table = pa.Table.from_pylist([row], pa.schema(v3, metadata=file_metadata("graphs", 3)))
    store = Store(tmp_path)
    store.fs.create_dir(store.dataset_dir("graphs"))
    pq.write_table(table, f"{store.dataset_dir('graphs')}/{new_file_name('part', 3)}")
    assert store.verify().ok and store.get("graphs", "a" * 64)["program"] is None
    with pytest.raises(GraphMissError, match="schema v4"):
        store.load_graph("a" * 64)
