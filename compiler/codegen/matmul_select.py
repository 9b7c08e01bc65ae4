"""Which GEMMs and convs run as kiln's Triton template, and which pointwise consumer each
one fuses.

``plan_matmuls`` runs before scheduling. Per eligible mm/addmm/bmm or conv extern
(``gemm_of``) it builds a ``MatmulTemplate``: the extern plus its epilogue -- the one plain
pointwise buffer that is the product's only reader and reads it element for element (a
GEMM's in row-major order: the same shape, or a view such as a 3-D linear's (B*S, N) ->
(B, S, N); a conv's at its own size). Lowering already inlined the consumer chain (bias
add, activation, residual add, cast) into that buffer's body.
``use_template`` then decides, per template, between it and the extern path (cuBLAS plus a
separate epilogue kernel), following ``CompilerOptions.matmul_template``:

    "off"   the extern path everywhere: generated code is what it was before templates
    "on"    the template wherever eligible
    "auto"  the template where a tuned config for its kernel key says it won; the template
            is still emitted, unlaunched (kernel meta ``"candidate": true``), so the
            pipeline builds and tunes it against the extern baseline at that shape

GEMMs follow ``matmul_template``; convs follow ``conv_mode`` of ``conv_kernels``, which adds
one mode of its own:

    "prefer"  the template, unless a tuned config for its kernel key says the extern won

Example:
    >>> use_template("auto", {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 8})
    True
    >>> use_template("auto", {"extern": 1}), use_template("auto", None)
    (False, False)
    >>> conv_mode("triton", "off", "cuda"), conv_mode("auto", "off", "cuda")
    ('on', 'prefer')
    >>> conv_mode("auto", "auto", "cuda"), conv_mode("auto", "off", "cpu")
    ('auto', 'off')
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping

import sympy

from ..graph import LoweredGraph
from ..ir import (ComputedBuffer, ExternKernel, IndexExpr, Layout, Load, MatmulTemplate,
                  MutationBuffer, contiguous_strides, index_symbols, loads_of, walk)
from ..scheduler import reads_of, remove_dead
from .kernel import kernel_key
from .gemm import Gemm, gemm_of
from .matmul import by_out_index, generate_matmul, stores_rows

MODES = ("off", "auto", "on")
CONV_MODES = MODES + ("prefer",)


@dataclass(frozen=True)
class MatmulPlan:
    """``lowered`` with the chosen templates in place of their extern and epilogue;
    ``candidates``: templates not chosen ("auto"), emitted only to be tuned."""
    lowered: LoweredGraph
    candidates: tuple[MatmulTemplate, ...] = ()


def use_template(mode: str, tuned: Mapping | None) -> bool:
    """Template or extern path for one GEMM, given the tuned config of its template kernel.

    "auto" trusts only a measurement: the tune stage times the template's candidates and
    the extern baseline (config ``{"extern": 1}``: the cuBLAS call plus the separate
    epilogue kernel) at this very shape -- the template's kernel key is per shape -- and the
    best trial's config comes back here. Untuned, cuBLAS is the safe side: it is rarely far
    from the best, while an untuned template can be several times slower.
    """
    if mode not in CONV_MODES:
        raise ValueError(f"matmul_template must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "prefer":
        return not (tuned and tuned.get("extern"))
    if mode != "auto":
        return mode == "on"
    return bool(tuned) and not tuned.get("extern")


def conv_mode(conv_kernels: str, matmul_template: str, target: str) -> str:
    """The template mode of the convs the template can compute (``conv.conv_of``; depthwise
    and GEMM-shaped convs never reach it: lowering made them kernels and mms).

    "triton" takes the template everywhere, "library" nowhere. "auto" on a GPU target
    prefers the template: cuDNN's per-shape set-up was most of a served ResNet-50's first
    call (0.51 s to first result with cuDNN, 0.26 s without, H200: benchmarks/results/
    2026-12-06/s4), and the tuner still times cuDNN as the template's baseline, so a tuned
    config can give a shape back to it. Under ``matmul_template`` "auto" the template is a
    tuning candidate, as a GEMM's is. On a CPU target ATen's conv stays: no cuDNN set-up to
    spare, and the template would run under Triton's interpreter.
    """
    if conv_kernels == "triton":
        return "on"
    if conv_kernels == "library" or not target.startswith("cuda"):
        return "off"
    return "auto" if matmul_template == "auto" else "prefer"


def all_layouts(lowered: LoweredGraph) -> dict[str, Layout]:
    """Every buffer's layout by name: inputs, constants and operation results."""
    out = {b.name: b.layout for b in lowered.inputs + lowered.constants}
    for op in lowered.operations:
        if isinstance(op, ExternKernel):
            out.update({n: l for n, l in zip(op.outputs, op.layouts) if n is not None})
        else:
            out[op.name] = op.layout
    return out


