#!/usr/bin/env bash
# Session 14's device steps, one per call (each fits one 600 s call):
#   gputests the GPU tests of s14's changes (graph pool bounded by bytes, --same-process,
#            static-cache decode, graphed calls): not run in s14 (the last request found
#            no machine). FIRST next session.
#   first    loopmin, then the static-cache decode rows (kiln vs reduce-overhead) and
#            probes/static_decode_profile.py: s14's call binding (keyword calls looked up
#            ~60 weights by name, 0.8 ms a call on a 2-core CPU) is unmeasured on a GPU;
#            then bench_call_host.py on the GPU machine's CPU
#   ab       kiln bench --same-process, kiln with and without graphs on the five models:
#            each kiln row also times its torch.compile baseline in its own process
#            (goals 1 and 3 without process-to-process host noise)
#   conv4    kiln bench of the four conv nets s13 did not rerun (ResNet-50, EfficientNet-B0,
#            MobileNetV3-L, DenseNet-121): reduce-overhead against kiln with graphs, default
#            against kiln without (goal 3's per-model floor, goal 1); `vision`/`text` cover
#            the other four
#   dwab     benchmarks/probes/dw_loop_ab.py: depthwise 7x7 unrolled vs loop forms vs cuDNN
#   cold5ab  dwab, then cold5 with a 390 s budget
#   loop     probes/dw_loop_models.py (depthwise row loop vs unrolled, two nets), then
#            ConvNeXt-T's cold start (3 systems), then probes/static_decode_profile.py
#   loopmin  the depthwise GPU tests (7x7 and 5x5 loops against cuDNN), probes/dw_loop_models.py
#   cold5    kiln bench --quick of the five models that missed in s11 (DeiT-S, ConvNeXt-T,
#            BERT, ResNet-50, T5), three systems: torch.compile default and kiln with and
#            without graphs: goal 1 (no graphs vs default) and goal 4 (cold) in one run
#   prof     DeiT-S without graphs: per-kernel GPU time, host ms per call and its cProfile,
#            against torch.compile default (goal 1's 0.99x)
#   combo    cold5 cut to 240 s, then the decode bench's static-cache rows (what fits the
#            budget left after refused starts)
#   decode   bench_decode.py, dynamic and static caches (goal 2)
#   text     kiln bench --quick of T5 and BERT, every system (goals 1, 3, 4)
#   vision   kiln bench --quick of DeiT-S and ConvNeXt-T, every system
set -u
bash benchmarks/run_device.sh > /dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
head -2 "$OUT/machine.txt"
bench() {    # $1: models, $2: budget s, $3: systems (empty: the quick set), $4: more flags
  timeout $(($2 + 60)) python3 -m pipeline.cli bench configs/zoo-heldout.toml --quick \
      --models "$1" ${3:+--systems "$3"} --store /tmp/bench-s14 --out "$OUT/bench" \
      --budget-s "$2" ${4:-} > "$OUT/bench.txt" 2>&1
  echo "[bench rc=$?]"; grep -A8 "^## Goals" "$OUT/bench/report.md"
  grep "same process\|cold\|ms/call\|status" "$OUT/bench.txt" | head -40
  (cd "$OUT" && tar czf bench.tgz bench && rm -rf bench)
}
case "${1:-}" in
  prof) timeout 170 python3 benchmarks/profile_model.py pipeline.zoo.heldout:deit_small \
      --inductor --no-graphs --top 30 > "$OUT/prof_deit.txt" 2>&1
    echo "[profile rc=$?]"; grep "==" "$OUT/prof_deit.txt" ;;
  dwab) timeout 60 python3 benchmarks/probes/dw_loop_ab.py > "$OUT/dw_loop_ab.txt" 2>&1
    echo "[dwab rc=$?]"; grep -v -i warn "$OUT/dw_loop_ab.txt" | tail -6 ;;
  cold5ab) bash "$0" dwab; bench deit_small,bert_4layer,t5_encoder,resnet50,convnext_tiny 390 \
      inductor,kiln_graphs,kiln_nographs ;;
  loop) timeout 120 python3 benchmarks/probes/dw_loop_models.py --models \
      convnext_tiny,efficientnet_b0 > "$OUT/dw_loop_models.txt" 2>&1
    echo "[loop rc=$?]"; grep "loop speed\|err" "$OUT/dw_loop_models.txt"
    bench convnext_tiny 80 inductor,kiln_graphs,kiln_nographs
    timeout 100 python3 benchmarks/probes/static_decode_profile.py > "$OUT/static_decode_profile.txt" 2>&1
    echo "[sdprof rc=$?]"; grep "==\|GPU us" "$OUT/static_decode_profile.txt" ;;
  gputests) timeout 300 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_graph_pool_gpu.py \
      tests/test_bench.py tests/test_llm_decode.py tests/test_graphed_call.py > "$OUT/gpu_tests_s14.txt" 2>&1
    echo "[gpu tests rc=$?]"; tail -5 "$OUT/gpu_tests_s14.txt" ;;
  first) bash "$0" loopmin
    timeout 150 python3 benchmarks/bench_decode.py --caches static --lengths 128,2048 --repeats 3 \
      --json "$OUT/bench_decode_static.json" > "$OUT/bench_decode_static.txt" 2>&1
    echo "[decode rc=$?]"; tail -8 "$OUT/bench_decode_static.txt"
    timeout 100 python3 benchmarks/probes/static_decode_profile.py > "$OUT/static_decode_profile.txt" 2>&1
    echo "[sdprof rc=$?]"; grep "==\|GPU us\|host" "$OUT/static_decode_profile.txt" | head -20
    timeout 60 python3 benchmarks/bench_call_host.py > "$OUT/bench_call_host.txt" 2>&1
    echo "[callhost rc=$?]"; tail -4 "$OUT/bench_call_host.txt" ;;
  loopmin) timeout 60 python3 -m pytest -q -p no:cacheprovider -m gpu \
      tests/test_lowering_depthwise.py > "$OUT/gpu_tests.txt" 2>&1
    echo "[gpu tests rc=$?]"; tail -2 "$OUT/gpu_tests.txt"
    timeout 95 python3 benchmarks/probes/dw_loop_models.py --rounds 3 --models \
      convnext_tiny,efficientnet_b0 > "$OUT/dw_loop_models.txt" 2>&1
    echo "[loop rc=$?]"; grep "loop speed\|err\| ms " "$OUT/dw_loop_models.txt" ;;
  ab) bench deit_small,bert_4layer,t5_encoder,resnet50,convnext_tiny 420 \
      kiln_nographs,kiln_graphs --same-process ;;
  conv4) bench resnet50,efficientnet_b0,mobilenetv3_large,densenet121 450 \
      inductor,inductor_ro,kiln_graphs,kiln_nographs ;;
  cold5) bench deit_small,bert_4layer,t5_encoder,resnet50,convnext_tiny 430 \
      inductor,kiln_graphs,kiln_nographs ;;
  decode) timeout 420 python3 benchmarks/bench_decode.py --caches static,dynamic --lengths 128,2048 \
      --json "$OUT/bench_decode.json" > "$OUT/bench_decode.txt" 2>&1
    echo "[decode rc=$?]"; grep "ms/token\|static\|growing" "$OUT/bench_decode.txt" | tail -30 ;;
  combo) bench deit_small,bert_4layer,t5_encoder,resnet50,convnext_tiny 180 \
      inductor,kiln_graphs,kiln_nographs
    timeout 130 python3 benchmarks/bench_decode.py --caches static --lengths 128,2048 --repeats 3 \
      --json "$OUT/bench_decode.json" > "$OUT/bench_decode.txt" 2>&1
    echo "[decode rc=$?]"; tail -8 "$OUT/bench_decode.txt" ;;
  mini) bench deit_small,bert_4layer,t5_encoder 130 inductor,kiln_graphs,kiln_nographs ;;
  text) bench t5_encoder,bert_4layer 480 ;;
  vision) bench deit_small,convnext_tiny 480 ;;
  *) echo "usage: next.sh gputests|first|ab|conv4|loopmin|loop|dwab|cold5ab|mini|combo|cold5|prof|decode|text|vision"; exit 2 ;;
esac
