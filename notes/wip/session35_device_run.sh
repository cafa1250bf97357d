#!/bin/bash
# One device-machine call (session 35, issue 7's batch-1 decode): the one-launch decode MLP
# (backend/cuda/gemv_mlp.cu; GYRE_GEMV_MLP=0 is the two-kernel path it replaces). That code was not
# landed: it is notes/wip/session35_one_launch_mlp.patch (applies to 72a8175); results in
# notes/wip/session35_one_launch_mlp.md. The script's parts for the landed tree (tests, b1 at
# GYRE_GEMV_MLP unset, trace, b8) work on any build.
#   tests  the fused GEMV / MLP / graph GPU tests, the gpu infer suite (also with GYRE_GEMV_MLP=0)
#   san    the new test under compute-sanitizer (memcheck, racecheck, synccheck)
#   b1     bench_rollout_gpu batch 1, both shapes, GYRE_GEMV_MLP 1 / 0 alternating
#   trace  CUPTI timeline of the 1.5B batch-1 decode with the one-launch MLP
#   b8     batch 8 (the two-kernel path at M = 8: unchanged, a control)
# Build and pack here (DIR in .git/info/exclude; pass it to the device tool's carry):
#   ninja -C build gyre_gpu_backend_tests gyre_gpu_infer_tests bench_rollout_gpu gyre_cli
#   bash bench/pack_device_libs.sh DIR build/tests/gyre_gpu_backend_tests \
#     build/tests/gyre_gpu_infer_tests build/bin/bench_rollout_gpu build/bin/gyre \
#     build/lib/libgyre_cupti_trace.so
# Usage on the device: GYRE_DEVRUN=DIR SRC_LINK=/path/of/the/build/source bash THIS [parts]
# $OUT receives results.tar.gz and summary.txt only (the device tool returns few files).
source bench/device_run_lib.sh  # OUT, R, S, note, left, gt, b1_run (and device_env.sh)
what=" ${*:-tests b1 san trace b8} "
if [[ $what == *" tests "* ]]; then
  F='FusedLinearCuda*:LinearGroupCuda*:Gemv*:CudaAutocast*:PdlChainCuda*:DecodeStackCuda*:CudaGraph*:*Paged*'
  gt backend gyre_gpu_backend_tests "$F"
  gt infer gyre_gpu_infer_tests '*'
  gt infer_mlp_off gyre_gpu_infer_tests 'DecodeFusion*:DecodeGraph*:EngineBf16*' GYRE_GEMV_MLP=0
fi
b1() { b1_run "mlp=$2" "$1" GYRE_GEMV_MLP=$2; }  # shape value
if [[ $what == *" b1 "* ]]; then
  for v in 1 0 1 0; do left 60 && b1 qwen2.5-1.5b $v; done
  for v in 1 0 1; do left 60 && b1 qwen2.5-0.5b $v; done
  note "b1 done"
fi
if [[ $what == *" quick "* ]]; then
  gt swiglu gyre_gpu_backend_tests 'FusedLinearCuda.Swiglu*:CudaGraph*'
  left 60 && { timeout 150 compute-sanitizer --tool racecheck --error-exitcode 9 \
      "$D/bin/gyre_gpu_backend_tests" --gtest_filter='FusedLinearCuda.SwigluMlpResidualAtOneRow*' \
      >"$R/san_racecheck.log" 2>&1
    note "compute-sanitizer racecheck: exit $?"
    grep -E "ERROR SUMMARY|^\[  (FAILED|PASSED) " "$R/san_racecheck.log" | head -4 | tee -a "$S"; }
fi
# Batch-1 variants: B1_VARS "shape:mlp:copy" (GYRE_GEMV_MLP, GYRE_GEMV_MLP_COPY); call 2 of the
# session ran "shape:mlp:carveout" pairs (GYRE_DECODE_CARVEOUT) through the same loop.
if [[ $what == *" var "* ]]; then
  for t in ${B1_VARS:-1.5b:0:tma 1.5b:1:async 1.5b:1:async-tiles 1.5b:1:tma-tiles 1.5b:0:tma}; do
    IFS=: read -r sh v c <<<"$t"
    left 60 || break
    b1_run "copy=$c mlp=$v" qwen2.5-$sh GYRE_GEMV_MLP=$v GYRE_GEMV_MLP_COPY=$c
  done
  note "var done"
fi
# The one-row MLP test under each copy mode (bitwise vs the two GEMV kernels).
if [[ $what == *" copytests "* ]]; then
  for c in tma-tiles async async-tiles; do
    gt "swiglu_$c" gyre_gpu_backend_tests 'FusedLinearCuda.SwigluMlp*' GYRE_GEMV_MLP_COPY=$c
  done
fi
if [[ $what == *" san "* ]]; then
  if command -v compute-sanitizer >/dev/null; then
    for tool in memcheck racecheck synccheck; do
      left 90 || break
      timeout 150 compute-sanitizer --tool $tool --error-exitcode 9 "$D/bin/gyre_gpu_backend_tests" \
        --gtest_filter='FusedLinearCuda.SwigluMlpResidualAtOneRow*' >"$R/san_$tool.log" 2>&1
      note "compute-sanitizer $tool: exit $?"
      grep -E "ERROR SUMMARY|^\[  (FAILED|PASSED) " "$R/san_$tool.log" | head -4 | tee -a "$S"
    done
  fi
fi
if [[ $what == *" trace "* ]]; then
  for t in ${TRACES:-qwen2.5-1.5b:1}; do
    left 60 || break
    shape=${t%:*} v=${t#*:}
    b1_trace "$shape.$v" "$shape" GYRE_GEMV_MLP=$v
  done
fi
b8() {  # shape mlp
  GYRE_GEMV_MLP=$2 timeout 70 "$D/bin/bench_rollout_gpu" --shape "$1" --precision bf16 \
    --batch 8 --prompt 128 --new 128 --iters 1 --decode-fusion on --skip-b1 1 --budget-s 40 \
    2>>"$R/b8.err" | grep '"rollout_gpu"' | sed "s/^/mlp=$2 /" >>"$R/b8.jsonl"
  tail -1 "$R/b8.jsonl" | cut -c1-300 | tee -a "$S"
}
if [[ $what == *" b8 "* ]]; then
  left 50 && b8 qwen2.5-1.5b 1
  note "b8 done"
fi
if [[ $what == *" ncu "* ]] && command -v ncu >/dev/null && left 90; then
  # The MLP kernel of a few 1.5B decode layers in isolation (ncu serialises kernels: no PDL).
  for v in ${NCU_MLP:-1 0}; do
    left 60 || break
    GYRE_GEMV_MLP=$v timeout 120 ncu --graph-profiling node -k regex:'gemv_mlp|silu_mul|residual' \
      --launch-skip 300 --launch-count 6 --section SpeedOfLight --section MemoryWorkloadAnalysis \
      --section Occupancy --section LaunchStats --section WarpStateStats \
      "$D/bin/bench_rollout_gpu" --shape qwen2.5-1.5b --batch 1 --prompt 128 --new 12 --iters 1 \
      --skip-b1 1 --decode-fusion on --budget-s 60 --precision bf16 >"$R/ncu_mlp$v.txt" 2>"$R/ncu_mlp$v.err"
    note "ncu mlp=$v exit $?"
    grep -E "gemv_|Duration|Memory Throughput|DRAM Throughput|Achieved Occupancy|Dynamic Shared" "$R/ncu_mlp$v.txt" | head -40 >>"$S"
  done
fi
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
