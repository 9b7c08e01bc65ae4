"""kiln's frozen IR: value expressions, lazy tensors, layouts and the buffers a graph lowers to.

Expressions (``Load``, ``Const``, ``IndexExpr``, ``Op``) describe the value of one element as
a function of index symbols. A ``TensorValue`` is a lazy tensor: its ``body`` gives element
``(i0, i1, ...)``. Views are substitutions of the index symbols, pointwise ops wrap bodies in
``Op`` nodes, and only ``realize`` (in graph.py) turns a body into a stored buffer. Every node
is a frozen dataclass, so equal subexpressions hash equal and codegen gets CSE for free.

Example:
    >>> import torch, sympy
    >>> i0 = index_symbol("i", 0)
    >>> x = TensorValue(torch.float32, "cpu", (sympy.Integer(8),), Load("arg0", i0, torch.float32))
    >>> y = x.map(lambda b: Op("relu", (b,), torch.float32))
    >>> str(y.body.op)
    'relu'
"""
from __future__ import annotations

import dataclasses
import enum
import functools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import sympy
import torch

from .sizevars import index_symbol, replace_symbols

# The dtypes kiln's lowerings and Triton kernels handle. Anything else (complex, float8,
# quantized) is refused at capture with the offending input named, not deep in codegen; a
# value of another dtype made inside a graph (an FFT's complex) is left to ATen fallbacks.
SUPPORTED_DTYPES = frozenset({
    torch.float32, torch.float16, torch.bfloat16, torch.float64,
    torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool,
})


# ----------------------------------------------------------------------------- expressions
# The pointwise ops kernels compute (each has a snippet in codegen/ops.py's OP_CODE), and
# the pseudo-ops that structure a body rather than compute a value: ``masked`` (a region
# whose loads only happen where a condition holds), ``store_if`` (an in-place write of the
# changed elements only), ``group`` (the bodies of one fused kernel, side by side) and
# ``loop_sum`` (``loop_sum``'s doc below: a sum emitted as a loop, not unrolled).
OpName = enum.StrEnum("OpName", [(name.upper(), name) for name in (
    "add", "sub", "mul", "truediv", "div_floor", "div_trunc", "remainder", "fmod", "neg",
    "abs", "maximum", "minimum", "fmax", "fmin", "pow", "sign", "signbit", "reciprocal",
    "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "rsqrt",
    "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh", "tanh", "asinh",
    "acosh", "atanh", "erf", "erfc", "erfinv", "erfcx", "lgamma", "i0", "hypot", "copysign",
    "sigmoid", "floor", "ceil", "round", "trunc", "relu", "gelu", "silu", "elu",
    "hardsigmoid", "hardswish", "leaky_relu", "eq", "ne", "lt", "le", "gt", "ge", "isnan",
    "isinf", "logical_not", "logical_and", "logical_or", "logical_xor", "bitwise_and",
    "bitwise_or", "bitwise_xor", "bitwise_not", "lshift", "rshift", "where", "to_dtype",
    "masked", "store_if", "group", "loop_sum")])
PSEUDO_OPS = frozenset({OpName.MASKED, OpName.STORE_IF, OpName.GROUP, OpName.LOOP_SUM})

# The counter of a ``loop_sum``: a kernel variable, never a size argument. One name serves
# every loop, as loops never nest (each is emitted in a scope of its own).
LOOP_SYMBOL = sympy.Symbol("tap0", integer=True, nonnegative=True)


class Expr:
    """Base of element expressions; every subclass is a frozen dataclass with a ``dtype``."""
    dtype: torch.dtype


def _hash_once(cls):
    """``cls`` (a frozen dataclass) with its hash computed once per node, not per call.

    The generated ``__hash__`` hashes every field, so hashing an ``Op`` hashes its whole
    subtree, shared subtrees once per path: ``walk`` over a fused kernel's body (a set of
    the nodes seen) made millions of such calls, most of lowering's time on ConvNeXt and
    EfficientNet. The cached value is dropped when a node is pickled: str hashes differ
    between processes.
    """
    field_hash = cls.__hash__

    def __hash__(self) -> int:
        cached = getattr(self, "_hash", None)
        if cached is None:
            cached = field_hash(self)
            object.__setattr__(self, "_hash", cached)
        return cached

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}

    cls.__hash__, cls.__getstate__ = __hash__, __getstate__
    return cls


@_hash_once
@dataclass(frozen=True)
class Load(Expr):
    """Element of buffer ``buffer`` at flat storage offset ``index``.

    ``indirect`` binds symbols used in ``index`` to integer expressions computed in the
    kernel (gather, embedding, index): the offset then depends on loaded data.
    """
    buffer: str
    index: sympy.Expr
    dtype: torch.dtype
    indirect: tuple = ()     # ((sympy.Symbol, Expr), ...)


