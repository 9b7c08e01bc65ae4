"""What ``compile_module``'s result checks about a call before it runs the compiled code.

A compiled module is an inference-time copy of one forward pass: one train/eval mode, one
input layout, no autograd graph. The checks here keep a call from silently getting something
else than eager PyTorch would give:

- gradients: outputs are computed without autograd (detached); a call that could want
  gradients (grad mode on and an input or parameter requires grad) warns once
  (``InferenceOnlyWarning``), and ``.backward()`` then fails loudly instead of computing
  wrong or missing gradients;
- train/eval mode: calling after ``module.train()`` / ``.eval()`` switched the mode the
  module was compiled in raises ``ModeChangedError``;
- layout: a non-contiguous or channels-last input whose example was dense in another order
  is copied into the compiled layout (``relayout``);
- dynamic dims: messages name the user's ``Dim("batch")`` instead of export's ``s31``
  (``dim_names``), and a dim index past an input's rank is refused up front
  (``check_dynamic_shapes``).

Example:
    >>> import torch
    >>> x = torch.randn(4, 6).t()                       # non-contiguous (6, 4)
    >>> y = relayout(x, (4, 1))                         # compiled for a dense (6, 4) input
    >>> y.stride(), torch.equal(x, y)
    ((4, 1), True)
    >>> check_dynamic_shapes((torch.randn(2, 3),), ({2: torch.export.Dim("b")},))
    Traceback (most recent call last):
    ValueError: dynamic_shapes: argument 0 has 2 dims (shape [2, 3]); dim 2 does not exist
"""
from __future__ import annotations

import inspect
import re
import warnings
from typing import Any, Sequence

import torch


class InferenceOnlyWarning(UserWarning):
    """A compiled module was called where autograd could want gradients; its outputs are
    detached (kiln compiles forward passes only)."""


class ModeChangedError(RuntimeError):
    """The module's train/eval mode differs from the mode it was compiled in."""


GRAD_WARNING = (
    "kiln: compiled modules are inference-only: outputs are detached, so no gradient flows "
    "to the inputs or parameters (backward() on them raises). Call it under "
    "torch.no_grad() or torch.inference_mode(), or train the eager module.")


