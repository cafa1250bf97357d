#!/bin/bash
# Session 38, call 3: the streamed GEMVs at 2 blocks an SM (the ring clamped to fit), per kind.
source bench/device_run_lib.sh
gt stream gyre_gpu_backend_tests 'GemvStreamCuda.*'
gt fused_on gyre_gpu_backend_tests 'FusedLinearCuda.*' GYRE_GEMV_STREAM=7
for i in 1 2; do
  for mode in 0 7 5 1 4 3 6; do
    left 40 && b1_run "mode$mode" qwen2.5-1.5b GYRE_GEMV_STREAM=$mode
  done
done
for kb in 64 128; do
  left 40 && b1_run "mode7kb$kb" qwen2.5-1.5b GYRE_GEMV_STREAM=7 GYRE_GEMV_STREAM_KB=$kb
done
left 40 && b1_run "mode7bps3" qwen2.5-1.5b GYRE_GEMV_STREAM=7 GYRE_GEMV_STREAM_BPS=3
for i in 1 2; do
  for mode in 0 7 5 1 4; do
    left 40 && b1_run "mode$mode" qwen2.5-0.5b GYRE_GEMV_STREAM=$mode
  done
done
left 40 && b1_run "mode7bps3" qwen2.5-0.5b GYRE_GEMV_STREAM=7 GYRE_GEMV_STREAM_BPS=3
left 60 && b1_trace s7b qwen2.5-1.5b GYRE_GEMV_STREAM=7
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
