#!/usr/bin/env bash
# Planned for the next session (issue 12): the repo's deploy zoo (ResNet-50, ConvNeXt-T,
# ViT-B/16, BERT) baked, then served by load_model in fresh processes, first with torch's
# default cuDNN path and then with TORCH_CUDNN_V8_API_DISABLED=1 (torch's older cuDNN API,
# if this torch still reads it): whether cuDNN's per-shape set-up in the first call, 0.25 s
# of ResNet-50's first result on an H200 in earlier profiles, is cheaper there. Same card,
# same call. Usage: bash benchmarks/results/2026-12-06/s2/next_deploy.sh
set -u
bash benchmarks/run_device.sh > /dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
timeout 200 python3 -m pipeline.cli run configs/zoo-deploy.toml --store /tmp/d \
    > "$OUT/deploy_bake.txt" 2>&1; echo "[bake rc=$?]"; tail -4 "$OUT/deploy_bake.txt"
for mode in default v7; do
  env=(); [ $mode = v7 ] && env=(TORCH_CUDNN_V8_API_DISABLED=1)
  env "${env[@]}" timeout 170 python3 benchmarks/bench_deploy.py --store /tmp/d \
      --systems eager kiln_load --timeout 40 --json "$OUT/deploy_$mode.json" \
      > "$OUT/deploy_$mode.txt" 2>&1
  echo "[$mode rc=$?]"; grep -o '"model": "[a-z0-9_]*", "system": "[a-z_]*", "first_result_s": [0-9.]*' \
      "$OUT/deploy_$mode.txt"
done
# The first call op by op (cuBLAS/cuDNN set-up against kiln's launches), per model.
for m in vit_b16 resnet50; do
  timeout 60 python3 benchmarks/profile_load.py --store /tmp/d --model $m --ops \
      > "$OUT/first_call_ops_$m.txt" 2>&1; head -25 "$OUT/first_call_ops_$m.txt"
done
