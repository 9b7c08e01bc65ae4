"""Triton kernels for ScatterBuffers: one program lane per source element, indirect stores.

The kernel runs over the scatter's source elements (the index tensors' broadcast shape, or
the new rows of an in-place slice write), flattened to ``xindex`` with dims merged where the
accesses allow. Each lane computes its value and its destination address from indices it
loads, and stores it (``tl.store``) or adds it (``tl.atomic_add``, relaxed: nothing is read
back). The mask drops lanes past the end, lanes the ScatterBuffer's ``store_mask`` excludes,
and any destination outside the buffer, so a bad index can never write out of bounds. The
launch interface is a 1-D pointwise kernel's (kind ``pointwise1d``).

Example:
    >>> import torch, sympy
    >>> from compiler.ir import Layout, Load, ScatterBuffer, index_symbols
    >>> i, n = index_symbols(1), sympy.Integer
    >>> dest = Layout("cpu", torch.float32, (n(8),), (n(1),))
    >>> ind = sympy.Dummy("ind0", integer=True)
    >>> buf = ScatterBuffer("buf0", dest, Load("arg1", i[0], torch.float32), None, (n(3),),
    ...                     (ind,), ((ind, Load("arg2", i[0], torch.int64)),), True)
    >>> "tl.atomic_add(out_ptr0" in generate_scatter_kernel(buf, 0).source
    True
"""
from __future__ import annotations

import sympy

from ..ir import Const, Load, Op, ScatterBuffer, index_symbols, substitute, walk
from ..kernels.spec import KernelKind
from ..sizevars import simplify, texpr, upper_bound
from ..traffic import Traffic
from .builder import CodeBuilder
from .kernel import GeneratedKernel, generated, jit_header
from .ops import HALF_TYPES, TL_DTYPES, compute_type
from .triton import (INT32_MAX, XINDEX, BodyWriter, index_exprs, kernel_name,
                     merge_dims, simplify_body, store_index, unflatten)


def _plan(buf: ScatterBuffer):
    """(dims, body, store mask, position, indirect) over merged source dims."""
    isyms = index_symbols(len(buf.size))
    zero = {s: sympy.Integer(0) for s, n in zip(isyms, buf.size) if n == 1}
    dims = [(s, n) for s, n in zip(isyms, buf.size) if n != 1]
    position = tuple(sympy.sympify(p).xreplace(zero) for p in buf.position)
    indirect = tuple((sym, substitute(v, zero)) for sym, v in buf.indirect)
    body = substitute(buf.body, zero)
    mask = substitute(buf.store_mask, zero) if buf.store_mask is not None else None
    exprs = index_exprs(body, buf.layout.index(position)) + [
        e for _, v in indirect for e in index_exprs(v, sympy.Integer(0))]
    dims, mapping = merge_dims(dims, exprs)
    ranges = dict(dims)
    body = simplify_body(substitute(body, mapping), ranges)
    mask = simplify_body(substitute(mask, mapping), ranges) if mask is not None else None
    position = tuple(simplify(p.xreplace(mapping), ranges) for p in position)
    indirect = tuple((sym, simplify_body(substitute(v, mapping), ranges)) for sym, v in indirect)
    return dims, body, mask, position, indirect


def generate_scatter_kernel(buf: ScatterBuffer, number: int) -> GeneratedKernel:
    """The kernel writing ``buf``'s values into its destination; ``number`` names it."""
    dims, body, mask, position, indirect = _plan(buf)
    numel = sympy.Mul(*[n for _, n in dims])
    index_map = unflatten(XINDEX, dims) if dims else {}
    prefix = "kiln_scatter_add" if buf.accumulate else "kiln_scatter"
    name = kernel_name(body, number, prefix=prefix)
    code = CodeBuilder()
    with code.indent():
        big = (upper_bound(numel, {}) or INT32_MAX + 1) > INT32_MAX
        pid = "tl.program_id(0).to(tl.int64)" if big else "tl.program_id(0)"
        code.lines([f"xoffset = {pid} * XBLOCK", "xindex = xoffset + tl.arange(0, XBLOCK)",
                    "xmask = xindex < xnumel"])
        writer = BodyWriter(code, index_map, {XINDEX: numel}, "xmask")
        offset, store_mask = _address(writer, buf, position, indirect, mask)
        value = _value_text(writer, body, buf)
        ptr = f"out_ptr0 + ({store_index(offset, '[XBLOCK]')})"
        if buf.accumulate:
            code.line(f"tl.atomic_add({ptr}, {value}, {store_mask}, sem=\"relaxed\")")
        else:
            code.line(f"tl.store({ptr}, {value}, {store_mask})")
    size_args = tuple(sorted(str(s) for s in writer.size_symbols))
    ptrs = list(writer.pointers.values()) + ["out_ptr0"]
    source = CodeBuilder()
    source.lines(jit_header(name, ptrs, KernelKind.POINTWISE_1D, size_args))
    source.splice(code)
    ops = tuple(n.op for n in walk(body) if isinstance(n, Op)) + (prefix[5:],)
    return generated(name, source.text(), tuple(writer.pointers) + (buf.name,), (numel,),
                     KernelKind.POINTWISE_1D, ops, _bytes(buf, writer, numel), 1, size_args)


def _address(writer: BodyWriter, buf: ScatterBuffer, position, indirect, mask):
    """(flat destination offset, store mask text): loaded indices bound to their names, and
    each data-dependent dim checked against the destination's size."""
    bound = {sym: sympy.Symbol(_lanes(writer, v), integer=True) for sym, v in indirect}
    conds = ["xmask"]
    if mask is not None:
        conds.append(f"({writer.value(mask)})")
    for p, size in zip(position, buf.layout.size):
        if p.free_symbols & set(bound):
            p = texpr(writer.index(p).xreplace(bound))
            conds.append(f"({p} >= 0) & ({p} < {texpr(writer.index(size))})")
    offset = writer.index(buf.layout.index(position)).xreplace(bound)
    return offset, " & ".join(conds)


def _lanes(writer: BodyWriter, index) -> str:
    """A loaded index as a block even where one index serves every lane (a single-element
    index tensor): a scalar address cannot take a block of values in ``tl.store``, and a
    scalar bounds check cannot be ``&``-ed with the lane mask under the interpreter."""
    name = writer.value(index)
    if name in writer.block:
        return name
    return writer._assign(("lanes", index), f"tl.broadcast_to({name}, [XBLOCK])", True)


def _value_text(writer: BodyWriter, body, buf: ScatterBuffer) -> str:
    value = writer.value(body)
    if value not in writer.block:
        if isinstance(body, Const):
            value = f"tl.full([XBLOCK], {value}, {compute_type(body.dtype)})"
        else:
            value = f"tl.broadcast_to({value}, [XBLOCK])"
    out = buf.layout.dtype   # half types are held in float32 in registers
    return f"{value}.to({TL_DTYPES[out]})" if out in HALF_TYPES else value


def _bytes(buf: ScatterBuffer, writer: BodyWriter, numel) -> Traffic | None:
    if not numel.is_Integer:
        return None
    loads = [key[0] for key in writer.names if isinstance(key, tuple) and isinstance(key[0], Load)]
    # an accumulating store reads the destination element too (atomic read-modify-write)
    itemsize = buf.layout.dtype.itemsize
    read = sum(int(numel) * l.dtype.itemsize for l in loads)
    return Traffic(read + (int(numel) * itemsize if buf.accumulate else 0), int(numel) * itemsize)
