"""The decomposition table kiln captures with: the ATen op set its lowerings cover.

Core ATen's table, minus the composites kiln lowers whole (``_ops_kept``), plus the
composites it would rather see as reductions and pointwise ops (``_ops_decomposed``). Both
capture paths (``capture`` and ``capture_trace``) and ``compile_fx`` use it.
"""
from __future__ import annotations

import functools
from typing import Any

import torch


def _ops_kept() -> list[Any]:
    """Ops that core ATen would decompose but kiln keeps as single ops."""
    aten = torch.ops.aten
    return [
        # One extern call (flash / memory-efficient attention, or kiln's own attention
        # template) beats the bmm + softmax + bmm decomposition, which materialises the
        # T x T score matrix. Keeping the CIA op also keeps the graph device-neutral: its own
        # decomposition picks a backend-specific op (_scaled_dot_product_flash_attention_for_cpu
        # on CPU, _scaled_dot_product_*_attention on CUDA) at capture time, which would make
        # the key of a CPU capture differ from a CUDA one and bake in the capture machine.
        aten.scaled_dot_product_attention.default,
        # silu is one pointwise op for kiln (x * sigmoid(x) computed in fp32 in one expression);
        # keeping it keeps graphs short and readable, and it fuses like any pointwise op.
        # (gelu and sigmoid are core ATen already, so they stay single ops without asking.)
        aten.silu.default,
        # Same for hardswish / hardsigmoid: one piecewise-linear pointwise op each, which
        # kiln lowers directly (compiler/lowering/pointwise.py); their decompositions
        # (clamp, add, mul, div) compute the same values in four ops.
        aten.hardswish.default,
        aten.hardsigmoid.default,
    ]


def _ops_decomposed() -> list[Any]:
    """Ops that core ATen keeps but kiln decomposes into reductions + pointwise ops."""
    aten = torch.ops.aten
    return [
        # Normalisations and softmax are composites of reductions (var_mean, amax, sum) and
        # pointwise ops; kiln's scheduler fuses them into one or two kernels with their
        # neighbours (a residual add before LayerNorm, the GEMM epilogue after BatchNorm),
        # which a monolithic op would prevent. var_mean itself stays (core ATen): its
        # decomposition goes through prims (prims.var, prims.broadcast_in_dim), and kiln
        # lowers it as one reduction.
        aten.native_layer_norm,
        aten._softmax,
        aten._log_softmax,
        aten.native_group_norm,
        # BatchNorm: _functional is train mode (buffer mutations); InstanceNorm lands on
        # _legit.no_stats. Eval mode's _no_training is kept and lowered whole (see
        # compiler/lowering/norm.py) unless its saved statistics are read.
        aten._native_batch_norm_legit,
        aten._native_batch_norm_legit_functional,
        # native_batch_norm is what batch_norm and instance_norm call in train mode: the
        # same batch statistics as _legit, which fell back to ATen when not decomposed.
        aten.native_batch_norm,
        # Vector norms (norm, normalize, cosine_similarity, the triplet losses, weight norm in
        # wav2vec2-style conv positions, ConvNeXt-V2's GRN, Swin-V2's cosine attention,
        # CLIP/SigLIP's normalised embeddings): a sum of powers and a root, computed in
        # float32 for half inputs as eager does, fused with what reads them.
        aten.linalg_vector_norm,
    ]
    # Left as core ATen decides, on purpose:
    # - mm / addmm / bmm / convolution: core ATen already keeps them; each is one extern call
    #   (cuBLAS / cuDNN) or a kiln GEMM template. linear and matmul decompose into them.
    # - mish, relu6, logsumexp: decomposed by core ATen into a few exact pointwise /
    #   reduction ops (softplus → tanh → mul, hardtanh, amax + exp + sum + log) that fuse
    #   anyway; keeping them would only grow the set of ops kiln must lower.
    # - gelu, sigmoid, tanh, erf, leaky_relu, elu, hardtanh: core ATen keeps them; each is
    #   one pointwise op for kiln.


