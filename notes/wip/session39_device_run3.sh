#!/bin/bash
# Session 39, call 3: (a) the streamed GEMVs read their epilogue operands (bias, residual) one
# column ahead and the norm weights before the wait (.devrun; .devrun2 = the landed kernel);
# (b) GYRE_ATTN_EARLY_TRIGGER=1: the fused decode attention triggers at its start.
LIMIT=${LIMIT:-400}
source bench/device_run_lib.sh
[[ -d .devrun2/bin ]] || tar xJf .devrun2/bin.tar.xz -C .devrun2
gt stream gyre_gpu_backend_tests 'GemvStreamCuda.*'
gt attn gyre_gpu_backend_tests 'RopeAttentionCuda*:PagedBf16*:DecodeStackCuda*:CudaGraph*:PdlChainCuda*' GYRE_ATTN_EARLY_TRIGGER=1
gt infer gyre_gpu_infer_tests '*'
gt infer_et gyre_gpu_infer_tests '*' GYRE_ATTN_EARLY_TRIGGER=1
for i in 1 2; do
  D=.devrun2; left 30 && b1_run "old" qwen2.5-0.5b; D=.devrun
  left 30 && b1_run "epi" qwen2.5-0.5b
  left 30 && b1_run "epi_et" qwen2.5-0.5b GYRE_ATTN_EARLY_TRIGGER=1
  D=.devrun2; left 30 && b1_run "old_et" qwen2.5-0.5b GYRE_ATTN_EARLY_TRIGGER=1; D=.devrun
  D=.devrun2; left 30 && b1_run "old" qwen2.5-1.5b; D=.devrun
  left 30 && b1_run "epi" qwen2.5-1.5b
  left 30 && b1_run "epi_et" qwen2.5-1.5b GYRE_ATTN_EARLY_TRIGGER=1
done
left 40 && b1_trace epi_05b qwen2.5-0.5b
left 40 && b1_trace epi_et_05b qwen2.5-0.5b GYRE_ATTN_EARLY_TRIGGER=1
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
