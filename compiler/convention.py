"""How a compiled module is called with a live ``nn.Module``: its calling convention.

A captured graph takes flat inputs (parameters, buffers, lifted constants, then the user's
flattened arguments) and returns flat outputs (mutated buffers' new values, then the user's
outputs). ``CallConvention`` turns a module call into those inputs and the outputs back
into what the module returns: the input specs, the pytree specs of the call and its result,
the mutated buffers and the constants. It is plain data with a JSON form (``to_json``), so a
serving process rebuilds it from the store with no capture (``from_json``); it imports only
torch, as the serving path must stay light.

Example:
    >>> import torch
    >>> from compiler.capture import capture_module
    >>> m = torch.nn.Linear(4, 2)
    >>> conv = CallConvention.from_json(capture_module(m, (torch.randn(3, 4),)).convention.to_json())
    >>> out = conv.finish_call(m, [m(conv.flatten_call(m, (torch.ones(3, 4),))[-1])])
    >>> torch.allclose(out, m(torch.ones(3, 4)))
    True
"""
from __future__ import annotations

import base64
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.utils._pytree as pytree

from .capture_pytree import register_library_pytrees, register_stored_types

CONVENTION_VERSION = 1
# Lifted constants up to this many bytes travel inside the convention's JSON; bigger ones
# are looked up on the module by name where a serving process rebuilds the call.
MAX_STORED_CONSTANT_BYTES = 1 << 20


class CaptureError(Exception):
    """A model or ``.pt2`` file could not be captured, or a call does not fit the captured
    one; the message names it and the cause is chained (``raise CaptureError(...) from
    err``)."""


@dataclass(frozen=True)
class InputSpec:
    """One placeholder of a captured graph.

    Example:
        >>> InputSpec("x", "user", None, (2, 3), (3, 1), "torch.float32", "cpu").kind
        'user'
    """
    name: str                    # placeholder name in gm
    kind: str                    # "parameter" | "buffer" | "constant" | "user"
    target: str | None           # state_dict / constants name; None for user inputs
    size: tuple[int, ...]        # example sizes (the hint, for dynamic dims)
    stride: tuple[int, ...]
    dtype: str                   # "torch.float32"
    device: str                  # device type only: "cpu" / "cuda"
    dynamic_dims: tuple[int, ...] = ()