def wants_grad(tensors: Sequence[Any]) -> bool:
    """Whether autograd would record a graph for these inputs (grad mode on and one of them
    requires grad)."""
    return torch.is_grad_enabled() and any(
        isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


def warn_inference_only(stacklevel: int = 2) -> None:
    """Warn once per call site; ``stacklevel`` counts from the caller of this function."""
    warnings.warn(GRAD_WARNING, InferenceOnlyWarning, stacklevel=stacklevel + 1)


def mode_name(training: bool) -> str:
    return "train" if training else "eval"


def check_mode(module: torch.nn.Module, compiled_training: bool) -> None:
    """Raise ``ModeChangedError`` when ``module.training`` is not the compiled mode (the
    top-level flag: ``.train()`` / ``.eval()`` set it together with every submodule's)."""
    if module.training != compiled_training:
        was, now = mode_name(compiled_training), mode_name(module.training)
        raise ModeChangedError(
            f"kiln: the module was compiled in {was} mode but is now in {now} mode; the "
            f"compiled code runs {was}-mode behaviour (dropout, batch statistics) only. Call "
            f"module.{was}() again, or compile it again in {now} mode.")


def training_warning(name: str) -> str:
    return (f"kiln: {name} is in train mode: its train-mode forward is compiled (dropout "
            f"active, batch-norm batch statistics and running-stat updates); call .eval() "
            f"before compiling for inference")


# --- layout ------------------------------------------------------------------------------------

def _dense_strides(shape: Sequence[int], example_stride: Sequence[int]) -> tuple[int, ...]:
    """Dense strides for ``shape`` with dims ordered as in ``example_stride`` (outermost =
    largest stride; ties keep the later dim innermost, as contiguous tensors do)."""
    order = sorted(range(len(shape)), key=lambda d: (example_stride[d], -d))
    strides, step = [0] * len(shape), 1
    for d in order:
        strides[d] = step
        step *= max(int(shape[d]), 1)
    return tuple(strides)


def relayout(t: torch.Tensor, example_stride: Sequence[int]) -> torch.Tensor:
    """``t`` itself when it is dense in the example's dim order, else a copy that is (the
    compiled kernels index with the example's strides)."""
    if t.dim() != len(example_stride):
        return t
    want = _dense_strides(t.shape, example_stride)
    if all(n == 1 or a == b for n, a, b in zip(t.shape, t.stride(), want)):
        return t
    return torch.empty_strided(t.shape, want, dtype=t.dtype, device=t.device).copy_(t)


# --- dynamic dims --------------------------------------------------------------------------------

def _per_argument(module: torch.nn.Module, args: Sequence[Any], dynamic_shapes: Any
                  ) -> list[tuple[int, Any, Any]] | None:
    """``[(position, arg, dims)]`` for positional arguments with a dynamic-shapes entry, when
    ``dynamic_shapes`` is a tuple/list by position or a dict by ``forward``'s parameter
    names; None for other (nested) forms."""
    if isinstance(dynamic_shapes, (tuple, list)):
        entries = list(dynamic_shapes)
    elif isinstance(dynamic_shapes, dict):
        try:
            names = list(inspect.signature(module.forward).parameters)
        except (TypeError, ValueError):
            return None
        entries = [dynamic_shapes.get(n) for n in names[:len(args)]]
    else:
        return None
    return [(i, a, d) for i, (a, d) in enumerate(zip(args, entries)) if d is not None]


def _dims_of(dims: Any) -> dict[int, Any] | None:
    """``{dim index: Dim}`` of one argument's entry (a dict, or a list with one per dim)."""
    if isinstance(dims, dict):
        return {int(k): v for k, v in dims.items() if v is not None}
    if isinstance(dims, (tuple, list)):
        return {k: v for k, v in enumerate(dims) if v is not None}
    return None


def check_dynamic_shapes(args: Sequence[Any], dynamic_shapes: Any,
                         module: torch.nn.Module | None = None) -> None:
    """Raise ValueError naming an argument whose dynamic dim index is past its rank (export
    itself fails with an IndexError deep inside)."""
    entries = _per_argument(module or torch.nn.Module(), args, dynamic_shapes) or []
    for i, arg, dims in entries:
        indices = _dims_of(dims)
        if not isinstance(arg, torch.Tensor) or indices is None:
            continue
        for d in indices:
            if not -arg.dim() <= d < arg.dim():
                raise ValueError(f"dynamic_shapes: argument {i} has {arg.dim()} dims (shape "
                                 f"{list(arg.shape)}); dim {d} does not exist")


def dim_names(module: torch.nn.Module, args: Sequence[Any], dynamic_shapes: Any,
              captured: Any) -> dict[str, str]:
    """``{size symbol: the user's Dim name}``, e.g. ``{"s31": "batch"}``, for plain tensor
    positional arguments; empty where the mapping is not plain."""
    entries = _per_argument(module, args, dynamic_shapes)
    user = [n for n, spec in zip(_placeholders(captured.gm), captured.inputs)
            if spec.kind == "user"]
    if not entries or len(user) != len(args):
        return {}
    names = {}
    for i, _, dims in entries:
        val = user[i].meta.get("val")
        for d, dim in (_dims_of(dims) or {}).items():
            name = getattr(dim, "__name__", None)
            if isinstance(val, torch.Tensor) and name and d < val.dim():
                size = val.shape[d]
                if not isinstance(size, int):
                    names[str(size)] = name
    return names


def _placeholders(gm: torch.fx.GraphModule) -> list[torch.fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "placeholder"]


def rename_dims(message: str, names: dict[str, str]) -> str:
    """``message`` with each size symbol replaced by the user's Dim name.

    >>> rename_dims("dim 0 (s31) is 100, outside [1, 64]; 2*s31", {"s31": "batch"})
    'dim 0 (batch) is 100, outside [1, 64]; 2*batch'
    """
    if not names:
        return message
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    return pattern.sub(lambda m: names[m.group(1)], message)
