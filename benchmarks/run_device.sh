#!/usr/bin/env bash
# One call on the GPU machine: install the wheels it lacks (.whl, carried: Dask's and
# pytest-xdist's from `../shared/tools/device-wheels.sh .whl pytest-xdist execnet`, and
# pydantic's, which pipeline/config_schema.py needs),
# then run the steps named on the command line, each writing its output under $OUT:
#   bash benchmarks/run_device.sh deploy      # kiln run configs/zoo-deploy.toml + bench_deploy
#   bash benchmarks/run_device.sh launch      # bench_launch: host us per launch, kiln vs Inductor
#   bash benchmarks/run_device.sh gpu-tests   # the GPU tests of the new features
#   bash benchmarks/run_device.sh profile-load  # where load_model's time goes (after deploy*)
#   bash benchmarks/run_device.sh gpu-suite   # every test marked gpu
#   bash benchmarks/run_device.sh bench       # kiln bench configs/zoo-heldout.toml --quick
#   bash benchmarks/run_device.sh decode      # bench_decode: ms/token, kiln vs reduce-overhead
set -uo pipefail
[ -f /tmp/site/.kiln-wheels ] || { python3 -m pip install -q --no-index --no-deps --no-compile \
    --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && touch /tmp/site/.kiln-wheels; } \
    || exit 1     # once per machine: later calls of this script in the same call skip it
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
# Byte-compile the project as pip install does, so a fresh process (load_model's timing
# above all) does not pay for compiling kiln's own sources.
python3 -m compileall -q -j 0 compiler storage pipeline > /dev/null
# The lent machine's torch holds no bytecode and its folder takes none: every fresh process
# compiled ~900 of torch's modules from source (1.9 s of a 5.7 s ResNet-50 capture, cProfile
# on an H100 machine). A pip install writes that bytecode. Here it goes under a prefix that
# every process with /tmp/site on its path uses (sitecustomize), written once per machine by
# importing what the measured systems import, so no system (eager, torch.compile, kiln) pays
# it inside its timing.
if [ ! -f /tmp/site/.kiln-bytecode ]; then
  if ! python3 -c "import sitecustomize" 2> /dev/null && ! python3 -c \
      "import os, torch; exit(not os.access(os.path.dirname(torch.__file__), os.W_OK))"; then
    printf '%s\n' "import sys  # kiln's run_device.sh: bytecode of read-only packages" \
        "sys.pycache_prefix = sys.pycache_prefix or '/tmp/pycache'" > /tmp/site/sitecustomize.py
  fi
  python3 -c "
import importlib, sys
sys.dont_write_bytecode = False     # PYTHONDONTWRITEBYTECODE may be set: write it this once
for name in ('torch', 'torch.export', 'torch._dynamo', 'torch._inductor.compile_fx', 'triton',
             'torch._functorch.aot_autograd', 'transformers', 'timm', 'torchvision'):
    try:
        importlib.import_module(name)
    except Exception:
        pass" > /dev/null 2>&1
  touch /tmp/site/.kiln-bytecode
fi
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
    thirdparty)     # issue 13: kiln run of timm/transformers models, then eager vs load_model
      python3 -m pipeline.cli run configs/zoo-thirdparty.toml --store /tmp/tp-store \
          > "$OUT/thirdparty_run.txt" 2>&1; tail -22 "$OUT/thirdparty_run.txt"
      python3 benchmarks/bench_deploy.py --config configs/zoo-thirdparty.toml \
          --store /tmp/tp-store --systems eager kiln_load --json "$OUT/thirdparty.json" \
          2>&1 | tee "$OUT/thirdparty.txt" | tail -24 ;;
    profile-load)   # cProfile of load_model and the first call, per deploy model
      for m in ${PROFILE_MODELS:-bert_base resnet50}; do
        python3 benchmarks/profile_load.py --store /tmp/deploy-store --model "$m" \
            > "$OUT/profile_load_$m.txt" 2>&1; head -1 "$OUT/profile_load_$m.txt"; done ;;
    launch)         # host cost per kernel launch without CUDA graphs, vs Inductor
      python3 benchmarks/bench_launch.py --json "$OUT/bench_launch.json" 2>&1 \
          | tee "$OUT/bench_launch.txt" | tail -12 ;;
    gpu-tests)
      python3 -m pytest -q -n 0 -m gpu -p no:cacheprovider \
          ${GPU_TESTS:-tests/test_bound_launch.py tests/test_graph_pool_gpu.py tests/test_deploy.py \
          tests/test_capture_keys.py tests/test_static_launch.py tests/test_binaries.py \
          tests/test_precompile.py tests/test_zoo_real_gpu.py} 2>&1 | tee "$OUT/gpu_tests.txt" \
          | tail -30 ;;
    bench)          # report.md, its PNGs and rows.json under $OUT/bench/; $BENCH_ARGS adds
                    # options, e.g. BENCH_ARGS="--models resnet50,bert_4layer"
      python3 -m pipeline.cli bench configs/zoo-heldout.toml --quick --store /tmp/bench-store \
          --out "$OUT/bench" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.txt" | tail -30 ;;
    decode)         # ms per token at several KV lengths, kiln vs reduce-overhead dynamic
      python3 benchmarks/bench_decode.py --json "$OUT/bench_decode.json" \
          2>&1 | tee "$OUT/bench_decode.txt" | tail -30 ;;
    gpu-suite)
      python3 -m pytest -q -n 0 -m gpu -p no:cacheprovider -x --timeout 900 tests 2>&1 \
          | tee "$OUT/gpu_suite.txt" | tail -30 ;;
  esac
done
