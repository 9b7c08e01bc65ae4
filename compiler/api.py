"""kiln's public compiler API: compile an FX graph or a module into a callable.

    compile_fx(gm, example_inputs)        ATen FX graph (make_fx / torch.export) -> callable
    compile_module(module, example_args)  capture (torch.export) then compile; live weights
    lower(captured, target="cuda")        captured graph -> CompiledArtifact (no GPU needed)

Example:
    >>> import torch
    >>> from torch.fx.experimental.proxy_tensor import make_fx
    >>> x = torch.randn(8, 8)
    >>> gm = make_fx(lambda x: (torch.relu(x) + 1,))(x)
    >>> fn = compile_fx(gm, [x])
    >>> torch.allclose(fn(x)[0], torch.relu(x) + 1)
    True
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import sympy
import torch
import triton
from torch.fx.experimental.proxy_tensor import make_fx

from . import __version__
from .artifact import ArtifactCache, CompiledArtifact, KernelArtifact
from .capture import (CapturedGraph, InputSpec, capture_module, compute_graph_key,
                      decomposition_table)
from .codegen.wrapper import generate_module
from .config import CompilerOptions, load_options
from .graph import GraphLowering, LoweredGraph
from .ir import ExternKernel
from .lowering import default_table
from .runtime import CompiledModule, GraphedCall, InputMismatchError, load_artifact
from .size_inputs import SizedCall, SizeInputs, size_hint
from .sizevars import texpr


def module_key(graph_key: str, options: CompilerOptions, target: str,
               configs: Mapping[str, Mapping[str, int]] | None = None) -> str:
    """Key of a compiled module: what changes generated code, and nothing else (tuned launch
    configs included: they are written into the wrapper)."""
    parts = [graph_key, f"kiln {__version__}", f"options {options.options_hash()}",
             f"target {target}"]
    if configs:
        parts.append(f"configs {json.dumps(configs, sort_keys=True)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _lower_graph(gm: torch.fx.GraphModule, graph_key: str, options: CompilerOptions,
                 target: str, mutated_inputs: dict[int, int] | None = None,
                 size_ranges: dict | None = None, configs: Mapping | None = None
                 ) -> tuple[CompiledArtifact, dict[str, torch.Tensor]]:
    """GraphLowering -> scheduling and codegen -> artifact (the passes, in order)."""
    lowered = GraphLowering(gm, default_table(), options, mutated_inputs, target).lower()
    if size_ranges:   # export's promised ranges replace the tracer's
        named = {str(k): k for k in lowered.size_ranges}
        lowered.size_ranges.update({named[k]: tuple(v) for k, v in size_ranges.items()
                                    if k in named})
    generated = generate_module(lowered, options, target, configs)
    key = module_key(graph_key, options, target, configs)
    kernels = tuple(KernelArtifact(k.name, meta["kernel_key"], k.source,
                                   json.dumps(meta, sort_keys=True))
                    for k, meta in zip(generated.kernels, generated.kernel_meta))
    meta = _artifact_meta(lowered, graph_key, options, target)
    meta["fusion"] = generated.fusion    # kernel bytes, and what fusion saved against unfused
    artifact = CompiledArtifact(key, graph_key, generated.source, kernels, json.dumps(meta))
    if options.debug_dir:
        _dump(artifact, Path(options.debug_dir))
    return artifact, dict(lowered.constant_values)


def _artifact_meta(lowered: LoweredGraph, graph_key: str, options: CompilerOptions,
                   target: str) -> dict[str, Any]:
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


# ----------------------------------------------------------------------------- compile_fx
def _trace(gm: torch.fx.GraphModule, example_inputs: Sequence[Any],
           sizes: SizeInputs | None = None) -> torch.fx.GraphModule:
    """Retrace functionalized with kiln's decompositions; every node gets ``meta['val']``.

    Functionalization turns in-place ops into pure ones plus ``copy_`` into mutated inputs
    at the end, which GraphLowering applies in place. Size inputs ``sizes`` carries (by
    default: those of ``example_inputs``) come in as their carrier tensors.
    """
    sizes = SizeInputs.of(example_inputs) if sizes is None else sizes
    try:
        return _trace_functional(gm, example_inputs, "mutations", sizes)
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


def _graph_device(gm: torch.fx.GraphModule) -> str:
    """The device a graph without tensor inputs computes on (``torch.ones(..., device=)``)."""
    for node in gm.graph.nodes:
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor):
            return val.device.type
    return "cpu"


def _user_specs(gm: torch.fx.GraphModule) -> list[InputSpec]:
    """Tensor placeholders' specs; symbolic sizes by their example value (never ``int()``
    of a SymInt: that guards on the value, and dynamo would recompile at every size)."""
    specs = []
    for node in gm.graph.nodes:
        val = node.meta.get("val")
        if node.op == "placeholder" and isinstance(val, torch.Tensor):
            dynamic = tuple(d for d, s in enumerate(val.shape) if isinstance(s, torch.SymInt))
            specs.append(InputSpec(node.name, "user", None, tuple(map(size_hint, val.shape)),
                                   tuple(map(size_hint, val.stride())), str(val.dtype),
                                   val.device.type, dynamic))
    return specs


def compile_fx(gm: torch.fx.GraphModule, example_inputs: Sequence[Any],
               options: dict | CompilerOptions | None = None) -> CompiledModule | SizedCall:
    """Compile an ATen-level FX graph; returns ``fn(*flat_inputs) -> tuple of outputs``.

    Symbolic sizes (dynamo's dynamic shapes: fake tensors with SymInt dims, and the SymInts
    themselves as inputs) compile once for every size; see ``size_inputs``.
    """
    options = load_options(options)
    sizes = SizeInputs.of(example_inputs)
    traced = _trace(gm, example_inputs, sizes)
    specs = _user_specs(traced)
    target = specs[0].device if specs else _graph_device(traced)
    key = compute_graph_key(traced, specs, extra="compile_fx")
    artifact, constants = _lower_graph(traced, key, options, target)
    compiled = load_artifact(artifact, options.code_dir(), constants, options.check_inputs,
                             options.compile_workers)
    return SizedCall(compiled, sizes) if sizes else compiled


# ----------------------------------------------------------------------------- modules
def lower(captured: CapturedGraph, options: dict | CompilerOptions | None = None,
          target: str = "cuda", configs: Mapping[str, Mapping[str, int]] | None = None
          ) -> CompiledArtifact:
    """Lower a captured graph for ``target`` ("cuda" or "cpu"); runs nothing on a GPU.

    ``configs``: tuned launch configs by kernel key (e.g. the best trials in a store).
    """
    options = load_options(options)
    artifact, _ = _lower_graph(captured.gm, captured.graph_key, options, target,
                               _mutated_inputs(captured), captured.size_ranges, configs)
    return artifact


def _mutated_inputs(captured: CapturedGraph) -> dict[int, int]:
    """Output position -> input position for each buffer the graph mutates (written in place)."""
    position = {spec.target: k for k, spec in enumerate(captured.inputs) if spec.kind == "buffer"}
    return {k: position[target] for k, target in enumerate(captured.mutated_buffers)}


class CompiledModel:
    """``compile_module``'s result: called like the module, with its live weights."""

    def __init__(self, module: torch.nn.Module, captured: CapturedGraph, compiled: CompiledModule,
                 cache_hit: bool, options: CompilerOptions):
        self.module, self.captured, self.compiled, self.cache_hit = module, captured, compiled, cache_hit
        # The module's parameter and buffer objects are bound once: in-place updates
        # (optimizer steps, load_state_dict, .to()) are seen; replacing a Parameter object
        # needs a new compile. Looking them up by name on every call costs more than the GPU.
        self._state = captured.state_inputs(module)
        self._user = [k for k in range(len(captured.inputs)) if k not in self._state]
        self._template = [self._state.get(k) for k in range(len(captured.inputs))]
        self._simple = _plain_positional(captured, len(self._user))
        self._checked_state: list | None = None
        self._graph = (GraphedCall(compiled, self._user)
                       if options.cuda_graphs and compiled.static_cuda else None)

    @property
    def kernel_count(self) -> int:
        return self.compiled.kernel_count

    @property
    def fallback_ops(self) -> tuple[str, ...]:
        return self.compiled.fallback_ops

    def __call__(self, *args, **kwargs):
        if kwargs or not self._simple or len(args) != len(self._user):
            flat = self.captured.flatten_call(self.module, args, kwargs)
            return self.captured.finish_call(self.module, self.compiled(flat))
        flat = list(self._template)
        for k, arg in zip(self._user, args):
            flat[k] = arg
        if self.compiled.check_inputs:
            self._check(flat)
        if self._graph is not None:
            return self.captured.finish_call(self.module, self._graph(flat))
        return self.captured.finish_call(self.module, self.compiled.run_unchecked(flat))

    def _check(self, flat: list) -> None:
        """User inputs every call; the bound state only when its storage changed."""
        state = [flat[k].data_ptr() for k in self._state]
        try:
            if state != self._checked_state:
                self.compiled.check(flat)
                self._checked_state = state
            else:
                self.compiled.check(flat, self._user)
        except InputMismatchError as err:   # name the caller's argument, not a flat slot
            raise InputMismatchError(_user_message(str(err), self._user)) from None


