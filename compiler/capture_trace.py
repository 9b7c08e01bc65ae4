"""One-trace capture of a static-shape module: what ``torch.export`` + ``run_decompositions``
produce, traced once.

``torch.export.export`` traces the module to its training IR (a metadata pass and a tracing
pass), then ``run_decompositions`` retraces that graph with the decomposition table (two more
passes). For a static-shape module called with plain positional tensors, kiln runs the second
step's machinery directly on the module instead: ``aot_export_module`` with the table, inside
the same context export uses to keep the composite ops kiln lowers whole (SDPA, upsampling).
One metadata pass and one trace: about half of capture's time (``benchmarks/bench_compile.py``).

The result feeds the same graph building as the export path (``capture._build``), so the
graph text and key are the export path's: the pipeline and a serving process agree on keys
whichever path each took (``tests/test_capture_trace.py`` checks this on the zoo). Anything
outside the plain case (kwargs, nested inputs, scalars, dynamic shapes, a tensor that is both
a parameter and a buffer, tensor constants, or a torch without these hooks) returns None and
takes the export path. Tied weights (T5's and most language models' embeddings) take this
path: their placeholders are read as export reads them (``_tie_like_export``).
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import threading
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch.export.graph_signature import (ExportGraphSignature, InputKind, InputSpec,
                                          OutputKind, OutputSpec, TensorArgument)

from .decompositions import decomposition_table

_CHILD = "m"   # the wrapped module's attribute name: every state name starts with "m."


class _FlatOutputs(torch.nn.Module):
    """``module`` with its outputs flattened to a tuple (``aot_export_module`` takes no
    pytree outputs); the output spec is kept for the captured graph."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        setattr(self, _CHILD, module)
        self.out_spec = None

    def forward(self, *args):
        flat, self.out_spec = pytree.tree_flatten(getattr(self, _CHILD)(*args))
        return tuple(flat)


class StackTraces:
    """torch.fx records the user's Python stack on every node it traces (an extracted and
    symbolized traceback per node: a fifth of a warm ResNet-50 capture). Nothing in kiln
    reads a node's ``stack_trace`` and the graph key ignores it, so the one-trace path turns
    the recording off for its trace. The switch is torch's process-wide
    ``torch.fx.config.do_not_emit_stack_traces``; uses are counted, so captures overlapping
    in threads restore the caller's value when the last one ends. A torch without the
    switch records stack traces as before.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._users = 0
        self._saved = False

    @contextlib.contextmanager
    def off(self):
        config = _fx_config()
        if config is None:
            yield
            return
        with self._lock:
            if self._users == 0:
                self._saved = config.do_not_emit_stack_traces
                config.do_not_emit_stack_traces = True
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    config.do_not_emit_stack_traces = self._saved


def _fx_config():
    """``torch.fx.config`` where it has the stack-trace switch, else None."""
    try:
        config = importlib.import_module("torch.fx.config")
    except ImportError:
        return None
    return config if hasattr(config, "do_not_emit_stack_traces") else None


STACK_TRACES = StackTraces()


def trace_static(module: torch.nn.Module, args: tuple
                 ) -> tuple[torch.fx.GraphModule, ExportGraphSignature, Any, Any] | None:
    """``(gm, signature, in_spec, out_spec)`` as the export path would produce them, or None
    where this path does not apply (the caller then exports)."""
    hooks = _export_hooks()
    if hooks is None or not _plain(module, args):
        return None
    _, keep_composites, ignore_backend_decomps = hooks
    from torch._functorch.aot_autograd import aot_export_module
    composites, table = _split_table()
    wrapper = _FlatOutputs(module)
    with torch.no_grad(), ignore_backend_decomps(), keep_composites(composites), \
            STACK_TRACES.off(), _as_export():
        gm, aot_sig = aot_export_module(wrapper, list(args), trace_joint=False,
                                        decompositions=table)
    gm.graph.eliminate_dead_code()    # as run_decompositions does
    outputs = _outputs(gm)
    if any(n.op == "get_attr" for n in gm.graph.nodes) or \
            not all(isinstance(v, torch.fx.Node) for v in outputs):
        return None       # tensor constants (export lifts them) or non-tensor outputs
    in_spec = pytree.tree_flatten((tuple(args), {}))[1]
    sig = _signature(gm, outputs, aot_sig)
    _tie_like_export(gm, sig, module)
    _export_names(gm, sig, module, args)
    return gm, sig, in_spec, wrapper.out_spec


def _as_export():
    """The flags export sets while it traces (``torch.compiler.is_exporting()`` and
    ``is_compiling()`` true): model code that branches on them (transformers' attention
    masks) then traces the graph export would, and the key is export's. A torch without
    the context traces without the flags."""
    try:
        from torch._export.utils import _compiling_state_context
    except ImportError:
        return contextlib.nullcontext()
    return _compiling_state_context()


def _tie_like_export(gm: torch.fx.GraphModule, sig: ExportGraphSignature,
                     module: torch.nn.Module) -> None:
    """A tensor under several names (tied weights) has a placeholder per name in both paths,
    but export traces one fake tensor for all of them, so every use reads the last name's
    placeholder; aot_export_module reads each under the name the module used. The uses are
    moved to the last placeholder of each tie, so graph text and key are export's."""
    names: dict[int, list[str]] = {}
    for fqn, t in [*module.named_parameters(remove_duplicate=False),
                   *module.named_buffers(remove_duplicate=False)]:
        names.setdefault(id(t), []).append(fqn)
    tied = {fqn: group for group in names.values() if len(group) > 1 for fqn in group}
    if not tied:
        return
    nodes = {n.name: n for n in gm.graph.nodes if n.op == "placeholder"}
    placeholders: dict[tuple, list[torch.fx.Node]] = {}
    for spec in sig.input_specs:
        if spec.target in tied:
            placeholders.setdefault(tuple(tied[spec.target]), []).append(nodes[spec.arg.name])
    for group in placeholders.values():
        for node in group[:-1]:
            node.replace_all_uses_with(group[-1])
    gm.recompile()


