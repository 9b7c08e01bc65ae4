"""Pooling and resampling lowerings: max/avg pooling (2-D, 3-D), adaptive average/max pooling,
nearest and bilinear upsampling, all matching eager's CPU and CUDA kernels element for element.

A pooling window is unrolled: output element ``o`` reads input ``start(o) + k * dilation`` for
each tap ``k`` of each spatial axis, in eager's row-major window order. Taps that can fall
outside the input (padding, ``ceil_mode``, uneven adaptive windows) are masked loads, so no
load leaves its buffer. Max pooling chains NaN-propagating maxima and keeps the index of the
element eager would pick (the first maximum, the last NaN); average pooling sums in eager's
order and divides by eager's per-window count. Adaptive average pooling with windows too big
to unroll becomes a sum reduction over a (masked) window view. Resampling computes source
indices and weights in float32 in the kernel with eager's formulas, then loads the sources.

Example:
    >>> import torch
    >>> torch.ops.aten.max_pool2d_with_indices.default in REGISTRY.entries()
    True
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import sympy
import torch

from ..ir import Const, Expr, IndexExpr, Load, TensorValue, index_symbols
from ..sizevars import FloorDiv
from .registry import Registry
from .common import SUPPORTED_DTYPES, cast_expr, sym_size
from .indexing import _gather_load, masked
from .pointwise import make_op
from .reduction import reduce

aten = torch.ops.aten
REGISTRY = Registry("pooling")

# Windows with more taps than this are not unrolled (a chain of this many loads and ops is
# still a reasonable kernel; ResNet's 3x3 and 7x7 windows fit).
MAX_WINDOW = 49
I64 = torch.int64


# ----------------------------------------------------------------------------- expr helpers
def _i(expr) -> Expr:
    return IndexExpr(sympy.sympify(expr))


def _c(value: int) -> Expr:
    return Const(int(value), I64)


def _op(name: str, *args: Expr, dtype=None) -> Expr:
    return make_op(name, args, dtype or args[0].dtype)


def _cmp(name: str, a: Expr, b: Expr) -> Expr:
    return make_op(name, (a, b), torch.bool)


def _all(conds) -> Expr | None:
    conds = [c for c in conds if c is not None]
    out = conds[0] if conds else None
    for c in conds[1:]:
        out = make_op("logical_and", (out, c), torch.bool)
    return out


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Eager accumulates half types in float32 (opmath), others in their own type."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _floordiv(a, b: int):
    """``a // b`` on ints (static analysis) and on sympy indices (kernel expressions)."""
    return a // b if isinstance(a, int) else FloorDiv(a, b)


# ----------------------------------------------------------------------------- windows
@dataclass(frozen=True)
class Axis:
    """One spatial dim of a window: output ``o`` reads ``start(o) + k * dilation``, k < taps.

    ``start`` and ``end`` work on ints (to analyse every window statically) and on sympy
    index symbols (to build kernel expressions); a tap is valid where ``0 <= index <
    min(size, end(o))``. ``end`` is None for plain pooling (windows end at the input's edge).
    """
    size: int
    out: int
    taps: int
    dilation: int
    start: Callable
    end: Callable | None = None

    def index(self, o, k):
        return self.start(o) + k * self.dilation

    def hi(self, o) -> int:
        return self.size if self.end is None else min(self.size, self.end(o))

    def tap_checks(self, k) -> tuple[bool, bool, bool]:
        """(needs a lower-bound check, needs an upper-bound check, valid somewhere)."""
        idx = [(self.index(o, k), self.hi(o)) for o in range(self.out)]
        lo = any(i < 0 for i, _ in idx)
        hi = any(i >= h for i, h in idx)
        return lo, hi, any(0 <= i < h for i, h in idx)

    def cond(self, o_sym, k) -> Expr | None:
        """Where tap ``k`` of window ``o_sym`` lies inside the input (None: always)."""
        lo, hi, _ = self.tap_checks(k)
        return self._inside(o_sym, k, lo, hi)

    def any_tap_cond(self, o_sym, k_sym) -> Expr | None:
        """``cond`` for a tap number ``k_sym`` that takes every value (a loop's counter):
        each side checked where any tap can leave the input there."""
        checks = [self.tap_checks(k) for k in range(self.taps)]
        return self._inside(o_sym, k_sym, any(c[0] for c in checks), any(c[1] for c in checks))

    def _inside(self, o_sym, k, lo: bool, hi: bool) -> Expr | None:
        idx = _i(self.index(o_sym, k))
        parts = [_cmp("ge", idx, _c(0)) if lo else None]
        if hi:
            bound = _c(self.size) if self.end is None else _i(self.end(o_sym))
            parts.append(_cmp("lt", idx, bound))
        return _all(parts)

    def live_taps(self) -> list[int]:
        return [k for k in range(self.taps) if self.tap_checks(k)[2]]


