"""Triton kernels for realized pointwise buffers, 1-D or 2-D tiled.

A kernel iterates over its output's dims in the output's memory order. Dims are merged
wherever every access stays as simple (so a contiguous op is one flat ``xindex``), and when
some input is read contiguously along a different dim than the output is written, the dims
split into a Y group and an X group and the kernel runs on (YBLOCK, XBLOCK) tiles: loads
are coalesced along Y, stores along X, and Triton transposes through shared memory.

Example:
    >>> import torch, sympy
    >>> from compiler.ir import ComputedBuffer, Layout, Load, Op, index_symbols
    >>> i = index_symbols(1)
    >>> lay = Layout("cpu", torch.float32, (sympy.Integer(8),), (sympy.Integer(1),))
    >>> buf = ComputedBuffer("buf0", lay, Op("relu", (Load("arg0", i[0], torch.float32),), torch.float32))
    >>> spec = generate_kernel(buf, 0)
    >>> spec.name, spec.buffers
    ('kiln_pw_relu_0', ('arg0', 'buf0'))
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import sympy
import torch

from ..ir import (LOOP_SYMBOL, PSEUDO_OPS, ComputedBuffer, Const, Expr, IndexExpr, Load, Op,
                  OpName, index_symbols, map_indices, substitute, walk)
from ..sizevars import (FloorDiv, ModularIndexing, affine_coefficients, free_symbols,
                        replace_symbols, simplify, size_hint, texpr, texpr_sum, upper_bound)
from ..kernels.spec import KernelKind
from .builder import CodeBuilder
from .kernel import GeneratedKernel, generated, jit_header
from .ops import HALF_TYPES, OP_CODE, TL_DTYPES, compute_type, literal
from ..traffic import Traffic, pointwise_traffic

XINDEX = sympy.Symbol("xindex", integer=True, nonnegative=True)
YINDEX = sympy.Symbol("yindex", integer=True, nonnegative=True)
RINDEX = sympy.Symbol("rindex", integer=True, nonnegative=True)
KERNEL_INDICES = frozenset({XINDEX, YINDEX, RINDEX})
INT32_MAX = 2**31 - 1


# ----------------------------------------------------------------------------- iteration plan
@dataclass(frozen=True)
class _Plan:
    dims: tuple[tuple[sympy.Symbol, sympy.Expr], ...]   # outer -> inner
    body: Expr
    store: sympy.Expr


def index_exprs(body: Expr, store: sympy.Expr) -> list[sympy.Expr]:
    out = [n.index for n in walk(body) if isinstance(n, (Load, IndexExpr))]
    return out + [store]


def _divmods(exprs, symbols) -> int:
    return sum(1 for e in exprs for free in _divmod_symbols(e) if free & symbols)


@functools.lru_cache(maxsize=1 << 14)
def _divmod_symbols(expr: sympy.Expr) -> tuple[frozenset, ...]:
    """The free symbols of each floor/mod term of ``expr`` (merge_dims asks for the same
    expressions at every dim pair it tries)."""
    return tuple(frozenset(a.free_symbols)
                 for a in sympy.sympify(expr).atoms(FloorDiv, ModularIndexing))


def _plan(buf: ComputedBuffer) -> _Plan:
    size = buf.layout.size
    isyms = index_symbols(len(size))
    stride = dict(zip(isyms, buf.layout.stride))
    mapping = {s: sympy.Integer(0) for s, n in zip(isyms, size) if n == 1}
    dims = [(s, n) for s, n in zip(isyms, size) if n != 1]
    # memory order of the output: largest stride outermost (stable for equal/symbolic)
    dims.sort(key=lambda d: -size_hint(stride[d[0]]))
    mapping.update({s: s for s, _ in dims})
    body = buf.body
    mask = getattr(buf, "store_mask", None)
    if mask is not None:   # planned together so both see the same dims
        body = Op(OpName.STORE_IF, (mask, body), body.dtype)
    body = substitute(body, mapping)
    store = buf.layout.index(isyms).xreplace(mapping)
    dims, mapping = merge_dims(dims, index_exprs(body, store))
    ranges = dict(dims)
    body = simplify_body(substitute(body, mapping), ranges)
    store = simplify(store.xreplace(mapping), ranges)
    return _Plan(tuple(dims), body, store)


def merge_dims(dims, exprs):
    """Merge adjacent dims while no access needs more div/mod arithmetic for it. Returns
    ``(dims, mapping)``: the merged dims and each old dim's index in them.

    A pure function of its arguments, memoized: the scheduler's fusion planner and the
    emitters plan the same kernels, and a model's repeated blocks index alike (EfficientNet-
    B0's lowering asks 225 times for 127 distinct merges)."""
    merged, mapping = _merge_dims(tuple(dims), tuple(sympy.sympify(e) for e in exprs))
    return list(merged), dict(mapping)


