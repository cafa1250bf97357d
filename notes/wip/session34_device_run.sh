#!/bin/bash
# One device-machine call (session 34, issue 7's batch-1 decode): the landed binary of session 33
# (weights past L1 in the fused M = 1 GEMVs, the attention's first tile before pdl_wait under
# capture) with notes/wip/session34_no_l1_ab.patch applied (GYRE_GEMV_NO_L1 bit 1 = the plain
# gemv_bf16, i.e. lm_head; bit 2 = the fused kernels at every M; unset = as landed):
#   pftests / pf  the L2 prefetch variants (GYRE_GEMV_VARIANT bits, gemv_fused.cu): tests under all
#         bits, then batch-1 ms a token per variant (PF_15 / PF_05: variant:MB lists)
#   b1    bench_rollout_gpu batch 1, both shapes, NO_L1 0 / 1
#   tests the GEMV / paged / decode-graph GPU tests as landed and under NO_L1 = 3, gpu infer suite
#   trace CUPTI timelines of the batch-1 decode, both shapes: what each kernel adds to a step
#   b8    batch 8 (graph bucket 8) at NO_L1 0 / 3
#   ncu   one 1.5B decode layer's kernels with ncu's memory / occupancy / stall sections
# Build and pack here (DIR in .git/info/exclude; pass it to the device tool's carry):
#   ninja -C build gyre_gpu_backend_tests gyre_gpu_infer_tests bench_rollout_gpu gyre_cli
#   bash bench/pack_device_libs.sh DIR build/tests/gyre_gpu_backend_tests \
#     build/tests/gyre_gpu_infer_tests build/bin/bench_rollout_gpu build/bin/gyre \
#     build/lib/libgyre_cupti_trace.so
# Usage on the device: GYRE_DEVRUN=DIR SRC_LINK=/path/of/the/build/source bash THIS [parts]
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
LIMIT=${LIMIT:-540}  # start no part past this many seconds (the call's limit is 600)
note() { echo "$1 ($((SECONDS - T0)) s)" | tee -a "$S"; }
left() { (( SECONDS - T0 < LIMIT - ${1:-30} )); }
what=" ${*:-b1 tests trace b8 ncu} "
b1() {  # shape no_l1
  GYRE_GEMV_NO_L1=$2 timeout 60 "$D/bin/bench_rollout_gpu" --shape "$1" --precision bf16 \
    --batch 1 --new 128 --decode-fusion on --budget-s 20 2>>"$R/b1.err" | grep decode_b1 |
    sed "s/^/no_l1=$2 /" >>"$R/b1.jsonl"
  tail -1 "$R/b1.jsonl" | python3 -c 'import sys, json
l = sys.stdin.read(); v = l.split()[0]; j = json.loads(l[len(v) + 1:])
print(v, j["shape"], j["ms_per_token"], j["ms_per_token_median_streamed"], j["ratio_bound_bf16"])' |
    tee -a "$S"
}
if [[ $what == *" b1 "* ]]; then
  for v in 0 1 0; do left 40 && b1 qwen2.5-1.5b $v; done
  for v in 0 1; do left 40 && b1 qwen2.5-0.5b $v; done
  note "b1 done"
