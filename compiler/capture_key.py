"""The canonical text of a captured graph and its key: what makes one model one key.

``graph_text`` prints an ATen graph with no names, devices, ids or stack traces (nodes by
position, symbolic sizes renamed in order of appearance); ``compute_graph_key`` hashes it
with the input signature (``capture.InputSpec``s), tiny constants' bytes and the torch
release. Two captures of one model agree on the key wherever they ran.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import sympy
import torch
import torch.fx

from .convention import CaptureError

# Bump when the canonical text changes shape, so old keys can never collide with new ones.
GRAPH_TEXT_VERSION = "kiln-graph-v1"

# Lifted constants up to this many elements may be inlined into kernels as literals, so their
# bytes enter the graph key. Bigger constants are passed as inputs (like parameters): only
# their spec enters the key, so two processes building the same model agree on the key even
# if a big constant was drawn at random. The compiler must not inline anything bigger.
TINY_CONSTANT_NUMEL = 64


def torch_version_for_key() -> str:
    """``torch.__version__`` without the local part: ``2.11.0+cu126`` and ``2.11.0+cpu`` are
    the same source release, so they export and decompose identically and must give the same
    key (pipelines capture on CPU workers for GPU targets). Anything before the ``+``
    (release, pre-release, ``.dev2026...`` nightly date) changes the key.

    Example:
        >>> "+" in torch_version_for_key()
        False
    """
    return str(torch.__version__).split("+", 1)[0]


def graph_text(gm: torch.fx.GraphModule) -> str:
    """Canonical text of ``gm``: nodes renamed positionally (``%0``, ``%1``, ...), call
    targets by qualified name, arguments printed canonically (floats by ``repr``, no
    devices (the same graph keys the same wherever it was captured), symbolic sizes renamed ``d0, d1, ...`` in order of appearance), node types
    from ``meta['val']``. No node names, stack traces, ids or addresses.

    Example:
        >>> import torch
        >>> ep = torch.export.export(torch.nn.ReLU(), (torch.randn(3),))
        >>> print(graph_text(ep.graph_module))
        %0 = placeholder : torch.float32[3] stride=[1]
        %1 = aten.relu.default(%0) : torch.float32[3]
        output (%1,)
    """
    return "\n".join(_GraphPrinter(_SymNames()).lines(gm))


def compute_graph_key(gm: torch.fx.GraphModule, inputs: Sequence[Any], extra: str = "",
                      *, constants: Mapping[str, torch.Tensor] | None = None) -> str:
    """sha256 hex of: kiln's text version, torch version (``torch_version_for_key``), the
    input signature (kind, dtype, sizes, strides, dynamic dims; not device, names or
    targets, which do not change the computation), the bytes of tiny constants,
    ``graph_text(gm)`` and ``extra``.

    Example:
        >>> import torch
        >>> ep = torch.export.export(torch.nn.ReLU(), (torch.randn(3),))
        >>> from compiler.capture import InputSpec
        >>> spec = InputSpec("x", "user", None, (3,), (1,), "torch.float32", "cpu")
        >>> compute_graph_key(ep.graph_module, [spec]) == compute_graph_key(
        ...     ep.graph_module, [spec])
        True
    """
    lines = [GRAPH_TEXT_VERSION, f"torch {torch_version_for_key()}", "inputs:"]
    lines += [_spec_line(i, s) for i, s in enumerate(inputs)]
    lines += ["constants:"] + [_constant_line(s.target, (constants or {}).get(s.target))
                               for s in inputs if s.kind == "constant"]
    lines += ["graph:", graph_text(gm), f"extra {extra!r}"]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _spec_line(i: int, spec: Any) -> str:
    # No device: a graph captured on a CPU worker for a GPU target must key the same as the
    # one a serving process captures on the GPU; the module key adds the target.
    if spec.dynamic_dims:  # example sizes of dynamic dims must not enter the key
        size = ["?" if d in spec.dynamic_dims else n for d, n in enumerate(spec.size)]
        return (f"{i} {spec.kind} {spec.dtype} size={size} stride=symbolic "
                f"dynamic={list(spec.dynamic_dims)}")
    return (f"{i} {spec.kind} {spec.dtype} size={list(spec.size)} "
            f"stride={list(spec.stride)}")


def _constant_line(target: str | None, value: torch.Tensor | None) -> str:
    if value is None or value.numel() > TINY_CONSTANT_NUMEL:
        return f"{target!r} passed as input"
    return f"{target!r} {_tensor_digest(value)}"


def _tensor_digest(t: torch.Tensor) -> str:
    """Spec and sha256 of a real tensor's bytes (fake/meta tensors: spec only)."""
    head = f"tensor {t.dtype}{list(t.shape)}"
    if t.device.type == "meta" or type(t).__name__ == "FakeTensor":
        return head
    data = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
    return f"{head} sha256={hashlib.sha256(data.numpy().tobytes()).hexdigest()}"


