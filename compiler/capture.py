"""Capture: a PyTorch module (or a ``.pt2`` file) → a flat, functional ATen FX graph + a key.

``capture_module`` runs ``torch.export.export(strict=False)``, then kiln's decompositions
(``decomposition_table``); a static-shape module called with plain tensors gets the same
graph from one trace instead (``capture_trace``). It returns a ``CapturedGraph``: the graph
module whose placeholders are every input in order (parameters, buffers, lifted constants, then the flattened user
inputs), a spec per input, the pytree specs of the user call, and ``graph_key``, a sha256 of
the canonical graph text (``graph_text``) plus the input signature and the torch version.
Parameters and buffers stay graph *inputs*: the user's weights live in the user's module and
are fed on every call (``flatten_call``), never baked into generated code. Library types in
the call or its result (transformers' KV caches) are registered with torch's pytree first
(``capture_pytree``); ``capture_export`` calls torch.export. ``capture_serde`` writes a
captured graph as portable data and reads it back (the store's graphs records).

Private torch APIs the compiler uses, where, and the fallback when one is missing or moves
(the Triton ones are in ``compiler.kernels``; ``tests/test_architecture.py`` checks that every
private API in the code is listed here or there):

| API | where | fallback |
|---|---|---|
| ``torch._functorch.aot_autograd`` (``aot_export_module``) | capture_trace | capture through ``torch.export`` + ``run_decompositions`` (a warning says once why) |
| ``torch._functorch.aot_autograd`` (``make_boxed_func``) | backend | ``functorch.compile.make_boxed_func`` |
| ``torch._export.utils`` (placeholder naming, CIA preservation, export's compiling flags) | capture_trace | as aot_export_module: the export path; without the flags, the trace runs without them (a model that branches on ``is_exporting`` then keys apart from its ``.pt2``) |
| ``torch._decomp`` (``get_decompositions``, ``core_aten_decompositions``) | decompositions | ``torch.export.default_decompositions`` where it exists; none below torch 2.6 |
| ``torch._dynamo`` (``register_backend``, ``list_backends``, ``backends.common.aot_autograd``) | backend | none: the documented way to write a torch.compile backend |
| ``torch._guards`` (``detect_fake_mode``) | passes | none: compile_fx of fake inputs needs it |
| ``torch._subclasses`` (``FakeTensorMode``) | capture_device | capture traces the real tensors on their own device, with a warning that the key may differ |
| ``torch._ops`` (``OpOverload``, ``OpOverloadPacket``, ``HigherOrderOperator``) | capture, graph, lowering | none: the types every FX node target has |
| ``torch._prims_common`` (type promotion, ``suggest_memory_format``) | lowering | promotion: none; ``suggest_memory_format``: the plain channels-last stride test |
| ``torch._C`` (``_cuda_getDriverVersion``) | autotune.measurement | the driver nvidia-smi reports, read first |
| ``torch._export.serde`` (``serialize``, ``deserialize``, ``SerializedArtifact``, ``schema.SCHEMA_VERSION``) | capture_serde | ``torch.export.save`` / ``load``: the ``.pt2`` archive, stored in base64 (``GraphFormat.writer`` says which); a graph written as JSON is refused, naming both torch releases, where the reader is missing |
| ``torch.utils._pytree`` (``_private_register_pytree_node``, ``_deregister_pytree_node``) | capture_pytree | no stand-in on the serving path: the library registers a stored spec's types itself (transformers: its exporter's import, seconds in some releases) |
| ``torch.utils._sympy`` (``ValueRanges``, ``int_oo``) | capture_serde | the program is written without range constraints; kiln keeps the ranges in the convention either way |

Example:
    >>> import torch
    >>> cg = capture_module(torch.nn.Linear(4, 2), (torch.randn(3, 4),))
    >>> [(s.kind, s.target) for s in cg.inputs]
    [('parameter', 'weight'), ('parameter', 'bias'), ('user', None)]
    >>> len(cg.graph_key)
    64
"""
from __future__ import annotations