def pool_axes(in_sizes, out_sizes, kernel, stride, padding, dilation) -> list[Axis]:
    return [Axis(int(n), int(o), k, d, lambda o, s=s, p=p: o * s - p)
            for n, o, k, s, p, d in zip(in_sizes, out_sizes, kernel, stride, padding, dilation)]


def adaptive_axes(in_sizes, out_sizes) -> list[Axis]:
    """Eager's adaptive windows: [floor(o * I / O), ceil((o + 1) * I / O))."""
    axes = []
    for n, o_size in zip(in_sizes, out_sizes):
        n, o_size = int(n), int(o_size)
        start = lambda o, n=n, m=o_size: _floordiv(o * n, m)
        end = lambda o, n=n, m=o_size: _floordiv((o + 1) * n + m - 1, m)
        taps = max(end(o) - start(o) for o in range(o_size))
        axes.append(Axis(n, o_size, taps, 1, start, end))
    return axes


@dataclass(frozen=True)
class Tap:
    value: Expr          # the input element (masked loads read ``other`` outside the input)
    flat: Expr           # its flat index in the input plane (h * W + w), as eager reports it
    valid: Expr | None   # where it lies inside the input (None: always)
    ks: tuple = ()       # its position in the window, one tap number per axis


def window_taps(x: TensorValue, axes: list[Axis], out_syms, other) -> list[Tap]:
    """Every tap of the window at output ``out_syms``, in eager's row-major window order."""
    lead = list(index_symbols(x.ndim - len(axes)))
    plane = [int(np.prod([a.size for a in axes[d + 1:]], dtype=np.int64)) for d in range(len(axes))]
    taps = []
    for ks in itertools.product(*[a.live_taps() for a in axes]):
        idx = [a.index(o, k) for a, o, k in zip(axes, out_syms, ks)]
        valid = _all([a.cond(o, k) for a, o, k in zip(axes, out_syms, ks)])
        value = x.load(lead + idx)
        if valid is not None:
            value = masked(valid, value, other)
        flat = _i(sum((i * p for i, p in zip(idx, plane)), sympy.Integer(0)))
        taps.append(Tap(value, flat, valid, ks))
    return taps


def _window_size(axes: list[Axis]) -> int:
    return int(np.prod([len(a.live_taps()) for a in axes]))


def _materialized(ctx, x: TensorValue) -> TensorValue:
    """Windows overlap, so each input element is read by several taps: a computed producer
    is stored once rather than recomputed per tap."""
    if isinstance(x.body, Load):
        return x
    return ctx.realize(x)


def _out(ctx):
    """(dtype, device, size) of the node's (first) output; leading dims may be symbolic."""
    val = ctx.meta_val()
    val = val[0] if isinstance(val, (tuple, list)) else val
    return val.dtype, val.device.type, tuple(sym_size(s) for s in val.shape)


# ----------------------------------------------------------------------------- supports
def _static_float_input(node, n: int) -> bool:
    """A float input whose ``n`` spatial (last) dims, and its outputs', are known and
    non-empty: windows and source indices are worked out on ints. The leading dims only
    pass through as index symbols, so they may be dynamic (a CNN served at any batch)."""
    x = node.args[0].meta.get("val") if isinstance(node.args[0], torch.fx.Node) else None
    out = node.meta.get("val")
    outs = out if isinstance(out, (tuple, list)) else [out]
    if not (isinstance(x, torch.Tensor) and x.dtype.is_floating_point
            and x.dtype in SUPPORTED_DTYPES and x.ndim >= n):
        return False
    spatial = [s for t in [x, *outs] for s in t.shape[-n:]]
    lead = [s for s in x.shape[:-n] if not isinstance(s, torch.SymInt)]
    return all(isinstance(s, int) and s > 0 for s in spatial) and all(s > 0 for s in lead)