@_hash_once
@dataclass(frozen=True)
class Const(Expr):
    """A Python scalar of a torch dtype."""
    value: Any
    dtype: torch.dtype


@_hash_once
@dataclass(frozen=True)
class IndexExpr(Expr):
    """The integer value of an index expression (iota, arange, masks built from indices)."""
    index: sympy.Expr
    dtype: torch.dtype = torch.int64


@_hash_once
@dataclass(frozen=True)
class Op(Expr):
    """A pointwise op from the codegen table applied to ``args``; ``params`` are literals.
    ``op`` is an ``OpName`` (a name given as text is checked against it: a typo in a
    lowering fails here, not in generated code)."""
    op: OpName
    args: tuple[Expr, ...]
    dtype: torch.dtype
    params: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "op", OpName(self.op))


def map_indices(expr: Expr, fn: Callable[[sympy.Expr], sympy.Expr]) -> Expr:
    """``expr`` with ``fn`` applied to every index (loads, index values, indirect indices).
    A node whose indices and children all come back as the very same objects is kept, not
    copied: it keeps its cached hash, and most of a body is unchanged by a substitution."""
    memo: dict[int, Expr] = {}

    def go(e: Expr) -> Expr:
        key = id(e)
        if key in memo:
            return memo[key]
        if isinstance(e, Load):
            index = fn(sympy.sympify(e.index))
            indirect = tuple((s, go(v)) for s, v in e.indirect)
            same = index is e.index and _same([v for _, v in indirect],
                                              [v for _, v in e.indirect])
            out = e if same else dataclasses.replace(e, index=index, indirect=indirect)
        elif isinstance(e, IndexExpr):
            index = fn(sympy.sympify(e.index))
            out = e if index is e.index else dataclasses.replace(e, index=index)
        elif isinstance(e, Op):
            args = tuple(go(a) for a in e.args)
            out = e if _same(args, e.args) else dataclasses.replace(e, args=args)
        else:
            out = e
        memo[key] = out
        return out

    try:
        return go(expr)
    finally:
        del go   # the closure refers to itself: a cycle only the garbage collector frees


def _same(new, old) -> bool:
    """Whether each item of ``new`` is the very object of ``old``."""
    return all(n is o for n, o in zip(new, old))


def substitute(expr: Expr, mapping: dict) -> Expr:
    """``expr`` with index symbols replaced per ``mapping`` (shared subtrees done once, and
    each distinct index once: the loads of a pointwise body mostly share their index).
    Symbols mapped to themselves are dropped first, and nothing is walked when none is
    left: views and plans map most dims to themselves, and a walk of a 7x7 depthwise
    conv's body is some 500 nodes."""
    mapping = {k: v for k, v in mapping.items() if k != v}
    if not mapping:
        return expr
    done: dict = {}     # index -> its replacement, or None where nothing in it is replaced
    by_symbol = all(isinstance(k, sympy.Symbol) for k in mapping)

    def replace(index: sympy.Expr) -> sympy.Expr:
        if index not in done:
            out = replace_symbols(index, mapping) if by_symbol else index.xreplace(mapping)
            done[index] = None if out is index else out
        out = done[index]
        return index if out is None else out

    return map_indices(expr, replace)


def bind_indirect(expr: Expr, binds: tuple) -> Expr | None:
    """``expr`` with each ``(symbol, value)`` of ``binds`` bound in every load whose offset
    uses the symbol, or None where an ``IndexExpr`` uses one (it has nowhere to bind it).

    A symbol of ``Load.indirect`` is defined only by the load binding it: an offset that
    names it without the binding reads an undefined variable in the kernel. Composing a
    gather with a lazy value (a roll of a roll) substitutes the gathered index symbols into
    every load of that value, so each of those loads must carry the binding.

    Example:
        >>> import sympy, torch
        >>> k, i0 = sympy.Dummy("ind0", integer=True), index_symbol("i", 0)
        >>> idx = Load("arg1", i0, torch.int64)
        >>> bound = bind_indirect(Op("neg", (Load("arg0", 4 * k, torch.float32),), torch.float32),
        ...                       ((k, idx),))
        >>> bound.args[0].indirect == ((k, idx),)
        True
        >>> bind_indirect(IndexExpr(k), ((k, idx),)) is None
        True
    """
    syms = {s for s, _ in binds}
    if any(isinstance(n, IndexExpr) and sympy.sympify(n.index).free_symbols & syms
           for n in walk(expr)):
        return None
    memo: dict[int, Expr] = {}

    def go(e: Expr) -> Expr:
        if id(e) not in memo:
            out = e
            if isinstance(e, Op):
                out = dataclasses.replace(e, args=tuple(go(a) for a in e.args))
            elif isinstance(e, Load):
                used = sympy.sympify(e.index).free_symbols & syms
                own = tuple((s, go(v)) for s, v in e.indirect)
                out = dataclasses.replace(e, indirect=own + tuple(b for b in binds if b[0] in used))
            memo[id(e)] = out
        return memo[id(e)]

    return go(expr)


