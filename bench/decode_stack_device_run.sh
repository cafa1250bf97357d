#!/bin/bash
# One device-machine call for the batch-1 decode stack (issue 7; backend/cuda/decode_stack.h): its
# GPU tests (bitwise against the per-op fused decode, and the engine's greedy decode with the stack
# on and off) and the paged-attention tests its refactor touches, then bench_decode_stack_gpu (the
# layers alone: stack vs per-op graphs vs the bandwidth bound) and bench_rollout_gpu's batch-1
# decode for both shapes with the stack on and off (GYRE_DECODE_STACK=1 / 0; off is the default),
# everything under $OUT.
# Preparing the carried folder here (DIR in .git/info/exclude; pass it to the device tool's carry):
#   ninja -C build gyre_gpu_backend_tests gyre_gpu_infer_tests bench_decode_stack_gpu \
#     bench_rollout_gpu
#   XZ_OPT="-6 -T2" bash bench/pack_device_libs.sh DIR build/tests/gyre_gpu_backend_tests \
#     build/tests/gyre_gpu_infer_tests build/bin/bench_decode_stack_gpu build/bin/bench_rollout_gpu
# Usage on the device: GYRE_DEVRUN=DIR bash bench/decode_stack_device_run.sh [tests|bench|all]
set -u
OUT=${OUT:-/tmp/gyre_out}
D=${GYRE_DEVRUN:-.devrun}
mkdir -p "$OUT"
what=${1:-all}
[[ -d $D/lib ]] || tar xJf "$D/lib.tar.xz" -C "$D"
[[ -d $D/bin ]] || tar xJf "$D/bin.tar.xz" -C "$D"
CUBLAS_DIR=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null)
CUDNN_DIR=$(python3 -c 'import nvidia.cudnn, os; print(os.path.join(list(nvidia.cudnn.__path__)[0], "lib"))' 2>/dev/null)
LIBS=$PWD/$D/lib:/usr/local/cuda/lib64:${CUBLAS_DIR}:${CUDNN_DIR}:${LD_LIBRARY_PATH:-}
[[ -e /tmp/clean ]] || ln -s "$PWD" /tmp/clean  # the test binaries' GYRE_SOURCE_DIR (fixtures)
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
if [[ $what == tests || $what == all ]]; then
  for spec in "gyre_gpu_backend_tests ${GYRE_BACKEND_FILTER:-DecodeStack*:*Paged*}" \
    "gyre_gpu_infer_tests ${GYRE_INFER_FILTER:-DecodeFusion*:DecodeGraph*}"; do
    set -- $spec
    [[ -x $D/bin/$1 ]] || continue
    timeout 200 env LD_LIBRARY_PATH=$LIBS "$D/bin/$1" --gtest_filter="$2" >"$OUT/$1.log" 2>&1
    echo "$1 exit $?" | tee -a "$OUT/gpu_tests.log"
    grep -E "^\[  (FAILED|PASSED) |Failure|error|Expected|Which is|differs" "$OUT/$1.log" | head -30
  done
fi
if [[ $what == bench || $what == all ]]; then
  [[ -x $D/bin/bench_decode_stack_gpu ]] &&
    timeout 120 env LD_LIBRARY_PATH=$LIBS "$D/bin/bench_decode_stack_gpu" 2>&1 |
    tee -a "$OUT/decode_stack.jsonl"
  for shape in qwen2.5-0.5b qwen2.5-1.5b; do
    for stack in 1 0; do
      timeout 90 env LD_LIBRARY_PATH=$LIBS GYRE_DECODE_STACK=$stack "$D/bin/bench_rollout_gpu" \
        --shape $shape --batch 1 --prompt 128 --new 128 --iters 1 --budget-s 70 \
        --precision bf16 --decode-fusion on 2>&1 | sed "s/^{/{\"decode_stack\":$stack,/" |
        tee -a "$OUT/rollout_b1.jsonl"
    done
  done
fi
