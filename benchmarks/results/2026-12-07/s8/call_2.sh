#!/usr/bin/env bash
# Session 8, call 2 (issues 15 and 16): the SDPA probe on kiln's own T5 calls (CUDA graphs
# off) now that attention operands are dense in their last dim (0fb7e0f); `kiln bench` of T5
# against torch.compile; then the text zoo baked from an empty store with 15 CPU workers.
# Usage: bash benchmarks/results/2026-12-07/s8/call_2.sh
set -u
bash benchmarks/run_device.sh > /dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
head -2 "$OUT/machine.txt"
timeout 100 python3 benchmarks/probes/sdpa_choice.py pipeline.zoo.heldout:t5_encoder --kiln \
    > "$OUT/sdpa_t5_kiln.txt" 2>&1
echo "[probe rc=$?]"; grep -v "^\[W\|Warning\|warn" "$OUT/sdpa_t5_kiln.txt" | tail -6
grep "sdp_utils" "$OUT/sdpa_t5_kiln.txt" | sed 's/.*Warning: //' | sort | uniq -c | head -6
timeout 260 python3 -m pipeline.cli bench configs/zoo-heldout.toml --quick \
    --models t5_encoder --systems eager,inductor,inductor_ro,kiln_graphs,kiln_nographs \
    --store /tmp/bench-store --out "$OUT/bench" --budget-s 200 > "$OUT/bench.txt" 2>&1
echo "[bench rc=$?]"; grep -v "^\s*$" "$OUT/bench.txt" | tail -12
t=$SECONDS
timeout $((585 - SECONDS)) python3 -m pipeline.cli run configs/zoo-text.toml --store /tmp/t1 \
    --workers 15 > "$OUT/text_run15.txt" 2>&1
echo "[text run --workers 15 rc=$? wall $((SECONDS - t)) s]"
grep -v "^\(build\|lower\|capture\|tune\|relower\) " "$OUT/text_run15.txt" | tail -9
tar czf "$OUT/logs.tgz" /tmp/t1/logs 2>/dev/null
