#!/usr/bin/env bash
# The one device call of 2026-12-05 (H200), each step capped so the whole fits the ~450 s of
# device time left (the later steps are cut first).
# kiln run of the third-party zoo needs only CPUs: it runs in the background while the GPU
# tests and the autotune sweep (GPU-timed with CUDA events) run, and is waited for before
# anything host-sensitive is timed.
set -u
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
S=benchmarks/run_device.sh
t() { local cap=$1; shift; timeout "$cap" bash $S "$@"; echo "[step $* rc=$? at ${SECONDS}s]"; }
mark() { echo "[$1 rc=$2 at ${SECONDS}s]"; }
bash $S > /dev/null     # install the carried wheels, byte-compile, machine.txt
(timeout 200 python3 -m pipeline.cli run configs/zoo-thirdparty.toml --store /tmp/tp-store \
    > "$OUT/thirdparty_run.txt" 2>&1; mark "thirdparty run" $?) &
GPU_TESTS="tests/test_bound_launch.py tests/test_graph_pool_gpu.py tests/test_autotune_binaries.py" \
    t 60 gpu-tests
timeout 80 python3 benchmarks/bench_autotune.py --dtype bfloat16 --max-kernels 8 --budget-s 2 \
    --compare-jit --out "$OUT/autotune" > "$OUT/bench_autotune.txt" 2>&1
mark autotune $?; tail -20 "$OUT/bench_autotune.txt"
wait
tail -24 "$OUT/thirdparty_run.txt"
t 40 launch
timeout 100 python3 benchmarks/bench_deploy.py --config configs/zoo-thirdparty.toml \
    --store /tmp/tp-store --models swin_tiny gpt2_lm llama_lm t5_encoder densenet121 \
    efficientnet_b0 deit_small mobilenetv3_large bert_4layer resnet50 convnext_tiny \
    --systems eager kiln_load --json "$OUT/thirdparty.json" \
    > "$OUT/thirdparty.txt" 2>&1; mark "thirdparty deploy" $?
tail -26 "$OUT/thirdparty.txt"
for m in bert_4layer; do
  timeout 15 python3 benchmarks/profile_load.py --store /tmp/tp-store --config \
      configs/zoo-thirdparty.toml --model $m > "$OUT/profile_load_$m.txt" 2>&1
  head -1 "$OUT/profile_load_$m.txt"; done
timeout 60 python3 benchmarks/bench_decode.py --lengths 128,1024 --steps 8 --repeats 2 \
    --json "$OUT/bench_decode.json" > "$OUT/bench_decode.txt" 2>&1
mark decode $?; tail -16 "$OUT/bench_decode.txt"
BENCH_ARGS="--models t5_encoder --systems kiln_nographs,kiln_graphs,inductor,inductor_ro,eager --budget-s 50" \
    t 100 bench