@dataclass(frozen=True)
class _SymNames:
    """Canonical names for the free symbols of symbolic sizes: ``d0, d1, ...`` in order of
    first appearance, so names chosen by export (``s77``) never reach the key."""
    names: dict = field(default_factory=dict)

    def fmt(self, value: Any) -> str:
        expr = value.node.expr if hasattr(value, "node") else value
        if not isinstance(expr, sympy.Basic):
            return repr(expr)
        for sym in sorted(expr.free_symbols - self.names.keys(), key=str):
            self.names[sym] = sympy.Symbol(f"d{len(self.names)}", integer=True)
        return str(expr.xreplace(self.names))


@dataclass(frozen=True)
class _GraphPrinter:
    """Prints one graph (and its subgraphs) canonically; see ``graph_text``."""
    syms: _SymNames
    ids: dict = field(default_factory=dict)

    def lines(self, gm: torch.fx.GraphModule) -> list[str]:
        out = []
        for node in gm.graph.nodes:
            self.ids[node] = f"%{len(self.ids)}"
            out.extend(self._node(gm, node))
        return out

    def _node(self, gm: torch.fx.GraphModule, node: torch.fx.Node) -> list[str]:
        me, typ = self.ids[node], self._type(node)
        if node.op == "placeholder":
            return [f"{me} = placeholder{typ}"]
        if node.op == "output":
            return [f"output {self.arg(node.args[0])}"]
        if node.op == "get_attr":
            return self._get_attr(gm, node)
        call = f"{_target_name(node.target)}({self._call_args(node)})"
        if node.op != "call_function":
            call = f"{node.op} {call}"
        return [f"{me} = {call}{typ}"]

    def _call_args(self, node: torch.fx.Node) -> str:
        args = node.args
        if _target_name(node.target).startswith("aten._assert"):
            # Assertion messages quote node and symbol names; they change no computation.
            args = tuple("<msg>" if isinstance(a, str) else a for a in args)
        parts = [self.arg(a) for a in args]
        parts += [f"{k}={self.arg(node.kwargs[k])}" for k in sorted(node.kwargs)]
        return ", ".join(parts)

    def _get_attr(self, gm: torch.fx.GraphModule, node: torch.fx.Node) -> list[str]:
        value = _fetch_attr(gm, node.target)
        me = self.ids[node]
        if isinstance(value, torch.fx.GraphModule):
            sub = _GraphPrinter(self.syms).lines(value)
            return [f"{me} = subgraph {{"] + ["  " + line for line in sub] + ["}"]
        if isinstance(value, torch.Tensor):
            return [f"{me} = {_tensor_digest(value)}"]
        return [f"{me} = attr {self.arg(value)}"]

    def _type(self, node: torch.fx.Node) -> str:
        val = node.meta.get("val")
        if val is None:
            return ""
        text = self._val(val)
        if node.op == "placeholder" and isinstance(val, torch.Tensor):
            text += f" stride={self.arg(list(val.stride()))}"
        return f" : {text}"

    def _val(self, val: Any) -> str:
        if isinstance(val, torch.Tensor):
            return f"{val.dtype}{self.arg(list(val.shape))}"
        if isinstance(val, (list, tuple)):
            return "(" + ", ".join(self._val(v) for v in val) + ")"
        return self.arg(val)

    def arg(self, a: Any) -> str:
        """Canonical text of one argument (recursive over containers)."""
        if isinstance(a, torch.fx.Node):
            return self.ids[a]
        if isinstance(a, (torch.SymInt, torch.SymFloat, torch.SymBool)):
            return f"Sym({self.syms.fmt(a)})"
        if isinstance(a, tuple):
            inner = ", ".join(self.arg(x) for x in a)
            return f"({inner},)" if len(a) == 1 else f"({inner})"
        if isinstance(a, list):
            return "[" + ", ".join(self.arg(x) for x in a) + "]"
        if isinstance(a, dict):
            items = sorted(a.items(), key=lambda kv: str(kv[0]))
            return "{" + ", ".join(f"{self.arg(k)}: {self.arg(v)}" for k, v in items) + "}"
        if isinstance(a, slice):
            return f"slice({self.arg(a.start)}, {self.arg(a.stop)}, {self.arg(a.step)})"
        if isinstance(a, torch.device):
            return "device"  # device-neutral: the wrapper runs on its inputs' device
        if isinstance(a, torch.Tensor):
            return _tensor_digest(a)
        return _scalar_text(a)


def _scalar_text(a: Any) -> str:
    if a is None or isinstance(a, (bool, int, float, complex, str)):
        return repr(a)  # repr of a float round-trips exactly; -0.0, inf, nan stay distinct
    if isinstance(a, (torch.dtype, torch.memory_format, torch.layout)):
        return str(a)
    text = repr(a)
    if " at 0x" in text:
        raise CaptureError(f"cannot print graph argument of type {type(a).__qualname__} "
                           f"canonically: {text}")
    return f"{type(a).__qualname__}({text})"


def _target_name(target: Any) -> str:
    """Qualified, process-independent name of a call target."""
    if isinstance(target, str):  # call_method / call_module
        return target
    if isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return str(target)  # "aten.addmm.default"
    if isinstance(target, torch._ops.HigherOrderOperator):
        return f"hop.{target.name()}"
    module = getattr(target, "__module__", None) or ""
    qualname = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    if qualname is None:
        raise CaptureError(f"cannot name graph call target {target!r}")
    return f"{module}.{qualname}".lstrip(".")


def _fetch_attr(gm: torch.nn.Module, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj
