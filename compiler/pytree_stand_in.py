"""Rebuilding transformers' cache objects from a stored pytree spec without its exporter.

A decoder's stored output spec names transformers' cache classes (``DynamicCache``) with the
context transformers' own pytree registration wrote: JSON data that describes the object
(``{"_t": "obj", "p": "transformers.cache_utils:DynamicCache", "s": {...}}``, tensors as
``{"_t": "tensor", "i": k}``, the k-th leaf). That registration lives in transformers'
exporter, whose import can cost seconds (in some releases its package imports every exporter
and, through their patch tables, many model files), while a serving process only rebuilds
outputs. ``transformers_stand_in`` reads the stored contexts itself: it returns the class and
an unflatten function where it knows every tag and class they hold, and None where unsure, so
that transformers' own registration is used. Flattening (a cache passed in) still goes to
transformers (``capture_pytree``).

Example:
    >>> import torch
    >>> rebuild({"_t": "seq", "p": "builtins:tuple", "v": [{"_t": "tensor", "i": 0}, 3]},
    ...         [torch.ones(1)])
    (tensor([1.]), 3)
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch

_PLAIN = (type(None), bool, int, float, str)
# Each tag of transformers' context (5.17 to 5.25) and the keys its entry holds.
_TAG_KEYS = {"tensor": ("i",), "sym": ("i",), "layout": ("n",), "dtype": ("n",),
             "device": ("s",), "size": ("v",), "items": ("v",), "type": ("p",),
             "map": ("p", "v"), "seq": ("p", "v"), "obj": ("p", "s")}


@dataclass(frozen=True)
class StandIn:
    """What a serving process registers for a stored type: the class and its unflatten."""
    cls: type
    unflatten: Callable[[Any, Any], Any]


def find_class(path: str) -> type | None:
    """The class at ``module:qualname`` (transformers' form) or ``module.name``; None where
    there is none. Imports the module only where it exists.

    Example:
        >>> [find_class(p) for p in ("builtins:tuple", "collections.OrderedDict", "no.such:X")]
        [<class 'tuple'>, <class 'collections.OrderedDict'>, None]
    """
    module_name, _, qualname = path.partition(":") if ":" in path else path.rpartition(".")
    module = sys.modules.get(module_name)
    if module is None:
        parts = module_name.split(".")
        # find_spec of a prefix imports its parent, which the step before found
        if not module_name or any(importlib.util.find_spec(".".join(parts[:k])) is None
                                  for k in range(1, len(parts) + 1)):
            return None
        module = importlib.import_module(module_name)
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, type) else None


def readable(ctx: Any) -> bool:
    """Whether ``rebuild`` knows every tag and class of ``ctx``.

    Example:
        >>> readable({"_t": "obj", "p": "types:SimpleNamespace", "s": {"n": 1}})
        True
        >>> readable({"_t": "a tag from a later release"})
        False
    """
    if isinstance(ctx, _PLAIN):
        return True
    if type(ctx) is list:
        return all(readable(v) for v in ctx)
    if type(ctx) is not dict:
        return False
    if "_t" not in ctx:
        return all(readable(v) for v in ctx.values())
    keys = _TAG_KEYS.get(ctx["_t"])
    if keys is None or any(k not in ctx for k in keys):
        return False
    if "p" in ctx and find_class(str(ctx["p"])) is None:
        return False
    children = _CHILDREN[ctx["_t"]](ctx)
    return children is not None and all(readable(v) for v in children)


def _pairs(v: Any) -> list | None:
    return ([b for _, b in v] if type(v) is list and all(type(p) is list and len(p) == 2
                                                         for p in v) else None)


# Per tag: the parts of an entry that are contexts again ([] for none), None where malformed.
_CHILDREN: dict[str, Callable[[dict], Any]] = {
    "tensor": lambda c: [] if type(c["i"]) is int else None,
    "sym": lambda c: [] if type(c["i"]) is int else None,
    "layout": lambda c: [] if isinstance(getattr(torch, str(c["n"]), None), torch.layout) else None,
    "dtype": lambda c: [] if isinstance(getattr(torch, str(c["n"]), None), torch.dtype) else None,
    "device": lambda c: [] if type(c["s"]) is str else None,
    "size": lambda c: [] if type(c["v"]) is list else None,
    "items": lambda c: _pairs(c["v"]),
    "type": lambda c: [],
    "map": lambda c: list(c["v"].values()) if type(c["v"]) is dict else None,
    "seq": lambda c: c["v"] if type(c["v"]) is list else None,
    "obj": lambda c: list(c["s"].values()) if type(c["s"]) is dict else None,
}


def rebuild(ctx: Any, leaves: Any) -> Any:
    """The object ``ctx`` describes, with ``leaves[i]`` for each ``{"_t": "tensor", "i": i}``:
    as transformers' own unflatten builds it (an ``obj`` is made with ``cls.__new__`` and its
    ``__dict__`` filled; a ``seq`` by ``cls(items)``, or ``cls(*items)`` for a named tuple)."""
    if isinstance(ctx, _PLAIN):
        return ctx
    if type(ctx) is list:
        return [rebuild(v, leaves) for v in ctx]
    if "_t" not in ctx:
        return {k: rebuild(v, leaves) for k, v in ctx.items()}
    return _BUILD[ctx["_t"]](ctx, leaves)


def _seq(ctx: dict, leaves: Any) -> Any:
    cls, items = find_class(ctx["p"]), [rebuild(v, leaves) for v in ctx["v"]]
    try:
        return cls(items)
    except TypeError:       # a named tuple takes its fields one by one
        return cls(*items)


def _obj(ctx: dict, leaves: Any) -> Any:
    cls = find_class(ctx["p"])
    instance = cls.__new__(cls)
    for k, v in ctx["s"].items():
        instance.__dict__[k] = rebuild(v, leaves)
    return instance


_BUILD: dict[str, Callable[[dict, Any], Any]] = {
    "tensor": lambda c, leaves: leaves[c["i"]],
    "sym": lambda c, leaves: leaves[c["i"]],
    "layout": lambda c, _: getattr(torch, c["n"]),
    "dtype": lambda c, _: getattr(torch, c["n"]),
    "device": lambda c, _: torch.device(c["s"]),
    "size": lambda c, _: torch.Size(c["v"]),
    "items": lambda c, leaves: {k: rebuild(v, leaves) for k, v in c["v"]},
    "type": lambda c, _: find_class(c["p"]),
    "map": lambda c, leaves: find_class(c["p"])({k: rebuild(v, leaves)
                                                 for k, v in c["v"].items()}),
    "seq": _seq,
    "obj": _obj,
}


def _unflatten(children: Any, context: Any) -> Any:
    return rebuild(context, list(children))


def transformers_stand_in(type_name: str, contexts: list) -> StandIn | None:
    """The stand-in for transformers' stored type ``type_name`` (``module:qualname``, as its
    exporter names the classes it registers), given every context stored for it; None where
    the name is not in that form or a context holds what ``rebuild`` does not know.

    Example:
        >>> transformers_stand_in("transformers.modeling_outputs.ModelOutput", [None]) is None
        True
    """
    if ":" not in type_name:      # a name transformers registers itself on import, or another's
        return None
    cls = find_class(type_name)
    if cls is None or not all(isinstance(c, dict) and c.get("p") == type_name and readable(c)
                              for c in contexts):
        return None
    return StandIn(cls, _unflatten)


__all__ = ["StandIn", "find_class", "readable", "rebuild", "transformers_stand_in"]
