"""A captured graph as portable data (``dump_graph``) and back (``load_graph``): what a graphs
record stores, so that lowering never needs the model's code.

``SerializedGraph`` holds, and nothing else (no weights: parameters and buffers are graph
inputs, fed by the user's module):

- ``program``: the graph as torch.export serializes an ``ExportedProgram`` (JSON text), the
  graph after kiln's decompositions presented as a flat program whose every placeholder is a
  user input (parameters, buffers and lifted constants included), so there is no state dict
  to write. Node metadata is cut to ``val`` (shapes, strides, dtypes, symbolic sizes): stack
  traces and module paths are most of torch's JSON and lowering reads none of them.
- ``call``: the calling convention (``CallConvention.to_json``: input kinds and targets, the
  pytree specs of the real call, scalar inputs export specialised, mutated buffers, dynamic
  size ranges), its constants left out.
- ``constants``: each lifted constant once, with its sha256: its bytes up to
  ``MAX_STORED_CONSTANT_BYTES`` (what a compiled module's convention embeds), else its spec
  only (referenced: lowering passes it as an input and needs no value; a serving process
  finds it on the module by name, as it does for any module).
- ``format``: ``GraphFormat``, kiln's format version and torch.export's schema version.

What torch's serializer does not cover, and how this module fills it: the roles of the
inputs (every one is a user input to torch here), the real call's pytree specs, specialised
scalars and mutated buffers (all in ``call``); constants without pickles (``constants``);
getitem nodes the deserializer adds for every result of a multi-result op, used or not
(dropped on load, so the graph reads back node for node); and a check that the graph read
back is the graph written: its key is computed again, and must match under the same torch.

Loading refuses with ``GraphFormatError``, naming both torch releases and the reason, a
graph written in a kiln format or torch.export schema major this process cannot read, or one
torch fails to deserialize. A graph written by another torch release that does read is keyed
again for this torch (the key includes the release), so its modules are this torch's.

Example:
    >>> import torch
    >>> from compiler.capture import capture_module
    >>> cg = capture_module(torch.nn.Linear(4, 2), (torch.randn(3, 4),))
    >>> back = load_graph(dump_graph(cg))
    >>> back.graph_key == cg.graph_key, [s.target for s in back.inputs]
    (True, ['weight', 'bias', None])
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
import torch.utils._pytree as pytree
from torch.export.exported_program import ModuleCallEntry, ModuleCallSignature
from torch.export.graph_signature import (ConstantArgument, ExportGraphSignature, InputKind,
                                          InputSpec, OutputKind, OutputSpec, SymIntArgument,
                                          TensorArgument)

from .capture import CapturedGraph
from .capture_key import compute_graph_key, torch_version_for_key
from .convention import (MAX_STORED_CONSTANT_BYTES, CallConvention, CaptureError, OpaqueSpec)

# Bump when what ``dump_graph`` writes changes shape; ``load_graph`` refuses other versions.
GRAPH_FORMAT_VERSION = 1
EXPORT_JSON, PT2_ARCHIVE = "torch.export-json", "torch.export-pt2"   # GraphFormat.writer
_SPECS = ("in_spec", "out_spec")


class GraphFormatError(CaptureError):
    """A stored graph this process cannot read; the message says which torch wrote it,
    which one is reading, and why."""


@dataclass(frozen=True)
class GraphFormat:
    """How a graph was written: kiln's format version, torch.export's writer (its JSON, or
    the ``.pt2`` archive where ``torch._export.serde`` is missing) and schema version.

    Example:
        >>> GraphFormat.from_json(GraphFormat(1, EXPORT_JSON, (8, 20)).to_json()).schema
        (8, 20)
    """
    version: int
    writer: str
    schema: tuple[int, int] | None

    def to_json(self) -> str:
        return json.dumps({"version": self.version, "writer": self.writer,
                           "schema": list(self.schema) if self.schema else None},
                          sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "GraphFormat":
        data = json.loads(text)
        schema = data.get("schema")
        return cls(int(data["version"]), str(data["writer"]), tuple(schema) if schema else None)


@dataclass(frozen=True)
class StoredConstant:
    """One lifted constant: its spec, sha256, and bytes (None: referenced, too big to store)."""
    name: str
    dtype: str
    size: tuple[int, ...]
    sha256: str
    data: bytes | None


@dataclass(frozen=True)
class SerializedGraph:
    """A captured graph as plain data (see the module doc); ``torch_version`` is the release
    that wrote it (``torch_version_for_key``)."""
    graph_key: str
    program: str
    call: str
    constants: tuple[StoredConstant, ...]
    format: GraphFormat
    torch_version: str


# --------------------------------------------------------------------------------------------
# Writing.
# --------------------------------------------------------------------------------------------

def dump_graph(captured: CapturedGraph) -> SerializedGraph:
    """``captured`` as plain data; raises ``GraphFormatError`` where torch cannot serialize
    the graph (the message names the reason)."""
    try:
        writer, schema, program = _write_program(_flat_program(captured))
    except Exception as err:   # noqa: BLE001 -- any serializer failure means "not storable"
        raise GraphFormatError(f"model {captured.name!r}: torch {torch_version_for_key()} "
                               f"cannot serialize the captured graph: "
                               f"{type(err).__name__}: {str(err)[:400]}") from err
    return SerializedGraph(
        graph_key=captured.graph_key, program=program, call=_call_json(captured),
        constants=tuple(_stored_constant(k, v) for k, v in captured.constants.items()),
        format=GraphFormat(GRAPH_FORMAT_VERSION, writer, schema),
        torch_version=torch_version_for_key())


def _flat_program(captured: CapturedGraph) -> torch.export.ExportedProgram:
    """The graph as an ExportedProgram with every input a user input and flat outputs, on
    a copy whose node metadata is only ``val``."""
    graph, node_map = torch.fx.Graph(), {}
    graph.output(graph.graph_copy(captured.gm.graph, node_map))
    for node in graph.nodes:
        node.meta = {"val": node.meta["val"]} if "val" in node.meta else {}
    gm = torch.fx.GraphModule(captured.gm, graph)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    outputs = next(n for n in graph.nodes if n.op == "output").args[0]
    signature = ExportGraphSignature(
        [InputSpec(InputKind.USER_INPUT, TensorArgument(n.name), None) for n in placeholders],
        [OutputSpec(OutputKind.USER_OUTPUT, _argument(v), None) for v in outputs])
    call = ModuleCallSignature(inputs=[], outputs=[],
                               in_spec=pytree.tree_flatten((tuple(placeholders), {}))[1],
                               out_spec=pytree.tree_flatten(tuple(outputs))[1])
    return torch.export.ExportedProgram(
        root=gm, graph=gm.graph, graph_signature=signature, state_dict={},
        range_constraints=_range_constraints(graph, captured.size_ranges),
        module_call_graph=[ModuleCallEntry("", call)], constants={})


def _argument(value: Any) -> Any:
    """An output of the flat program in torch.export's signature terms."""
    if not isinstance(value, torch.fx.Node):
        return ConstantArgument(name="", value=value)
    if isinstance(value.meta.get("val"), torch.SymInt):
        return SymIntArgument(value.name)
    return TensorArgument(value.name)