import dataclasses
import functools
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.fx
import torch.utils._pytree as pytree
from torch.export.graph_signature import InputKind, OutputKind

from .capture_device import capture_on_cpu
from .capture_key import (GRAPH_TEXT_VERSION, TINY_CONSTANT_NUMEL,  # noqa: F401
                          compute_graph_key, graph_text, torch_version_for_key)
from .capture_export import export_program
from .capture_pytree import output_check, register_library_pytrees
from .capture_trace import trace_static
from .convention import CallConvention, CaptureError, InputSpec, random_input
from .decompositions import decomposition_table
from .ir import SUPPORTED_DTYPES

# What a model export cannot capture as one graph runs with instead (README, "Graph breaks").
_NOT_EXPORTABLE_HINT = ("\n(A model that torch.export cannot capture, e.g. one with data-"
                        "dependent control flow or a print, runs under torch.compile(model, "
                        "backend='kiln'), which compiles the graphs between its breaks.)")

_KIND_NAMES = {
    InputKind.PARAMETER: "parameter",
    InputKind.BUFFER: "buffer",
    InputKind.CONSTANT_TENSOR: "constant",
    InputKind.USER_INPUT: "user",
}


@dataclass(frozen=True, eq=False, kw_only=True)
class CapturedGraph(CallConvention):
    """A captured graph and everything needed to call it with a live module.

    Outputs of ``gm`` are a flat tuple: the new values of ``mutated_buffers`` first (in that
    order), then the flattened user outputs (``out_spec``). The calling convention (input
    specs, pytree specs, constants: ``CallConvention``) is what a store keeps to call the
    compiled module without capturing again. ``example_args`` is the ``(args, kwargs)`` the
    graph was captured with, when known.

    Example:
        >>> import torch
        >>> m = torch.nn.Linear(4, 2)
        >>> cg = capture_module(m, (torch.randn(3, 4),))
        >>> out = cg.finish_call(m, cg.gm(*cg.flatten_call(m, (torch.ones(3, 4),))))
        >>> torch.allclose(out, m(torch.ones(3, 4)))
        True
    """
    gm: torch.fx.GraphModule
    graph_key: str
    example_args: Any = field(default=None, repr=False)

    @property
    def convention(self) -> CallConvention:
        """The calling convention alone (what the store keeps with the compiled module)."""
        return CallConvention(**{f.name: getattr(self, f.name)
                                 for f in dataclasses.fields(CallConvention)})

    def example_inputs(self, module: torch.nn.Module) -> list[torch.Tensor]:
        """Flat inputs for ``gm``: the live state of ``module`` plus the example user inputs
        the graph was captured with, or, when those are unknown (an old ``.pt2``), random
        tensors drawn from the user input specs (seeded, never zeros).

        Example:
            >>> import torch
            >>> m = torch.nn.Linear(4, 2)
            >>> [t.shape for t in capture_module(m, (torch.randn(3, 4),)).example_inputs(m)]
            [torch.Size([2, 4]), torch.Size([2]), torch.Size([3, 4])]
        """
        if self.example_args is not None:
            return self.flatten_call(module, *self.example_args)
        state = self.state_inputs(module)
        gen = torch.Generator().manual_seed(0)
        return [state[i] if i in state else random_input(spec, gen)
                for i, spec in enumerate(self.inputs)]


# --------------------------------------------------------------------------------------------
# Capture.
# --------------------------------------------------------------------------------------------

