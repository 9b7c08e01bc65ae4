"""The Python wrapper module: allocates buffers, launches kernels, calls externs, frees early.

The generated module defines its kernels and ``call(args)``; ``jit`` and ``libdevice`` are
bound when it is imported (``compiler.kernels.load``: CUDA or the interpreter), so the same
source serves both. Buffers are deleted right after their last use so peak memory stays
near eager's. Between the kernels and ``call`` a section (``BOUND``) binds, once per module
load, each launch site's grid and config and each ATen op (``compiler.kernels.host``), so
``call`` itself passes only positional arguments: its host cost per kernel is what bounds a
model run without CUDA graphs.

Example:
    >>> print(render_arg((1, 2.5, None)))
    (1, 2.5, None)
"""
from __future__ import annotations

import math
from typing import Mapping

import sympy
import torch
from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols

from ..graph import LoweredGraph
from ..ir import BufferRef, ExternKernel, Layout, MatmulTemplate, MutationBuffer
from ..kernels.host import ATTENTION_OPS
from ..kernels.spec import LaunchConfig
from ..scheduler import FusedKernel
from ..sizevars import texpr
from .builder import CodeBuilder
from .kernel import GeneratedKernel
from .memory import plan_memory

HEADER = """\
# kiln compiled module (generated).
import torch
import triton
import triton.language as tl
from compiler.runtime import ensure_strides, reinterpret
# `jit` and `libdevice` are bound by compiler.runtime before this module runs.
"""
# Starts the section ``call`` needs besides the kernels' definitions (serving runs it alone).
BOUND = "# Bound once, when the module loads."
BOUND_IMPORT = ("from compiler.kernels.host import allocator, bind_launch, extern_op, "
                "raw_stream, reinterpret_tensor")

