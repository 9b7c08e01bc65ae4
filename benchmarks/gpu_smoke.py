"""Quick GPU check of the tiny zoo in float32 and bfloat16 (a script, not a test)."""
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import compiler  # noqa: E402
from pipeline.zoo import tiny  # noqa: E402

warnings.simplefilter("ignore")
for name in ["mlp", "convnet", "transformer_block"]:
    for dtype in [torch.float32, torch.bfloat16]:
        m, args = getattr(tiny, name)()
        m = m.eval().cuda().to(dtype)
        args = [a.cuda().to(dtype) if a.is_floating_point() else a.cuda() for a in args]
        cm = compiler.compile_module(m, args)
        out, ref = cm(*args), m(*args)
        rel = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
        print(f"{name} {dtype}: kernels={cm.kernel_count} fallbacks={list(cm.fallback_ops)} rel_err={rel:.2e}")