@dataclass(frozen=True, eq=False, kw_only=True)
class CallConvention:
    """Everything needed to call a captured graph with a live module (see the module doc).

    ``scalar_inputs`` holds the non-tensor user leaves (ints, floats, ...) that export
    specialised into the graph: they have no placeholder, and a call must pass the same
    values. ``size_ranges``: each dynamic size symbol's (min, max or None).
    """
    name: str = ""
    inputs: tuple[InputSpec, ...]
    mutated_buffers: tuple[str, ...]
    in_spec: Any
    out_spec: Any
    constants: dict[str, torch.Tensor]
    scalar_inputs: tuple[tuple[int, Any], ...] = ()
    size_ranges: dict = field(default_factory=dict)   # size symbol -> (min, max or None)

    def state_inputs(self, module: torch.nn.Module) -> dict[int, torch.Tensor]:
        """Live parameters / buffers of ``module`` and the constants, by input position."""
        return {i: self._state_tensor(module, spec)
                for i, spec in enumerate(self.inputs) if spec.kind != "user"}

    def flatten_call(self, module: torch.nn.Module, args: Any, kwargs: Any = None, *,
                     check: bool = True) -> list[torch.Tensor]:
        """Flat inputs for the graph: live state of ``module`` by target, then the user's
        ``(args, kwargs)`` flattened with ``in_spec``. ``check`` compares user tensors with
        the captured dtypes and static sizes.

        Example:
            >>> import torch
            >>> from compiler.capture import capture_module
            >>> m = torch.nn.Linear(4, 2)
            >>> cg = capture_module(m, (torch.randn(3, 4),))
            >>> cg.flatten_call(m, (torch.ones(3, 4),))[0] is m.weight
            True
        """
        return self.bind(self.state_inputs(module), args, kwargs, check=check)

    def bind(self, state: dict[int, torch.Tensor], args: Any, kwargs: Any = None, *,
             check: bool = True) -> list[torch.Tensor]:
        """``flatten_call`` with the state already looked up (``state_inputs``). A caller
        that keeps ``state`` skips the lookups by name: ~60 of them in a 4-layer Llama cost
        ~0.8 ms a call on a 2-core host, more than its whole CUDA-graph replay."""
        user = iter(self._flatten_user(args, kwargs))
        flat = [state[i] if i in state else next(user) for i in range(len(self.inputs))]
        if check:
            self._check_user_tensors(flat)
        return flat

    def finish_call(self, module: torch.nn.Module, outputs: Sequence[torch.Tensor],
                    buffers: Sequence[torch.Tensor] | None = None) -> Any:
        """Apply a call's flat ``outputs``: write mutated buffers back into ``module``'s
        buffers in place, return the user outputs unflattened with ``out_spec``.
        ``buffers``: the mutated buffers' live tensors (``mutated_state``), else they are
        looked up on ``module`` by name. A buffer the call wrote in place (its output is
        the buffer itself) is not copied onto itself."""
        outputs = list(outputs)
        n_mut = len(self.mutated_buffers)
        if buffers is None:
            buffers = [_get_state(module, "buffer", t, self.name) for t in self.mutated_buffers]
        with torch.no_grad():
            for buf, value in zip(buffers, outputs[:n_mut]):
                if value is not buf:
                    buf.copy_(value)
        return pytree.tree_unflatten(outputs[n_mut:], self.out_spec)

    def mutated_state(self, module: torch.nn.Module,
                      state: dict[int, torch.Tensor]) -> list[torch.Tensor]:
        """The live tensor of each mutated buffer: the bound input where the buffer is
        one (export lifts every buffer it mutates), else looked up on ``module``."""
        where = {spec.target: i for i, spec in enumerate(self.inputs) if spec.kind == "buffer"}
        return [state[where[t]] if where.get(t) in state
                else _get_state(module, "buffer", t, self.name) for t in self.mutated_buffers]

    def _state_tensor(self, module: torch.nn.Module, spec: InputSpec) -> torch.Tensor:
        if spec.kind == "constant":
            return self.constants[spec.target]
        return _get_state(module, spec.kind, spec.target, self.name)

    def _flatten_user(self, args: Any, kwargs: Any) -> list[torch.Tensor]:
        args = args if isinstance(args, tuple) else (args,)
        kwargs = _reorder_kwargs(dict(kwargs or {}), self.in_spec)
        leaves, spec = pytree.tree_flatten((args, kwargs))
        if spec != self.in_spec:
            raise CaptureError(f"model {self.name!r}: called with {_call_text(spec)}, but it "
                               f"was captured with {_call_text(self.in_spec)}"
                               f"{_spec_difference(self.in_spec, spec)}")
        scalars = dict(self.scalar_inputs)
        tensors = []
        for i, leaf in enumerate(leaves):
            if i in scalars:
                if type(leaf) is not type(scalars[i]) or leaf != scalars[i]:
                    raise CaptureError(
                        f"model {self.name!r}: user input leaf {i} is {leaf!r}, but the graph "
                        f"was specialised on {scalars[i]!r}; capture again for this value")
            elif not isinstance(leaf, torch.Tensor):
                raise CaptureError(f"model {self.name!r}: user input leaf {i} must be a tensor, "
                                   f"got {type(leaf).__name__}")
            else:
                tensors.append(leaf)
        return tensors

    def _check_user_tensors(self, flat: Sequence[torch.Tensor]) -> None:
        for spec, t in zip(self.inputs, flat):
            if spec.kind != "user":
                continue
            static = [d for d in range(len(spec.size)) if d not in spec.dynamic_dims]
            if (str(t.dtype) != spec.dtype or t.dim() != len(spec.size)
                    or t.device.type != spec.device
                    or any(t.shape[d] != spec.size[d] for d in static)):
                raise CaptureError(
                    f"model {self.name!r}: input {spec.name!r} is {t.dtype}{list(t.shape)} on "
                    f"{t.device.type}, captured as {spec.dtype}{list(spec.size)} on "
                    f"{spec.device} (dynamic dims {list(spec.dynamic_dims)}); capture again "
                    f"for this signature")

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> str:
        """The convention as JSON: input specs, pytree specs (torch's own serialization),
        mutated buffers, scalar inputs, size ranges, and each lifted constant: its bytes
        when small (``MAX_STORED_CONSTANT_BYTES``), else only its name, to be found on the
        module. Raises ``ValueError`` where a pytree type has no serialized form."""
        return json.dumps({
            "version": CONVENTION_VERSION, "name": self.name,
            "inputs": [dataclasses.asdict(s) for s in self.inputs],
            "mutated_buffers": list(self.mutated_buffers),
            "in_spec": _dump_spec(self.in_spec), "out_spec": _dump_spec(self.out_spec),
            "scalar_inputs": [[k, v] for k, v in self.scalar_inputs],
            "size_ranges": {k: list(v) for k, v in self.size_ranges.items()},
            "constants": {k: _dump_tensor(v) for k, v in self.constants.items()}})

    @classmethod
    def from_json(cls, text: str, module: torch.nn.Module | None = None) -> "CallConvention":
        """Inverse of ``to_json``; constants stored by name only are taken from ``module``
        (a plain tensor attribute at that path), on the device of its parameters."""
        data = json.loads(text)
        if int(data.get("version", 0)) != CONVENTION_VERSION:
            raise ValueError(f"calling convention version {data.get('version')}: this kiln "
                             f"reads version {CONVENTION_VERSION}")
        inputs = tuple(InputSpec(**{**s, "size": tuple(s["size"]), "stride": tuple(s["stride"]),
                                    "dynamic_dims": tuple(s["dynamic_dims"])})
                       for s in data["inputs"])
        constants = {k: _load_tensor(k, v, module) for k, v in data["constants"].items()}
        in_spec, out_spec = _load_specs(data["in_spec"], data["out_spec"], module)
        return cls(name=data["name"], inputs=inputs,
                   mutated_buffers=tuple(data["mutated_buffers"]),
                   in_spec=in_spec, out_spec=out_spec,
                   constants=constants,
                   scalar_inputs=tuple((k, v) for k, v in data["scalar_inputs"]),
                   size_ranges={k: tuple(v) for k, v in data["size_ranges"].items()})


