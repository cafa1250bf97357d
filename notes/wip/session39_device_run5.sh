#!/bin/bash
# Session 39, call 5: the streamed GEMVs at M = 2..8 rows (GYRE_GEMV_STREAM_ROWS, default 1 =
# batch 1 only as landed): bitwise tests, then small-batch decode A/B (rows 1 vs 8) at both shapes.
LIMIT=${LIMIT:-420}
source bench/device_run_lib.sh
gt stream gyre_gpu_backend_tests 'GemvStreamCuda.*'
gt fused8 gyre_gpu_backend_tests 'FusedLinearCuda*:LinearGroupCuda*:FusedSwiGlu*:DecodeStackCuda*:CudaGraph*:PdlChainCuda*' GYRE_GEMV_STREAM_ROWS=8
gt infer8 gyre_gpu_infer_tests '*' GYRE_GEMV_STREAM_ROWS=8
bt() {  # bt LABEL SHAPE BATCH [VAR=VALUE...]: output tokens/s of batch x (128 + 256)
  local label=$1 shape=$2 b=$3
  shift 3
  left 40 || return
  local log=$R/bt_${label}_${shape}_${b}_$SECONDS.log
  env "$@" timeout 60 "$D/bin/bench_rollout_gpu" --shape "$shape" --precision bf16 --batch "$b" \
    --prompt 128 --new 256 --iters 1 --decode-fusion on --skip-b1 1 --budget-s 40 >"$log" 2>&1
  local rc=$?
  echo "$label $(grep -m1 '"rollout_gpu"' "$log")" >>"$R/bt.jsonl"
  note "$label $shape batch $b: exit $rc $(grep -m1 '"rollout_gpu"' "$log" | grep -o '"output_tokens_per_s": [0-9.]*')"
}
for i in 1 2; do
  for b in 2 8; do
    bt rows1 qwen2.5-1.5b $b GYRE_GEMV_STREAM_ROWS=1
    bt rows8 qwen2.5-1.5b $b GYRE_GEMV_STREAM_ROWS=8
    bt rows1 qwen2.5-0.5b $b GYRE_GEMV_STREAM_ROWS=1
    bt rows8 qwen2.5-0.5b $b GYRE_GEMV_STREAM_ROWS=8
  done
done
left 30 && b1_run "b1" qwen2.5-1.5b
left 30 && b1_run "b1" qwen2.5-0.5b
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
