"""The compiler's passes, in order, readable in one function.

    capture        torch.export (or one trace) -> ATen FX graph + graph key   capture.py
    lower          GraphLowering: FX graph -> IR buffers, externs, fallbacks  graph.py
    plan matmuls   GEMMs that run as kiln's Triton template, with epilogues   codegen/matmul_select.py
    schedule       fusion by traffic, dead code                               scheduler.py
    codegen        one Triton kernel per step, its launch config and spec     codegen/emit.py
    wrapper        the Python module that allocates, launches and frees       codegen/wrapper.py

``compile_graph`` runs lower -> wrapper on an ATen graph and packages the result as a
``CompiledArtifact``; ``compile_captured`` does it for a ``CapturedGraph`` (what ``capture``
returns); ``trace_fx`` is the capture step of ``compile_fx`` (a graph handed over as FX).
Tests and the pipeline call these, not the modules' internals.

Example:
    >>> import torch
    >>> from torch.fx.experimental.proxy_tensor import make_fx
    >>> from compiler.config import load_options
    >>> x = torch.randn(8, 8)
    >>> gm = trace_fx(make_fx(lambda x: (torch.relu(x) + 1,))(x), [x])
    >>> artifact, constants = compile_graph(gm, "g", load_options(), "cpu")
    >>> [k.name for k in artifact.kernels], constants
    (['kiln_pw_relu_add_0'], {})
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import sympy
import torch
import triton
from torch._subclasses.fake_tensor import DynamicOutputShapeException
from torch.fx.experimental.proxy_tensor import make_fx

from . import __version__
from .artifact import CompiledArtifact
from .capture import CapturedGraph, capture_module
from .codegen.emit import emit_kernels
from .codegen.matmul_select import conv_mode, plan_matmuls
from .codegen.planner import TritonPlanner
from .codegen.wrapper import generate_wrapper
from .config import CompilerOptions
from .decompositions import decomposition_table
from .graph import GraphLowering, LoweredGraph, LoweringError
from .ir import ExternKernel
from .lowering import default_table
from .scheduler import FusionLimits, buffer_layouts, fusion_report, schedule
from .size_inputs import SizeInputs
from .sizevars import texpr

capture = capture_module   # the first pass: a module and its example inputs -> CapturedGraph

Configs = Mapping[str, Mapping[str, int]]   # tuned launch configs by kernel key


def compile_graph(gm: torch.fx.GraphModule, graph_key: str, options: CompilerOptions,
                  target: str, mutated_inputs: dict[int, int] | None = None,
                  size_ranges: dict | None = None, configs: Configs | None = None
                  ) -> tuple[CompiledArtifact, dict[str, torch.Tensor]]:
    """Every pass after capture, in order, on an ATen graph; returns the artifact and the
    constants it needs (tensors the graph holds that are no input)."""
    lowered = lower_graph(gm, options, target, mutated_inputs, size_ranges, configs)
    plan = plan_matmuls(lowered, options.matmul_template, configs,
                        conv_mode(options.conv_kernels, options.matmul_template, target))
    planner = TritonPlanner()
    steps = schedule(plan.lowered, FusionLimits.from_options(options), planner)
    layouts = buffer_layouts(plan.lowered, steps)
    kernels = emit_kernels(steps, plan.candidates, layouts, options, target, configs, planner,
                           plan.lowered.depthwise)
    source = generate_wrapper(plan.lowered, steps, kernels.launched, kernels.sources, layouts,
                              options.attention_order(bool(lowered.size_ranges)))
    meta = artifact_meta(lowered, graph_key, options, target)
    meta["fusion"] = fusion_report(plan.lowered, steps, planner)   # what fusion saved
    artifact = CompiledArtifact(module_key(graph_key, options, target, configs), graph_key,
                                source, kernels.artifacts, json.dumps(meta))
    if options.debug_dir:
        _dump(artifact, Path(options.debug_dir))
    return artifact, dict(lowered.constant_values)


def compile_captured(captured: CapturedGraph, options: CompilerOptions, target: str,
                     configs: Configs | None = None) -> CompiledArtifact:
    """``compile_graph`` of a captured graph, its mutated buffers written in place; the
    artifact's meta also names the model and keeps its calling convention."""
    artifact, _ = compile_graph(captured.gm, captured.graph_key, options, target,
                                mutated_inputs(captured), captured.size_ranges, configs)
    meta = artifact.meta
    meta["model"] = captured.name
    meta["call"] = _convention_json(captured, target)
    return dataclasses.replace(artifact, meta_json=json.dumps(meta))


def _convention_json(captured: CapturedGraph, target: str) -> str | None:
    """The calling convention a serving process rebuilds the call from (``Store.load_model``):
    its inputs on the target's device (a pipeline captures on CPU for a CUDA target); None
    where a pytree type in the call has no serialized form (such a module is found by
    ``compile_module(..., cache=store)``, which captures, not by name)."""
    convention = captured.convention
    inputs = tuple(dataclasses.replace(s, device=target) for s in convention.inputs)
    try:
        return dataclasses.replace(convention, inputs=inputs).to_json()
    except (ValueError, TypeError, NotImplementedError, KeyError):
        return None