def loop_sum(body: Expr, extent: int) -> Expr:
    """The sum of ``body`` over ``LOOP_SYMBOL`` in ``[0, extent)``, which codegen emits as a
    loop rather than ``extent`` copies of ``body``.

    Why: a 7x7 depthwise conv unrolled is 98 loads in one kernel, which Triton's passes
    take seconds to compile (``lowering/depthwise.py``, ``_loops``, has the figures).
    Analyses see the loop unrolled: ``children`` gives its terms with the counter bound,
    so ``walk`` finds every load and op a pass does (traffic, fusion cost, tiling, index
    widths), the same as for the unrolled sum.

    Example:
        >>> import torch
        >>> body = Load("arg0", 4 * LOOP_SYMBOL + index_symbol("i", 0), torch.float32)
        >>> e = loop_sum(body, 3)
        >>> sorted(str(n.index) for n in loads_of(e))
        ['i0', 'i0 + 4', 'i0 + 8']
    """
    return Op(OpName.LOOP_SUM, (body,), body.dtype, (LOOP_SYMBOL, int(extent)))


@functools.lru_cache(maxsize=1 << 10)
def loop_terms(e: Op) -> tuple[Expr, ...]:
    """A ``loop_sum``'s terms, its counter bound to each value in turn."""
    symbol, extent = e.params
    return tuple(substitute(e.args[0], {symbol: sympy.Integer(k)}) for k in range(extent))


def children(e: Expr) -> tuple[Expr, ...]:
    if isinstance(e, Op):
        return loop_terms(e) if e.op == OpName.LOOP_SUM else e.args
    if isinstance(e, Load):
        return tuple(v for _, v in e.indirect)
    return ()


def walk(expr: Expr) -> list:
    """Each distinct node of ``expr`` once, children before parents."""
    return list(_walk(expr))


@functools.lru_cache(maxsize=1 << 12)
def _walk(expr: Expr) -> tuple:
    # Memoized (nodes are frozen, their hash cached): planning and emitting a kernel walk
    # the same bodies again and again (EfficientNet-B0: 2458 walks of 1071 bodies).
    seen: set = set()
    order: list[Expr] = []

    def go(e: Expr):
        if e in seen:
            return
        seen.add(e)
        for a in children(e):
            go(a)
        order.append(e)

    go(expr)
    del go   # a cycle (the closure refers to itself), else freed only by the collector
    return tuple(order)


def count_reads_and_ops(expr: Expr) -> tuple[int, int]:
    """(distinct loads, distinct ops): the cost of recomputing ``expr`` in another kernel."""
    nodes = walk(expr)
    return (sum(isinstance(n, Load) for n in nodes), sum(isinstance(n, Op) for n in nodes))


def loads_of(expr: Expr) -> list[Load]:
    return [n for n in walk(expr) if isinstance(n, Load)]


# ----------------------------------------------------------------------------- lazy tensors
def index_symbols(ndim: int) -> list[sympy.Symbol]:
    return [index_symbol("i", k) for k in range(ndim)]


@dataclass(frozen=True)
class TensorValue:
    """A lazy tensor: element ``(i0, ..., i{n-1})`` is ``body``."""
    dtype: torch.dtype
    device: str
    size: tuple[sympy.Expr, ...]
    body: Expr

    @property
    def ndim(self) -> int:
        return len(self.size)

    def load(self, index: Sequence[sympy.Expr]) -> Expr:
        """The element at ``index`` (one sympy expression per dim)."""
        assert len(index) == self.ndim, (index, self.size)
        return substitute(self.body, dict(zip(index_symbols(self.ndim), index)))

    def map(self, fn: Callable[[Expr], Expr]) -> "TensorValue":
        body = fn(self.body)
        return TensorValue(body.dtype, self.device, self.size, body)

    def reindex(self, size: Sequence[sympy.Expr], index_fn) -> "TensorValue":
        """A view: new element ``idx`` is old element ``index_fn(idx)``."""
        new_index = index_symbols(len(size))
        return TensorValue(self.dtype, self.device, tuple(size), self.load(index_fn(new_index)))


