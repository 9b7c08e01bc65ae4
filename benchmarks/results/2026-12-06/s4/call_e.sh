#!/usr/bin/env bash
# call_d.sh cut to what the last minutes of device time hold: the first-op probe, steady
# attention per backend, the deploy GPU tests, and ViT-B/16 and BERT-base baked and served
# (eager, load_model). Usage: bash benchmarks/results/2026-12-06/s4/call_e.sh
set -u
bash benchmarks/run_device.sh > /dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
head -2 "$OUT/machine.txt"
timeout 45 python3 benchmarks/probes/first_ops.py --steady > "$OUT/first_ops.txt" 2>&1
timeout 60 python3 benchmarks/probes/first_ops.py >> "$OUT/first_ops.txt" 2>&1
echo "[probe rc=$?]"; cat "$OUT/first_ops.txt"
sed '/^\[\[models\]\]/,$d' configs/zoo-deploy.toml > /tmp/vb.toml
sed -n '/vision:vit_b16/,$p' configs/zoo-deploy.toml | sed '1i [[models]]' >> /tmp/vb.toml
timeout 60 python3 -m pipeline.cli run /tmp/vb.toml --store /tmp/d6 > "$OUT/deploy_bake.txt" 2>&1
echo "[bake rc=$?]"; tail -2 "$OUT/deploy_bake.txt"
timeout 60 python3 benchmarks/bench_deploy.py --config /tmp/vb.toml --store /tmp/d6 --timeout 30 \
    --systems eager kiln_load --json "$OUT/deploy.json" > "$OUT/deploy.txt" 2>&1
echo "[deploy rc=$?]"; grep -A8 "^| model" "$OUT/deploy.txt"
grep -o '"model": "[a-z0-9_]*", "system": "kiln_load".*' "$OUT/deploy.txt" | cut -c1-330
timeout 50 python3 -m pytest -q -m gpu -p no:cacheprovider -n 3 tests/test_deploy.py \
    > "$OUT/gpu_tests.txt" 2>&1; echo "[gpu tests rc=$?]"; tail -2 "$OUT/gpu_tests.txt"
