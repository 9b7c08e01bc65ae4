"""The Triton GEMM template (kernel kinds "matmul" and "conv"): mm/addmm/bmm, and convs as
implicit GEMMs (``codegen.conv`` gathers their A operand), with a fused epilogue.

One program computes a (BLOCK_M, BLOCK_N) tile of one batch's product, walking K in BLOCK_K
steps with ``tl.dot`` accumulating in float32. Programs are swizzled in groups of GROUP_M
tile rows, so programs running together share tiles of A and B in L2. Rows and columns past
a ragged edge read in-bounds elements (never stored) instead of masking every load; only a
ragged K is masked. The epilogue is IR the lowering built -- addmm's bias, then the pointwise
consumer (activation, residual add, cast) -- written by the pointwise ``BodyWriter`` with the
product's element as a register value (``acc``); then one store.

Sizes and strides are literals: the template is specialized per shape, so its kernel key,
and with it its tuned config and the template-vs-cuBLAS choice, are per shape. The numel
arguments (batch, M, N, K) keep the launch protocol every kiln kernel follows (pointers,
numels, constexprs) that build and tune rely on; the body does not read them. A conv's
product is its output viewed as (N*OH*OW, C_out): the epilogue maps each product element back
to the output element (n, c, oh, ow) it is (``conv.out_index``).

Example:
    >>> import torch, sympy
    >>> from compiler.ir import BufferRef, ExternKernel, Layout, MatmulTemplate
    >>> n = sympy.Integer
    >>> a = BufferRef("arg0", (n(8), n(4)), (n(4), n(1)), n(0), True)
    >>> b = BufferRef("arg1", (n(4), n(16)), (n(16), n(1)), n(0), True)
    >>> out = Layout("cpu", torch.float32, (n(8), n(16)), (n(16), n(1)))
    >>> mm = ExternKernel(("buf0",), (out,), "aten.mm.default", (a, b), (), False, False)
    >>> spec = generate_matmul(MatmulTemplate(mm), 0, {})
    >>> str(spec.kind), spec.numels, spec.buffers
    ('matmul', (1, 8, 16, 4), ('arg0', 'arg1', 'buf0'))
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Callable

import sympy
import torch

from ..ir import (BufferRef, ComputedBuffer, Const, Expr, Layout, Load, MatmulTemplate, Op,
                  contiguous_strides, index_symbols, substitute, walk)
from ..kernels.spec import KernelKind
from ..traffic import Traffic
from . import conv
from .builder import CodeBuilder, affine
from .gemm import Gemm, gemm_of
from .kernel import GeneratedKernel, generated, jit_header
from .ops import HALF_TYPES, TL_DTYPES
from .triton import (INT32_MAX, XINDEX, YINDEX, BodyWriter, generate_kernel, kernel_name,
                     store_index, unflatten)

BINDEX = sympy.Symbol("bindex", integer=True, nonnegative=True)   # the batch (program id 1)
FLAT = sympy.Symbol("flat", integer=True, nonnegative=True)
ACC = Load("acc", sympy.Integer(0), torch.float32)   # stands for the accumulator tile
TILE = "[BLOCK_M, BLOCK_N]"


# ----------------------------------------------------------------------------- the epilogue
def replace_loads(expr: Expr, buffer: str, value: Expr) -> Expr:
    """``expr`` with every load of ``buffer`` replaced by ``value`` (shared subtrees once)."""
    memo: dict[int, Expr] = {}

    def go(e: Expr) -> Expr:
        if id(e) not in memo:
            if isinstance(e, Load) and e.buffer == buffer:
                memo[id(e)] = value
            elif isinstance(e, Load) and e.indirect:
                memo[id(e)] = dataclasses.replace(
                    e, indirect=tuple((s, go(v)) for s, v in e.indirect))
            elif isinstance(e, Op):
                memo[id(e)] = dataclasses.replace(e, args=tuple(go(a) for a in e.args))
            else:
                memo[id(e)] = e
        return memo[id(e)]

    return go(expr)


def _broadcast_index(ref: BufferRef, index) -> sympy.Expr:
    """Offset of ``ref``'s element at ``index`` under broadcasting (right-aligned dims)."""
    out = sympy.sympify(ref.offset)
    for size, stride, idx in zip(reversed(ref.size), reversed(ref.stride), reversed(index)):
        if size != 1:
            out += stride * idx
    return out


