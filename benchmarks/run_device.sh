#!/usr/bin/env bash
# One call on the GPU machine: install the wheels it lacks (.whl, carried: Dask's from
# ../shared/tools/device-wheels.sh, and pydantic's, which pipeline/config_schema.py needs),
# then run the steps named on the command line, each writing its output under $OUT:
#   bash benchmarks/run_device.sh deploy      # kiln run configs/zoo-deploy.toml + bench_deploy
#   bash benchmarks/run_device.sh gpu-tests   # the GPU tests of the new features
#   bash benchmarks/run_device.sh gpu-suite   # every test marked gpu
#   bash benchmarks/run_device.sh decode      # bench_decode: ms/token, kiln vs reduce-overhead
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv; nproc;
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} > "$OUT/machine.txt" 2>&1
for step in "$@"; do
  case "$step" in
    deploy)
      python3 -m pipeline.cli run configs/zoo-deploy.toml --store /tmp/deploy-store \
          > "$OUT/deploy_bake.txt" 2>&1
      python3 benchmarks/bench_deploy.py --store /tmp/deploy-store --json "$OUT/deploy.json" \
          2>&1 | tee "$OUT/deploy.txt" | tail -40 ;;
    deploy-load)    # $SYSTEMS (default: eager and kiln's), with load_model's phases
      [ -d /tmp/deploy-store ] || python3 -m pipeline.cli run configs/zoo-deploy.toml \
          --store /tmp/deploy-store > "$OUT/deploy_bake.txt" 2>&1
      python3 benchmarks/bench_deploy.py --store /tmp/deploy-store --systems \
          ${SYSTEMS:-eager kiln_cold kiln_load} --json "$OUT/deploy_load.json" 2>&1 | tee "$OUT/deploy_load.txt" \
          | tail -16 ;;
    gpu-tests)
      python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_deploy.py \
          tests/test_capture_keys.py tests/test_static_launch.py tests/test_binaries.py \
          tests/test_precompile.py tests/test_zoo_real_gpu.py tests/test_graph_pool_gpu.py 2>&1 | tee "$OUT/gpu_tests.txt" \
          | tail -30 ;;
    decode)
      python3 benchmarks/bench_decode.py --json "$OUT/bench_decode.json" \
          2>&1 | tee "$OUT/bench_decode.txt" | tail -30 ;;
    gpu-suite)
      python3 -m pytest -q -m gpu -p no:cacheprovider -x --timeout 900 tests 2>&1 \
          | tee "$OUT/gpu_suite.txt" | tail -30 ;;
  esac
done
