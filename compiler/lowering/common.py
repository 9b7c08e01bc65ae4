"""Helpers shared by lowerings: broadcasting, casts, scalar wrapping, type promotion.

Example:
    >>> import sympy
    >>> broadcast_shapes([(sympy.Integer(4), sympy.Integer(1)), (sympy.Integer(3),)])
    (4, 3)
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import sympy
import torch
from torch._prims_common import ELEMENTWISE_TYPE_PROMOTION_KIND as Promotion
from torch._prims_common import elementwise_dtypes
from torch.fx.experimental.symbolic_shapes import statically_known_true
from torch.utils._sympy import functions as torch_sympy

from ..ir import (SUPPORTED_DTYPES, Const, Expr, IndexExpr, Op,  # noqa: F401 (re-exported)
                  TensorValue)

__all__ = ["Promotion", "broadcast_shapes", "expand_to", "to_dtype", "promote", "is_tensor",
           "as_sym", "normalize_dim"]



def is_tensor(x) -> bool:
    return isinstance(x, TensorValue)


def sym_size(value) -> sympy.Expr:
    """A size from a FakeTensor shape: an int, or a SymInt's ShapeEnv expression (its
    clamps settled: ``settle_clamps``)."""
    if isinstance(value, torch.SymInt):
        return settle_clamps(sympy.sympify(value.node.expr), value.node.shape_env)
    return sympy.Integer(int(value))


# the ShapeEnv writes its own Max/Min (torch.utils._sympy), which sympy's do not match
_CLAMPS = (sympy.Max, sympy.Min, torch_sympy.Max, torch_sympy.Min)


def settle_clamps(expr: sympy.Expr, shape_env) -> sympy.Expr:
    """``expr`` with each Max/Min replaced by the argument the ShapeEnv proves it takes
    (from the symbols' ranges and export's guards), without adding guards.

    A slice clamps its start symbolically: ``x[:, -1:]`` of a dynamic dim is
    ``1 - Max(0, 1 - s0)`` long, and the 64 positions ALiBi slices to the sequence are
    ``64 - Max(0, 64 - s0)``. Eager's broadcasting has already decided those are 1 and
    ``s0``; unsettled, they compare unequal to 1 and ``s0`` here, and index arithmetic
    keeps a max per element.
    """
    if shape_env is None or not expr.has(*_CLAMPS):
        return expr
    for clamp in sorted(expr.atoms(*_CLAMPS), key=sympy.count_ops):
        if not expr.has(clamp):
            continue       # gone with a clamp settled before it
        for arg in clamp.args:
            candidate = expr.xreplace({clamp: arg})
            if statically_known_true(shape_env.create_symboolnode(sympy.Eq(expr, candidate))):
                expr = candidate
                break
    return expr


def shape_env_of(val):
    """The ShapeEnv of a FakeTensor (None for a real tensor or a graph without one)."""
    return getattr(getattr(val, "fake_mode", None), "shape_env", None)


def as_sym(x) -> sympy.Expr:
    if isinstance(x, torch.SymInt):
        return sym_size(x)
    return sympy.sympify(int(x)) if isinstance(x, (int, bool)) else sympy.sympify(x)


def normalize_dim(dim: int, ndim: int) -> int:
    return dim + max(ndim, 1) if dim < 0 else dim


def broadcast_shapes(sizes: Sequence[Sequence[sympy.Expr]]) -> tuple[sympy.Expr, ...]:
    ndim = max((len(s) for s in sizes), default=0)
    out = [sympy.Integer(1)] * ndim
    for size in sizes:
        for k, s in enumerate(size, start=ndim - len(size)):
            if s != 1:
                if out[k] != 1 and out[k] != s:
                    raise ValueError(f"shapes {list(sizes)} do not broadcast")
                out[k] = s
    return tuple(out)


def agree_sizes(args: tuple, shape_env) -> tuple:
    """``args`` with each tensor's size written alike where ``shape_env`` proves two sizes
    that broadcast against each other equal (from its ranges and guards; no new guard).

    Two expressions of one dim can reach an op: ``x[::2] + x[1::2]`` adds a
    ``(s0 + 1)//2`` long slice to a ``s0//2`` long one under torch's guard that they are
    equal, and Mamba's scan meets ``(s0 - 1)//2`` and ``((s0//2 - 1)//2) + 3``. The
    lowerings compare sizes as sympy, which calls them different (shapes do not
    broadcast); agreed here, once per node, they compare equal everywhere after.
    """
    tensors = [t for a in args for t in (a if isinstance(a, (list, tuple)) else (a,))
               if is_tensor(t)]
    if shape_env is None or len(tensors) < 2:
        return args
    written = {}     # (dim from the right, a size) -> the simplest size proved equal to it
    for k in range(1, max(t.ndim for t in tensors) + 1):
        groups: list[list[sympy.Expr]] = []
        for s in dict.fromkeys(t.size[-k] for t in tensors if t.ndim >= k and t.size[-k] != 1):
            group = next((g for g in groups if _proved_equal(g[0], s, shape_env)), None)
            if group is None:
                groups.append([s])
            else:
                group.append(s)
        for group in (g for g in groups if len(g) > 1):
            simplest = min(group, key=lambda e: (len(e.free_symbols), sympy.count_ops(e)))
            written.update({(k, s): simplest for s in group})
    return tuple(_rewritten(a, written) for a in args) if written else args


def _proved_equal(a: sympy.Expr, b: sympy.Expr, shape_env) -> bool:
    if a.is_number and b.is_number:
        return a == b
    return statically_known_true(shape_env.create_symboolnode(sympy.Eq(a, b)))


def _rewritten(arg, written: dict):
    if isinstance(arg, (list, tuple)):
        return type(arg)(_rewritten(a, written) for a in arg)
    if not is_tensor(arg):
        return arg
    size = tuple(written.get((arg.ndim - d, s), s) for d, s in enumerate(arg.size))
    return arg if size == tuple(arg.size) else dataclasses.replace(arg, size=size)


def expand_to(x: TensorValue, size: Sequence[sympy.Expr]) -> TensorValue:
    """Broadcast ``x`` to ``size``: size-1 dims read index 0, new leading dims are dropped."""
    if tuple(x.size) == tuple(size):
        return x
    lead = len(size) - x.ndim

    def index(idx):
        return [sympy.Integer(0) if x.size[k] == 1 and size[k + lead] != 1 else idx[k + lead]
                for k in range(x.ndim)]

    return x.reindex(size, index)


def cast_expr(e: Expr, dtype: torch.dtype, rounds: bool = False) -> Expr:
    """``e`` as ``dtype``. ``rounds``: an explicit user cast, which must round like eager."""
    if e.dtype == dtype:
        return e
    if isinstance(e, Const):
        return Const(torch.tensor(e.value, dtype=e.dtype).to(dtype).item(), dtype)
    return Op("to_dtype", (e,), dtype, (bool(rounds),))


def scalar_const(value, dtype: torch.dtype) -> Const:
    """A Python number as a ``Const`` of ``dtype``, rounded once as eager rounds it
    (``torch.tensor(0.1)`` is float32: a float64 op would see 0.1 rounded twice).

    >>> scalar_const(0.1, torch.float64).value == 0.1
    True
    """
    source = torch.float64 if isinstance(value, float) else None
    return Const(torch.tensor(value, dtype=source).to(dtype).item(), dtype)


def wrapped_number(value, device: str) -> TensorValue:
    """A Python number (or a size) as the 0-d tensor eager wraps it in for a Tensor
    parameter: int64, the default float type, or bool."""
    if isinstance(value, bool):
        dtype = torch.bool
    elif isinstance(value, float) or (isinstance(value, sympy.Expr) and value.is_Float):
        dtype = torch.get_default_dtype()
    else:
        dtype = torch.int64
    if isinstance(value, sympy.Expr) and not value.is_Number:
        body = cast_expr(IndexExpr(value), dtype)     # a size known only at run time
    else:
        body = scalar_const(float(value) if dtype.is_floating_point else int(value), dtype)
    return TensorValue(dtype, device, (), body)


def to_dtype(x: TensorValue, dtype: torch.dtype, rounds: bool = False) -> TensorValue:
    return x if x.dtype == dtype else x.map(lambda b: cast_expr(b, dtype, rounds))


def _dtype_probe(x):
    if isinstance(x, TensorValue):
        return torch.empty((1,) * min(x.ndim, 1), dtype=x.dtype, device="meta")
    if isinstance(x, sympy.Expr):
        return 1          # a symbolic size promotes like a Python int
    return x


def promote(args, kind: Promotion) -> tuple[torch.dtype, torch.dtype]:
    """(computation dtype, result dtype) exactly as eager ATen would pick them."""
    probes = [_dtype_probe(a) for a in args if a is not None]
    return elementwise_dtypes(*probes, type_promotion_kind=kind)


def channels_last_strides(size) -> tuple:
    """NHWC strides for an NCHW-shaped 4-D size."""
    n, c, h, w = size
    return (h * w * c, sympy.Integer(1), w * c, c)
