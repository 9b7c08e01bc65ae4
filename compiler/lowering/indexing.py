"""Indexing lowerings: cat, pad, scatters into slices, and gathers with data-dependent indices.

cat, constant_pad_nd, slice_scatter and select_scatter are pointwise over the output with
``masked`` regions: each source is read only where the output index falls inside it, so no
load ever leaves its buffer. Gathers (embedding, gather, index, index_select) are loads whose
offset uses values loaded in the same kernel (``Load.indirect``).

Example:
    >>> import torch
    >>> torch.ops.aten.cat.default in REGISTRY.entries()
    True
"""
from __future__ import annotations

import sympy
import torch

from ..ir import Const, Expr, IndexExpr, Load, Op, TensorValue, bind_indirect, index_symbols
from ..sizevars import FloorDiv
from .registry import Registry
from .common import SUPPORTED_DTYPES, broadcast_shapes, cast_expr, expand_to, normalize_dim
from .pointwise import make_op

aten = torch.ops.aten
REGISTRY = Registry("indexing")
INT_INDEX = (torch.int64, torch.int32)


def masked(cond: Expr, body: Expr, other) -> Expr:
    """``body`` where ``cond`` holds (its loads touch memory only there), else ``other``."""
    return Op("masked", (cond, body), body.dtype, (other,))


def _idx(expr) -> Expr:
    return IndexExpr(sympy.sympify(expr))


def _cmp(op: str, a: Expr, b) -> Expr:
    if not isinstance(b, Expr):
        b = sympy.sympify(b)
        b = Const(int(b), torch.int64) if b.is_Integer else IndexExpr(b)
    return make_op(op, (a, b), torch.bool)


def _and(*conds: Expr) -> Expr:
    out = conds[0]
    for c in conds[1:]:
        out = make_op("logical_and", (out, c), torch.bool)
    return out


def _in_range(index, lo, hi) -> Expr:
    return _and(_cmp("ge", _idx(index), lo), _cmp("lt", _idx(index), hi))


def _out(ctx):
    val = ctx.meta_val()
    return val.dtype, val.device.type, ctx.meta_size()


def _dtype_ok(node) -> bool:
    val = node.meta.get("val")
    return isinstance(val, torch.Tensor) and val.dtype in SUPPORTED_DTYPES


# ----------------------------------------------------------------------------- pointwise-shaped
@REGISTRY.register(aten.cat.default, supports=_dtype_ok)
def lower_cat(ctx, tensors, dim=0):
    dtype, device, size = _out(ctx)
    tensors = [t for t in tensors if not (t.ndim == 1 and t.size[0] == 0)]  # legacy empties
    if not tensors:    # only empties: the result has no elements either
        return TensorValue(dtype, device, size, Const(0, dtype))
    dim = normalize_dim(dim, len(size))
    i = index_symbols(len(size))
    pieces, start = [], 0
    for t in tensors:
        stop = start + t.size[dim]
        idx = list(i)
        idx[dim] = i[dim] - start
        pieces.append((_in_range(i[dim], start, stop), cast_expr(t.load(idx), dtype)))
        start = stop
    cond, value = pieces[-1]
    body = masked(cond, value, 0)
    for cond, value in reversed(pieces[:-1]):
        body = Op("where", (cond, masked(cond, value, 0), body), dtype)
    return TensorValue(dtype, device, size, body)