@functools.lru_cache(maxsize=1 << 12)
def _merge_dims(dims: tuple, exprs: tuple) -> tuple[tuple, tuple]:
    dims, exprs = list(dims), list(exprs)
    mapping = {s: s for s, _ in dims}
    merged = True
    while merged and len(dims) > 1:
        merged = False
        for k in range(len(dims) - 1):
            (a, sa), (b, sb) = dims[k], dims[k + 1]
            v = _merged_symbol(a, b)
            sub = {a: FloorDiv(v, sb), b: ModularIndexing(v, 1, sb)}
            ranges = dict(dims[:k] + [(v, sa * sb)] + dims[k + 2:])
            joined = _joined(exprs, a, b, sb, v)
            if joined is not None:     # no access needs div/mod for the merged dim
                new_exprs = [simplify(e, ranges) for e in joined]
            else:
                new_exprs = _split_exprs(exprs, sub, ranges, v, _divmods(exprs, {a, b}))
            if new_exprs is not None:
                dims = dims[:k] + [(v, sa * sb)] + dims[k + 2:]
                mapping = {s: simplify(e.xreplace(sub), ranges) for s, e in mapping.items()}
                exprs = new_exprs
                merged = True
                break
    return tuple(dims), tuple(mapping.items())


def _split_exprs(exprs, sub: dict, ranges, v: sympy.Symbol, budget: int) -> list | None:
    """``exprs`` with ``sub`` (the merged dims as floor/mod of ``v``) applied, simplified;
    None as soon as they hold more than ``budget`` floor/mod terms of ``v``. Those that use
    neither merged dim hold none, so they are simplified only once the merge is taken: most
    tries fail on the first expression (a depthwise conv's masks use one dim of a pair)."""
    out = list(exprs)
    used = [k for k, e in enumerate(exprs) if not free_symbols(e).isdisjoint(sub)]
    for k in used:
        out[k] = simplify(replace_symbols(exprs[k], sub), ranges)
        budget -= _divmods((out[k],), {v})
        if budget < 0:
            return None
    moved = set(used)
    return [e if k in moved else simplify(e, ranges) for k, e in enumerate(out)]


def _joined(exprs, a: sympy.Symbol, b: sympy.Symbol, sb, v: sympy.Symbol) -> list | None:
    """``exprs`` with dims ``a`` (outer) and ``b`` (of size ``sb``) as the one index ``v``,
    where every one that uses them steps ``a`` as ``sb`` steps of ``b`` (integer
    coefficients, no floor or mod of them): the merge then costs no div/mod, and the
    substitution ``a = v // sb, b = v % sb`` would simplify back to ``c*v`` anyway, at
    a few milliseconds of sympy a try. None where any expression is not so."""
    if not sympy.sympify(sb).is_Integer:
        return None
    out = []
    for e in exprs:
        e = sympy.sympify(e)
        if not e.has(a, b):
            out.append(e)
            continue
        coeffs, rest = {a: 0, b: 0}, []
        for term in sympy.Add.make_args(e):
            c, sym = term.as_coeff_Mul()
            if sym in coeffs and c.is_Integer:
                coeffs[sym] += c
            elif term.has(a, b):
                return None
            else:
                rest.append(term)
        if coeffs[b] == 0 or coeffs[a] != coeffs[b] * sb:
            return None
        out.append(sympy.Add(*rest) + coeffs[b] * v)
    return out


def _merged_symbol(a: sympy.Symbol, b: sympy.Symbol) -> sympy.Symbol:
    """The index of dims ``a`` (outer) and ``b`` merged. Named after both, so it is unique
    wherever they are (a row kernel merges its x and r dims in two calls) and the same
    every time: the same index expressions in later kernels hit sympy's cache, which fresh
    Dummy symbols never did."""
    return sympy.Symbol(f"m_{a.name}_{b.name}", integer=True, nonnegative=True)


