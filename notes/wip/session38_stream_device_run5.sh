#!/bin/bash
# Session 38, call 6: which kinds to stream by default (o_proj on or off), ring budget, and the
# q/k/v group kernel at Qwen2.5-0.5B.
source bench/device_run_lib.sh
for i in 1 2; do
  left 40 && b1_run "auto" qwen2.5-1.5b
  left 40 && b1_run "mode13" qwen2.5-1.5b GYRE_GEMV_STREAM=13
  left 40 && b1_run "autokb96" qwen2.5-1.5b GYRE_GEMV_STREAM_KB=96
  left 40 && b1_run "autokb48" qwen2.5-1.5b GYRE_GEMV_STREAM_KB=48
  left 40 && b1_run "mode8" qwen2.5-0.5b GYRE_GEMV_STREAM=8
  left 40 && b1_run "mode15" qwen2.5-0.5b GYRE_GEMV_STREAM=15
done
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