def product_value(g: Gemm) -> Expr:
    """Element (yindex, xindex) of the extern's result: ``beta * bias + alpha * acc``."""
    value = ACC if g.alpha == 1 else Op("mul", (ACC, Const(g.alpha, torch.float32)), g.dtype)
    if g.bias is None or g.beta == 0:    # eager ignores the input (even NaNs) when beta is 0
        return value
    bias = Load(g.bias.name, _broadcast_index(g.bias, (YINDEX, XINDEX)), g.dtype)
    if g.beta != 1:
        bias = Op("mul", (bias, Const(g.beta, torch.float32)), g.dtype)
    return Op("add", (bias, value), g.dtype)


def product_flat(g: Gemm) -> sympy.Expr:
    """The flat (row-major) position of element (bindex, yindex, xindex) of the product."""
    _, m, n, _ = g.sizes
    return (BINDEX * m * n if g.sizes[0] > 1 else 0) + YINDEX * n + XINDEX


def by_out_index(g: Gemm, size) -> bool:
    """Whether an epilogue of ``size`` reads the product by the extern output's own index
    (a conv's consumer of the output's shape), rather than by its flat position."""
    return g.conv is not None and tuple(size) == tuple(g.out_layout.size)


def stores_rows(g: Gemm) -> bool:
    """Whether the extern output stores the product row-major, so that a consumer reading
    it by flat position reads product element (y, x) at y * N + x: a contiguous GEMM
    result, or an NHWC conv output (then also viewed as (N*OH*OW, C_out), as a following
    1x1 conv's mm reads it)."""
    return _walk(g).stores_rows(g.out_layout)


def out_index(g: Gemm) -> tuple[sympy.Expr, ...]:
    """The extern output's element that product element (bindex, yindex, xindex) is."""
    return _walk(g).out_index(g)


def epilogue_body(t: MatmulTemplate, g: Gemm) -> tuple[Expr, sympy.Expr, torch.dtype]:
    """(value, store offset, dtype) of the template's output at (bindex, yindex, xindex).

    The epilogue reads the product element for element in row-major order (checked by
    ``matmul_select``), possibly through a view (a 3-D linear's (B*S, N) -> (B, S, N)): its
    index digits are those of the product's flat position. A conv's epilogue reads its
    output element for element at the output's own size (``by_out_index``): its index
    is ``out_index``; one that reads it through a view (an NHWC output as (N*OH*OW, C_out))
    goes by flat position as a GEMM's does.
    """
    value = product_value(g)
    if t.epilogue is None:
        return value, g.out_layout.index(out_index(g)), g.dtype
    if g.dtype in HALF_TYPES:   # the epilogue reads the product as eager stores it: rounded
        value = Op("to_dtype", (value,), g.dtype, params=(True,))
    c: ComputedBuffer = t.epilogue
    isyms = index_symbols(len(c.layout.size))
    if by_out_index(g, c.layout.size):
        mapping = dict(zip(isyms, out_index(g)))
    else:
        digits = unflatten(FLAT, list(zip(isyms, c.layout.size)))
        mapping = {s: sympy.sympify(e).xreplace({FLAT: product_flat(g)})
                   for s, e in digits.items()}
    body = substitute(replace_loads(c.body, g.out, value), mapping)
    return body, c.layout.index(isyms).xreplace(mapping), c.layout.dtype


# ----------------------------------------------------------------------------- the kernel
def _extents(g: Gemm) -> int:
    """The largest offset the operand loads form (for the int32/int64 choice)."""
    b, m, n, k = g.sizes
    return max(int(r.offset) + sum((int(s) - 1) * abs(int(st)) for s, st in zip(r.size, r.stride))
               for r in (g.a, g.b))


def _mainloop(g: Gemm, a_ptr: str, b_ptr: str, int64: bool) -> list[str]:
    """Program -> tile (grouped order), the K loop into ``acc``, and the epilogue's indices."""
    batch, m, n, k = g.sizes
    wide = ".to(tl.int64)" if int64 else ""
    return [
        *_tile(m, n, wide),
        *_walk(g).k_loop(g, a_ptr, b_ptr),
        "yindex = rm[:, None]",
        "xindex = rn[None, :]",
        f"mask = (yindex < {m}) & (xindex < {n})",
    ]


