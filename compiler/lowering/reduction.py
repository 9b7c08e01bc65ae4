"""Reduction lowerings: sum, mean, amax/amin, max/min.dim, argmax/argmin, any/all, var/var_mean.

Every reduction is realized into a ``ReductionBuffer`` (one kernel); its pointwise producers
are inlined into that kernel as its prologue, and consumers read the result like any buffer.
var/var_mean use two passes (mean, then the mean of squared deviations): numerically stable
without Welford's bookkeeping.

Example:
    >>> import torch
    >>> torch.ops.aten.sum.dim_IntList in REGISTRY.entries()
    True
"""
from __future__ import annotations

import sympy
import torch

from ..ir import Const, TensorValue, index_symbols, reduction_symbols
from ..kernels.spec import PERSISTENT_MAX_RNUMEL
from .registry import Registry
from .common import SUPPORTED_DTYPES, cast_expr, normalize_dim
from .pointwise import pointwise

aten = torch.ops.aten
REGISTRY = Registry("reduction")

# What a reduction of no elements gives, where eager defines one (max of nothing raises).
EMPTY_ROW = {"sum": 0, "prod": 1, "any": False, "all": True}
EMPTY_ROW_OPS = frozenset({aten.sum.dim_IntList, aten.sum.default, aten.mean.dim,
                           aten.mean.default, aten.any.dim, aten.any.dims, aten.any.default,
                           aten.all.dim, aten.all.dims, aten.all.default})


def _dims(x: TensorValue, dims) -> list[int]:
    """The dims reduced, sorted. A 0-d tensor has none: eager accepts dim 0 or -1 there and
    reduces its one element (keepdim keeps it 0-d)."""
    if x.ndim == 0 or dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        return list(range(x.ndim))    # ATen: no dims (or []) reduces every dim
    dims = [dims] if isinstance(dims, int) else list(dims)
    return sorted({normalize_dim(d, x.ndim) for d in dims})


def reduce(ctx, x: TensorValue, dims, keepdim: bool, rtype: str, acc_dtype,
           out_dtype) -> TensorValue:
    """Realize ``rtype`` of ``x`` over ``dims`` into a new buffer and load it."""
    dims = _dims(x, dims)
    kept = [d for d in range(x.ndim) if d not in dims]
    out_size = [sympy.Integer(1) if d in dims else x.size[d] for d in range(x.ndim)] if keepdim \
        else [x.size[d] for d in kept]
    isyms = index_symbols(len(out_size))
    rsyms = reduction_symbols(len(dims))
    index = []
    for d in range(x.ndim):
        if d in dims:
            index.append(rsyms[dims.index(d)])
        else:
            index.append(isyms[d] if keepdim else isyms[kept.index(d)])
    ranges = tuple(x.size[d] for d in dims)
    if any(r == 0 for r in ranges):   # empty rows: the identity (``_ok`` admits no others)
        empty = Const(EMPTY_ROW[rtype], out_dtype)
        return TensorValue(out_dtype, x.device, tuple(out_size), empty)
    body = cast_expr(x.load(index), acc_dtype)
    out_dims = [None if d in dims else d for d in range(x.ndim)] if keepdim else kept
    return ctx.realize_reduction(tuple(out_size), body, ranges, rtype, out_dtype, x.device,
                                 x.size, dims, out_dims)


def _hint(value) -> int:
    """A size's example value (a symbolic size's hint) for decisions that allow either way."""
    return int(value.node.hint) if isinstance(value, torch.SymInt) else int(value)


def _rnumel(node) -> int:
    """Elements reduced per output element, at the example sizes."""
    src = node.args[0].meta["val"]
    out = node.meta["val"]
    out = out[0] if isinstance(out, (tuple, list)) else out
    n_out = _hint(out.numel())
    return _hint(src.numel()) // max(n_out, 1) if n_out else 0


def _static_rows(node) -> bool:
    """argmax/max.dim need the whole row in one tile: a row size known at compile time."""
    src = node.args[0].meta["val"]
    return all(not isinstance(s, torch.SymInt) for s in src.shape)


def _ok(node) -> bool:
    """A supported dtype. An empty output is lowered (GraphLowering only allocates it); so
    are empty rows of the reductions with an identity (the sum of nothing is 0)."""
    src = node.args[0].meta.get("val") if isinstance(node.args[0], torch.fx.Node) else None
    if src is None or src.dtype not in SUPPORTED_DTYPES:
        return False
    if _out_numel(node) == 0 or (_hint(src.numel()) > 0 and _rnumel(node) > 0):
        return True
    return node.target in EMPTY_ROW_OPS


def _out_numel(node) -> int:
    out = node.meta["val"]
    return _hint((out[0] if isinstance(out, (tuple, list)) else out).numel())


