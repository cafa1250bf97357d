#!/bin/bash
# Session 43, call 4: fewer ring stages issued before pdl_wait (GYRE_GEMV_STREAM_PRE; the rest
# after the norm prologue), so the rstd's L2 reads of x do not queue behind the whole ring's
# copies (session 41's probe: gate/up's rstd 2.75 us at 0.5B). Bitwise check with the knob on,
# then batch-1 rounds: landed (the whole ring before the wait), PRE=1 (norm kernels), PRE=1 on all.
LIMIT=${LIMIT:-170}
GYRE_DEVRUN=.devrun3
source bench/device_run_lib.sh
gt stream gyre_gpu_backend_tests 'GemvStreamCuda.*' GYRE_GEMV_STREAM_PRE=1 GYRE_GEMV_STREAM_PRE_ALL=1
for rep in 1 2; do
  for shape in qwen2.5-0.5b qwen2.5-1.5b; do
    b1_run landed $shape
    b1_run pre1 $shape GYRE_GEMV_STREAM_PRE=1
    b1_run pre1all $shape GYRE_GEMV_STREAM_PRE=1 GYRE_GEMV_STREAM_PRE_ALL=1
  done
done
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