def simplify_body(body: Expr, ranges) -> Expr:
    return map_indices(body, lambda index: simplify(index, ranges))


def unflatten(flat: sympy.Symbol, dims) -> dict:
    """Each dim's index as digits of ``flat`` (dims outer -> inner)."""
    out, place = {}, sympy.Integer(1)
    for k in range(len(dims) - 1, -1, -1):
        sym, size = dims[k]
        out[sym] = FloorDiv(flat, place) if k == 0 else ModularIndexing(flat, place, size)
        place = place * size
    return out


# Loads of one per-channel operand (broadcast over every dim but the contiguous last one)
# that make a kernel a stencil: a depthwise conv's weights, one per tap. Counted per buffer:
# a BatchNorm's four per-channel vectors, one load each, are no stencil. From 9 (3x3
# windows) a stencil takes its own warps (``heuristics.STENCIL_PER_THREAD``); from 25 (5x5
# and larger) it is tiled 2-D: on an H100 the 2-D kernel took 0.75-0.91x the 1-D kernel's
# time at every 5x5 and 7x7 depthwise shape of ConvNeXt-T and EfficientNet-B0 it was timed
# at, but 3x3 windows went either way (0.95x at 144 channels, 56x56; 1.38x at 480 channels,
# 14x14): benchmarks/results/2026-12-07/s9/3/depthwise_tiled.txt.
STENCIL_TAPS = 9
STENCIL_ROW_LOADS = 25


def _row_major_store(plan: _Plan) -> list | None:
    """The plan's index symbols where it has two dims or more and stores contiguously along
    the last (the case a 2-D tile or a stencil's channel rows need), else None."""
    syms = [s for s, _ in plan.dims]
    if len(syms) < 2:
        return None
    store = affine_coefficients(plan.store, syms)
    return syms if store is not None and store[1][-1] == 1 else None


def _tile_split(plan: _Plan) -> int | None:
    """Index of the last Y dim for 2-D tiling, or None for a 1-D kernel."""
    syms = _row_major_store(plan)
    if syms is None:
        return None
    for load in (n for n in walk(plan.body) if isinstance(n, Load)):
        coeffs = affine_coefficients(load.index, syms)
        # only a load strided along the store's contiguous dim needs a tile; a broadcast
        # (stride 0) or a contiguous read does not
        if coeffs is None or coeffs[1][-1] in (0, 1):
            continue
        for k in range(len(syms) - 2, -1, -1):
            if coeffs[1][k] == 1:
                return k
    return None


def _channel_taps(plan: _Plan) -> int:
    """The most distinct per-channel loads (varying along the contiguous last dim only,
    such as a depthwise conv's weight per tap) one buffer gives ``plan``'s body; 0 where the
    store is not contiguous in that dim."""
    syms = _row_major_store(plan)
    if syms is None:
        return 0
    found: dict[str, set] = {}
    for load in (n for n in walk(plan.body) if isinstance(n, Load)):
        coeffs = affine_coefficients(load.index, syms)
        if coeffs is not None and coeffs[1][-1] != 0 and not any(coeffs[1][:-1]):
            found.setdefault(load.buffer, set()).add(load.index)
    return max(map(len, found.values()), default=0)


def _stencil_split(plan: _Plan, dtype: torch.dtype, taps: int) -> int | None:
    """``_tile_split``'s answer for a stencil of ``taps`` (``_channel_taps``) over
    channels-last rows: the last Y dim from ``STENCIL_ROW_LOADS`` taps, else None.

    Tiled 2-D, channels along X and the (n, h, w) positions along Y, each tap's weight is
    loaded once per tile column and broadcast down it, and a tap's bounds mask is computed
    once per row, where a 1-D kernel redoes both for every element (a 7x7 conv's weights
    alone are 49 loads per output element). Only where a row of ``dtype`` channels fills
    whole 32-byte sectors: tile rows then start on a sector, where with 120 bf16 channels
    (240-byte rows) the 2-D kernel took 2-3x the 1-D kernel's time on an H100 (s9 call 1).
    """
    if taps < STENCIL_ROW_LOADS:
        return None
    channels = sympy.sympify(plan.dims[-1][1])
    if not channels.is_Integer or int(channels) < 16:
        return None      # few channels: a 2-D tile would be mostly masked lanes
    if int(channels) * dtype.itemsize % 32:
        return None
    return len(plan.dims) - 2


