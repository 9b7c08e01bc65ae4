"""View lowerings: every view is an index transform of its input, never a copy.

Sizes come from the node's FakeTensor (``ctx.meta_size()``), so ``-1`` in a reshape and
negative dims need no handling here. Index expressions are simplified with the new dims'
ranges so that, e.g., flattening a contiguous buffer reads it with a plain affine index.

Example:
    >>> import torch
    >>> torch.ops.aten.permute.default in REGISTRY.entries()
    True
"""
from __future__ import annotations

import sympy
import torch

from ..ir import Load, TensorValue, index_symbols, map_indices
from ..sizevars import FloorDiv, ModularIndexing, simplify
from .registry import Registry
from .common import as_sym, normalize_dim, settle_clamps, shape_env_of, sym_size

aten = torch.ops.aten
REGISTRY = Registry("views")


def simplify_value(x: TensorValue) -> TensorValue:
    """Simplify every index in ``x.body`` given the ranges of ``x``'s own index symbols."""
    ranges = dict(zip(index_symbols(x.ndim), x.size))
    return TensorValue(x.dtype, x.device, x.size, map_indices(x.body, lambda i: simplify(i, ranges)))


def view_as(x: TensorValue, new_size) -> TensorValue:
    """Reshape by flattening the new index row-major and unflattening it in the old shape.

    With symbolic sizes that flattening does not simplify back: ``(1, s, 32)`` viewed as
    ``(s, 32)`` read ``FloorDiv(32*i0 + i1, 32*s)`` and a ``ModularIndexing`` that no range
    rule removes, so the view was no strided view and was copied before every matmul that
    read it (six copies per layer of a dynamic-shape Llama). There the dims are first
    matched in groups of equal product (``_dim_groups``) and each group is flattened on its
    own: a dim kept whole, or a size-1 dim dropped, keeps its index as it is."""
    new_size = tuple(as_sym(s) for s in new_size)
    if new_size == tuple(x.size):
        return x
    old_size = tuple(x.size)
    symbolic = any(sympy.sympify(s).free_symbols for s in old_size + new_size)
    groups = _dim_groups(old_size, new_size) if symbolic else None
    if groups is None:
        groups = [(list(range(len(old_size))), list(range(len(new_size))))]

    def index(new_idx):
        out = [sympy.Integer(0)] * len(old_size)
        for olds, news in groups:
            part = [new_size[k] for k in news]
            flat = sum((new_idx[k] * s for k, s in zip(news, _contig(part))), sympy.Integer(0))
            sizes = [old_size[k] for k in olds]
            for n, (k, size, stride) in enumerate(zip(olds, sizes, _contig(sizes))):
                out[k] = flat if len(olds) == 1 else \
                    FloorDiv(flat, stride) if n == 0 else ModularIndexing(flat, stride, size)
        return out

    return simplify_value(x.reindex(new_size, index))


def _dim_groups(old, new) -> list[tuple[list[int], list[int]]] | None:
    """Old and new dims (size-1 dims left out: their index is 0) in consecutive groups of
    equal product, each as small as it can be; None where the sizes do not split so."""
    olds = [k for k, s in enumerate(old) if s != 1]
    news = [k for k, s in enumerate(new) if s != 1]
    groups, i, j = [], 0, 0
    while i < len(olds) and j < len(news):
        go, gn = [olds[i]], [news[j]]
        po, pn = old[olds[i]], new[news[j]]
        i, j = i + 1, j + 1
        while not _equal(po, pn):
            if _divides(po, pn) and i < len(olds):
                go.append(olds[i])
                po, i = po * old[olds[i]], i + 1
            elif _divides(pn, po) and j < len(news):
                gn.append(news[j])
                pn, j = pn * new[news[j]], j + 1
            else:
                return None
        groups.append((go, gn))
    return groups if i == len(olds) and j == len(news) else None


def _equal(a, b) -> bool:
    return sympy.expand(a - b) == 0


def _divides(a, b) -> bool:
    """``a`` divides ``b`` with a quotient other than 1 (a polynomial, no denominator)."""
    quotient = sympy.cancel(sympy.sympify(b) / a)
    return quotient != 1 and sympy.fraction(quotient)[1] == 1


def _contig(size):
    strides, acc = [], sympy.Integer(1)
    for s in reversed(size):
        strides.append(acc)
        acc = acc * s
    return list(reversed(strides))


@REGISTRY.register(aten.view.default, aten.reshape.default, aten._unsafe_view.default)
def lower_view(ctx, x, size):
    return view_as(x, ctx.meta_size())


