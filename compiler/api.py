"""kiln's public compiler API: compile an FX graph or a module into a callable.

    compile_fx(gm, example_inputs)        ATen FX graph (make_fx / torch.export) -> callable
    compile_module(module, example_args)  capture (torch.export) then compile; live weights
    lower(captured, target="cuda")        captured graph -> CompiledArtifact (no GPU needed)

The passes themselves, in order, are ``compiler.passes``.

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

import functools
import time
import warnings
from typing import Any, Mapping, Sequence

import torch

from . import guards
from .artifact import ArtifactCache, CompiledArtifact
from .capture import CapturedGraph, InputSpec, capture_module, compute_graph_key
from .config import CompilerOptions, load_options
from .graph_pool import GraphPolicy
from .passes import compile_captured, compile_graph, module_key, trace_fx
from .runtime import CompilePhases, CompiledModel, CompiledModule, load_artifact
from .size_inputs import SizedCall, SizeInputs, size_hint


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
    traced = trace_fx(gm, example_inputs, sizes)
    specs = _user_specs(traced)
    target = specs[0].device if specs else _graph_device(traced)
    key = compute_graph_key(traced, specs, extra="compile_fx")
    artifact, constants = compile_graph(traced, key, options, target)
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
    return compile_captured(captured, load_options(options), target, configs)


def compile_module(module: torch.nn.Module, example_args: Sequence[Any],
                   options: dict | CompilerOptions | None = None,
                   cache: ArtifactCache | None = None, example_kwargs: dict | None = None,
                   dynamic_shapes: Any = None,
                   configs: Mapping[str, Mapping[str, int]] | None = None) -> CompiledModel:
    """Capture ``module`` with torch.export, then compile (or fetch from ``cache``).

    The result is for inference (``compiler.guards``): its outputs are detached, so a call
    with grad mode on and an input or parameter requiring grad warns once
    (``InferenceOnlyWarning``) and ``backward()`` raises instead of giving wrong gradients.
    The module's train/eval mode is compiled as it is now: a module in train mode compiles
    dropout and batch statistics (with a ``UserWarning``), and calling after the mode was
    switched raises ``ModeChangedError``.

    Example:
        >>> m = torch.nn.Linear(4, 2).eval()
        >>> c = compile_module(m, (torch.randn(3, 4),))
        >>> with torch.no_grad():
        ...     out = c(torch.ones(3, 4))
        >>> torch.allclose(out, m(torch.ones(3, 4))), out.requires_grad
        (True, False)
    """
    start = time.perf_counter()
    options = load_options(options)
    example_args = tuple(example_args)
    if dynamic_shapes is None:
        _start_compile_pool(example_args, example_kwargs, options.compile_workers)
    else:
        guards.check_dynamic_shapes(example_args, dynamic_shapes, module)
    if isinstance(module, torch.nn.Module) and module.training:
        warnings.warn(guards.training_warning(type(module).__name__), UserWarning, stacklevel=2)
    captured = capture_module(module, example_args, example_kwargs,
                              dynamic_shapes=dynamic_shapes)
    captured_at = time.perf_counter()
    target = _target_of(captured)
    key = module_key(captured.graph_key, options, target, configs)
    artifact = cache.get_artifact(key) if cache is not None else None
    hit = artifact is not None
    if artifact is None:
        if cache is not None:
            _warn_miss(cache, captured, key, options, target)
        artifact = lower(captured, options, target, configs)
        if cache is not None:
            cache.put_artifact(artifact)
    lowered_at = time.perf_counter()
    compiled = _served(cache, artifact) if hit else None
    if compiled is None:
        compiled = load_artifact(artifact, options.code_dir(), None, options.check_inputs,
                                 options.compile_workers)
    names = guards.dim_names(module, example_args, dynamic_shapes, captured) \
        if dynamic_shapes is not None else {}
    model = CompiledModel(module, captured, compiled, hit,
                          options.cuda_graphs and GraphPolicy.of(options), names)
    model.phases = CompilePhases(captured_at - start, lowered_at - captured_at,
                                 time.perf_counter() - lowered_at)
    return model


def _served(cache: ArtifactCache, artifact: CompiledArtifact) -> CompiledModule | None:
    """A hit served as ``Store.load_model`` serves it (stored cubins, nothing compiled),
    where the cache can (``serve``) and holds every binary; else None (compile as usual)."""
    serve = getattr(cache, "serve", None)
    return serve(artifact) if serve is not None else None


def _warn_miss(cache: ArtifactCache, captured: CapturedGraph, key: str,
               options: CompilerOptions, target: str) -> None:
    """Once per module key: why the cache had no module (``why_not``, where it can say)."""
    why_not = getattr(cache, "why_not", None)
    if why_not is not None:
        _warn_once(key, why_not(captured.graph_key, target, options.options_hash()))


@functools.lru_cache(maxsize=None)
def _warn_once(key: str, reason: str) -> None:
    warnings.warn(f"kiln: compiling module {key[:12]}: the cache missed it: {reason}; the "
                  f"result is written back", UserWarning, stacklevel=4)


def _start_compile_pool(example_args, example_kwargs, workers: int | None) -> None:
    """Start the compile workers a static CUDA module will precompile with, and their
    Triton backend for this card, so that start (each imports torch and Triton: seconds)
    overlaps capture and lowering instead of following them. Once the process has its
    pool, a round trip per worker."""
    from torch.utils._pytree import tree_leaves
    if not workers or not any(isinstance(t, torch.Tensor) and t.is_cuda
                              for t in tree_leaves((example_args, example_kwargs))):
        return
    from .kernels import precompile as pc
    from .kernels.build import current_target
    pool = pc.compile_pool(pc.default_workers() if workers < 0 else workers)
    pool.warm(current_target(), wait=False)


def _target_of(captured: CapturedGraph) -> str:
    devices = {spec.device for spec in captured.inputs}
    return "cuda" if "cuda" in devices else "cpu"
