"""The compiled module and its call: input checks, CUDA graph replay, and the two helpers
generated wrappers import (``ensure_strides``, ``reinterpret``).

``load_artifact`` turns a stored artifact into a ``CompiledModule`` through the Triton back
end (``compiler.kernels``: module import, stored binaries, the compile pool); this module
holds no Triton code of its own.

Example:
    >>> import torch
    >>> ensure_strides(torch.ones(2, 3), (2, 3), (3, 1)).stride()
    (3, 1)
"""
from __future__ import annotations

import types
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from . import guards
from .artifact import CompiledArtifact
from .convention import CallConvention
from .binding import StateBinding
from .graph_pool import size_positions, size_value, size_values


class InputMismatchError(ValueError):
    """A compiled module was called with inputs unlike those it was compiled for."""


def ensure_strides(t: torch.Tensor, size, stride) -> torch.Tensor:
    """``t`` with the strides the compiled code assumed (an ATen call may choose others)."""
    if t is None:        # an optional output the op did not compute (sdpa's logsumexp)
        return None
    if t.stride() == stride and t.shape == size:     # the usual case, in two C comparisons
        return t
    if tuple(t.shape) == tuple(size) and all(
            s == 1 or a == b for s, a, b in zip(size, t.stride(), stride)):
        return t
    out = torch.empty_strided(tuple(size), tuple(stride), dtype=t.dtype, device=t.device)
    out.copy_(t)
    return out


def reinterpret(t: torch.Tensor, size, stride, offset: int) -> torch.Tensor:
    """A view of ``t``'s elements; ``offset`` counts from ``t``'s first element, not its storage."""
    return t.as_strided(size, stride, t.storage_offset() + offset)


# ----------------------------------------------------------------------------- the callable
@dataclass(frozen=True)
class ExpectedInput:
    """What one flat input must look like; strides matter only for dims of size > 1.

    A size or stride is an int, or the text of an expression of size symbols (``"s0"``,
    ``"16*s1"``) for dims marked dynamic; ``ranges`` gives each symbol's allowed values.
    """
    size: tuple
    stride: tuple
    dtype: str
    device: str

    def describe(self) -> str:
        return f"shape {tuple(self.size)} stride {tuple(self.stride)} {self.dtype} on {self.device}"

    def mismatch(self, t, sizes: dict, ranges: dict) -> str | None:
        """What differs between ``t`` and this spec; binds size symbols into ``sizes``."""
        if not isinstance(t, torch.Tensor):
            return f"expected a tensor ({self.describe()}), got {type(t).__name__}"
        if len(t.shape) != len(self.size):
            return f"shape differs: expected {tuple(self.size)}, {_got(t)}"
        for d, (want, have) in enumerate(zip(self.size, t.shape)):
            problem = _check_dim(d, want, have, sizes, ranges)
            if problem:
                return f"{problem}; {_got(t)}"
        if str(t.dtype) != self.dtype:
            return f"dtype differs: expected {self.dtype}, {_got(t)}"
        if t.device.type != self.device:
            return f"device differs: expected {self.device}, {_got(t)}"
        want = size_values(self.stride, sizes)
        if any(n != 1 and a != b for n, a, b in zip(t.shape, t.stride(), want)):
            return f"strides differ: expected {want}, {_got(t)}"
        return None


def _got(t: torch.Tensor) -> str:
    # built only for a message: formatting it on every call cost more than the checks
    return f"got shape {tuple(t.shape)} stride {tuple(t.stride())} {t.dtype} on {t.device.type}"


def _check_dim(d: int, want, have: int, sizes: dict, ranges: dict) -> str | None:
    if isinstance(want, int):
        return None if want == have else f"dim {d} is {have}, compiled for {want}"
    if want.isidentifier():    # a dynamic dim: within its range, and bound (first sight)
        lo, hi = ranges.get(want, (0, None))
        if have < lo or (hi is not None and have > hi):
            return (f"dim {d} ({want}) is {have}, outside its allowed range "
                    f"[{lo}, {'inf' if hi is None else hi}]")
        sizes.setdefault(want, have)
    expected = size_value(want, sizes)
    return None if expected == have else f"dim {d} ({want}) is {have}, expected {expected}"


def _bind_sizes(where: dict[str, tuple[int, int]], args: Sequence) -> dict:
    """Each size symbol's value in ``args``, read where the generated wrapper binds it
    (``where``: ``graph_pool.size_positions``, the first bare dim of each): an input may
    use a symbol (``2*s0``) before any input has it as a dim of its own (dynamo's graphs
    do), and checking in order then found it unbound (NameError)."""
    sizes = {}
    for symbol, (k, d) in where.items():
        t = args[k]
        if isinstance(t, torch.Tensor) and d < t.dim():
            sizes[symbol] = t.shape[d]
    return sizes


