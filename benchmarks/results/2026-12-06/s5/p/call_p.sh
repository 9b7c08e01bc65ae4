#!/usr/bin/env bash
# Call 8: cProfile of a cold capture on the GPU machine (ResNet-50 and EfficientNet-B0, CUDA
# tensors, one fresh process each) and torch's import times. Usage: bash .../s5/p/call_p.sh
bash benchmarks/run_device.sh > /dev/null; export PYTHONPATH=/tmp/site:$PWD
for m in resnet50 efficientnet_b0; do
  timeout 60 python3 benchmarks/probes/profile_capture.py --model $m --device cuda --top 50 \
      > $OUT/prof_$m.txt 2>&1; head -1 $OUT/prof_$m.txt; done
timeout 30 python3 -X importtime -c "import torch; import torch.export" 2> $OUT/importtime.txt
