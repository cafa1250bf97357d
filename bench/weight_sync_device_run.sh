#!/bin/bash
# One device-machine call (nvidia-h200) for issue 8's colocated weight sync (bf16 weight copies
# refreshed in place, CUDA graphs kept, AdamW writing the copies).
#   tests  gyre_gpu_backend_tests (Bf16CopiesCuda: refresh / f32_to_bf16_many / AdamW's bf16
#          output bitwise; the rest of the backend GPU tests), gyre_gpu_infer_tests (WeightSyncGpu:
#          graph replay after an in-place update == a fresh engine, graphs kept, replaced or failed
#          updates drop; DecodeGraphGpu, EngineBf16Gpu, ...), gyre_gpu_train_tests (multi-tensor
#          AdamW still bitwise the per-tensor op), gyre_gpu_rl_tests' ColocatedBf16CopiesGpu
#   mut    the mutation check: binaries built with a broken refresh (its first entry skipped) and a
#          broken AdamW bf16 output (tensor 0 not written) must FAIL the tests above
#   bench  bench_rollout_gpu --precision bf16 (0.5B and 1.5B shapes): the two
#          "rollout_gpu_colocated_sync" lines (refresh / adamw_bf16_copies) and the rest
# Preparing the carried folder here (.devrun-h1 matches .devrun* in .git/info/exclude):
#   ninja -C build-h1 bench_rollout_gpu gyre_gpu_backend_tests gyre_gpu_infer_tests \
#     gyre_gpu_train_tests gyre_gpu_rl_tests
#   bash bench/pack_device_libs.sh .devrun-h1 build-h1/bin/bench_rollout_gpu \
#     build-h1/tests/gyre_gpu_{backend,infer,train,rl}_tests
#   (mut also needs h1_mut1/ and h1_mut2/, the mutated test binaries, in bin.tar.xz or mut.tar.xz)
# Usage on the device: GYRE_DEVRUN=.devrun-h1 bash bench/weight_sync_device_run.sh [modes...]
# (default: tests bench). Prints "WEIGHT SYNC CHECK FAILED" lines on failure; exits non-zero then.
set -u
OUT=${OUT:-/tmp/gyre_out}
D=${GYRE_DEVRUN:-.devrun-h1}
mkdir -p "$OUT"
modes=${*:-tests bench}
has() { [[ " $modes " == *" $1 "* ]]; }
[[ -d $D/lib ]] || tar xJf "$D/lib.tar.xz" -C "$D"
[[ -d $D/bin ]] || tar xJf "$D/bin.tar.xz" -C "$D"
pydir() { python3 -c "import $1, os; print(os.path.join(list($1.__path__)[0], 'lib'))" 2>/dev/null; }
export LD_LIBRARY_PATH=$PWD/$D/lib:/usr/local/cuda/lib64:$(pydir nvidia.cublas):$(pydir nvidia.cudnn):$(pydir nvidia.nccl):${LD_LIBRARY_PATH:-}
# The tests find tests/fixtures under the source folder they were built in (GYRE_SOURCE_DIR).
src=${GYRE_BUILT_IN:-/work/main}
[[ -e $src ]] || { mkdir -p "$(dirname "$src")" && ln -s "$PWD" "$src"; }
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
rc=0
fail() {
  echo "WEIGHT SYNC CHECK FAILED: $*"
  rc=1
}

# Runs a gtest binary with a filter; its log in $OUT/<tag>.log; prints the summary lines.
gtest() {
  local tag=$1 bin=$2 filter=$3
  timeout 300 "$bin" --gtest_filter="$filter" >"$OUT/$tag.log" 2>&1
  local r=$?
  grep -E '^\[  (PASSED|FAILED) |^\[  SKIPPED|^\[  FAILED  \]' "$OUT/$tag.log" | sed "s/^/[$tag] /"
  return $r
}

if has tests; then
  gtest backend "$D/bin/gyre_gpu_backend_tests" '*' || fail "gyre_gpu_backend_tests"
  gtest infer "$D/bin/gyre_gpu_infer_tests" '*' || fail "gyre_gpu_infer_tests"
  gtest train "$D/bin/gyre_gpu_train_tests" '*' || fail "gyre_gpu_train_tests"
  gtest rl "$D/bin/gyre_gpu_rl_tests" 'ColocatedBf16CopiesGpu.*' || fail "ColocatedBf16CopiesGpu"
fi

if has mut; then
  [[ -d $D/h1_mut1 ]] || tar xJf "$D/mut.tar.xz" -C "$D"
  # A broken refresh (one copy never re-cast) must be caught.
  gtest mut1_backend "$D/h1_mut1/gyre_gpu_backend_tests" 'Bf16CopiesCuda.RefreshRecastsInPlaceBitwise' &&
    fail "mutation 1 (refresh skips an entry) passed Bf16CopiesCuda"
  gtest mut1_infer "$D/h1_mut1/gyre_gpu_infer_tests" 'WeightSyncGpu.*' &&
    fail "mutation 1 (refresh skips an entry) passed WeightSyncGpu"
  gtest mut1_rl "$D/h1_mut1/gyre_gpu_rl_tests" 'ColocatedBf16CopiesGpu.DataParallel*' &&
    fail "mutation 1 (refresh skips an entry) passed the data-parallel fallback"
  # A broken AdamW bf16 output (one tensor's copy not written, yet marked fresh) must be caught.
  gtest mut2_backend "$D/h1_mut2/gyre_gpu_backend_tests" 'Bf16CopiesCuda.AdamW*' &&
    fail "mutation 2 (AdamW skips a copy) passed Bf16CopiesCuda.AdamW"
  gtest mut2_rl "$D/h1_mut2/gyre_gpu_rl_tests" 'ColocatedBf16CopiesGpu.AdamW*' &&
    fail "mutation 2 (AdamW skips a copy) passed ColocatedBf16CopiesGpu"
  echo "mutation check done (each mutated run above must show FAILED)"
fi

if has bench; then
  for shape in ${SYNC_SHAPES:-qwen2.5-0.5b qwen2.5-1.5b}; do
    timeout 280 "$D/bin/bench_rollout_gpu" --shape "$shape" --precision bf16 --decode-fusion on \
      --budget-s "${SYNC_BUDGET_S:-60}" 2>"$OUT/bench_$shape.err" | tee -a "$OUT/bench.jsonl" ||
      fail "bench_rollout_gpu --shape $shape"
  done
fi
exit $rc
