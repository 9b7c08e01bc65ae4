#!/usr/bin/env bash
# Call 1 of 2026-12-06 (issues 12, 13, 15): branch depthwise-kiln-kernels (new) against main
# (base, .ab/base) on one card in one call. bench_depthwise (kiln's depthwise kernel vs
# cuDNN per layer), bench_se in both trees (squeeze-excite: rows across memory), then the
# depthwise nets and the zoo's ResNet-50, ConvNeXt-T and ViT-B/16 baked by both (in
# parallel, CPU only: tuning off) and bench_deploy (fresh process per model and system).
set -u
export PYTHONUNBUFFERED=1
bash benchmarks/run_device.sh > /dev/null
R=benchmarks/results/2026-12-06
cp $R/dw.toml /tmp/dw.toml
cp benchmarks/bench_se.py .ab/base/benchmarks/bench_se.py
for v in new base; do
  dir=$PWD; [ $v = base ] && dir=$PWD/.ab/base
  (cd $dir && PYTHONPATH=/tmp/site:$dir python3 -m compileall -q -j 0 compiler storage pipeline >/dev/null
   PYTHONPATH=/tmp/site:$dir timeout 200 python3 -m pipeline.cli run /tmp/dw.toml --store /tmp/$v-store \
     > "$OUT/bake_$v.txt" 2>&1; echo "[bake $v rc=$? at ${SECONDS}s]") &
done
PYTHONPATH=/tmp/site:$PWD timeout 150 python3 benchmarks/bench_depthwise.py --json "$OUT/depthwise.json" \
  > "$OUT/depthwise.txt" 2>&1; echo "[bench_depthwise rc=$? at ${SECONDS}s]"; tail -28 "$OUT/depthwise.txt"
for v in new base; do
  dir=$PWD; [ $v = base ] && dir=$PWD/.ab/base
  (cd $dir && PYTHONPATH=/tmp/site:$dir timeout 80 python3 benchmarks/bench_se.py --json "$OUT/se_$v.json" \
     > "$OUT/se_$v.txt" 2>&1; echo "[bench_se $v rc=$? at ${SECONDS}s]"; cat "$OUT/se_$v.txt")
done
wait
for v in new base; do tail -3 "$OUT/bake_$v.txt"; done
for v in new base; do
  dir=$PWD; [ $v = base ] && dir=$PWD/.ab/base
  sys="kiln_load eager"; [ $v = base ] && sys=kiln_load
  (cd $dir && PYTHONPATH=/tmp/site:$dir timeout $((${LIMIT:-585} - SECONDS)) python3 benchmarks/bench_deploy.py \
     --config /tmp/dw.toml --store /tmp/$v-store --systems $sys \
     --json "$OUT/deploy_$v.json" > "$OUT/deploy_$v.txt" 2>&1
   echo "[deploy $v rc=$? at ${SECONDS}s]"; grep "^| " "$OUT/deploy_$v.txt" | tail -14)
done