def lower_graph(gm: torch.fx.GraphModule, options: CompilerOptions, target: str,
                mutated: dict[int, int] | None = None, size_ranges: dict | None = None,
                configs: Configs | None = None) -> LoweredGraph:
    """GraphLowering with kiln's lowering table; export's promised ranges of dynamic sizes
    replace the tracer's. ``configs``: the tuned configs, whose choices keyed by what
    lowering lowers (a depthwise conv's ``"depthwise:..."``) it follows."""
    lowered = GraphLowering(gm, default_table(), options, mutated, target, configs).lower()
    if size_ranges:
        named = {str(k): k for k in lowered.size_ranges}
        lowered.size_ranges.update({named[k]: tuple(v) for k, v in size_ranges.items()
                                    if k in named})
    return lowered


def module_key(graph_key: str, options: CompilerOptions, target: str,
               configs: Configs | None = None) -> str:
    """Key of a compiled module: what changes generated code, and nothing else (tuned launch
    configs included: they are written into the wrapper)."""
    parts = [graph_key, f"kiln {__version__}", f"options {options.options_hash()}",
             f"target {target}"]
    if configs:
        parts.append(f"configs {json.dumps(configs, sort_keys=True)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def mutated_inputs(captured: CapturedGraph) -> dict[int, int]:
    """Output position -> input position for each buffer the graph mutates (written in place)."""
    position = {spec.target: k for k, spec in enumerate(captured.inputs) if spec.kind == "buffer"}
    return {k: position[target] for k, target in enumerate(captured.mutated_buffers)}


def artifact_meta(lowered: LoweredGraph, graph_key: str, options: CompilerOptions,
                  target: str) -> dict[str, Any]:
    """The module's calling convention and provenance (``CompiledArtifact.meta``)."""
    externs = [op.kernel for op in lowered.operations
               if isinstance(op, ExternKernel) and not op.is_fallback]
    return {
        "graph_key": graph_key,
        "device": target,
        "target": target,
        "inputs": [{"size": [_size_json(s) for s in b.layout.size],
                    "stride": [_size_json(s) for s in b.layout.stride],
                    "dtype": str(b.layout.dtype), "device": target} for b in lowered.inputs],
        "size_ranges": {str(k): list(v) for k, v in sorted(lowered.size_ranges.items(), key=str)},
        "constants": [c.name for c in lowered.constants],
        "outputs": len(lowered.outputs),
        "fallback_ops": list(lowered.fallback_ops),
        "extern_ops": sorted(set(externs)),
        "options_hash": options.options_hash(),
        "versions": {"kiln": __version__, "torch": torch.__version__,
                     "triton": triton.__version__},
    }


def _size_json(size):
    """A size for the artifact's JSON: an int, or the expression of size symbols as text."""
    size = sympy.sympify(size)
    return int(size) if size.is_Integer else texpr(size)


def _dump(artifact: CompiledArtifact, directory: Path) -> None:
    """Write the generated code where a user asked to read it (``debug_dir``)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{artifact.module_key[:16]}.py").write_text(artifact.source)
    (directory / f"{artifact.module_key[:16]}.json").write_text(
        json.dumps(artifact.meta, indent=2))


# ----------------------------------------------------------------------------- compile_fx's capture
def trace_fx(gm: torch.fx.GraphModule, example_inputs: Sequence[Any],
             sizes: SizeInputs | None = None) -> torch.fx.GraphModule:
    """Retrace functionalized with kiln's decompositions; every node gets ``meta['val']``.

    Functionalization turns in-place ops into pure ones plus ``copy_`` into mutated inputs
    at the end, which GraphLowering applies in place. Size inputs ``sizes`` carries (by
    default: those of ``example_inputs``, see ``size_inputs``) come in as their carrier
    tensors.
    """
    sizes = SizeInputs.of(example_inputs) if sizes is None else sizes
    try:
        return _trace_functional(gm, example_inputs, "mutations", sizes)
    except DynamicOutputShapeException as exc:
        # no retrace helps: the op itself has no fake kernel (lstsq, ctc_loss)
        raise LoweringError(
            f"{exc.func} has no fake kernel: its output sizes are known only by running it, "
            "and kiln traces graphs with fake tensors, so it cannot compile this graph "
            "(not even with the op as an ATen fallback)") from exc
    except Exception:
        # A view recorded on real strides can fail to replay on fake ones (an op whose meta
        # strides differ from its kernel's); as copies, views replay on any strides.
        return _trace_functional(gm, example_inputs, "mutations_and_views", sizes)


def _trace_functional(gm, example_inputs, remove: str, sizes: SizeInputs) -> torch.fx.GraphModule:
    fake_mode = torch._guards.detect_fake_mode(example_inputs)
    run = torch.func.functionalize(sizes.unwrap(torch.fx.Interpreter(gm).run), remove=remove)
    with torch.no_grad():
        if fake_mode is not None:
            with fake_mode:
                inputs = sizes.trace_inputs(example_inputs)
                return make_fx(run, decomposition_table=decomposition_table())(*inputs)
        # graphs from make_fx(module) hold weights as real tensors behind get_attr
        return make_fx(run, decomposition_table=decomposition_table(), tracing_mode="fake",
                       _allow_non_fake_inputs=True)(*example_inputs)


__all__ = ["capture", "compile_graph", "compile_captured", "lower_graph", "module_key",
           "mutated_inputs", "artifact_meta", "trace_fx"]
