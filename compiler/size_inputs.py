"""``compile_fx``'s inputs that are not tensors: the SymInts of dynamo's dynamic-shape graphs.

When a size changes between calls, dynamo recompiles the graph with that size symbolic
(``s0``) and hands the backend the size itself as an extra SymInt input next to the tensors
it is a dim of. kiln's generated code reads every size from its tensor inputs
(``s0 = arg1.shape[0]``), so such an input is dropped at call time. A SymInt that is no
tensor input's dim (an int argument dynamo made dynamic) is *carried* instead: passed as
dim 0 of an empty ``(n, 0)`` tensor (no storage), so the code binds it like any other size.
Plain ints (sizes dynamo specialised the graph on, and guards) are dropped too.

Example:
    >>> import torch
    >>> sizes = SizeInputs.of([torch.ones(2), 3])
    >>> sizes.positions, sizes.carried
    ((1,), ())
    >>> [tuple(t.shape) for t in sizes.call_inputs([torch.ones(2), 3])]
    [(2,)]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

_SYM_TYPES = (torch.SymInt, torch.SymFloat, torch.SymBool)


@dataclass(frozen=True)
class SizeInputs:
    """Which flat inputs of a graph are sizes, and which of them are carried as tensors."""
    positions: tuple[int, ...]      # every non-tensor input
    carried: tuple[int, ...]        # SymInts that are no tensor input's dim
    device: str = "cpu"             # where carriers are made (the graph's device)

    @classmethod
    def of(cls, example_inputs: Sequence[Any]) -> "SizeInputs":
        tensors = [x for x in example_inputs if isinstance(x, torch.Tensor)]
        dims = {_expr(s) for t in tensors for s in t.shape if isinstance(s, torch.SymInt)}
        positions = tuple(k for k, x in enumerate(example_inputs)
                          if not isinstance(x, torch.Tensor))
        carried = tuple(k for k in positions if isinstance(example_inputs[k], torch.SymInt)
                        and _expr(example_inputs[k]) not in dims)
        device = tensors[0].device.type if tensors else "cpu"
        return cls(positions, carried, device)

    def __bool__(self) -> bool:
        return bool(self.positions)

    def trace_inputs(self, example_inputs: Sequence[Any]) -> list:
        """The example inputs with each carried SymInt as its empty carrier tensor (made in
        the inputs' fake mode, so its dim 0 is the same symbol)."""
        out = list(example_inputs)
        for k in self.carried:
            out[k] = torch.empty((example_inputs[k], 0), device=self.device)
        return out

    def unwrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` taking carriers where it took SymInts (what the traced graph calls)."""
        carried = set(self.carried)

        def run(*args):
            return fn(*(a.shape[0] if k in carried else a for k, a in enumerate(args)))
        return run

    def call_inputs(self, args: Sequence[Any]) -> list:
        """The compiled code's inputs for one call: sizes dropped, carried ones as tensors."""
        carried = set(self.carried)
        return [torch.empty((int(a), 0), device=self.device) if k in carried else a
                for k, a in enumerate(args) if k not in self.positions or k in carried]


class SizedCall:
    """A compiled graph called with its size inputs (``compile_fx``'s result for a graph
    that has any); every attribute but the call is the compiled module's."""

    def __init__(self, compiled: Any, sizes: SizeInputs):
        self.compiled, self.sizes = compiled, sizes

    def __call__(self, *args):
        if len(args) == 1 and isinstance(args[0], (list, tuple)):
            args = tuple(args[0])
        return self.compiled(self.sizes.call_inputs(args))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.compiled, name)


def _expr(size: torch.SymInt) -> Any:
    return size.node.expr


def size_hint(size: Any) -> int:
    """The example value of a size without guarding on it (``int(s0)`` would specialise
    the graph to it and make dynamo recompile at every size).

    Example:
        >>> size_hint(4)
        4
    """
    if isinstance(size, _SYM_TYPES):
        return int(size.node.hint)
    return int(size)


__all__ = ["SizeInputs", "SizedCall", "size_hint"]
