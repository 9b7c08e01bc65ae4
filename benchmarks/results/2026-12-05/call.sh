#!/usr/bin/env bash
# The one device call of 2026-12-05 (H200), each step capped so the whole fits in 590 s.
# kiln run of the third-party zoo needs only CPUs: it runs in the background meanwhile, and
# is waited for before anything is timed.
set -u
S=benchmarks/run_device.sh
t() { local cap=$1; shift; timeout "$cap" bash $S "$@"; echo "[step $* rc=$? at ${SECONDS}s]"; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
bash $S > /dev/null     # install the carried wheels, byte-compile, machine.txt
(timeout 260 python3 -m pipeline.cli run configs/zoo-thirdparty.toml --store /tmp/tp-store \
    > "$OUT/thirdparty_run.txt" 2>&1; echo "[thirdparty run rc=$? at ${SECONDS}s]") &
GPU_TESTS="tests/test_bound_launch.py tests/test_graph_pool_gpu.py" t 100 gpu-tests
SYSTEMS="kiln_load" t 90 deploy-load
t 40 profile-load
wait
tail -22 "$OUT/thirdparty_run.txt"
t 50 launch
( cd . && timeout 90 python3 benchmarks/bench_decode.py --lengths 128,1024 --steps 16 \
    --repeats 3 --json "$OUT/bench_decode.json" > "$OUT/bench_decode.txt" 2>&1;
  echo "[decode rc=$? at ${SECONDS}s]"; tail -16 "$OUT/bench_decode.txt" )
timeout 100 python3 benchmarks/bench_deploy.py --config configs/zoo-thirdparty.toml \
    --store /tmp/tp-store --systems eager kiln_load --json "$OUT/thirdparty.json" \
    > "$OUT/thirdparty.txt" 2>&1; echo "[thirdparty deploy rc=$? at ${SECONDS}s]"
tail -24 "$OUT/thirdparty.txt"
BENCH_ARGS="--models t5_encoder --systems eager,inductor,inductor_ro,kiln_graphs,kiln_nographs --budget-s 80" \
    t 110 bench
