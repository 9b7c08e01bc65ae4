#!/usr/bin/env bash
# s11 call 1: where kiln's host time goes without CUDA graphs (issue 15 goal 1), per model:
# host ms per call (enqueued behind a GPU sleep), GPU ops per call, cProfile by function,
# against torch.compile default in the same process; then the decode bench (goal 2).
set -u
bash benchmarks/run_device.sh > /dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
head -3 "$OUT/machine.txt"
for m in efficientnet_b0 resnet50 mobilenetv3_large; do
  timeout 150 python3 benchmarks/profile_model.py pipeline.zoo.heldout:$m --inductor \
      --no-graphs --top 25 > "$OUT/prof_$m.txt" 2>&1
  echo "[$m rc=$?]"; grep "==" "$OUT/prof_$m.txt"
done
timeout 230 python3 benchmarks/bench_decode.py --json "$OUT/bench_decode.json" \
    > "$OUT/bench_decode.txt" 2>&1
echo "[decode rc=$?]"; tail -25 "$OUT/bench_decode.txt"