class CompiledModule:
    """A loaded compiled graph: ``module(*flat_inputs) -> tuple of outputs``.

    ``kernel_count`` and ``fallback_ops`` say how much of the graph kiln generated code for.
    """

    def __init__(self, module: types.ModuleType, artifact: CompiledArtifact, check_inputs: bool):
        meta = artifact.meta
        self.module = module
        self.artifact = artifact
        self.input_specs = tuple(ExpectedInput(tuple(s["size"]), tuple(s["stride"]), s["dtype"],
                                           s["device"]) for s in meta["inputs"])
        self.size_ranges = {k: tuple(v) for k, v in meta.get("size_ranges", {}).items()}
        self._size_where = size_positions(self.input_specs)   # symbol -> (input, dim)
        self.kernel_count = len(artifact.kernels)
        self.fallback_ops = tuple(meta.get("fallback_ops", ()))
        self.extern_ops = tuple(meta.get("extern_ops", ()))
        self.check_inputs = check_inputs
        self.static_cuda = meta["device"] == "cuda" and not meta.get("size_ranges")
        self.precompiled: dict | None = None    # what load_artifact's precompile did
        self.preloaded: dict | None = None      # which stored binaries it used

    @property
    def source(self) -> str:
        return self.artifact.source

    def __call__(self, *args):
        if len(args) == 1 and isinstance(args[0], (list, tuple)):
            args = tuple(args[0])
        if self.check_inputs:
            self.check(args)
        return self.module.call(list(args))

    def run_unchecked(self, flat: list):
        """Run on inputs the caller has checked (``flat`` is consumed)."""
        return self.module.call(flat)

    def check(self, args: Sequence, positions: Sequence[int] | None = None) -> None:
        """Raise InputMismatchError naming the first input (of ``positions``) that differs."""
        if len(args) != len(self.input_specs):
            raise InputMismatchError(f"kiln: compiled for {len(self.input_specs)} inputs, "
                                     f"called with {len(args)}")
        sizes = _bind_sizes(self._size_where, args)
        for k in range(len(args)) if positions is None else positions:
            problem = self.input_specs[k].mismatch(args[k], sizes, self.size_ranges)
            if problem:
                raise InputMismatchError(f"kiln: input {k}: {problem}")


def load_artifact(artifact: CompiledArtifact, code_dir: Path | None = None,
                  constants: dict[str, torch.Tensor] | None = None,
                  check_inputs: bool = True, compile_workers: int | None = None,
                  binaries: dict | None = None) -> CompiledModule:
    """A callable from a stored artifact: no lowering, no codegen, just import.

    ``compile_workers`` (static-shape CUDA modules only): compile every kernel now, in that
    many worker processes (-1: one per core, up to 16; 0: here, one by one), instead of one
    by one at the first call. None leaves compiling to the first call.
    ``binaries`` (kernel name -> ``kernels.load.StoredBinary``, e.g. from a store): binaries
    built ahead of time, used as they are where they match the launch (nothing compiles).
    """
    from .config import load_options
    meta = artifact.meta
    code_dir = code_dir or load_options().code_dir()
    missing = [n for n in meta.get("constants", []) if not constants or n not in constants]
    if missing:
        raise ValueError(f"kiln: artifact {artifact.module_key} needs constants {missing}")
    from .kernels.load import load_module
    static = not meta.get("size_ranges")
    module = load_module(artifact.source, meta["device"], code_dir, constants,
                         static_shapes=static, kernels={k.name for k in artifact.kernels},
                         dynamic_shapes=not static)
    compiled = CompiledModule(module, artifact, check_inputs)
    if binaries and static and meta["device"] == "cuda":
        from .kernels.load import preload_binaries
        compiled.preloaded = preload_binaries(artifact, module, binaries, code_dir / "binaries")
    if compile_workers is not None and static and meta["device"] == "cuda":
        compiled.precompiled = _precompile(artifact, module, code_dir, compile_workers)
    return compiled


def _precompile(artifact: CompiledArtifact, module, code_dir: Path, workers: int) -> dict:
    from .kernels import precompile as pc
    from .kernels.build import current_target
    target = current_target()
    pool = None if workers == 0 else pc.compile_pool(
        pc.default_workers() if workers < 0 else workers)
    if pool is not None:   # a new pool's workers start the backend before taking a kernel
        pool.warm(target, wait=False)
    return pc.precompile(artifact, module, target, code_dir, pool)


