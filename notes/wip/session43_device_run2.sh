#!/bin/bash
# Session 43, call 3: the landed form of variant B (the norm weights bulk-copied into shared memory
# before pdl_wait at M = 1, K <= 4096): every GPU suite that runs the streamed GEMVs, then
# batch-1 rounds and a batch-4 run against the previously landed binary in the same call.
LIMIT=${LIMIT:-400}
GYRE_DEVRUN=.devrun3
source bench/device_run_lib.sh
mkdir -p .devold/bin && ln -sf "$PWD/.devrun3/bin/bench_rollout_gpu_old" .devold/bin/bench_rollout_gpu
gt stream gyre_gpu_backend_tests 'GemvStreamCuda.*:CudaOps.*'
gt fused gyre_gpu_backend_tests 'FusedLinearCuda*:LinearGroupCuda*:DecodeStackCuda*:CudaGraph*:PdlChainCuda*'
gt infer gyre_gpu_infer_tests '*'
gt model gyre_gpu_model_tests '*'
for rep in 1 2 3; do
  for shape in qwen2.5-0.5b qwen2.5-1.5b; do
    D=.devold; b1_run old $shape; D=.devrun3
    b1_run new $shape
  done
done
for shape in qwen2.5-1.5b qwen2.5-0.5b; do
  D=.devold; bt_run old $shape 4; D=.devrun3
  bt_run new $shape 4
done
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