def _as_tuple(value, n: int, default=None) -> tuple[int, ...]:
    if value is None or (isinstance(value, (list, tuple)) and len(value) == 0):
        return default
    value = [value] if isinstance(value, int) else list(value)
    return tuple(int(v) for v in (value * n if len(value) == 1 else value))


def _pool_params(node, n: int, has_dilation: bool):
    args = list(node.args) + [None] * 8
    kernel = _as_tuple(node.kwargs.get("kernel_size", args[1]), n)
    stride = _as_tuple(node.kwargs.get("stride", args[2]), n, kernel)
    padding = _as_tuple(node.kwargs.get("padding", args[3]), n, (0,) * n)
    dilation = _as_tuple(node.kwargs.get("dilation", args[4]), n, (1,) * n) if has_dilation \
        else (1,) * n
    return kernel, stride, padding, dilation


def _pool_axes_of(node, n: int, has_dilation: bool) -> list[Axis]:
    kernel, stride, padding, dilation = _pool_params(node, n, has_dilation)
    x = node.args[0].meta["val"]
    out = node.meta["val"]
    out = out[0] if isinstance(out, (tuple, list)) else out
    return pool_axes(x.shape[-n:], out.shape[-n:], kernel, stride, padding, dilation)


def _small_window(n: int, has_dilation: bool, adaptive: bool = False):
    def check(node) -> bool:
        if not _static_float_input(node, n):
            return False
        if adaptive:
            x, out = node.args[0].meta["val"], node.meta["val"]
            out = out[0] if isinstance(out, (tuple, list)) else out
            axes = adaptive_axes(x.shape[-n:], out.shape[-n:])
        else:
            axes = _pool_axes_of(node, n, has_dilation)
        return 0 < _window_size(axes) <= MAX_WINDOW
    return check


# ----------------------------------------------------------------------------- max pooling
def max_window(x: TensorValue, axes: list[Axis], out_syms) -> tuple[Expr, Expr]:
    """(max value, flat index of it) over one window, as eager's pooling loops pick them:
    a later element wins when it is greater or NaN, so ties keep the first maximum and NaNs
    the last NaN; a window of -inf reports its first element inside the input."""
    taps = window_taps(x, axes, out_syms, float("-inf"))
    value = index = None
    for tap in taps:
        if value is None:
            # the first tap is the first element inside the input wherever it is valid
            value = tap.value
            index = tap.flat if tap.valid is None else _first_valid_index(axes, out_syms)
            continue
        take = make_op("logical_or", (_cmp("gt", tap.value, value),
                                      make_op("isnan", (tap.value,), torch.bool)), torch.bool)
        index = _op("where", take, tap.flat, index, dtype=I64)
        value = _op("maximum", tap.value, value)
    return value, index


def _first_valid_index(axes: list[Axis], out_syms) -> Expr:
    """Flat index of a window's first element inside the input (eager's initial argmax)."""
    flat = None
    stride = 1
    for axis, o in reversed(list(zip(axes, out_syms))):
        first = None
        for k in reversed(axis.live_taps()):
            lo, _, _ = axis.tap_checks(k)
            here = _i(axis.index(o, k))
            first = here if first is None or not lo else _op(
                "where", _cmp("ge", here, _c(0)), here, first, dtype=I64)
        term = first if stride == 1 else _op("mul", first, _c(stride))
        flat = term if flat is None else _op("add", term, flat)
        stride *= axis.size
    return flat


def _lower_max_pool(ctx, x, n: int, axes: list[Axis]):
    dtype, device, size = _out(ctx)
    x = _materialized(ctx, x)
    syms = index_symbols(len(size))
    value, index = max_window(x, axes, syms[-n:])
    return (TensorValue(dtype, device, size, value), TensorValue(I64, device, size, index))


@REGISTRY.register(aten.max_pool2d_with_indices.default, supports=_small_window(2, True))
def lower_max_pool2d(ctx, x, *args, **kwargs):
    return _lower_max_pool(ctx, x, 2, _pool_axes_of(ctx.node, 2, True))


