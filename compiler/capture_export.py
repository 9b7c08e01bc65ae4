"""Calling ``torch.export``: non-strict, and strict where non-strict loses mutated state.

kiln exports non-strict (the model's Python runs as it is, so most models export). Non-strict
export knows a module's state by attribute only: a tensor the forward reaches through some
other object (a static KV cache whose layer objects hold the very tensors the module
registered as buffers, as transformers' ``TorchExportableModuleWithStaticCache`` does) is
lifted as a *constant*, and when the forward writes into it the program cannot be
functionalized (``run_decompositions`` fails). Dynamo, strict export's tracer, follows a
tensor back to the buffer it is, so such a model is exported again strictly.

Private torch API here: ``OpOverload._schema`` (which arguments an op writes, and which ops
return views). Fallback: where it is missing no mutation is seen, the non-strict program is
kept, and decomposition reports the failure as before.

Example:
    >>> import torch
    >>> ep = export_program(torch.nn.ReLU(), (torch.randn(3),), {}, None)
    >>> mutated_constants(ep)
    []
"""
from __future__ import annotations

from typing import Any

import torch
import torch.fx
from torch.export.graph_signature import InputKind


class MutatedConstantError(RuntimeError):
    """The model writes into tensors outside its module state, and strict export (which
    would map them to the buffers they are) failed too."""


def export_program(module: torch.nn.Module, args: tuple, kwargs: dict,
                   dynamic_shapes: Any) -> torch.export.ExportedProgram:
    """``torch.export.export(strict=False)``, or strict where the non-strict program
    mutates lifted constants (see the module docstring)."""
    ep = torch.export.export(module, args, kwargs, dynamic_shapes=dynamic_shapes, strict=False)
    mutated = mutated_constants(ep)
    if not mutated:
        return ep
    try:
        return torch.export.export(module, args, kwargs, dynamic_shapes=dynamic_shapes,
                                   strict=True)
    except Exception as err:
        raise MutatedConstantError(
            f"the model writes into tensors that are not its registered buffers (lifted as "
            f"constants {mutated}: reached through an object other than the module, such as "
            f"a cache object's attribute); register them with register_buffer and reach them "
            f"through the module. Strict export, which maps them to their buffers, failed "
            f"too: {type(err).__name__}: {str(err)[:300]}") from err


def mutated_constants(ep: torch.export.ExportedProgram) -> list[str]:
    """Targets of the lifted constants that an in-place op of ``ep``'s graph writes into,
    directly or through views."""
    constants = {spec.arg.name: spec.target for spec in ep.graph_signature.input_specs
                 if spec.kind == InputKind.CONSTANT_TENSOR}
    if not constants:
        return []
    written = set()
    for node in ep.graph.nodes:
        for arg in _written_args(node):
            base = _view_base(arg)
            if base.op == "placeholder" and base.name in constants:
                written.add(constants[base.name])
    return sorted(written)


def _written_args(node: torch.fx.Node) -> list[torch.fx.Node]:
    """The node arguments ``node``'s op writes into (``self`` of ``add_``, ``out=``)."""
    schema = getattr(node.target, "_schema", None) if node.op == "call_function" else None
    if schema is None:
        return []
    out = []
    for k, arg_schema in enumerate(schema.arguments):
        info = arg_schema.alias_info
        if info is None or not info.is_write:
            continue
        value = node.args[k] if k < len(node.args) else node.kwargs.get(arg_schema.name)
        if isinstance(value, torch.fx.Node):
            out.append(value)
    return out


def _view_base(node: torch.fx.Node) -> torch.fx.Node:
    """The node a chain of view ops (``slice``, ``select``, ``view``...) starts from."""
    while node.op == "call_function" and node.args and isinstance(node.args[0], torch.fx.Node):
        schema = getattr(node.target, "_schema", None)
        returns = schema.returns if schema is not None else ()
        if not returns or returns[0].alias_info is None or returns[0].alias_info.is_write:
            break
        node = node.args[0]
    return node


__all__ = ["MutatedConstantError", "export_program", "mutated_constants"]
