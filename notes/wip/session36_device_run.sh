#!/bin/bash
# One device-machine call for session 36: notes/wip/session35_gemv_pipe.patch (GYRE_GEMV_PIPE:
# bit 1 pipelined gate/up, bit 2 pipelined down) and notes/wip/session34_l2_prefetch.patch
# (GYRE_GEMV_VARIANT bits, GYRE_L2_PREFETCH_MB) applied together to 807ff0b (the L2 patch's
# <cstdlib> hunk is already in the pipe patch), built and packed as session35_pipe_device_run.sh
# says. Parts:
#   tests  backend fused-GEMV / decode-stack and infer decode tests at PIPE=3 VARIANT=127 (every
#          bit of both: bitwise checks against the unfused GEMVs)
#   ab     bench_rollout_gpu batch 1 (--b1-only) over AB_15 / AB_05: "PIPE/VARIANT/MB" triples
#   trace  CUPTI critical path of the 1.5B step at TRACE ("PIPE/VARIANT/MB")
#   race   compute-sanitizer racecheck of the S = 4 residual GEMVs at PIPE 0 and 3
# Usage on the device: GYRE_DEVRUN=DIR SRC_LINK=/path/of/the/build/source bash THIS [parts]
source bench/device_run_lib.sh  # OUT, R, S, note, left, gt, b1_run (and device_env.sh)
what=" ${*:-tests ab trace race} "
if [[ $what == *" tests "* ]]; then
  F='FusedLinearCuda*:LinearGroupCuda*:Gemv*:CudaAutocast*:PdlChainCuda*:DecodeStackCuda*:CudaGraph*'
  gt backend_all gyre_gpu_backend_tests "$F" GYRE_GEMV_PIPE=3 GYRE_GEMV_VARIANT=127
  gt infer_all gyre_gpu_infer_tests 'DecodeFusion*:DecodeGraph*:EngineBf16*:DecodeLookAhead*' \
    GYRE_GEMV_PIPE=3 GYRE_GEMV_VARIANT=127
fi
ab() {  # shape PIPE/VARIANT/MB
  local p v m
  IFS=/ read -r p v m <<<"$2"
  b1_run "p$p/v$v/mb$m" "$1" GYRE_GEMV_PIPE=$p GYRE_GEMV_VARIANT=$v GYRE_L2_PREFETCH_MB=$m
}
if [[ $what == *" ab "* ]]; then
  for c in ${AB_15:-0/0/0 3/0/0 1/0/0 2/0/0 3/4/24 3/36/24 0/4/24 0/0/0 3/0/0}; do
    left 60 && ab qwen2.5-1.5b "$c"
  done
  for c in ${AB_05:-0/0/0 3/0/0 3/4/16}; do left 50 && ab qwen2.5-0.5b "$c"; done
  note "ab done"
fi
if [[ $what == *" trace "* ]] && left 60; then
  IFS=/ read -r p v m <<<"${TRACE:-3/0/0}"
  b1_trace 15b qwen2.5-1.5b GYRE_GEMV_PIPE=$p GYRE_GEMV_VARIANT=$v GYRE_L2_PREFETCH_MB=$m
fi
if [[ $what == *" race "* ]]; then
  for p in 0 3; do
    left 90 || break
    GYRE_GEMV_PIPE=$p timeout 150 compute-sanitizer --tool racecheck --error-exitcode 9 \
      "$D/bin/gyre_gpu_backend_tests" \
      --gtest_filter='FusedLinearCuda.RmsNormSiluMulIsOneKernel*:FusedLinearCuda.AddResidualIsOneKernel*' \
      >"$R/race_pipe$p.log" 2>&1
    note "racecheck PIPE=$p: exit $?"
    grep -E "ERROR SUMMARY|^\[  (FAILED|PASSED) |Race reported" "$R/race_pipe$p.log" | sort | uniq -c |
      head -6 | tee -a "$S"
  done
fi
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
