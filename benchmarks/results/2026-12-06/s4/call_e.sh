#!/usr/bin/env bash
# Issue 12's last gap (ViT-B/16 and BERT-base first results over 0.3 s in call C), after
# cuBLAS's set-up moved onto a thread during load_model, and the opt-in attention order
# (option attention = "flash_first"): the first-op probe and steady attention per backend;
# ViT-B/16 and BERT-base baked with the default and with flash_first, each served (eager,
# load_model) in fresh processes: first result and steady ms, same card, same call; then
# the deploy GPU tests. Usage: bash benchmarks/results/2026-12-06/s4/call_e.sh
set -u
bash benchmarks/run_device.sh > /dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
head -2 "$OUT/machine.txt"
timeout 45 python3 benchmarks/probes/first_ops.py --steady > "$OUT/first_ops.txt" 2>&1
timeout 60 python3 benchmarks/probes/first_ops.py >> "$OUT/first_ops.txt" 2>&1
echo "[probe rc=$?]"; cat "$OUT/first_ops.txt"
sed '/^\[\[models\]\]/,$d' configs/zoo-deploy.toml > /tmp/vb.toml
sed -n '/vision:vit_b16/,$p' configs/zoo-deploy.toml | sed '1i [[models]]' >> /tmp/vb.toml
sed 's/^\[tuning\]/[compiler]\nattention = "flash_first"\n\n[tuning]/' /tmp/vb.toml > /tmp/vb-flash.toml
for mode in torch flash; do
  cfg=/tmp/vb.toml; [ $mode = flash ] && cfg=/tmp/vb-flash.toml
  timeout 60 python3 -m pipeline.cli run $cfg --store /tmp/d-$mode > "$OUT/bake_$mode.txt" 2>&1
  echo "[bake $mode rc=$?]"; tail -1 "$OUT/bake_$mode.txt"
  timeout 70 python3 benchmarks/bench_deploy.py --config $cfg --store /tmp/d-$mode --timeout 30 \
      --systems eager kiln_load --json "$OUT/deploy_$mode.json" > "$OUT/deploy_$mode.txt" 2>&1
  echo "[deploy $mode rc=$?]"; grep -A6 "^| model" "$OUT/deploy_$mode.txt"
  grep -o '"model": "[a-z0-9_]*", "system": "kiln_load".*' "$OUT/deploy_$mode.txt" | cut -c1-300
done
timeout 50 python3 -m pytest -q -m gpu -p no:cacheprovider -n 3 tests/test_deploy.py \
    > "$OUT/gpu_tests.txt" 2>&1; echo "[gpu tests rc=$?]"; tail -2 "$OUT/gpu_tests.txt"
