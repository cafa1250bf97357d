#!/bin/bash
# Session 38, call 7: every kind streamed by default (kGemvStreamDefault = all): the GPU infer suite
# (small fixture models now stream too), the stream tests, batch 1 of both shapes, the decode-stack
# / graph / PDL tests if time is left.
LIMIT=${LIMIT:-220}
source bench/device_run_lib.sh
gt stream gyre_gpu_backend_tests 'GemvStreamCuda.*'
gt infer gyre_gpu_infer_tests '*'
b1_run default qwen2.5-1.5b
b1_run default qwen2.5-0.5b
gt decode gyre_gpu_backend_tests 'DecodeStackCuda*:CudaGraph*:PdlChainCuda*'
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
