#!/usr/bin/env bash
# Session 2 of 2026-12-06, call A: issue 13 on the card. The third-party zoo (timm and
# transformers, Swin, GPT-2 and Llama included) baked by `kiln run`, each model loaded in a
# fresh process against eager (bench_deploy: first result, steady ms, error); then
# tests/test_zoo_real_gpu.py (real sizes, bf16, CUDA graphs on and off, kernels and
# fallbacks printed per model). Everything lands in $OUT/call_a.tgz; key lines are printed.
set -u
bash benchmarks/run_device.sh > /dev/null            # wheels, byte-compile, machine.txt
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/res; mkdir -p $R; cp "$OUT/machine.txt" $R/; cat $R/machine.txt
t=$SECONDS
timeout 250 python3 -m pipeline.cli run configs/zoo-thirdparty.toml --store /tmp/tp-store \
    > $R/thirdparty_run.txt 2>&1
echo "[kiln run rc=$? wall $((SECONDS - t)) s]"; tail -30 $R/thirdparty_run.txt
t=$SECONDS
timeout 170 python3 benchmarks/bench_deploy.py --config configs/zoo-thirdparty.toml \
    --store /tmp/tp-store --systems eager kiln_load --timeout 60 --json $R/thirdparty.json \
    > $R/thirdparty.txt 2>&1
echo "[bench_deploy rc=$? wall $((SECONDS - t)) s]"; tail -30 $R/thirdparty.txt
tar czf "$OUT/call_a.tgz" -C $R .
t=$SECONDS
timeout $((585 - SECONDS)) python3 -m pytest -p no:cacheprovider -m gpu -rA -q -n 4 \
    tests/test_zoo_real_gpu.py > $R/zoo_real_gpu.txt 2>&1
echo "[zoo_real_gpu rc=$? wall $((SECONDS - t)) s]"
grep -E "PASS|FAIL|XPASS|XFAIL|ERROR|kernels|fallback|passed|failed" $R/zoo_real_gpu.txt | tail -60
tar czf "$OUT/call_a.tgz" -C $R .
