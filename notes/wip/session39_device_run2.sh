#!/bin/bash
# Session 39, call 2: where the streamed GEMVs trigger their dependent (GYRE_GEMV_STREAM_TRIGGER_ISSUE
# / _WAIT masks: 1 gate/up, 2 o_proj, 4 down, 8 q/k/v), ring budget and blocks an SM at 0.5B.
LIMIT=${LIMIT:-420}
source bench/device_run_lib.sh
gt stream gyre_gpu_backend_tests 'GemvStreamCuda.*' GYRE_GEMV_STREAM_TRIGGER_ISSUE=15
for i in 1 2; do
  left 30 && b1_run "base" qwen2.5-0.5b
  left 30 && b1_run "iss15" qwen2.5-0.5b GYRE_GEMV_STREAM_TRIGGER_ISSUE=15
  left 30 && b1_run "iss1" qwen2.5-0.5b GYRE_GEMV_STREAM_TRIGGER_ISSUE=1
  left 30 && b1_run "iss4" qwen2.5-0.5b GYRE_GEMV_STREAM_TRIGGER_ISSUE=4
  left 30 && b1_run "iss5" qwen2.5-0.5b GYRE_GEMV_STREAM_TRIGGER_ISSUE=5
  left 30 && b1_run "wait2" qwen2.5-0.5b GYRE_GEMV_STREAM_TRIGGER_WAIT=2
  left 30 && b1_run "wait8" qwen2.5-0.5b GYRE_GEMV_STREAM_TRIGGER_WAIT=8
  left 30 && b1_run "kb96" qwen2.5-0.5b GYRE_GEMV_STREAM_KB=96
  left 30 && b1_run "kb128" qwen2.5-0.5b GYRE_GEMV_STREAM_KB=128
  left 30 && b1_run "bps3" qwen2.5-0.5b GYRE_GEMV_STREAM_BPS=3
  left 30 && b1_run "kb96iss15" qwen2.5-0.5b GYRE_GEMV_STREAM_KB=96 GYRE_GEMV_STREAM_TRIGGER_ISSUE=15
  left 30 && b1_run "base" qwen2.5-1.5b
  left 30 && b1_run "iss15" qwen2.5-1.5b GYRE_GEMV_STREAM_TRIGGER_ISSUE=15
  left 30 && b1_run "iss5" qwen2.5-1.5b GYRE_GEMV_STREAM_TRIGGER_ISSUE=5
done
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
