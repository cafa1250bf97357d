#!/bin/bash
# Session 41, call 1 (session 40 plan; the probe binary rides in .devrun as bench_rollout_gpu_probe): f3339f0 (gemv::with_rows shared) on the GPU; baselines; batch 4; and the
# per-phase probe of the streamed GEMVs (.devrun2 = landed + notes/wip/session40_probe.patch).
LIMIT=${LIMIT:-500}
source bench/device_run_lib.sh
gt stream gyre_gpu_backend_tests 'GemvStreamCuda.*'
gt fused gyre_gpu_backend_tests 'FusedLinearCuda*:LinearGroupCuda*:FusedSwiGlu*:DecodeStackCuda*:CudaGraph*:PdlChainCuda*'
gt infer gyre_gpu_infer_tests '*'
mkdir -p .devrun2/bin && ln -sf "$PWD/$D/bin/bench_rollout_gpu_probe" .devrun2/bin/bench_rollout_gpu
b1_run b1 qwen2.5-0.5b
b1_run b1 qwen2.5-1.5b
for shape in qwen2.5-0.5b qwen2.5-1.5b; do
  D=.devrun2; b1_run probe $shape GYRE_GEMV_STREAM_PROBE=$R/probe_$shape; D=.devrun
  L=24; [[ $shape == qwen2.5-1.5b ]] && L=28
  python3 notes/wip/session40_probe_report.py $R/probe_$shape $L 2>&1 | tee -a "$S"
  gzip -f $R/probe_$shape.bin
done
for b in 4 3 6; do
  bt_run t qwen2.5-1.5b $b
  bt_run t qwen2.5-0.5b $b
done
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
