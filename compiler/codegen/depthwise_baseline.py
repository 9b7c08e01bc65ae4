"""cuDNN's depthwise conv as the tuning baseline of the kiln kernel that computes it.

With option ``depthwise_baseline``, lowering records each depthwise conv it makes a kiln
kernel of (``ir.DepthwiseConv``: its operands, window and window-sum expression). Fusion
then puts that expression inside some kernel's body, after the bias, norm or activation it
feeds. ``with_baselines`` finds the one kernel whose body holds the expression -- read at
the kernel's own index, or at its index permuted (ConvNeXt's conv stored NHWC for its
norm) -- and gives it a ``baseline`` in the GEMM templates' format (``matmul.baseline``,
run by ``autotune.baseline``):
``aten.convolution`` on views of the kernel's input and weight pointers, then, as the
library path's own kernel, the kernel's body with the conv read from the product (pointer
-1). The tuner times it as candidate ``Config(extern=1)``; ``depthwise_choices`` turns
such a win into the config ``{"extern": 1}`` under the conv's own key, which relowering
reads (``lowering.extern._depthwise``).

Not given a baseline (the kernel then tunes as before, and the conv stays kiln's): a conv
whose expression is in several kernels or in none found (a reduction or a multi-output
kernel read it, or a view other than a permutation), a kernel holding two convs, or a conv
whose operands are no strided views. The library path's weight is converted to the
input's type and layout once, before timing: the relowered module passes the graph's
weight, never converted per call.

Example:
    >>> depthwise_choices([], {"k": {"extern": 1}})
    {}
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import json
from typing import Mapping, Sequence

import sympy

from ..artifact import content_hash
from ..ir import (ComputedBuffer, DepthwiseConv, Expr, Load, Op, index_symbols, loads_of,
                  substitute, walk)
from ..lowering.common import cast_expr
from ..scheduler import FusedKernel
from .kernel import GeneratedKernel
from .matmul import arg_json, epilogue_json
from .triton import generate_kernel

PRODUCT = "conv_product"   # the library conv's result in the epilogue (pointer -1)


def with_baselines(steps: Sequence, kernels: list[GeneratedKernel],
                   convs: Sequence[DepthwiseConv]) -> list[GeneratedKernel]:
    """``kernels`` (emitted for ``steps``, in order) with each depthwise conv's one kernel
    given its baseline and a title line naming the conv (see the module doc)."""
    found: dict[int, list] = {}   # per conv (twin convs share a key, not a kernel)
    for k, step in enumerate(steps):
        buf = _single_buffer(step)
        for c, conv in enumerate(convs if buf is not None else ()):
            perm = _conv_in(buf, conv)
            if perm is not None:
                found.setdefault(c, []).append((k, buf, conv, perm))
    # a conv recomputed in two kernels has no one place to time, and a kernel holding two
    # convs has no one library call to time against
    single = [hits[0] for hits in found.values() if len(hits) == 1]
    per_kernel = collections.Counter(k for hits in found.values() for k, *_ in hits)
    out = list(kernels)
    for k, buf, conv, perm in single:
        if per_kernel[k] == 1:
            out[k] = _with_baseline(out[k], buf, conv, perm)
    return out


def depthwise_choices(kernels: Sequence, configs: Mapping[str, Mapping]) -> dict[str, dict]:
    """``{conv key: {"extern": 1}}`` for each of ``kernels`` (``KernelArtifact``s) that has
    a depthwise baseline and whose tuned config in ``configs`` (by kernel key) is the
    extern path: merged into the configs a module is relowered with, it sends those convs
    to cuDNN."""
    out = {}
    for kernel in kernels:
        tuned = configs.get(kernel.kernel_key)
        if not (tuned and tuned.get("extern") and kernel.spec.baseline):
            continue
        key = json.loads(kernel.spec.baseline).get("key")
        if key:
            out[key] = {"extern": 1}
    return out


def _single_buffer(step) -> ComputedBuffer | None:
    """The step's one pointwise buffer (what ``generate_kernel`` emits), else None."""
    if isinstance(step, FusedKernel) and len(step.nodes) == 1 \
            and type(step.nodes[0]) is ComputedBuffer:
        return step.nodes[0]
    return None


def _conv_in(buf: ComputedBuffer, conv: DepthwiseConv) -> tuple[int, ...] | None:
    """``perm`` such that ``buf``'s body holds the conv's element ``(i[perm[0]], ...)``
    (``i``: the buffer's index symbols), or None."""
    if conv.weight.name not in {load.buffer for load in loads_of(buf.body)}:
        return None
    size, out = tuple(buf.layout.size), tuple(conv.out.size)
    if len(size) != len(out):
        return None
    nodes = set(walk(buf.body))
    isyms = index_symbols(len(size))
    for perm in itertools.permutations(range(len(size))):
        if any(size[p] != n for p, n in zip(perm, out)):
            continue
        moved = _at(conv.body, [isyms[p] for p in perm])
        if moved in nodes:
            return perm
    return None


