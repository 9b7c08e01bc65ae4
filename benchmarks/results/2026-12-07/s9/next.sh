#!/usr/bin/env bash
# Planned for the next session (issue 15 goals 1 and 4, issue 16's depthwise tuning):
#  1. depthwise_tiled with the warps variants (fewer elements per thread: 40-94 registers
#     instead of 236-254 for ConvNeXt-T's 7x7 kernel), to decide the stencil heuristic;
#  2. kiln bench of the whole held-out zoo (--quick) at this session's code: the stencil
#     tiling and attention "auto" have not run under it with every model yet.
# Usage: bash benchmarks/results/2026-12-07/s9/next.sh
set -u
bash benchmarks/run_device.sh > /dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
head -2 "$OUT/machine.txt"
timeout 160 python3 benchmarks/probes/depthwise_tiled.py > "$OUT/depthwise_tiled.txt" 2>&1
echo "[depthwise_tiled rc=$?]"; tail -12 "$OUT/depthwise_tiled.txt"
timeout $((590 - SECONDS)) python3 -m pipeline.cli bench configs/zoo-heldout.toml --quick \
    --store /tmp/bench-next --out "$OUT/bench" --budget-s $((420 - SECONDS)) > "$OUT/bench.txt" 2>&1
echo "[bench rc=$?]"; grep -A8 "^## Goals" "$OUT/bench/report.md"
# 3. (issue 16, its own call) the vision zoo tuned with depthwise kernels timed against
#    cuDNN (dw_tune.toml, compiler option depthwise_baseline), then the per-kernel gains:
#    python3 -m pipeline.cli run benchmarks/results/2026-12-07/s9/dw_tune.toml --workers 15 \
#        --store /tmp/dw-store > "$OUT/dw_run.txt" 2>&1
#    python3 -m pipeline.cli store gains --store /tmp/dw-store > "$OUT/dw_gains.txt" 2>&1