# ----------------------------------------------------------------------------- emission
class BodyWriter:
    """Emits one CSE'd line per distinct expression node."""

    def __init__(self, code: CodeBuilder, index_map, ranges, mask: str, masked_other: bool = False,
                 pointers: dict | None = None, counter=None, names: dict | None = None,
                 axis_masks: dict | None = None):
        self.code, self.index_map, self.ranges, self.mask = code, index_map, ranges, mask
        # a 2-D kernel's mask of each axis: a load along one axis only is masked by that
        # axis's, and stays a row or column vector (loaded once, broadcast over the tile)
        self.axis_masks = axis_masks or {}
        self.base_mask = mask   # the kernel's own mask; masked regions AND more onto it
        # reductions read masked lanes as 0 so no garbage reaches the accumulator's where()
        self.other = ", other=0" if masked_other else ""
        # names may be seeded with values already in registers (fused reductions)
        self.names: dict[Expr, str] = dict(names or {})
        self.block: set[str] = set(self.names.values())   # per-element (not scalar) values
        self.pointers: dict[str, str] = pointers if pointers is not None else {}
        self.counter = counter or itertools.count()
        self.size_symbols: set[sympy.Symbol] = set()   # become kernel arguments
        self.indices: dict[sympy.Expr, sympy.Expr] = {}   # ``index`` of each, less its constant
        self.in_loop = False    # emitting a ``loop_sum``'s body

    def index(self, expr) -> sympy.Expr:
        """``expr`` over the kernel's own indices, simplified; its constant term is set
        aside, so a stencil's taps (one index at many offsets) are mapped once."""
        offset, rest = sympy.sympify(expr).as_coeff_Add()
        return offset + self._mapped(rest)

    def _printed(self, expr) -> tuple[str, frozenset]:
        """``texpr(self.index(expr))`` and that index's symbols, the constant term not
        added back in where the text can do without (``texpr_sum``)."""
        offset, rest = sympy.sympify(expr).as_coeff_Add()
        out = self._mapped(rest)
        return texpr_sum(offset, out), free_symbols(out)

    def _mapped(self, rest: sympy.Expr) -> sympy.Expr:
        if rest not in self.indices:
            out = simplify(rest.xreplace(self.index_map), self.ranges)
            self.size_symbols |= {s for s in free_symbols(out) if s not in KERNEL_INDICES
                                  and s != LOOP_SYMBOL and not isinstance(s, sympy.Dummy)}
            self.indices[rest] = out
        return self.indices[rest]

    def pointer(self, buffer: str) -> str:
        return self.pointers.setdefault(buffer, f"in_ptr{len(self.pointers)}")

    def value(self, e: Expr) -> str:
        key = (e, self.mask)   # a load under a masked region is not the same value
        if key in self.names:
            return self.names[key]
        if e in self.names:    # seeded register values
            return self.names[e]
        if isinstance(e, Const):
            return literal(e.value, e.dtype)
        if isinstance(e, Op) and e.op == OpName.MASKED:
            return self._masked(e, key)
        if isinstance(e, Op) and e.op == OpName.LOOP_SUM:
            return self._loop_sum(e, key)
        if isinstance(e, Load):
            text, is_block = self._load(e)
        elif isinstance(e, IndexExpr):
            idx, free = self._printed(e.index)
            # only the kernel's own indices make a block; a size argument is a scalar (and
            # Triton turns a size of 1 into a plain int, which has no .to())
            is_block = bool(free & KERNEL_INDICES)
            text = f"({idx}).to({TL_DTYPES[e.dtype]})" if is_block else idx
            if not is_block and e.dtype in WIDE_SCALARS:   # a literal is int32 (below)
                text = f"tl.full([], {text}, {TL_DTYPES[e.dtype]})"
        else:
            args = [self.value(a) for a in e.args]
            text = OP_CODE[e.op](args, e)
            is_block = any(a in self.block for a in args)
            if not is_block and e.dtype in WIDE_SCALARS and e.op != OpName.TO_DTYPE:
                text = f"tl.full([], {text}, {TL_DTYPES[e.dtype]})"
        return self._assign(key, text, is_block)

    def _assign(self, key, text: str, is_block: bool) -> str:
        name = f"tmp{next(self.counter)}"
        self.code.line(f"{name} = {text}")
        self.names[key] = name
        if is_block:
            self.block.add(name)
        return name

    def _masked(self, e: Op, key) -> str:
        """``where(cond, body, other)`` whose loads only touch memory where ``cond`` holds."""
        cond = self.value(e.args[0])
        outer = self.mask
        region = f"({outer}) & ({cond})" if outer else cond
        other = literal(e.params[0], e.dtype)
        load = e.args[1]
        if isinstance(load, Load) and load.dtype == e.dtype and not load.indirect:
            # a masked load reads ``other`` in the lanes it skips: no select after it (one
            # instruction per element and tap of a padded window, 14% of a 7x7 depthwise conv)
            text, is_block = self._load(load, mask=region, other=other)
            return self._assign(key, text, is_block or cond in self.block)
        self.mask = region
        try:
            body = self.value(load)
        finally:
            self.mask = outer
        return self._assign(key, f"tl.where({cond}, {body}, {other})",
                            cond in self.block or body in self.block)

    def _loop_sum(self, e: Op, key) -> str:
        """``ir.loop_sum`` as a Triton loop. The first term is emitted before it (peeled), so
        the accumulator starts with the block shape and type every term has, whatever the
        kernel's shape; names made inside the loop are forgotten after it (out of scope)."""
        symbol, extent = e.params
        if self.in_loop:     # one counter name for all: an inner loop would rebind it
            raise ValueError("kiln: a loop_sum inside another cannot be emitted")
        first = self.value(substitute(e.args[0], {symbol: sympy.Integer(0)}))
        acc = self._assign(key, first, first in self.block)
        if extent < 2:
            return acc
        names, block = dict(self.names), set(self.block)
        self.code.line(f"for {symbol} in range(1, {extent}):")
        self.in_loop = True
        try:
            with self.code.indent():
                self.code.line(f"{acc} = {acc} + {self.value(e.args[0])}")
        finally:
            self.in_loop = False
        self.names, self.block = names, block
        return acc

    def _load(self, e: Load, mask: str | None = None, other: str | None = None):
        if e.indirect:
            idx = self.index(e.index)
            bound = {sym: sympy.Symbol(self.value(v), integer=True) for sym, v in e.indirect}
            idx = idx.xreplace(bound)
            text, free = texpr(idx), idx.free_symbols
        else:
            text, free = self._printed(e.index)
        # a block only if the address still holds one: an indirect index into a broadcast
        # (stride 0) dimension drops out, leaving a scalar address
        axes = free & KERNEL_INDICES
        is_block = bool(axes) or any(str(s) in self.block for s in free)
        # inside a masked region even a scalar address may be invalid: always mask there
        region = mask or self.mask
        in_region = region != self.base_mask
        if not in_region and len(axes) == 1 and next(iter(axes)) in self.axis_masks:
            region = self.axis_masks[next(iter(axes))]
        fill = f", other={other}" if other is not None else self.other
        mask = f", {region}{fill}" if is_block or in_region else ""
        address = f"{self.pointer(e.buffer)} + ({text})"
        if in_region and not is_block:   # tl.load takes a block mask only with a block address
            address = f"tl.broadcast_to({address}, ({region}).shape)"
        text = f"tl.load({address}{mask})"
        if e.dtype in HALF_TYPES:
            text += ".to(tl.float32)"
        return text, is_block or in_region