def _range_constraints(graph: torch.fx.Graph, size_ranges: dict) -> dict:
    """Each size symbol's range as torch.export records it, so that torch's own reader of
    the program sees them too (kiln reads them from the convention). Empty where torch's
    range type moved: the program then loads with torch's default ranges."""
    try:
        from torch.utils._sympy.numbers import int_oo
        from torch.utils._sympy.value_ranges import ValueRanges
    except ImportError:
        return {}
    symbols = {}
    for node in graph.nodes:
        for value in pytree.tree_leaves(node.meta.get("val")):
            for s in _sizes(value):
                expr = s.node.expr if isinstance(s, torch.SymInt) else None
                for sym in getattr(expr, "free_symbols", ()):
                    symbols[str(sym)] = sym
    return {sym: ValueRanges(lo, int_oo if hi is None else hi)
            for name, sym in symbols.items() if name in size_ranges
            for lo, hi in [size_ranges[name]]}


def _sizes(value: Any) -> list:
    if isinstance(value, torch.Tensor):
        return [*value.shape, *value.stride()]
    return [value] if isinstance(value, torch.SymInt) else []


def _write_program(ep: torch.export.ExportedProgram) -> tuple[str, tuple[int, int] | None, str]:
    """``(writer, schema version, text)``: torch.export's JSON, or the ``.pt2`` archive in
    base64 where ``torch._export.serde`` is missing (see ``compiler.capture``'s table)."""
    serde = _serde()
    if serde is None:
        buffer = io.BytesIO()
        torch.export.save(ep, buffer)
        return PT2_ARCHIVE, None, base64.b64encode(buffer.getvalue()).decode()
    serialize, _, _, schema = serde
    return EXPORT_JSON, schema, serialize(ep).exported_program.decode()