# ----------------------------------------------------------------------------- layouts, buffers
def contiguous_strides(size: Sequence[sympy.Expr]) -> tuple[sympy.Expr, ...]:
    strides, acc = [], sympy.Integer(1)
    for s in reversed(size):
        strides.append(acc)
        acc = acc * s
    return tuple(reversed(strides))


@dataclass(frozen=True)
class Layout:
    """Where a buffer's elements live: ``offset + sum(stride[k] * index[k])``."""
    device: str
    dtype: torch.dtype
    size: tuple[sympy.Expr, ...]
    stride: tuple[sympy.Expr, ...]
    offset: sympy.Expr = sympy.Integer(0)

    def index(self, idx: Sequence[sympy.Expr]) -> sympy.Expr:
        # one Add of every term, not a sum's chain of partial sums: sympy flattens and
        # sorts the terms at each (every buffer a graph reads is indexed so, once a read)
        return sympy.Add(self.offset, *[s * i for s, i in zip(self.stride, idx)])

    def numel(self) -> sympy.Expr:
        return sympy.Mul(*self.size)

    def storage_size(self) -> sympy.Expr:
        """Elements the storage must hold (a view may skip some, never exceed this)."""
        if any(s == 0 for s in self.size):
            return sympy.Integer(0)
        return self.offset + 1 + sum((st * (sz - 1) for st, sz in zip(self.stride, self.size)),
                                     sympy.Integer(0))


@dataclass(frozen=True)
class InputBuffer:
    """A graph input (parameter, buffer or user input) as the caller passes it."""
    name: str
    layout: Layout


@dataclass(frozen=True)
class ConstantBuffer:
    """A tensor constant of the graph (``get_attr``), passed to the module at load time."""
    name: str
    layout: Layout


@dataclass(frozen=True)
class ComputedBuffer:
    """A buffer whose elements ``body`` computes (the scheduler decides which kernel)."""
    name: str
    layout: Layout
    body: Expr

    def exprs(self) -> tuple[Expr, ...]:
        """Every expression the kernel evaluates: what the node reads."""
        return (self.body,)


@dataclass(frozen=True)
class MutationBuffer(ComputedBuffer):
    """Writes ``body`` into graph input ``name`` in place (a mutated buffer or input).

    Only elements where ``store_mask`` holds are written (None: all); a write of a slice
    (``slice_scatter(cache, new)``) is a ``ScatterBuffer`` over the slice instead, so its
    grid is the new rows. It always runs last among the operations reading the old value,
    and never shares a kernel.
    """
    store_mask: Expr | None = None

    def exprs(self) -> tuple[Expr, ...]:
        return (self.body,) if self.store_mask is None else (self.body, self.store_mask)


@dataclass(frozen=True)
class ScatterBuffer(MutationBuffer):
    """Writes ``body`` into the existing buffer ``name`` in place, one element per point of
    ``size`` (a scatter's source elements), at data-dependent places.

    ``body`` and ``position`` use the index symbols ``i*`` of ``size``; ``position`` is the
    destination element, one index expression per dim of ``layout``, which may use the
    symbols bound in ``indirect`` to loaded index values (already wrapped non-negative).
    ``accumulate`` adds (atomically) instead of storing. ``store_mask`` (if any) limits the
    points written; destinations outside ``layout`` are never written. ``name`` is a graph
    input (an in-place update) or a copy of the scatter's ``self`` made just before.

    Example: ``index_put(x, [idx], v, accumulate=True)`` for x of size (8, 4) and idx of
    size (3,) is ``ScatterBuffer(copy, ..., size=(3, 4), position=(ind0, i1),
    indirect=((ind0, <idx[i0]>),), accumulate=True)``.
    """
    size: tuple = ()
    position: tuple = ()
    indirect: tuple = ()      # ((sympy.Symbol, Expr), ...)
    accumulate: bool = False

    def target(self) -> Load:
        """The destination element as a load (what the scatter reads to address it)."""
        return Load(self.name, self.layout.index(self.position), self.layout.dtype, self.indirect)

    def exprs(self) -> tuple[Expr, ...]:
        return super().exprs() + (self.target(),)


SCAN_TYPES = ("sum", "prod", "logsumexp")


@dataclass(frozen=True)
class ScanBuffer(ComputedBuffer):
    """Element ``i`` combines ``body`` at every ``j`` with ``j[dim] <= i[dim]`` (the other dims
    equal): cumsum (``"sum"``), cumprod (``"prod"``), logcumsumexp (``"logsumexp"``).

    ``body`` uses the output's index symbols and is in the scan's compute dtype.
    """
    dim: int = 0
    scan_type: str = "sum"