def capture_module(module: torch.nn.Module, example_args: Any, example_kwargs: Any = None, *,
                   dynamic_shapes: Any = None, name: str | None = None) -> CapturedGraph:
    """Export ``module`` at ``example_args`` and capture it. The module's train/eval mode is
    left as the caller set it (train mode captures train behaviour: BatchNorm statistics
    updates appear as ``mutated_buffers``). It is traced on CPU wherever its tensors live
    (``capture_device``): a GPU capture and a CPU capture give one graph and one key.

    Example:
        >>> import torch
        >>> m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()).eval()
        >>> cg = capture_module(m, (torch.randn(2, 4),), name="tiny")
        >>> cg.name, cg.mutated_buffers
        ('tiny', ())
    """
    name = name or type(module).__name__
    if not isinstance(module, torch.nn.Module):
        raise CaptureError(f"model {name!r}: expected a torch.nn.Module, got "
                           f"{type(module).__name__}")
    args = example_args if isinstance(example_args, tuple) else (example_args,)
    kwargs = dict(example_kwargs or {})
    register_library_pytrees(module, args, kwargs)     # e.g. transformers' KV caches
    _check_example_dtypes(name, args, kwargs)
    args, kwargs = _unaliased_examples(args, kwargs)
    if dynamic_shapes is not None:
        args, kwargs = _dense_examples(args, kwargs)
    return capture_on_cpu(functools.partial(_trace_module, module, dynamic_shapes, name),
                          module, args, kwargs, name)


