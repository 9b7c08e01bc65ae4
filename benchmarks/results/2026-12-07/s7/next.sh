#!/usr/bin/env bash
# Planned for the next session (issue 15, goal 3): why T5's attention takes torch's math path
# (eleven eager kernels a layer, ~1.1 of kiln's 2.26 GPU-ms, s7/b/profile_t5.txt): the SDPA
# probe on eager T5, then `kiln bench` of T5 against torch.compile. Then the vision zoo run
# again with 15 CPU workers (the replay of s7/b said CPU workers, not the GPU, bound the run).
# Usage: bash benchmarks/results/2026-12-07/s7/next.sh
set -u
bash benchmarks/run_device.sh > /dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
head -2 "$OUT/machine.txt"
timeout 90 python3 benchmarks/probes/sdpa_choice.py pipeline.zoo.heldout:t5_encoder 2>&1 \
    | tee "$OUT/sdpa_t5.txt" | head -12
timeout 60 python3 benchmarks/probes/sdpa_choice.py pipeline.zoo.heldout:bert_4layer 2>&1 \
    | tee "$OUT/sdpa_bert.txt" | head -6
timeout 330 python3 -m pipeline.cli bench configs/zoo-heldout.toml --quick \
    --models t5_encoder --systems eager,inductor,inductor_ro,kiln_graphs,kiln_nographs \
    --store /tmp/bench-store --out /tmp/bench-out > "$OUT/bench.txt" 2>&1
echo "[bench rc=$?]"; grep -v "^\s*$" "$OUT/bench.txt" | tail -12
