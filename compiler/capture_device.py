"""Capture traces every model on CPU, wherever its tensors live, so graph keys do not depend
on where capture ran (a pipeline's CPU worker, or a serving process on the GPU).

Why: torch's meta functions and decompositions branch on the traced tensors' device. An eval
BatchNorm's saved statistics are ``[C]`` on CUDA and ``[0]`` on CPU; a convolution or an
attention returns another layout, so the ``reshape`` after it is a ``view`` on one device and
a ``clone`` + ``view`` on the other. Two devices, two graphs, two keys: a store miss.

How: each tensor off CPU (CUDA, meta, fake) among the example inputs, the parameters and
buffers and the plain tensor attributes (lifted constants) is replaced for the trace by a
stand-in of the same size, strides, dtype and ``requires_grad``: a fake CPU tensor (no memory,
no copy), or for a constant a CPU copy (its values stay readable, its bytes key as on CPU).
The graph, its key and the code lowered from it are the CPU capture's; the target enters at
lowering (the module key). CPU is canonical because the pipeline captures there.

Private torch API: ``FakeTensorMode`` (``torch._subclasses.fake_tensor``) and the module
state dicts (``_parameters``, ``_buffers``). Fallback: without ``FakeTensorMode``, or where
the trace on stand-ins fails (a model that makes tensors on ``device="cuda"`` outright, or
keeps tensors where the swap does not reach: a list attribute, a global), capture traces the
real tensors on their own device, and warns that the key may differ from a CPU capture's.
Like ``torch.export``, the swap changes the module while it traces: no other thread may run it.

Example:
    >>> import torch
    >>> m = torch.nn.Linear(4, 2).to("meta")
    >>> needs_standins(m, (torch.randn(3, 4),), {})
    True
    >>> with cpu_standins(m, (torch.randn(3, 4),), {}) as s:
    ...     print(m.weight.device, m.weight.shape, s.args[0].device)
    cpu torch.Size([2, 4]) cpu
    >>> m.weight.device
    device(type='meta')
"""
from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Any, Callable, Iterator

import torch
import torch.utils._pytree as pytree

try:
    from torch._subclasses.fake_tensor import FakeTensorMode
except ImportError:  # a torch without it: capture traces on the tensors' own device
    FakeTensorMode = None

CANONICAL_DEVICE = "cpu"


@dataclasses.dataclass(frozen=True)
class Standins:
    """The example call with stand-ins, and the real tensor behind each stand-in."""
    args: tuple
    kwargs: dict
    real: dict[int, torch.Tensor]   # id(stand-in) -> the tensor it stands for


def capture_on_cpu(trace: Callable[[tuple, dict], Any], module: torch.nn.Module, args: tuple,
                   kwargs: dict, name: str) -> Any:
    """``trace(args, kwargs)`` (a capture of ``module``) run on CPU stand-ins where any
    tensor lives off CPU, then ``on_real_tensors``; where the stand-ins fail, on the real
    tensors with a warning (the fallback), and the real trace's error if it fails too.

    Example (an eval BatchNorm: its statistics' shapes differ by device, not its key):
        >>> import torch
        >>> from compiler.capture import capture_module
        >>> x = torch.randn(2, 3, 4, 4)
        >>> on_cpu = capture_module(torch.nn.BatchNorm2d(3).eval(), (x,))
        >>> on_meta = capture_module(torch.nn.BatchNorm2d(3).eval().to("meta"), (x.to("meta"),))
        >>> on_meta.graph_key == on_cpu.graph_key, on_meta.inputs[-1].device
        (True, 'meta')
    """
    if not needs_standins(module, args, kwargs):
        return trace(args, kwargs)
    try:
        with cpu_standins(module, args, kwargs) as standins:
            captured = trace(standins.args, standins.kwargs)
    except Exception as err:  # noqa: BLE001 -- the fallback below; its own error wins
        captured = trace(args, kwargs)
        warnings.warn(f"kiln: model {name!r} was captured on its tensors' own device, not on "
                      f"CPU stand-ins ({type(err).__name__}: {str(err)[:300]}); its graph "
                      f"key may differ from a CPU capture's", stacklevel=3)
        return captured
    return on_real_tensors(captured, module, standins, args, kwargs)