def _serde() -> tuple | None:
    """torch's exported-program (de)serializer and its schema version; None where torch
    moved them (``_write_program`` then writes the public ``.pt2`` archive)."""
    try:
        from torch._export.serde.schema import SCHEMA_VERSION
        from torch._export.serde.serialize import SerializedArtifact, deserialize, serialize
    except ImportError:
        return None
    return serialize, deserialize, SerializedArtifact, tuple(SCHEMA_VERSION)


def _call_json(captured: CapturedGraph) -> str:
    """The convention's JSON without constants (``SerializedGraph.constants`` has them); a
    pytree spec with no serialized form is written as null and named in ``no_serialized``."""
    missing = [name for name in _SPECS if not _serializable(getattr(captured, name))]
    convention = dataclasses.replace(captured.convention, constants={},
                                     **{name: None for name in missing})
    data = json.loads(convention.to_json())
    data["no_serialized"] = missing
    return json.dumps(data)     # in the convention's own order, which the module's meta keeps


def _serializable(spec: Any) -> bool:
    try:
        if spec is not None:
            pytree.treespec_dumps(spec)
        return True
    except (ValueError, TypeError, NotImplementedError, KeyError):
        return False


def _stored_constant(name: str, t: torch.Tensor) -> StoredConstant:
    raw = t.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy().tobytes() \
        if t.numel() else b""
    keep = len(raw) <= MAX_STORED_CONSTANT_BYTES
    return StoredConstant(name, str(t.dtype), tuple(t.shape), hashlib.sha256(raw).hexdigest(),
                          raw if keep else None)


# --------------------------------------------------------------------------------------------
# Reading.
# --------------------------------------------------------------------------------------------

def load_graph(stored: SerializedGraph) -> CapturedGraph:
    """The ``CapturedGraph`` of ``stored``, ready to lower; see the module doc for what is
    checked. Its ``graph_key`` is this torch's: the stored one when the same torch release
    wrote it (a mismatch is a ``GraphFormatError``), a new one otherwise."""
    where = (f"graph {stored.graph_key[:12]} (written by torch {stored.torch_version}, "
             f"read by torch {torch_version_for_key()})")
    _check_format(stored.format, where)
    try:
        gm = _read_program(stored.format, stored.program)
    except GraphFormatError:
        raise
    except Exception as err:   # noqa: BLE001 -- whatever torch's reader objects to
        raise GraphFormatError(f"{where}: torch cannot read it: {type(err).__name__}: "
                               f"{str(err)[:400]}") from err
    _drop_unused_getitems(gm)
    convention = _convention(stored.call, stored.constants, gm, where)
    key = compute_graph_key(gm, convention.inputs, constants=convention.constants)
    if stored.torch_version == torch_version_for_key() and key != stored.graph_key:
        raise GraphFormatError(f"{where}: it reads back as graph {key[:12]}, not as the graph "
                               f"that was written")
    fields = {f.name: getattr(convention, f.name) for f in dataclasses.fields(CallConvention)}
    return CapturedGraph(gm=gm, graph_key=key, **fields)


