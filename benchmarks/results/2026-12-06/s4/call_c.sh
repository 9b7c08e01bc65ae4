#!/usr/bin/env bash
# Issue 12 on the card, with conv_kernels "auto" now preferring kiln's conv template on a GPU
# target and the 64-row default for convs with few tiles: the conv GPU tests, per-shape
# times against cuDNN, then the deploy zoo (ResNet-50, ConvNeXt-T, ViT-B/16, BERT-base)
# baked by `kiln run` and served in fresh processes by every system of bench_deploy.py, and
# the first call op by op for ConvNeXt-T and ViT. Same card, same call.
# Usage: bash benchmarks/results/2026-12-06/s4/call_c.sh
set -u
bash benchmarks/run_device.sh > /dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
cp /tmp/out/machine.txt "$OUT/" 2>/dev/null; cat "$OUT/machine.txt" 2>/dev/null
timeout 80 python3 -m pytest -q -m gpu -p no:cacheprovider -rA -n 4 tests/test_conv_template.py \
    tests/test_lowering_conv_gemm.py > "$OUT/gpu_tests.txt" 2>&1
echo "[gpu tests rc=$?]"; tail -2 "$OUT/gpu_tests.txt"
timeout 60 python3 benchmarks/bench_conv.py --skip-first-call > "$OUT/bench_conv.txt" 2>&1
echo "[bench_conv rc=$?]"; tail -12 "$OUT/bench_conv.txt"
timeout 90 python3 -m pipeline.cli run configs/zoo-deploy.toml --store /tmp/d4 \
    > "$OUT/deploy_bake.txt" 2>&1; echo "[bake rc=$?]"; tail -5 "$OUT/deploy_bake.txt"
timeout ${DEPLOY_S:-330} python3 benchmarks/bench_deploy.py --store /tmp/d4 --timeout 60 \
    --systems ${SYSTEMS:-eager inductor_cold inductor_warm kiln_cold kiln_load} \
    --json "$OUT/deploy.json" > "$OUT/deploy.txt" 2>&1
echo "[deploy rc=$?]"; grep -A30 "^| model" "$OUT/deploy.txt"
for m in convnext_tiny vit_b16; do
  timeout 40 python3 benchmarks/profile_load.py --store /tmp/d4 --model $m --ops \
      > "$OUT/first_call_ops_$m.txt" 2>&1; head -14 "$OUT/first_call_ops_$m.txt"
done