@REGISTRY.register(aten.max_pool3d_with_indices.default, supports=_small_window(3, True))
def lower_max_pool3d(ctx, x, *args, **kwargs):
    return _lower_max_pool(ctx, x, 3, _pool_axes_of(ctx.node, 3, True))


@REGISTRY.register(aten.adaptive_max_pool2d.default, supports=_small_window(2, False, True))
def lower_adaptive_max_pool2d(ctx, x, output_size):
    return _lower_max_pool(ctx, x, 2, adaptive_axes(x.size[-2:], _out(ctx)[2][-2:]))


@REGISTRY.register(aten.adaptive_max_pool3d.default, supports=_small_window(3, False, True))
def lower_adaptive_max_pool3d(ctx, x, output_size):
    return _lower_max_pool(ctx, x, 3, adaptive_axes(x.size[-3:], _out(ctx)[2][-3:]))


# ----------------------------------------------------------------------------- avg pooling
def sum_window(x: TensorValue, axes: list[Axis], out_syms, acc: torch.dtype) -> Expr:
    """Sum of a window's elements inside the input, in eager's order (padding adds 0)."""
    total = None
    for tap in window_taps(x, axes, out_syms, 0):
        value = cast_expr(tap.value, acc)
        total = value if total is None else _op("add", total, value)
    return total


def _extent(axis: Axis, o, count_include_pad: bool, padding: int, kernel: int) -> Expr:
    """Eager's per-axis divisor of window ``o``: taps up to the padded edge, or inside only."""
    def static(o_int):
        start = axis.start(o_int)
        if count_include_pad:
            return min(start + kernel, axis.size + padding) - start
        return min(start + kernel, axis.size) - max(start, 0)

    values = {static(k) for k in range(axis.out)}
    if len(values) == 1:
        return _c(values.pop())
    start = _i(axis.start(o))
    if count_include_pad:
        end = _op("minimum", _i(axis.start(o) + kernel), _c(axis.size + padding))
        return _op("sub", end, start)
    end = _op("minimum", _i(axis.start(o) + kernel), _c(axis.size))
    return _op("sub", end, _op("maximum", start, _c(0)))


def _lower_avg_pool(ctx, x, n, kernel_size, stride=(), padding=0, ceil_mode=False,
                    count_include_pad=True, divisor_override=None):
    dtype, device, size = _out(ctx)
    kernel, stride, padding, _ = _pool_params(ctx.node, n, False)
    axes = pool_axes(x.size[-n:], size[-n:], kernel, stride, padding, (1,) * n)
    x = _materialized(ctx, x)
    acc = _acc_dtype(x.dtype)
    syms = index_symbols(len(size))
    total = sum_window(x, axes, syms[-n:], acc)
    if divisor_override:
        divisor = _c(divisor_override)
    else:
        divisor = None
        for axis, o, p, k in zip(axes, syms[-n:], padding, kernel):
            ext = _extent(axis, o, count_include_pad, p, k)
            divisor = ext if divisor is None else _op("mul", divisor, ext)
    body = _op("truediv", total, cast_expr(divisor, acc))
    return TensorValue(dtype, device, size, cast_expr(body, dtype))


@REGISTRY.register(aten.avg_pool2d.default, supports=_small_window(2, False))
def lower_avg_pool2d(ctx, x, *args, **kwargs):
    return _lower_avg_pool(ctx, x, 2, *args, **kwargs)


@REGISTRY.register(aten.avg_pool3d.default, supports=_small_window(3, False))
def lower_avg_pool3d(ctx, x, *args, **kwargs):
    return _lower_avg_pool(ctx, x, 3, *args, **kwargs)


# ----------------------------------------------------------------------------- adaptive avg
def _lower_adaptive_avg(ctx, x, n: int):
    dtype, device, size = _out(ctx)
    axes = adaptive_axes(x.size[-n:], size[-n:])
    acc = _acc_dtype(x.dtype)
    syms = index_symbols(len(size))
    outs = syms[-n:]
    if _window_size(axes) <= MAX_WINDOW:
        total = sum_window(_materialized(ctx, x), axes, outs, acc)
    else:
        total = _window_sum_reduction(ctx, x, axes, acc).body
    # eager divides by each axis' extent in turn: sum / kh / kw
    for axis, o in zip(axes, outs):
        extents = {axis.end(k) - axis.start(k) for k in range(axis.out)}
        ext = _c(extents.pop()) if len(extents) == 1 else _i(axis.end(o) - axis.start(o))
        total = _op("truediv", total, cast_expr(ext, acc))
    return TensorValue(dtype, device, size, cast_expr(total, dtype))