def _export_names(gm: torch.fx.GraphModule, sig: ExportGraphSignature,
                  module: torch.nn.Module, args: tuple) -> None:
    """Export's placeholder names (``x``, ``p_fc_weight``, ``b_bn_running_mean``), which
    errors quote; cosmetic, so a torch whose naming pass differs keeps aot's names."""
    try:
        from torch._export.utils import placeholder_naming_pass
        placeholder_naming_pass(gm, sig, module, args, {}, {}, {})
    except Exception:  # noqa: BLE001 -- names only: the graph and its key are unaffected
        pass


def _outputs(gm: torch.fx.GraphModule) -> tuple:
    (out_node,) = [n for n in gm.graph.nodes if n.op == "output"]
    return tuple(out_node.args[0])


@functools.lru_cache(maxsize=1)
def _split_table() -> tuple[dict, dict]:
    """Kiln's table as ``run_decompositions`` splits it: the composite (CIA) ops to keep
    whole, and the rest. Once per process, like the table itself.

    ``run_decompositions`` re-registers every composite op of the table (~500, 70-230 ms
    per capture) with its own decomposition, which is what the dispatcher does with them
    anyway; only those to keep whole (SDPA, upsampling) need registering.
    """
    from torch._export.utils import _special_op_to_preserve_cia
    split = _export_hooks()[0]
    composites, table = split(decomposition_table())
    return {op: fn for op, fn in composites.items() if fn is _special_op_to_preserve_cia}, table


def _export_hooks():
    """torch's private pieces of ``run_decompositions``; None on a torch without them."""
    try:
        from torch.export._trace import _ignore_backend_decomps
        from torch.export.exported_program import (
            _override_composite_implicit_decomp, _split_decomp_table_to_cia_and_python_decomp)
    except ImportError:
        return None
    return (_split_decomp_table_to_cia_and_python_decomp, _override_composite_implicit_decomp,
            _ignore_backend_decomps)


def _plain(module: torch.nn.Module, args: tuple) -> bool:
    """Positional tensors only, no tensor that is both a parameter and a buffer (ties among
    parameters, or among buffers, are read as export reads them), and no tensor held as a
    plain attribute (export lifts it as a constant; a trace would meet a real tensor among
    fake ones)."""
    if not all(isinstance(a, torch.Tensor) for a in args):
        return False
    params = {id(t) for _, t in module.named_parameters(remove_duplicate=False)}
    if any(id(t) in params for _, t in module.named_buffers(remove_duplicate=False)):
        return False
    return not any(isinstance(v, torch.Tensor) and k not in m._parameters
                   and k not in m._buffers for m in module.modules() for k, v in vars(m).items())


def _signature(gm: torch.fx.GraphModule, outputs: tuple, sig: Any) -> ExportGraphSignature:
    """aot_export_module's signature in export's terms (state names without the wrapper's
    prefix), so the export path's graph building applies unchanged."""
    def state(fqn: str) -> str:
        return fqn[len(_CHILD) + 1:]
    inputs = []
    for node in (n for n in gm.graph.nodes if n.op == "placeholder"):
        arg = TensorArgument(node.name)
        if node.name in sig.inputs_to_parameters:
            inputs.append(InputSpec(InputKind.PARAMETER, arg,
                                    state(sig.inputs_to_parameters[node.name])))
        elif node.name in sig.inputs_to_buffers:
            inputs.append(InputSpec(InputKind.BUFFER, arg,
                                    state(sig.inputs_to_buffers[node.name]), persistent=True))
        else:
            inputs.append(InputSpec(InputKind.USER_INPUT, arg, None))
    # aot_export_module's outputs: the mutated inputs' new values first, then user outputs
    # (a parameter written in forward is one too: named here, refused by the graph building)
    params = getattr(sig, "parameters_to_mutate", {})
    mutations = {**sig.buffers_to_mutate, **params, **sig.user_inputs_to_mutate}
    specs = []
    for k, value in enumerate(outputs):
        arg = TensorArgument(value.name)
        if k >= len(mutations):
            specs.append(OutputSpec(OutputKind.USER_OUTPUT, arg, None))
        elif value.name in sig.buffers_to_mutate:
            specs.append(OutputSpec(OutputKind.BUFFER_MUTATION, arg,
                                    state(sig.buffers_to_mutate[value.name])))
        elif value.name in params:
            specs.append(OutputSpec(OutputKind.PARAMETER_MUTATION, arg,
                                    state(params[value.name])))
        else:
            specs.append(OutputSpec(OutputKind.USER_INPUT_MUTATION, arg,
                                    sig.user_inputs_to_mutate[value.name]))
    return ExportGraphSignature(inputs, specs)