def _ok_persistent(node) -> bool:
    return _ok(node) and _static_rows(node) and _rnumel(node) <= PERSISTENT_MAX_RNUMEL


def _acc(dtype: torch.dtype, rtype: str) -> torch.dtype:
    if rtype == "sum" and (dtype == torch.bool or not dtype.is_floating_point):
        return torch.int64             # eager sums integers and bools in int64
    return dtype


@REGISTRY.register(aten.sum.dim_IntList, aten.sum.default, supports=_ok)
def lower_sum(ctx, x, dims=None, keepdim=False, dtype=None):
    out = ctx.meta_val().dtype
    acc = dtype or _acc(x.dtype, "sum")
    return reduce(ctx, x, dims, keepdim, "sum", acc if not acc.is_floating_point else out, out)


@REGISTRY.register(aten.mean.dim, aten.mean.default, supports=_ok)
def lower_mean(ctx, x, dims=None, keepdim=False, dtype=None):
    out = ctx.meta_val().dtype
    n = _count(x, dims)
    total = reduce(ctx, x, dims, keepdim, "sum", out, out)
    return pointwise("truediv", total, n)


def _count(x, dims) -> sympy.Expr:
    n = sympy.Integer(1)
    for d in _dims(x, dims):
        n *= x.size[d]
    return n


@REGISTRY.register(aten.amax.default, aten.amin.default, supports=_ok)
def lower_amax(ctx, x, dims=(), keepdim=False):
    rtype = "max" if ctx.node.target == aten.amax.default else "min"
    return reduce(ctx, x, dims, keepdim, rtype, x.dtype, x.dtype)


@REGISTRY.register(aten.max.dim, aten.min.dim, supports=_ok_persistent)
def lower_max_dim(ctx, x, dim, keepdim=False):
    is_max = ctx.node.target == aten.max.dim
    values = reduce(ctx, x, [dim], keepdim, "max" if is_max else "min", x.dtype, x.dtype)
    indices = reduce(ctx, x, [dim], keepdim, "argmax" if is_max else "argmin", x.dtype,
                     torch.int64)
    return values, indices


@REGISTRY.register(aten.argmax.default, aten.argmin.default, supports=_ok_persistent)
def lower_argmax(ctx, x, dim=None, keepdim=False):
    rtype = "argmax" if ctx.node.target == aten.argmax.default else "argmin"
    if dim is None:    # over the flattened tensor: the flat index is what eager returns
        from .views import view_as
        x = view_as(x, (_count(x, None),))
        dim, keepdim = 0, False
    return reduce(ctx, x, [dim], keepdim, rtype, x.dtype, torch.int64)


@REGISTRY.register(aten.any.dim, aten.any.dims, aten.any.default, aten.all.dim,
                   aten.all.dims, aten.all.default, supports=_ok)
def lower_any_all(ctx, x, dims=None, keepdim=False):
    rtype = "any" if ctx.node.target in (aten.any.dim, aten.any.dims, aten.any.default) else "all"
    return reduce(ctx, x, dims, keepdim, rtype, torch.bool, torch.bool)


def _var_mean(ctx, x, dims, correction, keepdim):
    out = ctx.meta_val()
    out_dtype = (out[0] if isinstance(out, (tuple, list)) else out).dtype
    acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    n = _count(x, dims)
    mean_kept = pointwise("truediv", reduce(ctx, x, dims, True, "sum", acc, acc), n)
    centered = pointwise("sub", _to(x, acc), mean_kept)
    sq = pointwise("mul", centered, centered)
    ssd = reduce(ctx, sq, dims, keepdim, "sum", acc, acc)
    correction = 1 if correction is None else correction
    var = pointwise("truediv", ssd, sympy.Max(n - correction, 0))
    mean = mean_kept if keepdim else _squeeze(mean_kept, _dims(x, dims))
    from .common import to_dtype
    return to_dtype(var, out_dtype), to_dtype(mean, out_dtype)


def _to(x, dtype):
    from .common import to_dtype
    return to_dtype(x, dtype)


def _squeeze(x: TensorValue, dims) -> TensorValue:
    size = [s for d, s in enumerate(x.size) if d not in dims]

    def index(idx):
        it = iter(idx)
        return [sympy.Integer(0) if d in dims else next(it) for d in range(x.ndim)]

    return x.reindex(size, index)


def _float_ok(node) -> bool:
    return _ok(node) and node.args[0].meta["val"].dtype.is_floating_point


@REGISTRY.register(aten.var_mean.correction, supports=_float_ok)
def lower_var_mean(ctx, x, dims=None, correction=None, keepdim=False):
    return _var_mean(ctx, x, dims, correction, keepdim)


@REGISTRY.register(aten.var.correction, supports=_float_ok)
def lower_var(ctx, x, dims=None, correction=None, keepdim=False):
    return _var_mean(ctx, x, dims, correction, keepdim)[0]
