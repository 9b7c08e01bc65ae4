#!/usr/bin/env bash
# Session 9, call 3 (issue 15, goals 1 and 2), after call 1's findings:
#  1. depthwise_tiled again: kiln's flat kernel against its 2-D stencil tiling as committed
#     (sector-aligned rows only, STENCIL_TILE 32) and cuDNN, two more MobileNetV3 shapes;
#  2. the GPU tests changed since call 1 (pool admission test, attention "auto");
#  3. kiln bench: ConvNeXt-T and MobileNetV3-L without CUDA graphs against torch.compile;
#  4. bench_decode's DynamicCache rows, attention now flash-first in dynamic modules.
# Usage: bash benchmarks/results/2026-12-07/s9/call_3.sh
set -u
bash benchmarks/run_device.sh > /dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
head -2 "$OUT/machine.txt"
timeout 140 python3 benchmarks/probes/depthwise_tiled.py > "$OUT/depthwise_tiled.txt" 2>&1
echo "[depthwise_tiled rc=$?]"; tail -12 "$OUT/depthwise_tiled.txt"
timeout 70 python3 -m pytest -q -n 0 -m gpu -p no:cacheprovider tests/test_graph_pool_gpu.py \
    tests/test_attention_order.py > "$OUT/gpu_tests.txt" 2>&1
echo "[gpu tests rc=$?]"; tail -3 "$OUT/gpu_tests.txt"
timeout 160 python3 -m pipeline.cli bench configs/zoo-heldout.toml --systems inductor,kiln_nographs \
    --models convnext_tiny,mobilenetv3_large --store /tmp/bench-s9 --out "$OUT/bench" \
    > "$OUT/bench.txt" 2>&1
echo "[bench rc=$?]"; grep -A12 "^## Goals" "$OUT/bench/report.md" | head -8
timeout $((445 - SECONDS)) python3 benchmarks/bench_decode.py --caches dynamic --lengths 128,2048 \
    --json "$OUT/bench_decode.json" > "$OUT/bench_decode.txt" 2>&1
echo "[decode rc=$?]"; grep -v "^DEBUG\|^W1\|^I1" "$OUT/bench_decode.txt" | tail -24
