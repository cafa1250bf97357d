#!/bin/bash
# Session 38, call 5: the streamed q/k/v group kernel; tests with every kind forced on (15) and
# in the default (auto); batch-1 A/B and a CUPTI trace of the default.
source bench/device_run_lib.sh
gt stream gyre_gpu_backend_tests 'GemvStreamCuda.*'
gt fused15 gyre_gpu_backend_tests 'FusedLinearCuda.*:LinearGroupCuda.*' GYRE_GEMV_STREAM=15
gt backend_auto gyre_gpu_backend_tests 'FusedLinearCuda.*:LinearGroupCuda.*:DecodeStackCuda*:CudaGraph*:PdlChainCuda*:*Paged*:SplitCombine*'
gt infer_auto gyre_gpu_infer_tests '*'
for i in 1 2; do
  left 40 && b1_run "mode0" qwen2.5-1.5b GYRE_GEMV_STREAM=0
  left 40 && b1_run "auto" qwen2.5-1.5b
  left 40 && b1_run "mode7" qwen2.5-1.5b GYRE_GEMV_STREAM=7
  left 40 && b1_run "auto" qwen2.5-0.5b
  left 40 && b1_run "mode0" qwen2.5-0.5b GYRE_GEMV_STREAM=0
done
left 60 && b1_trace auto qwen2.5-1.5b
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
