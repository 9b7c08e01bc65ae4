"""Triton kernels for reductions and the pointwise work fused around them, row by row.

A row kernel runs a group of nodes over the same rows: reductions of one source shape and
pointwise nodes of its size (that shape, a reshape or a permutation of it: softmax over a
[16, 12, 256, 256] view writing the [192, 256, 256] a bmm reads); the scheduler picks the
group. Rows are ``xindex`` (XBLOCK
rows per program); the reduced elements are ``rindex``. Persistent kernels hold a whole row
in one RBLOCK >= rnumel tile, so LayerNorm's two reductions and its normalization read the
input once; looped kernels walk the row in RBLOCK chunks, one loop per node (a loop that
reads a pointwise value of an earlier loop computes it again). A reduction's
result stays in registers for the nodes after it; a buffer nobody outside the group reads is
never written. Max/min propagate NaN like eager (Triton's own max drops NaNs).

Example:
    >>> import torch, sympy
    >>> from compiler.ir import ReductionBuffer, Layout, Load, index_symbols, reduction_symbols
    >>> i, r = index_symbols(1), reduction_symbols(1)
    >>> lay = Layout("cpu", torch.float32, (sympy.Integer(4),), (sympy.Integer(1),))
    >>> n = sympy.Integer
    >>> buf = ReductionBuffer("buf0", lay, Load("arg0", 8 * i[0] + r[0], torch.float32),
    ...                       (n(8),), "sum", (n(4), n(8)), (1,), (0,))
    >>> str(generate_row_kernel((buf,), frozenset({"buf0"}), 0).kind)
    'reduction_persistent'
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

import sympy
import torch

from ..ir import (ComputedBuffer, Expr, Load, Op, OpName, ReductionBuffer, contiguous_strides,
                  index_symbols, reduction_symbols, substitute, walk)
from ..sizevars import (affine_coefficients, free_symbols, index_step, index_symbol, is_plain,
                        replace_symbols, simplify, size_hint, upper_bound)
from ..kernels.spec import PERSISTENT_MAX_RNUMEL, KernelKind
from ..traffic import row_traffic
from .builder import CodeBuilder
from .kernel import GeneratedKernel, generated, jit_header
from .ops import HALF_TYPES, TL_DTYPES, compute_type
from .triton import (INT32_MAX, RINDEX, XINDEX, BodyWriter, index_exprs, kernel_name,
                     merge_dims, simplify_body, store_index, unflatten)


def _identity(rtype: str, dtype) -> str:
    if rtype in ("sum", "any"):
        return "0"
    if rtype in ("prod", "all"):
        return "1"
    if dtype.is_floating_point:
        return 'float("-inf")' if rtype in ("max", "argmax") else 'float("inf")'
    if dtype == torch.bool:    # no iinfo: False is the least bool, True the greatest
        return "0" if rtype in ("max", "argmax") else "1"
    info = torch.iinfo(dtype)
    return str(info.min if rtype in ("max", "argmax") else info.max)


def _combine(rtype: str, a: str, b: str) -> str:
    return {"sum": f"{a} + {b}", "prod": f"{a} * {b}", "max": f"tl.maximum({a}, {b})",
            "min": f"tl.minimum({a}, {b})", "any": f"{a} | ({b} != 0)",
            "all": f"{a} & ({b} != 0)"}[rtype]


def _final(rtype: str, acc: str) -> str:
    # tl.reduce with tl.standard's own combine functions: what tl.sum/tl.max expand to on
    # GPUs, and what Triton's interpreter recognizes for its NumPy fast path (tl.sum itself
    # is a @jit function the interpreter cannot call unless set up process-wide).
    combine = {"sum": "_sum_combine", "max": "_elementwise_max", "min": "_elementwise_min",
               "any": "_elementwise_max", "all": "_elementwise_min", "prod": "_prod_combine"}
    if rtype in ("argmax", "argmin"):
        fn = f"_{rtype}_combine_tie_break_left"
        return (f"tl.reduce(({acc}, tl.broadcast_to(rindex, {acc}.shape)), 1, "
                f"tl.standard.{fn}, keep_dims=True)[1]")
    arg = f"({acc} != 0).to(tl.int8)" if rtype in ("any", "all") else acc
    out = f"tl.reduce({arg}, 1, tl.standard.{combine[rtype]}, keep_dims=True)"
    return f"{out} > 0" if rtype in ("any", "all") else out


# ----------------------------------------------------------------------------- group plan
@dataclass(frozen=True)
class RowPlan:
    """Nodes mapped onto common (row, reduced) dims, ready to emit."""
    nodes: tuple
    kinds: tuple           # per node: "reduction" | "full" | "row"
    bodies: tuple          # each node's body over the merged dims
    stores: tuple          # each node's store index over the merged dims
    xdims: tuple
    rdims: tuple
    persistent: bool
    across: bool = False   # rows lie across memory, adjacent rows adjacent (``rows_across``)

    @property
    def numels(self) -> tuple[sympy.Expr, sympy.Expr]:
        """(rows, elements a row): the kernel's xnumel and rnumel."""
        return tuple(sympy.Mul(*[n for _, n in dims]) for dims in (self.xdims, self.rdims))

    @property
    def kernel_kind(self) -> KernelKind:
        return KernelKind.REDUCTION_PERSISTENT if self.persistent else KernelKind.REDUCTION_LOOPED


