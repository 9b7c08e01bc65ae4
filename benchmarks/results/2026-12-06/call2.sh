#!/usr/bin/env bash
# Call 2 of 2026-12-06 (issues 12, 13), after call1.sh on the same machine when it is
# still warm (its store /tmp/new-store; baked again otherwise): the GPU tests of the two
# conv lowerings and of deployment, the first call op by op for each model, and where GPT-2's
# load_model time goes (cProfile).
set -u
export PYTHONUNBUFFERED=1
bash benchmarks/run_device.sh > /dev/null
export PYTHONPATH=/tmp/site:$PWD
N=benchmarks/results/2026-12-06
timeout 200 python3 -m pytest -q -m gpu tests/test_lowering_conv_gemm.py tests/test_lowering_depthwise.py \
  tests/test_deploy.py tests/test_graph_pool_gpu.py > "$OUT/gpu_tests.txt" 2>&1; echo "[gpu tests rc=$? at ${SECONDS}s]"; tail -3 "$OUT/gpu_tests.txt"
[ -d /tmp/new-store ] || timeout 170 python3 -m pipeline.cli run $N/dw.toml --store /tmp/new-store > "$OUT/bake_new.txt" 2>&1
for m in resnet50 vit_b16 zoo_convnext_tiny convnext_tiny efficientnet_b0; do
  timeout 60 python3 benchmarks/profile_load.py --config $N/dw.toml --store /tmp/new-store --model $m --ops
done > "$OUT/first_call_ops.txt" 2>&1; echo "[ops at ${SECONDS}s]"; grep -E "on cuda|convolution|mm" "$OUT/first_call_ops.txt"
timeout 150 python3 -m pipeline.cli run $N/gpt2.toml --store /tmp/gpt2-store > "$OUT/bake_gpt2.txt" 2>&1
timeout 100 python3 benchmarks/profile_load.py --config $N/gpt2.toml --store /tmp/gpt2-store --model gpt2_lm \
  --top 30 > "$OUT/gpt2_profile.txt" 2>&1; echo "[gpt2 profile rc=$? at ${SECONDS}s]"; head -60 "$OUT/gpt2_profile.txt"
