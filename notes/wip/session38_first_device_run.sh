#!/bin/bash
# Session 38's first device call (prepared in session 37): the tests that landed without a GPU run
# (FusedLinearCuda.AddResidual*: K = 8960 / 9216 / 9224, the depth-9 down kernel), the paged /
# decode backend tests, the whole GPU infer suite, batch-1 runs of both shapes and the 1.5B CUPTI
# critical path after the depth-9 down.
# Pack (here): bash bench/pack_device_libs.sh .devrun <build>/tests/gyre_gpu_backend_tests \
#   <build>/tests/gyre_gpu_infer_tests <build>/bin/bench_rollout_gpu <build>/lib/libgyre_cupti_trace.so
# Usage on the device: GYRE_DEVRUN=.devrun SRC_LINK=/path/of/the/build/source bash THIS
source bench/device_run_lib.sh
gt residual gyre_gpu_backend_tests 'FusedLinearCuda.AddResidual*:FusedLinearCuda.*Residual*'
gt backend gyre_gpu_backend_tests 'SplitCombineWarp*:*Paged*:*RopeAttention*:DecodeStackCuda*:CudaGraph*:PdlChainCuda*'
gt infer gyre_gpu_infer_tests '*'
for i in 1 2; do
  left 40 && b1_run landed qwen2.5-1.5b
  left 40 && b1_run landed qwen2.5-0.5b
done
left 60 && b1_trace 15b qwen2.5-1.5b
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
