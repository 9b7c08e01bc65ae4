"""Model inputs and outputs that are not plain tensors: library types and torch's pytree.

torch.export flattens a model's inputs and outputs with torch's pytree, so an object it does
not know (transformers' ``DynamicCache``, returned by every decoder LLM called with
``use_cache``) stops capture. Libraries register their own types as torch.export users do;
``register_library_pytrees`` asks each library the process has imported to do so
(``PROVIDERS``: transformers today), and ``output_check`` turns any output type still unknown
into a ``CaptureError`` that names it and the fix. ``leaf_shapes`` writes ``dynamic_shapes``
for a registered input such as a KV cache. A serving process that reads a stored spec naming
such a type registers a stand-in instead (``register_stored_types``): it rebuilds the type
without the library's registration, which can cost seconds to import (transformers 5.17's
exporter), and hands over to that registration the first time something is flattened.

This is the one module that calls torch's private pytree registry (``torch.utils._pytree``;
there is no public registration for arbitrary classes). Fallback: where a library offers no
registration, nothing is registered and ``output_check`` reports the type; where a stand-in is
unsure of a stored context, or torch lacks the private registry calls it uses, none is
registered and the library registers its types itself, as at capture.

Example:
    >>> import torch
    >>> from torch.export import Dim
    >>> leaf_shapes((torch.randn(2, 3), [torch.randn(4)]), {0: Dim.DYNAMIC})
    ({0: DimHint(DYNAMIC)}, [{0: DimHint(DYNAMIC)}])
"""
from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.utils._pytree as pytree

from .pytree_stand_in import StandIn, transformers_stand_in

# Leaves torch.export takes as they are (tensors, or constants it specialises on).
_PLAIN_LEAVES = (torch.Tensor, int, float, bool, str, type(None), torch.SymInt,
                 torch.SymFloat, torch.SymBool)


@dataclass(frozen=True)
class PytreeProvider:
    """A library that can register its own types with torch's pytree.

    ``package`` is its top-level import name: the provider runs only once the process has
    imported it (a model holding its types must have), so capture never pays for importing
    a library the model does not use. ``register(objects)`` registers what ``objects`` (the
    library's modules and values met in a call, one per defining file) need.
    ``stand_in(type_name, contexts)``: for a type a stored spec names, the class and an
    unflatten function that need no import of the library's registration, or None where unsure.
    """
    package: str
    register: Callable[[list], None]
    stand_in: Callable[[str, list], StandIn | None] | None = None


def _register_transformers(objects: list) -> None:
    """transformers' own registration of its cache classes (DynamicCache, StaticCache,
    EncoderDecoderCache, ... and a model file's own ``*Cache`` classes), as its exporter
    runs before ``torch.export``. Older releases offer only DynamicCache's."""
    try:   # transformers 5.x
        from transformers.exporters.exporter_dynamo import register_cache_pytrees_for_model
    except ImportError:
        register_cache_pytrees_for_model = None
    if register_cache_pytrees_for_model is not None:
        # It registers every Cache subclass, plus the ``*Cache`` classes of the file that
        # defines what it is given: transformers' objects only, never the user's own file.
        for obj in objects:
            register_cache_pytrees_for_model(obj)
        return
    try:   # transformers 4.5x: DynamicCache only
        from transformers.integrations.executorch import register_dynamic_cache_export_support
    except ImportError:
        return
    register_dynamic_cache_export_support()


PROVIDERS: tuple[PytreeProvider, ...] = (
    PytreeProvider("transformers", _register_transformers, transformers_stand_in),
)


def register_library_pytrees(*values: Any) -> tuple[str, ...]:
    """Let each library in ``PROVIDERS`` that defines one of ``values`` (a model and its
    submodules, call arguments and their leaves) register its types; returns the packages
    asked. Registration is global and idempotent.

    Example:
        >>> import torch
        >>> register_library_pytrees(torch.nn.Linear(2, 2), (torch.ones(2),))
        ()
    """
    asked = []
    for provider in PROVIDERS:
        if provider.package not in sys.modules:
            continue     # nothing of it can be here
        objects = _defined_in(provider.package, values)
        if objects:
            provider.register(objects)
            asked.append(provider.package)
    return tuple(asked)


