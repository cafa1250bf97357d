#!/bin/bash
# Session 39, call 1: the landed tree (1ea0746's review commit was compiled, never run on a GPU):
# GemvStreamCuda + the GPU infer suite, batch 1 of both shapes, CUPTI traces of both shapes (the
# 0.5B step has no trace since the streamed kernels landed).
LIMIT=${LIMIT:-280}
source bench/device_run_lib.sh
gt stream gyre_gpu_backend_tests 'GemvStreamCuda.*:FusedLinearCuda.*:LinearGroupCuda.*'
gt infer gyre_gpu_infer_tests '*'
b1_run default qwen2.5-0.5b
b1_run default qwen2.5-1.5b
b1_run default qwen2.5-0.5b
b1_trace s39_05b qwen2.5-0.5b
b1_trace s39_15b qwen2.5-1.5b
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