def _check_format(fmt: GraphFormat, where: str) -> None:
    if fmt.version != GRAPH_FORMAT_VERSION:
        raise GraphFormatError(f"{where}: kiln graph format {fmt.version}; this kiln reads "
                               f"format {GRAPH_FORMAT_VERSION}")
    serde = _serde()
    if fmt.writer == EXPORT_JSON and serde is None:
        raise GraphFormatError(f"{where}: written as torch.export JSON, which this torch "
                               f"cannot read (no torch._export.serde); relower it with the "
                               f"torch that wrote it, or capture the model again")
    if fmt.writer not in (EXPORT_JSON, PT2_ARCHIVE):
        raise GraphFormatError(f"{where}: unknown writer {fmt.writer!r}")
    if fmt.schema and serde is not None and fmt.schema[0] != serde[3][0]:
        raise GraphFormatError(
            f"{where}: torch.export schema {fmt.schema[0]}.{fmt.schema[1]}, and this torch "
            f"reads schema {serde[3][0]}.x only; relower it with a torch that reads it, or "
            f"capture the model again")


def _read_program(fmt: GraphFormat, text: str) -> torch.fx.GraphModule:
    if fmt.writer == PT2_ARCHIVE:
        return torch.export.load(io.BytesIO(base64.b64decode(text))).graph_module
    _, deserialize, artifact, _ = _serde()
    return deserialize(artifact(text.encode(), b"", b"", b"")).graph_module


def _drop_unused_getitems(gm: torch.fx.GraphModule) -> None:
    """torch's reader adds a getitem for every result of a multi-result op; the captured
    graph had only those used (export removes dead code), so the rest go."""
    dead = [n for n in gm.graph.nodes if n.op == "call_function"
            and n.target is operator.getitem and not n.users]
    for node in dead:
        gm.graph.erase_node(node)
    if dead:
        gm.recompile()


def _convention(text: str, constants: tuple[StoredConstant, ...], gm: torch.fx.GraphModule,
                where: str) -> CallConvention:
    """The stored convention with its constants and pytree specs restored, and its input
    names those of the graph torch read back."""
    data = json.loads(text)
    specs = {name: data.pop(name) for name in _SPECS}
    missing = set(data.pop("no_serialized", ()))
    base = CallConvention.from_json(json.dumps({**data, "in_spec": None, "out_spec": None}))
    names = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    if len(names) != len(base.inputs):
        raise GraphFormatError(f"{where}: {len(names)} graph inputs, {len(base.inputs)} in "
                               f"its calling convention")
    return dataclasses.replace(
        base, inputs=tuple(dataclasses.replace(s, name=n) for s, n in zip(base.inputs, names)),
        constants={c.name: _constant(c, where) for c in constants},
        **{name: OpaqueSpec(None) if name in missing else _spec(specs[name])
           for name in _SPECS})


def _spec(text: str | None) -> Any:
    """The pytree spec, or the text itself where its types are not registered here."""
    if text is None:
        return None
    try:
        return pytree.treespec_loads(text)
    except (ValueError, TypeError, NotImplementedError, KeyError, AttributeError):
        return OpaqueSpec(text)


def _constant(c: StoredConstant, where: str) -> torch.Tensor:
    """The constant's value, or a meta tensor of its spec where only its hash was stored."""
    dtype = getattr(torch, c.dtype.removeprefix("torch."))
    if c.data is None:
        return torch.empty(c.size, dtype=dtype, device="meta")
    if hashlib.sha256(c.data).hexdigest() != c.sha256:
        raise GraphFormatError(f"{where}: constant {c.name!r} does not match its sha256")
    flat = torch.frombuffer(bytearray(c.data), dtype=torch.uint8) if c.data else \
        torch.empty(0, dtype=torch.uint8)
    return flat.view(dtype).reshape(c.size)


__all__ = ["GRAPH_FORMAT_VERSION", "GraphFormat", "GraphFormatError", "SerializedGraph",
           "StoredConstant", "dump_graph", "load_graph"]
