#!/usr/bin/env bash
# Afternoon call 1 of 2026-12-05: issue 13's third-party table baked with `kiln run`, then
# every model loaded in a fresh process (load_model) beside eager, after the fix of stored
# calls returning transformers' DynamicCache (gpt2_lm, llama_lm failed to load before it).
set -u
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
S=benchmarks/run_device.sh
bash $S > /dev/null
python3 -m pipeline.cli run configs/zoo-thirdparty.toml --store /tmp/tp-store \
    > "$OUT/thirdparty_run.txt" 2>&1; echo "[run rc=$? at ${SECONDS}s]"; tail -16 "$OUT/thirdparty_run.txt"
for m in convnext_tiny gpt2_lm; do     # where load_model's and the first call's time goes
  (cd benchmarks && timeout 60 python3 profile_load.py --store /tmp/tp-store --model $m \
      --config ../configs/zoo-thirdparty.toml --top 45 > "$OUT/profile_load_$m.txt" 2>&1)
  head -1 "$OUT/profile_load_$m.txt"; done
timeout $((560 - SECONDS)) python3 benchmarks/bench_deploy.py --config configs/zoo-thirdparty.toml \
    --store /tmp/tp-store --systems kiln_load eager --models gpt2_lm llama_lm resnet50 \
    convnext_tiny bert_4layer densenet121 efficientnet_b0 deit_small mobilenetv3_large \
    swin_tiny t5_encoder --json "$OUT/thirdparty.json" > "$OUT/thirdparty.txt" 2>&1
echo "[deploy rc=$? at ${SECONDS}s]"; tail -30 "$OUT/thirdparty.txt"