def _group_symbol(d: int) -> sympy.Symbol:
    """The index of the reduced source's dim ``d``: the source's own index symbol, so a
    node of the source's shape is over the group's dims as it is (no walk of its body to
    rename them; a depthwise conv before a LayerNorm is some 500 nodes)."""
    return index_symbol("i", d)


def _kind(node, anchor: ReductionBuffer) -> str | None:
    """How ``node`` lines up with ``anchor``'s rows: "reduction" over the same rows, "full"
    (pointwise over as many elements as the reduced source: the same shape, a reshape or a
    permutation of it), "row" (pointwise over the output's shape, one value per row), or None."""
    if isinstance(node, ReductionBuffer):
        same = (tuple(node.src_size) == tuple(anchor.src_size)
                and tuple(node.reduced_dims) == tuple(anchor.reduced_dims)
                and len(node.out_dims) == len(node.layout.size))
        return "reduction" if same else None
    if type(node) is not ComputedBuffer:    # a MutationBuffer never shares a kernel
        return None
    if sympy.expand(node.layout.numel() - sympy.Mul(*anchor.src_size)) == 0 and _full_maps(
            tuple(node.layout.size), tuple(anchor.src_size)):
        return "full"
    return "row" if _row_dims(node, anchor) is not None else None


# Permutations tried for a "full" node of the source's rank but another dim order (a
# channels-first LayerNorm writes NCHW what it reduced as NHWC); 4! covers 4-d tensors.
MAX_PERMUTATIONS = 24


def _full_maps(size, src) -> list[tuple]:
    """Candidate maps of a full-sized node onto the source: per node dim, its index as an
    expression of the group symbols (``_group_symbol``). Same shape: the identity. Otherwise
    the dim permutations whose sizes agree, then the row-major reshape (softmax over a
    [16, 12, 256, 256] view written as the [192, 256, 256] a bmm reads).

    >>> [[str(e) for e in m] for m in _full_maps((6, 4), (2, 3, 4))]
    [['3*i0 + i1', 'i2']]
    """
    size, src = tuple(map(sympy.sympify, size)), tuple(map(sympy.sympify, src))
    g = [_group_symbol(d) for d in range(len(src))]
    if size == src:
        return [tuple(g)]
    ranges = dict(zip(g, src))
    maps = []
    if len(size) == len(src):
        perms = itertools.islice(itertools.permutations(range(len(src))), MAX_PERMUTATIONS)
        maps += [tuple(g[p] for p in perm) for perm in perms
                 if all(size[k] == src[p] for k, p in enumerate(perm))]
    flat = sum((s * st for s, st in zip(g, contiguous_strides(src))), sympy.Integer(0))
    digits = unflatten(flat, list(enumerate(size)))
    maps.append(tuple(simplify(digits[k], ranges) for k in range(len(size))))
    return maps