def _unaliased_examples(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Example tensors that share storage with an earlier one (the same ``x`` passed as a
    self-attention's query, key and value) as copies. torch.export specializes its program
    to that aliasing: it reads every one of them through the last placeholder, so calls with
    distinct tensors computed ``attention(v, v, v)``. The compiled module serves distinct
    inputs, and aliased ones too when it writes into none of them."""
    seen: set[int] = set()

    def own(t):
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return t
        try:
            storage = t.untyped_storage().data_ptr()
        except (RuntimeError, NotImplementedError):   # a tensor subclass without storage
            return t
        if storage in seen and t.numel():
            return t.clone()
        seen.add(storage)
        return t
    return pytree.tree_map(own, (args, kwargs))


def _dense_examples(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Example tensors with gaps (a slice such as ``ids[:, -1:]`` keeps its parent's
    strides) as dense copies. With dynamic dims export would keep such a stride as a
    constant or a fresh symbol no input size gives, so calls at other sizes could not be
    laid out as compiled; a dense example compiles a layout every size has (inputs laid
    out otherwise are copied into it at call time)."""
    def dense(t):
        return t.contiguous() if isinstance(t, torch.Tensor) and not _is_dense(t) else t
    return pytree.tree_map(dense, (args, kwargs))


def _is_dense(t: torch.Tensor) -> bool:
    """No gaps between elements, in any dim order; size-1 dims' strides do not matter."""
    expected = 1
    for size, stride in sorted(((n, s) for n, s in zip(t.shape, t.stride()) if n != 1),
                               key=lambda p: p[1]):
        if stride != expected:
            return False
        expected *= size
    return True


def _trace_module(module: torch.nn.Module, dynamic_shapes: Any, name: str, args: tuple,
                  kwargs: dict) -> CapturedGraph:
    """The one-trace path where it applies, else ``torch.export``."""
    failed = None
    with output_check(module, CaptureError, name):
        if dynamic_shapes is None and not kwargs:
            fast, failed = _capture_static(module, args, name)
            if fast is not None:
                return fast
        try:
            ep = export_program(module, args, kwargs, dynamic_shapes)
        except CaptureError:
            raise                         # output_check's, naming the output type
        except Exception as err:
            raise CaptureError(f"model {name!r}: torch.export failed: {_summary(err)}"
                               f"{_NOT_EXPORTABLE_HINT}") from err
    if failed:   # export managed where the one trace failed: that path is broken here
        _warn_fast_path_failed(torch_version_for_key(), failed)
    return _capture(ep, name, (args, kwargs))


def _capture_static(module: torch.nn.Module, args: tuple, name: str
                    ) -> tuple[CapturedGraph | None, str | None]:
    """The one-trace path (``capture_trace``): the graph, or None and why it failed (None
    where it does not apply). None sends the caller to ``torch.export``, which also gives
    the proper error for a module this path fails on."""
    try:
        traced = trace_static(module, args)
    except CaptureError:
        raise             # a refusal of kiln's own (output_check): export would repeat it
    except Exception as err:  # noqa: BLE001 -- export retraces it and reports what is wrong
        return None, type(err).__name__
    if traced is None:
        return None, None
    return _build(*traced, {}, {}, name, (args, {})), None


@functools.lru_cache(maxsize=None)
def _warn_fast_path_failed(torch_version: str, error: str) -> None:
    """Once per process and kind of failure: the one-trace path failed where it should have
    applied (a torch whose private tracing hooks changed), so every capture now pays for
    torch.export's two traces. Correct either way, but worth a report."""
    warnings.warn(f"kiln: the one-trace capture failed on torch {torch_version} ({error}); "
                  f"capturing with torch.export instead, which is slower", RuntimeWarning,
                  stacklevel=4)


def capture_exported(ep: torch.export.ExportedProgram, name: str | None = None,
                     example: Any = None) -> CapturedGraph:
    """Capture an ``ExportedProgram`` (e.g. from ``load_pt2``). The program itself is not
    modified. ``example`` (``(args, kwargs)``) are the example inputs; by default those
    saved in the program (torch >= 2.6).

    Example:
        >>> import torch
        >>> ep = torch.export.export(torch.nn.ReLU(), (torch.randn(3),))
        >>> capture_exported(ep, "relu").inputs[0].kind
        'user'
    """
    if example is None:
        example = getattr(ep, "example_inputs", None)
    return _capture(ep, name or "ExportedProgram", example)


def load_pt2(path: str | Path) -> torch.export.ExportedProgram:
    """``torch.export.load`` with a ``CaptureError`` naming the file when it is missing or
    not a valid ``.pt2`` archive.

    Example:
        >>> try:
        ...     load_pt2("/nonexistent/model.pt2")
        ... except CaptureError as err:
        ...     print(err)
        /nonexistent/model.pt2: no such .pt2 file
    """
    path = Path(path)
    if not path.is_file():
        raise CaptureError(f"{path}: no such .pt2 file")
    try:
        return torch.export.load(str(path))
    except Exception as err:
        raise CaptureError(f"{path}: not a loadable torch.export .pt2 file: "
                           f"{_summary(err)}") from err


def _capture(ep: torch.export.ExportedProgram, name: str, example: Any) -> CapturedGraph:
    """Decompose ``ep`` and build the CapturedGraph; ``ep`` is left untouched."""
    try:
        ep = ep.run_decompositions(decomposition_table())
    except Exception as err:
        raise CaptureError(f"model {name!r}: decomposition failed: {_summary(err)}") from err
    constants = {k: v for k, v in ep.constants.items() if isinstance(v, torch.Tensor)}
    return _build(ep.graph_module, ep.graph_signature, ep.call_spec.in_spec,
                  ep.call_spec.out_spec, constants, _size_ranges(ep), name, example)


def _build(exported: torch.fx.GraphModule, sig: Any, in_spec: Any, out_spec: Any,
           constants: dict, size_ranges: dict, name: str, example: Any) -> CapturedGraph:
    """The CapturedGraph of a decomposed graph and its export signature (either capture
    path: ``torch.export`` or ``capture_trace.trace_static``)."""
    tensor_inputs, scalars = _split_inputs(exported, sig, name)
    gm, node_map = _copy_graph_module(exported)
    _drop_scalar_placeholders(gm, [node_map[n] for n in _placeholders(exported)
                                   if n not in tensor_inputs])
    inputs = tuple(_input_spec(node_map[node], spec, name)
                   for node, spec in tensor_inputs.items())
    _check_dtypes(name, inputs)
    n_user = sum(1 for s in inputs if s.kind == "user") + len(scalars)
    if in_spec is not None and n_user != in_spec.num_leaves:
        raise CaptureError(f"model {name!r}: {n_user} user inputs in the graph, but the call "
                           f"spec has {in_spec.num_leaves} leaves")
    mutated = _mutated_buffers(sig, name)
    key = compute_graph_key(gm, inputs, constants=constants)
    return CapturedGraph(gm=gm, graph_key=key, inputs=inputs, mutated_buffers=mutated,
                         in_spec=in_spec, out_spec=out_spec, constants=constants, name=name,
                         scalar_inputs=scalars, example_args=example, size_ranges=size_ranges)


def _size_ranges(ep: torch.export.ExportedProgram) -> dict[str, tuple[int, int | None]]:
    """Each size symbol's range as export promises it (the ShapeEnv's own ranges start at 2
    for dims declared from 1, since tracing assumes sizes 0 and 1 away)."""
    out = {}
    for sym, r in ep.range_constraints.items():
        out[str(sym)] = (_finite(r.lower) or 0, _finite(r.upper))
    return out


def _finite(bound) -> int | None:
    """An int bound, or None for infinity (sympy's oo or torch's int_oo)."""
    try:
        return int(bound)
    except (TypeError, ValueError, OverflowError, AttributeError):
        return None


def _copy_graph_module(gm: torch.fx.GraphModule) -> tuple[torch.fx.GraphModule, dict]:
    """A new GraphModule over a copy of ``gm``'s graph (node meta copied shallowly) and the
    old → new node map, so edits here never reach the ExportedProgram. The copy may rename
    placeholders that shadow builtins (``input`` → ``input_1``)."""
    graph, node_map = torch.fx.Graph(), {}
    graph.output(graph.graph_copy(gm.graph, node_map))
    return torch.fx.GraphModule(gm, graph), node_map


def _placeholders(gm: torch.fx.GraphModule) -> list[torch.fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "placeholder"]


def _split_inputs(gm: torch.fx.GraphModule, sig: Any, name: str) -> tuple[dict, tuple]:
    """Pair each tensor placeholder of the exported ``gm`` with its input spec (in graph
    order), and collect the non-tensor user inputs export specialised into the graph as
    ``(user leaf index, value)``: they are unused, so kiln drops their placeholders."""
    specs = {getattr(s.arg, "name", None): s for s in sig.input_specs}
    leaf_of = {getattr(s.arg, "name", None): i for i, s in
               enumerate(s for s in sig.input_specs if s.kind == InputKind.USER_INPUT)}
    pairs, scalars = {}, []
    for node in _placeholders(gm):
        spec, val = specs.get(node.name), node.meta.get("val")
        if spec is None:
            raise CaptureError(f"model {name!r}: graph input {node.name!r} is missing from "
                               f"the export signature")
        if isinstance(val, torch.Tensor) or spec.kind != InputKind.USER_INPUT:
            pairs[node] = spec
        elif isinstance(val, (torch.SymInt, torch.SymFloat, torch.SymBool)) or node.users:
            raise CaptureError(f"model {name!r}: dynamic scalar input {node.name!r} is not "
                               f"supported; pass it as a tensor or a static value")
        else:
            scalars.append((leaf_of[node.name], val))
    # Constant user inputs that export gave no placeholder at all.
    placeholder_names = {n.name for n in _placeholders(gm)}
    scalars += [(leaf_of[arg_name], getattr(s.arg, "value", None))
                for arg_name, s in specs.items()
                if s.kind == InputKind.USER_INPUT and arg_name not in placeholder_names]
    return pairs, tuple(sorted(scalars, key=lambda kv: kv[0]))


def _drop_scalar_placeholders(gm: torch.fx.GraphModule, nodes: Sequence[torch.fx.Node]) -> None:
    for node in nodes:
        gm.graph.erase_node(node)
    if nodes:
        gm.recompile()


def _input_spec(node: torch.fx.Node, spec: Any, name: str) -> InputSpec:
    kind = _KIND_NAMES.get(spec.kind)
    if kind is None:
        raise CaptureError(f"model {name!r}: unsupported graph input {node.name!r} of kind "
                           f"{spec.kind.name} (kiln captures tensors, parameters, buffers "
                           f"and constants only)")
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        raise CaptureError(f"model {name!r}: input {node.name!r} has no tensor metadata")
    dynamic = tuple(d for d, s in enumerate(val.shape) if not isinstance(s, int))
    return InputSpec(
        name=node.name, kind=kind, target=None if kind == "user" else spec.target,
        size=tuple(_hint(s) for s in val.shape), stride=tuple(_hint(s) for s in val.stride()),
        dtype=str(val.dtype), device=val.device.type, dynamic_dims=dynamic)


def _mutated_buffers(sig: Any, name: str) -> tuple[str, ...]:
    """Targets of BUFFER_MUTATION outputs; they must precede the user outputs."""
    mutated, seen_user = [], False
    for spec in sig.output_specs:
        if spec.kind == OutputKind.BUFFER_MUTATION and not seen_user:
            mutated.append(spec.target)
        elif spec.kind == OutputKind.USER_OUTPUT:
            seen_user = True
        elif spec.kind == OutputKind.USER_INPUT_MUTATION:
            raise CaptureError(
                f"model {name!r} mutates its input {spec.target!r} in place (e.g. an "
                f"inplace=True op applied directly to an input); kiln compiles functional "
                f"inference graphs: make that op out-of-place")
        elif spec.kind == OutputKind.PARAMETER_MUTATION:
            # the compiled module would repeat the write on every call (RWKV rescales its
            # weights in place on its first eval call, behind a Python flag export reads once)
            raise CaptureError(
                f"model {name!r} writes to its parameter {spec.target!r} in place during "
                f"forward; kiln compiles graphs that only read parameters: do the write "
                f"before compiling (a write done once, on the first call, is done by running "
                f"the model once eagerly)")
        else:
            raise CaptureError(f"model {name!r}: unsupported graph output {spec.arg} of kind "
                               f"{spec.kind.name}")
    return tuple(mutated)


def _hint(s: Any) -> int:
    """The example value of a (possibly symbolic) size."""
    if isinstance(s, int):
        return s
    hint = getattr(s.node, "hint", None)  # SymNode.hint: the example value (torch 2.1+)
    if hint is None:
        raise CaptureError(f"symbolic size {s} has no example value (data-dependent size)")
    return int(hint)


def _check_example_dtypes(name: str, args: tuple, kwargs: dict) -> None:
    """Refuse unsupported dtypes before export, naming each input by its pytree path."""
    flat, _ = pytree.tree_flatten_with_path((args, kwargs))
    bad = [f"{('args', 'kwargs')[path[0].idx]}{pytree.keystr(path[1:])}: {leaf.dtype}"
           for path, leaf in flat
           if isinstance(leaf, torch.Tensor) and leaf.dtype not in SUPPORTED_DTYPES]
    if bad:
        raise CaptureError(f"model {name!r}: unsupported input dtype(s): {'; '.join(bad)} "
                           f"(kiln supports {_supported_names()})")


def _check_dtypes(name: str, inputs: Sequence[InputSpec]) -> None:
    supported = {str(d) for d in SUPPORTED_DTYPES}
    bad = [f"{s.name} ({s.kind}{' ' + s.target if s.target else ''}): {s.dtype}"
           for s in inputs if s.dtype not in supported]
    if bad:
        raise CaptureError(f"model {name!r}: unsupported input dtype(s): {'; '.join(bad)} "
                           f"(kiln supports {_supported_names()})")


def _supported_names() -> str:
    return ", ".join(sorted(str(d).removeprefix("torch.") for d in SUPPORTED_DTYPES))


def _summary(err: BaseException, limit: int = 600) -> str:
    """First lines of an exception message: export errors run to pages."""
    text = f"{type(err).__name__}: {err}".strip()
    return text if len(text) <= limit else text[:limit] + " ..."



__all__ = [
    "CaptureError", "InputSpec", "CapturedGraph", "SUPPORTED_DTYPES", "TINY_CONSTANT_NUMEL",
    "decomposition_table", "capture_module", "capture_exported", "load_pt2",
    "compute_graph_key", "graph_text", "torch_version_for_key",
]
