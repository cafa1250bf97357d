#!/bin/bash
# Session 42, call 2 (short): the copied norm prologue's bitwise GPU tests (streamed GEMV and the
# fused decode chain), then one batch-1 A/B round at both shapes against the landed binary.
LIMIT=${LIMIT:-280}
GYRE_DEVRUN=.devrun3
source bench/device_run_lib.sh
mkdir -p .devold/bin && ln -sf "$PWD/.devrun3/bin/bench_rollout_gpu_old" .devold/bin/bench_rollout_gpu
gt stream gyre_gpu_backend_tests 'GemvStreamCuda.*:CudaOps.*'
gt fused gyre_gpu_backend_tests 'FusedLinearCuda*:LinearGroupCuda*:DecodeStackCuda*:CudaGraph*:PdlChainCuda*'
gt infer gyre_gpu_infer_tests '*'
for shape in qwen2.5-0.5b qwen2.5-1.5b; do
  D=.devold; b1_run old $shape; D=.devrun3
  b1_run new $shape
done
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
