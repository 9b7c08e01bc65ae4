"""The concrete shapes a module launches its kernels at: what build and tune work from.

A kernel's spec may hold symbolic sizes (``"s27*s77"``) when its graph has dynamic dims,
and one kernel source (one ``kernel_key``) can serve modules of different sizes: the kernels
dataset keeps one spec row per key, so the sizes a kernel really runs at come from each
module that uses it. ``kernel_shapes`` binds a module's size symbols to the example sizes the
graph was captured with (the hint torch.export traced at) and evaluates every numel, extent
and size argument to an int. The result is a ``KernelShape``: a few ints per kernel, small
enough to travel in a task result.

Example:
    >>> from compiler.kernels.spec import KernelKind, KernelSpec, LaunchConfig
    >>> meta = {"inputs": [{"size": ["s0", 64]}]}
    >>> kernel = KernelSpec(KernelKind.POINTWISE_1D, ("a", "b"), ("torch.float32",) * 2,
    ...                     ("64*s0", "64*s0"), 1, ("64*s0",), (), LaunchConfig((), ()))
    >>> (shape,) = kernel_shapes(meta, [("k1", kernel)], lambda: [[8, 64]])
    >>> shape.numels, shape.extents, shape.error
    ((512,), (512, 512), '')
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence


@dataclass(frozen=True)
class KernelShape:
    """One kernel at one size: pointer dtypes and extents (elements), numels, and the values
    of its run-time size arguments. ``error`` says why the sizes are unknown (then the
    numbers are empty)."""
    kernel_key: str
    kind: str
    dtypes: tuple[str, ...]
    extents: tuple[int, ...]
    numels: tuple[int, ...]
    size_args: tuple[int, ...] = ()
    error: str = ""

    @property
    def int_args(self) -> tuple[int, ...]:
        """Every integer argument in launch order: numels, then size symbols (``build``'s
        ``sizes``)."""
        return self.numels + self.size_args

    @property
    def digest(self) -> str:
        """8 hex digits naming this shape among the kernel's shapes (task keys, failure rows)."""
        text = json.dumps([self.dtypes, self.extents, self.numels, self.size_args])
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def trial_sizes(self) -> dict[str, Any]:
        """The sizes a trial of this shape is recorded at (``KernelLaunch.sizes``): numels
        by name, the pointer dtypes, and the size arguments when there are any.

        >>> KernelShape("k", "pointwise1d", ("torch.float32",) * 2, (64, 64), (64,)).trial_sizes()
        {'xnumel': 64, 'dtypes': ['torch.float32', 'torch.float32']}
        """
        from compiler.kernels.signature import dtype_name
        from compiler.kernels.spec import KernelKind
        out: dict[str, Any] = {**dict(zip(KernelKind(self.kind).numel_names, self.numels)),
                               "dtypes": [dtype_name(d) for d in self.dtypes]}
        if self.size_args:
            out["size_args"] = list(self.size_args)
        return out

    def describe(self) -> str:
        """``8x128`` (numels), with size arguments when there are any."""
        text = "x".join(str(n) for n in self.numels) or "?"
        return text + (f" (sizes {list(self.size_args)})" if self.size_args else "")


def size_hints(module_inputs: Sequence[Mapping[str, Any]],
               example_sizes: Sequence[Sequence[int]]) -> dict[str, int]:
    """``{symbol: example size}`` from a module's input specs (sizes as ints or symbol names)
    and the example sizes of the same inputs, in the same order.

    >>> size_hints([{"size": ["s0", 4]}, {"size": ["s0"]}], [[3, 4], [3]])
    {'s0': 3}
    """
    hints: dict[str, int] = {}
    if len(module_inputs) != len(example_sizes):
        return hints
    for spec, example in zip(module_inputs, example_sizes):
        for size, value in zip(spec.get("size", ()), example):
            if isinstance(size, str) and size.isidentifier() and isinstance(value, int):
                hints.setdefault(size, value)
    return hints


def concrete(value: Any, hints: Mapping[str, int]) -> int:
    """An int from an int, a decimal string, or a size expression over ``hints``.

    >>> concrete("32*s27*(s77 - 1) + 32*s27", {"s27": 6, "s77": 2})
    384
    """
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    import sympy
    expr = sympy.sympify(text, locals={name: sympy.Integer(v) for name, v in hints.items()})
    if not expr.is_Integer:
        unbound = sorted(str(s) for s in expr.free_symbols)
        raise ValueError(f"size {text!r} has no example value for {', '.join(unbound) or text}")
    return int(expr)


def shape_of(kernel_key: str, spec: Any, hints: Mapping[str, int]) -> KernelShape:
    """The ``KernelShape`` of one kernel's ``KernelSpec`` under ``hints`` (never raises)."""
    dtypes = tuple(spec.dtypes)
    kind = str(spec.kind)
    try:
        if not dtypes:
            raise ValueError("its spec has no pointer dtypes")
        numels = tuple(concrete(n, hints) for n in spec.numels)
        extents = tuple(concrete(e, hints) for e in spec.extents)
        size_args = tuple(concrete(s, hints) for s in spec.size_args)
    except (ValueError, KeyError, TypeError, SyntaxError) as exc:
        return KernelShape(kernel_key, kind, dtypes, (), (), (),
                           error=f"sizes unknown: {type(exc).__name__}: {exc}")
    return KernelShape(kernel_key, kind, dtypes, extents or (max(1, _prod(numels)),) * len(dtypes),
                       numels, size_args)


def _prod(values: Iterable[int]) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def _symbolic(spec: Any) -> bool:
    sizes = [*spec.numels, *spec.extents, *spec.size_args]
    return any(not (isinstance(s, int) or str(s).lstrip("-").isdigit()) for s in sizes)


def kernel_shapes(module_meta: Mapping[str, Any],
                  kernels: Iterable[tuple[str, Any]],
                  example_sizes: Callable[[], Sequence[Sequence[int]]]) -> tuple[KernelShape, ...]:
    """One ``KernelShape`` per distinct (kernel key, shape) of a module.

    ``kernels`` are (kernel_key, KernelSpec) as the module names them; ``example_sizes`` returns the
    example size of every module input (called only when some kernel has symbolic sizes).
    """
    kernels = list(kernels)
    hints: dict[str, int] = {}
    if any(_symbolic(spec) for _, spec in kernels):
        hints = size_hints(module_meta.get("inputs", ()), example_sizes())
    shapes = (shape_of(key, spec, hints) for key, spec in kernels)
    return tuple(dict.fromkeys(shapes))
