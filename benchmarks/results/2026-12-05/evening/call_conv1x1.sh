#!/usr/bin/env bash
# Evening call 2 of 2026-12-05 (issue 12): 1x1 convolutions of channels-last graphs as
# cuBLAS matmuls (new) against cuDNN convolutions (base: the commit before, checked out
# under .ab/base), same card, same call: the deploy zoo baked by each, then each one's
# load_model phases, first call op by op (new), and bench_deploy (steady ms too).
set -u
export PYTHONUNBUFFERED=1
bash benchmarks/run_device.sh > /dev/null
for v in base new; do
  dir=$PWD; [ $v = base ] && dir=$PWD/.ab/base
  (cd $dir && PYTHONPATH=/tmp/site:$dir python3 -m compileall -q -j 0 compiler storage pipeline >/dev/null
   PYTHONPATH=/tmp/site:$dir python3 -m pipeline.cli run configs/zoo-deploy.toml \
     --store /tmp/$v-store > "$OUT/bake_$v.txt" 2>&1; echo "[bake $v rc=$? at ${SECONDS}s]")
done
for m in resnet50 convnext_tiny; do for v in base new new base; do
  dir=$PWD; [ $v = base ] && dir=$PWD/.ab/base
  (cd $dir && PYTHONPATH=/tmp/site:$dir timeout 60 python3 benchmarks/profile_load.py \
     --store /tmp/$v-store --model $m --phases 2>&1 | grep " on cuda" | sed "s/^/$v /")
done; done | tee "$OUT/phases.txt"
for m in resnet50 convnext_tiny; do
  PYTHONPATH=/tmp/site:$PWD timeout 60 python3 benchmarks/profile_load.py --store /tmp/new-store \
    --model $m --ops 2>&1 | grep -v Warning | head -8; done > "$OUT/first_call_ops_new.txt"
for v in new base; do
  dir=$PWD; [ $v = base ] && dir=$PWD/.ab/base
  (cd $dir && PYTHONPATH=/tmp/site:$dir timeout 150 python3 \
     benchmarks/bench_deploy.py --store /tmp/$v-store --systems kiln_load eager \
     --json "$OUT/deploy_$v.json" > "$OUT/deploy_$v.txt" 2>&1
   echo "[deploy $v rc=$? at ${SECONDS}s]"; grep "^| " "$OUT/deploy_$v.txt" | tail -8)
done