def _row_dims(node, anchor: ReductionBuffer):
    """Per dim of a row-shaped ``node``, its source dim (None: a keepdim size-1 dim)."""
    src, reduced = anchor.src_size, set(anchor.reduced_dims)
    kept = [d for d in range(len(src)) if d not in reduced]
    size = tuple(node.layout.size)
    if size == tuple(src[d] for d in kept):
        return kept
    if size == tuple(sympy.Integer(1) if d in reduced else src[d] for d in range(len(src))):
        return [None if d in reduced else d for d in range(len(src))]
    return None


def _to_group(node, anchor: ReductionBuffer, kind: str, full_map=None):
    """(body, store index) of ``node`` over the anchor's source dims ``i0, i1, ...``;
    ``full_map`` (from ``_full_maps``) places a full node's dims."""
    isyms = index_symbols(len(node.layout.size))
    if kind == "full":
        sub = dict(zip(isyms, full_map))
    else:
        out_dims = node.out_dims if kind == "reduction" else _row_dims(node, anchor)
        sub = {s: (_group_symbol(d) if d is not None else sympy.Integer(0))
               for s, d in zip(isyms, out_dims)}
    if kind == "reduction":
        sub.update({r: _group_symbol(d) for r, d in
                    zip(reduction_symbols(len(node.reduced_dims)), node.reduced_dims)})
    return substitute(node.body, sub), node.layout.index(isyms).xreplace(sub)


def _map_nodes(nodes, kinds, anchor: ReductionBuffer) -> list[tuple]:
    """Each node's (body, store) over the group symbols, size-1 dims at 0. A full node not
    of the source's own shape takes the first candidate map under which it reads every
    earlier node of the group at its own element (the map that makes the group fusable)."""
    src = anchor.src_size
    zero = {_group_symbol(d): sympy.Integer(0) for d, n in enumerate(src) if n == 1}
    ranges = {_group_symbol(d): n for d, n in enumerate(src)}
    mapped: list[tuple] = []
    for node, kind in zip(nodes, kinds):
        maps = _full_maps(tuple(node.layout.size), tuple(src)) if kind == "full" else [None]
        reshaped = kind == "full" and tuple(node.layout.size) != tuple(src)
        pick = None
        for full_map in maps:
            body, store = _to_group(node, anchor, kind, full_map)
            body, store = substitute(body, zero), store.xreplace(zero)
            if reshaped:
                body, store = simplify_body(body, ranges), simplify(store, ranges)
            pick = pick or (body, store)
            if _reads_own_elements(body, nodes, mapped):
                pick = (body, store)
                break
        mapped.append(pick)
    return mapped


def _reads_own_elements(body, nodes, mapped) -> bool:
    """Does ``body`` read each earlier node of the group only where that node stores?"""
    stores = {n.name: s for n, (_, s) in zip(nodes, mapped)}
    return all(load.index == stores[load.buffer] for load in walk(body)
               if isinstance(load, Load) and load.buffer in stores)


