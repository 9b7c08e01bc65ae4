#!/usr/bin/env bash
# Night call 1 of 2026-12-05 (issues 12, 13): depthwise convs as kiln kernels with the filter
# stored tap-major (coalesced weight loads), and 1x1 / patchify convs as one mm. bench_depthwise
# (kiln vs cuDNN per layer), then timm's three depthwise nets and the zoo's ResNet-50,
# ConvNeXt-T and ViT-B/16 baked by base (main, .ab/base) and by new, and bench_deploy on
# both, same card, same call.
set -u
export PYTHONUNBUFFERED=1
bash benchmarks/run_device.sh > /dev/null
export PYTHONPATH=/tmp/site:$PWD
timeout 200 python3 benchmarks/bench_depthwise.py --json "$OUT/depthwise.json" \
  > "$OUT/depthwise.txt" 2>&1; echo "[bench_depthwise rc=$? at ${SECONDS}s]"; tail -22 "$OUT/depthwise.txt"
cp benchmarks/results/2026-12-05/night/dw.toml /tmp/dw.toml     # the models of this call
for v in new base; do
  dir=$PWD; [ $v = base ] && dir=$PWD/.ab/base
  (cd $dir && PYTHONPATH=/tmp/site:$dir python3 -m compileall -q -j 0 compiler storage pipeline >/dev/null
   PYTHONPATH=/tmp/site:$dir timeout 170 python3 -m pipeline.cli run /tmp/dw.toml --store /tmp/$v-store \
     > "$OUT/bake_$v.txt" 2>&1; echo "[bake $v rc=$? at ${SECONDS}s]"; tail -3 "$OUT/bake_$v.txt")
done
for v in new base; do
  dir=$PWD; [ $v = base ] && dir=$PWD/.ab/base
  sys="kiln_load eager"; [ $v = base ] && sys=kiln_load
  (cd $dir && PYTHONPATH=/tmp/site:$dir timeout $((580 - SECONDS)) python3 benchmarks/bench_deploy.py \
     --config /tmp/dw.toml --store /tmp/$v-store --systems $sys \
     --json "$OUT/deploy_$v.json" > "$OUT/deploy_$v.txt" 2>&1
   echo "[deploy $v rc=$? at ${SECONDS}s]"; grep "^| " "$OUT/deploy_$v.txt" | tail -14)
done
