"""Which attention backend torch picks for each SDPA call of a model, and why the fused ones
refuse it (issue 15: T5's encoder ran its six attentions on torch's math path, eleven eager
kernels a layer, in eager and in kiln alike, while torch.compile fused the math into one
Triton kernel).

    python benchmarks/probes/sdpa_choice.py pipeline.zoo.heldout:t5_encoder [--dtype bfloat16]
        [--kiln]

``--kiln`` probes the calls kiln's compiled module makes (CUDA graphs off) instead of eager's.

For each distinct call (shapes, strides, dtypes, kwargs): the backend ``torch._fused_sdp_choice``
returns (torch's SDPBackend: 0 math, 1 flash, 2 efficient, 3 cuDNN) and the warnings
``can_use_flash_attention`` / ``can_use_efficient_attention`` give with ``debug=True``.
Needs a CUDA device.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings

import torch
import torch.nn.functional as F


def _describe(t) -> str:
    if not isinstance(t, torch.Tensor):
        return repr(t)
    return (f"{tuple(t.shape)} stride {t.stride()} {str(t.dtype)[6:]}"
            f"{' requires_grad' if t.requires_grad else ''}")


def _reasons(check, params) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ok = check(params, True)
    return ["ok"] if ok else [str(w.message).split(" (Triggered")[0] for w in caught]


def probe_call(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
               enable_gqa=False) -> str:
    lines = [f"q {_describe(q)}; k {_describe(k)}; v {_describe(v)}; mask {_describe(attn_mask)}"
             f"; dropout {dropout_p} causal {is_causal} scale {scale} gqa {enable_gqa}"]
    choice = torch._fused_sdp_choice(q, k, v, attn_mask, dropout_p, is_causal, scale=scale,
                                     enable_gqa=enable_gqa)
    lines.append(f"  torch picks backend {choice}")
    params = torch.backends.cuda.SDPAParams(q, k, v, attn_mask, dropout_p, is_causal,
                                            enable_gqa)
    for name, check in (("flash", torch.backends.cuda.can_use_flash_attention),
                        ("efficient", torch.backends.cuda.can_use_efficient_attention)):
        lines.append(f"  {name}: {'; '.join(_reasons(check, params))}")
    return "\n".join(lines)


def _run_eager(module, inputs, record) -> None:
    real = F.scaled_dot_product_attention

    def spy(*a, **kw):
        record(*a, **kw)
        return real(*a, **kw)
    F.scaled_dot_product_attention = spy
    try:
        module(*inputs)
    finally:
        F.scaled_dot_product_attention = real


def _run_kiln(module, inputs, record) -> None:
    # The wrapper binds its ops through extern_op when it is loaded: a spy put there first
    # sees the composite call itself (a dispatch mode would see only the backend it chose).
    from compiler.api import compile_module
    from compiler.kernels import host
    real_extern = host.extern_op

    def spying_extern(name, *a, **kw):
        call = real_extern(name, *a, **kw)
        if name != "aten.scaled_dot_product_attention.default":
            return call

        def spy(*args, **kwargs):
            record(*args, **kwargs)
            return call(*args, **kwargs)
        return spy
    host.extern_op = spying_extern
    try:
        compiled = compile_module(module, inputs, options={"cuda_graphs": False})
        compiled(*inputs)
    finally:
        host.extern_op = real_extern


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("factory", help="module:function returning (module, args, ...)")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--kiln", action="store_true", help="probe kiln's compiled module")
    args = parser.parse_args(argv)
    path, name = args.factory.split(":")
    out = getattr(importlib.import_module(path), name)()
    dtype = getattr(torch, args.dtype)
    module = out[0].eval().cuda().to(dtype)
    inputs = tuple(a.cuda().to(dtype) if a.is_floating_point() else a.cuda() for a in out[1])
    seen = {}

    def record(*a, **kw):
        report = probe_call(*a, **kw)
        seen[report] = seen.get(report, 0) + 1

    with torch.no_grad():
        (_run_kiln if args.kiln else _run_eager)(module, inputs, record)
    print(f"{args.factory}: {sum(seen.values())} SDPA call(s), {len(seen)} distinct")
    for report, count in seen.items():
        print(f"x{count} {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
