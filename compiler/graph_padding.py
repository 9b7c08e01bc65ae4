"""When a dynamic size may be padded up to a bucket: the graph must be row-wise independent
along every dim of that size.

Padding size ``s`` to ``B`` runs the compiled graph on inputs with ``B - s`` extra rows and
slices the outputs back to ``s``. That gives eager's result only when no output element at
a real position reads a padded row and no value depends on ``s`` itself: pointwise ops,
views that keep the dim whole, matmuls and reductions over *other* dims. A reduction, a
softmax, a matmul contraction or attention over the dim, a select of one row (``x[:, -1]``),
a concatenation along it, or ``s`` used as a number (``x / s``, ``arange(s, 2 * s)``) all
break it, and ``RowCheck`` refuses the symbol with ``PaddingRefusedError`` naming the op.

So a batch dim usually pads, and a KV-cache length does not (attention reduces over it):
docs/cuda-graphs.md says how a decode loop replays anyway (a static cache).

Example:
    >>> import torch
    >>> from torch.export import export, Dim
    >>> class Scale(torch.nn.Module):
    ...     def forward(self, x):
    ...         return (x * 2).relu(), x.sum(0)
    >>> ep = export(Scale(), (torch.randn(4, 3),), dynamic_shapes=({0: Dim("b")},))
    >>> try:
    ...     plan_padding(ep.graph_module, _first_symbol(ep.graph_module))
    ... except PaddingRefusedError as err:
    ...     print("refused:", "reduces over the padded dim" in str(err))
    refused: True
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import sympy
import torch
from torch.fx import GraphModule, Interpreter, Node

aten = torch.ops.aten


class PaddingRefusedError(ValueError):
    """Padding a size symbol to a bucket would change the graph's results."""


@dataclass(frozen=True)
class PaddingPlan:
    """How to pad one size symbol: which dims of which flat inputs grow to the bucket, and
    which dims of each flat output are sliced back to the real size."""
    symbol: str
    inputs: tuple[tuple[int, tuple[int, ...]], ...]   # (flat input position, its row dims)
    outputs: tuple[tuple[int, ...], ...]              # each flat output's row dims


# Ops whose row dims pass through when the dim they act on (``args[1]``) is another dim.
_ALONG_DIM = {aten.slice, aten.select, aten.narrow, aten.index_select, aten.gather,
              aten.split, aten.split_with_sizes, aten.unbind, aten.chunk, aten.cumsum,
              aten.cat, aten._softmax, aten._log_softmax, aten.flip, aten.roll, aten.sort,
              aten.topk, aten.cumprod, aten.logcumsumexp}
_REDUCTIONS = {aten.sum, aten.mean, aten.amax, aten.amin, aten.max, aten.min, aten.prod,
               aten.argmax, aten.argmin, aten.var, aten.var_mean, aten.std, aten.any,
               aten.all, aten.logsumexp, aten.norm, aten.linalg_vector_norm}
_VIEWS = {aten.view, aten._unsafe_view, aten.reshape, aten.unsqueeze, aten.squeeze,
          aten.flatten, aten.unflatten, aten.view_copy}
_PASS = {aten.clone, aten.alias, aten.detach, aten._to_copy, aten.contiguous,
         aten.lift_fresh_copy, aten.where, aten.masked_fill, aten.copy, aten.to}
_FACTORIES = {aten.arange, aten.full, aten.zeros, aten.ones, aten.empty, aten.empty_strided,
              aten.scalar_tensor, aten.full_like, aten.zeros_like, aten.ones_like,
              aten.empty_like, aten.new_zeros, aten.new_ones, aten.new_empty, aten.new_full}
_SHAPE_QUERIES = {getattr(aten, n) for n in (
    "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "_assert_scalar",
    "_assert_tensor_metadata", "sym_constrain_range", "sym_constrain_range_for_size")
    if hasattr(aten, n)}
