"""Host work a generated wrapper binds once, when its module loads, so that ``call`` makes
only positional calls that go straight to C: kernel launches with their grid, config and
argument layout prebuilt (``bind_launch``), ATen overloads resolved to their C entry
(``extern_op``), and torch's allocation and aliasing without Python dispatch (``allocator``,
``reinterpret_tensor``, ``raw_stream``).

Without CUDA graphs every microsecond of Python per launch is paid per kernel per call: a
launch through ``Launcher.launch`` built a kwargs key, a grid tuple and a closure each time.
A bound launch's ``run(*args, stream)`` is, once its kernel is loaded, one closure calling
torch's generic launcher (``kernels.launch.StaticKernel``) with the arguments as passed.
What it binds to depends on what the module's kernel names hold when it loads: a static
CUDA module's ``Launcher``, a served stored binary (``kernels.serve``), or a JIT or
interpreted function (dynamic shapes, CPU), which is launched as before.

The private torch helpers used here are guarded: without them the public calls run.

Example:
    >>> import torch
    >>> extern_op("aten.add.Tensor")(torch.ones(2), torch.ones(2)).tolist()
    [2.0, 2.0]
    >>> reinterpret_tensor(torch.arange(6.), (2, 2), (1, 2), 1).tolist()
    [[1.0, 3.0], [2.0, 4.0]]
"""
from __future__ import annotations

import functools
from operator import itemgetter
from typing import Callable, Mapping, Sequence

import torch

from .launch import Launcher, StaticKernel
from .serve import ServedKernel


def _private(name: str):
    """One of torch's C helpers Inductor's wrappers use, or None in a torch without it."""
    guards = getattr(getattr(torch._C, "_dynamo", None), "guards", None)
    return getattr(guards, name, None)


def extern_op(name: str, ordered: bool = False) -> Callable:
    """``torch.ops.<name>`` (``"aten.addmm.default"``) as the C function its ``OpOverload``
    calls (``_op``: one Python frame less per call), looked up once. An op this torch lacks
    raises where the wrapper calls it, as ``torch.ops.<name>(...)`` in the source would.
    ``ordered`` (the wrapper passes it for ``ATTENTION_OPS`` under option ``attention =
    "flash_first"``): the op asks for its backends in ``ATTENTION_ORDER``
    (``ordered_attention``)."""
    try:
        op = functools.reduce(getattr, name.split("."), torch.ops)
    except (AttributeError, RuntimeError) as err:
        problem = err

        def missing(*args, **kwargs):
            raise problem
        return missing
    call = getattr(op, "_op", op)
    return ordered_attention(call) if ordered else call


ATTENTION_OPS = ("aten.scaled_dot_product_attention.default",)
# Flash, then memory-efficient, before cuDNN (then math): torch prefers cuDNN's attention on
# Hopper, whose per-shape graph set-up is thread-local (no prewarming it off the call's
# thread) and was 80-95 ms of a fresh process's first ViT-B/16 attention on an H100, against
# 18 ms for flash and 7 ms for memory-efficient (benchmarks/probes/first_ops.py, numbers in
# benchmarks/results/2026-12-06/s4). Opt-in (option ``attention``) until its steady-state
# cost against cuDNN's is measured. Where flash or efficient cannot run (a mask, a head
# size, an alignment), torch's checks move on down.
ATTENTION_ORDER = (1, 2, 3, 0)      # SDPBackend: FLASH, EFFICIENT, CUDNN, MATH


def ordered_attention(call: Callable) -> Callable:
    """``call`` run with torch's attention priority set to ``ATTENTION_ORDER``, and the
    caller's order put back: two C calls around it, no context manager per call. Without
    torch's priority setters (older torch) ``call`` itself."""
    get = getattr(torch._C, "_get_sdp_priority_order", None)
    put = getattr(torch._C, "_set_sdp_priority_order", None)
    if get is None or put is None:
        return call
    order = list(ATTENTION_ORDER)

    def attention(*args, **kwargs):
        before = get()
        put(order + [b for b in before if b not in order])
        try:
            return call(*args, **kwargs)
        finally:
            put(before)
    return attention


def _reinterpret(t: torch.Tensor, size, stride, offset: int) -> torch.Tensor:
    return t.as_strided(size, stride, t.storage_offset() + offset)


# A view of ``t``'s elements, ``offset`` counted from ``t``'s first element: torch's alias
# without view tracking (what Inductor's wrappers pass to extern kernels), else as_strided.
reinterpret_tensor = _private("_reinterpret_tensor") or _reinterpret


def _empty_on(device: torch.device, size, stride, dtype) -> torch.Tensor:
    return torch.empty_strided(size, stride, dtype=dtype, device=device)


def allocator(device: torch.device) -> Callable:
    """``alloc(size, stride, dtype)`` for new buffers on ``device``: torch's allocator with
    no argument parsing where it has one for the device (the CUDA one allocates on the
    current device, so only when that is ``device``), else ``torch.empty_strided``."""
    if device.type == "cpu":
        fast = _private("_empty_strided_cpu")
    elif device.type == "cuda" and device.index == torch.cuda.current_device():
        fast = _private("_empty_strided_cuda")
    else:
        fast = None
    return fast or functools.partial(_empty_on, device)


