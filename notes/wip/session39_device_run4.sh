#!/bin/bash
# Session 39, call 4: the attention's early trigger (GYRE_ATTN_EARLY_TRIGGER 1: at its start, 2:
# after its first tile landed) with o_proj triggering after its wait (GYRE_GEMV_STREAM_TRIGGER_WAIT=2)
# so gate/up's prefetch does not flood the attention. .devrun2 = the landed binary.
LIMIT=${LIMIT:-330}
source bench/device_run_lib.sh
[[ -d .devrun2/bin ]] || tar xJf .devrun2/bin.tar.xz -C .devrun2
for i in 1 2; do
  D=.devrun2; left 30 && b1_run "old" qwen2.5-0.5b; D=.devrun
  left 30 && b1_run "et1w2" qwen2.5-0.5b GYRE_ATTN_EARLY_TRIGGER=1 GYRE_GEMV_STREAM_TRIGGER_WAIT=2
  left 30 && b1_run "et2" qwen2.5-0.5b GYRE_ATTN_EARLY_TRIGGER=2
  left 30 && b1_run "et2w2" qwen2.5-0.5b GYRE_ATTN_EARLY_TRIGGER=2 GYRE_GEMV_STREAM_TRIGGER_WAIT=2
  left 30 && b1_run "et1w10" qwen2.5-0.5b GYRE_ATTN_EARLY_TRIGGER=1 GYRE_GEMV_STREAM_TRIGGER_WAIT=10
  D=.devrun2; left 30 && b1_run "old" qwen2.5-1.5b; D=.devrun
  left 30 && b1_run "et1w2" qwen2.5-1.5b GYRE_ATTN_EARLY_TRIGGER=1 GYRE_GEMV_STREAM_TRIGGER_WAIT=2
  left 30 && b1_run "et2" qwen2.5-1.5b GYRE_ATTN_EARLY_TRIGGER=2
done
left 40 && b1_trace et1w2_05b qwen2.5-0.5b GYRE_ATTN_EARLY_TRIGGER=1 GYRE_GEMV_STREAM_TRIGGER_WAIT=2
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
