#!/usr/bin/env bash
# Afternoon call 2 of 2026-12-05: issues 16 and 19 on the card. The vision zoo baked with
# tuning on from an empty store (kiln run: kernels tuned per minute, GPU-s per kernel), its
# per-kernel and per-model gains, then `kiln relower` of the same store from its stored
# graphs with tuning on (no model code), each step's wall time printed.
set -u
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
S=benchmarks/run_device.sh
bash $S > /dev/null
start=$SECONDS
timeout 330 python3 -m pipeline.cli run configs/zoo-vision.toml --store /tmp/v-store \
    > "$OUT/vision_run.txt" 2>&1
echo "[run rc=$? wall $((SECONDS - start)) s]"; tail -14 "$OUT/vision_run.txt"
python3 -m pipeline.cli store gains --store /tmp/v-store > "$OUT/vision_gains.txt" 2>&1
head -40 "$OUT/vision_gains.txt"
python3 -m pipeline.cli store stats --store /tmp/v-store > "$OUT/vision_stats_run.txt" 2>&1
start=$SECONDS
timeout $((575 - SECONDS)) python3 -m pipeline.cli relower --store /tmp/v-store --workers 8 \
    > "$OUT/vision_relower.txt" 2>&1
echo "[relower rc=$? wall $((SECONDS - start)) s]"; tail -14 "$OUT/vision_relower.txt"
python3 -m pipeline.cli store stats --store /tmp/v-store > "$OUT/vision_stats_relower.txt" 2>&1
