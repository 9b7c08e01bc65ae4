"""GraphLowering: an ATen FX graph -> kiln IR (buffers and operations), Inductor's design, lean.

GraphLowering is a ``torch.fx.Interpreter`` whose values are lazy ``TensorValue``s instead of
tensors. ``placeholder`` makes input buffers from each node's FakeTensor (sizes and strides as
sympy), ``get_attr`` names constants once (tiny ones become literals), ``call_function`` goes
through the explicit lowering table (or falls back to the ATen op, one warning per op), and
``output`` realizes results with the strides eager would give. Lowerings receive the
GraphLowering as ``ctx``; nothing is global.

Example:
    >>> import torch
    >>> from torch.fx.experimental.proxy_tensor import make_fx
    >>> from compiler.lowering import default_table
    >>> from compiler.config import CompilerOptions
    >>> gm = make_fx(lambda x: (x.relu() * 2,), tracing_mode="fake")(torch.randn(4, 4))
    >>> lowered = GraphLowering(gm, default_table(), CompilerOptions()).lower()
    >>> [type(op).__name__ for op in lowered.operations]
    ['ComputedBuffer']
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import operator
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import sympy
import torch
import torch.fx

from .config import CompilerOptions
from .traffic import load_elements
from .ir import (BufferRef, ComputedBuffer, ConstantBuffer, Const, DepthwiseConv,
                 ExternKernel, InputBuffer,
                 Layout, Load, Op, OpName, ReductionBuffer, TensorValue, contiguous_strides,
                 IndexExpr, count_reads_and_ops, index_symbols, loads_of, walk)
from .lowering import LoweringTable
from .lowering.extern import EXTERN_OPS
from .lowering.common import (SUPPORTED_DTYPES, agree_sizes, channels_last_strides, expand_to,
                              shape_env_of, to_dtype, wrapped_number)
from .lowering.common import sym_size as sym
from .mutation import apply_mutations
from .sizevars import affine_coefficients, free_symbols, index_step

aten = torch.ops.aten
MAX_INLINE_OPS = 256   # bodies past this are realized even with one user: keep kernels sane
MAX_INDEX_OPS = 128    # so are bodies with an index this long in symbolic sizes (below)


SHAPE_ASSERTS = tuple(getattr(torch.ops.aten, name).default for name in (
    "_assert_scalar", "sym_constrain_range_for_size", "sym_constrain_range",
    "_assert_tensor_metadata") if hasattr(torch.ops.aten, name))


class LoweringError(RuntimeError):
    """A graph kiln cannot compile; the message names the node and why."""


class KilnFallbackWarning(UserWarning):
    """An ATen op has no kiln lowering and runs as an eager ATen call from the wrapper."""


@dataclass(frozen=True)
class OutputValue:
    """One graph output: a view of a buffer, or a Python value returned as is."""
    ref: BufferRef | None
    literal: Any = None


@dataclass(frozen=True)
class LoweredGraph:
    """What GraphLowering produces and codegen consumes."""
    inputs: tuple[InputBuffer, ...]
    constants: tuple[ConstantBuffer, ...]
    constant_values: dict        # name -> tensor (kept out of hashing and artifacts)
    operations: tuple            # ComputedBuffer | ExternKernel, in execution order
    outputs: tuple[OutputValue, ...]
    fallback_ops: tuple[str, ...]
    device: str
    size_ranges: dict = dataclasses.field(default_factory=dict)   # size symbol -> (lo, hi)
    depthwise: tuple[DepthwiseConv, ...] = ()   # depthwise convs lowered to kiln kernels


def _finite_bound(bound) -> int | None:
    """An int range bound, or None for an unbounded one. torch's ``int_oo`` claims
    ``is_finite`` (it is an integer to sympy) yet has no int value, so ask ``int``."""
    try:
        return int(bound)
    except (TypeError, ValueError, OverflowError, AttributeError):
        return None


def _wrap_numbers(node: torch.fx.Node, args: tuple, val) -> tuple:
    """``args`` with each Python number (or size) given for a Tensor parameter as a 0-d
    tensor, where no argument is a tensor: ``torch.div(n, 2)`` of an int ``n`` is recorded
    as ``aten.div.Tensor_mode(n, 2)``, eager computes it on wrapped numbers, and the
    lowerings take their tensor from among the arguments (IndexError without one)."""
    if not isinstance(val, torch.Tensor) or any(isinstance(a, TensorValue) for a in args):
        return args
    schema = getattr(node.target, "_schema", None)
    if schema is None:
        return args
    return tuple(wrapped_number(a, val.device.type)
                 if k < len(schema.arguments) and _is_number(a)
                 and isinstance(schema.arguments[k].type, torch.TensorType) else a
                 for k, a in enumerate(args))


def _is_number(value) -> bool:
    return isinstance(value, (bool, int, float)) or (
        isinstance(value, sympy.Expr) and (value.is_integer or value.is_Number))


def _index_outgrown(value: TensorValue) -> bool:
    """Whether an index of ``value`` in symbolic sizes outgrew ``MAX_INDEX_OPS``.

    A reshape keeps a floor and a mod of the whole flat index per dim, which symbolic sizes
    leave uncancelled, so each reshape of a reshape multiplies the index: transformers'
    Funnel shifts its relative positions with three, six-fold each, into a 600 KB kernel.
    Stored, the next view starts again from its buffer's plain index. Static sizes
    simplify those terms away, so only symbolic indices are measured.
    """
    own = set(index_symbols(value.ndim))
    return any(_index_ops(e.index) > MAX_INDEX_OPS for e in walk(value.body)
               if isinstance(e, (Load, IndexExpr)) and not free_symbols(e.index) <= own)


@functools.lru_cache(maxsize=1 << 14)
def _index_ops(index: sympy.Expr) -> int:
    return sympy.count_ops(index)


def _sym_tuple(values) -> tuple[sympy.Expr, ...]:
    return tuple(sym(v) for v in values)


def layout_of(val: torch.Tensor) -> Layout:
    return Layout(val.device.type, val.dtype, _sym_tuple(val.shape), _sym_tuple(val.stride()),
                  sympy.Integer(0))


def is_dense(size, stride) -> bool:
    """Non-overlapping and dense: some permutation of the dims is contiguous.

    Each step takes the dim whose stride is the elements covered so far, an equality that
    holds of symbolic strides as of numbers: a transposed layout with a dynamic batch,
    strides ``(8, 32*s0, 1)``, is dense too (Longformer's as_strided chunks read it).

    >>> is_dense((2, 4, 8), (8, 16, 1)), is_dense((4, 8), (16, 1))
    (True, False)
    """
    dims = [(sz, st) for sz, st in zip(_sym_tuple(size), _sym_tuple(stride)) if sz != 1]
    expected = sympy.Integer(1)
    while dims:
        step = next((d for d in dims if d[1] == expected), None)
        if step is None:
            return False
        dims.remove(step)
        expected = expected * step[0]
    return True


class GraphLowering(torch.fx.Interpreter):
    def __init__(self, gm: torch.fx.GraphModule, lowerings: LoweringTable,
                 options: CompilerOptions, mutated_inputs: dict[int, int] | None = None,
                 target: str | None = None, configs: Mapping | None = None):
        super().__init__(gm, garbage_collect_values=False)
        self.lowerings = lowerings
        self.options = options
        # tuned configs by key: lowering reads the choices keyed by what it lowers
        # (``"depthwise:..."``: ``tuned``); the rest are launch configs by kernel key
        self.configs = configs or {}
        self.depthwise: list[DepthwiseConv] = []
        self.target = target
        self.channels_last = wants_channels_last(gm, options, target)
        # graph output position -> input position whose new value it is (export's buffer
        # mutations); ``copy_`` into a placeholder adds to ``self.mutations`` as it is met
        self.mutated_inputs = dict(mutated_inputs or {})
        self.mutations: list[tuple[InputBuffer, TensorValue]] = []
        self._placeholder_inputs: dict[torch.fx.Node, InputBuffer] = {}
        self.size_ranges: dict[sympy.Symbol, tuple[int, int | None]] = {}
        self.node: torch.fx.Node | None = None
        self.inputs: list[InputBuffer] = []
        self.constants: list[ConstantBuffer] = []
        self.constant_values: dict[str, torch.Tensor] = {}
        self._constant_names: dict[int, str] = {}
        self.operations: list = []
        self.outputs: list[OutputValue] = []
        self.fallback_ops: list[str] = []
        self.device: str | None = None
        self._names = itertools.count()
        self._layouts: dict[str, Layout] = {}   # every buffer's layout, by name
        # computed values realized for an extern call, by (value, strides): an equal value
        # handed to several calls (T5's position bias, one per layer's attention) is stored once
        self._realized: dict[tuple, BufferRef] = {}

    # ------------------------------------------------------------------ driving
    def lower(self) -> LoweredGraph:
        placeholders = [n for n in self.module.graph.nodes if n.op == "placeholder"]
        self.run(*[None] * len(placeholders))
        return LoweredGraph(tuple(self.inputs), tuple(self.constants), self.constant_values,
                            tuple(self.operations), tuple(self.outputs),
                            tuple(self.fallback_ops), self.device or "cpu", self.size_ranges,
                            tuple(self.depthwise))

    def run_node(self, n: torch.fx.Node):
        self.node = n
        try:
            result = super().run_node(n)
        except (LoweringError, NotImplementedError):
            raise
        except Exception as exc:
            raise LoweringError(f"lowering node {n.name} ({n.format_node()}) failed: "
                                f"{type(exc).__name__}: {exc}") from exc
        if isinstance(result, TensorValue):
            result = self._maybe_realize_shared(n, _without_elements(result))
        elif isinstance(result, tuple):
            result = tuple(_without_elements(v) if isinstance(v, TensorValue) else v
                           for v in result)
        return result

    def _maybe_realize_shared(self, n, value: TensorValue) -> TensorValue:
        """Values read by several consumers are recomputed in each only while cheap, and
        stored once where two library calls read them (each would store its own copy)."""
        reads, ops = count_reads_and_ops(value.body)
        heavy = reads > self.options.inline_max_reads or ops > self.options.inline_max_ops
        shared = len(n.users) > 1 and (heavy or (_library_reads(n) > 1
                                                 and self._as_ref(value) is None))
        if ops > MAX_INLINE_OPS or shared or _index_outgrown(value):
            narrow = _widened(value)
            if narrow is not None:     # store the half value; readers widen it for free
                return to_dtype(self.realize(narrow, n), value.dtype, *value.body.params)
            return self.realize(value, n)
        return value

    # ------------------------------------------------------------------ context for lowerings
    def meta_val(self, node: torch.fx.Node | None = None):
        return (node or self.node).meta.get("val")

    def _shape_env(self):
        """The ShapeEnv that decided this node's sizes (None where none did)."""
        val = self.meta_val()
        tensors = [v for v in (val if isinstance(val, (tuple, list)) else (val,))
                   if isinstance(v, torch.Tensor)]
        return shape_env_of(tensors[0]) if tensors else None

    def meta_size(self, node: torch.fx.Node | None = None) -> tuple[sympy.Expr, ...]:
        return _sym_tuple(self.meta_val(node).shape)

    def tuned(self, key: str) -> Mapping | None:
        """The tuned config recorded under ``key`` (a choice lowering makes, such as a
        depthwise conv's ``{"extern": 1}``), or None."""
        return self.configs.get(key)

    def index_symbols(self, ndim: int):
        return index_symbols(ndim)

    def new_name(self, prefix: str) -> str:
        return f"{prefix}{next(self._names)}"

    def realize(self, value: TensorValue, node: torch.fx.Node | None = None,
                stride: tuple | None = None) -> TensorValue:
        """Store ``value`` in a new buffer: with ``stride`` if given, else eager's strides for
        ``node`` when dense, else contiguous."""
        size = value.size
        val = self.meta_val(node) if node is not None and stride is None else None
        if stride is None and self.channels_last and len(size) == 4:
            # conv graph: keep activations NHWC; a value already in NHWC order (a permute to
            # (N, H, W, C)) row major. Eager's strides, from a capture of NCHW inputs, are not
            # the storage order here.
            stride = (contiguous_strides(size) if _reads_along_last_dim(value)
                      else channels_last_strides(size))
            val = None
        if stride is None:
            stride = contiguous_strides(size)
        if isinstance(val, torch.Tensor) and tuple(_sym_tuple(val.shape)) == tuple(size) \
                and is_dense(val.shape, val.stride()):
            stride = _sym_tuple(val.stride())
        layout = Layout(value.device, value.dtype, tuple(size), stride)
        return self.append_buffer(ComputedBuffer(self.new_name("buf"), layout, value.body))

    def realize_reduction(self, size, body, reduction_ranges, rtype, dtype, device,
                          src_size=(), reduced_dims=(), out_dims=()) -> TensorValue:
        """A new ReductionBuffer (contiguous output) holding ``rtype`` of ``body``."""
        layout = Layout(device, dtype, tuple(size), contiguous_strides(size))
        return self.append_buffer(ReductionBuffer(
            self.new_name("buf"), layout, body, tuple(reduction_ranges), rtype, tuple(src_size),
            tuple(reduced_dims), tuple(out_dims)))

    def append_buffer(self, buf: ComputedBuffer | ReductionBuffer) -> TensorValue:
        """Append a buffer a lowering built itself (a scan, a scatter's copy) and load it.
        A buffer of no elements is only allocated: there is nothing for a kernel to compute
        (and a kernel over a zero-size dim would divide by it to index)."""
        if _static_numel(buf.layout.size) == 0:
            self.operations.append(_allocation(buf.name, buf.layout))
        else:
            self.operations.append(buf)
        return self._load_buffer(buf.name, buf.layout)

    def mutated_input(self, node: torch.fx.Node) -> tuple[InputBuffer, torch.fx.Node] | None:
        """For a placeholder the graph writes back into (a ``copy_`` into it, or one of
        export's mutated buffers): its input buffer and the node computing its new value."""
        buf = self._placeholder_inputs.get(node)
        if buf is None:
            return None
        for user in node.users:
            if user.target is torch.ops.aten.copy_.default and user.args[0] is node:
                return buf, user.args[1]
        position = self.inputs.index(buf)
        output = next(n for n in self.module.graph.nodes if n.op == "output")
        for k, pos in self.mutated_inputs.items():
            if pos == position:
                return buf, _as_list(output.args[0])[k]
        return None

    @property
    def target_device(self) -> str:
        """The device the module is lowered for: the target, else where the graph's inputs
        live. Device-specific rules (cuDNN's layouts, CUDA's half rounding) follow it, not
        the device capture traced on (always the CPU: ``capture_device``)."""
        return self.target or self.device or "cpu"

    def eager_layout(self, node: torch.fx.Node | None = None) -> Layout:
        """The layout eager gives ``node``'s result when dense, else a contiguous one."""
        val = self.meta_val(node)
        if is_dense(val.shape, val.stride()):
            return layout_of(val)
        size = _sym_tuple(val.shape)
        return Layout(val.device.type, val.dtype, size, contiguous_strides(size))

    def buffer_ref_with_strides(self, value: TensorValue, stride: tuple) -> BufferRef:
        """``value`` as a view of a buffer with exactly ``stride`` (copied there if need be)."""
        ref = self._as_ref(value)
        if ref is not None and all(sz == 1 or a == b for sz, a, b in zip(ref.size, ref.stride, stride)):
            return ref
        key = (value, tuple(stride))
        try:
            done = self._realized.get(key)
        except TypeError:        # a body holding something unhashable: realized each time
            return self._as_ref(self.realize(value, stride=tuple(stride)))
        if done is None:
            done = self._realized[key] = self._as_ref(self.realize(value, stride=tuple(stride)))
        return done

    def storage_ref(self, value: TensorValue, node: torch.fx.Node) -> BufferRef:
        """``value`` as a view with eager's strides for ``node`` where those are dense: an op
        that reads storage (as_strided) addresses it by eager's layout, which a computed
        value realized row-major would not have (Longformer's overlapping chunks of a
        transposed, scaled query)."""
        val = self.meta_val(node)
        if isinstance(val, torch.Tensor) and tuple(_sym_tuple(val.shape)) == tuple(value.size) \
                and is_dense(val.shape, val.stride()):
            return self.buffer_ref_with_strides(value, _sym_tuple(val.stride()))
        return self.buffer_ref(value, node)

    def passed_stride(self, ref: BufferRef) -> tuple:
        """The strides of the tensor the wrapper hands an extern call for ``ref``: the
        buffer's own where the view is the whole buffer (size-1 dims included), else the
        view's."""
        return tuple(self._layouts[ref.name].stride) if ref.is_whole else tuple(ref.stride)

    def buffer_ref(self, value: TensorValue, node: torch.fx.Node | None = None) -> BufferRef:
        """``value`` as a strided view of a buffer, realizing it first if it is computed."""
        ref = self._as_ref(value)
        if ref is None:
            realized = self.realize(value, node)
            ref = self._as_ref(realized)
            if node is not None and self.env.get(node) is value and \
                    _reads_fewer_bytes(realized, value):
                self.env[node] = realized   # later consumers load it instead of recomputing
        return ref

    def strided_view(self, value: TensorValue) -> BufferRef | None:
        """``value`` as a strided view of a buffer; None where it is computed (nothing is
        realized: a lowering asks how its operand is laid out before choosing a form)."""
        return self._as_ref(value)

    def _as_ref(self, value: TensorValue) -> BufferRef | None:
        body = value.body
        if not isinstance(body, Load) or body.dtype != value.dtype:
            return None
        if {sym for sym, _ in body.indirect} & sympy.sympify(body.index).free_symbols:
            return None   # a gather: its offset depends on loaded data, not a strided view
        coeffs = affine_coefficients(body.index, index_symbols(value.ndim))
        if coeffs is None:
            return None
        offset, stride = coeffs
        stride = tuple(sympy.Integer(0) if sz == 1 else st for sz, st in zip(value.size, stride))
        layout = self._layouts.get(body.buffer)
        whole = (layout is not None and offset == 0 and tuple(layout.size) == tuple(value.size)
                 and all(sz == 1 or st == lst for sz, st, lst in
                         zip(value.size, stride, layout.stride)))
        return BufferRef(body.buffer, tuple(value.size), stride, offset, whole)

    def _load_buffer(self, name: str, layout: Layout) -> TensorValue:
        self._layouts[name] = layout
        idx = index_symbols(len(layout.size))
        return TensorValue(layout.dtype, layout.device, tuple(layout.size),
                           Load(name, layout.index(idx), layout.dtype))

    def call_extern(self, args, kwargs, is_fallback: bool, out_stride: tuple | None = None):
        """Run the current node's ATen op from the wrapper on realized buffers.

        ``out_stride``: the strides the op returns when they differ from the graph's
        (a convolution run channels-last returns channels-last).
        """
        node = self.node
        ref_args = self._refs(node.args, args)
        ref_kwargs = tuple((k, self._refs(node.kwargs[k], v)) for k, v in kwargs.items())
        val = self.meta_val()
        vals = list(val) if isinstance(val, (tuple, list)) else [val]
        for v in vals:   # a size the op's data decides (nonzero's u0): the module is dynamic
            if isinstance(v, torch.Tensor):
                self._note_ranges(v)
        names = tuple(self.new_name("buf") if isinstance(v, torch.Tensor) else None for v in vals)
        layouts = tuple(layout_of(v) if isinstance(v, torch.Tensor) else None for v in vals)
        if out_stride is not None:
            layouts = (dataclasses.replace(layouts[0], stride=tuple(out_stride)),) + layouts[1:]
        self.operations.append(ExternKernel(names, layouts, _op_path(node.target), ref_args,
                                            ref_kwargs, is_fallback,
                                            isinstance(val, (tuple, list))))
        results = [self._load_buffer(n, l) if n is not None else None
                   for n, l in zip(names, layouts)]
        return tuple(results) if isinstance(val, (tuple, list)) else results[0]

    def call_library(self, target, refs: tuple, layout: Layout) -> TensorValue:
        """Run ATen's ``target`` from the wrapper on ``refs`` (views of realized buffers),
        for an op the graph does not name: a lowering computing its node another way (a
        1x1 conv as ``aten.mm``). Its one result has ``layout``."""
        name = self.new_name("buf")
        self.operations.append(ExternKernel((name,), (layout,), _op_path(target), tuple(refs),
                                            (), False, False))
        return self._load_buffer(name, layout)

    def _refs(self, node_arg, value):
        if isinstance(value, BufferRef):
            return value            # a lowering already chose this view
        if isinstance(value, TensorValue):
            return self.buffer_ref(value, node_arg if isinstance(node_arg, torch.fx.Node) else None)
        if isinstance(value, (list, tuple)):
            # a lowering may pass a list of another length than the node's (a conv's one
            # padding given per dim): zip would drop its tail
            same = isinstance(node_arg, (list, tuple)) and len(node_arg) == len(value)
            node_args = node_arg if same else [None] * len(value)
            return tuple(self._refs(a, v) for a, v in zip(node_args, value))
        return value

    # ------------------------------------------------------------------ fx.Interpreter overrides
    def placeholder(self, target, args, kwargs):
        val = self.meta_val()
        if isinstance(val, torch.SymInt):
            # a size input (dynamo's): sympy, as every size node is here; the SymInt
            # itself would specialise the graph to the example's value wherever a lowering
            # takes int() of it (a guard the ShapeEnv records, no error)
            return sym(val)
        if not isinstance(val, torch.Tensor):
            return val
        self._note_ranges(val)
        _check_dtype(self.node, val)
        layout = layout_of(val)
        self.device = self.device or layout.device
        name = f"arg{len(self.inputs)}"
        self.inputs.append(InputBuffer(name, layout))
        self._placeholder_inputs[self.node] = self.inputs[-1]
        return self._load_buffer(name, layout)

    def _note_ranges(self, val: torch.Tensor) -> None:
        """Record each size symbol's allowed range (from the ShapeEnv) for input checks."""
        for size in val.shape:
            if isinstance(size, torch.SymInt):
                expr = size.node.expr
                ranges = size.node.shape_env.var_to_range
                for s in expr.free_symbols:
                    r = ranges.get(s)
                    hi = None if r is None else _finite_bound(r.upper)
                    self.size_ranges[s] = (int(r.lower) if r is not None else 0, hi)

    def get_attr(self, target, args, kwargs):
        value = super().get_attr(target, args, kwargs)
        if not isinstance(value, torch.Tensor):
            return value
        _check_dtype(self.node, value)
        if value.numel() <= self.options.inline_constant_numel and value.numel() == 1:
            body = Const(value.item(), value.dtype)
            scalar = TensorValue(value.dtype, value.device.type, (), body)
            return expand_to(scalar, _sym_tuple(value.shape))
        name = self._constant_names.get(id(value))
        if name is None:
            name = f"const{len(self.constants)}"
            self._constant_names[id(value)] = name
            self.constants.append(ConstantBuffer(name, layout_of(value)))
            self.constant_values[name] = value
        layout = next(c.layout for c in self.constants if c.name == name)
        return self._load_buffer(name, layout)

    def call_function(self, target, args, kwargs):
        if target is operator.getitem and isinstance(args[0], (tuple, list)):
            return args[0][args[1]]
        val = self.meta_val()
        if target is torch.ops.aten._local_scalar_dense.default:
            return self.bind_item(args[0], val)
        if isinstance(val, (torch.SymInt, int)) and not isinstance(val, bool):
            return sym(val)          # size arithmetic (sym_size, mul of sizes): just sympy
        if isinstance(val, torch.SymBool):
            return val.node.expr     # a size comparison (u0 >= 0) that only feeds an assert
        if target in SHAPE_ASSERTS:
            return None              # export's runtime asserts: the input checks cover them
        foreign = _foreign_dtype(self.node)
        if foreign is not None:      # complex (an FFT's result): ATen computes it, not kernels
            return self.fallback(target, args, kwargs, why=f"it computes in {foreign}")
        if target is torch.ops.aten.copy_.default and self.node.args[0] in self._placeholder_inputs:
            self.mutations.append((self._placeholder_inputs[self.node.args[0]], args[1]))
            return args[1]
        if _only_empty_tensors(val):   # nothing to compute: no lowering, no fallback either
            return _empty_values(val)
        if _binds_sizes(self.node):   # a size from a .item() value (a slice at u0:u1): ATen
            return self.fallback(target, args, kwargs)   # makes it, the wrapper reads it
        lowering = self.lowerings.lookup(target)
        if lowering is not None and lowering.applies(self.node):
            args = _wrap_numbers(self.node, agree_sizes(args, self._shape_env()), val)
            return lowering.fn(self, *args, **kwargs)
        return self.fallback(target, args, kwargs)

    def bind_item(self, tensor, val):
        """``.item()`` of a tensor: a Python number the wrapper reads once the tensor is
        computed, bound to its symbol (``u0 = ...``) for the sizes and kernels after it.
        (Left as a bare symbol, nothing ever set it: a NameError at the first call.)"""
        if not isinstance(val, torch.SymInt):
            raise LoweringError(f"node {self.node.name}: .item() of a float or bool tensor "
                                f"used as a Python number")
        symbol = sym(val)
        r = val.node.shape_env.var_to_range.get(symbol)   # recorded: the module is dynamic
        self.size_ranges[symbol] = (None, None) if r is None else (
            _finite_bound(r.lower), _finite_bound(r.upper))
        ref = self._refs(self.node.args[0], tensor)
        self.operations.append(ExternKernel((None,), (None,), _op_path(self.node.target),
                                            (ref,), (), False, False, binds=str(symbol)))
        return symbol

    def fallback(self, target, args, kwargs, why: str = "no lowering"):
        if not isinstance(target, torch._ops.OpOverload):
            raise LoweringError(f"node {self.node.name}: cannot lower or fall back for "
                                f"{target!r} (not an ATen op)"
                                + ("" if why == "no lowering" else f"; {why}"))
        name = _op_path(target)
        if name not in self.fallback_ops:
            self.fallback_ops.append(name)
            reason = "no lowering" if why == "no lowering" else f"{why}, which kernels do not"
            warnings.warn(f"kiln: {reason} for {name}; it runs as an ATen fallback",
                          KilnFallbackWarning, stacklevel=2)
        return self.call_extern(args, kwargs, is_fallback=True)

    def call_method(self, target, args, kwargs):
        raise LoweringError(f"node {self.node.name}: call_method {target} in an ATen graph")

    def call_module(self, target, args, kwargs):
        raise LoweringError(f"node {self.node.name}: call_module {target} in an ATen graph")

    def output(self, target, args, kwargs):
        pairs = list(zip(_as_list(self.node.args[0]), _as_list(args[0])))
        outputs: list[OutputValue | None] = [None] * len(pairs)
        for k, (node_arg, value) in enumerate(pairs):   # every read of old values first
            if k not in self.mutated_inputs:
                outputs[k] = self._output_value(node_arg, value)
        mutations = list(self.mutations)
        for k, position in self.mutated_inputs.items():
            target = self.inputs[position]
            mutations.append((target, pairs[k][1]))
            lay = target.layout
            outputs[k] = OutputValue(BufferRef(target.name, lay.size, lay.stride, lay.offset, True))
        apply_mutations(self, mutations)
        self.outputs = outputs
        return args[0]

    def _output_value(self, node_arg, value) -> OutputValue:
        if not isinstance(value, TensorValue):
            return OutputValue(None, value)
        val = self.meta_val(node_arg)
        want = _sym_tuple(val.stride())
        ref = self._as_ref(value)
        fresh_in_eager = ref is not None and ref.name in {b.name for b in self.inputs} \
            and _returns_new_tensor(node_arg)
        if ref is None or fresh_in_eager or \
                not all(sz == 1 or a == b for sz, a, b in zip(ref.size, ref.stride, want)):
            eager = want if is_dense(val.shape, val.stride()) else None
            ref = self._as_ref(self.realize(value, node_arg, stride=eager))
        return OutputValue(ref)


def _static_numel(size) -> int | None:
    """The number of elements, when every size is known at compile time. (nonzero's result
    of size (u0, 0) is empty too, but only the op knows its shape: it stays the op's.)"""
    size = [sympy.sympify(s) for s in size]
    return int(sympy.Mul(*size)) if all(s.is_Integer for s in size) else None


# Ops that only re-index their input, and the library calls that read a realized buffer:
# a value that two library calls read (T5's normalized hidden state, viewed as 2-D by each
# of its q, k and v projections) is stored once, as Inductor's realized storage is shared by
# its views, not once per call.
_RESHAPES = frozenset(getattr(aten, n) for n in (
    "view", "_unsafe_view", "reshape", "unsqueeze", "squeeze", "flatten", "unflatten",
    "permute", "t", "transpose", "expand", "alias"))
_LIBRARY_CALLS = frozenset(op.overloadpacket for op in EXTERN_OPS) | {aten.convolution}


def _library_reads(node: torch.fx.Node) -> int:
    """How many library calls read ``node``'s value, directly or through re-indexing ops."""
    count = 0
    for user in node.users:
        packet = getattr(user.target, "overloadpacket", None)
        if packet in _RESHAPES and user.args and user.args[0] is node:
            count += _library_reads(user)
        elif packet in _LIBRARY_CALLS:
            count += 1
    return count


def _without_elements(value: TensorValue) -> TensorValue:
    """A value of no elements reads nothing: its body becomes a constant, so no load of an
    empty buffer and no index arithmetic over a zero-size dim survives into a kernel.

    >>> v = TensorValue(torch.float32, "cpu", (sympy.Integer(0), sympy.Integer(3)),
    ...                 Load("arg0", sympy.Symbol("i1"), torch.float32))
    >>> _without_elements(v).body
    Const(value=0, dtype=torch.float32)
    """
    if _static_numel(value.size) == 0 and not isinstance(value.body, Const):
        return TensorValue(value.dtype, value.device, value.size, Const(0, value.dtype))
    return value


def _binds_sizes(node: torch.fx.Node) -> bool:
    """Whether the node's result has sizes export could only name (unbacked symbols bound
    here, as a slice whose ends came from ``.item()``): kiln's views cannot say them."""
    val = node.meta.get("val")
    return isinstance(val, torch.Tensor) and bool(node.meta.get("unbacked_bindings"))


def _only_empty_tensors(val) -> bool:
    """A node's result is one or more tensors, each of no elements (static sizes)."""
    vals = list(val) if isinstance(val, (tuple, list)) else [val]
    return all(isinstance(v, torch.Tensor) and _static_numel(_sym_tuple(v.shape)) == 0
               for v in vals)


def _empty_values(val):
    """The lazy values of a result of no elements: constants of its dtypes and sizes (an
    op over nothing may still divide by zero or index a zero-size dim at compile time)."""
    def empty(v):
        return TensorValue(v.dtype, v.device.type, _sym_tuple(v.shape), Const(0, v.dtype))
    return tuple(empty(v) for v in val) if isinstance(val, (tuple, list)) else empty(val)


def _allocation(name: str, layout: Layout) -> ExternKernel:
    """``torch.empty_strided`` for a buffer of no elements (no kernel, no fallback)."""
    args = (tuple(layout.size), tuple(layout.stride))
    kwargs = (("dtype", layout.dtype), ("device", torch.device(layout.device)))
    return ExternKernel((name,), (layout,), "aten.empty_strided.default", args, kwargs,
                        is_fallback=False, tuple_result=False)


_HALF = (torch.float16, torch.bfloat16)
_WIDE = (torch.float32, torch.float64)


def _widened(value: TensorValue) -> TensorValue | None:
    """The half-precision value that ``value`` only widens (a norm's ``x.float()`` of a
    bfloat16 activation), or None. Storing that and widening in each reader gives the same
    numbers (widening is exact) for half the bytes written and read back."""
    body = value.body
    if not (isinstance(body, Op) and body.op == OpName.TO_DTYPE and value.dtype in _WIDE):
        return None
    inner = body.args[0]
    if inner.dtype not in _HALF:
        return None
    return dataclasses.replace(value, dtype=inner.dtype, body=inner)


def _reads_fewer_bytes(realized: TensorValue, value: TensorValue) -> bool:
    """Is loading the realized buffer no more traffic than recomputing ``value`` from its
    inputs? (A residual stream realized for a convolution: yes. A broadcast expanded for an
    extern: no, its source is smaller than the buffer.)"""
    ranges = dict(zip(index_symbols(value.ndim), value.size))
    recompute = 0
    for load in loads_of(value.body):
        elements = load_elements(load.index, ranges)
        if elements is None or load.indirect:
            return False
        recompute += elements * load.dtype.itemsize
    numel = sympy.Mul(*value.size)
    return numel.is_Integer and int(numel) * realized.dtype.itemsize <= recompute


def _returns_new_tensor(node) -> bool:
    """Eager gives this node's output its own storage (a *_copy, clone, a computation): the
    compiled module must not hand back a view of an input there."""
    target = getattr(node, "target", None)
    if not isinstance(target, torch._ops.OpOverload):
        return False     # a placeholder or getitem returns what eager returns: maybe a view
    returns = target._schema.returns
    return bool(returns) and returns[0].alias_info is None


def wants_channels_last(gm: torch.fx.GraphModule, options: CompilerOptions,
                        target: str | None) -> bool:
    """Run convolutions channels-last? cuDNN's fast bf16/fp16 kernels are NHWC: on a conv
    graph, NCHW costs a transpose before and after every conv. Not on CPU (interpreter
    target), not for 1-d/3-d convs, and in "auto" only for half-type convs when some conv
    is dense and wide (grouped or tiny-channel convs gain little and pay the copies)."""
    if options.channels_last == "off":
        return False
    convs = [n for n in gm.graph.nodes if n.target is torch.ops.aten.convolution.default]
    if not convs or any(n.args[1].meta["val"].dim() != 4 for n in convs):
        return False
    if options.channels_last == "on":   # any target: how CI checks this path on CPU
        return True
    # float32 stays NCHW: there cuDNN's NHWC kernels are TF32 ones (under torch's default
    # allow_tf32), 1e-4 off eager; the NHWC gain is the half types' tensor-core kernels
    half = all(n.args[1].meta["val"].dtype in (torch.float16, torch.bfloat16) for n in convs)
    return target == "cuda" and half and any(
        n.args[8] == 1 and n.args[1].meta["val"].shape[1] >= 16 for n in convs)


def _op_path(target) -> str:
    return f"{target.namespace}.{target._schema.name.split('::')[-1]}.{target._overloadname}"


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _tensor_vals(node):
    val = node.meta.get("val")
    vals = val if isinstance(val, (list, tuple)) else [val]
    return [v for v in vals if isinstance(v, torch.Tensor)]


def _foreign_dtype(node) -> torch.dtype | None:
    """A dtype kernels do not compute in (complex), among the tensors ``node`` reads or
    returns: such a node runs as its ATen op, so only the wrapper ever holds those values
    (graph inputs of such dtypes are still refused, at the placeholder)."""
    for n in [node, *node.all_input_nodes]:
        for v in _tensor_vals(n):
            if v.dtype not in SUPPORTED_DTYPES:
                return v.dtype
    return None


def _check_dtype(node, val):
    if val.dtype not in SUPPORTED_DTYPES:
        raise LoweringError(
            f"node {node.name} ({node.format_node()}) has dtype {val.dtype}, which kiln does not "
            f"support; supported: {', '.join(sorted(str(d) for d in SUPPORTED_DTYPES))}")


def _reads_along_last_dim(value: TensorValue) -> bool:
    """Whether a 4-d value's loads are contiguous along its last dim and none along dim 1:
    its dims are already in storage order (an NHWC activation permuted to (N, H, W, C) for a
    LayerNorm, an attention tensor), where channels-last strides would put dim 1 innermost
    and make every load of the kernel computing it a gather."""
    i = index_symbols(4)
    zero = dict.fromkeys(i, 0)
    steps = [(index_step(ld.index, i[3], zero), index_step(ld.index, i[1], zero))
             for ld in loads_of(value.body) if not ld.indirect]
    return any(last == 1 for last, _ in steps) and not any(dim1 == 1 for _, dim1 in steps)