class GraphedCall:
    """Replays a static-shape CUDA module as one captured CUDA graph.

    The first call with a set of weights runs the kernels directly (which also loads or
    compiles them: a capture needs one run before it), so the first result waits for no
    capture; the second captures the graph with the caller's weights in place and copies of
    the per-call inputs (positions ``inputs``), and it and later calls copy the new inputs
    in and replay. A weight moved to new storage starts over. Outputs are cloned so a later
    replay never overwrites what an earlier call returned; outputs that are inputs (written
    in place) are returned as themselves.
    """

    def __init__(self, compiled: "CompiledModule", inputs: Sequence[int]):
        self.compiled = compiled
        self.inputs = list(inputs)
        self._graph = None
        self._key = None
        self._ran = None      # the weights the last direct run used

    def __call__(self, flat: list):
        state = [t.data_ptr() for k, t in enumerate(flat) if k not in self.inputs]
        if self._graph is None or state != self._key:
            if state != self._ran:
                self._ran = state
                return self.compiled.run_unchecked(list(flat))
            self._capture(flat, state)
        for k, static in zip(self.inputs, self._static):
            static.copy_(flat[k])
        self._graph.replay()
        return self._fresh()

    def _capture(self, flat: list, state) -> None:
        self._static = [flat[k].clone() for k in self.inputs]
        captured = list(flat)
        for k, static in zip(self.inputs, self._static):
            captured[k] = static
        self._inplace = {t.data_ptr() for t in captured if isinstance(t, torch.Tensor)}
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._outputs = self.compiled.run_unchecked(list(captured))
        self._graph, self._key = graph, state

    def _fresh(self):
        return tuple(o.clone() if isinstance(o, torch.Tensor) and o.data_ptr() not in self._inplace
                     else o for o in self._outputs)


@dataclass(frozen=True)
class CompilePhases:
    """Where ``compile_module``'s time went, in seconds: ``capture`` (torch.export and
    kiln's decompositions), ``lower`` (lowering and codegen, or the cache lookup of a hit)
    and ``load`` (the module loaded and every kernel built or loaded). The first call's
    library start-up and launches come after, outside these."""
    capture_s: float
    lower_s: float
    load_s: float


class CompiledModel:
    """``compile_module``'s result: called like the module, with its live weights (updated
    in place or replaced: a new Parameter, ``load_state_dict(assign=True)``, a swapped
    submodule; ``compiler.binding``).

    Inference only (``compiler.guards``): outputs carry no autograd graph (a call with grad
    mode on and an input or parameter that requires grad warns once), the module must stay
    in the train/eval mode it was compiled in (``ModeChangedError`` otherwise), and an input
    laid out differently from its example (non-contiguous, channels-last) is copied into the
    compiled layout.
    """

    def __init__(self, module: torch.nn.Module, captured: CallConvention,
                 compiled: CompiledModule, cache_hit: bool, cuda_graphs: bool = True,
                 dim_names: dict | None = None):
        # ``captured``: the calling convention; a CapturedGraph (compile_module) is one, and
        # a serving load rebuilds one from the store (``CallConvention.from_json``)
        self.module, self.captured, self.compiled, self.cache_hit = module, captured, compiled, cache_hit
        # The module's parameter and buffer objects are bound once (``binding``): looking
        # them up by name on every call cost more than the GPU. In-place updates are seen;
        # a replaced object re-binds (``StateBinding.current``).
        self._binding = StateBinding(captured, module)
        self._bind()
        # the user's positions: the same whatever objects are bound
        self._user = [k for k in range(len(captured.inputs)) if k not in self._state]
        self._simple = _plain_positional(captured, len(self._user))
        # cuda_graphs: a bool, or a graph_pool.GraphPolicy for dynamic-shape modules
        from .graph_pool import dynamic_graphed_call
        self._graph = (GraphedCall(compiled, self._user) if cuda_graphs and compiled.static_cuda
                       else dynamic_graphed_call(compiled, self._user, cuda_graphs, captured))
        self._training = module.training
        self._dim_names = dim_names or {}
        self._grad_warned = False
        self.phases: CompilePhases | None = None   # set by compile_module

    def _bind(self) -> None:
        self._state = self._binding.state
        self._template = [self._state.get(k) for k in range(len(self.captured.inputs))]
        self._checked_state: list | None = None   # data_ptrs of the state last checked
        self._state_grad: bool | None = None      # whether a bound weight requires grad

    @property
    def kernel_count(self) -> int:
        return self.compiled.kernel_count

    @property
    def fallback_ops(self) -> tuple[str, ...]:
        return self.compiled.fallback_ops

    def __call__(self, *args, **kwargs):
        if self.module.training != self._training:
            guards.check_mode(self.module, self._training)     # raises ModeChangedError
        if self._binding.current():
            self._bind()
        grad = torch.is_grad_enabled()
        if grad and not self._grad_warned:
            self._warn_if_grad(args, kwargs)
        if kwargs or not self._simple or len(args) != len(self._user):
            flat = self.captured.bind(self._state, args, kwargs)
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
        return self.captured.finish_call(self.module, outputs, self._binding.mutated)

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


def _plain_positional(captured: CallConvention, n_user: int) -> bool:
    """The model was captured with positional tensors only (no kwargs, nesting or scalars)."""
    if captured.scalar_inputs or captured.in_spec is None:
        return False
    from torch.utils._pytree import tree_flatten
    return tree_flatten((tuple(range(n_user)), {}))[1] == captured.in_spec