def _tile(m: int, n: int, wide: str) -> list[str]:
    """The program's tile of the product: rows ``rm``, columns ``rn`` (in-bounds: ``ram``,
    ``rbn``) and the K offsets ``rk`` of one step."""
    return [
        "pid = tl.program_id(0)",
        f"bindex = tl.program_id(1){wide}",
        f"grid_m = ({m} + BLOCK_M - 1) // BLOCK_M",
        f"grid_n = ({n} + BLOCK_N - 1) // BLOCK_N",
        "width = GROUP_M * grid_n",
        "first_m = (pid // width) * GROUP_M",
        "group_m = tl.minimum(grid_m - first_m, GROUP_M)",
        "pid_m = first_m + (pid % width) % group_m",
        "pid_n = (pid % width) // group_m",
        f"rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)){wide}",
        f"rn = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)){wide}",
        f"rk = tl.arange(0, BLOCK_K){wide}",
        # past a ragged edge, rows and columns read in-bounds elements that are never
        # stored; an even edge keeps the plain range, whose contiguity Triton can see
        f"ram = rm if {m} % BLOCK_M == 0 else rm % {m}",
        f"rbn = rn if {n} % BLOCK_N == 0 else rn % {n}",
    ]


def _k_loop(g: Gemm, a_ptr: str, b_ptr: str) -> list[str]:
    """A GEMM's K loop into ``acc``: both operands strided views, stepped by pointer."""
    k, a, b = g.sizes[3], g.a, g.b
    # float32: full-precision products like eager (torch's default disallows TF32 matmuls)
    precision = ', input_precision="ieee"' if g.dtype == torch.float32 else ""
    return [
        f"a_ptrs = {a_ptr} + ({affine(a.offset, [(a.stride[0], 'bindex'), (a.stride[1], 'ram[:, None]'), (a.stride[2], 'rk[None, :]')])})",
        f"b_ptrs = {b_ptr} + ({affine(b.offset, [(b.stride[0], 'bindex'), (b.stride[1], 'rk[:, None]'), (b.stride[2], 'rbn[None, :]')])})",
        # tl.full, not tl.zeros: a @jit helper the interpreter cannot call
        "acc = tl.full((BLOCK_M, BLOCK_N), 0, tl.float32)",
        f"for k in range(0, {k}, BLOCK_K):",
        f"    if {k} % BLOCK_K == 0:",
        "        a = tl.load(a_ptrs)",
        "        b = tl.load(b_ptrs)",
        "    else:",
        f"        a = tl.load(a_ptrs, mask=rk[None, :] < {k} - k, other=0.0)",
        f"        b = tl.load(b_ptrs, mask=rk[:, None] < {k} - k, other=0.0)",
        f"    acc = tl.dot(a, b, acc{precision})",
        f"    a_ptrs += BLOCK_K * {int(a.stride[2])}",
        f"    b_ptrs += BLOCK_K * {int(b.stride[1])}",
    ]


def generate_matmul(t: MatmulTemplate, number: int, layouts) -> GeneratedKernel:
    """The template kernel computing ``t``; ``layouts`` by buffer name (for the size of the
    values the epilogue reads and the int32/int64 choice)."""
    g = gemm_of(t.extern)
    body, store, out_dtype = epilogue_body(t, g)
    batch, m, n, k = g.sizes
    epilogue = CodeBuilder()
    ranges = {BINDEX: sympy.Integer(batch), YINDEX: sympy.Integer(m), XINDEX: sympy.Integer(n)}
    writer = BodyWriter(epilogue, {}, ranges, "mask", names={ACC: "acc"})
    a_ptr, b_ptr = writer.pointer(g.a.name), writer.pointer(g.b.name)
    value = writer.value(body)
    if out_dtype in HALF_TYPES:
        value = f"{value}.to({TL_DTYPES[out_dtype]})"
    epilogue.line(f"tl.store(out_ptr0 + ({store_index(writer.index(store), TILE)}), {value}, mask)")
    writer.size_symbols.discard(BINDEX)
    assert not writer.size_symbols, writer.size_symbols   # static shapes only (gemm_of)
    buffers = tuple(writer.pointers) + (t.name,)
    extents = [int(layouts[b].storage_size()) for b in buffers if b in layouts]
    int64 = max(extents + [_extents(g), batch * m * n]) > INT32_MAX
    walk_ = _walk(g)
    kind = walk_.kind
    name = kernel_name(body, number, prefix=walk_.prefix)
    code = CodeBuilder()
    code.line(walk_.title(g))
    code.lines(jit_header(name, list(writer.pointers.values()) + ["out_ptr0"], kind))
    with code.indent():
        code.lines(_mainloop(g, a_ptr, b_ptr, int64))
        code.splice(epilogue)
    source = code.text()
    ops = tuple(e.op for e in walk(body) if isinstance(e, Op))
    return generated(name, source, buffers, tuple(sympy.Integer(v) for v in g.sizes),
                     kind, ops, _bytes(g, writer, t, layouts),
                     baseline=json.dumps(baseline(t, buffers), sort_keys=True))


def _gemm_title(g: Gemm) -> str:
    batch, m, n, k = g.sizes
    return f"# GEMM template for B={batch} M={m} N={n} K={k}"