def _window_sum_reduction(ctx, x: TensorValue, axes: list[Axis], acc) -> TensorValue:
    """Big windows: a view [..., outputs..., taps...] (masked past each window's end),
    summed over the tap dims by one reduction kernel."""
    n, lead = len(axes), x.ndim - len(axes)
    size = tuple(x.size[:lead]) + tuple(sympy.Integer(a.out) for a in axes) + tuple(
        sympy.Integer(a.taps) for a in axes)
    syms = index_symbols(len(size))
    outs, ks = syms[lead:lead + n], syms[lead + n:]
    idx = [a.start(o) + k for a, o, k in zip(axes, outs, ks)]
    uneven = [a for a in axes if len({a.end(o) - a.start(o) for o in range(a.out)}) > 1]
    valid = _all([_cmp("lt", _i(i), _i(a.end(o))) if a in uneven else None
                  for a, o, i in zip(axes, outs, idx)])
    body = x.load(list(syms[:lead]) + idx)
    body = cast_expr(masked(valid, body, 0) if valid is not None else body, acc)
    window = TensorValue(acc, x.device, size, body)
    return reduce(ctx, window, list(range(lead + n, lead + 2 * n)), False, "sum", acc, acc)


def _adaptive_ok(n: int):
    return lambda node: _static_float_input(node, n)


@REGISTRY.register(aten._adaptive_avg_pool2d.default, supports=_adaptive_ok(2))
def lower_adaptive_avg_pool2d(ctx, x, output_size):
    return _lower_adaptive_avg(ctx, x, 2)


@REGISTRY.register(aten._adaptive_avg_pool3d.default, supports=_adaptive_ok(3))
def lower_adaptive_avg_pool3d(ctx, x, output_size):
    return _lower_adaptive_avg(ctx, x, 3)


# ----------------------------------------------------------------------------- upsampling
def _scale_factor(scales, d: int):
    if scales is None:
        return None
    value = scales[d] if isinstance(scales, (list, tuple)) else scales
    return None if value is None else float(value)


