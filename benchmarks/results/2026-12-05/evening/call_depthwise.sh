#!/usr/bin/env bash
# Evening call 3 of 2026-12-05 (issues 12, 13): depthwise convolutions as kiln kernels (new)
# against cuDNN's (base: the commit before, under .ab/base), same card, same call. The
# third-party zoo baked by each; bench_deploy (fresh process per model and system) on the
# depthwise-heavy timm models for both, and on the transformers models (new only: their
# load path changed this evening, not their kernels).
set -u
export PYTHONUNBUFFERED=1
bash benchmarks/run_device.sh > /dev/null
for v in base new; do
  dir=$PWD; [ $v = base ] && dir=$PWD/.ab/base
  (cd $dir && PYTHONPATH=/tmp/site:$dir python3 -m compileall -q -j 0 compiler storage pipeline >/dev/null
   PYTHONPATH=/tmp/site:$dir python3 -m pipeline.cli run configs/zoo-thirdparty.toml \
     --store /tmp/$v-store > "$OUT/bake_$v.txt" 2>&1; echo "[bake $v rc=$? at ${SECONDS}s]"
   grep -E "^(models|kernels|fallback)|ok|failed" "$OUT/bake_$v.txt" | tail -4)
done
DW="efficientnet_b0 mobilenetv3_large convnext_tiny"
(cd .ab/base && PYTHONPATH=/tmp/site:$PWD timeout 150 python3 benchmarks/bench_deploy.py \
   --config configs/zoo-thirdparty.toml --store /tmp/base-store --systems kiln_load \
   --models $DW --json "$OUT/deploy_base.json" > "$OUT/deploy_base.txt" 2>&1
 echo "[deploy base rc=$? at ${SECONDS}s]"; grep "^| " "$OUT/deploy_base.txt" | tail -3)
PYTHONPATH=/tmp/site:$PWD timeout $((580 - SECONDS)) python3 benchmarks/bench_deploy.py \
   --config configs/zoo-thirdparty.toml --store /tmp/new-store --systems kiln_load eager \
   --models $DW bert_4layer t5_encoder gpt2_lm llama_lm --json "$OUT/deploy_new.json" \
   > "$OUT/deploy_new.txt" 2>&1
echo "[deploy new rc=$? at ${SECONDS}s]"; grep "^| " "$OUT/deploy_new.txt" | tail -14