@dataclass(frozen=True)
class OpaqueSpec:
    """A pytree spec kept as its serialized text where this process cannot rebuild it (its
    types are registered by a library it never imported: a relower worker lowers without
    the model's code). ``to_json`` writes it back as it was; it never flattens a call.
    ``text`` None: the spec had no serialized form (``to_json`` raises ``ValueError``, as
    for the live spec).

    Example:
        >>> _dump_spec(OpaqueSpec('[1, {"type": null, "context": "null", "children_spec": []}]'))
        '[1, {"type": null, "context": "null", "children_spec": []}]'
    """
    text: str | None

    def __str__(self) -> str:
        return "a call whose pytree types are not registered in this process"


def _dump_spec(spec: Any) -> str | None:
    if isinstance(spec, OpaqueSpec):
        if spec.text is None:
            raise ValueError("the pytree spec has no serialized form")
        return spec.text
    return None if spec is None else pytree.treespec_dumps(spec)


def _load_specs(in_text: str | None, out_text: str | None, module) -> tuple[Any, Any]:
    """The stored input and output specs. A spec naming a library's type (a decoder's KV
    cache) needs it registered: by a stand-in that rebuilds it from the stored context
    (``register_stored_types``), else by the library's own registration, which ``module``
    (holding its code) triggers. The stand-in comes first: transformers' registration lives in
    its exporter, whose import can cost seconds on a serving process's way to its first
    result."""
    try:
        return _load_spec(in_text), _load_spec(out_text)
    except NotImplementedError as err:   # torch: "Deserializing <type> ... is not registered"
        if not register_stored_types(in_text, out_text) and (
                module is None or not register_library_pytrees(module)):
            raise _unknown_type(err) from None
    try:
        return _load_spec(in_text), _load_spec(out_text)
    except NotImplementedError as err:
        raise _unknown_type(err) from None


