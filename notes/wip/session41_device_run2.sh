#!/bin/bash
# Session 41, call 2: the one-load norm prologue and batched x staging of the streamed GEMVs
# (rms_row.cuh row_sumsq_regs; gemv_stream.cu) — bitwise tests, then batch-1 A/B against the
# landed binary (bench_rollout_gpu_old) in the same call, alternating, and batch 4 / 8.
LIMIT=${LIMIT:-540}
GYRE_DEVRUN=.devrun3
source bench/device_run_lib.sh
mkdir -p .devold/bin && ln -sf "$PWD/.devrun3/bin/bench_rollout_gpu_old" .devold/bin/bench_rollout_gpu
gt stream gyre_gpu_backend_tests 'GemvStreamCuda.*:CudaOps.*:CudaRmsNormBackwardAdd.*'
gt fused gyre_gpu_backend_tests 'FusedLinearCuda*:LinearGroupCuda*:DecodeStackCuda*:CudaGraph*:PdlChainCuda*:Bf16CopiesCuda*'
gt infer gyre_gpu_infer_tests '*'
gt model gyre_gpu_model_tests '*'
for rep in 1 2 3; do
  for shape in qwen2.5-0.5b qwen2.5-1.5b; do
    D=.devold; b1_run old $shape; D=.devrun3
    b1_run new $shape
  done
done
for b in 4 8; do
  for shape in qwen2.5-1.5b qwen2.5-0.5b; do
    D=.devold; bt_run old $shape $b; D=.devrun3
    bt_run new $shape $b
  done
done
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
