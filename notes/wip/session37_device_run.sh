#!/bin/bash
# Session 37 device calls (bench/device_run_lib.sh frame).
# Call 1 (parts tests1 ab1): the split combine replayed by one warp — its bitwise GPU test, then
#   the combine kernel at one warp a row (GYRE_COMBINE_WARP=1; + GYRE_COMBINE_WARP_ONE_ROW=1: one
#   32-thread CTA a row) against the CTA-a-row kernel, same binary.
# Call 2 (default: tests ab race trace): the combine folded into o_proj's GEMV
#   (rope_paged_attention_linear_residual_; GYRE_COMBINE_IN_GEMV=0 turns it off in the same binary)
#   tests  the combine / paged / fused-linear backend tests, the whole GPU infer suite
#   ab     batch 1 (--b1-only): fold / nofold (the combine kernel's warp-0 path for <= 32 splits,
#          call 3) / nofold_cta (GYRE_COMBINE_WARP=0: session 36's combine), 1.5B x AB_N15,
#          0.5B x AB_N05
#   race   compute-sanitizer racecheck of the fused op's test (batch-1 cases)
#   trace  CUPTI critical path of the 1.5B step with the fold
# Usage on the device: GYRE_DEVRUN=DIR SRC_LINK=/path/of/the/build/source bash THIS [parts]
source bench/device_run_lib.sh
what=" ${*:-tests ab race trace} "
if [[ $what == *" tests1 "* ]]; then
  gt combine_warp gyre_gpu_backend_tests 'SplitCombineWarp*:*Paged*:*RopeAttention*'
  gt infer_warp gyre_gpu_infer_tests 'DecodeFusion*:DecodeGraph*:EngineBf16*:*Paged*' GYRE_COMBINE_WARP=1
fi
if [[ $what == *" ab1 "* ]]; then
  for i in $(seq ${AB_N15:-3}); do
    left 40 && b1_run cta qwen2.5-1.5b
    left 40 && b1_run warp8 qwen2.5-1.5b GYRE_COMBINE_WARP=1
    left 40 && b1_run warp1 qwen2.5-1.5b GYRE_COMBINE_WARP=1 GYRE_COMBINE_WARP_ONE_ROW=1
  done
  for i in $(seq ${AB_N05:-2}); do
    left 40 && b1_run cta qwen2.5-0.5b
    left 40 && b1_run warp8 qwen2.5-0.5b GYRE_COMBINE_WARP=1
    left 40 && b1_run warp1 qwen2.5-0.5b GYRE_COMBINE_WARP=1 GYRE_COMBINE_WARP_ONE_ROW=1
  done
  note "ab1 done"
fi
if [[ $what == *" tests "* ]]; then
  gt backend gyre_gpu_backend_tests 'SplitCombineWarp*:*Paged*:*RopeAttention*:DecodeStackCuda*:CudaGraph*:PdlChainCuda*:Fused*'
  gt infer gyre_gpu_infer_tests '*'
fi
if [[ $what == *" ab "* ]]; then
  for i in $(seq ${AB_N15:-3}); do
    left 40 && b1_run fold qwen2.5-1.5b
    left 40 && b1_run nofold qwen2.5-1.5b GYRE_COMBINE_IN_GEMV=0
    left 40 && b1_run nofold_cta qwen2.5-1.5b GYRE_COMBINE_IN_GEMV=0 GYRE_COMBINE_WARP=0
  done
  for i in $(seq ${AB_N05:-3}); do
    left 40 && b1_run fold qwen2.5-0.5b
    left 40 && b1_run nofold qwen2.5-0.5b GYRE_COMBINE_IN_GEMV=0
    left 40 && b1_run nofold_cta qwen2.5-0.5b GYRE_COMBINE_IN_GEMV=0 GYRE_COMBINE_WARP=0
  done
  note "ab done"
fi
if [[ $what == *" race "* ]] && left 120; then
  timeout 150 compute-sanitizer --tool racecheck --error-exitcode 9 \
    "$D/bin/gyre_gpu_backend_tests" --gtest_filter='RopePagedAttentionCuda.WithOProjBitwise*' \
    >"$R/race.log" 2>&1
  note "racecheck: exit $?"
  grep -E "ERROR SUMMARY|^\[  (FAILED|PASSED) |Race reported" "$R/race.log" | sort | uniq -c | head -6 | tee -a "$S"
fi
if [[ $what == *" trace "* ]] && left 60; then
  b1_trace 15b_fold qwen2.5-1.5b
fi
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
