#!/usr/bin/env bash
# Planned for the next session, one step per call (each fits one 600 s call):
#   bash benchmarks/results/2026-12-07/s11/next.sh text    # T5 + BERT bench: capture now
#                                                          # one trace for T5 (tied weights)
#                                                          # and export's flags for both
#   bash benchmarks/results/2026-12-07/s11/next.sh decode  # the static-cache rows s11 lost
#   bash benchmarks/results/2026-12-07/s11/next.sh deit    # goal 1's 0.99x: DeiT-S host
#                                                          # profile, then its bench row
set -u
bash benchmarks/run_device.sh > /dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
head -2 "$OUT/machine.txt"
bench() {    # $1: models, $2: budget s
  timeout $(($2 + 40)) python3 -m pipeline.cli bench configs/zoo-heldout.toml --quick \
      --models "$1" --store /tmp/bench-next --out "$OUT/bench" --budget-s "$2" > "$OUT/bench.txt" 2>&1
  echo "[bench rc=$?]"; grep -A8 "^## Goals" "$OUT/bench/report.md"; grep "same process\|cold" "$OUT/bench.txt"
  (cd "$OUT" && tar czf bench.tgz bench && rm -rf bench)
}
case "${1:-}" in
  text) bench t5_encoder,bert_4layer 500 ;;
  decode) timeout 520 python3 benchmarks/bench_decode.py --caches static,dynamic \
      --json "$OUT/bench_decode.json" > "$OUT/bench_decode.txt" 2>&1
    echo "[decode rc=$?]"; grep "ms/token" "$OUT/bench_decode.txt" ;;
  deit) timeout 150 python3 benchmarks/profile_model.py pipeline.zoo.heldout:deit_small \
      --inductor --no-graphs --top 25 > "$OUT/prof_deit.txt" 2>&1
    echo "[profile rc=$?]"; grep "==" "$OUT/prof_deit.txt"; bench deit_small 330 ;;
  *) echo "usage: next.sh text|decode|deit"; exit 2 ;;
esac