# Triton types a Python number as int32 or float32 (the smallest that holds it), so an op of
# scalars only (``where(c, 0, 1)`` of int64s) computed in 32 bits, and an int64 reduction's
# identity, iinfo.max, then did not fit its type: such ops are typed explicitly. So is an
# int64 index that is one number (a slice's row 0 of a size-1 or selected dim), which a
# slice bound of iinfo.max (``x[:, 1:]`` of a dynamic dim) is compared with.
WIDE_SCALARS = (torch.int64, torch.float64)


def store_index(index: sympy.Expr, shape: str) -> str:
    """A store's offsets; a constant one is broadcast so pointer and value are both blocks."""
    if index.free_symbols:
        return texpr(index)
    return f"{texpr(index)} + tl.full({shape}, 0, tl.int32)"


def kernel_name(body: Expr, number: int, prefix: str = "kiln_pw") -> str:
    ops = []
    for n in walk(body):
        if isinstance(n, Op) and n.op != OpName.TO_DTYPE and n.op not in PSEUDO_OPS \
                and n.op not in ops:
            ops.append(n.op)
    return "_".join([prefix] + (ops[:4] or ["copy"]) + [str(number)])


def _needs_int64(plan: _Plan, numels) -> bool:
    ranges = dict(plan.dims)
    exprs = index_exprs(plan.body, plan.store)
    bounds = [upper_bound(sympy.sympify(e), ranges) for e in exprs] + [
        upper_bound(sympy.sympify(n), {}) for n in numels]
    return any(b is None or b > INT32_MAX for b in bounds)


