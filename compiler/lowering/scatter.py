"""Scatter lowerings: index_put (index_copy and index_add decompose to it), scatter,
scatter_add and scatter_reduce(sum), each as two kernels.

The first kernel materializes the destination: a copy of ``self`` (pointwise producers of
``self`` fuse into it). The second iterates over the *source* elements (the index tensors'
broadcast shape) and stores (``tl.store``) or adds (``tl.atomic_add``) each into the
destination at an address computed from loaded indices (a ``ScatterBuffer``). Negative
indices wrap as eager's do; an index outside the destination is never written (eager would
raise). Consumers read the destination like any buffer. When the graph writes the result
back into an input whose old value nothing else reads (a KV cache's ``index_copy_``), the
destination is that input itself and there is no copy (compiler/lowering/inplace.py).

Accumulation: float32/float64/int32/int64 add atomically in place. float16 and bfloat16
accumulate into a float32 copy that is rounded once at the end, like eager's CUDA index_put
with accumulate (sm_90 does have f16/bf16 atomic adds, but each add would round to the half
type, and Triton's interpreter has no bfloat16 atomics); int8/int16/uint8 accumulate into an
int32 copy (wrapping sums agree modulo 2^bits). Float atomics make the summation order, so
the last bits, vary from run to run, like eager's CUDA scatter_add. A store with duplicate
indices leaves one of the values, as eager leaves it unspecified.

Example:
    >>> import torch
    >>> torch.ops.aten.index_put.default in REGISTRY.entries()
    True
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import sympy
import torch

from ..ir import ComputedBuffer, Const, Expr, Layout, ScatterBuffer, TensorValue, index_symbols
from .registry import Registry
from .common import SUPPORTED_DTYPES, cast_expr, expand_to, normalize_dim, to_dtype
from .indexing import advanced_index, wrap_index
from .inplace import InPlace, inplace_target

aten = torch.ops.aten
REGISTRY = Registry("scatter")

# Destination dtype an accumulating scatter adds in (the result is cast back).
ACCUMULATE_DTYPES = {torch.float16: torch.float32, torch.bfloat16: torch.float32,
                     torch.int8: torch.int32, torch.int16: torch.int32, torch.uint8: torch.int32,
                     torch.float32: torch.float32, torch.float64: torch.float64,
                     torch.int32: torch.int32, torch.int64: torch.int64}
INDEX_DTYPES = (torch.int64, torch.int32)


def _val(arg):
    return arg.meta.get("val") if isinstance(arg, torch.fx.Node) else None


def _hint(n) -> int:
    return int(n.node.hint) if isinstance(n, torch.SymInt) else int(n)


def _tensors_ok(node, index_args, accumulate: bool) -> bool:
    """Supported output dtype (one atomics can add when accumulating), non-empty integer
    index tensors (bool masks select a data-dependent number of elements: fallback)."""
    out = node.meta.get("val")
    if not isinstance(out, torch.Tensor) or out.dtype not in SUPPORTED_DTYPES:
        return False
    if accumulate and out.dtype not in ACCUMULATE_DTYPES:
        return False
    vals = [_val(a) for a in index_args]
    return bool(vals) and all(isinstance(v, torch.Tensor) and v.dtype in INDEX_DTYPES
                              and _hint(v.numel()) > 0 for v in vals)


def _index_put_ok(node) -> bool:
    accumulate = bool(node.args[3]) if len(node.args) > 3 else bool(
        node.kwargs.get("accumulate", False))
    return _tensors_ok(node, [a for a in node.args[1] if a is not None], accumulate)


def _scatter_ok(node) -> bool:
    accumulate = node.target in (aten.scatter_add.default, aten.scatter_reduce.two)
    if node.target == aten.scatter_reduce.two and node.args[4] != "sum":
        return False         # prod/mean/amax/amin: no atomic for them here (fallback)
    return _tensors_ok(node, [node.args[2]], accumulate)


# ----------------------------------------------------------------------------- building blocks
@dataclass(frozen=True)
class Destination:
    """Where a scatter writes (``name`` with ``layout``) and what the op returns after it:
    a fresh copy of ``self`` (cast back from a wider accumulator), or, in place, ``self``."""
    name: str
    layout: Layout
    value: TensorValue
    inplace: InPlace | None = None

    def place(self, position) -> tuple:
        return self.inplace.place(position) if self.inplace is not None else tuple(position)


def destination(ctx, x: TensorValue, accumulate: bool) -> Destination:
    """The caller's tensor when the graph mutates it and nothing else reads its old value
    (compiler/lowering/inplace.py), else a fresh buffer holding ``x`` (eager's strides) in
    the dtype the scatter writes."""
    layout = ctx.eager_layout()
    dtype = ACCUMULATE_DTYPES[layout.dtype] if accumulate else layout.dtype
    inplace = inplace_target(ctx, ctx.node) if dtype == layout.dtype else None
    if inplace is not None:
        return Destination(inplace.target.name, inplace.target.layout, x, inplace)
    layout = dataclasses.replace(layout, dtype=dtype)
    copy = ctx.append_buffer(ComputedBuffer(ctx.new_name("buf"), layout, cast_expr(x.body, dtype)))
    return Destination(copy.body.buffer, layout, to_dtype(copy, x.dtype, rounds=True))


def scatter_into(ctx, dest: Destination, size, value: Expr, plain: dict, by_dim: dict,
                 accumulate: bool) -> None:
    """Append the kernel writing ``value`` (over ``size``'s index symbols) into ``dest``:
    dim ``d`` of ``self``'s element is ``plain[d]`` or the loaded index ``by_dim[d]``."""
    binds, position = [], []
    for d in range(len(plain) + len(by_dim)):
        if d in by_dim:
            sym = sympy.Dummy(f"ind{d}", integer=True)
            binds.append((sym, by_dim[d]))
            position.append(sym)
        else:
            position.append(sympy.sympify(plain[d]))
    layout = dest.layout
    ctx.operations.append(ScatterBuffer(dest.name, layout, cast_expr(value, layout.dtype), None,
                                        tuple(size), dest.place(position), tuple(binds),
                                        accumulate))


# ----------------------------------------------------------------------------- lowerings
@REGISTRY.register(aten.index_put.default, supports=_index_put_ok)
def lower_index_put(ctx, x, indices, values, accumulate=False):
    size, i, plain, by_dim = advanced_index(x, indices)
    value = expand_to(values, size).load(i)
    dest = destination(ctx, x, accumulate)
    scatter_into(ctx, dest, size, value, plain, by_dim, accumulate)
    return dest.value


def _scatter(ctx, x, dim, index, src, accumulate: bool, include_self: bool = True):
    dim = normalize_dim(dim, x.ndim)
    i = index_symbols(index.ndim)
    plain = {d: i[d] for d in range(x.ndim) if d != dim}
    # a 0-d self has one element, the only place a valid index (0 or -1) can point
    by_dim = {dim: wrap_index(index.load(i), x.size[dim])} if x.ndim else {}
    value = src.load(i) if isinstance(src, TensorValue) else Const(src, ctx.meta_val().dtype)
    dest = destination(ctx, x, accumulate)
    if not include_self:     # the scattered-to elements start from 0, not from self
        scatter_into(ctx, dest, index.size, Const(0, dest.layout.dtype), plain, by_dim, False)
    scatter_into(ctx, dest, index.size, value, plain, by_dim, accumulate)
    return dest.value


@REGISTRY.register(aten.scatter.value, aten.scatter.src, supports=_scatter_ok)
def lower_scatter(ctx, x, dim, index, src):
    return _scatter(ctx, x, dim, index, src, accumulate=False)


@REGISTRY.register(aten.scatter_add.default, supports=_scatter_ok)
def lower_scatter_add(ctx, x, dim, index, src):
    return _scatter(ctx, x, dim, index, src, accumulate=True)


@REGISTRY.register(aten.scatter_reduce.two, supports=_scatter_ok)
def lower_scatter_reduce(ctx, x, dim, index, src, reduce, include_self=True):
    return _scatter(ctx, x, dim, index, src, accumulate=True, include_self=include_self)
