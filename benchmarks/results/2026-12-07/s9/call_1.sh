#!/usr/bin/env bash
# Session 9, call 1 (issue 15, goals 1 and 2): session 8's next.sh, the depthwise probe first.
#  1. depthwise_tiled: cuDNN, kiln's flat (1-D) kernel, kiln's 2-D stencil tiling (this
#     session's codegen change) at several tiles, and the probe's own row-tiled kernel;
#  2. the GPU tests of session 8's changes (dynamic-shape launches through the Launcher,
#     87249f9; graph pool admission, 37cfde5; attention operand layouts, 0fb7e0f/d7d761a);
#  3. the decode benchmark again; 4. bench_launch (host us per launch).
# Usage: bash benchmarks/results/2026-12-07/s9/call_1.sh
set -u
bash benchmarks/run_device.sh > /dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
head -2 "$OUT/machine.txt"
timeout 200 python3 benchmarks/probes/depthwise_tiled.py > "$OUT/depthwise_tiled.txt" 2>&1
echo "[depthwise_tiled rc=$?]"; tail -10 "$OUT/depthwise_tiled.txt"
timeout 150 python3 -m pytest -q -n 0 -m gpu -p no:cacheprovider tests/test_dynamic_launch.py \
    tests/test_graph_pool_gpu.py tests/test_llm_decode.py tests/test_attention_layout.py \
    tests/test_attention_order.py > "$OUT/gpu_tests.txt" 2>&1
echo "[gpu tests rc=$?]"; tail -5 "$OUT/gpu_tests.txt"
timeout $((540 - SECONDS)) python3 benchmarks/bench_decode.py --json "$OUT/bench_decode.json" \
    > "$OUT/bench_decode.txt" 2>&1
echo "[decode rc=$?]"; tail -9 "$OUT/bench_decode.txt"
timeout $((590 - SECONDS)) python3 benchmarks/bench_launch.py > "$OUT/bench_launch.txt" 2>&1
echo "[launch rc=$?]"; tail -8 "$OUT/bench_launch.txt"