# attention: query (batch, heads, L, E) may pad along L; keys and values are reduced over.
_ATTENTION = {getattr(aten, n) for n in (
    "scaled_dot_product_attention", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_flash_attention_for_cpu") if hasattr(aten, n)}


def _shape(node: Any) -> tuple | None:
    val = node.meta.get("val") if isinstance(node, Node) else None
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def _expr(size) -> sympy.Expr:
    return size.node.expr if isinstance(size, torch.SymInt) else sympy.Integer(int(size))


def _first_symbol(gm: GraphModule) -> str:
    """The first size symbol of ``gm``'s inputs (for examples and tests)."""
    for node in gm.graph.nodes:
        for size in _shape(node) or ():
            if isinstance(size, torch.SymInt):
                return str(size.node.expr)
    raise ValueError("no symbolic size")


class RowCheck(Interpreter):
    """Abstract run of an exported graph: each tensor's value is the frozenset of its dims of
    size ``k * symbol`` (its rows; ``k`` a constant, as when a view flattens batch and
    sequence for a matmul: real data is then still the leading ``k * s`` entries, which the
    views' prefix check keeps true); each op is checked to keep rows independent.
    ``run()`` returns the row dims of each flat output, or raises PaddingRefusedError."""

    def __init__(self, gm: GraphModule, symbol: str):
        super().__init__(gm, garbage_collect_values=False)
        self.symbol = sympy.Symbol(symbol, integer=True, positive=True)
        self._names = {symbol}
        self.inputs: list[tuple[int, tuple[int, ...]]] = []
        self._node: Node | None = None
        self._position = -1           # flat input position of the current placeholder
        self._iota: set[Node] = set()   # values that are arange(s) along their row dim

    def run_node(self, n: Node):
        self._node = n
        return super().run_node(n)

    # --------------------------------------------------------------- helpers
    def _involves(self, value) -> bool:
        if isinstance(value, torch.SymInt):
            return any(str(s) in self._names for s in value.node.expr.free_symbols)
        if isinstance(value, (list, tuple)):
            return any(self._involves(v) for v in value)
        return False

    def _rows_of(self, shape: tuple, what: str) -> frozenset:
        rows = set()
        for d, size in enumerate(shape):
            if not self._involves(size):
                continue
            expr = _expr(size)
            symbol = next(s for s in expr.free_symbols if str(s) in self._names)
            ratio = sympy.simplify(expr / symbol)
            if not (ratio.is_Integer and ratio > 0):
                self._refuse(f"{what} has a dim of size {size}: only dims of {self.symbol} "
                             f"or a constant times it can be padded")
            rows.add(d)
        return frozenset(rows)

    def _refuse(self, why: str):
        raise PaddingRefusedError(f"kiln: cannot pad size {self.symbol} to a bucket: {why}")

    def _out_rows(self):
        val = self._node.meta.get("val")
        if isinstance(val, torch.Tensor):
            return self._rows_of(tuple(val.shape), f"{self._node.name}")
        if isinstance(val, (list, tuple)):
            return tuple(self._rows_of(tuple(v.shape), self._node.name)
                         if isinstance(v, torch.Tensor) else v for v in val)
        return val

    # --------------------------------------------------------------- fx overrides
    def placeholder(self, target, args, kwargs):
        self._position += 1
        shape = _shape(self._node)
        if shape is None:
            return self._node.meta.get("val")
        rows = self._rows_of(shape, f"input {self._node.name}")
        if rows:
            self.inputs.append((self._position, tuple(sorted(rows))))
        return rows

    def get_attr(self, target, args, kwargs):
        return frozenset()

    def call_function(self, target, args, kwargs):
        if target is operator.getitem:
            return args[0][args[1]] if isinstance(args[0], (tuple, list)) else None
        if not isinstance(target, torch._ops.OpOverload) or \
                target.overloadpacket in _SHAPE_QUERIES:
            return self._node.meta.get("val")          # sym arithmetic: a shape, not data
        self._check(target, args, kwargs)
        rows = self._out_rows()
        if self._is_iota(target, rows):
            self._iota.add(self._node)
        return rows

    def _is_iota(self, op, rows) -> bool:
        """Whether this value is ``arange(s)`` along its one row dim (index ``i`` holds
        ``i``), so indexing rows with it reads real rows only at real positions."""
        if not isinstance(rows, frozenset) or len(rows) != 1:
            return False
        packet, args = op.overloadpacket, self._node.args
        if packet is aten.arange:
            return (len(args) == 1 or args[0] == 0) and (len(args) < 3 or args[2] == 1)
        return (packet in _VIEWS or packet in _PASS or packet is aten.expand) and \
            args[0] in self._iota and len(self._rows_of(_shape(args[0]), "")) == 1

    def output(self, target, args, kwargs):
        outs = args[0] if isinstance(args[0], (tuple, list)) else (args[0],)
        return tuple(tuple(sorted(o)) if isinstance(o, frozenset) else () for o in outs)

    # --------------------------------------------------------------- the rules
    def _check(self, op, args, kwargs) -> None:
        packet = op.overloadpacket
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, frozenset)]
        nested = [t for a in args if isinstance(a, (list, tuple))
                  for t in a if isinstance(t, frozenset)]
        self._check_values(op, args, kwargs)
        if packet in _FACTORIES or not (any(tensors) or any(nested)):
            return
        if torch.Tag.pointwise in op.tags or packet in _PASS or packet is aten.expand:
            return
        if packet in _VIEWS:
            return self._check_view(args[0])
        if packet in (aten.permute, aten.transpose, aten.t, aten.permute_copy):
            return
        if packet in _REDUCTIONS:
            return self._check_reduction(op, args, kwargs)
        if packet in _ALONG_DIM:
            return self._check_along(packet, args, kwargs)
        if packet in (aten.mm, aten.bmm, aten.addmm, aten.baddbmm, aten.matmul):
            return self._check_matmul(packet, args)
        if packet is aten.embedding:
            if args[0]:
                self._refuse(f"{self._node.name} looks up rows of a padded table")
            return
        if packet is aten.index:
            return self._check_index(args)
        if op in _ATTENTION or packet in _ATTENTION:
            return self._check_attention(args, kwargs)
        self._refuse(f"{self._node.name} ({op}) is not known to keep rows independent")

    def _check_values(self, op, args, kwargs) -> None:
        """``s`` may appear in shapes (list arguments), the end of an ``arange`` and the
        end of a whole-dim ``slice``; never as a number the op computes with."""
        packet = op.overloadpacket
        for i, a in enumerate((*args, *kwargs.values())):
            if isinstance(a, (list, tuple)) or not self._involves(a):
                continue
            if packet is aten.arange and i == (0 if len(args) == 1 else 1):
                continue                   # arange(end) / arange(start, end): the end only
            if packet is aten.slice and i == 3 and self._dims(args[1], _rank(
                    self._node.args[0])) <= args[0]:
                continue                   # a row dim: _check_along allows only all of it
            self._refuse(f"{self._node.name} ({op}) computes with the size as a value")

    def _check_view(self, rows: frozenset) -> None:
        if not rows:
            return
        src, out = _shape(self._node.args[0]), _shape(self._node)
        out_rows = self._rows_of(out, self._node.name)
        before_in = [_prefix(src, d) for d in sorted(rows)]
        before_out = [_prefix(out, d) for d in sorted(out_rows)]
        if len(before_in) != len(before_out) or any(
                sympy.simplify(a - b) != 0 for a, b in zip(before_in, before_out)):
            self._refuse(f"{self._node.name} reshapes across the padded dim")

    def _dims(self, value, rank: int) -> set:
        dims = [value] if isinstance(value, int) else list(value or range(rank))
        return {d % rank for d in dims} if rank else set()

    def _check_reduction(self, op, args, kwargs) -> None:
        rows, src = args[0], _shape(self._node.args[0])
        dims = kwargs.get("dim", args[1] if len(args) > 1 and not isinstance(args[1], bool)
                          else None)
        if rows & self._dims(dims, len(src)):
            self._refuse(f"{self._node.name} ({op}) reduces over the padded dim")

    def _check_along(self, packet, args, kwargs) -> None:
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        if packet in (aten.split, aten.split_with_sizes, aten.chunk, aten.roll, aten.topk):
            dim = kwargs.get("dim", args[2] if len(args) > 2 else (0 if packet is not aten.topk
                                                                   else -1))
        if packet is aten.cat:
            first = _shape(self._node.args[0][0])
            if any(r & self._dims(dim, len(first)) for r in args[0] if isinstance(r, frozenset)):
                self._refuse(f"{self._node.name} concatenates along the padded dim")
            return
        src = _shape(self._node.args[0])
        if not args[0] & self._dims(dim, len(src)):
            return
        if packet is aten.slice and _whole_slice(args, src[dim % len(src)]):
            return
        self._refuse(f"{self._node.name} ({packet}) indexes along the padded dim")

    def _check_matmul(self, packet, args) -> None:
        a, b = (args[1], args[2]) if packet in (aten.addmm, aten.baddbmm) else args[:2]
        ra, rb = _rank(self._node.args[1 if packet in (aten.addmm, aten.baddbmm) else 0]), \
            _rank(self._node.args[2 if packet in (aten.addmm, aten.baddbmm) else 1])
        if (ra - 1) in a or (rb - 2) in b:
            self._refuse(f"{self._node.name} ({packet}) contracts over the padded dim")

    def _check_index(self, args) -> None:
        """``x[i0, i1, ...]``: a row dim of ``x`` may be indexed only by ``arange(s)``
        (transformers' masks do ``mask[batch_idx, kv_idx]``); rows of the indices may
        pick along other dims."""
        for d, index in enumerate(self._node.args[1]):
            if d in args[0] and index is not None and index not in self._iota:
                self._refuse(f"{self._node.name} (aten.index) indexes along the padded dim")

    def _check_attention(self, args, kwargs) -> None:
        q, k, v = args[:3]
        if 3 in q or 2 in k or 2 in v or any(
                isinstance(m, frozenset) and m and max(m) == len(_shape(n)) - 1
                for m, n in zip(args[3:4], self._node.args[3:4])):
            self._refuse(f"{self._node.name} attends over the padded dim (keys and values "
                         f"are reduced over; a KV cache length cannot be padded)")


