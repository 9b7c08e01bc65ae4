"""The ``kiln`` backend for ``torch.compile`` (inference only).

Dynamo hands the backend an FX graph of torch-level ops; ``aot_autograd`` functionalises it
and lowers it to ATen with kiln's decomposition table (the same op set as ``capture``), then
calls kiln's ``compile_fx`` on the forward graph. Training is out of scope: a graph that
would need a backward pass (grad mode on and an input that requires grad) is refused with
``BackendError``; run the model under ``torch.no_grad()`` / ``torch.inference_mode()``.

Sizes: when a size changes, dynamo recompiles once with it symbolic and passes SymInt inputs;
``compile_fx`` compiles that graph for every size (``compiler.size_inputs``), so later sizes
run without compiling. Graph breaks (a print, a branch on a tensor's value): dynamo runs
the Python between graphs and hands kiln each graph, which is how models that
``torch.export`` (and so ``compile_module`` and the pipeline) cannot capture still compile.

Importing this module registers the backend name ``kiln`` with dynamo (the installed
distribution also declares it as a ``torch_dynamo_backends`` entry point).

Example:
    >>> import torch, compiler.backend
    >>> "kiln" in torch._dynamo.list_backends()
    True
    >>> # with torch.no_grad(): torch.compile(model, backend="kiln")(x)
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

import torch
import torch.fx

from compiler.capture import decomposition_table

BACKEND_NAME = "kiln"


class BackendError(RuntimeError):
    """The kiln backend refused a graph (training, unexpected arguments)."""


def kiln_backend(gm: torch.fx.GraphModule, example_inputs: Sequence[Any],
                 **kwargs: Any) -> Callable[..., Any]:
    """Dynamo backend: ATen-lower ``gm`` with kiln's decompositions and compile the forward
    graph with ``compiler.api.compile_fx``. ``torch.compile(..., options={...})`` arrives
    here as ``options`` and is passed on to ``compile_fx``.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(4, 4)
        >>> compiled = torch.compile(model, backend=kiln_backend)
        >>> # with torch.no_grad(): compiled(torch.randn(2, 4))
    """
    options = kwargs.pop("options", None)
    if kwargs:
        raise BackendError(f"kiln backend: unsupported arguments {sorted(kwargs)} "
                           f"(only options=... is accepted)")
    _refuse_training(gm, example_inputs)
    from torch._dynamo.backends.common import aot_autograd

    backend = aot_autograd(
        fw_compiler=_forward_compiler(options),
        bw_compiler=_no_backward,
        decompositions=dict(decomposition_table().items()),
    )
    return backend(gm, example_inputs)


def _forward_compiler(options: Any) -> Callable[..., Any]:
    """An aot_autograd fw/inference compiler that calls kiln's ``compile_fx``."""

    def compile_forward(fw_gm: torch.fx.GraphModule, fw_inputs: Sequence[Any]) -> Any:
        # Imported lazily: the api module imports the whole compiler (lowering, codegen),
        # which registering the backend must not pay for.
        from compiler.api import compile_fx

        with _outside_fake_mode():
            return _boxed(compile_fx(fw_gm, list(fw_inputs), options=options))

    return compile_forward


def _outside_fake_mode():
    """A context without the fake mode aot_autograd calls the forward compiler in.

    ``compile_fx`` enters the inputs' fake mode itself to trace, then reads the graph's
    real tensor constants (a ``torch.tensor([])`` in transformers' GPT-2 and Llama) to key
    and lower it, which an ambient fake mode refuses. Private torch API:
    ``torch._subclasses.fake_tensor.unset_fake_temporarily``; fallback on a torch without
    it: no change (graphs with tensor constants then fail as they did).
    """
    try:
        from torch._subclasses.fake_tensor import unset_fake_temporarily
    except ImportError:
        return contextlib.nullcontext()
    return unset_fake_temporarily()


def _boxed(compiled: Callable[..., Any]) -> Callable[..., Any]:
    """aot_autograd calls a compiled forward with one list of inputs when it has
    ``_boxed_call`` set (it may free the list's items early), else wraps it (older torch
    warns). ``compile_fx``'s callable takes the tensors as positional arguments unless it
    declares ``_boxed_call = True`` itself."""
    if getattr(compiled, "_boxed_call", False):
        return compiled
    try:
        from torch._functorch.aot_autograd import make_boxed_func
    except ImportError:  # older layout
        from functorch.compile import make_boxed_func
    return make_boxed_func(compiled)


def _no_backward(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Any:
    raise BackendError("kiln backend is inference-only: no backward graphs; run the model "
                       "under torch.no_grad() or torch.inference_mode()")


def _refuse_training(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> None:
    """Refuse graphs that autograd would differentiate: kiln compiles forward only."""
    if not torch.is_grad_enabled():
        return
    tensors = [x for x in example_inputs if isinstance(x, torch.Tensor)]
    tensors += list(gm.parameters()) + list(gm.buffers())
    if any(t.requires_grad for t in tensors):
        raise BackendError(
            "kiln backend is inference-only, but this graph needs gradients (grad mode is on "
            "and an input or parameter requires grad); call the compiled model under "
            "torch.no_grad() or torch.inference_mode()")


def _register() -> None:
    """Register ``kiln`` with dynamo unless it is already known, either registered by an
    earlier import or discoverable through the installed entry point. Registering while the
    entry point is known would break dynamo's own lazy load of that entry point (it
    registers the name itself right after importing this module)."""
    if BACKEND_NAME in torch._dynamo.list_backends(exclude_tags=()):
        return
    torch._dynamo.register_backend(compiler_fn=kiln_backend, name=BACKEND_NAME)


_register()

__all__ = ["BACKEND_NAME", "BackendError", "kiln_backend"]