@REGISTRY.register(aten.permute.default)
def lower_permute(ctx, x, dims):
    dims = [normalize_dim(d, x.ndim) for d in dims]
    size = [x.size[d] for d in dims]

    def index(new_idx):
        old = [None] * x.ndim
        for k, d in enumerate(dims):
            old[d] = new_idx[k]
        return old

    return x.reindex(size, index)


@REGISTRY.register(aten.transpose.int)
def lower_transpose(ctx, x, dim0, dim1):
    dims = list(range(x.ndim))
    a, b = normalize_dim(dim0, x.ndim), normalize_dim(dim1, x.ndim)
    dims[a], dims[b] = dims[b], dims[a]
    return lower_permute(ctx, x, dims)


@REGISTRY.register(aten.t.default)
def lower_t(ctx, x):
    return x if x.ndim < 2 else lower_permute(ctx, x, [1, 0])


@REGISTRY.register(aten.expand.default)
def lower_expand(ctx, x, size, implicit=False):
    new_size = ctx.meta_size()
    lead = len(new_size) - x.ndim

    def index(new_idx):
        return [sympy.Integer(0) if x.size[k] == 1 and new_size[k + lead] != 1 else new_idx[k + lead]
                for k in range(x.ndim)]

    return x.reindex(new_size, index)


@REGISTRY.register(aten.repeat.default)
def lower_repeat(ctx, x, repeats):
    """Tiling as an index transform (like expand, with copies that differ only in where
    they start): a repeated dim's index i reads the input at i mod its size. Users fuse the
    read instead of getting a materialised copy (ALiBi's slopes in BLOOM, DeBERTa's
    relative positions, gathers of patch indices)."""
    new_size = ctx.meta_size()
    lead = len(new_size) - x.ndim

    def index(new_idx):
        out = []
        for k in range(x.ndim):
            i, reps = new_idx[k + lead], repeats[k + lead]
            if x.size[k] == 1:
                out.append(sympy.Integer(0))
            else:
                out.append(i if reps == 1 else ModularIndexing(i, 1, x.size[k]))
        return out

    return simplify_value(x.reindex(new_size, index))


@REGISTRY.register(aten.unfold.default)
def lower_unfold(ctx, x, dimension, size, step):
    """Sliding windows as a view: window i's element k (a new last dim) reads the input at
    i * step + k along ``dimension`` (PatchTST's patches, framing a signal)."""
    dim = normalize_dim(dimension, max(x.ndim, 1))

    def index(new_idx):
        if x.ndim == 0:
            return []
        old = list(new_idx[:-1])
        old[dim] = old[dim] * as_sym(step) + new_idx[-1]
        return old

    return simplify_value(x.reindex(ctx.meta_size(), index))


@REGISTRY.register(aten.slice.Tensor)
def lower_slice(ctx, x, dim=0, start=None, end=None, step=1):
    dim = normalize_dim(dim, x.ndim)
    start = _start(start, x.size[dim], shape_env_of(ctx.meta_val()))
    return _slice_view(x, dim, start, step, ctx.meta_size())


def _start(start, size, shape_env=None):
    """A slice start made non-negative and clamped into ``[0, size]``.

    A negative start on a dynamic dim is clamped symbolically, ``Max(size + start, 0)``
    (``x[-512:]`` of a shorter sequence starts at 0, not before the buffer), then settled
    by the ShapeEnv where its ranges decide it (``x[:, -1]`` is ``s0 - 1`` again).
    """
    if start is None:
        return sympy.Integer(0)
    start = sympy.sympify(start)
    if start.is_number and start < 0:
        start = start + size
        if not start.is_number:
            start = settle_clamps(sympy.Max(start, 0), shape_env)
    if start.is_number and size.is_Integer:
        start = sympy.Integer(min(max(int(start), 0), int(size)))
    return start


@REGISTRY.register(aten.select.int)
def lower_select(ctx, x, dim, index_value):
    dim = normalize_dim(dim, x.ndim)
    pos = _start(index_value, x.size[dim], shape_env_of(ctx.meta_val()))

    def index(new_idx):
        return list(new_idx[:dim]) + [pos] + list(new_idx[dim:])

    return x.reindex(ctx.meta_size(), index)


def _drop_or_insert_ones(ctx, x):
    """squeeze/unsqueeze: shapes that differ only by size-1 dims keep their other dims in order."""
    new_size = ctx.meta_size()

    def index(new_idx):
        moving = iter(i for i, s in zip(new_idx, new_size) if s != 1)
        return [sympy.Integer(0) if s == 1 else next(moving) for s in x.size]

    return x.reindex(new_size, index)