def render_arg(value, view: str = "reinterpret") -> str:
    """Source text for an extern argument (literals, dtypes, views of buffers); ``view``
    names the function that makes a view of part of a buffer."""
    if isinstance(value, BufferRef):
        if value.is_whole:
            return value.name
        return (f"{view}({value.name}, {_ints(value.size)}, {_ints(value.stride)}, "
                f"{texpr(sympy.sympify(value.offset))})")
    if isinstance(value, tuple):
        inner = ", ".join(render_arg(v, view) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(render_arg(v, view) for v in value) + "]"
    if isinstance(value, torch.dtype):
        return str(value)
    if isinstance(value, torch.device):
        return "device"   # the device the module runs on, not the one it was traced on
    if isinstance(value, (torch.layout, torch.memory_format)):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return f'float("{value}")'
    if isinstance(value, sympy.Expr):
        return texpr(value)
    return repr(value)


def _ints(values) -> str:
    """A tuple of sizes as source: numbers, or expressions of the size symbols bound in call()."""
    return "(" + "".join(f"{texpr(sympy.sympify(v))}, " for v in values) + ")"


def generate_wrapper(lowered: LoweredGraph, steps, kernels: Mapping[int, tuple],
                     sources: list[str], layouts: Mapping[str, Layout],
                     attention: str = "torch") -> str:
    """The module's source: the header, every kernel's source (``sources``, in order), the
    bound section, then ``call(args)`` running ``steps``. ``kernels`` maps ``id(step)`` of
    each kernel step to its (``GeneratedKernel``, ``LaunchConfig``); ``attention`` is the
    option of that name (``CompilerOptions``)."""
    code = CodeBuilder()
    code.splice(HEADER)
    for source in sources:
        code.line()
        code.splice(source)
    body, bound = CodeBuilder(), _Bound(attention == "flash_first")
    with body.indent():
        _emit_body(body, lowered, steps, kernels, layouts, bound)
    code.line()
    code.line()
    code.line(BOUND)
    code.line(BOUND_IMPORT)
    code.lines(bound.lines)
    code.line()
    code.line()
    code.line("def call(args):")
    code.splice(body)
    return code.text()


class _Bound:
    """The bound section's lines, and which buffers ``call`` allocated itself (aligned, so a
    launch need not check them)."""

    def __init__(self, ordered_attention: bool = False):
        self.lines: list[str] = []
        self.names: set[str] = set()
        self.fresh: set[str] = set()
        self.ordered_attention = ordered_attention

    def _name(self, base: str) -> str:
        name, k = base, 1
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    def launch(self, spec: GeneratedKernel, cfg: LaunchConfig, n_args: int) -> str:
        """The bound launch of one launch site; a grid of run-time sizes stays in ``call``."""
        name = self._name(f"{spec.name}_launch")
        static = all(isinstance(g, int) for g in cfg.grid)
        grid = "(" + "".join(f"{g}, " for g in cfg.grid) + ")" if static else "None"
        check = tuple(k for k, b in enumerate(spec.buffers) if b not in self.fresh)
        self.lines.append(f"{name} = bind_launch({spec.name}, {grid}, {dict(cfg.params)!r}, "
                          f"{check!r}, {n_args})")
        return name

    def extern(self, kernel: str) -> str:
        name = kernel.replace(".", "_")
        if name not in self.names:
            self.names.add(name)
            ordered = ", ordered=True" if self.ordered_attention and kernel in ATTENTION_OPS else ""
            self.lines.append(f"{name} = extern_op({kernel!r}{ordered})")
        return name


def _emit_body(code, lowered, steps, kernels, layouts, bound: _Bound):
    names = [b.name for b in lowered.inputs]
    if names:
        code.line(f"{', '.join(names)}, = args")
    code.line("args.clear()")
    code.line(f"device = {names[0]}.device" if names else f"device = torch.device({lowered.device!r})")
    code.line("alloc, stream = allocator(device), raw_stream(device)")
    for line in _bind_sizes(lowered):
        code.line(line)
    memory = plan_memory(lowered, steps, layouts)
    for k, step in enumerate(steps):
        if isinstance(step, FusedKernel):
            spec, launch = kernels[id(step)]
            _emit_kernel_call(code, step, spec, launch, memory.reuse, bound, layouts)
        elif isinstance(step, MatmulTemplate):
            spec, launch = kernels[id(step)]
            code.line(_alloc(step.name, step.layout, bound))
            _emit_launch(code, spec, launch, bound)
        else:
            _emit_extern(code, step, bound, set(memory.frees.get(k, ())))
        if k in memory.frees:
            code.line(f"del {', '.join(memory.frees[k])}")
    outs = [render_arg(o.ref) if o.ref is not None else render_arg(o.literal)
            for o in lowered.outputs]
    code.line(f"return ({''.join(o + ', ' for o in outs)})")


def _bind_sizes(lowered) -> list[str]:
    """``s0 = arg3.shape[0]`` for each size symbol, from the first input dim that is it."""
    lines, bound = [], set()
    for buf in lowered.inputs:
        for d, size in enumerate(buf.layout.size):
            size = sympy.sympify(size)
            if size.is_Symbol and size not in bound:
                lines.append(f"{size} = {buf.name}.shape[{d}]")
                bound.add(size)
    wanted = set().union(*(sympy.sympify(s).free_symbols for b in lowered.inputs
                           for s in b.layout.size + b.layout.stride))
    if wanted - bound:
        raise ValueError(f"sizes {sorted(map(str, wanted - bound))} are not a dim of any input")
    return lines


def _alloc(name: str, layout: Layout, bound: _Bound) -> str:
    bound.fresh.add(name)
    return f"{name} = alloc({_ints(layout.size)}, {_ints(layout.stride)}, {layout.dtype})"


def _emit_kernel_call(code, step, spec: GeneratedKernel, cfg: LaunchConfig, reuse, bound,
                      all_layouts: Mapping[str, Layout]):
    layouts = {n.name: n.layout for n in step.nodes}
    in_place = {n.name for n in step.nodes if isinstance(n, MutationBuffer)}
    for name in spec.buffers[len(spec.buffers) - spec.n_outputs:]:
        if name in in_place:
            continue   # writes into the caller's tensor
        if name in reuse:
            lay, dead = layouts[name], reuse[name]
            if dead in bound.fresh:
                bound.fresh.add(name)
            old = all_layouts.get(dead)
            # The dead buffer itself where the layout is the same; else an alias of its
            # storage (torch's, without view tracking: a tensor less to dispatch per call).
            same = old is not None and (old.size, old.stride) == (lay.size, lay.stride)
            view = dead if same else \
                f"reinterpret_tensor({dead}, {_ints(lay.size)}, {_ints(lay.stride)}, 0)"
            code.line(f"{name} = {view}; del {dead}  # reuses dead storage")
        else:
            code.line(_alloc(name, layouts[name], bound))
    _emit_launch(code, spec, cfg, bound)


def _emit_launch(code, spec: GeneratedKernel, cfg: LaunchConfig, bound: _Bound):
    args = list(spec.buffers) + [texpr(sympy.sympify(n)) for n in spec.numels] + list(spec.size_args)
    name = bound.launch(spec, cfg, len(args))
    if all(isinstance(g, int) for g in cfg.grid):
        code.line(f"{name}.run({', '.join(args + ['stream'])})")
    else:
        grid = "(" + "".join(f"{g}, " for g in cfg.grid) + ")"
        code.line(f"{name}.run({', '.join([grid] + args + ['stream'])})")


def _bind_data_sizes(name: str, layout: Layout) -> list[str]:
    """``u0 = buf3.shape[0]``: a size only the op's result knows (nonzero, masked_select),
    bound where that result is made, for the kernels and checks after it."""
    return [f"{size} = {name}.shape[{d}]" for d, size in enumerate(layout.size)
            if sympy.sympify(size).is_Symbol and free_unbacked_symbols(sympy.sympify(size))]


def _emit_extern(code, op: ExternKernel, bound: _Bound, unread: set[str]):
    """The op's call; its results given the strides kiln planned, except those ``unread``
    (freed right after it): a result nothing reads may differ from its meta kernel's sizes
    (CPU embedding_bag's max_indices) and is not worth a copy anyway."""
    view = "reinterpret_tensor"     # an alias only the op sees: no view tracking needed
    args = ([render_arg(a, view) for a in op.args]
            + [f"{k}={render_arg(v, view)}" for k, v in op.kwargs])
    call = f"{bound.extern(op.kernel)}({', '.join(args)})"
    if op.binds is not None:    # .item(): a size the code after it reads
        code.line(f"{op.binds} = {call}")
        return
    if op.tuple_result:
        targets = ", ".join(n or "_" for n in op.outputs)
        code.line(f"{targets}, = {call}" if len(op.outputs) == 1 else f"{targets} = {call}")
    else:
        code.line(f"{op.outputs[0]} = {call}")
    for name, layout in zip(op.outputs, op.layouts):
        if name is not None:
            for line in _bind_data_sizes(name, layout):
                code.line(line)
            if name in unread:
                continue
            code.line(f"{name} = ensure_strides({name}, {_ints(layout.size)}, {_ints(layout.stride)})")
    unused = [n for n in op.outputs if n is None]
    if unused and op.tuple_result:
        code.line("del _")
