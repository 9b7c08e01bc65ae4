#!/usr/bin/env bash
# Session 9, call 1; planned in session 8 (issue 15, goals 1 and 2): the GPU tests of this session's
# changes (dynamic-shape launches through the Launcher, 87249f9; graph pool admission,
# 37cfde5; attention operand layouts, 0fb7e0f/d7d761a), then the decode benchmark again,
# then bench_launch (host us per launch).
# Usage: bash benchmarks/results/2026-12-07/s9/call_1.sh
set -u
bash benchmarks/run_device.sh > /dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
head -2 "$OUT/machine.txt"
timeout 240 python3 -m pytest -q -n 0 -m gpu -p no:cacheprovider tests/test_dynamic_launch.py \
    tests/test_graph_pool_gpu.py tests/test_llm_decode.py tests/test_attention_layout.py \
    tests/test_attention_order.py > "$OUT/gpu_tests.txt" 2>&1
echo "[gpu tests rc=$?]"; tail -5 "$OUT/gpu_tests.txt"
timeout 200 python3 benchmarks/bench_decode.py --json "$OUT/bench_decode.json" \
    > "$OUT/bench_decode.txt" 2>&1
echo "[decode rc=$?]"; tail -9 "$OUT/bench_decode.txt"
timeout 120 python3 benchmarks/bench_launch.py > "$OUT/bench_launch.txt" 2>&1
echo "[launch rc=$?]"; tail -8 "$OUT/bench_launch.txt"
# Issue 15 goal 1 (ConvNeXt-T without graphs 0.91x): a row-tiled depthwise kernel vs cuDNN.
timeout $((590 - SECONDS)) python3 benchmarks/probes/depthwise_tiled.py > "$OUT/depthwise_tiled.txt" 2>&1
echo "[depthwise_tiled rc=$?]"; tail -10 "$OUT/depthwise_tiled.txt"