@REGISTRY.register(aten.squeeze.default, aten.squeeze.dim, aten.squeeze.dims, aten.unsqueeze.default)
def lower_squeeze(ctx, x, *dims):
    return _drop_or_insert_ones(ctx, x)


@REGISTRY.register(aten.detach.default)
def lower_detach(ctx, x):
    return x


@REGISTRY.register(aten.as_strided.default)
def lower_as_strided(ctx, x, size, stride, storage_offset=None):
    src = ctx.node.args[0]
    ref = ctx.storage_ref(x, src)
    offset = ref.offset
    if storage_offset is not None:   # absolute in eager's storage: relative to x's start
        offset += as_sym(storage_offset) - as_sym(ctx.meta_val(src).storage_offset())
    idx = index_symbols(len(size))
    index = offset + sum((as_sym(st) * i for st, i in zip(stride, idx)), sympy.Integer(0))
    return TensorValue(x.dtype, x.device, ctx.meta_size(), Load(ref.name, index, x.dtype))


@REGISTRY.register(aten.split_with_sizes.default, aten.split.Tensor)
def lower_split(ctx, x, sizes, dim=0):
    """Each piece is a slice view; the tuple is unpacked by ``getitem`` nodes."""
    dim = normalize_dim(dim, x.ndim)
    lengths = [sym_size(v.shape[dim]) for v in ctx.meta_val()]   # eager's own piece sizes
    pieces, start = [], sympy.Integer(0)
    for length in lengths:
        new_size = list(x.size)
        new_size[dim] = length
        pieces.append(_slice_view(x, dim, start, 1, new_size))
        start += length
    return tuple(pieces)


@REGISTRY.register(aten.unbind.int)
def lower_unbind(ctx, x, dim=0):
    dim = normalize_dim(dim, x.ndim)
    size = list(x.size[:dim]) + list(x.size[dim + 1:])
    return tuple(x.reindex(size, lambda idx, k=k: list(idx[:dim]) + [sympy.Integer(k)] + list(idx[dim:]))
                 for k in range(int(x.size[dim])))


@REGISTRY.register(aten.diagonal.default)
def lower_diagonal(ctx, x, offset=0, dim1=0, dim2=1):
    """The other dims in order, then the diagonal of ``dim1`` and ``dim2`` as the last dim
    (``offset`` > 0 above it, as eager)."""
    d1, d2 = normalize_dim(dim1, x.ndim), normalize_dim(dim2, x.ndim)
    starts = {d1: max(-offset, 0), d2: max(offset, 0)}

    def index(new_idx):
        rest, k = iter(new_idx[:-1]), new_idx[-1]
        return [k + starts[d] if d in starts else next(rest) for d in range(x.ndim)]

    return x.reindex(ctx.meta_size(), index)


# flip copies in eager, but it is only an index transform of its input: lowered like the
# views, it fuses into the kernel that reads it instead of falling back (repeat: above).
@REGISTRY.register(aten.flip.default)
def lower_flip(ctx, x, dims):
    flipped = {normalize_dim(d, x.ndim) for d in dims}

    def index(new_idx):
        return [x.size[k] - 1 - i if k in flipped else i for k, i in enumerate(new_idx)]

    return x.reindex(x.size, index)


def _slice_view(x, dim, start, step, new_size):
    def index(new_idx):
        return [start + step * i if k == dim else i for k, i in enumerate(new_idx)]
    return simplify_value(x.reindex(new_size, index))


# Functionalization can turn views into copies (``remove="mutations_and_views"``); kiln's view
# lowerings never alias anyway, so each copy variant lowers exactly like its view.
_COPY_VARIANTS = {
    "view_copy": lower_view, "permute_copy": lower_permute, "transpose_copy": lower_transpose,
    "t_copy": lower_t, "expand_copy": lower_expand, "slice_copy": lower_slice,
    "select_copy": lower_select, "squeeze_copy": lower_squeeze, "unsqueeze_copy": lower_squeeze,
    "detach_copy": lower_detach, "alias_copy": lower_detach, "unfold_copy": lower_unfold,
    "split_with_sizes_copy": lower_split, "split_copy": lower_split, "unbind_copy": lower_unbind,
    "diagonal_copy": lower_diagonal,
}
for _name, _fn in _COPY_VARIANTS.items():
    if hasattr(aten, _name):
        REGISTRY.register(getattr(aten, _name))(_fn)