def _rank(node) -> int:
    return len(_shape(node) or ())


def _prefix(shape: tuple, d: int) -> sympy.Expr:
    out = sympy.Integer(1)
    for size in shape[:d]:
        out = out * _expr(size)
    return sympy.expand(out)


def _whole_slice(args, size) -> bool:
    """``slice(x, dim, 0, end)`` with end at or past the dim's size: the whole dim."""
    start = args[2] if len(args) > 2 else 0
    end = args[3] if len(args) > 3 else None
    step = args[4] if len(args) > 4 else 1
    if start not in (0, None) or step != 1:
        return False
    return end is None or (isinstance(end, int) and end >= 2 ** 62) or \
        (isinstance(end, torch.SymInt) and str(_expr(end)) == str(_expr(size)))


def plan_padding(gm: GraphModule, symbol: str) -> PaddingPlan:
    """The plan to pad ``symbol``, or PaddingRefusedError saying which op forbids it."""
    check = RowCheck(gm, symbol)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    try:
        outputs = check.run(*[None] * len(placeholders))
    except PaddingRefusedError as err:   # fx appends the node's trace: keep the reason only
        raise PaddingRefusedError(str(err).split("\n\nWhile executing")[0]) from None
    if not check.inputs:
        check._refuse("no input has a dim of that size")
    return PaddingPlan(symbol, tuple(check.inputs), tuple(outputs))