def _load_spec(text: str | None) -> Any:
    return None if text is None else pytree.treespec_loads(text)


def _unknown_type(err: Exception) -> ValueError:
    return ValueError(
        f"the stored calling convention holds a type torch's pytree does not know in this "
        f"process ({err}). Fix: import and register it before loading (kiln registers "
        f"transformers' cache types itself when the module given holds transformers code)")


def _dump_tensor(t: torch.Tensor) -> dict[str, Any]:
    t = t.detach()
    entry = {"dtype": str(t.dtype), "size": list(t.shape)}
    if t.numel() * t.element_size() <= MAX_STORED_CONSTANT_BYTES:
        raw = t.reshape(-1).contiguous().cpu().view(torch.uint8).numpy().tobytes() \
            if t.numel() else b""
        entry["data"] = base64.b64encode(raw).decode()
    return entry


def _load_tensor(name: str, entry: dict[str, Any], module: torch.nn.Module | None
                 ) -> torch.Tensor:
    dtype = getattr(torch, entry["dtype"].removeprefix("torch."))
    if "data" in entry:
        raw = bytearray(base64.b64decode(entry["data"]))
        flat = (torch.frombuffer(raw, dtype=torch.uint8) if raw else
                torch.empty(0, dtype=torch.uint8))
        t = flat.view(dtype).reshape(entry["size"])
    else:
        t = _attribute(module, name)
    device = _device_of(module)
    return t.to(device) if device is not None else t


def _attribute(module: torch.nn.Module | None, path: str) -> torch.Tensor:
    value = module
    for part in path.split("."):
        value = getattr(value, part, None)
    if not isinstance(value, torch.Tensor):
        raise CaptureError(f"the compiled module needs the constant {path!r}, which is too big "
                           f"to store and is no tensor attribute of the module given")
    return value


def _device_of(module: torch.nn.Module | None) -> torch.device | None:
    if module is None:
        return None
    for t in [*module.parameters(), *module.buffers()]:
        return t.device
    return None


def _get_state(module: torch.nn.Module, kind: str, target: str, name: str) -> torch.Tensor:
    try:
        if kind == "parameter":
            return module.get_parameter(target)
        return module.get_buffer(target)
    except AttributeError as err:
        raise CaptureError(f"model {name!r}: {type(module).__name__} has no {kind} "
                           f"{target!r} (is it the module that was captured?)") from err


def _reorder_kwargs(kwargs: dict, in_spec: Any) -> dict:
    """Order ``kwargs`` as in the captured call, so the pytree specs compare equal."""
    try:
        children = in_spec.children() if callable(getattr(in_spec, "children", None)) \
            else in_spec.children_specs       # older torch
        order = list(children[1].context)
    except (AttributeError, IndexError, TypeError):
        return kwargs
    if set(order) != set(kwargs):
        return kwargs  # the spec comparison reports the difference
    return {k: kwargs[k] for k in order}