def plan_row_group(nodes) -> RowPlan | None:
    """The plan for one kernel over ``nodes``, or None when they cannot share one.

    Nodes must all line up with the first reduction's rows, and read what an earlier node
    of the group computes only at their own row (and, for pointwise values, only in a
    persistent kernel, where the value is in registers).
    """
    anchor = next((n for n in nodes if isinstance(n, ReductionBuffer)), None)
    if anchor is None:
        return None
    kinds = tuple(_kind(n, anchor) for n in nodes)
    if None in kinds:
        return None
    src = anchor.src_size
    mapped = _map_nodes(nodes, kinds, anchor)
    bodies = [b for b, _ in mapped]
    stores = [s for _, s in mapped]
    out_stride = {d: st for d, st in zip(anchor.out_dims, anchor.layout.stride) if d is not None}
    xdims = sorted([(_group_symbol(d), src[d]) for d in range(len(src))
                    if d not in anchor.reduced_dims and src[d] != 1],
                   key=lambda dm: -size_hint(out_stride[int(dm[0].name[1:])]))
    rdims = _ordered([(_group_symbol(d), src[d]) for d in anchor.reduced_dims if src[d] != 1],
                     bodies[nodes.index(anchor)])
    exprs = [e for b, s in zip(bodies, stores) for e in index_exprs(b, s)]
    xdims, xmap = merge_dims(xdims, exprs)
    moved = {s: e for s, e in xmap.items() if s != e}
    exprs = [replace_symbols(e, moved) for e in exprs]
    rdims, rmap = merge_dims(rdims, exprs)
    full = {**xmap, **{k: v.xreplace(rmap) for k, v in xmap.items()}, **rmap}
    ranges = dict(xdims + rdims)
    bodies = [simplify_body(substitute(b, full), ranges) for b in bodies]
    stores = [simplify(sympy.sympify(s).xreplace(full), ranges) for s in stores]
    rnumel = sympy.Mul(*[n for _, n in rdims])
    across = rows_across(bodies, {n.name for n in nodes}, xdims, rdims)
    limit = ACROSS_PERSISTENT_MAX_RNUMEL if across else PERSISTENT_MAX_RNUMEL
    persistent = rnumel.is_Integer and int(rnumel) <= limit
    plan = RowPlan(tuple(nodes), kinds, tuple(bodies), tuple(stores), tuple(xdims),
                   tuple(rdims), persistent, across)
    if not persistent:
        plan = _recompute_full_values(plan)
    return plan if _reads_are_local(plan) else None


def moving_loads_unplanned(nodes) -> int:
    """At least how many distinct loads of other buffers a pointwise node of the reduced
    source's own shape makes that move along the innermost reduced dim of the plan
    ``plan_row_group(nodes)`` would make, told without making it (0 where none is known).

    Such a node is over the group's dims as it is (``_group_symbol``). Counted are the loads
    whose index is a sum of multiples of the group's dims: merging and simplifying dims keeps
    an index's value, so each keeps its step along the innermost reduced dim, and no two of
    them become one load (two such sums that differ, differ somewhere in the dims' ranges).
    The fusion planner refuses a kernel on this count before planning it: a 7x7 depthwise
    conv joining a LayerNorm moves 98 loads, and its plan maps and simplifies 500 nodes.
    """
    anchor = next((n for n in nodes if isinstance(n, ReductionBuffer)), None)
    src = tuple(anchor.src_size) if anchor is not None else ()
    full = [n for n in nodes if type(n) is ComputedBuffer and tuple(n.layout.size) == src]
    if not full:
        return 0
    zero = {_group_symbol(d): sympy.Integer(0) for d, n in enumerate(src) if n == 1}
    dims = frozenset(_group_symbol(d) for d, n in enumerate(src) if n != 1)
    rdims = _ordered([(_group_symbol(d), src[d]) for d in anchor.reduced_dims if src[d] != 1],
                     substitute(_to_group(anchor, anchor, "reduction")[0], zero))
    if not rdims:
        return 0
    at_zero = {s: 0 for s in dims}
    own = {n.name for n in nodes}
    counts = [0]
    for node in full:
        loads = {ld for ld in walk(substitute(node.body, zero)) if isinstance(ld, Load)
                 and ld.buffer not in own and not ld.indirect and _sum_of_dims(ld.index, dims)}
        counts.append(sum(load_step(ld, rdims[-1][0], at_zero) not in (0, None) for ld in loads))
    return max(counts)


def _sum_of_dims(index, dims: frozenset) -> bool:
    """Whether ``index`` is a sum of number multiples of ``dims`` and a number."""
    index = sympy.sympify(index)
    return is_plain(index) and free_symbols(index) <= dims


# A program holds 16 rows lying across memory to read them coalesced (``heuristics``), so
# rows longer than this are walked in a loop rather than held.
ACROSS_PERSISTENT_MAX_RNUMEL = 1024