def _readers(ops) -> dict[str, list]:
    out: dict[str, list] = {}
    for op in ops:
        for name in reads_of(op):
            out.setdefault(name, []).append(op)
    return out


def epilogue_of(g: Gemm, ops: list, at: int, readers, outputs: set[str]
                ) -> ComputedBuffer | None:
    """The pointwise buffer to fuse after ``g`` (``ops[at]``), or None (see the module doc)."""
    users = readers.get(g.out, [])
    if g.out in outputs or len(users) != 1 or type(users[0]) is not ComputedBuffer:
        return None
    c = users[0]
    size = c.layout.size
    if not all(sympy.sympify(s).is_Integer for s in size + c.layout.stride):
        return None
    isyms = index_symbols(len(size))
    want = _element_read(g, size, isyms)
    if want is None:
        return None
    for load in loads_of(c.body):
        if load.buffer == g.out and (load.indirect or sympy.expand(load.index - want) != 0):
            return None
    indices = [n.index for n in walk(c.body) if isinstance(n, (Load, IndexExpr))]
    if any(sympy.sympify(i).free_symbols - set(isyms) - indirect_symbols(c.body)
           for i in indices):
        return None    # a run-time size in the epilogue: the template is static-shape only
    if any(isinstance(op, MutationBuffer) for op in ops[at + 1:_position(ops, c)]):
        return None    # moved to the epilogue's place, the GEMM could read a mutated input
    return c


def _element_read(g: Gemm, size, isyms) -> sympy.Expr | None:
    """Where element ``isyms`` of an epilogue of ``size`` must read the product for the
    template to hand it over from registers (``matmul.epilogue_body`` maps it back), or
    None where the shapes cannot line up: a conv's output of its own shape, read at the
    same index; else a product stored row-major, of as many elements, read at the flat
    position."""
    if by_out_index(g, size):
        return g.out_layout.index(isyms)
    if int(sympy.Mul(*size)) != g.sizes[0] * g.sizes[1] * g.sizes[2] or not stores_rows(g):
        return None
    return sum((s * i for s, i in zip(contiguous_strides(size), isyms)), sympy.Integer(0))


def indirect_symbols(body) -> set:
    """Symbols that loads bind to loaded values (gathers), not sizes."""
    return {s for n in walk(body) if isinstance(n, Load) for s, _ in n.indirect}


def _position(ops: list, op) -> int:
    return next(k for k, other in enumerate(ops) if other is op)


def plan_matmuls(lowered: LoweredGraph, mode: str, configs: Mapping | None = None,
                 conv: str = "off") -> MatmulPlan:
    """Templates in place of the GEMMs (``mode``) and convs (``conv``, see ``conv_mode``)
    ``use_template`` picks; ``configs`` are the tuned configs by kernel key (as
    ``passes.compile_graph`` takes them)."""
    for m in (mode, conv):
        use_template(m, None)    # rejects an unknown mode

    def mode_of(g: Gemm | None) -> str:
        return "off" if g is None else conv if g.conv is not None else mode

    if all(mode_of(gemm_of(op)) == "off" for op in lowered.operations):
        return MatmulPlan(lowered)
    ops = remove_dead(lowered)
    readers = _readers(ops)
    outputs = {o.ref.name for o in lowered.outputs if o.ref is not None}
    layouts = all_layouts(lowered)
    replaced: dict[int, MatmulTemplate | None] = {}
    candidates = []
    for at, op in enumerate(ops):
        g = gemm_of(op)
        if mode_of(g) == "off":
            continue
        template = MatmulTemplate(op, epilogue_of(g, ops, at, readers, outputs))
        key = kernel_key(generate_matmul(template, 0, layouts), layouts)
        if not use_template(mode_of(g), (configs or {}).get(key)):
            candidates.append(template)
            continue
        replaced[id(op)] = template if template.epilogue is None else None
        if template.epilogue is not None:   # runs where the epilogue ran: its inputs exist
            replaced[id(template.epilogue)] = template
    operations = tuple(replaced.get(id(op), op) for op in lowered.operations
                       if replaced.get(id(op), op) is not None)
    return MatmulPlan(dataclasses.replace(lowered, operations=operations), tuple(candidates))