def decomposition_table() -> dict:
    """The decomposition table kiln captures with: core ATen, minus the ops kiln keeps
    (``_ops_kept``), plus the composites it decomposes (``_ops_decomposed``). A fresh
    table on every call (the caller may mutate it).

    Example:
        >>> import torch
        >>> table = decomposition_table()
        >>> torch.ops.aten.scaled_dot_product_attention.default in table
        False
        >>> torch.ops.aten.native_layer_norm.default in table
        True
    """
    return dict(_built_table())


@functools.lru_cache(maxsize=1)
def _built_table() -> dict:
    """Built once per process: materializing torch's table (every CIA op) costs ~80 ms, most
    of a small graph's compile. A plain dict keeps the preserve-what-is-missing semantics."""
    from torch._decomp import get_decompositions

    default = getattr(torch.export, "default_decompositions", None)
    if default is not None:  # torch >= 2.6: CIA ops missing from the table are preserved
        table = default()
    else:  # older torch: a plain dict of core ATen decompositions
        from torch._decomp import core_aten_decompositions
        table = core_aten_decompositions()
    for op in _ops_kept():
        if op in table:
            table.pop(op)
    table.update(get_decompositions(_ops_decomposed()))
    aten = torch.ops.aten
    for op in (aten.linspace.default, aten.linspace.Tensor_Tensor, aten.linspace.Tensor_Scalar,
               aten.linspace.Scalar_Tensor):
        if op in table:     # torch's own stays for the float dtypes
            table[op] = functools.partial(_linspace, table[op])
    table[aten.take.default] = _take
    table[aten.unique_consecutive.default] = _unique_consecutive
    return dict(table)


def _unique_consecutive(x, return_inverse=False, return_counts=False, dim=None):
    """unique_consecutive with its dim made non-negative: torch's fake kernel reads a
    negative dim as is, giving dim=-1 of a (3, 4) input a 4-d result (eager's: (3, u0)),
    and kiln plans buffers from fake results. Any other call is traced as it is."""
    if dim is None or dim >= 0:
        return NotImplemented
    return torch.ops.aten.unique_consecutive.default(x, return_inverse, return_counts,
                                                     dim % max(x.dim(), 1))


def _take(x, index):
    """take as one advanced index of the flattened input. torch's ``flat[index]`` read a 0-d
    index as a Python int: a data-dependent guard that make_fx cannot trace.

    >>> _take(torch.arange(6.).reshape(2, 3), torch.tensor(-2))
    tensor(4.)
    """
    return torch.ops.aten.index.Tensor(x.reshape(-1), [index])


def _linspace(reference, start, end, steps, **kwargs):
    """linspace as eager computes it for integer dtypes; torch's ``reference`` for the rest.

    Eager casts the bounds to the integer dtype first, steps in double, and takes the second
    half (from ``steps // 2``) back from the end; torch's reference steps from the uncast
    bounds in float32, so ``linspace(4.3, -3, 50, dtype=int64)`` came out 4, 4, 4, 3, ...
    where eager gives 4, 3, 3, ...

    >>> int(_linspace(None, 4.3, -3, 50, dtype=torch.int64)[1])
    3
    """
    dtype = kwargs.get("dtype")
    if dtype is None or dtype.is_floating_point or dtype.is_complex or dtype == torch.bool \
            or steps < 2:
        return reference(start, end, steps, **kwargs)
    start, end = (v.to(dtype).double() if isinstance(v, torch.Tensor) else float(int(v))
                  for v in (start, end))
    step = (end - start) / (steps - 1)
    rg = torch.arange(steps, dtype=torch.float64, device=kwargs.get("device"))
    out = torch.where(rg < steps // 2, start + step * rg, end - step * (steps - 1 - rg))
    return out.to(dtype)