fi
# One batch-1 run of an L2 prefetch variant (GYRE_GEMV_VARIANT, GYRE_L2_PREFETCH_MB). Session 34's
# call 3 lost 14 of 15 runs: no decode_b1 line within `timeout 50` and nothing on stderr (a hang
# or a crash before the print; variant 1 got through once). So: --batch 1 --iters 1 (no batch-256
# part), --budget-s 20 as the runs that worked (the b1 drive gets budget / 12), 90 s, the exit
# status in the summary, and on a hang the threads' kernel stacks / wait channels (GPU sync in an
# ioctl vs a host lock in a futex) and gdb's backtraces where gdb exists.
pf() {  # shape variant MB
  local log=$R/pf_$1_$2_$3.log
  GYRE_GEMV_VARIANT=$2 GYRE_L2_PREFETCH_MB=$3 "$D/bin/bench_rollout_gpu" --shape "$1" \
    --precision bf16 --batch 1 --iters 1 --new 128 --decode-fusion on --budget-s 20 \
    >"$log" 2>&1 &
  local pid=$! waited=0
  while kill -0 $pid 2>/dev/null && ((waited < 90)); do sleep 1; ((waited++)); done
  if kill -0 $pid 2>/dev/null; then
    {
      echo "HANG after 90 s: variant $2 MB $3"
      for t in /proc/$pid/task/*; do echo "$t $(cat $t/comm) wchan=$(cat $t/wchan)"; done
      command -v gdb >/dev/null && gdb -batch -ex "thread apply all bt 12" -p $pid 2>/dev/null | head -120
      nvidia-smi --query-gpu=utilization.gpu,clocks.sm,power.draw --format=csv
    } >>"$R/pf_hangs.txt" 2>&1
    kill -9 $pid
    note "variant=$2,mb=$3 $1: HANG (pf_hangs.txt)"
    return
  fi
  wait $pid
  local rc=$?
  local line
  line=$(grep decode_b1 "$log")
  if [[ -z $line ]]; then
    note "variant=$2,mb=$3 $1: exit $rc, no decode_b1 line ($(tail -c 300 "$log" | tr '\n' ' '))"
    return
  fi
  echo "variant=$2,mb=$3 $line" >>"$R/pf.jsonl"
  echo "$line" | python3 -c 'import sys, json
j = json.loads(sys.stdin.read())
print(j["shape"], j["ms_per_token"], j["ms_per_token_median_streamed"], j["ratio_bound_bf16"])' |
    sed "s/^/variant=$2,mb=$3 exit $rc /" | tee -a "$S"
}
if [[ $what == *" pftests "* ]]; then
  left 60 && { GYRE_GEMV_VARIANT=${PF_TEST_VARIANT:-127} GYRE_L2_PREFETCH_MB=24 timeout 150 "$D/bin/gyre_gpu_backend_tests" \
      --gtest_filter='FusedLinearCuda*:LinearGroupCuda*:Gemv*:CudaAutocast*:PdlChainCuda*:DecodeStackCuda*' \
      >"$R/backend_pf.log" 2>&1
    note "backend fused GEMV tests, variant ${PF_TEST_VARIANT:-127}: exit $?"
    grep -E "^\[  (FAILED|PASSED) |Failure" "$R/backend_pf.log" | head -20 | tee -a "$S"; }
  left 60 && { GYRE_GEMV_VARIANT=${PF_TEST_VARIANT:-127} GYRE_L2_PREFETCH_MB=24 timeout 150 "$D/bin/gyre_gpu_infer_tests" \
      --gtest_filter='DecodeFusion*:DecodeGraph*:EngineBf16*' >"$R/infer_pf.log" 2>&1
    note "infer DecodeFusion/DecodeGraph/EngineBf16, variant ${PF_TEST_VARIANT:-127}: exit $?"
    grep -E "^\[  (FAILED|PASSED) |Failure" "$R/infer_pf.log" | head -20 | tee -a "$S"; }
fi
if [[ $what == *" pf "* ]]; then
  for t in ${PF_15:-0:0 1:0 64:0 2:0 8:0 4:24 4:12 4:36 20:24 0:0}; do
    left 40 && pf qwen2.5-1.5b ${t%:*} ${t#*:}
  done
  for t in ${PF_05:-0:0 1:0 2:0 4:16 0:0}; do left 40 && pf qwen2.5-0.5b ${t%:*} ${t#*:}; done
  note "pf done"
fi
if [[ $what == *" tests "* ]]; then
  F='FusedLinearCuda*:LinearGroupCuda*:Gemv*:CudaAutocast*:PdlChainCuda*:*Paged*:RopeAttentionCuda*:DecodeStackCuda*'
  left 60 && { timeout 150 "$D/bin/gyre_gpu_backend_tests" --gtest_filter="$F" >"$R/backend.log" 2>&1
    note "backend GEMV/paged/rope/decode-stack tests as landed: exit $?"
    grep -E "^\[  (FAILED|PASSED) |Failure" "$R/backend.log" | head -20 | tee -a "$S"; }
  left 60 && { timeout 200 "$D/bin/gyre_gpu_infer_tests" >"$R/infer.log" 2>&1
    note "gyre_gpu_infer_tests as landed: exit $?"
    grep -E "^\[  (FAILED|PASSED) |Failure|Expected|Which is" "$R/infer.log" | head -30 | tee -a "$S"; }
  left 60 && { GYRE_GEMV_NO_L1=3 timeout 150 "$D/bin/gyre_gpu_backend_tests" \
      --gtest_filter='FusedLinearCuda*:LinearGroupCuda*:Gemv*:CudaAutocast*:PdlChainCuda*:DecodeStackCuda*' \
      >"$R/backend_nol1.log" 2>&1
    note "backend fused GEMV tests, NO_L1=3: exit $?"
    grep -E "^\[  (FAILED|PASSED) |Failure" "$R/backend_nol1.log" | head -20 | tee -a "$S"; }
  left 60 && { GYRE_GEMV_NO_L1=3 timeout 150 "$D/bin/gyre_gpu_infer_tests" \
      --gtest_filter='DecodeFusion*:DecodeGraph*' >"$R/infer_nol1.log" 2>&1
    note "infer DecodeFusion/DecodeGraph, NO_L1=3: exit $?"
    grep -E "^\[  (FAILED|PASSED) |Failure" "$R/infer_nol1.log" | head -20 | tee -a "$S"; }
fi
b8() {  # shape no_l1
  GYRE_GEMV_NO_L1=$2 timeout 70 "$D/bin/bench_rollout_gpu" --shape "$1" --precision bf16 \
    --batch 8 --prompt 128 --new 128 --iters 1 --decode-fusion on --skip-b1 1 --budget-s 40 \
    2>>"$R/b8.err" | grep '"rollout_gpu"' | sed "s/^/no_l1=$2 /" >>"$R/b8.jsonl"
  tail -1 "$R/b8.jsonl" | cut -c1-400 | tee -a "$S"
}
if [[ $what == *" b8 "* ]]; then
  for v in 0 3; do left 50 && b8 qwen2.5-1.5b $v; done
  for v in 0 3; do left 50 && b8 qwen2.5-0.5b $v; done
  note "b8 done"
fi
if [[ $what == *" trace "* ]]; then
  # A CUPTI timeline of the batch-1 decode (bench/cupti_trace) and where each step's time goes
  # when kernels overlap under PDL (cupti_timeline.py --critical): the run's last 300 steps
  # (TRACES: shape:no_l1 pairs).
  for t in ${TRACES:-qwen2.5-1.5b:0 qwen2.5-0.5b:0}; do
    left 60 || break
    shape=${t%:*} v=${t#*:}
    GYRE_GEMV_NO_L1=$v GYRE_CUPTI_TRACE=$R/trace_$shape.$v.csv \
      LD_PRELOAD=$PWD/$D/bin/libgyre_cupti_trace.so timeout 60 "$D/bin/bench_rollout_gpu" \
      --shape $shape --precision bf16 --batch 1 --new 128 --iters 1 --decode-fusion on \
      --budget-s 12 2>>"$R/trace.err" | grep decode_b1 >>"$R/trace_b1.jsonl"
    python3 bench/cupti_timeline.py "$R/trace_$shape.$v.csv" --marker pick_kernel --burst-ms 0.2 \
      --steps 300 --critical --top 14 --gap-us 3 >"$R/trace_$shape.$v.txt" 2>&1
    note "trace $shape no_l1=$v"
    sed -n '/^critical/,$p' "$R/trace_$shape.$v.txt" | head -26 >>"$S"
    gzip -f "$R/trace_$shape.$v.csv"
  done
fi
if [[ $what == *" ncu "* ]] && command -v ncu >/dev/null && left 90; then
  # Two layers' decode kernels of the 1.5B batch-1 step (launch-skip past the prefill and the first
  # steps), each in isolation with cold caches: speed of light, memory, occupancy, stalls.
  timeout $((LIMIT - (SECONDS - T0))) ncu --graph-profiling node \
    -k regex:'gemv|rope_paged|combine' --launch-skip 700 --launch-count 12 \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
    --section LaunchStats --section WarpStateStats --section SchedulerStats \
    "$D/bin/bench_rollout_gpu" --shape qwen2.5-1.5b --batch 1 --prompt 128 --new 12 --iters 1 \
    --skip-b1 1 --decode-fusion on --budget-s 60 --precision bf16 >"$R/ncu_15b_layer.txt" \
    2>"$R/ncu_15b_layer.err"
  note "ncu exit $? ($(grep -c 'gemv\|rope_paged\|combine' "$R/ncu_15b_layer.txt") name lines)"
fi
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
