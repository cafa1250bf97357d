#!/bin/bash
# One device-machine call for notes/wip/session35_gemv_pipe.patch (apply to 7583493 or later,
# build, pack): the pipelined M = 1 gate/up and down GEMVs behind GYRE_GEMV_PIPE (bit 1 gate/up
# silu_mul_rms, bit 2 down_proj residual; unset = the landed kernels).
#   pipetests  backend fused-GEMV / decode-stack tests and the infer decode tests at GYRE_GEMV_PIPE=3
#              (bitwise checks against the unfused GEMVs), then compute-sanitizer racecheck on the
#              landed S = 4 kernels (AddResidual at K = 4864) and under PIPE=3
#   pipe       bench_rollout_gpu batch 1: PIPE_15 / PIPE_05 lists of GYRE_GEMV_PIPE values
#   trace      CUPTI critical path of the 1.5B batch-1 step at GYRE_GEMV_PIPE=$TRACE_PIPE
# Build and pack here (DIR in .git/info/exclude; pass it to the device tool's carry):
#   ninja -C build gyre_gpu_backend_tests gyre_gpu_infer_tests bench_rollout_gpu gyre_cli
#   bash bench/pack_device_libs.sh DIR build/tests/gyre_gpu_backend_tests \
#     build/tests/gyre_gpu_infer_tests build/bin/bench_rollout_gpu build/bin/gyre \
#     build/lib/libgyre_cupti_trace.so
# Usage on the device: GYRE_DEVRUN=DIR SRC_LINK=/path/of/the/build/source bash THIS [parts]
# $OUT receives results.tar.gz and summary.txt only. Batch-1 runs take 37-55 s each (start, model
# build, warm-up, capture, the b1 drive): give each 75 s.
source bench/device_run_lib.sh  # OUT, R, S, note, left, gt, b1_run (and device_env.sh)
what=" ${*:-pipetests pipe trace} "
if [[ $what == *" pipetests "* ]]; then
  F='FusedLinearCuda*:LinearGroupCuda*:Gemv*:CudaAutocast*:PdlChainCuda*:DecodeStackCuda*:CudaGraph*'
  gt backend_pipe gyre_gpu_backend_tests "$F" GYRE_GEMV_PIPE=3
  gt infer_pipe gyre_gpu_infer_tests 'DecodeFusion*:DecodeGraph*:EngineBf16*:DecodeLookAhead*' GYRE_GEMV_PIPE=3
  for p in 0 3; do
    left 90 || break
    GYRE_GEMV_PIPE=$p timeout 150 compute-sanitizer --tool racecheck --error-exitcode 9 \
      "$D/bin/gyre_gpu_backend_tests" --gtest_filter='FusedLinearCuda.RmsNormSiluMulIsOneKernel*:FusedLinearCuda.AddResidualIsOneKernel*' \
      >"$R/race_pipe$p.log" 2>&1
    note "racecheck PIPE=$p: exit $?"
    grep -E "ERROR SUMMARY|^\[  (FAILED|PASSED) |Race reported" "$R/race_pipe$p.log" | sort | uniq -c | head -6 | tee -a "$S"
  done
fi
b1() { b1_run "pipe=$2" "$1" GYRE_GEMV_PIPE=$2; }  # shape value
if [[ $what == *" pipe "* ]]; then
  for v in ${PIPE_15:-0 3 1 2 0 3}; do left 60 && b1 qwen2.5-1.5b $v; done
  for v in ${PIPE_05:-0 3}; do left 60 && b1 qwen2.5-0.5b $v; done
  note "pipe done"
fi
if [[ $what == *" trace "* ]] && left 60; then
  b1_trace "15b.${TRACE_PIPE:-3}" qwen2.5-1.5b GYRE_GEMV_PIPE=${TRACE_PIPE:-3}
fi
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
