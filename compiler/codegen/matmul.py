"""The Triton GEMM template (kernel kind "matmul"): mm/addmm/bmm with a fused epilogue.

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
numels, constexprs) that build and tune rely on; the body does not read them.

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

import sympy
import torch

from ..ir import (BufferRef, ComputedBuffer, Const, Expr, ExternKernel, Layout, Load,
                  MatmulTemplate, Op, index_symbols, substitute, walk)
from ..kernels.spec import KernelKind
from ..traffic import Traffic
from .builder import CodeBuilder
from .kernel import GeneratedKernel, generated, jit_header
from .ops import HALF_TYPES, TL_DTYPES
from .triton import (INT32_MAX, XINDEX, YINDEX, BodyWriter, generate_kernel, kernel_name,
                     store_index, unflatten)

GEMM_OPS = ("aten.mm.default", "aten.addmm.default", "aten.bmm.default")
GEMM_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
BINDEX = sympy.Symbol("bindex", integer=True, nonnegative=True)   # the batch (program id 1)
FLAT = sympy.Symbol("flat", integer=True, nonnegative=True)
ACC = Load("acc", sympy.Integer(0), torch.float32)   # stands for the accumulator tile
TILE = "[BLOCK_M, BLOCK_N]"
MAX_GRID_Y = 65535


# ----------------------------------------------------------------------------- operands
@dataclass(frozen=True)
class Gemm:
    """An mm/addmm/bmm as 3-D (batch, rows, cols) operand views: ``a`` (B, M, K) and ``b``
    (B, K, N); addmm's ``bias`` as given (broadcast to (M, N)) and its ``alpha``/``beta``."""
    a: BufferRef
    b: BufferRef
    bias: BufferRef | None
    alpha: float
    beta: float
    sizes: tuple[int, int, int, int]     # B, M, N, K
    out: str
    out_layout: Layout

    @property
    def dtype(self) -> torch.dtype:
        return self.out_layout.dtype


def _static(values) -> bool:
    return all(sympy.sympify(v).is_Integer for v in values)


def _ref_static(ref) -> bool:
    return isinstance(ref, BufferRef) and _static(ref.size + ref.stride + (ref.offset,))


def _batched(ref: BufferRef) -> BufferRef:
    """A 2-D operand as a batch of one (batch stride 0)."""
    if len(ref.size) == 3:
        return ref
    return dataclasses.replace(ref, size=(sympy.Integer(1),) + tuple(ref.size),
                               stride=(sympy.Integer(0),) + tuple(ref.stride))


def gemm_of(op) -> Gemm | None:
    """``op`` as a ``Gemm`` when the template can compute it: mm/addmm/bmm of float16,
    bfloat16 or float32 with static sizes, strides and literal alpha/beta; else None."""
    if not isinstance(op, ExternKernel) or op.kernel not in GEMM_OPS or len(op.outputs) != 1:
        return None
    layout = op.layouts[0]
    kwargs = dict(op.kwargs)
    if op.kernel == "aten.addmm.default":
        if len(op.args) != 3:
            return None
        bias, a, b = op.args
    else:
        if len(op.args) != 2 or kwargs:
            return None
        (a, b), bias = op.args, None
    alpha, beta = kwargs.get("alpha", 1), kwargs.get("beta", 1)
    if (layout is None or layout.dtype not in GEMM_DTYPES
            or not all(_ref_static(r) for r in (a, b) + ((bias,) if bias is not None else ()))
            or not _static(layout.size + layout.stride + (layout.offset,))
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                       for v in (alpha, beta))):
        return None
    a, b = _batched(a), _batched(b)
    sizes = (int(a.size[0]), int(a.size[1]), int(b.size[2]), int(a.size[2]))
    if min(sizes) < 1 or sizes[0] > MAX_GRID_Y:
        return None
    return Gemm(a, b, bias, float(alpha), float(beta), sizes, op.outputs[0], layout)


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


def epilogue_body(t: MatmulTemplate, g: Gemm) -> tuple[Expr, sympy.Expr, torch.dtype]:
    """(value, store offset, dtype) of the template's output at (bindex, yindex, xindex).

    The epilogue reads the product element for element in row-major order (checked by
    ``matmul_select``), possibly through a view (a 3-D linear's (B*S, N) -> (B, S, N)): its
    index digits are those of the product's flat position.
    """
    value = product_value(g)
    if t.epilogue is None:
        index = (BINDEX, YINDEX, XINDEX)[3 - len(g.out_layout.size):]
        return value, g.out_layout.index(index), g.dtype
    if g.dtype in HALF_TYPES:   # the epilogue reads the product as eager stores it: rounded
        value = Op("to_dtype", (value,), g.dtype, params=(True,))
    c: ComputedBuffer = t.epilogue
    isyms = index_symbols(len(c.layout.size))
    digits = unflatten(FLAT, list(zip(isyms, c.layout.size)))
    mapping = {s: sympy.sympify(e).xreplace({FLAT: product_flat(g)}) for s, e in digits.items()}
    body = substitute(replace_loads(c.body, g.out, value), mapping)
    return body, c.layout.index(isyms).xreplace(mapping), c.layout.dtype


