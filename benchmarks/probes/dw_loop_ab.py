"""Probe (s13): ConvNeXt-T's first 7x7 depthwise conv (bf16, b32, 96 channels, 56x56,
channels-last) as kiln emits it today (49 taps unrolled: ``dw_unrolled_kernel.py``) against
two loop forms (``dw_loop_kernels.py``: a loop over the 7 window rows with the 7 taps of a
row unrolled, and one loop over all 49 taps) and cuDNN. Each is checked against
``torch.conv2d`` and timed with ``triton.testing.do_bench``; the loop forms compile 3-6x
faster for sm_90 (measured on CPU), this measures what they cost at run time.

    python benchmarks/probes/dw_loop_ab.py
"""
import sys
import time
from pathlib import Path

import torch
import triton
from triton.testing import do_bench

sys.path.insert(0, str(Path(__file__).parent))
import dw_loop_kernels  # noqa: E402
import dw_unrolled_kernel  # noqa: E402


def main():
    torch.manual_seed(0)
    n, c, hw = 32, 96, 56
    x = torch.randn(n, c, hw, hw, device="cuda", dtype=torch.bfloat16).to(
        memory_format=torch.channels_last)
    w = torch.randn(c, 1, 7, 7, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(c, device="cuda", dtype=torch.bfloat16)
    taps = w.float().reshape(c, 49).t().contiguous()     # tap-major, channels innermost
    ref = torch.conv2d(x, w, b, padding=3, groups=c)
    print(torch.cuda.get_device_name(), torch.__version__, triton.__version__)
    print(f"cudnn: {do_bench(lambda: torch.conv2d(x, w, b, padding=3, groups=c)) * 1e3:.1f} us")
    kernels = [("unrolled", dw_unrolled_kernel.orig), ("row loop", dw_loop_kernels.dw_loop),
               ("tap loop", dw_loop_kernels.dw_loop49)]
    ynumel = n * hw * hw
    for name, fn in kernels:
        out = torch.empty_like(ref)
        grid = (triton.cdiv(c, 32), triton.cdiv(ynumel, 32))
        run = lambda: fn[grid](x, taps, b, out, c, ynumel, XBLOCK=32, YBLOCK=32, num_warps=8)
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        first = time.perf_counter() - start
        err = (out.float() - ref.float()).abs().max().item()
        print(f"{name}: {do_bench(run) * 1e3:.1f} us, first call {first:.2f} s, "
              f"max abs err {err:.3g}")


if __name__ == "__main__":
    main()
