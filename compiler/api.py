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

import warnings
from typing import Any, Mapping, Sequence

import torch

from . import guards
from .artifact import ArtifactCache, CompiledArtifact
from .capture import CapturedGraph, InputSpec, capture_module, compute_graph_key
from .config import CompilerOptions, load_options
from .passes import compile_captured, compile_graph, module_key, trace_fx
from .runtime import CompiledModule, GraphedCall, InputMismatchError, load_artifact
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


class CompiledModel:
    """``compile_module``'s result: called like the module, with its live weights.

    Inference only (``compiler.guards``): outputs carry no autograd graph (a call with grad
    mode on and an input or parameter that requires grad warns once), the module must stay
    in the train/eval mode it was compiled in (``ModeChangedError`` otherwise), and an input
    laid out differently from its example (non-contiguous, channels-last) is copied into the
    compiled layout.
    """

    def __init__(self, module: torch.nn.Module, captured: CapturedGraph, compiled: CompiledModule,
                 cache_hit: bool, options: CompilerOptions, dim_names: dict | None = None):
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
        self._training = module.training
        self._dim_names = dim_names or {}
        self._grad_warned = False
        self._state_grad: bool | None = None   # whether a bound weight requires grad

    @property
    def kernel_count(self) -> int:
        return self.compiled.kernel_count

    @property
    def fallback_ops(self) -> tuple[str, ...]:
        return self.compiled.fallback_ops

    def __call__(self, *args, **kwargs):
        if self.module.training != self._training:
            guards.check_mode(self.module, self._training)     # raises ModeChangedError
        grad = torch.is_grad_enabled()
        if grad and not self._grad_warned:
            self._warn_if_grad(args, kwargs)
        if kwargs or not self._simple or len(args) != len(self._user):
            flat = self.captured.flatten_call(self.module, args, kwargs)
        else:
            flat = list(self._template)
            for k, arg in zip(self._user, args):
                flat[k] = arg
        if self.compiled.check_inputs:
            self._check(flat)
        if grad:    # no autograd graph: kiln compiles the forward pass only (compiler.guards)
            with torch.no_grad():
                return self._run(flat)
        return self._run(flat)

    def _run(self, flat: list):
        outputs = self._graph(flat) if self._graph is not None \
            else self.compiled.run_unchecked(flat)
        return self.captured.finish_call(self.module, outputs)

    def _warn_if_grad(self, args, kwargs) -> None:
        if self._state_grad is None:
            self._state_grad = any(t.requires_grad for t in self._state.values())
        if self._state_grad or guards.wants_grad([*args, *kwargs.values()]):
            self._grad_warned = True
            guards.warn_inference_only(stacklevel=3)   # the user's call

    def _check(self, flat: list) -> None:
        """User inputs every call; the bound state only when its storage changed. A user
        input in another layout than its example is copied into it (``flat`` is updated)."""
        try:
            self._check_flat(flat)
        except InputMismatchError as err:
            moved = False
            for k in self._user:
                if isinstance(flat[k], torch.Tensor):
                    fixed = guards.relayout(flat[k], self.captured.inputs[k].stride)
                    moved |= fixed is not flat[k]
                    flat[k] = fixed
            if not moved:
                raise InputMismatchError(guards.rename_dims(
                    _user_message(str(err), self._user), self._dim_names)) from None
            self._check(flat)

    def _check_flat(self, flat: list) -> None:
        state = [flat[k].data_ptr() for k in self._state]
        if state != self._checked_state:
            self.compiled.check(flat)
            self._checked_state = state
        else:
            self.compiled.check(flat, self._user)


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
    names = guards.dim_names(module, example_args, dynamic_shapes, captured) \
        if dynamic_shapes is not None else {}
    return CompiledModel(module, captured, compiled, hit, options, names)


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
