#!/usr/bin/env bash
# The short device call of 2026-12-05, when failed machine starts had left ~170 s of device
# time: the GPU tests of the new launch, graph-pool and stored-binary tuning paths, the launch
# benchmark, then the autotune sweep (cut by the limit if it must be).
set -u
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
S=benchmarks/run_device.sh
bash $S > /dev/null
GPU_TESTS="tests/test_bound_launch.py tests/test_graph_pool_gpu.py tests/test_autotune_binaries.py" \
    timeout 70 bash $S gpu-tests; echo "[gpu-tests rc=$? at ${SECONDS}s]"
timeout 40 bash $S launch; echo "[launch rc=$? at ${SECONDS}s]"
timeout 80 python3 benchmarks/bench_autotune.py --dtype bfloat16 --max-kernels 6 --budget-s 2 \
    --compare-jit --out "$OUT/autotune" > "$OUT/bench_autotune.txt" 2>&1
echo "[autotune rc=$? at ${SECONDS}s]"; tail -20 "$OUT/bench_autotune.txt"