def generate_kernel(buf: ComputedBuffer, number: int) -> GeneratedKernel:
    """The Triton kernel computing ``buf``; ``number`` makes its name unique in the module."""
    plan = _plan(buf)
    taps = _channel_taps(plan)
    stencil = _stencil_split(plan, buf.layout.dtype, taps)
    split = _tile_split(plan) if stencil is None else stencil
    dims = list(plan.dims)
    if split is None:
        groups = [(XINDEX, dims)]
    else:
        groups = [(XINDEX, dims[split + 1:]), (YINDEX, dims[:split + 1])]
    numels = tuple(sympy.Mul(*[n for _, n in g]) for _, g in groups)
    index_map, ranges = {}, {}
    for (flat, group), numel in zip(groups, numels):
        index_map.update(unflatten(flat, group) if group else {})
        ranges[flat] = numel
    name = kernel_name(plan.body, number)
    kind = KernelKind.POINTWISE_2D if split is not None else KernelKind.POINTWISE_1D
    source, pointers, size_args = _emit(name, buf, plan, index_map, ranges, numels, kind)
    ops = tuple(n.op for n in walk(plan.body) if isinstance(n, Op))
    return generated(name, source, tuple(pointers) + (buf.name,), numels, kind, ops,
                     pointwise_traffic([buf], {buf.name}, footprint=True), size_args=size_args,
                     stencil=taps >= STENCIL_TAPS)


def _header_1d(pid: str) -> list[str]:
    """A 1-D kernel's first lines: this program's block of flat indices and its mask."""
    return [f"xoffset = {pid} * XBLOCK", "xindex = xoffset + tl.arange(0, XBLOCK)",
            "xmask = xindex < xnumel"]


def _emit(name, buf, plan, index_map, ranges, numels, kind: KernelKind):
    code = CodeBuilder()
    header = CodeBuilder()
    body = CodeBuilder()
    two_d = kind == KernelKind.POINTWISE_2D
    int64 = _needs_int64(plan, numels)
    pid = (lambda axis: f"tl.program_id({axis}).to(tl.int64)") if int64 else (
        lambda axis: f"tl.program_id({axis})")
    if two_d:
        header.lines([
            f"yoffset = {pid(1)} * YBLOCK",
            "yindex = yoffset + tl.arange(0, YBLOCK)[:, None]",
            "ymask = yindex < ynumel",
            f"xoffset = {pid(0)} * XBLOCK",
            "xindex = xoffset + tl.arange(0, XBLOCK)[None, :]",
            "xmask = xindex < xnumel",
            "mask = ymask & xmask",
        ])
        mask, shape = "mask", "[YBLOCK, XBLOCK]"
    else:
        header.lines(_header_1d(pid(0)))
        mask, shape = "xmask", "[XBLOCK]"
    writer = BodyWriter(body, index_map, ranges, mask,
                        axis_masks={XINDEX: "xmask", YINDEX: "ymask"} if two_d else None)
    value, store_mask = plan.body, mask
    if isinstance(value, Op) and value.op == OpName.STORE_IF:   # an in-place write of changed elements
        store_mask = f"{mask} & ({writer.value(value.args[0])})"
        value = value.args[1]
    result = writer.value(value)
    if result not in writer.block:
        result_text = f"tl.broadcast_to({result}, {shape})"
        if isinstance(value, Const):
            result_text = f"tl.full({shape}, {result}, {compute_type(value.dtype)})"
    else:
        result_text = result
    if buf.layout.dtype in HALF_TYPES:
        result_text = f"{result_text}.to({TL_DTYPES[buf.layout.dtype]})"
    body.line(f"tl.store(out_ptr0 + ({store_index(writer.index(plan.store), shape)}), "
              f"{result_text}, {store_mask})")
    ptr_args = list(writer.pointers.values()) + ["out_ptr0"]
    size_args = sorted(str(x) for x in writer.size_symbols)
    code.lines(jit_header(name, ptr_args, kind, size_args))
    with code.indent():
        code.splice(header)
        code.splice(body)
    return code.text(), list(writer.pointers.keys()), tuple(size_args)


