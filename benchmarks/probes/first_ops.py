"""What a served process's first cuBLAS and attention calls cost, each case in a fresh
process (issue 12: ViT-B/16 and BERT spend most of their first call there).

    python benchmarks/probes/first_ops.py [--steady]

Cases: the first SDPA at ViT-B/16's shape (batch 32, 12 heads, 197 tokens, 64) per backend
(what the dispatcher picks, flash, efficient, cuDNN); the first mm at ViT's QKV shape with
nothing before it, after a tiny mm on the main thread, and after a tiny mm on a background
thread that ran while the main thread did 100 ms of Python work (load_model's place).
Each line: case, ms of the timed call (synchronized), and the backend the dispatcher chose
(torch's SDPBackend: 1 flash, 2 efficient, 3 cuDNN). ``--steady`` times each backend's steady
attention at ViT-B/16's, BERT-base's (masked) and a causal prefill's shapes instead.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

CASES = ("sdpa_default", "sdpa_flash", "sdpa_efficient", "sdpa_cudnn", "sdpa_ordered",
         "mm_cold", "mm_after_main_warm", "mm_after_thread_warm", "sdpa_after_thread_warm")
# Steady attention per backend: (batch, heads, tokens, head size, additive mask?): ViT-B/16
# b32, BERT-base 16x256 with its padding mask, and a causal decoder prefill.
STEADY = {"vit_b16": (32, 12, 197, 64, False), "bert_base": (16, 12, 256, 64, True),
          "gpt2_prefill": (16, 12, 512, 64, "causal")}


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(1000))


def child(case: str) -> dict:
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as F
    dev, dt = "cuda", torch.bfloat16
    torch.ones(1, device=dev)                    # the context, not timed
    torch.cuda.synchronize()
    q, k, v = (torch.randn(32, 12, 197, 64, device=dev, dtype=dt) for _ in range(3))
    a, b = torch.randn(6304, 768, device=dev, dtype=dt), torch.randn(768, 2304, device=dev, dtype=dt)
    out = {"case": case}
    if case == "mm_after_main_warm":
        torch.mm(a[:16, :16], b[:16, :16]); torch.cuda.synchronize()
    if case.endswith("thread_warm"):
        def warm():
            torch.mm(a[:16, :16], b[:16, :16])
            F.scaled_dot_product_attention(q[:1, :1, :16], k[:1, :1, :16], v[:1, :1, :16])
            torch.cuda.synchronize()
        t = threading.Thread(target=warm)
        start = time.perf_counter()
        t.start(); _busy(0.1); t.join()
        out["overlap_ms"] = (time.perf_counter() - start) * 1e3
    torch.cuda.synchronize()
    start = time.perf_counter()
    if case.startswith("mm"):
        torch.mm(a, b)
    else:
        backend = case.split("_")[1]
        choice = {"flash": [SDPBackend.FLASH_ATTENTION], "efficient": [SDPBackend.EFFICIENT_ATTENTION],
                  "cudnn": [SDPBackend.CUDNN_ATTENTION]}.get(backend)
        if backend == "ordered":       # what a served kiln module calls
            from compiler.kernels.host import extern_op
            sdpa = extern_op("aten.scaled_dot_product_attention.default")
            sdpa(q, k, v)
            order = torch._C._get_sdp_priority_order()
            torch._C._set_sdp_priority_order([1, 2, 3, 0, 4])
            out["chosen_in_order"] = int(torch._fused_sdp_choice(q, k, v))
            torch._C._set_sdp_priority_order(order)
        elif choice:
            with sdpa_kernel(choice):
                F.scaled_dot_product_attention(q, k, v)
        else:
            F.scaled_dot_product_attention(q, k, v)
        out["chosen"] = int(torch._fused_sdp_choice(q, k, v))
    torch.cuda.synchronize()
    out["ms"] = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    torch.mm(a, b) if case.startswith("mm") else F.scaled_dot_product_attention(q, k, v)
    torch.cuda.synchronize()
    out["second_ms"] = (time.perf_counter() - start) * 1e3
    return out


def steady() -> None:
    """Steady ms (triton.testing.do_bench, median) of attention per backend and shape."""
    import torch
    import torch.nn.functional as F
    import triton
    from torch.nn.attention import SDPBackend, sdpa_kernel
    for name, (b, h, s, d, mask) in STEADY.items():
        q, k, v = (torch.randn(b, h, s, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        kw = {"is_causal": True} if mask == "causal" else {}
        if mask is True:
            kw["attn_mask"] = torch.zeros(b, 1, 1, s, device="cuda", dtype=torch.bfloat16)
        row = {"shape": name}
        for backend in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION"):
            try:
                with sdpa_kernel([getattr(SDPBackend, backend)]):
                    row[backend] = round(triton.testing.do_bench(
                        lambda: F.scaled_dot_product_attention(q, k, v, **kw),
                        warmup=25, rep=100, return_mode="median"), 4)
            except RuntimeError as err:
                row[backend] = f"n/a ({str(err).splitlines()[0][:60]})"
        print(json.dumps(row), flush=True)


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2])))
        return 0
    if "--steady" in sys.argv:
        steady()
        return 0
    for case in CASES:
        done = subprocess.run([sys.executable, __file__, "--child", case], capture_output=True,
                              text=True, timeout=120)
        lines = done.stdout.strip().splitlines()
        print(lines[-1] if done.returncode == 0 and lines else f"{case}: failed {done.stderr[-400:]}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
