#!/bin/bash
# Session 39, call 5: the streamed GEMVs at M = 2..8 rows (GYRE_GEMV_STREAM_ROWS, default 1 =
# batch 1 only as landed): bitwise tests, then small-batch decode A/B (rows 1 vs 8) at both shapes.
# (It ran with an inline copy of what is now device_run_lib.sh's bt_run.)
LIMIT=${LIMIT:-420}
source bench/device_run_lib.sh
gt stream gyre_gpu_backend_tests 'GemvStreamCuda.*'
gt fused8 gyre_gpu_backend_tests 'FusedLinearCuda*:LinearGroupCuda*:FusedSwiGlu*:DecodeStackCuda*:CudaGraph*:PdlChainCuda*' GYRE_GEMV_STREAM_ROWS=8
gt infer8 gyre_gpu_infer_tests '*' GYRE_GEMV_STREAM_ROWS=8
for i in 1 2; do
  for b in 2 8; do
    bt_run rows1 qwen2.5-1.5b $b GYRE_GEMV_STREAM_ROWS=1
    bt_run rows8 qwen2.5-1.5b $b GYRE_GEMV_STREAM_ROWS=8
    bt_run rows1 qwen2.5-0.5b $b GYRE_GEMV_STREAM_ROWS=1
    bt_run rows8 qwen2.5-0.5b $b GYRE_GEMV_STREAM_ROWS=8
  done
done
left 30 && b1_run "b1" qwen2.5-1.5b
left 30 && b1_run "b1" qwen2.5-0.5b
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