def _at(body: Expr, index: list) -> Expr:
    """``body`` (in ``i0, i1, ...``) at element ``index``."""
    return substitute(body, dict(zip(index_symbols(len(index)), index)))


def _with_baseline(kernel: GeneratedKernel, buf: ComputedBuffer, conv: DepthwiseConv,
                   perm: tuple[int, ...]) -> GeneratedKernel:
    """``kernel`` with the conv's title line and baseline JSON."""
    index = [index_symbols(len(perm))[p] for p in perm]
    product = cast_expr(Load(PRODUCT, conv.out.index(index), conv.out.dtype), conv.body.dtype)
    body = _replace(buf.body, _at(conv.body, index), product)
    baseline = {"op": "aten.convolution.default", "key": conv.key, "kwargs": {},
                "args": _conv_args(conv, kernel.buffers),
                "out": {"size": [int(s) for s in conv.out.size],
                        "stride": [int(s) for s in conv.out.stride]},
                "epilogue": _epilogue(buf, body, conv, index, kernel.buffers)}
    source = f"{_title(conv)}\n{kernel.source}"
    return dataclasses.replace(
        kernel, source=source, source_key=content_hash(source.replace(kernel.name, "KERNEL")),
        baseline=json.dumps(baseline, sort_keys=True))


def _conv_args(conv: DepthwiseConv, buffers: Sequence[str]) -> list[dict]:
    """``aten.convolution``'s arguments: the input as the kernel reads it, the weight
    converted once to the input's type and the library path's layout, no bias, the rest."""
    w_arg = {**arg_json(conv.weight, buffers),
             "copy": {"dtype": str(conv.out.dtype), "stride": list(conv.weight_stride)}}
    return [arg_json(conv.x, buffers), w_arg, {"value": None}] + [
        {"value": _plain(v)} for v in conv.params]


def _plain(value):
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else value


def _epilogue(buf: ComputedBuffer, body: Expr, conv: DepthwiseConv, index,
              buffers: Sequence[str]) -> dict | None:
    """The library path's own kernel for what the kernel computes after the conv, or None
    where that is nothing: the conv then writes the kernel's output itself."""
    bare = Load(PRODUCT, conv.out.index(index), conv.out.dtype)
    lay, out = buf.layout, conv.out
    same = (lay.dtype, lay.size, lay.stride, lay.offset) == (out.dtype, out.size, out.stride, 0)
    if same and _uncast(body, {out.dtype, conv.body.dtype}) == bare \
            and list(index) == index_symbols(len(index)):
        return None
    return epilogue_json(generate_kernel(ComputedBuffer(buf.name, buf.layout, body), 0),
                         PRODUCT, buffers)


def _uncast(e: Expr, dtypes: set) -> Expr:
    """``e`` without the casts to ``dtypes`` around it: the output's type and the wider
    accumulation type, between which the product's values round trip exactly."""
    while isinstance(e, Op) and e.op == "to_dtype" and e.dtype in dtypes:
        e = e.args[0]
    return e


def _replace(expr: Expr, old: Expr, new: Expr) -> Expr:
    """``expr`` with every occurrence of the subexpression ``old`` replaced by ``new``."""
    memo: dict[int, Expr] = {}

    def go(e: Expr) -> Expr:
        if id(e) not in memo:
            if hash(e) == hash(old) and e == old:
                out = new
            elif isinstance(e, Op):
                out = dataclasses.replace(e, args=tuple(go(a) for a in e.args))
            elif isinstance(e, Load) and e.indirect:
                out = dataclasses.replace(e, indirect=tuple((s, go(v)) for s, v in e.indirect))
            else:
                out = e
            memo[id(e)] = out
        return memo[id(e)]

    try:
        return go(expr)
    finally:
        del go   # the closure refers to itself


def _title(conv: DepthwiseConv) -> str:
    n, c, h, w = (int(s) for s in conv.x.size)
    kh, kw = (int(s) for s in conv.weight.size[2:])
    stride, padding, dilation = (list(v) for v in conv.params[:3])
    return (f"# depthwise conv {n}x{c}x{h}x{w} by {kh}x{kw}, stride {stride}, padding "
            f"{padding}, dilation {dilation}; tuned against aten.convolution")


__all__ = ["with_baselines", "depthwise_choices", "PRODUCT"]
