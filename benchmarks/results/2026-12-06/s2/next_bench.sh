#!/usr/bin/env bash
# Planned for the next session (issue 15): `kiln bench` of the held-out zoo finished over
# several calls. The first call starts a run; each later call resumes it (--resume) from the
# store the call before brought back. After a call, here:
#   rm -rf .bench-store && mkdir .bench-store && tar xzf /work/.device/N/bench_store.tgz -C .bench-store
# and name ".bench-store" in the next call's carry. Usage (every call the same):
#   bash benchmarks/results/2026-12-06/s2/next_bench.sh
set -u
bash benchmarks/run_device.sh > /dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
rm -rf /tmp/bench-store /tmp/bench-out
[ -d .bench-store ] && cp -r .bench-store /tmp/bench-store
resume=(); [ -f /tmp/bench-store/RUN_ID ] && resume=(--resume "$(cat /tmp/bench-store/RUN_ID)")
timeout 560 python3 -m pipeline.cli bench configs/zoo-heldout.toml --quick \
    --store /tmp/bench-store --out /tmp/bench-out --budget-s 450 "${resume[@]}" \
    > /tmp/bench.txt 2>&1
echo "[bench rc=$?]"; grep -v "^\s*$" /tmp/bench.txt | tail -30
run=$(grep -o "(run [^)]*)" /tmp/bench.txt | tail -1 | sed 's/(run \(.*\))/\1/')
[ -n "$run" ] && echo "$run" > /tmp/bench-store/RUN_ID
cp /tmp/bench.txt /tmp/bench-out/ 2>/dev/null
tar czf "$OUT/bench_store.tgz" -C /tmp/bench-store --exclude=logs .
tar czf "$OUT/bench_report.tgz" -C /tmp/bench-out .
sed -n '/## Goals/,/## Per model/p' /tmp/bench-out/report.md
