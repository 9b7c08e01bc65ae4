#!/usr/bin/env bash
# Planned for the next session (issues 16, 19, 17): the vision zoo baked from an empty store
# with 15 CPU workers (s7/b: 8 workers kept the GPU busy 47%, builds were 1714 CPU-s), then
# relowered from its graphs with Triton's compile cache emptied first. In s7/b the relower
# ran after the run on the same machine and its builds hit that cache (91 CPU-s against
# 1714), which an upgrade would not: this relower pays the builds, as after an upgrade.
# Usage: bash benchmarks/results/2026-12-07/s7/next_vision.sh
set -u
bash benchmarks/run_device.sh > /dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
head -2 "$OUT/machine.txt"
export TRITON_CACHE_DIR=/tmp/triton-run
t=$SECONDS
timeout 260 python3 -m pipeline.cli run configs/zoo-vision.toml --store /tmp/v1 --workers 15 \
    > "$OUT/vision_run15.txt" 2>&1
echo "[run --workers 15 rc=$? wall $((SECONDS - t)) s]"
grep -v "^\(build\|lower\|capture\|tune\|relower\) " "$OUT/vision_run15.txt" | tail -9
mkdir -p /tmp/v2 && cp -r /tmp/v1/graphs /tmp/v2/
export TRITON_CACHE_DIR=/tmp/triton-relower     # empty: no build of the run is reused
t=$SECONDS
timeout $((580 - SECONDS)) python3 -m pipeline.cli relower --store /tmp/v2 --target sm_90 \
    --workers 15 --budget-s 20 > "$OUT/vision_relower15.txt" 2>&1
echo "[relower, cold compile cache, rc=$? wall $((SECONDS - t)) s]"
grep -v "^\(build\|lower\|capture\|tune\|relower\) " "$OUT/vision_relower15.txt" | tail -9
tar czf "$OUT/logs.tgz" /tmp/v1/logs /tmp/v2/logs 2>/dev/null
