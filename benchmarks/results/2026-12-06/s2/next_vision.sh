#!/usr/bin/env bash
# Planned for the next session (issues 16 and 19 on the card, after tune tasks moved into
# a sandboxed child): the vision zoo baked with tuning on from an empty store (wall time,
# GPU-s and kernels tuned per minute), then the same zoo relowered with tuning on from a
# store holding only the first run's graphs (no model code, nothing built or timed yet):
# the two wall times compare a full run with a relower. The runs' logs come back in
# $OUT/logs.tgz (a crash leaves its Python stack there: pipeline/sandbox.py enables
# faulthandler). Usage: bash benchmarks/results/2026-12-06/s2/next_vision.sh
set -u
bash benchmarks/run_device.sh > /dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
t=$SECONDS
timeout 330 python3 -m pipeline.cli run configs/zoo-vision.toml --store /tmp/v1 \
    > "$OUT/vision_run.txt" 2>&1
echo "[run rc=$? wall $((SECONDS - t)) s]"; grep -v "^\(build\|lower\|capture\|tune\|relower\) " \
    "$OUT/vision_run.txt" | tail -16
mkdir -p /tmp/v2 && cp -r /tmp/v1/graphs /tmp/v2/
t=$SECONDS
timeout $((570 - SECONDS)) python3 -m pipeline.cli relower --store /tmp/v2 --target sm_90 \
    --workers 8 --budget-s 20 > "$OUT/vision_relower.txt" 2>&1
echo "[relower rc=$? wall $((SECONDS - t)) s]"; grep -v "^\(build\|lower\|capture\|tune\|relower\) " \
    "$OUT/vision_relower.txt" | tail -16
python3 -m pipeline.cli store stats --store /tmp/v1 > "$OUT/vision_stats.txt" 2>&1
grep -h -B2 -A12 "Fatal Python error" /tmp/v1/logs/*.log /tmp/v2/logs/*.log | head -60
tar czf "$OUT/logs.tgz" /tmp/v1/logs /tmp/v2/logs 2>/dev/null
# Issue 17 while no multi-GPU kind is lent: the measured one-GPU run replayed on more workers.
python3 benchmarks/scaling_estimate.py /tmp/v1/logs/run-*.tasks.json --measured-cpu 8 \
    --cpu 8,16,64 --gpus 1,2,4,8 | tee "$OUT/scaling_estimate.txt"
