"""Probe: kiln on transformers architectures nobody here tuned for, against eager on CPU.

Each architecture is built from its config at a tiny size (2 layers, width 32), compiled for
the CPU (Triton's interpreter), and called on fresh random inputs; the output is compared
with eager's. Each runs in its own process with a time limit, so one failure or hang costs
only its row. Prints one line per architecture: ok (max abs error), or the error's first
line and the phase it came from (capture, lower, run, mismatch).

    python benchmarks/probes/hf_sweep.py [--only gpt_neox,gemma] [--timeout 300]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             vocab_size=128, max_position_embeddings=64, n_embd=32, n_layer=2, n_head=4,
             d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
             decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, d_ff=64,
             num_layers=2, num_heads=4, d_kv=8, num_key_value_heads=2, head_dim=8)
VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
           image_size=32, patch_size=8, num_channels=3)
# model type -> (AutoModel class, input kind, config overrides)
ARCHS = {
    "gpt_neox": ("AutoModelForCausalLM", "text", {}),
    "gptj": ("AutoModelForCausalLM", "text", {"rotary_dim": 4}),
    "falcon": ("AutoModelForCausalLM", "text", {"new_decoder_architecture": True,
                                                "num_kv_heads": 2}),
    "gemma": ("AutoModelForCausalLM", "text", {}),
    "gemma2": ("AutoModelForCausalLM", "text", {}),
    "qwen3": ("AutoModelForCausalLM", "text", {}),
    "phi3": ("AutoModelForCausalLM", "text", {"pad_token_id": 0}),
    "stablelm": ("AutoModelForCausalLM", "text", {}),
    "codegen": ("AutoModelForCausalLM", "text", {"rotary_dim": 4, "n_ctx": 64}),
    "olmo": ("AutoModelForCausalLM", "text", {}),
    "electra": ("AutoModel", "text", {"embedding_size": 32}),
    "xlm-roberta": ("AutoModel", "text", {}),
    "mpnet": ("AutoModel", "text", {}),
    "convbert": ("AutoModel", "text", {}),
    "longformer": ("AutoModel", "text", {"attention_window": 4}),
    "big_bird": ("AutoModel", "text", {"attention_type": "original_full"}),
    "pegasus": ("AutoModelForSeq2SeqLM", "seq2seq", {}),
    "marian": ("AutoModelForSeq2SeqLM", "seq2seq", {"decoder_start_token_id": 0,
                                                    "pad_token_id": 0}),
    "mbart": ("AutoModelForSeq2SeqLM", "seq2seq", {}),
    "segformer": ("AutoModel", "image", {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1],
                                         "num_attention_heads": [1, 2, 2, 4]}),
    "dinov2": ("AutoModel", "image", VIT),
    "convnextv2": ("AutoModel", "image", {"hidden_sizes": [8, 16, 24, 32],
                                          "depths": [1, 1, 1, 1]}),
    "regnet": ("AutoModel", "image", {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1],
                                      "groups_width": 8, "embedding_size": 8}),
    "poolformer": ("AutoModel", "image", {"hidden_sizes": [8, 16, 24, 32],
                                          "depths": [1, 1, 1, 1]}),
    "levit": ("AutoModel", "image", {"image_size": 64, "hidden_sizes": [16, 32, 48],
                                     "num_attention_heads": [1, 2, 3], "depths": [1, 1, 1],
                                     "key_dim": [8, 8, 8]}),
    "efficientnet": ("AutoModel", "image", {"image_size": 64, "width_coefficient": 0.25,
                                            "depth_coefficient": 0.25, "hidden_dim": 320}),
    "mobilenet_v2": ("AutoModel", "image", {"image_size": 64, "depth_multiplier": 0.25}),
    "clip_vision_model": ("AutoModel", "image", VIT),
    "siglip_vision_model": ("AutoModel", "image", VIT),
    "hubert": ("AutoModel", "audio", {"num_feat_extract_layers": 2, "hidden_size": 32,
                                      "num_hidden_layers": 2, "num_attention_heads": 4,
                                      "intermediate_size": 64,
                                      "conv_dim": (16, 16), "conv_stride": (5, 2),
                                      "conv_kernel": (10, 3), "num_conv_pos_embeddings": 16,
                                      "num_conv_pos_embedding_groups": 4}),
}


def child(model_type: str) -> int:
    import warnings
    warnings.simplefilter("ignore")
    import torch
    import transformers
    sys.path.insert(0, str(ROOT))
    import compiler
    auto, kind, extra = ARCHS[model_type]
    cfg = transformers.AutoConfig.for_model(model_type)
    for k, v in {**(SMALL if kind in ("text", "seq2seq") else {}), **extra}.items():
        if hasattr(cfg, k) or k in extra:
            try:
                setattr(cfg, k, v)
            except AttributeError:      # a derived property (Falcon's head_dim)
                pass
    torch.manual_seed(0)
    model = getattr(transformers, auto).from_config(cfg).eval()
    with torch.no_grad():      # init scales such as LayerScale's 1e-5 leave outputs near 0,
        for p in model.parameters():     # where any error would pass: every weight random
            p.add_(torch.randn_like(p) * 0.1)
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False

    def inputs():
        if kind == "image":
            size = getattr(cfg, "image_size", 32)
            size = size if isinstance(size, int) else size[0]
            return (torch.randn(2, 3, size, size),), {}
        if kind == "audio":
            return (torch.randn(2, 1600),), {}
        ids = torch.randint(3, 120, (2, 16))
        if kind == "seq2seq":
            return (), {"input_ids": ids, "decoder_input_ids": torch.randint(3, 120, (2, 8))}
        return (ids,), {}
    phase = "eager (the probe's config)"
    try:
        args, kwargs = inputs()
        with torch.no_grad():
            model(*args, **kwargs)
        phase = "capture"
        compiled = compiler.compile_module(model, args, example_kwargs=kwargs or None)
        phase = "run"
        args, kwargs = inputs()
        with torch.no_grad():
            got, want = compiled(*args, **kwargs), model(*args, **kwargs)
        first = lambda out: out if isinstance(out, torch.Tensor) else out[0]   # noqa: E731
        err = (first(got).float() - first(want).float()).abs().max().item()
        scale = first(want).float().abs().max().item()
        if not err <= 1e-3 * max(1.0, scale):
            print(f"{model_type:22} mismatch: max abs error {err:.3g} (scale {scale:.3g})")
            return 1
        print(f"{model_type:22} ok: max abs error {err:.2g} (scale {scale:.2g}), "
              f"{compiled.kernel_count} kernels")
        return 0
    except Exception as e:       # noqa: BLE001 - a probe reports every failure
        line = (str(e).strip().splitlines() or [""])[0][:160]
        print(f"{model_type:22} {phase} failed: {type(e).__name__}: {line}"
              + (_backend(model, inputs) if phase == "capture" else ""))
        return 1


def _backend(model, inputs) -> str:
    """Where capture failed: the same model through ``torch.compile(backend="kiln")``,
    whose graph breaks run the Python export could not trace (the path capture's error
    points to)."""
    import torch
    import compiler.backend  # noqa: F401 - registers the backend
    try:
        args, kwargs = inputs()
        with torch.no_grad():
            got = torch.compile(model, backend="kiln")(*args, **kwargs)
            want = model(*args, **kwargs)
        first = lambda out: out if isinstance(out, torch.Tensor) else out[0]   # noqa: E731
        err = (first(got).float() - first(want).float()).abs().max().item()
        return f"; backend='kiln': max abs error {err:.2g}"
    except Exception as e:       # noqa: BLE001
        return f"; backend='kiln' failed too: {type(e).__name__}"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--only")
    p.add_argument("--timeout", type=int, default=300)
    p.add_argument("--child")
    a = p.parse_args()
    if a.child:
        return child(a.child)
    names = a.only.split(",") if a.only else list(ARCHS)
    for name in names:
        try:
            out = subprocess.run([sys.executable, __file__, "--child", name], text=True,
                                 capture_output=True, timeout=a.timeout)
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith(name)]
            print(lines[-1] if lines else f"{name:22} crashed: "
                  f"{(out.stderr.strip().splitlines() or ['?'])[-1][:200]}", flush=True)
        except subprocess.TimeoutExpired:
            print(f"{name:22} timed out after {a.timeout} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
