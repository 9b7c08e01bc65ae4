"""Triton kernels for reductions: persistent (a whole row in registers) or looped.

Rows are the output's elements (``xindex``, XBLOCK rows per program), the reduced elements
are ``rindex``. A persistent kernel loads each row once in one RBLOCK >= rnumel tile; a
looped kernel walks the row in RBLOCK chunks into an elementwise accumulator and reduces it
at the end. Max/min propagate NaN like eager (Triton's own max drops NaNs).

Example:
    >>> import torch, sympy
    >>> from compiler.ir import ReductionBuffer, Layout, Load, index_symbols, reduction_symbols
    >>> i, r = index_symbols(1), reduction_symbols(1)
    >>> lay = Layout("cpu", torch.float32, (sympy.Integer(4),), (sympy.Integer(1),))
    >>> buf = ReductionBuffer("buf0", lay, Load("arg0", 8 * i[0] + r[0], torch.float32),
    ...                       (sympy.Integer(8),), "sum")
    >>> generate_reduction_kernel(buf, 0).kind
    'reduction_persistent'
"""
from __future__ import annotations

import sympy

from ..artifact import content_hash
from ..ir import Load, Op, ReductionBuffer, index_symbols, reduction_symbols, substitute, walk
from ..sizevars import affine_coefficients, simplify, texpr, upper_bound
from .builder import CodeBuilder
from .ops import HALF_TYPES, TL_DTYPES, compute_type
from .triton import (INT32_MAX, XINDEX, BodyWriter, KernelSpec, index_exprs, kernel_name,
                     merge_dims, simplify_body, store_index, unflatten)

RINDEX = sympy.Symbol("rindex", integer=True, nonnegative=True)
# Rows up to this many elements are reduced in registers in one pass.
PERSISTENT_MAX_RNUMEL = 4096


def _identity(rtype: str, dtype) -> str:
    if rtype in ("sum", "any"):
        return "0"
    if rtype in ("prod", "all"):
        return "1"
    if dtype.is_floating_point:
        return 'float("-inf")' if rtype in ("max", "argmax") else 'float("inf")'
    info = __import__("torch").iinfo(dtype)
    return str(info.min if rtype in ("max", "argmax") else info.max)


def _ordered(dims, body):
    """Reduction dims ordered so the one read contiguously is innermost."""
    syms = [s for s, _ in dims]
    for load in (n for n in walk(body) if isinstance(n, Load)):
        coeffs = affine_coefficients(load.index, syms)
        if coeffs is not None:
            order = {s: c for s, c in zip(syms, coeffs[1])}
            return sorted(dims, key=lambda d: -int(order[d[0]]) if order[d[0]].is_Integer else 0)
    return list(dims)


def _plan(buf: ReductionBuffer):
    out = buf.layout
    isyms = index_symbols(len(out.size))
    rsyms = reduction_symbols(len(buf.reduction_ranges))
    zero = {s: sympy.Integer(0) for s, n in zip(isyms, out.size) if n == 1}
    zero.update({s: sympy.Integer(0) for s, n in zip(rsyms, buf.reduction_ranges) if n == 1})
    body = substitute(buf.body, zero)
    store = out.index(isyms).xreplace(zero)
    stride = dict(zip(isyms, out.stride))
    xdims = sorted([(s, n) for s, n in zip(isyms, out.size) if n != 1],
                   key=lambda d: -int(stride[d[0]]) if stride[d[0]].is_Integer else 0)
    rdims = _ordered([(s, n) for s, n in zip(rsyms, buf.reduction_ranges) if n != 1], body)
    exprs = index_exprs(body, store)
    xdims, xmap = merge_dims(xdims, exprs)
    body, store = substitute(body, xmap), store.xreplace(xmap)
    rdims, rmap = merge_dims(rdims, index_exprs(body, store))
    body = substitute(body, rmap)
    ranges = dict(xdims + rdims)
    return xdims, rdims, simplify_body(body, ranges), simplify(store, ranges)


def generate_reduction_kernel(buf: ReductionBuffer, number: int) -> KernelSpec:
    xdims, rdims, body, store = _plan(buf)
    xnumel = sympy.Mul(*[n for _, n in xdims])
    rnumel = sympy.Mul(*[n for _, n in rdims])
    index_map = {**unflatten(XINDEX, xdims), **unflatten(RINDEX, rdims)}
    ranges = {XINDEX: xnumel, RINDEX: rnumel}
    persistent = rnumel.is_Integer and int(rnumel) <= PERSISTENT_MAX_RNUMEL
    name = kernel_name(body, number, prefix=f"kiln_red_{buf.reduction_type}")
    code, pointers = _emit(name, buf, body, store, index_map, ranges, persistent)
    int64 = any((upper_bound(sympy.sympify(e), ranges) or INT32_MAX + 1) > INT32_MAX
                for e in index_exprs(body, store))
    source = code if not int64 else code.replace("tl.program_id(0) * XBLOCK",
                                                 "tl.program_id(0).to(tl.int64) * XBLOCK")
    key = content_hash(source.replace(name, "KERNEL"))
    ops = tuple(n.op for n in walk(body) if isinstance(n, Op)) + (buf.reduction_type,)
    kind = "reduction_persistent" if persistent else "reduction_looped"
    nbytes = _bytes(buf, body, xnumel, rnumel)
    return KernelSpec(name, source, key, tuple(pointers) + (buf.name,), (xnumel, rnumel), kind,
                      ops, nbytes)


