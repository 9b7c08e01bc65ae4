#!/usr/bin/env bash
# Planned for the next session, one step per call (each fits one 600 s call):
#   bash benchmarks/results/2026-12-07/s10/next.sh bench1   # held-out bench, 3 models
#   bash benchmarks/results/2026-12-07/s10/next.sh bench2   # the other 3 unmeasured models
#   bash benchmarks/results/2026-12-07/s10/next.sh overlap  # issue 16 goal 4, then the
#                                                           # ConvNeXt build that killed workers
# s10's call 1 ran 2 of the 8 held-out models inside its 290 s budget (each model's six
# systems take 120-150 s, fresh processes), so the rest are split over two calls. The
# stencil warps (STENCIL_PER_THREAD) and 1-D stencil flag of this session change
# EfficientNet's, MobileNet's and ConvNeXt's depthwise kernels: bench1 re-measures
# EfficientNet-B0, the model that missed goal 1 (0.89x).
set -u
bash benchmarks/run_device.sh > /dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
head -2 "$OUT/machine.txt"
bench() {    # $1: models; the report's files are tarred (the device tool returns few files)
  timeout 570 python3 -m pipeline.cli bench configs/zoo-heldout.toml --quick --models "$1" \
      --store /tmp/bench-next --out "$OUT/bench" --budget-s 520 > "$OUT/bench.txt" 2>&1
  echo "[bench rc=$?]"; grep -A8 "^## Goals" "$OUT/bench/report.md"; grep "same process" "$OUT/bench.txt"
  (cd "$OUT" && tar czf bench.tgz bench && rm -rf bench)
}
case "${1:-}" in
  bench1) bench efficientnet_b0,mobilenetv3_large,densenet121 ;;
  bench2) bench deit_small,convnext_tiny,bert_4layer ;;
  bench3) bench t5_encoder,resnet50
    # goal 1's miss: EfficientNet-B0 without CUDA graphs, kiln's host time by function
    timeout 200 python3 benchmarks/profile_model.py pipeline.zoo.heldout:efficientnet_b0 \
        --inductor --no-graphs --top 25 > "$OUT/profile_effnet.txt" 2>&1
    echo "[profile rc=$?]"; grep "==" "$OUT/profile_effnet.txt" ;;
  overlap)
    # the same two-model tuned run from fresh stores, tunes held behind the build stage
    # (overlap = false) and not, each with its own empty Triton cache; then ConvNeXt-T
    # alone with depthwise_baseline, whose build task killed three workers in s10 call 2:
    # the log's tail says how
    for mode in false true; do
      sed "s/^enabled = true/enabled = true\noverlap = $mode/" \
          benchmarks/results/2026-12-07/s10/overlap.toml > /tmp/overlap-$mode.toml
      TRITON_CACHE_DIR=/tmp/tc-$mode timeout 200 python3 -m pipeline.cli run /tmp/overlap-$mode.toml --workers 15 \
          --store /tmp/overlap-$mode > "$OUT/overlap_$mode.txt" 2>&1
      echo "[overlap=$mode rc=$?]"; grep -E "^(models|[0-9]+/)|wall|tune:" "$OUT/overlap_$mode.txt" | head -8
    done
    timeout 150 python3 -m pipeline.cli run benchmarks/results/2026-12-07/s10/convnext_dw.toml \
        --workers 15 --store /tmp/cnx-dw > "$OUT/cnx_dw.txt" 2>&1
    echo "[cnx_dw rc=$?]"; tail -5 "$OUT/cnx_dw.txt"
    tail -c 20000 /tmp/cnx-dw/logs/run-*.log > "$OUT/cnx_dw_log_tail.txt" 2>/dev/null ;;
  *) echo "usage: next.sh bench1|bench2|bench3|overlap"; exit 2 ;;
esac
