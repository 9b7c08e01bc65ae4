#!/usr/bin/env bash
# Issue 12, after call C: attention's backend order (flash, efficient, then cuDNN) in served
# modules and cuBLAS's set-up on a thread during load_model. The first-op probe (fresh
# process per case) and steady attention per backend; the deploy GPU tests; the deploy zoo
# baked and served (eager, kiln cold, load_model) in fresh processes. Same card, same call.
# Usage: bash benchmarks/results/2026-12-06/s4/call_d.sh
set -u
bash benchmarks/run_device.sh > /dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
cp /tmp/out/machine.txt "$OUT/" 2>/dev/null; head -2 "$OUT/machine.txt"
timeout 100 python3 benchmarks/probes/first_ops.py > "$OUT/first_ops.txt" 2>&1
timeout 40 python3 benchmarks/probes/first_ops.py --steady >> "$OUT/first_ops.txt" 2>&1
echo "[probe rc=$?]"; cat "$OUT/first_ops.txt"
timeout 70 python3 -m pytest -q -m gpu -p no:cacheprovider -rA -n 3 tests/test_deploy.py \
    tests/test_attention_order.py > "$OUT/gpu_tests.txt" 2>&1
echo "[gpu tests rc=$?]"; tail -2 "$OUT/gpu_tests.txt"
timeout 90 python3 -m pipeline.cli run configs/zoo-deploy.toml --store /tmp/d5 \
    > "$OUT/deploy_bake.txt" 2>&1; echo "[bake rc=$?]"; tail -4 "$OUT/deploy_bake.txt"
timeout ${DEPLOY_S:-150} python3 benchmarks/bench_deploy.py --store /tmp/d5 --timeout 60 \
    --systems ${SYSTEMS:-eager kiln_cold kiln_load} --json "$OUT/deploy.json" > "$OUT/deploy.txt" 2>&1
echo "[deploy rc=$?]"; grep -A30 "^| model" "$OUT/deploy.txt"
python3 - "$OUT/deploy.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
for r in rows if isinstance(rows, list) else rows["rows"]:
    if r["system"] == "kiln_load":
        print(r["model"], {k: round(v, 3) for k, v in r.items() if k.endswith("_s")})
PY
