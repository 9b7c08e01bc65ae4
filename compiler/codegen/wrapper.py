"""The Python wrapper module: allocates buffers, launches kernels, calls externs, frees early.

The generated module defines its kernels and ``call(args)``; ``jit`` and ``libdevice`` are
bound by ``compiler.runtime`` before it runs (CUDA or interpreter), so the same source serves
both. Buffers are deleted right after their last use so peak memory stays near eager's.

Example:
    >>> print(render_arg((1, 2.5, None)))
    (1, 2.5, None)
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Mapping

import sympy
import torch
from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols

from ..artifact import content_hash
from ..config import CompilerOptions
from ..graph import LoweredGraph
from ..ir import (BufferRef, ComputedBuffer, ExternKernel, Layout, MatmulTemplate, MutationBuffer,
                  ScanBuffer, ScatterBuffer)
from ..scheduler import FusedKernel, FusionLimits, fusion_report, schedule
from ..sizevars import texpr
from .builder import CodeBuilder
from .matmul import choose_matmul_launch, generate_matmul, matmul_launch_config
from .matmul_select import plan_matmuls
from .memory import plan_memory
from .reduction import generate_row_kernel
from .scan import generate_scan_kernel
from .scatter import generate_scatter_kernel
from .triton import KernelSpec, generate_kernel, generate_pointwise_group

HEADER = """\
# kiln compiled module (generated).
import torch
import triton
import triton.language as tl
from compiler.runtime import ensure_strides, reinterpret
# `jit` and `libdevice` are bound by compiler.runtime before this module runs.
"""

# The interpreter walks the grid in Python: one big block is much faster than many small ones.
INTERPRETER_MAX_BLOCK = 1 << 16
MAX_GRID_Y = 65535


@dataclass(frozen=True)
class GeneratedModule:
    source: str
    kernels: tuple[KernelSpec, ...]
    kernel_meta: tuple[dict, ...]    # per kernel: what build and tune need to run it alone
    fusion: dict                     # kernel bytes against unfused (scheduler.fusion_report)


def _next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _block(numel: sympy.Expr, cap: int, floor: int = 1) -> int:
    """A power-of-two block covering ``numel`` up to ``cap`` (``cap`` when only known at run time)."""
    numel = sympy.sympify(numel)
    return max(floor, min(_next_pow2(numel), cap)) if numel.is_Integer else cap


def _grid(numel: sympy.Expr, block: int):
    """Programs along one axis: a number, or an expression of run-time sizes."""
    numel = sympy.sympify(numel)
    if numel.is_Integer:
        return max(1, math.ceil(int(numel) / block))
    return f"(({texpr(numel)}) + {block - 1}) // {block}"


def launch_config(spec: KernelSpec, options: CompilerOptions, device_type: str) -> dict:
    """Heuristic launch parameters (the config used when tuning is off)."""
    numels = [sympy.sympify(n) for n in spec.numels]
    if spec.kind == "matmul":
        return matmul_launch_config(numels, device_type)
    if spec.kind.startswith("reduction"):
        return _reduction_config(spec.kind, numels, device_type)
    if spec.kind == "pointwise2d":
        xnumel, ynumel = numels
        if device_type == "cpu":
            x = _block(xnumel, 256)
            y = _block(ynumel, INTERPRETER_MAX_BLOCK // x)
        else:
            x, y = _block(xnumel, options.tile_x), _block(ynumel, options.tile_y)
        if ynumel.is_Integer and int(ynumel) > MAX_GRID_Y * y:   # grid y is at most 65535
            y = _next_pow2(math.ceil(int(ynumel) / MAX_GRID_Y))
        warps = max(1, min(options.num_warps, x * y // 256))
        return {"XBLOCK": x, "YBLOCK": y, "num_warps": warps,
                "grid": (_grid(xnumel, x), _grid(ynumel, y))}
    (xnumel,) = numels
    x = _block(xnumel, INTERPRETER_MAX_BLOCK if device_type == "cpu" else options.xblock, 16)
    warps = max(1, min(options.num_warps, x // 256))
    return {"XBLOCK": x, "num_warps": warps, "grid": (_grid(xnumel, x),)}


def _reduction_config(kind: str, numels, device_type: str) -> dict:
    xnumel, rnumel = numels
    if kind == "reduction_persistent":
        r = _next_pow2(rnumel)
        # long rows: several rows a program and many warps (swept on an H100: XBLOCK=4 with
        # 16-32 warps beat one row with 8 warps by 2.7-3.2x for rows of 3136)
        budget = INTERPRETER_MAX_BLOCK if device_type == "cpu" else (16384 if r >= 2048 else 4096)
        x = _block(xnumel, max(1, budget // r))
    else:
        r = 4096 if device_type == "cpu" else 2048
        x = 1
    warps = max(1, min(16 if x * r >= 8192 else 8, x * r // 256))
    return {"XBLOCK": x, "RBLOCK": r, "num_warps": warps, "grid": (_grid(xnumel, x),)}


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


def generate_module(lowered: LoweredGraph, options: CompilerOptions, device_type: str,
                    configs: Mapping[str, Mapping[str, int]] | None = None) -> GeneratedModule:
    """The module's source. ``configs``: tuned launch configs by kernel key (from autotune
    trials); a kernel without one, or whose config cannot run it, gets the heuristic.
    GEMM templates not chosen ("auto") are emitted but never launched: ``candidate`` in
    their meta, so the pipeline tunes them against the extern path."""
    plan = plan_matmuls(lowered, options.matmul_template, configs)
    lowered = plan.lowered
    steps = schedule(lowered, FusionLimits.from_options(options))
    code = CodeBuilder()
    code.splice(HEADER)
    kernels = [s for s in steps if isinstance(s, (FusedKernel, MatmulTemplate))]
    layouts = {**{b.name: b.layout for b in lowered.inputs + lowered.constants},
               **_layouts(lowered, steps)}
    specs = [_generate(s, k, layouts) for k, s in enumerate(kernels)]
    spare = [generate_matmul(t, len(specs) + k, layouts) for k, t in enumerate(plan.candidates)]
    keys = [kernel_key(spec, layouts) for spec in specs + spare]
    launches = [choose_launch(spec, options, device_type, (configs or {}).get(key))
                for spec, key in zip(specs + spare, keys)]
    for spec in specs + spare:
        code.line()
        code.splice(spec.source)
    code.line()
    code.line()
    code.line("def call(args):")
    with code.indent():
        _emit_body(code, lowered, steps, dict(zip(map(id, kernels), zip(specs, launches))),
                   layouts)
    metas = tuple(_kernel_meta(spec, layouts, key, launch)
                  for spec, key, launch in zip(specs + spare, keys, launches))
    for meta in metas[len(specs):]:
        meta["candidate"] = True
    return GeneratedModule(code.text(), tuple(specs + spare), metas,
                           fusion_report(lowered, steps))


def kernel_key(spec: KernelSpec, layouts) -> str:
    """The kernel's identity across graphs: its source (name aside) and its pointer dtypes
    (a copy kernel's source is the same for float32 and int64)."""
    dtypes = [str(layouts[b].dtype) for b in spec.buffers]
    return content_hash(spec.kernel_key + json.dumps(dtypes))


def choose_launch(spec: KernelSpec, options, device_type: str, tuned=None) -> dict:
    """The tuned config when it can run this kernel, else ``launch_config``'s heuristic."""
    if spec.kind == "matmul":
        return choose_matmul_launch(spec, device_type, tuned)
    heuristic = launch_config(spec, options, device_type)
    if not tuned:
        return heuristic
    blocks = {k: int(v) for k, v in tuned.items() if k.endswith("BLOCK")}
    if set(blocks) != {k for k in heuristic if k.endswith("BLOCK")}:
        return heuristic
    numels = [sympy.sympify(n) for n in spec.numels]
    if spec.kind == "reduction_persistent" and blocks["RBLOCK"] < int(numels[1]):
        return heuristic    # a persistent kernel must hold the whole row
    launch = {**blocks, "num_warps": int(tuned.get("num_warps", heuristic["num_warps"]))}
    if "num_stages" in tuned:
        launch["num_stages"] = int(tuned["num_stages"])
    if spec.kind == "pointwise2d":
        launch["grid"] = (_grid(numels[0], blocks["XBLOCK"]), _grid(numels[1], blocks["YBLOCK"]))
    else:
        launch["grid"] = (_grid(numels[0], blocks["XBLOCK"]),)
    launch["tuned"] = True
    return launch


def _kernel_meta(spec: KernelSpec, layouts, key: str, launch: dict) -> dict:
    """The kernel's own description plus pointer dtypes and extents, size arguments and the
    launch config it runs with: enough to build and time it without the module around it."""
    meta = json.loads(spec.meta_json())
    meta["kernel_key"] = key
    meta["dtypes"] = [str(layouts[b].dtype) for b in spec.buffers]
    meta["extents"] = [_size_text(layouts[b].storage_size()) for b in spec.buffers]
    meta["size_args"] = list(spec.size_args)
    meta["launch"] = {k: (list(v) if k == "grid" else v) for k, v in launch.items()}
    return meta


def _size_text(size):
    size = sympy.sympify(size)
    return int(size) if size.is_Integer else texpr(size)


def _generate(step: FusedKernel | MatmulTemplate, number: int, layouts) -> KernelSpec:
    if isinstance(step, MatmulTemplate):
        return generate_matmul(step, number, layouts)
    if len(step.nodes) == 1 and isinstance(step.nodes[0], ScanBuffer):
        return generate_scan_kernel(step.nodes[0], number)
    if len(step.nodes) == 1 and isinstance(step.nodes[0], ScatterBuffer):
        return generate_scatter_kernel(step.nodes[0], number)
    if len(step.nodes) == 1 and isinstance(step.nodes[0], ComputedBuffer):
        return generate_kernel(step.nodes[0], number)
    if all(type(n) is ComputedBuffer for n in step.nodes):
        return generate_pointwise_group(step.nodes, step.stores, number)
    return generate_row_kernel(step.nodes, step.stores, number)


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


def _layouts(lowered, steps) -> dict[str, Layout]:
    out = {}
    for step in steps:
        if isinstance(step, FusedKernel):
            out.update({n.name: n.layout for n in step.nodes})
        elif isinstance(step, MatmulTemplate):
            out[step.name] = step.layout
        else:
            out.update({n: l for n, l in zip(step.outputs, step.layouts) if n is not None})
    return out


def _alloc(name: str, layout: Layout) -> str:
    return (f"{name} = torch.empty_strided({_ints(layout.size)}, {_ints(layout.stride)}, "
            f"dtype={layout.dtype}, device=device)")


def _emit_kernel_call(code, step, spec: KernelSpec, cfg: dict, reuse):
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


def launch_kwargs(launch: Mapping) -> dict:
    """The keyword arguments a kernel is launched with: its launch config (``meta["launch"]``)
    without the grid and the ``tuned`` flag.

    Example:
        >>> launch_kwargs({"XBLOCK": 1024, "num_warps": 4, "grid": [8], "tuned": True})
        {'XBLOCK': 1024, 'num_warps': 4}
    """
    return {k: v for k, v in launch.items() if k not in ("grid", "tuned")}


def _emit_launch(code, spec: KernelSpec, cfg: dict):
    args = list(spec.buffers) + [texpr(sympy.sympify(n)) for n in spec.numels] + list(spec.size_args)
    consts = [f"{k}={v}" for k, v in launch_kwargs(cfg).items()]
    grid = "(" + "".join(f"{g}, " for g in cfg["grid"]) + ")"
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