# ----------------------------------------------------------------------------- the kernel
def _affine(offset, terms) -> str:
    """``offset + c0*v0 + ...`` as source, skipping zero terms: terms are (coef, text)."""
    parts = [f"{int(c)} * {v}" if int(c) != 1 else v for c, v in terms if int(c) != 0]
    if int(offset) != 0 or not parts:
        parts.insert(0, str(int(offset)))
    return " + ".join(parts)


def _extents(g: Gemm) -> int:
    """The largest offset the operand loads form (for the int32/int64 choice)."""
    b, m, n, k = g.sizes
    return max(int(r.offset) + sum((int(s) - 1) * abs(int(st)) for s, st in zip(r.size, r.stride))
               for r in (g.a, g.b))


def _mainloop(g: Gemm, a_ptr: str, b_ptr: str, int64: bool) -> list[str]:
    """Program -> tile (grouped order), the K loop into ``acc``, and the epilogue's indices."""
    batch, m, n, k = g.sizes
    a, b = g.a, g.b
    wide = ".to(tl.int64)" if int64 else ""
    # float32: full-precision products like eager (torch's default disallows TF32 matmuls)
    precision = ', input_precision="ieee"' if g.dtype == torch.float32 else ""
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
        f"a_ptrs = {a_ptr} + ({_affine(a.offset, [(a.stride[0], 'bindex'), (a.stride[1], 'ram[:, None]'), (a.stride[2], 'rk[None, :]')])})",
        f"b_ptrs = {b_ptr} + ({_affine(b.offset, [(b.stride[0], 'bindex'), (b.stride[1], 'rk[:, None]'), (b.stride[2], 'rbn[None, :]')])})",
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
        "yindex = rm[:, None]",
        "xindex = rn[None, :]",
        f"mask = (yindex < {m}) & (xindex < {n})",
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
    name = kernel_name(body, number, prefix="kiln_mm")
    code = CodeBuilder()
    code.line(f"# GEMM template for B={batch} M={m} N={n} K={k}")
    code.lines(jit_header(name, list(writer.pointers.values()) + ["out_ptr0"], KernelKind.MATMUL))
    with code.indent():
        code.lines(_mainloop(g, a_ptr, b_ptr, int64))
        code.splice(epilogue)
    source = code.text()
    ops = tuple(e.op for e in walk(body) if isinstance(e, Op))
    return generated(name, source, buffers, tuple(sympy.Integer(v) for v in g.sizes),
                     KernelKind.MATMUL, ops, _bytes(g, writer, t, layouts),
                     baseline=json.dumps(baseline(t, buffers), sort_keys=True))


def _bytes(g: Gemm, writer: BodyWriter, t: MatmulTemplate, layouts) -> Traffic:
    """Operands read once, each epilogue value once per output element, the output once."""
    batch, m, n, k = g.sizes
    size = g.dtype.itemsize
    loads = [e for e in writer.names if isinstance(e, tuple) and isinstance(e[0], Load)]
    reads = sum(batch * m * n * e[0].dtype.itemsize if writer.names[e] in writer.block
                else e[0].dtype.itemsize for e in loads)
    return Traffic(batch * (m * k + k * n) * size + reads, batch * m * n * t.layout.dtype.itemsize)


# ----------------------------------------------------------------------------- the baseline
def _arg_json(value, buffers):
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
    out = {"op": op.kernel, "args": [_arg_json(a, buffers) for a in op.args],
           "kwargs": {k: _arg_json(v, buffers) for k, v in op.kwargs},
           "out": {"size": [int(s) for s in lay.size], "stride": [int(s) for s in lay.stride]},
           "epilogue": None}
    if t.epilogue is not None:
        spec = generate_kernel(t.epilogue, 0)
        out["epilogue"] = {"name": spec.name, "source": spec.source, "kind": str(spec.kind),
                           "numels": [int(v) for v in spec.numels],
                           "buffers": [-1 if b == op.outputs[0] else buffers.index(b)
                                       for b in spec.buffers]}
    return out