def _conv_title(g: Gemm) -> str:
    c, (_, m, n, k) = g.conv, g.sizes
    return (f"# conv template (implicit GEMM M={m} N={n} K={k}) for {c.batch}x{c.channels}x"
            f"{c.height}x{c.width} by {c.kernel[0]}x{c.kernel[1]}, stride {c.stride}, "
            f"padding {c.padding}, dilation {c.dilation}")


def _bytes(g: Gemm, writer: BodyWriter, t: MatmulTemplate, layouts) -> Traffic:
    """Operands read once, each epilogue value once per output element, the output once."""
    batch, m, n, k = g.sizes
    size = g.dtype.itemsize
    loads = [e for e in writer.names if isinstance(e, tuple) and isinstance(e[0], Load)]
    reads = sum(batch * m * n * e[0].dtype.itemsize if writer.names[e] in writer.block
                else e[0].dtype.itemsize for e in loads)
    return Traffic(_walk(g).operand_elements(g) * size + reads,
                   batch * m * n * t.layout.dtype.itemsize)


# ----------------------------------------------------------------------------- the walks
@dataclass(frozen=True)
class _Walk:
    """What differs between a GEMM and a conv in the template, chosen once (``_walk``): how
    its K loop reads the operands (strided views, or the input gathered window by window:
    ``codegen.conv``), which output element a product element is, when the output is
    row-major, the elements it reads at least once, its kernel kind, name and title."""
    kind: KernelKind
    prefix: str
    k_loop: Callable[[Gemm, str, str], list[str]]
    out_index: Callable[[Gemm], tuple]
    stores_rows: Callable[[Layout], bool]
    operand_elements: Callable[[Gemm], int]
    title: Callable[[Gemm], str]


def _dense(lay: Layout) -> bool:
    return tuple(lay.stride) == contiguous_strides(lay.size) and lay.offset == 0


def _gemm_out_index(g: Gemm) -> tuple:
    return (BINDEX, YINDEX, XINDEX)[3 - len(g.out_layout.size):]


def _gemm_operands(g: Gemm) -> int:
    batch, m, n, k = g.sizes
    return batch * (m * k + k * n)


def _conv_loop(g: Gemm, a_ptr: str, b_ptr: str) -> list[str]:
    return conv.conv_loop(g.conv, g.a, g.b, a_ptr, b_ptr)


_GEMM = _Walk(KernelKind.MATMUL, "kiln_mm", _k_loop, _gemm_out_index, _dense, _gemm_operands,
              _gemm_title)
_CONV = _Walk(KernelKind.CONV, "kiln_conv", _conv_loop, lambda g: conv.out_index(g.conv),
              conv.stores_rows, lambda g: conv.operand_elements(g.conv), _conv_title)


def _walk(g: Gemm) -> _Walk:
    return _GEMM if g.conv is None else _CONV


# ----------------------------------------------------------------------------- the baseline
def arg_json(value, buffers):
    """A baseline's argument: a strided view of pointer ``ptr``, or a plain value."""
    if isinstance(value, BufferRef):
        return {"ptr": buffers.index(value.name), "size": [int(s) for s in value.size],
                "stride": [int(s) for s in value.stride], "offset": int(value.offset)}
    return {"value": value}


def baseline(t: MatmulTemplate, buffers) -> dict:
    """How the extern path computes ``t``'s output from the template's pointers: the ATen
    call (operands as views of pointer ``ptr``) and, when there is an epilogue, the
    separate pointwise kernel kiln generates for it, whose pointer ``-1`` is the product.
    ``compiler.autotune.baseline`` runs it, so the extern is timed at the same shape."""
    op = t.extern
    lay = op.layouts[0]
    out = {"op": op.kernel, "args": [arg_json(a, buffers) for a in op.args],
           "kwargs": {k: arg_json(v, buffers) for k, v in op.kwargs},
           "out": {"size": [int(s) for s in lay.size], "stride": [int(s) for s in lay.stride]},
           "epilogue": None}
    if t.epilogue is not None:
        out["epilogue"] = epilogue_json(generate_kernel(t.epilogue, 0), op.outputs[0], buffers)
    return out


def epilogue_json(spec, product: str, buffers) -> dict:
    """A baseline's separate epilogue kernel ``spec``: its pointers as positions in
    ``buffers``, the library call's result (buffer ``product``) as pointer -1."""
    return {"name": spec.name, "source": spec.source, "kind": str(spec.kind),
            "numels": [int(v) for v in spec.numels],
            "buffers": [-1 if b == product else buffers.index(b) for b in spec.buffers]}