def raw_stream(device: torch.device):
    """The current CUDA stream of ``device`` as the launcher takes it; None off CUDA (or in a
    torch without the call), where launches find the stream themselves."""
    get = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    return get(device.index) if device.type == "cuda" and get is not None else None


def bind_launch(kernel, grid: Sequence | None, meta: Mapping[str, int],
                check: Sequence[int] = (), n_args: int | None = None) -> "BoundLaunch":
    """One launch site of a wrapper: ``kernel`` (what the module's name for it holds) with its
    launch config ``meta`` (block sizes, ``num_warps``...) and ``grid`` bound. With a grid,
    ``run(*args, stream)``; with None (a grid of run-time sizes), ``run(grid, *args,
    stream)``. ``check``: positions of pointer arguments whose 16-byte alignment the
    wrapper cannot vouch for (not buffers it allocated), checked before a direct launch.
    ``n_args``: how many arguments (stream not counted) each launch passes."""
    return BoundLaunch(kernel, grid, dict(meta), tuple(check), n_args)


class BoundLaunch:
    """A launch site; its ``run`` is replaced by the fastest closure the kernel allows."""

    def __init__(self, kernel, grid, meta: dict, check: tuple, n_args: int | None):
        self.kernel, self.meta, self.check, self.n_args = kernel, meta, check, n_args
        self.grid = None if grid is None else tuple(grid) + (1,) * (3 - len(grid))
        if isinstance(kernel, (ServedKernel, StaticKernel)):    # nothing to compile
            self.run = _static_run(getattr(kernel, "static", kernel), self.grid, n_args)
        elif isinstance(kernel, Launcher) and self.grid is not None:
            self.run = self._first_launch
        elif isinstance(kernel, Launcher):   # run-time grid: a binary per specialization
            self.run = self._launcher_run
        else:                     # JIT or interpreted function: Triton binds every launch
            self.run = self._triton_run()

    def _triton_run(self) -> Callable:
        kernel, meta, grid = self.kernel, self.meta, self.grid
        if grid is None:
            return lambda grid, *args: kernel[grid](*args[:-1], **meta)
        runner = kernel[grid]
        return lambda *args: runner(*args[:-1], **meta)

    def _launcher_run(self, grid, *args):
        self.kernel.launch(grid, args[:-1], self.meta)

    def _first_launch(self, *args):
        """Through the ``Launcher`` (which compiles, or uses a preloaded binary); once it
        holds a compiled kernel for this config, later launches call that directly."""
        launcher: Launcher = self.kernel
        launcher.launch(self.grid, args[:-1], self.meta)
        compiled = launcher._compiled.get(Launcher._key(self.meta))
        if compiled is None or not launcher._direct:
            return
        if isinstance(compiled, StaticKernel):
            self.run = _static_run(compiled, self.grid, self.n_args, self.check, self._slow)
        else:
            consts = tuple(self.meta[name] for name in launcher._constexprs)
            self.run = _compiled_run(compiled, self.grid, consts, self.check, self._slow)

    def _slow(self, *args):
        """Triton's launch, for a pointer the compiled kernel may not assume aligned."""
        self.kernel.launch(self.grid, args[:-1], self.meta)


def _picker(plan, n_args: int | None) -> Callable | None:
    """How the binary's argument tuple is made from the passed one (stream last): None where
    it is that tuple less the stream; else a function picking the arguments the binary
    kept (it drops those specialized to constants) and adding its null scratch pointers."""
    nulls = (None,) * plan.scratch
    if not nulls and plan.keep and n_args is not None and plan.keep == tuple(range(n_args)):
        return None
    if len(plan.keep) == 1:
        k = plan.keep[0]
        return lambda args: (args[k],) + nulls
    get = itemgetter(*plan.keep) if plan.keep else (lambda _: ())
    return lambda args: get(args) + nulls


def _static_run(kernel, grid, n_args: int | None, check: tuple = (), slow=None) -> Callable:
    """``run(*args, stream)`` as one call of torch's generic launcher (``run(grid, *args,
    stream)`` for a grid of None). A pointer at a ``check`` position that is not 16-byte
    aligned, as the binary may assume, goes to ``slow`` instead."""
    p, function, launch = kernel.plan, kernel.function, kernel._launch
    warps, shared, types, device = p.num_warps, p.shared, p.arg_types, kernel.device
    stream_of, pick = kernel._stream, _picker(p, n_args)
    if grid is None:                 # served with run-time sizes: never checked
        def run_at(grid, *args):
            grid = tuple(grid) + (1,) * (3 - len(grid))
            stream = args[-1]
            launch(function, grid[0], grid[1], grid[2], warps, shared, types,
                   args[:-1] if pick is None else pick(args),
                   stream_of(device) if stream is None else stream)
        return run_at
    gx, gy, gz = grid

    def run(*args):
        for k in check:
            if args[k].data_ptr() & 15:
                return slow(*args)
        stream = args[-1]
        launch(function, gx, gy, gz, warps, shared, types,
               args[:-1] if pick is None else pick(args),
               stream_of(device) if stream is None else stream)
    return run


def _compiled_run(compiled, grid, consts: tuple, check: tuple, slow) -> Callable:
    """Triton's own launcher for a compiled kernel the generic one cannot run."""
    runner = compiled[grid]

    def run(*args):
        for k in check:
            if args[k].data_ptr() & 15:
                return slow(*args)
        runner(*args[:-1], *consts)
    return run