def nearest_source(o, in_size: int, out_size: int, scale) -> Expr | sympy.Expr:
    """Eager's nearest source index ``min(floor(o * s), in - 1)`` with ``s`` in float32:
    a plain index expression where integer arithmetic gives the same table, else float32
    arithmetic in the kernel like eager's."""
    s = np.float32(1.0 / scale) if scale is not None and scale > 0 else \
        np.float32(in_size) / np.float32(out_size)
    if in_size == out_size:
        return o
    table = [min(int(np.floor(np.float32(k) * s)), in_size - 1) for k in range(out_size)]
    g = math.gcd(in_size, out_size)
    if all(_floordiv(k * (in_size // g), out_size // g) == t for k, t in enumerate(table)):
        return _floordiv(o * (in_size // g), out_size // g)
    real = _op("mul", cast_expr(_i(o), torch.float32), Const(float(s), torch.float32))
    src = cast_expr(make_op("floor", (real,), torch.float32), I64)
    return _op("minimum", src, _c(in_size - 1))


def _nearest_2d(ctx, x, scales_h, scales_w):
    dtype, device, size = _out(ctx)
    syms = index_symbols(len(size))
    lead = list(syms[:-2])
    srcs = [nearest_source(o, int(n), int(m), s) for o, n, m, s in
            zip(syms[-2:], x.size[-2:], size[-2:], (scales_h, scales_w))]
    if all(isinstance(s, sympy.Expr) for s in srcs):
        return x.reindex(size, lambda idx: list(idx[:-2]) + [
            s.xreplace(dict(zip(syms, idx))) for s in srcs])
    plain = {d: syms[d] for d in range(len(lead))}
    by_dim = {}
    for k, s in enumerate(srcs):
        d = len(lead) + k
        if isinstance(s, sympy.Expr):
            plain[d] = s
        else:
            by_dim[d] = s
    return TensorValue(dtype, device, size, _gather_load(ctx, x, by_dim, plain, size))


def _upsample_ok(node) -> bool:
    return _static_float_input(node, 2)


@REGISTRY.register(aten.upsample_nearest2d.vec, supports=_upsample_ok)
def lower_upsample_nearest2d_vec(ctx, x, output_size=None, scale_factors=None):
    return _nearest_2d(ctx, x, _scale_factor(scale_factors, 0), _scale_factor(scale_factors, 1))


def linear_source(o, in_size: int, out_size: int, align_corners: bool, scale, compute):
    """Eager's (index0, index1, lambda0, lambda1) of bilinear interpolation along one axis
    (``compute_source_index_and_lambda``), in ``compute`` precision like eager's opmath."""
    if in_size == out_size:       # eager's shortcut: the same element, weights 1 and 0
        return o, o, Const(1.0, compute), Const(0.0, compute)
    f = np.float32 if compute == torch.float32 else np.float64
    if align_corners:
        s = f(in_size - 1) / f(out_size - 1) if out_size > 1 else f(0)
    else:
        s = f(1.0 / scale) if scale is not None and scale > 0 else f(in_size) / f(out_size)
    pos = cast_expr(_i(o), compute)
    if align_corners:
        real = _op("mul", Const(float(s), compute), pos)
    else:
        half = Const(0.5, compute)
        real = _op("sub", _op("mul", Const(float(s), compute), _op("add", pos, half)), half)
        real = _op("where", _cmp("lt", real, Const(0.0, compute)), Const(0.0, compute), real)
    i0 = _op("minimum", cast_expr(make_op("floor", (real,), compute), I64), _c(in_size - 1))
    i1 = _op("minimum", _op("add", i0, _c(1)), _c(in_size - 1))
    lam1 = _op("sub", real, cast_expr(i0, compute))
    lam1 = _op("minimum", _op("maximum", lam1, Const(0.0, compute)), Const(1.0, compute))
    lam0 = _op("sub", Const(1.0, compute), lam1)
    return i0, i1, lam0, lam1


def _bilinear_2d(ctx, x, align_corners, scales_h, scales_w):
    dtype, device, size = _out(ctx)
    x = _materialized(ctx, x)
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    syms = index_symbols(len(size))
    lead = {d: syms[d] for d in range(len(size) - 2)}
    h, w = [linear_source(o, int(n), int(m), align_corners, s, compute) for o, n, m, s in
            zip(syms[-2:], x.size[-2:], size[-2:], (scales_h, scales_w))]
    hd, wd = len(size) - 2, len(size) - 1

    def at(hi, wi):
        plain, by_dim = dict(lead), {}
        for d, i in ((hd, hi), (wd, wi)):
            (by_dim if isinstance(i, Expr) else plain)[d] = i
        if not by_dim:
            load = x.load([plain[d] for d in range(len(size))])
        else:
            load = _gather_load(ctx, x, by_dim, plain, size)
        return cast_expr(load, compute)

    def row(hi):   # eager: x[h, w0] * w0lambda + x[h, w1] * w1lambda
        return _op("add", _op("mul", at(hi, wd_i0), w_l0), _op("mul", at(hi, wd_i1), w_l1))

    wd_i0, wd_i1, w_l0, w_l1 = w
    h_i0, h_i1, h_l0, h_l1 = h
    body = _op("add", _op("mul", row(h_i0), h_l0), _op("mul", row(h_i1), h_l1))
    return TensorValue(dtype, device, size, cast_expr(body, dtype))


@REGISTRY.register(aten.upsample_bilinear2d.vec, supports=_upsample_ok)
def lower_upsample_bilinear2d_vec(ctx, x, output_size, align_corners, scale_factors):
    return _bilinear_2d(ctx, x, align_corners, _scale_factor(scale_factors, 0),
                        _scale_factor(scale_factors, 1))


@REGISTRY.register(aten.upsample_bilinear2d.default, supports=_upsample_ok)
def lower_upsample_bilinear2d(ctx, x, output_size, align_corners, scales_h=None, scales_w=None):
    return _bilinear_2d(ctx, x, align_corners, scales_h, scales_w)
