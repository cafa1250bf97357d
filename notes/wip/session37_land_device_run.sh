#!/bin/bash
# Session 37, call 4: the landing tree (the split combine kernel's warp-0 path for rows of <= 32
# splits; the o_proj fold dropped): the combine / paged / decode backend tests and the whole GPU
# infer suite, batch-1 runs of both shapes, the 1.5B CUPTI critical path.
# Usage on the device: GYRE_DEVRUN=DIR SRC_LINK=/path/of/the/build/source bash THIS
source bench/device_run_lib.sh
gt backend gyre_gpu_backend_tests 'SplitCombineWarp*:*Paged*:*RopeAttention*:DecodeStackCuda*:CudaGraph*:PdlChainCuda*'
gt infer gyre_gpu_infer_tests '*'
for i in 1 2 3; do
  left 40 && b1_run landed qwen2.5-1.5b
  left 40 && b1_run landed qwen2.5-0.5b
done
left 60 && b1_trace 15b_landed qwen2.5-1.5b
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
