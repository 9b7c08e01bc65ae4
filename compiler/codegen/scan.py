"""Triton kernels for scans (cumsum, cumprod, logcumsumexp) along one dim of a ScanBuffer.

Rows are every dim but the scanned one (``xindex``, XBLOCK rows per program, merged where
the accesses allow); the scanned dim is ``rindex``. A persistent kernel holds a whole row in
one RBLOCK >= rnumel tile and scans it with ``tl.associative_scan``; a looped kernel walks the
row in RBLOCK chunks, scans each and combines it with the prefix carried from the chunks
before. The launch interface (xnumel, rnumel, XBLOCK, RBLOCK) is a row reduction's, so the
kernel kinds are ``reduction_persistent`` / ``reduction_looped``: the wrapper's launch
heuristics and the autotuner's spaces apply unchanged.

Example:
    >>> import torch, sympy
    >>> from compiler.ir import Layout, Load, ScanBuffer, index_symbols
    >>> i = index_symbols(2)
    >>> n = sympy.Integer
    >>> lay = Layout("cpu", torch.float32, (n(4), n(8)), (n(8), n(1)))
    >>> buf = ScanBuffer("buf0", lay, Load("arg0", 8 * i[0] + i[1], torch.float32), 1, "sum")
    >>> spec = generate_scan_kernel(buf, 0)
    >>> str(spec.kind), spec.numels
    ('reduction_persistent', (4, 8))
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import sympy

from ..ir import Expr, Load, Op, ScanBuffer, index_symbols, substitute, walk
from ..kernels.spec import PERSISTENT_MAX_RNUMEL, KernelKind
from ..sizevars import simplify, size_hint, upper_bound
from ..traffic import Traffic
from .builder import CodeBuilder
from .kernel import GeneratedKernel, generated, jit_header
from .ops import HALF_TYPES, TL_DTYPES, compute_type
from .triton import (INT32_MAX, RINDEX, XINDEX, BodyWriter, index_exprs, kernel_name,
                     merge_dims, simplify_body, store_index, unflatten)

_IDENTITY = {"sum": "0", "prod": "1", "logsumexp": 'float("-inf")'}


@dataclass(frozen=True)
class _ScanPlan:
    body: Expr
    store: sympy.Expr
    xdims: tuple
    rdim: tuple            # (symbol, size) of the scanned dim


def _plan(buf: ScanBuffer) -> _ScanPlan:
    size = buf.layout.size
    isyms = index_symbols(len(size))
    stride = dict(zip(isyms, buf.layout.stride))
    rsym = isyms[buf.dim]
    mapping = {s: sympy.Integer(0) for s, n in zip(isyms, size) if n == 1 and s != rsym}
    xdims = sorted([(s, n) for s, n in zip(isyms, size) if n != 1 and s != rsym],
                   key=lambda d: -size_hint(stride[d[0]]))     # output memory order
    body = substitute(buf.body, mapping)
    store = buf.layout.index(isyms).xreplace(mapping)
    xdims, xmap = merge_dims(xdims, index_exprs(body, store))
    ranges = dict(xdims + [(rsym, size[buf.dim])])
    body = simplify_body(substitute(body, xmap), ranges)
    store = simplify(store.xreplace(xmap), ranges)
    return _ScanPlan(body, store, tuple(xdims), (rsym, size[buf.dim]))


def _combine_lines(name: str) -> list[str]:
    """A module-level combine function for ``tl.associative_scan`` / ``tl.reduce``: log(e^a +
    e^b), exact where the arguments are equal or infinite, NaN-propagating like eager."""
    return [
        "@jit",
        f"def {name}(a, b):",
        "    first = (a > b) | (a != a)",
        "    mx = tl.where(first, a, b)",
        "    mn = tl.where(first, b, a)",
        "    far = tl.where(mn == float(\"-inf\"), mx, mx + tl.log(1.0 + tl.exp(mn - mx)))",
        "    return tl.where(mn == mx, mx + 0.6931471805599453, far)",
    ]


def _combine_fn(scan_type: str, helper: str) -> str:
    return {"sum": "tl.standard._sum_combine", "prod": "tl.standard._prod_combine",
            "logsumexp": helper}[scan_type]


def _combine_inline(scan_type: str, a: str, b: str, helper: str) -> str:
    # sum/prod inline (the interpreter cannot call tl.standard's @jit helpers directly)
    return {"sum": f"{a} + {b}", "prod": f"{a} * {b}",
            "logsumexp": f"{helper}({a}, {b})"}[scan_type]


def generate_scan_kernel(buf: ScanBuffer, number: int) -> GeneratedKernel:
    """The kernel computing ``buf``; ``number`` makes its name unique in the module."""
    plan = _plan(buf)
    xnumel = sympy.Mul(*[n for _, n in plan.xdims])
    rnumel = sympy.sympify(plan.rdim[1])
    persistent = rnumel.is_Integer and int(rnumel) <= PERSISTENT_MAX_RNUMEL
    index_map = {**unflatten(XINDEX, plan.xdims), plan.rdim[0]: RINDEX}
    ranges = {XINDEX: xnumel, RINDEX: rnumel}
    name = kernel_name(plan.body, number, prefix=f"kiln_scan_{buf.scan_type}")
    helper = f"{name}_combine"
    body = CodeBuilder()
    writer = BodyWriter(body, index_map, ranges, "mask", masked_other=True)
    _emit_body(body, writer, buf, plan, helper, persistent)
    size_args = tuple(sorted(str(s) for s in writer.size_symbols))
    code = CodeBuilder()
    if buf.scan_type == "logsumexp":
        code.lines(_combine_lines(helper))
        code.line()
    ptrs = list(writer.pointers.values()) + ["out_ptr0"]
    kind = KernelKind.REDUCTION_PERSISTENT if persistent else KernelKind.REDUCTION_LOOPED
    code.lines(jit_header(name, ptrs, kind, size_args))
    code.splice(body)
    source = code.text()
    ranges_all = {**dict(plan.xdims), plan.rdim[0]: rnumel}
    if any((upper_bound(sympy.sympify(e), ranges_all) or INT32_MAX + 1) > INT32_MAX
           for e in index_exprs(plan.body, plan.store)):
        source = source.replace("tl.program_id(0) * XBLOCK",
                                "tl.program_id(0).to(tl.int64) * XBLOCK")
    ops = tuple(n.op for n in walk(plan.body) if isinstance(n, Op)) + (f"scan_{buf.scan_type}",)
    return generated(name, source, tuple(writer.pointers) + (buf.name,), (xnumel, rnumel), kind,
                     ops, _bytes(buf, writer, xnumel, rnumel), 1, size_args)


def _emit_body(code: CodeBuilder, writer: BodyWriter, buf: ScanBuffer, plan: _ScanPlan,
               helper: str, persistent: bool) -> None:
    dtype = plan.body.dtype
    ident, ctype = _IDENTITY[buf.scan_type], compute_type(dtype)
    combine = _combine_fn(buf.scan_type, helper)
    out = buf.layout.dtype
    cast = f".to({TL_DTYPES[out]})" if out in HALF_TYPES else ""
    with code.indent():
        code.lines(["xoffset = tl.program_id(0) * XBLOCK",
                    "xindex = xoffset + tl.arange(0, XBLOCK)[:, None]",
                    "xmask = xindex < xnumel",
                    "rbase = tl.arange(0, RBLOCK)[None, :]"])
        if not persistent:
            code.line(f"carry = tl.full([XBLOCK, 1], {ident}, {ctype})")
            code.line("for roffset in range(0, rnumel, RBLOCK):")
        with code.indent() if not persistent else contextlib.nullcontext():
            code.lines(["rindex = rbase" if persistent else "rindex = roffset + rbase",
                        "rmask = rindex < rnumel", "mask = xmask & rmask"])
            value = writer.value(plan.body)
            code.line(f"acc = tl.where(mask, {value}, {ident}).to({ctype})")
            code.line(f"scan = tl.associative_scan(acc, 1, {combine})")
            if not persistent:   # add the prefix of the chunks before, then carry this one's
                code.line(f"scan = {_combine_inline(buf.scan_type, 'carry', 'scan', helper)}")
                total = f"tl.reduce(acc, 1, {combine}, keep_dims=True)"
                code.line(f"carry = {_combine_inline(buf.scan_type, 'carry', total, helper)}")
            index = writer.index(plan.store)
            code.line(f"tl.store(out_ptr0 + ({store_index(index, '[XBLOCK, RBLOCK]')}), "
                      f"scan{cast}, mask)")


def _bytes(buf: ScanBuffer, writer: BodyWriter, xnumel, rnumel) -> Traffic | None:
    if not (xnumel.is_Integer and rnumel.is_Integer):
        return None
    n = int(xnumel) * int(rnumel)
    loads = [key[0] for key in writer.names if isinstance(key, tuple) and isinstance(key[0], Load)]
    return Traffic(sum(n * l.dtype.itemsize for l in loads), n * buf.layout.dtype.itemsize)
