#!/bin/bash
# Session 38: the streamed batch-1 GEMVs (backend/cuda/gemv_stream.cu; GYRE_GEMV_STREAM bits 1
# gate/up, 2 o_proj, 4 down). Tests: GemvStreamCuda (stream vs register kernels, bitwise), the
# fused-linear / rms / decode tests with every stream kind on (vs the unfused ops), the infer
# suite with it on. Then batch-1 A/B per kind and ring size, both shapes, and a CUPTI trace.
# Pack: bash bench/pack_device_libs.sh .devrun <build>/tests/gyre_gpu_backend_tests \
#   <build>/tests/gyre_gpu_infer_tests <build>/bin/bench_rollout_gpu <build>/lib/libgyre_cupti_trace.so
source bench/device_run_lib.sh
gt stream gyre_gpu_backend_tests 'GemvStreamCuda.*'
gt fused_on gyre_gpu_backend_tests 'FusedLinearCuda.*:FusedRms*:DecodeStackCuda*:CudaGraph*:PdlChainCuda*' GYRE_GEMV_STREAM=7
gt infer_on gyre_gpu_infer_tests '*' GYRE_GEMV_STREAM=7
for i in 1 2; do
  for mode in 0 7 1 4 2; do
    left 40 && b1_run "mode$mode" qwen2.5-1.5b GYRE_GEMV_STREAM=$mode
  done
done
for kb in 64 160; do
  left 40 && b1_run "mode7kb$kb" qwen2.5-1.5b GYRE_GEMV_STREAM=7 GYRE_GEMV_STREAM_KB=$kb
done
left 40 && b1_run "mode7bps2" qwen2.5-1.5b GYRE_GEMV_STREAM=7 GYRE_GEMV_STREAM_BPS=2
for mode in 0 7 0 7; do
  left 40 && b1_run "mode$mode" qwen2.5-0.5b GYRE_GEMV_STREAM=$mode
done
left 60 && b1_trace s7 qwen2.5-1.5b GYRE_GEMV_STREAM=7
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
