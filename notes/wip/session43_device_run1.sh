#!/bin/bash
# Session 43, call 2: the copied norm prologue split in two variants after call 1 (H100) showed
# the full patch 1.8% faster at 1.5B (K = 1536) and 4.5% slower at 0.5B (K = 896):
#   A  the full copy (norm weights before pdl_wait, x's f32 row after it) only for K >= 1024;
#   B  the norm weights' copy only (before pdl_wait) at every K <= 4096, x read as landed.
# B's bitwise tests (streamed GEMV, the fused decode chain), then batch-1 rounds of the landed
# binary, A and B at both shapes in the same call.
LIMIT=${LIMIT:-400}
GYRE_DEVRUN=.devrun3
source bench/device_run_lib.sh
mkdir -p .devold/bin .devA/bin
ln -sf "$PWD/.devrun3/bin/bench_rollout_gpu_old" .devold/bin/bench_rollout_gpu
ln -sf "$PWD/.devrun3/bin/bench_rollout_gpu_A" .devA/bin/bench_rollout_gpu
gt stream gyre_gpu_backend_tests 'GemvStreamCuda.*:CudaOps.*'
gt fused gyre_gpu_backend_tests 'FusedLinearCuda*:LinearGroupCuda*:DecodeStackCuda*:CudaGraph*:PdlChainCuda*'
for rep in 1 2 3; do
  for shape in qwen2.5-0.5b qwen2.5-1.5b; do
    D=.devold; b1_run old $shape
    D=.devA; b1_run A $shape
    D=.devrun3; b1_run B $shape
  done
done
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
