"""The CPU shim: what generated kernels need to run under Triton's interpreter.

``libdevice`` functions Triton's interpreter lacks, computed with NumPy (or torch where NumPy
has no such function) on the tensor's data, in its dtype. ``interpreter_bindings`` gives the
``jit`` and ``libdevice`` a generated module is imported with on CPU tensors, which is how
CI checks every kernel without a GPU. The interpreter's ``TensorHandle`` is private to
Triton; it is used here only.

Example:
    >>> b = interpreter_bindings()
    >>> b["jit"].__name__, hasattr(b["libdevice"], "erfinv")
    ('InterpretedFunction', True)
"""
from __future__ import annotations

import types
from typing import Any

import numpy as np
import torch
import triton.language as tl


def _numpy_extern(fn):
    """A libdevice function for the interpreter: NumPy on the tensor's data, same dtype."""
    def call(*args):
        from triton.runtime.interpreter import TensorHandle
        tensors = [a for a in args if isinstance(a, tl.core.tensor)]
        data = [a.handle.data if isinstance(a, tl.core.tensor) else a for a in args]
        out = np.asarray(fn(*data))
        like = max(tensors, key=lambda t: t.handle.data.ndim)
        out = out.astype(like.handle.data.dtype, copy=False)
        return tl.core.tensor(TensorHandle(out, like.handle.dtype.scalar), like.type)
    return call


def _via_torch(fn):
    """A NumPy-array function from a torch one (special functions NumPy lacks)."""
    return lambda a: fn(torch.from_numpy(np.array(a))).numpy()


def _quiet(fn):
    """``fn`` without NumPy's warnings: the interpreter computes masked-off lanes too."""
    def call(*args):
        with np.errstate(all="ignore"):
            return fn(*args)
    return call


INTERPRETER_LIBDEVICE = types.SimpleNamespace(
    tanh=_numpy_extern(np.tanh),
    pow=_numpy_extern(np.power),
    expm1=_numpy_extern(np.expm1),
    log1p=_numpy_extern(np.log1p),
    nearbyint=_numpy_extern(np.rint),
    trunc=_numpy_extern(np.trunc),
    fmod=_numpy_extern(np.fmod),
    atan=_numpy_extern(_quiet(np.arctan)),
    asin=_numpy_extern(_quiet(np.arcsin)),
    acos=_numpy_extern(_quiet(np.arccos)),
    tan=_numpy_extern(_quiet(np.tan)),
    sinh=_numpy_extern(_quiet(np.sinh)),
    cosh=_numpy_extern(_quiet(np.cosh)),
    asinh=_numpy_extern(_quiet(np.arcsinh)),
    acosh=_numpy_extern(_quiet(np.arccosh)),
    atanh=_numpy_extern(_quiet(np.arctanh)),
    log10=_numpy_extern(_quiet(np.log10)),
    atan2=_numpy_extern(_quiet(np.arctan2)),
    hypot=_numpy_extern(_quiet(np.hypot)),
    copysign=_numpy_extern(_quiet(np.copysign)),
    erfc=_numpy_extern(_via_torch(torch.special.erfc)),
    erfinv=_numpy_extern(_via_torch(torch.special.erfinv)),
    erfcx=_numpy_extern(_via_torch(torch.special.erfcx)),
    lgamma=_numpy_extern(_via_torch(torch.lgamma)),
    cyl_bessel_i0=_numpy_extern(_via_torch(torch.special.i0)),
)


def _torch_dtype(tl_dtype) -> torch.dtype:
    """The torch dtype of a Triton scalar type (bf16 itself, not its uint16 bits)."""
    from triton.runtime.interpreter import _get_np_dtype
    if tl_dtype == tl.bfloat16:
        return torch.bfloat16
    return torch.from_numpy(np.empty(0, _get_np_dtype(tl_dtype))).dtype


def _bf16_cast(cast_impl):
    """``cast_impl`` with every cast to or from bfloat16 done by torch. The interpreter keeps
    bf16 as its uint16 bits: it truncated float32 -> bf16 (the GPU rounds to nearest even)
    and converted integers and bools to bf16, and bf16 to integers, as those bits."""
    def cast(self, src, dst_type):
        from triton.runtime.interpreter import TensorHandle, _get_np_dtype
        src_type, dst = src.dtype.scalar, dst_type.scalar
        if tl.bfloat16 not in (src_type, dst):
            return cast_impl(self, src, dst_type)
        data = torch.from_numpy(np.array(src.data, copy=True))
        if src_type == tl.bfloat16:
            data = data.view(torch.bfloat16)
        out = data.to(_torch_dtype(dst))
        if dst == tl.bfloat16:
            out = out.view(torch.int16)
        return TensorHandle(out.numpy().view(_get_np_dtype(dst)), dst)
    cast.kiln_bf16 = True
    return cast


def _as_float32(handle):
    """A bf16 ``TensorHandle`` as float32 numbers (other types as they are)."""
    from triton.runtime.interpreter import TensorHandle
    if handle.dtype.scalar != tl.bfloat16:
        return handle
    data = torch.from_numpy(np.array(handle.data, copy=True)).view(torch.bfloat16)
    return TensorHandle(data.float().numpy(), tl.float32)


def _bf16_dot(dot_impl):
    """``create_dot`` with bf16 operands multiplied as numbers (exactly, in float32, as the
    GPU's tensor cores do): the interpreter multiplied their uint16 bits."""
    def dot(self, a, b, d, *args):
        return dot_impl(self, _as_float32(a), _as_float32(b), d, *args)
    dot.kiln_bf16 = True
    return dot


def _patch_bf16() -> None:
    """Round bf16 casts as the GPU does, and multiply bf16 dots as numbers (once per
    process). Fallback: where Triton's interpreter has no ``InterpreterBuilder.cast_impl``
    (``create_dot``), that operation keeps its own conversion."""
    from triton.runtime import interpreter
    builder = getattr(interpreter, "InterpreterBuilder", None)
    for name, patch in (("cast_impl", _bf16_cast), ("create_dot", _bf16_dot)):
        impl = getattr(builder, name, None)
        if impl is not None and not getattr(impl, "kiln_bf16", False):
            setattr(builder, name, patch(impl))


def interpreter_bindings() -> dict[str, Any]:
    """``jit`` and ``libdevice`` for a generated module run on CPU tensors."""
    from triton.runtime.interpreter import InterpretedFunction
    _patch_bf16()
    return {"jit": InterpretedFunction, "libdevice": INTERPRETER_LIBDEVICE}