REDUCTION_TYPES = ("sum", "prod", "max", "min", "any", "all", "argmax", "argmin")


@dataclass(frozen=True)
class ReductionBuffer:
    """Element ``i`` of the output reduces ``body`` over the ``r0, r1, ...`` symbols.

    ``body`` uses the output's index symbols ``i*`` and reduction symbols ``r*`` whose
    ranges are ``reduction_ranges``; values are accumulated in ``body.dtype``.
    """
    name: str
    layout: Layout
    body: Expr
    reduction_ranges: tuple[sympy.Expr, ...]
    reduction_type: str
    # Where the dims come from in the reduced tensor, so the scheduler can line up
    # reductions and pointwise work over the same rows: the source's size, which of its
    # dims are reduced (in ``r0, r1, ...`` order), and per output dim its source dim
    # (None for a kept size-1 dim of keepdim).
    src_size: tuple[sympy.Expr, ...] = ()
    reduced_dims: tuple[int, ...] = ()
    out_dims: tuple[int | None, ...] = ()

    def exprs(self) -> tuple[Expr, ...]:
        return (self.body,)


def reduction_symbols(ndim: int) -> list[sympy.Symbol]:
    return [index_symbol("r", k) for k in range(ndim)]


@dataclass(frozen=True)
class BufferRef:
    """A tensor argument of an extern call: a strided view of a named buffer."""
    name: str
    size: tuple[sympy.Expr, ...]
    stride: tuple[sympy.Expr, ...]
    offset: sympy.Expr
    is_whole: bool  # the view is the buffer itself: no reinterpret needed


@dataclass(frozen=True)
class ExternKernel:
    """A call to an ATen op from the wrapper: a library kernel (mm, conv, sdpa) or a fallback.

    ``args``/``kwargs`` are nested tuples of literals and ``BufferRef``; ``outputs`` are the
    names given to the (possibly several) tensor results, with the layouts eager would give.
    """
    outputs: tuple[str | None, ...]
    layouts: tuple[Layout | None, ...]
    kernel: str            # e.g. "aten.mm.default"
    args: tuple
    kwargs: tuple[tuple[str, Any], ...]
    is_fallback: bool
    tuple_result: bool     # the op returns a tuple (unpack it) rather than one tensor
    binds: str | None = None   # a size symbol set to the op's Python number (.item(): u0)


@dataclass(frozen=True)
class MatmulTemplate:
    """An mm/addmm/bmm ``extern`` computed by kiln's Triton GEMM template instead, with the
    pointwise ``epilogue`` that was its result's only reader fused in before the one store
    (None: the product itself is stored). Chosen per shape by ``codegen.matmul_select``.
    """
    extern: ExternKernel
    epilogue: ComputedBuffer | None = None

    @property
    def name(self) -> str:
        """The buffer written: the epilogue's, else the product's."""
        return self.epilogue.name if self.epilogue is not None else self.extern.outputs[0]

    @property
    def layout(self) -> Layout:
        return self.epilogue.layout if self.epilogue is not None else self.extern.layouts[0]


@dataclass(frozen=True)
class DepthwiseConv:
    """A depthwise conv lowering made a kiln kernel of (``lowering.depthwise``): what the
    library path would compute instead, so codegen can give the kernel that computes it
    that path as its tuning baseline (``codegen.depthwise_baseline``).

    ``key`` names the conv at lowering time (``"depthwise:"`` + a hash of its shapes,
    layout and window), where a tuned config ``{"extern": 1}`` sends it to cuDNN; ``x`` is
    the input as kiln's kernel reads it, ``weight`` the float32 taps-outermost copy it
    reads, ``weight_stride`` the strides the library path's weight has (the graph's, or
    NHWC), ``params`` ``aten.convolution``'s arguments after the bias, ``out`` the layout
    the library conv returns, and ``body`` the window sum (accumulation type) at output
    element ``(i0, i1, i2, i3)``: the expression a kernel computing the conv contains.
    """
    key: str
    x: BufferRef
    weight: BufferRef
    weight_stride: tuple[int, ...]
    params: tuple            # (stride, padding, dilation, transposed, output_padding, groups)
    out: Layout
    body: Expr


Buffer = InputBuffer | ConstantBuffer | ComputedBuffer | ReductionBuffer
Operation = ComputedBuffer | ReductionBuffer | ExternKernel | MatmulTemplate
Kernel = ComputedBuffer | ReductionBuffer   # operations that become Triton kernels
