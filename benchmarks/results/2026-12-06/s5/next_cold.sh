#!/usr/bin/env bash
# Planned for the next session (issue 15, cold compile): after run_device.sh writes torch's
# bytecode once per machine and lowering's memos (session 5), the cold-compile phases of the
# calls here (p/cold_compile.txt: same models, same script), a capture profile to show the
# compile() of torch's sources gone, then `kiln bench` of EfficientNet-B0 and ResNet-50 from
# the held-out zoo (timm), every system in fresh processes: the cold ratio against
# torch.compile in one run. Usage: bash benchmarks/results/2026-12-06/s5/next_cold.sh
set -u
bash benchmarks/run_device.sh > /dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
head -2 "$OUT/machine.txt"; ls /tmp/site/sitecustomize.py 2> /dev/null
timeout 150 python3 benchmarks/bench_cold_compile.py --zoo configs/zoo-vision.toml \
    --models efficientnet_b0,resnet50,vit_b16 --modes kiln 2>&1 | tee "$OUT/cold_compile.txt"
timeout 60 python3 benchmarks/probes/profile_capture.py --model resnet50 --device cuda \
    --top 30 > "$OUT/prof_resnet50.txt" 2>&1; head -1 "$OUT/prof_resnet50.txt"
grep "builtins.compile" "$OUT/prof_resnet50.txt" | head -2
timeout 380 python3 -m pipeline.cli bench configs/zoo-heldout.toml --quick \
    --models efficientnet_b0,resnet50 --store /tmp/bench-store --out "$OUT/bench" \
    > "$OUT/bench.txt" 2>&1; echo "[bench rc=$?]"; grep -v "^\s*$" "$OUT/bench.txt" | tail -16
sed -n '/## Goals/,/## Per model/p' "$OUT/bench/report.md"