def rows_across(bodies, own: set, xdims, rdims) -> bool:
    """Whether the rows lie across memory: every load of another buffer that moves along the
    innermost reduced dim steps by more than one element there, and by one along the
    innermost row dim (a channels-last mean over H and W: rows are channels)."""
    if not xdims or not rdims:
        return False
    zero = {s: 0 for s, _ in list(xdims) + list(rdims)}
    steps = [(load_step(ld, rdims[-1][0], zero), load_step(ld, xdims[-1][0], zero))
             for b in bodies for ld in walk(b) if isinstance(ld, Load) and ld.buffer not in own]
    moving = [(r, x) for r, x in steps if r != 0]
    return bool(moving) and all(r != 1 and x == 1 for r, x in moving)


def load_step(load: Load, symbol: sympy.Symbol, zero: dict) -> int | None:
    """How far apart in memory ``load`` reads the first two elements along ``symbol``;
    None where the data decides (``sizevars.index_step``)."""
    return None if load.indirect else index_step(load.index, symbol, zero)


def _ordered(dims, body):
    """Reduction dims ordered so the one read contiguously is innermost."""
    syms = [s for s, _ in dims]
    for load in (n for n in walk(body) if isinstance(n, Load)):
        coeffs = affine_coefficients(load.index, syms)
        if coeffs is not None:
            order = {s: c for s, c in zip(syms, coeffs[1])}
            return sorted(dims, key=lambda d: -size_hint(order[d[0]]))
    return list(dims)


def _seed_key(plan: RowPlan, k: int) -> Load:
    node = plan.nodes[k]
    return Load(node.name, plan.stores[k], node.layout.dtype)


def _reads_are_local(plan: RowPlan) -> bool:
    produced = {}
    for k, (node, body) in enumerate(zip(plan.nodes, plan.bodies)):
        for load in (n for n in walk(body) if isinstance(n, Load)):
            if load.buffer in produced and load != _seed_key(plan, produced[load.buffer]):
                return False
        produced[node.name] = k
    return True


def _recompute_full_values(plan: RowPlan) -> RowPlan:
    """A looped kernel holds a pointwise value only inside its own loop: a later loop that
    reads it computes it again from its inputs (``scheduler.fusion_bytes_saved`` charges
    those extra reads, so a group fuses this way only where it still saves bytes)."""
    bodies = list(plan.bodies)
    for k in range(len(bodies)):
        known = {_seed_key(plan, j): bodies[j] for j in range(k) if plan.kinds[j] == "full"}
        if known:
            bodies[k] = _replace(bodies[k], known)
    return dataclasses.replace(plan, bodies=tuple(bodies))


def _replace(expr: Expr, mapping: dict) -> Expr:
    """``expr`` with every subexpression found in ``mapping`` replaced (shared ones once)."""
    memo: dict[int, Expr] = {}

    def go(e: Expr) -> Expr:
        if isinstance(e, Load) and e in mapping:   # only loads are keys: cheap to hash
            return mapping[e]
        if id(e) not in memo:
            if isinstance(e, Op):
                memo[id(e)] = dataclasses.replace(e, args=tuple(go(a) for a in e.args))
            elif isinstance(e, Load) and e.indirect:
                memo[id(e)] = dataclasses.replace(
                    e, indirect=tuple((sym, go(v)) for sym, v in e.indirect))
            else:
                memo[id(e)] = e
        return memo[id(e)]

    return go(expr)


