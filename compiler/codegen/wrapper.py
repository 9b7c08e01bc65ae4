"""The Python wrapper module: allocates buffers, launches kernels, calls externs, frees early.

The generated module defines its kernels and ``call(args)``; ``jit`` and ``libdevice`` are
bound when it is imported (``compiler.kernels.load``: CUDA or the interpreter), so the same
source serves both. Buffers are deleted right after their last use so peak memory stays
near eager's.

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

def render_arg(value) -> str:
    """Source text for an extern argument (literals, dtypes, views of buffers)."""
    if isinstance(value, BufferRef):
        if value.is_whole:
            return value.name
        return (f"reinterpret({value.name}, {_ints(value.size)}, {_ints(value.stride)}, "
                f"{texpr(sympy.sympify(value.offset))})")
    if isinstance(value, tuple):
        inner = ", ".join(render_arg(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(render_arg(v) for v in value) + "]"
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
                     sources: list[str], layouts: Mapping[str, Layout]) -> str:
    """The module's source: the header, every kernel's source (``sources``, in order), then
    ``call(args)`` running ``steps``. ``kernels`` maps ``id(step)`` of each kernel step to its
    (``GeneratedKernel``, ``LaunchConfig``)."""
    code = CodeBuilder()
    code.splice(HEADER)
    for source in sources:
        code.line()
        code.splice(source)
    code.line()
    code.line()
    code.line("def call(args):")
    with code.indent():
        _emit_body(code, lowered, steps, kernels, layouts)
    return code.text()


def _emit_body(code, lowered, steps, kernels, layouts):
    names = [b.name for b in lowered.inputs]
    if names:
        code.line(f"{', '.join(names)}, = args")
    code.line("args.clear()")
    code.line(f"device = {names[0]}.device" if names else f"device = torch.device({lowered.device!r})")
    for line in _bind_sizes(lowered):
        code.line(line)
    memory = plan_memory(lowered, steps, layouts)
    for k, step in enumerate(steps):
        if isinstance(step, FusedKernel):
            spec, launch = kernels[id(step)]
            _emit_kernel_call(code, step, spec, launch, memory.reuse)
        elif isinstance(step, MatmulTemplate):
            spec, launch = kernels[id(step)]
            code.line(_alloc(step.name, step.layout))
            _emit_launch(code, spec, launch)
        else:
            _emit_extern(code, step)
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


def _alloc(name: str, layout: Layout) -> str:
    return (f"{name} = torch.empty_strided({_ints(layout.size)}, {_ints(layout.stride)}, "
            f"dtype={layout.dtype}, device=device)")


def _emit_kernel_call(code, step, spec: GeneratedKernel, cfg: LaunchConfig, reuse):
    layouts = {n.name: n.layout for n in step.nodes}
    in_place = {n.name for n in step.nodes if isinstance(n, MutationBuffer)}
    for name in spec.buffers[len(spec.buffers) - spec.n_outputs:]:
        if name in in_place:
            continue   # writes into the caller's tensor
        if name in reuse:
            lay = layouts[name]
            code.line(f"{name} = {reuse[name]}.as_strided({_ints(lay.size)}, {_ints(lay.stride)})"
                      f"; del {reuse[name]}  # reuses dead storage")
        else:
            code.line(_alloc(name, layouts[name]))
    _emit_launch(code, spec, cfg)


def _emit_launch(code, spec: GeneratedKernel, cfg: LaunchConfig):
    args = list(spec.buffers) + [texpr(sympy.sympify(n)) for n in spec.numels] + list(spec.size_args)
    consts = [f"{k}={v}" for k, v in cfg.params]
    grid = "(" + "".join(f"{g}, " for g in cfg.grid) + ")"
    code.line(f"{spec.name}[{grid}]({', '.join(args + consts)})")


def _bind_data_sizes(name: str, layout: Layout) -> list[str]:
    """``u0 = buf3.shape[0]``: a size only the op's result knows (nonzero, masked_select),
    bound where that result is made, for the kernels and checks after it."""
    return [f"{size} = {name}.shape[{d}]" for d, size in enumerate(layout.size)
            if sympy.sympify(size).is_Symbol and free_unbacked_symbols(sympy.sympify(size))]


def _emit_extern(code, op: ExternKernel):
    args = [render_arg(a) for a in op.args] + [f"{k}={render_arg(v)}" for k, v in op.kwargs]
    call = f"torch.ops.{op.kernel}({', '.join(args)})"
    if op.tuple_result:
        targets = ", ".join(n or "_" for n in op.outputs)
        code.line(f"{targets}, = {call}" if len(op.outputs) == 1 else f"{targets} = {call}")
    else:
        code.line(f"{op.outputs[0]} = {call}")
    for name, layout in zip(op.outputs, op.layouts):
        if name is not None:
            for line in _bind_data_sizes(name, layout):
                code.line(line)
            code.line(f"{name} = ensure_strides({name}, {_ints(layout.size)}, {_ints(layout.stride)})")
    unused = [n for n in op.outputs if n is None]
    if unused and op.tuple_result:
        code.line("del _")
