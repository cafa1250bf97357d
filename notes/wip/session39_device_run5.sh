#!/bin/bash
# Session 39, call 5 (the landed binary): small-batch decode for the next lever (M = 2..8 on the
# streamed GEMVs) — output tokens/s at batch 2 / 4 / 8 and CUPTI step timelines at batch 8.
LIMIT=${LIMIT:-300}
source bench/device_run_lib.sh
bt() {  # bt LABEL SHAPE BATCH [VAR=VALUE...]
  local label=$1 shape=$2 b=$3
  shift 3
  left 40 || return
  env "$@" timeout 60 "$D/bin/bench_rollout_gpu" --shape "$shape" --precision bf16 --batch "$b" \
    --prompt 128 --new 256 --iters 1 --decode-fusion on --skip-b1 1 --budget-s 40 \
    >"$R/bt_${label}_${shape}_$b.log" 2>&1
  note "$label $shape batch $b: exit $? $(grep -m1 '"rollout_gpu"\|output_tokens_per_s\|tok' "$R/bt_${label}_${shape}_$b.log" | head -c 400)"
}
for b in 1 2 4 8; do bt landed qwen2.5-1.5b $b; done
for b in 1 8; do bt landed qwen2.5-0.5b $b; done
for shape in qwen2.5-1.5b qwen2.5-0.5b; do
  left 60 || break
  env GYRE_CUPTI_TRACE="$R/trace_b8_$shape.csv" LD_PRELOAD="$PWD/$D/bin/libgyre_cupti_trace.so" \
    timeout 60 "$D/bin/bench_rollout_gpu" --shape "$shape" --precision bf16 --batch 8 --prompt 128 \
    --new 256 --iters 1 --decode-fusion on --skip-b1 1 --budget-s 30 >"$R/trace_b8_$shape.log" 2>&1
  python3 bench/cupti_timeline.py "$R/trace_b8_$shape.csv" --marker pick_kernel --burst-ms 0.2 \
    --steps 200 --critical --top 16 --gap-us 3 >"$R/trace_b8_$shape.txt" 2>&1
  note "trace b8 $shape"
  sed -n '/^critical/,$p' "$R/trace_b8_$shape.txt" | head -20 >>"$S"
  gzip -f "$R/trace_b8_$shape.csv"
done
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