# ----------------------------------------------------------------------------- emission
def generate_row_kernel(nodes, stores: frozenset[str], number: int,
                        plan: RowPlan | None = None) -> GeneratedKernel:
    """One kernel for ``nodes`` (which ``plan_row_group`` accepts); writes ``stores``.
    ``plan``: ``plan_row_group(nodes)`` where the caller has it already."""
    plan = plan if plan is not None else plan_row_group(tuple(nodes))
    if plan is None:
        raise ValueError(f"nodes {[n.name for n in nodes]} cannot share a row kernel")
    xnumel, rnumel = plan.numels
    index_map = {**unflatten(XINDEX, plan.xdims), **unflatten(RINDEX, plan.rdims)}
    ranges = {XINDEX: xnumel, RINDEX: rnumel}
    reductions = [n for n in plan.nodes if isinstance(n, ReductionBuffer)]
    prefix = "kiln_red_" + "_".join(dict.fromkeys(r.reduction_type for r in reductions))
    name = kernel_name(_joined_body(plan), number, prefix=prefix)
    kind = plan.kernel_kind
    emitter = _Emitter(plan, stores, index_map, ranges)
    source = emitter.emit(name, kind)
    int64 = any((upper_bound(sympy.sympify(e), {**dict(plan.xdims), **dict(plan.rdims)})
                 or INT32_MAX + 1) > INT32_MAX for b, s in zip(plan.bodies, plan.stores)
                for e in index_exprs(b, s))
    if int64:
        source = source.replace("tl.program_id(0) * XBLOCK", "tl.program_id(0).to(tl.int64) * XBLOCK")
    ops = tuple(n.op for b in plan.bodies for n in walk(b) if isinstance(n, Op))
    ops += tuple(r.reduction_type for r in reductions)
    outputs = tuple(n.name for n in plan.nodes if n.name in stores)
    return generated(name, source, tuple(emitter.pointers) + outputs, (xnumel, rnumel), kind,
                     ops, row_traffic(plan, stores, footprint=True), len(outputs),
                     emitter.size_args,
                     rows_across=plan.across)


def _joined_body(plan: RowPlan) -> Expr:
    return Op(OpName.GROUP, tuple(plan.bodies), torch.float32)