# ----------------------------------------------------------------------------- pointwise groups
def pointwise_group_fits(nodes) -> bool:
    """Can ``nodes`` (plain pointwise buffers, in order) share one 1-D kernel?

    They must have one layout, read each other only element for element (a value is then
    in registers) and each run 1-D. Whether the group pays is the scheduler's call
    (``scheduler.fusion_bytes_saved``).
    """
    if len(nodes) < 2 or any(type(n) is not ComputedBuffer for n in nodes):
        return False
    first = nodes[0].layout
    if any((n.layout.size, n.layout.stride, n.layout.device) != (first.size, first.stride,
                                                                   first.device) for n in nodes):
        return False
    isyms = index_symbols(len(first.size))
    own = {n.name: Load(n.name, n.layout.index(isyms), n.layout.dtype) for n in nodes}
    for k, node in enumerate(nodes):
        earlier = {n.name for n in nodes[:k]}
        if any(l.buffer in own and (l.buffer not in earlier or l != own[l.buffer])
               for l in walk(node.body) if isinstance(l, Load)):
            return False
    plans = [(_plan(node), node.layout.dtype) for node in nodes]
    return all(_tile_split(p) is None and _stencil_split(p, d, _channel_taps(p)) is None
               for p, d in plans)


def generate_pointwise_group(nodes, stores: frozenset, number: int) -> GeneratedKernel:
    """One 1-D kernel computing ``nodes`` (``pointwise_group_fits``); writes ``stores``."""
    layout = nodes[0].layout
    joined = Op(OpName.GROUP, tuple(n.body for n in nodes), torch.float32)
    plan = _plan(ComputedBuffer("group", layout, joined))
    (flat, dims) = (XINDEX, list(plan.dims))
    numel = sympy.Mul(*[n for _, n in dims])
    index_map, ranges = (unflatten(flat, dims) if dims else {}), {flat: numel}
    name = kernel_name(plan.body, number)
    code, header, body = CodeBuilder(), CodeBuilder(), CodeBuilder()
    pid = "tl.program_id(0).to(tl.int64)" if _needs_int64(plan, (numel,)) else "tl.program_id(0)"
    header.lines(_header_1d(pid))
    writer = BodyWriter(body, index_map, ranges, "xmask")
    outputs = [n.name for n in nodes if n.name in stores]
    for node, node_body in zip(nodes, plan.body.args):
        value = writer.value(node_body)
        writer.names[Load(node.name, plan.store, node.layout.dtype)] = value   # in registers
        if node.name not in stores:
            continue
        text = value if value in writer.block else f"tl.broadcast_to({value}, [XBLOCK])"
        if node.layout.dtype in HALF_TYPES:
            text = f"{text}.to({TL_DTYPES[node.layout.dtype]})"
        ptr = f"out_ptr{outputs.index(node.name)}"
        body.line(f"tl.store({ptr} + ({store_index(writer.index(plan.store), '[XBLOCK]')}), "
                  f"{text}, xmask)")
    size_args = sorted(str(x) for x in writer.size_symbols)
    ptrs = list(writer.pointers.values()) + [f"out_ptr{k}" for k in range(len(outputs))]
    code.lines(jit_header(name, ptrs, KernelKind.POINTWISE_1D, size_args))
    with code.indent():
        code.splice(header)
        code.splice(body)
    source = code.text()
    ops = tuple(n.op for n in walk(plan.body) if isinstance(n, Op) and n.op != OpName.GROUP)
    return generated(name, source, tuple(writer.pointers) + tuple(outputs), (numel,),
                     KernelKind.POINTWISE_1D, ops, pointwise_traffic(nodes, stores, footprint=True),
                     len(outputs), size_args, stencil=_channel_taps(plan) >= STENCIL_TAPS)
