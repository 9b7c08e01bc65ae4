#!/usr/bin/env bash
# Session 8, call 1 (issues 15, 19, 16): why T5's attention takes torch's math path (the SDPA
# probe on eager T5 and BERT); the vision zoo baked from an empty store with 15 CPU workers
# (s7/b: 8 workers kept the GPU busy 47%); then relowered from its graphs with Triton's
# compile cache emptied first, as after an upgrade (s7/b's relower hit the run's cache).
# Usage: bash benchmarks/results/2026-12-07/s8/call_1.sh
set -u
bash benchmarks/run_device.sh > /dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
head -2 "$OUT/machine.txt"
timeout 60 python3 benchmarks/probes/sdpa_choice.py pipeline.zoo.heldout:t5_encoder 2>&1 \
    | tee "$OUT/sdpa_t5.txt" | head -14
timeout 45 python3 benchmarks/probes/sdpa_choice.py pipeline.zoo.heldout:bert_4layer 2>&1 \
    | tee "$OUT/sdpa_bert.txt" | head -6
export TRITON_CACHE_DIR=/tmp/triton-run
t=$SECONDS
timeout 230 python3 -m pipeline.cli run configs/zoo-vision.toml --store /tmp/v1 --workers 15 \
    > "$OUT/vision_run15.txt" 2>&1
echo "[run --workers 15 rc=$? wall $((SECONDS - t)) s]"
grep -v "^\(build\|lower\|capture\|tune\|relower\) " "$OUT/vision_run15.txt" | tail -9
mkdir -p /tmp/v2 && cp -r /tmp/v1/graphs /tmp/v2/
export TRITON_CACHE_DIR=/tmp/triton-relower     # empty: no build of the run is reused
t=$SECONDS
timeout $((575 - SECONDS)) python3 -m pipeline.cli relower --store /tmp/v2 --target sm_90 \
    --workers 15 --budget-s 20 > "$OUT/vision_relower15.txt" 2>&1
echo "[relower, cold compile cache, rc=$? wall $((SECONDS - t)) s]"
grep -v "^\(build\|lower\|capture\|tune\|relower\) " "$OUT/vision_relower15.txt" | tail -9
tar czf "$OUT/logs.tgz" /tmp/v1/logs /tmp/v2/logs 2>/dev/null