def needs_standins(module: torch.nn.Module, args: Any, kwargs: Any) -> bool:
    """Whether any tensor of the call or the module lives off CPU; False on a torch without
    fake tensors (the fallback: trace the real tensors).

    Example:
        >>> import torch
        >>> needs_standins(torch.nn.Linear(2, 2), (torch.randn(1, 2),), {})
        False
    """
    if FakeTensorMode is None:
        return False
    tensors = [t for _, _, t, _ in _module_tensors(module)]
    tensors += [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
    return any(_off_canonical(t) for t in tensors)


@contextlib.contextmanager
def cpu_standins(module: torch.nn.Module, args: tuple, kwargs: dict) -> Iterator[Standins]:
    """Swap the module's off-CPU tensors for stand-ins for the duration of the block (put
    back on the way out, exception or not); yield the call's arguments with stand-ins.

    Example:
        >>> import torch
        >>> m = torch.nn.Linear(4, 2).to("meta")
        >>> with cpu_standins(m, (), {}) as s:
        ...     s.real[id(m.weight)].device
        device(type='meta')
    """
    make = _Maker(FakeTensorMode(allow_non_fake_inputs=True))
    swaps = [(owner, name, tensor, make(tensor, constant))
             for owner, name, tensor, constant in _module_tensors(module)
             if _off_canonical(tensor)]
    call = pytree.tree_map_only(
        torch.Tensor, lambda t: make(t, constant=False) if _off_canonical(t) else t,
        (tuple(args), dict(kwargs)))
    done = []
    try:
        for owner, name, tensor, standin in swaps:
            owner[name] = standin
            done.append((owner, name, tensor))
        yield Standins(call[0], call[1], make.real)
    finally:
        for owner, name, tensor in reversed(done):
            owner[name] = tensor


def on_real_tensors(captured: Any, module: torch.nn.Module, standins: Standins,
                    args: tuple, kwargs: dict) -> Any:
    """``captured`` (a ``CapturedGraph`` traced on stand-ins) for the real tensors: each
    input spec's device, the constants and the example call are the real ones. The graph and
    its key stay the CPU trace's. Constants go to the device the call runs on: those the
    trace made (``torch.tensor(...)`` in ``forward``) were made on CPU, and ``module.to()``
    leaves plain tensor attributes where they were.

    Example:
        >>> import torch
        >>> from compiler.capture import capture_module
        >>> capture_module(torch.nn.Linear(4, 2).to("meta"),
        ...                (torch.randn(3, 4, device="meta"),)).inputs[0].device
        'meta'
    """
    device = _run_device(module, args, kwargs)
    constants = {k: _moved(standins.real.get(id(v), v), device)
                 for k, v in captured.constants.items()}
    users = iter([t.device.type for t in captured._flatten_user(args, kwargs)])  # graph order

    def device(spec) -> str:
        if spec.kind == "user":
            return next(users)
        if spec.kind == "constant":
            return constants[spec.target].device.type
        get = module.get_parameter if spec.kind == "parameter" else module.get_buffer
        return get(spec.target).device.type

    inputs = tuple(dataclasses.replace(s, device=device(s)) for s in captured.inputs)
    return dataclasses.replace(captured, inputs=inputs, constants=constants,
                               example_args=(args, kwargs))


def _run_device(module: torch.nn.Module, args: tuple, kwargs: dict) -> torch.device | None:
    """The device of the call's first tensor (else of the module's state); None where that
    is a fake tensor, which has no real device to move a constant to."""
    tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
    tensors = tensors or [t for _, _, t, constant in _module_tensors(module) if not constant]
    if not tensors or type(tensors[0]).__name__ == "FakeTensor":
        return None
    return tensors[0].device


def _moved(t: torch.Tensor, device: torch.device | None) -> torch.Tensor:
    return t if device is None or t.device == device else t.to(device)


def _off_canonical(t: torch.Tensor) -> bool:
    return t.device.type != CANONICAL_DEVICE or type(t).__name__ == "FakeTensor"


def _module_tensors(module: torch.nn.Module) -> list[tuple[dict, str, torch.Tensor, bool]]:
    """``(owner, name, tensor, is_constant)`` of every parameter and buffer, then every plain
    tensor attribute (what export lifts as a constant), of every submodule: ``owner[name] =
    t`` swaps one (a plain attribute's owner is its submodule's ``__dict__``). State comes
    first, so a parameter also held as a plain attribute gets a parameter's stand-in."""
    subs = list(module.modules())
    owners = [(d, False) for sub in subs for d in (sub._parameters, sub._buffers)]
    owners += [(vars(sub), True) for sub in subs]
    return [(owner, name, t, constant) for owner, constant in owners
            for name, t in list(owner.items()) if isinstance(t, torch.Tensor)]


@dataclasses.dataclass
class _Maker:
    """Makes stand-ins, one per real tensor (a tensor under two names, tied weights, keeps
    one stand-in), and remembers which real tensor each stands for."""
    mode: Any
    memo: dict = dataclasses.field(default_factory=dict)
    real: dict = dataclasses.field(default_factory=dict)

    def __call__(self, t: torch.Tensor, constant: bool) -> torch.Tensor:
        if id(t) not in self.memo:
            standin = self._make(t, constant)
            self.memo[id(t)] = standin
            self.real[id(standin)] = t
        return self.memo[id(t)]

    def _make(self, t: torch.Tensor, constant: bool) -> torch.Tensor:
        if constant and not isinstance(t, torch.nn.Parameter) and t.device.type != "meta" \
                and type(t).__name__ != "FakeTensor":
            return t.detach().to(CANONICAL_DEVICE)   # values readable, bytes keyed as on CPU
        with self.mode:
            fake = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype,
                                       device=CANONICAL_DEVICE)
        if isinstance(t, torch.nn.Parameter):
            return torch.nn.Parameter(fake, requires_grad=t.requires_grad)
        return fake.requires_grad_(t.requires_grad)
