#!/usr/bin/env bash
# Issue 12 on the card: kiln's implicit-GEMM conv template (conv_kernels = "triton", no
# cuDNN in the process) against cuDNN. Its GPU tests, per-shape times of ResNet-50's 3x3/7x7
# convs, then the deploy zoo baked twice (default: cuDNN for those convs; "triton") and
# served by load_model in fresh processes: first result and steady ms, same card, same call.
# Usage: bash benchmarks/results/2026-12-06/s3/call_b.sh
set -u
bash benchmarks/run_device.sh > /dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
timeout 80 python3 -m pytest -q -m gpu -p no:cacheprovider -rA -n 4 tests/test_conv_template.py \
    tests/test_lowering_conv_gemm.py tests/test_deploy.py > "$OUT/gpu_tests.txt" 2>&1
echo "[gpu tests rc=$?]"; grep -E "^(PASSED|FAILED|ERROR)|passed|failed" "$OUT/gpu_tests.txt" | tail -30
timeout 100 python3 benchmarks/bench_conv.py --json "$OUT/bench_conv.json" > "$OUT/bench_conv.txt" 2>&1
echo "[bench_conv rc=$?]"; tail -40 "$OUT/bench_conv.txt"
sed 's/^\[tuning\]/[compiler]\nconv_kernels = "triton"\n\n[tuning]/' configs/zoo-deploy.toml \
    > /tmp/zoo-deploy-triton.toml
for mode in ${MODES:-library triton}; do
  cfg=configs/zoo-deploy.toml; [ $mode = triton ] && cfg=/tmp/zoo-deploy-triton.toml
  timeout 60 python3 -m pipeline.cli run "$cfg" --store /tmp/d-$mode > "$OUT/bake_$mode.txt" 2>&1
  echo "[bake $mode rc=$?]"; tail -3 "$OUT/bake_$mode.txt"
  timeout 60 python3 benchmarks/bench_deploy.py --config "$cfg" --store /tmp/d-$mode --models resnet50 convnext_tiny \
      --systems eager kiln_load --timeout 40 --json "$OUT/deploy_$mode.json" \
      > "$OUT/deploy_$mode.txt" 2>&1
  echo "[deploy $mode rc=$?]"; tail -14 "$OUT/deploy_$mode.txt"
done