def _defined_in(package: str, values: tuple) -> list:
    """One object per file of ``package`` among ``values``, their submodules and leaves."""
    found: dict[str, Any] = {}
    for value in values:
        candidates = (value.modules() if isinstance(value, torch.nn.Module)
                      else pytree.tree_leaves(value))
        for obj in candidates:
            where = type(obj).__module__
            if where == package or where.startswith(package + "."):
                found.setdefault(where, obj)
    return list(found.values())


# The private pair a stand-in needs: registering into torch's Python pytree only (the C++ one
# never sees a stand-in, so the library's later registration there cannot clash), and removing
# it again. Without them no stand-in is registered (``register_stored_types`` says False).
_CAN_STAND_IN = all(hasattr(pytree, f) for f in ("_private_register_pytree_node",
                                                  "_deregister_pytree_node"))


def register_stored_types(*spec_texts: str | None) -> bool:
    """For each type the stored pytree specs ``spec_texts`` (``treespec_dumps`` text) name and
    torch does not know here, register its library's stand-in (``PytreeProvider.stand_in``),
    all or none; True when it did. Only a library the process has imported is asked.

    Example:
        >>> spec = {"type": "nowhere:Cache", "context": "{}", "children_spec": []}
        >>> register_stored_types(json.dumps([1, spec]))
        False
    """
    needed = _unknown_types(spec_texts)
    stand_ins = {name: _stand_in(name, contexts) for name, contexts in needed.items()}
    if not stand_ins or not _CAN_STAND_IN or None in stand_ins.values():
        return False
    if any(s.cls in pytree.SUPPORTED_NODES for s in stand_ins.values()):
        return False      # registered under another name (an older release's): not ours to replace
    for name, stand_in in stand_ins.items():
        pytree._private_register_pytree_node(
            stand_in.cls, _flatten_stand_in, stand_in.unflatten, serialized_type_name=name,
            flatten_with_keys_fn=_flatten_with_keys_stand_in)
    return True


def _unknown_types(spec_texts: tuple) -> dict[str, list]:
    """Each serialized type name of ``spec_texts`` torch does not know: its contexts."""
    found: dict[str, list] = {}
    nodes = [json.loads(text)[1] for text in spec_texts if text is not None]
    while nodes:
        node = nodes.pop()
        name = node.get("type")
        if name is not None and name not in pytree.SERIALIZED_TYPE_TO_PYTHON_TYPE:
            found.setdefault(name, []).append(json.loads(node["context"]))
        nodes.extend(node.get("children_spec", ()))
    return found


def _stand_in(type_name: str, contexts: list) -> StandIn | None:
    package = type_name.split(":")[0].split(".")[0]
    for provider in PROVIDERS:
        if (provider.package == package and package in sys.modules
                and provider.stand_in is not None):
            return provider.stand_in(type_name, contexts)
    return None


def _flatten_stand_in(obj: Any) -> tuple[list, Any]:
    return _hand_over(obj).flatten_fn(obj)


def _flatten_with_keys_stand_in(obj: Any) -> tuple[list, Any]:
    node = _hand_over(obj)
    if node.flatten_with_keys_fn is None:
        raise ValueError(f"{type(obj).__qualname__} was registered without key paths")
    return node.flatten_with_keys_fn(obj)


def _hand_over(obj: Any) -> Any:
    """The library's own node for ``obj``'s type, which replaces the stand-in now: a stand-in
    only rebuilds, and a flattened cache (passed in, or captured) must get the very context
    the library writes."""
    cls = type(obj)
    if pytree.SUPPORTED_NODES[cls].flatten_fn is _flatten_stand_in:
        pytree._deregister_pytree_node(cls)
    register_library_pytrees(obj)
    node = pytree.SUPPORTED_NODES.get(cls)
    if node is None:
        raise TypeError(f"{cls.__module__}.{cls.__qualname__}: its library no longer "
                        f"registers it with torch's pytree, so it cannot be flattened")
    return node


