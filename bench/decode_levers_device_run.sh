#!/bin/bash
# One device-machine call for the decode levers landed in session 31 without device time (issue 7):
#   - the decode look-ahead going on past a stop (infer/engine_look_ahead.cc): its GPU test
#     (DecodeLookAheadGpu, with the other engine suites) and the batch-256 throughput A/B with
#     requests that stop at different lengths (bench_rollout_gpu --stop-ids 512 --look-ahead 0|1);
#   - the split-KV minimum chunk (SplitPlan::min_chunk, GYRE_PAGED_MIN_CHUNK): the paged-attention
#     and decode tests at 64 (the default), 256 and 512 keys, bench_paged_decode_gpu `short` and
#     bench_rollout_gpu's batch-1 decode for both shapes at each (session 30 found batch-1 steps at
#     128-384 keys ~5 us a layer slower than at ~20 keys: the split's partials and combine).
# Everything lands under $OUT (pack it into one archive: only a few files come back).
# Preparing the carried folder here (DIR in .git/info/exclude; pass it to the device tool's carry):
#   ninja -C build gyre_gpu_backend_tests gyre_gpu_infer_tests bench_rollout_gpu \
#     bench_paged_decode_gpu gyre_cli
#   bash bench/pack_device_libs.sh DIR build/tests/gyre_gpu_backend_tests \
#     build/tests/gyre_gpu_infer_tests build/bin/bench_rollout_gpu build/bin/bench_paged_decode_gpu \
#     build/bin/gyre
# Usage on the device: GYRE_DEVRUN=DIR bash bench/decode_levers_device_run.sh [tests] [b1] [paged]
#   [b256] [ncu]   (no argument: the first four, ~9 minutes; ncu ~2 minutes more)
# B1_MIN_CHUNKS / PAGED_MIN_CHUNKS (default "64 256 512") pick the minimum chunks the b1 and paged
# parts run. Everything is packed into $OUT/results.tar.gz at the end (the device tool brings back
# only a few files).
set -u
OUT=${OUT:-/tmp/gyre_out}
D=${GYRE_DEVRUN:-.devrun}
mkdir -p "$OUT"
what=" ${*:-tests b1 paged b256} "
[[ -d $D/lib ]] || tar xJf "$D/lib.tar.xz" -C "$D"
[[ -d $D/bin ]] || tar xJf "$D/bin.tar.xz" -C "$D"
CUBLAS_DIR=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null)
CUDNN_DIR=$(python3 -c 'import nvidia.cudnn, os; print(os.path.join(list(nvidia.cudnn.__path__)[0], "lib"))' 2>/dev/null)
export LD_LIBRARY_PATH=$PWD/$D/lib:/usr/local/cuda/lib64:${CUBLAS_DIR}:${CUDNN_DIR}:${LD_LIBRARY_PATH:-}
[[ -e /tmp/clean ]] || ln -s "$PWD" /tmp/clean  # the test binaries' GYRE_SOURCE_DIR (fixtures)
[[ -x $D/bin/gyre ]] && export GYRE_BIN=$PWD/$D/bin/gyre
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,power.limit --format=csv | tee "$OUT/gpu.txt"
T0=$SECONDS
note() { echo "$1 ($((SECONDS - T0)) s)" | tee -a "$OUT/gpu_tests.log"; }
if [[ $what == *" tests "* ]]; then
  timeout 200 "$D/bin/gyre_gpu_infer_tests" >"$OUT/infer.log" 2>&1
  note "gyre_gpu_infer_tests exit $?"
  grep -E "^\[  (FAILED|PASSED) |Failure|Expected|Which is" "$OUT/infer.log" | head -30
  for mc in 64 256 512; do
    GYRE_PAGED_MIN_CHUNK=$mc timeout 150 "$D/bin/gyre_gpu_backend_tests" \
      --gtest_filter='*Paged*:*DecodeStack*' >"$OUT/backend_mc$mc.log" 2>&1
    note "gyre_gpu_backend_tests paged min_chunk $mc exit $?"
    grep -E "^\[  (FAILED|PASSED) |Failure" "$OUT/backend_mc$mc.log" | head -20
  done
  GYRE_PAGED_MIN_CHUNK=512 timeout 150 "$D/bin/gyre_gpu_infer_tests" \
    --gtest_filter='DecodeGraph*:DecodeFusion*:EngineBf16*:DecodeLookAhead*' >"$OUT/infer_mc512.log" 2>&1
  note "gyre_gpu_infer_tests min_chunk 512 exit $?"
  grep -E "^\[  (FAILED|PASSED) |Failure" "$OUT/infer_mc512.log" | head -20
fi
if [[ $what == *" b1 "* ]]; then
  # The engine's context is the model's 32k positions, so its decode graphs plan splits for 32k
  # keys: min_chunk 256 runs the benchmark's 128-256-key contexts unsplit, 512 too.
  for shape in qwen2.5-0.5b qwen2.5-1.5b; do
    for mc in ${B1_MIN_CHUNKS:-64 256 512}; do
      GYRE_PAGED_MIN_CHUNK=$mc timeout 100 "$D/bin/bench_rollout_gpu" --shape $shape --precision bf16 \
        --batch 1 --new 128 --decode-fusion on --budget-s 30 2>>"$OUT/b1.err" | grep decode_b1 |
        sed "s/^/min_chunk=$mc /" | tee -a "$OUT/b1.jsonl"
    done
  done
  note "b1 done"
fi
if [[ $what == *" paged "* ]]; then
  for mc in ${PAGED_MIN_CHUNKS:-64 256 512}; do
    GYRE_PAGED_MIN_CHUNK=$mc timeout 100 "$D/bin/bench_paged_decode_gpu" short 2>>"$OUT/paged.err" |
      sed "s/^/min_chunk=$mc /" | tee -a "$OUT/paged.jsonl"
  done
  note "paged done"
fi
if [[ $what == *" b256 "* ]]; then
  for shape in qwen2.5-0.5b qwen2.5-1.5b; do
    for la in 0 1; do
      timeout 90 "$D/bin/bench_rollout_gpu" --shape $shape --precision bf16 --batch 256 --prompt 128 \
        --new 256 --iters 1 --decode-fusion on --skip-b1 1 --look-ahead $la --stop-ids 512 \
        --budget-s 60 2>>"$OUT/b256.err" | grep '"rollout_gpu"' | tee -a "$OUT/b256.jsonl"
    done
  done
  note "b256 done"
fi
if [[ $what == *" ncu "* ]] && command -v ncu >/dev/null; then
  # The 1.5B batch-1 decode step's kernels in isolation (ncu serialises them: no PDL overlap, so
  # each kernel's own time), summarised by bench/ncu_step_summary.py; --step 3 skips the
  # generation's last steps.
  timeout 240 ncu --clock-control none --graph-profiling node --metrics \
    gpu__time_duration.sum,dram__bytes_read.sum --csv --print-units base -c 2500 \
    "$D/bin/bench_rollout_gpu" --shape qwen2.5-1.5b --batch 1 --prompt 128 --new 12 --iters 1 \
    --skip-b1 1 --decode-fusion on --budget-s 60 --precision bf16 >"$OUT/ncu_15b_b1.csv" \
    2>"$OUT/ncu_15b_b1.err"
  python3 bench/ncu_step_summary.py "$OUT/ncu_15b_b1.csv" --step 3 2>&1 | head -40 |
    tee "$OUT/ncu_15b_b1.txt"
  note "ncu done"
fi
tar czf /tmp/results.tar.gz -C "$OUT" . && mv /tmp/results.tar.gz "$OUT/results.tar.gz"
