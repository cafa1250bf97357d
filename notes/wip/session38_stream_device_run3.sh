#!/bin/bash
# Session 38, call 4: ring budget / blocks an SM for the streamed GEMVs, both shapes.
source bench/device_run_lib.sh
for i in 1 2; do
  left 40 && b1_run "mode0" qwen2.5-1.5b GYRE_GEMV_STREAM=0
  left 40 && b1_run "mode7kb64" qwen2.5-1.5b GYRE_GEMV_STREAM=7 GYRE_GEMV_STREAM_KB=64
  left 40 && b1_run "mode7kb48" qwen2.5-1.5b GYRE_GEMV_STREAM=7 GYRE_GEMV_STREAM_KB=48
  left 40 && b1_run "mode7kb64bps3" qwen2.5-1.5b GYRE_GEMV_STREAM=7 GYRE_GEMV_STREAM_KB=64 GYRE_GEMV_STREAM_BPS=3
done
for i in 1 2; do
  left 40 && b1_run "mode0" qwen2.5-0.5b GYRE_GEMV_STREAM=0
  left 40 && b1_run "mode7kb64" qwen2.5-0.5b GYRE_GEMV_STREAM=7 GYRE_GEMV_STREAM_KB=64
  left 40 && b1_run "mode7kb64bps3" qwen2.5-0.5b GYRE_GEMV_STREAM=7 GYRE_GEMV_STREAM_KB=64 GYRE_GEMV_STREAM_BPS=3
  left 40 && b1_run "mode4kb64" qwen2.5-0.5b GYRE_GEMV_STREAM=4 GYRE_GEMV_STREAM_KB=64
  left 40 && b1_run "mode1kb64" qwen2.5-0.5b GYRE_GEMV_STREAM=1 GYRE_GEMV_STREAM_KB=64
done
left 60 && b1_trace s7kb64 qwen2.5-1.5b GYRE_GEMV_STREAM=7 GYRE_GEMV_STREAM_KB=64
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
