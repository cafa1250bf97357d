#!/bin/bash
# One device-machine call (session 33, issue 7's batch-1 decode): the fused decode GEMVs' M = 1
# load variants picked by GYRE_GEMV_VARIANT (gemv_fused.cu's gemv_variant(): 1 = residual 12 loads
# ahead, 2 = silu_mul_rms 6 ahead, 4 = as 2 with 3 blocks an SM, 8 = weights past L1; 16 = the
# fused decode attention's first K/V tile copied before pdl_wait), their bitwise tests, and the
# gpu infer suite (DecodeLookAheadGpu after session 31's change).
# Build and pack here (DIR in .git/info/exclude; pass it to the device tool's carry):
#   ninja -C build gyre_gpu_backend_tests gyre_gpu_infer_tests bench_rollout_gpu gyre_cli
#   bash bench/pack_device_libs.sh DIR build/tests/gyre_gpu_backend_tests \
#     build/tests/gyre_gpu_infer_tests build/bin/bench_rollout_gpu build/bin/gyre
# Usage on the device: GYRE_DEVRUN=DIR SRC_LINK=/path/of/the/build/source bash THIS
# $OUT receives results.tar.gz and summary.txt only (the device tool returns few files).
set -u
OUT=${OUT:-/tmp/gyre_out}
D=${GYRE_DEVRUN:-.devrun}
R=/tmp/gyre_results
mkdir -p "$OUT" "$R"
source bench/device_env.sh  # unpack, LD_LIBRARY_PATH, SRC_LINK, GYRE_BIN
S=$OUT/summary.txt
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,power.limit --format=csv | tee -a "$S"
T0=$SECONDS
note() { echo "$1 ($((SECONDS - T0)) s)" | tee -a "$S"; }
what=" ${*:-tests bench} "
if [[ $what == *" tests "* ]]; then
  timeout 200 "$D/bin/gyre_gpu_infer_tests" >"$R/infer.log" 2>&1
  note "gyre_gpu_infer_tests exit $?"
  grep -E "^\[  (FAILED|PASSED) |Failure|Expected|Which is" "$R/infer.log" | head -30 | tee -a "$S"
  for v in ${TEST_VARIANTS:-27 29}; do
    GYRE_GEMV_VARIANT=$v timeout 150 "$D/bin/gyre_gpu_backend_tests" \
      --gtest_filter='FusedLinearCuda*:LinearGroupCuda*:CudaAutocast*:PdlChainCuda*:PagedBf16*:RopeAttentionCuda*:DecodeStackCuda*' \
      >"$R/backend_v$v.log" 2>&1
    note "backend fused GEMV tests, variant $v: exit $?"
    grep -E "^\[  (FAILED|PASSED) |Failure" "$R/backend_v$v.log" | head -20 | tee -a "$S"
    GYRE_GEMV_VARIANT=$v timeout 150 "$D/bin/gyre_gpu_infer_tests" \
      --gtest_filter='DecodeFusion*:DecodeGraph*' >"$R/infer_v$v.log" 2>&1
    note "infer DecodeFusion/DecodeGraph, variant $v: exit $?"
    grep -E "^\[  (FAILED|PASSED) |Failure" "$R/infer_v$v.log" | head -20 | tee -a "$S"
  done
fi
b1() {  # shape variant
  GYRE_GEMV_VARIANT=$2 timeout 60 "$D/bin/bench_rollout_gpu" --shape "$1" --precision bf16 \
    --batch 1 --new 128 --decode-fusion on --budget-s 20 2>>"$R/b1.err" | grep decode_b1 |
    sed "s/^/variant=$2 /" >>"$R/b1.jsonl"
  tail -1 "$R/b1.jsonl" | python3 -c 'import sys, json
l = sys.stdin.read(); v = l.split()[0]; j = json.loads(l[len(v) + 1:])
print(v, j["shape"], j["ms_per_token"], j["ms_per_token_median_streamed"], j["ratio_bound_bf16"])' |
    tee -a "$S"
}
if [[ $what == *" bench "* ]]; then
  for v in ${VARIANTS_15:-0 1 2 4 8 16 27 0}; do b1 qwen2.5-1.5b $v; done
  for v in ${VARIANTS_05:-0 16 27 0}; do b1 qwen2.5-0.5b $v; done
  note "b1 done"
fi
tar czf "$OUT/results.tar.gz" -C "$R" .