def _user_message(message: str, user_positions: list[int]) -> str:
    """'input 7: ...' (a slot among weights and arguments) -> 'argument 0: ...'."""
    import re
    match = re.match(r"kiln: input (\d+): (.*)", message, re.S)
    if match and int(match.group(1)) in user_positions:
        return f"kiln: argument {user_positions.index(int(match.group(1)))}: {match.group(2)}"
    if match:
        return f"kiln: a module parameter or buffer changed since compiling: {match.group(2)}"
    return message


def _plain_positional(captured: CapturedGraph, n_user: int) -> bool:
    """The model was captured with positional tensors only (no kwargs, nesting or scalars)."""
    if captured.scalar_inputs or captured.in_spec is None:
        return False
    from torch.utils._pytree import tree_flatten
    return tree_flatten((tuple(range(n_user)), {}))[1] == captured.in_spec


def compile_module(module: torch.nn.Module, example_args: Sequence[Any],
                   options: dict | CompilerOptions | None = None,
                   cache: ArtifactCache | None = None, example_kwargs: dict | None = None,
                   dynamic_shapes: Any = None,
                   configs: Mapping[str, Mapping[str, int]] | None = None) -> CompiledModel:
    """Capture ``module`` with torch.export, then compile (or fetch from ``cache``)."""
    options = load_options(options)
    if dynamic_shapes is None:
        _start_compile_pool(example_args, example_kwargs, options.compile_workers)
    captured = capture_module(module, tuple(example_args), example_kwargs,
                              dynamic_shapes=dynamic_shapes)
    target = _target_of(captured)
    key = module_key(captured.graph_key, options, target, configs)
    artifact = cache.get_artifact(key) if cache is not None else None
    hit = artifact is not None
    if artifact is None:
        artifact = lower(captured, options, target, configs)
        if cache is not None:
            cache.put_artifact(artifact)
    compiled = load_artifact(artifact, options.code_dir(), None, options.check_inputs,
                             options.compile_workers)
    return CompiledModel(module, captured, compiled, hit, options)


def _start_compile_pool(example_args, example_kwargs, workers: int | None) -> None:
    """Start the compile workers a static CUDA module will precompile with, and their
    Triton backend for this card, so that start (each imports torch and Triton: seconds)
    overlaps capture and lowering instead of following them. Once the process has its
    pool, a round trip per worker."""
    from torch.utils._pytree import tree_leaves
    if not workers or not any(isinstance(t, torch.Tensor) and t.is_cuda
                              for t in tree_leaves((example_args, example_kwargs))):
        return
    from . import precompile as pc
    pool = pc.compile_pool(pc.default_workers() if workers < 0 else workers)
    pool.warm(pc.current_target(), wait=False)


def _target_of(captured: CapturedGraph) -> str:
    devices = {spec.device for spec in captured.inputs}
    return "cuda" if "cuda" in devices else "cpu"
