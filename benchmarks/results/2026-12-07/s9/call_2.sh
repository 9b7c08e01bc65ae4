#!/usr/bin/env bash
# Session 9, call 2 (issue 16, goal 2): kiln untuned and tuned (CUDA graphs) against
# torch.compile mode="max-autotune" (which also replays CUDA graphs), on the largest subset
# of the held-out zoo that one call's time allows, each system in a fresh process.
# max-autotune's cold start is its tuning wall time; kiln_tuned's note gives its tuning s.
# Usage: bash benchmarks/results/2026-12-07/s9/call_2.sh
set -u
bash benchmarks/run_device.sh > /dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
head -2 "$OUT/machine.txt"
timeout $((580 - SECONDS)) python3 -m pipeline.cli bench configs/zoo-heldout.toml \
    --systems kiln_graphs,kiln_tuned,inductor_max --models bert_4layer,resnet50,deit_small \
    --store /tmp/bench-max --out "$OUT/bench" --repeats 50 --budget-s 470 --timeout-s 330 \
    > "$OUT/bench.txt" 2>&1
echo "[bench rc=$?]"; tail -25 "$OUT/bench.txt"
