"""A compiled model's weights and buffers, bound once and re-bound only when replaced.

A call feeds the module's live parameters and buffers to the compiled graph. Looking each
up by its dotted name (``module.get_parameter("model.layers.0.mlp.up_proj.weight")``) walks
the module tree: ~60 lookups cost a 4-layer Llama 0.8 ms a call on a 2-core host, more than
its CUDA-graph replay. ``StateBinding`` looks them up once and remembers the dicts it found
them in (each submodule's ``_modules``, ``_parameters``, ``_buffers``); a call then checks
those few dict entries still hold the same objects. In-place updates (optimizer steps,
``load_state_dict``, ``.to()``) keep the objects and need nothing; a replaced object
(``module.weight = Parameter(...)``, ``load_state_dict(..., assign=True)``, a swapped
submodule) makes ``current()`` look everything up again.

Example:
    >>> import torch
    >>> from compiler.capture import capture_module
    >>> m = torch.nn.Linear(4, 2)
    >>> binding = StateBinding(capture_module(m, (torch.randn(3, 4),)).convention, m)
    >>> binding.current(), binding.state[0] is m.weight
    (False, True)
    >>> m.weight = torch.nn.Parameter(torch.zeros(2, 4))
    >>> binding.current(), binding.state[0] is m.weight
    (True, True)
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .convention import CallConvention


class StateBinding:
    """``state``: the live state tensors by flat input position (``state_inputs``);
    ``mutated``: the live tensor of each mutated buffer (``mutated_state``)."""

    def __init__(self, convention: "CallConvention", module: torch.nn.Module):
        self.convention, self.module = convention, module
        self._bind()

    def current(self) -> bool:
        """Re-bind if a bound object was replaced since; True when it was."""
        for table, key, obj in self._links:
            if table.get(key) is not obj:
                self._bind()
                return True
        return False

    def _bind(self) -> None:
        self.state = self.convention.state_inputs(self.module)
        self.mutated = self.convention.mutated_state(self.module, self.state)
        links: dict[tuple[int, str], tuple] = {}
        for i, spec in enumerate(self.convention.inputs):
            if spec.kind in ("parameter", "buffer"):
                _link(self.module, spec.target, spec.kind, self.state[i], links)
        self._links = list(links.values())


def _link(module: torch.nn.Module, target: str, kind: str, tensor: torch.Tensor,
          links: dict) -> None:
    """The dict entries ``target`` was found through: each submodule on its path, then the
    tensor itself. A tensor found some other way (not an entry of its owner's dict) stays
    bound as found, unchecked: linking it would re-bind on every call."""
    *path, leaf = target.split(".")
    owner = module
    for name in path:
        child = getattr(owner, "_modules", {}).get(name)
        if child is None:
            return
        links[(id(owner._modules), name)] = (owner._modules, name, child)
        owner = child
    table = owner._parameters if kind == "parameter" else owner._buffers
    if table.get(leaf) is tensor:
        links[(id(table), leaf)] = (table, leaf, tensor)