def _call_text(spec: Any) -> str:
    """A call's (args, kwargs) pytree spec in words: "2 positional arguments (tensor, tuple
    of 2) and keyword arguments mask"."""
    try:
        args, kwargs = (spec.children() if callable(getattr(spec, "children", None))
                        else spec.children_specs)
        kinds = ["tensor" if a.is_leaf() else f"{a.type.__name__} of {a.num_children}"
                 for a in (args.children() if callable(getattr(args, "children", None))
                           else args.children_specs)]
        keys = list(kwargs.context or [])
    except (AttributeError, TypeError, ValueError):
        return str(spec)
    text = f"{len(kinds)} positional argument{'' if len(kinds) == 1 else 's'} ({', '.join(kinds)})"
    return text + (f" and keyword arguments {', '.join(map(str, keys))}" if keys
                   else " and no keyword arguments")


def _spec_difference(captured: Any, called: Any) -> str:
    """Where two call specs first differ, in words (": ..." or ""). Two calls alike at the
    top may differ deep inside: a Python value an input object keeps (a sliding-window
    cache's length, an int export specialises) read the same in ``_call_text``."""
    found = None
    if captured.num_children == called.num_children == 2:    # (args, kwargs)
        for name, a, b in zip(("args", "kwargs"), captured.children_specs,
                              called.children_specs):
            found = found or _first_difference(a, b, name)
    if found is None:
        return ""
    where, was, now, value = found
    why = (" (the graph was specialised on this Python value: keep it fixed, or capture a "
           "graph for each value)") if value else ""
    return f": {where} is {now}, captured with {was}{why}"


def _first_difference(a: Any, b: Any, path: str):
    """(path, captured, called, whether a plain value differs) of the first difference
    between two pytree specs or the contexts they keep; None where they are equal."""
    if a == b:
        return None
    if isinstance(a, pytree.TreeSpec) and isinstance(b, pytree.TreeSpec):
        if a.type is not b.type:
            return path, _type_name(a.type), _type_name(b.type), False
        if a.context != b.context:
            return _first_difference(a.context, b.context, path)
        keys = a.context if isinstance(a.context, (list, tuple)) and \
            len(a.context) == a.num_children else range(a.num_children)
        for key, ca, cb in zip(keys, a.children_specs, b.children_specs):
            found = _first_difference(ca, cb, f"{path}[{key!r}]")
            if found is not None:
                return found
        return path, f"{a.num_children} items", f"{b.num_children} items", False
    if isinstance(a, dict) and isinstance(b, dict):
        if a.get("_t") == b.get("_t") == "obj" and a.get("p") == b.get("p"):
            return _first_difference(a.get("s"), b.get("s"), path)   # an object's state
        for key in list(a) + [k for k in b if k not in a]:
            if a.get(key, _MISSING) != b.get(key, _MISSING):
                return _first_difference(a.get(key, _MISSING), b.get(key, _MISSING),
                                         f"{path}.{key}")
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        for k, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _first_difference(x, y, f"{path}[{k}]")
    return (path, _MISSING_TEXT if a is _MISSING else repr(a),
            _MISSING_TEXT if b is _MISSING else repr(b), True)


_MISSING = object()
_MISSING_TEXT = "absent"


def _type_name(t: Any) -> str:
    return getattr(t, "__name__", str(t))


def random_input(spec: InputSpec, gen: torch.Generator) -> torch.Tensor:
    """A random tensor laid out as ``spec``: normal floats, small non-negative ints
    (valid as indices into anything), random bools. Never all zeros."""
    dtype = getattr(torch, spec.dtype.removeprefix("torch."))
    numel = 1 + sum((n - 1) * s for n, s in zip(spec.size, spec.stride)) if all(spec.size) else 0
    if dtype.is_floating_point:
        flat = torch.randn(numel, generator=gen).to(dtype)
    elif dtype == torch.bool:
        flat = torch.randint(0, 2, (numel,), generator=gen).bool()
    else:
        flat = torch.randint(1, 3, (numel,), generator=gen).to(dtype)
    out = flat.as_strided(spec.size, spec.stride)
    return out.to(spec.device) if spec.device != "cpu" else out