def unknown_leaves(value: Any) -> list[tuple[str, type]]:
    """``(path, type)`` of each leaf of ``value`` that is neither a tensor nor a constant:
    an object torch's pytree does not know, so it cannot be a graph output.

    Example:
        >>> import torch
        >>> class Box:
        ...     pass
        >>> [(path, t.__name__) for path, t in unknown_leaves({"x": torch.ones(1), "s": Box()})]
        [("['s']", 'Box')]
    """
    if all(isinstance(leaf, _PLAIN_LEAVES) for leaf in pytree.tree_leaves(value)):
        return []
    try:
        leaves = [(pytree.keystr(path), leaf)
                  for path, leaf in pytree.tree_flatten_with_path(value)[0]]
    except ValueError:   # a type registered without key paths: name leaves by position
        leaves = [(f" leaf {k}", leaf) for k, leaf in enumerate(pytree.tree_leaves(value))]
    return [(path, type(leaf)) for path, leaf in leaves if not isinstance(leaf, _PLAIN_LEAVES)]


def unknown_output_message(name: str, path: str, cls: type) -> str:
    """The error for an output of a type torch's pytree does not know: the type and the fix.

    Example:
        >>> print(unknown_output_message("m", "[1]", dict).splitlines()[0])
        model 'm': output[1] is a builtins.dict, which torch's pytree does not know, so it cannot be captured.
    """
    qualname = f"{cls.__module__}.{cls.__qualname__}"
    return (f"model {name!r}: output{path} is a {qualname}, which torch's pytree does not "
            f"know, so it cannot be captured.\n"
            f"Fix: register the type before compiling, e.g. "
            f"torch.utils._pytree.register_pytree_node({cls.__qualname__}, flatten_fn, "
            f"unflatten_fn) (kiln registers transformers' cache types itself once transformers "
            f"is imported), or return its tensors instead.")


@contextlib.contextmanager
def output_check(module: torch.nn.Module, error: Callable[[str], Exception],
                 name: str) -> Iterator[None]:
    """While capturing, raise ``error(message)`` as soon as ``module`` returns a leaf torch's
    pytree does not know, instead of torch.export's generic refusal after tracing.

    Example:
        >>> import torch
        >>> class Box(torch.nn.Module):
        ...     def forward(self, x):
        ...         return x, object()
        >>> box = Box()
        >>> with output_check(box, ValueError, "box"):  # doctest: +ELLIPSIS
        ...     box(torch.ones(1))
        Traceback (most recent call last):
        ValueError: model 'box': output[1] is a builtins.object, which torch's pytree ...
    """
    def hook(_module, _args, output):
        if torch.compiler.is_dynamo_compiling():
            return        # strict export's dynamo: it reports unknown outputs itself
        bad = unknown_leaves(output)
        if bad:
            raise error(unknown_output_message(name, *bad[0]))

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def leaf_shapes(value: Any, dims: dict) -> Any:
    """``dynamic_shapes`` for one input of ``torch.export``: every tensor leaf of ``value``
    gets those of ``dims`` (dim -> ``Dim``) it has, following the structure export expects: lists, tuples
    and dicts as themselves, a registered class (a KV cache) as the list of its flattened
    children. For a decode step: ``{"cache": leaf_shapes(cache, {2: Dim.DYNAMIC})}``.

    Example:
        >>> import torch
        >>> leaf_shapes({"a": torch.ones(2), "n": 3}, {0: "dyn"})
        {'a': {0: 'dyn'}, 'n': None}
    """
    if isinstance(value, torch.Tensor):   # bookkeeping scalars (a cache's length) stay static
        return {d: dim for d, dim in dims.items() if d < value.dim()} or None
    register_library_pytrees(value)       # a cache made before anything was compiled
    if type(value) in (list, tuple):
        return type(value)(leaf_shapes(v, dims) for v in value)
    if type(value) is dict:
        return {k: leaf_shapes(v, dims) for k, v in value.items()}
    node = pytree.SUPPORTED_NODES.get(type(value))
    if node is None:
        return None
    children, _ = node.flatten_fn(value)
    return [leaf_shapes(child, dims) for child in children]


__all__ = ["PROVIDERS", "PytreeProvider", "leaf_shapes", "output_check",
           "register_library_pytrees", "register_stored_types", "unknown_leaves",
           "unknown_output_message"]
