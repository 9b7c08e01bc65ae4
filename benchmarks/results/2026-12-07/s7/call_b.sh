#!/usr/bin/env bash
# Session 7, second call (issues 16, 19, then 15): the vision zoo baked with tuning on from an
# empty store, after the fix of the stalled tune stage (f9d3b7a), then relowered with tuning
# on from a store holding only that run's graphs: both wall times in one call. The time left
# goes to T5's encoder profiled kernel by kernel against torch.compile (issue 15, goal 3).
# Usage: bash benchmarks/results/2026-12-07/s7/call_b.sh
set -u
bash benchmarks/run_device.sh > /dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
head -2 "$OUT/machine.txt"
t=$SECONDS
timeout 300 python3 -m pipeline.cli run configs/zoo-vision.toml --store /tmp/v1 \
    > "$OUT/vision_run.txt" 2>&1
echo "[run rc=$? wall $((SECONDS - t)) s]"; grep -v "^\(build\|lower\|capture\|tune\|relower\) " \
    "$OUT/vision_run.txt" | tail -14
mkdir -p /tmp/v2 && cp -r /tmp/v1/graphs /tmp/v2/
t=$SECONDS
timeout 170 python3 -m pipeline.cli relower --store /tmp/v2 --target sm_90 \
    --workers 8 --budget-s 20 > "$OUT/vision_relower.txt" 2>&1
echo "[relower rc=$? wall $((SECONDS - t)) s]"; grep -v "^\(build\|lower\|capture\|tune\|relower\) " \
    "$OUT/vision_relower.txt" | tail -12
python3 -m pipeline.cli store stats --store /tmp/v1 > "$OUT/vision_stats.txt" 2>&1
grep -h -B2 -A12 "Fatal Python error\|KeyError" /tmp/v1/logs/*.log /tmp/v2/logs/*.log | head -40
tar czf "$OUT/logs.tgz" /tmp/v1/logs /tmp/v2/logs 2>/dev/null
timeout 30 python3 benchmarks/scaling_estimate.py $(ls /tmp/v1/logs/run-*.tasks.json | head -1) \
    --measured-cpu 8 --cpu 8,16 --gpus 1,2,4,8 > "$OUT/scaling_estimate.txt" 2>&1
tail -8 "$OUT/scaling_estimate.txt"
left=$((510 - SECONDS)); echo "[T5 profile, ${left} s left]"
[ "$left" -gt 60 ] && timeout "$left" python3 benchmarks/profile_model.py \
    pipeline.zoo.heldout:t5_encoder --inductor --top 24 > "$OUT/profile_t5.txt" 2>&1
echo "[profile rc=$?]"; grep -E "^==|kernels=" "$OUT/profile_t5.txt"
