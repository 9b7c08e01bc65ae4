#!/usr/bin/env bash
# Evening call 1 of 2026-12-05 (issue 12): load_model after three imports left its path
# (pandas, sympy, transformers' exporter) and with cuDNN/cuBLAS started on a thread while
# the module loads. GPU tests of the load path, the repo's deploy zoo baked, then per model:
# phases with and without the thread, the first call op by op, and bench_deploy.
set -u
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
bash benchmarks/run_device.sh > /dev/null
timeout 200 python3 -m pytest -q -m gpu tests/test_deploy.py tests/test_kernels_libraries.py \
    -p no:cacheprovider > "$OUT/gpu_tests.txt" 2>&1; echo "[tests rc=$? at ${SECONDS}s]"
tail -3 "$OUT/gpu_tests.txt"
python3 -m pipeline.cli run configs/zoo-deploy.toml --store /tmp/deploy-store \
    > "$OUT/deploy_bake.txt" 2>&1; echo "[bake rc=$? at ${SECONDS}s]"; tail -4 "$OUT/deploy_bake.txt"
P="python3 benchmarks/profile_load.py --store /tmp/deploy-store"
for m in resnet50 convnext_tiny vit_b16 bert_base; do
  for flags in "--phases" "--phases --serial" "--phases" "--phases --serial"; do
    timeout 60 $P --model $m $flags 2>&1 | grep " on cuda"; done; done | tee "$OUT/phases.txt"
for m in resnet50 convnext_tiny; do
  for flags in "--ops --serial" "--ops --serial --prewarm"; do
    timeout 60 $P --model $m $flags 2>&1 | grep -v Warning | head -14; done; done \
    > "$OUT/first_call_ops.txt"; echo "[ops at ${SECONDS}s]"
timeout $((570 - SECONDS)) python3 benchmarks/bench_deploy.py --store /tmp/deploy-store \
    --systems eager kiln_load --json "$OUT/deploy.json" > "$OUT/deploy.txt" 2>&1
echo "[deploy rc=$? at ${SECONDS}s]"; tail -10 "$OUT/deploy.txt"