class _Emitter:
    def __init__(self, plan: RowPlan, stores, index_map, ranges):
        self.plan, self.stores, self.index_map, self.ranges = plan, stores, index_map, ranges
        self.pointers: dict[str, str] = {}
        self.counter = itertools.count()
        self.size_symbols: set = set()
        self.seeds: dict[Expr, str] = {}
        self.out_ptrs = {n.name: f"out_ptr{k}" for k, n in
                         enumerate(n for n in plan.nodes if n.name in stores)}

    def emit(self, name: str, kernel_kind: KernelKind) -> str:
        code = CodeBuilder()
        body = CodeBuilder()
        with body.indent():
            body.lines(["xoffset = tl.program_id(0) * XBLOCK",
                        "xindex = xoffset + tl.arange(0, XBLOCK)[:, None]",
                        "xmask = xindex < xnumel",
                        "rbase = tl.arange(0, RBLOCK)[None, :]"])
            tile = None
            if self.plan.persistent:
                body.lines(["rindex = rbase", "rmask = rindex < rnumel", "mask = xmask & rmask"])
                tile = self._writer(body, "mask")
            for k, kind in enumerate(self.plan.kinds):
                if kind == "row":
                    self._row_node(body, k, tile)
                elif tile is not None:
                    self._tile_node(body, tile, k)
                else:
                    self._looped_node(body, k)
        in_ptrs = list(self.pointers.values())
        self.size_args = tuple(sorted(str(x) for x in self.size_symbols))
        code.lines(jit_header(name, in_ptrs + list(self.out_ptrs.values()), kernel_kind,
                              self.size_args))
        code.splice(body)
        return code.text()

    def _writer(self, code, mask: str) -> BodyWriter:
        writer = BodyWriter(code, self.index_map, self.ranges, mask, masked_other=True,
                            pointers=self.pointers, counter=self.counter, names=self.seeds)
        writer.size_symbols = self.size_symbols   # shared: every writer's sizes are arguments
        return writer

    def _seed(self, k: int, value: str, tile: BodyWriter | None):
        key = _seed_key(self.plan, k)
        self.seeds[key] = value
        if tile is not None:
            tile.names[key] = value
            tile.block.add(value)

    def _row_node(self, code, k, tile):
        """One value per row, outside any loop: loads and stores under the row mask."""
        value = self._writer(code, "xmask").value(self.plan.bodies[k])
        self._seed(k, value, tile)
        self._store(code, k, value, "xmask", "[XBLOCK, 1]")

    def _tile_node(self, code, writer, k):
        """Persistent: one node over the tile already in registers."""
        node, body = self.plan.nodes[k], self.plan.bodies[k]
        value = writer.value(body)
        if isinstance(node, ReductionBuffer):
            nan = self._nan_tracking(node, body)
            code.line(f"acc{k} = tl.where(mask, {value}, {_identity(node.reduction_type, body.dtype)})")
            if nan:
                code.line(f"nan{k} = tl.where(mask, {value} != {value}, 0)")
            self._finish_reduction(code, k, nan, value)
            self._seed(k, f"red{k}", writer)
        else:
            self._seed(k, value, writer)
            self._store(code, k, value, "mask", "[XBLOCK, RBLOCK]")

    def _looped_node(self, code, k):
        node, body = self.plan.nodes[k], self.plan.bodies[k]
        is_red = isinstance(node, ReductionBuffer)
        nan = is_red and self._nan_tracking(node, body)
        if is_red:
            rtype = node.reduction_type
            acc_ty = "tl.int1" if rtype in ("any", "all") else compute_type(body.dtype)
            code.line(f"acc{k} = tl.full([XBLOCK, RBLOCK], {_identity(rtype, body.dtype)}, {acc_ty})")
            if nan:
                code.line(f"nan{k} = tl.full([XBLOCK, RBLOCK], 0, tl.int1)")
        code.line("for roffset in range(0, rnumel, RBLOCK):")
        with code.indent():
            code.lines(["rindex = roffset + rbase", "rmask = rindex < rnumel", "mask = xmask & rmask"])
            value = self._writer(code, "mask").value(body)
            if is_red:
                ident = _identity(node.reduction_type, body.dtype)
                code.line(f"val{k} = tl.where(mask, {value}, {ident})")
                code.line(f"acc{k} = {_combine(node.reduction_type, f'acc{k}', f'val{k}')}")
                if nan:
                    code.line(f"nan{k} = nan{k} | (val{k} != val{k})")
            else:
                self._store(code, k, value, "mask", "[XBLOCK, RBLOCK]")
        if is_red:
            self._finish_reduction(code, k, nan)
            self._seed(k, f"red{k}", None)

    @staticmethod
    def _nan_tracking(node, body) -> bool:
        return body.dtype.is_floating_point and node.reduction_type in ("max", "min")

    def _finish_reduction(self, code, k, nan, value=None):
        node = self.plan.nodes[k]
        code.line(f"red{k} = {_final(node.reduction_type, f'acc{k}')}")
        if value is not None and node.reduction_type in ("argmax", "argmin") \
                and self.plan.bodies[k].dtype.is_floating_point:
            # eager's arg-reductions pick the first NaN; Triton's combine never does
            # a select, not `mask & (...)`: the interpreter cannot & a scalar comparison
            nan_at = f"tl.where({value} != {value}, rindex, rnumel)"
            code.line(f"nanpos{k} = tl.reduce(tl.where(mask, {nan_at}, rnumel), 1, "
                      f"tl.standard._elementwise_min, keep_dims=True)")
            code.line(f"red{k} = tl.where(nanpos{k} < rnumel, nanpos{k}, red{k})")
        if nan:
            code.line(f"hasnan{k} = tl.reduce(nan{k}.to(tl.int8), 1, tl.standard._elementwise_max, "
                      f"keep_dims=True)")
            code.line(f'red{k} = tl.where(hasnan{k} > 0, float("nan"), red{k})')
        self._store(code, k, f"red{k}", "xmask", "[XBLOCK, 1]")

    def _store(self, code, k, value, mask, shape):
        node = self.plan.nodes[k]
        if node.name not in self.stores:
            return
        out = node.layout.dtype
        cast = f".to({TL_DTYPES[out]})" if out in HALF_TYPES or out == torch.int64 or \
            out == torch.bool else ""
        index = simplify(sympy.sympify(self.plan.stores[k]).xreplace(self.index_map), self.ranges)
        self.size_symbols |= {s for s in index.free_symbols if s not in (XINDEX, RINDEX)}
        code.line(f"tl.store({self.out_ptrs[node.name]} + ({store_index(index, shape)}), "
                  f"{value}{cast}, {mask})")
