#!/usr/bin/env bash
# Issue 15, goal 3 (T5 is the worst case): T5's encoder (held-out zoo, 16x256, bf16) profiled
# kernel by kernel against torch.compile in one process, then `kiln bench` of T5 (eager,
# torch.compile default and reduce-overhead, kiln with and without CUDA graphs, each in a
# fresh process): speed and cold compile in one run. Sized for a call of about 7 minutes.
# Usage: bash benchmarks/results/2026-12-07/s6/next_t5.sh
set -u
bash benchmarks/run_device.sh > /dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
head -2 "$OUT/machine.txt"
timeout 200 python3 benchmarks/profile_model.py pipeline.zoo.heldout:t5_encoder --inductor \
    --top 24 > "$OUT/profile_t5.txt" 2>&1; echo "[profile rc=$?]"
grep -E "^==|kernels=" "$OUT/profile_t5.txt"
timeout $((400 - SECONDS)) python3 -m pipeline.cli bench configs/zoo-heldout.toml --quick \
    --models t5_encoder --systems eager,inductor,inductor_ro,kiln_graphs,kiln_nographs \
    --store /tmp/bench-store --out /tmp/bench-out > "$OUT/bench.txt" 2>&1
echo "[bench rc=$?]"; grep -v "^\s*$" "$OUT/bench.txt" | tail -14
tar czf "$OUT/bench_report.tgz" -C /tmp/bench-out . 2>/dev/null
sed -n '/## Goals/,/## Per model/p' /tmp/bench-out/report.md 2>/dev/null | head -30