def _emit(name, buf, body, store, index_map, ranges, persistent):
    rtype = buf.reduction_type
    acc_dtype = body.dtype
    ident = _identity(rtype, acc_dtype)
    code = CodeBuilder()
    inner = CodeBuilder()
    writer = BodyWriter(inner, index_map, ranges, "mask", masked_other=True)
    value = writer.value(body)
    masked = f"tl.where(mask, {value}, {ident})"
    code.line("@jit")
    ptrs = list(writer.pointers.values()) + ["out_ptr0"]
    code.line(f"def {name}({', '.join(ptrs)}, xnumel, rnumel, XBLOCK: tl.constexpr, "
              f"RBLOCK: tl.constexpr):")
    with code.indent():
        code.lines(["xoffset = tl.program_id(0) * XBLOCK",
                    "xindex = xoffset + tl.arange(0, XBLOCK)[:, None]",
                    "xmask = xindex < xnumel",
                    "rbase = tl.arange(0, RBLOCK)[None, :]"])
        is_float = acc_dtype.is_floating_point
        if persistent:
            code.lines(["rindex = rbase", "rmask = rindex < rnumel", "mask = xmask & rmask"])
            code.splice(inner)
            code.line(f"acc = {masked}")
            if is_float and rtype in ("max", "min"):
                code.line(f"accnan = tl.where(mask, {value} != {value}, 0)")
        else:
            acc_ty = "tl.int1" if rtype in ("any", "all") else compute_type(acc_dtype)
            code.line(f"acc = tl.full([XBLOCK, RBLOCK], {ident}, {acc_ty})")
            if is_float and rtype in ("max", "min"):
                code.line("accnan = tl.full([XBLOCK, RBLOCK], 0, tl.int1)")
            code.line("for roffset in range(0, rnumel, RBLOCK):")
            with code.indent():
                code.lines(["rindex = roffset + rbase", "rmask = rindex < rnumel",
                            "mask = xmask & rmask"])
                code.splice(inner)
                code.line(f"val = {masked}")
                code.line(f"acc = {_combine(rtype, 'acc', 'val')}")
                if is_float and rtype in ("max", "min"):
                    code.line(f"accnan = accnan | (val != val)")
        code.line(f"result = {_final(rtype)}")
        if is_float and rtype in ("max", "min"):
            code.line("hasnan = tl.reduce(accnan.to(tl.int8), 1, tl.standard._elementwise_max, keep_dims=True)")
            code.line('result = tl.where(hasnan > 0, float("nan"), result)')
        out_dtype = buf.layout.dtype
        cast = f".to({TL_DTYPES[out_dtype]})" if out_dtype in HALF_TYPES or rtype.startswith("arg") \
            or out_dtype != acc_dtype else ""
        code.line(f"tl.store(out_ptr0 + ({store_index(writer.index(store), '[XBLOCK, 1]')}), "
                  f"result{cast}, xmask)")
    return code.text(), list(writer.pointers.keys())


def _combine(rtype: str, a: str, b: str) -> str:
    return {"sum": f"{a} + {b}", "prod": f"{a} * {b}", "max": f"tl.maximum({a}, {b})",
            "min": f"tl.minimum({a}, {b})", "any": f"{a} | ({b} != 0)",
            "all": f"{a} & ({b} != 0)"}[rtype]


def _final(rtype: str) -> str:
    # tl.reduce with tl.standard's own combine functions: what tl.sum/tl.max expand to on
    # GPUs, and what Triton's interpreter recognizes for its NumPy fast path (tl.sum itself
    # is a @jit function the interpreter cannot call unless set up process-wide).
    combine = {"sum": "_sum_combine", "max": "_elementwise_max", "min": "_elementwise_min",
               "any": "_elementwise_max", "all": "_elementwise_min", "prod": "_prod_combine"}
    if rtype in ("argmax", "argmin"):
        fn = f"_{rtype}_combine_tie_break_left"
        return f"tl.reduce((acc, tl.broadcast_to(rindex, acc.shape)), 1, tl.standard.{fn}, keep_dims=True)[1]"
    arg = "(acc != 0).to(tl.int8)" if rtype in ("any", "all") else "acc"
    out = f"tl.reduce({arg}, 1, tl.standard.{combine[rtype]}, keep_dims=True)"
    return f"{out} > 0" if rtype in ("any", "all") else out


def _bytes(buf, body, xnumel, rnumel) -> int | None:
    if not (xnumel.is_Integer and rnumel.is_Integer):
        return None
    reads = sum(int(xnumel) * int(rnumel) * l.dtype.itemsize for l in walk(body) if isinstance(l, Load))
    return reads + int(xnumel) * buf.layout.dtype.itemsize