@REGISTRY.register(aten.constant_pad_nd.default, supports=_dtype_ok)
def lower_constant_pad_nd(ctx, x, pad, value=0):
    dtype, device, size = _out(ctx)
    i = index_symbols(len(size))
    idx, conds = list(i), []
    for k in range(len(pad) // 2):
        d = len(size) - 1 - k
        left = pad[2 * k]
        idx[d] = i[d] - left
        conds.append(_in_range(i[d] - left, 0, x.size[d]))
    body = masked(_and(*conds), x.load(idx), value) if conds else x.load(idx)
    return TensorValue(dtype, device, size, body)


@REGISTRY.register(aten.slice_scatter.default, supports=_dtype_ok)
def lower_slice_scatter(ctx, base, src, dim=0, start=None, end=None, step=1):
    dtype, device, size = _out(ctx)
    dim = normalize_dim(dim, len(size))
    n = size[dim]
    start = _bound(start, n, 0)
    end = _bound(end, n, n)
    i = index_symbols(len(size))
    rel = i[dim] - start
    cond = _in_range(i[dim], start, end)
    if step != 1:
        cond = _and(cond, _cmp("eq", make_op("remainder", (_idx(rel), Const(step, torch.int64)),
                                                torch.int64), 0))
    src_idx = list(i)
    # only read where rel is a non-negative multiple of step, so FloorDiv is exact there
    src_idx[dim] = rel if step == 1 else FloorDiv(rel, step)
    value, rest = cast_expr(src.load(src_idx), dtype), cast_expr(base.body, dtype)
    if value == rest:    # src is base's own slice (written in place before): base unchanged
        return TensorValue(dtype, device, size, rest)
    body = Op("where", (cond, masked(cond, value, 0), rest), dtype)
    return TensorValue(dtype, device, size, body)


def _bound(value, n, default):
    """A slice bound made non-negative and clamped to ``[0, n]``; symbolic bounds are taken
    as valid (export's guards already hold them in range)."""
    if value is None:
        return sympy.sympify(default)
    value = sympy.sympify(value)
    if value.is_number and value < 0:
        value = value + n
    if value.is_number and sympy.sympify(n).is_Integer:
        return sympy.Integer(min(max(int(value), 0), int(n)))
    return value


@REGISTRY.register(aten.select_scatter.default, supports=_dtype_ok)
def lower_select_scatter(ctx, base, src, dim, index):
    dtype, device, size = _out(ctx)
    dim = normalize_dim(dim, len(size))
    index = _bound(index, size[dim], 0)
    i = index_symbols(len(size))
    cond = _cmp("eq", _idx(i[dim]), index)
    inside = masked(cond, cast_expr(src.load(list(i[:dim]) + list(i[dim + 1:])), dtype), 0)
    return TensorValue(dtype, device, size, Op("where", (cond, inside, base.body), dtype))


# ----------------------------------------------------------------------------- gathers
def wrap_index(value: Expr, dim_size) -> Expr:
    """A possibly negative index made non-negative, as eager's indexing does."""
    value = cast_expr(value, torch.int64)
    neg = _cmp("lt", value, 0)
    size = sympy.sympify(dim_size)
    size = Const(int(size), torch.int64) if size.is_Integer else IndexExpr(size)
    return Op("where", (neg, make_op("add", (value, size), torch.int64), value), torch.int64)


def _indices_ok(*positions):
    def check(node) -> bool:
        if not _dtype_ok(node):
            return False
        for p in positions:
            arg = node.args[p]
            args = arg if isinstance(arg, (list, tuple)) else [arg]
            for a in args:
                if a is not None and a.meta["val"].dtype not in INT_INDEX:
                    return False
        return True
    return check


def _gather_load(ctx, x: TensorValue, index_for_dim: dict, plain: dict, size) -> Expr:
    """Load of ``x`` where dims in ``index_for_dim`` take data-dependent values."""
    if isinstance(x.body, Load) and x.body.indirect:
        composed = _gather_of_gather(x, index_for_dim, plain)
        if composed is not None:
            return composed
    ref = ctx.buffer_ref(x)   # a gather of a gather that cannot compose is realized here
    offset = ref.offset
    binds = []
    for d in range(x.ndim):
        if d in index_for_dim:
            sym = sympy.Dummy(f"ind{d}", integer=True)
            binds.append((sym, index_for_dim[d]))
            offset = offset + ref.stride[d] * sym
        else:
            offset = offset + ref.stride[d] * plain[d]
    return Load(ref.name, offset, x.dtype, tuple(binds))


def _gather_of_gather(x: TensorValue, index_for_dim: dict, plain: dict) -> Expr | None:
    """A gather from a value that is itself a gather (a roll of a roll: two index_selects)
    as one load binding both loaded indices, or None where that cannot be expressed. The
    inner load's offset is no strided view of its buffer: it names the inner gather's index
    symbols, which only that load's binding defines."""
    syms = {d: sympy.Dummy(f"ind{d}", integer=True) for d in index_for_dim}
    body = x.load([syms[d] if d in syms else plain[d] for d in range(x.ndim)])
    return bind_indirect(body, tuple((syms[d], index_for_dim[d]) for d in sorted(syms)))


@REGISTRY.register(aten.embedding.default, supports=_indices_ok(1))
def lower_embedding(ctx, weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    dtype, device, size = _out(ctx)
    i = index_symbols(len(size))
    row = cast_expr(indices.load(i[:-1]), torch.int64)
    body = _gather_load(ctx, weight, {0: row}, {1: i[-1]}, size)
    return TensorValue(dtype, device, size, body)


@REGISTRY.register(aten.gather.default, supports=_indices_ok(2))
def lower_gather(ctx, x, dim, index, sparse_grad=False):
    dtype, device, size = _out(ctx)
    if x.ndim == 0:    # its one element, which every valid index picks
        return TensorValue(dtype, device, size, x.body)
    dim = normalize_dim(dim, x.ndim)
    i = index_symbols(len(size))
    value = wrap_index(index.load(i), x.size[dim])
    body = _gather_load(ctx, x, {dim: value}, {d: i[d] for d in range(x.ndim) if d != dim}, size)
    return TensorValue(dtype, device, size, body)


@REGISTRY.register(aten.index_select.default, supports=_indices_ok(2))
def lower_index_select(ctx, x, dim, index):
    dtype, device, size = _out(ctx)
    if x.ndim == 0:    # eager: a 0-d tensor has one element, which every valid index picks
        return TensorValue(dtype, device, size, x.body)
    dim = normalize_dim(dim, x.ndim)
    i = index_symbols(len(size))
    value = wrap_index(index.load([i[dim]]), x.size[dim])
    body = _gather_load(ctx, x, {dim: value}, {d: i[d] for d in range(x.ndim) if d != dim}, size)
    return TensorValue(dtype, device, size, body)


def advanced_index(x: TensorValue, indices):
    """``x[indices]`` with integer index tensors (broadcast together, eager's placement of
    the indexed dims): its size, and per dim of ``x`` for its element ``i`` either a plain
    index (``plain``) or a loaded, wrapped index value (``by_dim``).

    Returns ``(size, i, plain, by_dim)`` where ``i`` are the result's index symbols.
    """
    adv = [d for d, t in enumerate(indices) if t is not None]
    bshape = broadcast_shapes([indices[d].size for d in adv])
    adjacent = adv == list(range(adv[0], adv[-1] + 1))
    first = adv[0] if adjacent else 0
    rest_sizes = [x.size[d] for d in range(x.ndim) if d not in adv]
    size = tuple(rest_sizes[:first]) + tuple(bshape) + tuple(rest_sizes[first:])
    i = index_symbols(len(size))
    bidx = list(i[first:first + len(bshape)])
    rest = iter(list(i[:first]) + list(i[first + len(bshape):]))
    plain, by_dim = {}, {}
    for d in range(x.ndim):
        if d in adv:
            value = expand_to(indices[d], bshape).load(bidx)
            by_dim[d] = wrap_index(value, x.size[d])
        else:
            plain[d] = next(rest)
    return size, i, plain, by_dim


@REGISTRY.register(aten.index.Tensor, supports=_indices_ok(1))
def lower_index(ctx, x, indices):
    """Advanced indexing with integer index tensors (broadcast together), eager's placement."""
    dtype, device, size = _out(ctx)
    _, _, plain, by_dim = advanced_index(x, indices)
    return TensorValue(dtype, device, size, _gather_load(ctx, x, by_dim, plain, size))
