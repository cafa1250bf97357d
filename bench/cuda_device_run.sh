#!/bin/bash
# One device-machine call for the CUDA backend (issue 7): runs the GPU tests and bench_cuda_ops
# from binaries built on the development machine (carried in .devrun/, with their non-CUDA shared
# libraries in .devrun/lib), then bench/hf_anchor.py for the PyTorch anchors on the same GPU, and
# writes everything under $OUT. Usage on the device: bash bench/cuda_device_run.sh [tests|bench|ncu|all]
# Preparing .devrun here (it is listed in .git/info/exclude and passed to the device tool's carry):
#   ninja -C build-cuda gyre_gpu_backend_tests gyre_gpu_infer_tests bench_cuda_ops
#   mkdir -p .devrun/bin .devrun/lib && cp build-cuda/tests/gyre_gpu_*_tests build-cuda/bin/bench_cuda_ops .devrun/bin/
#   strip .devrun/bin/*; cp -L /lib/x86_64-linux-gnu/lib{fmt.so.9,yaml-cpp.so.0.7,gfortran.so.5,quadmath.so.0,utf8proc.so.2} .devrun/lib/
#   xz -9 -c /lib/x86_64-linux-gnu/libopenblas.so.0 > .devrun/lib/libopenblas.so.0.xz
set -u
OUT=${OUT:-/tmp/gyre_out}
mkdir -p "$OUT"
what=${1:-all}
# OpenBLAS travels xz-compressed (the carried tree is limited to 64 MiB).
if [[ -f .devrun/lib/libopenblas.so.0.xz && ! -f .devrun/lib/libopenblas.so.0 ]]; then
  python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('.devrun/lib/libopenblas.so.0.xz'), open('.devrun/lib/libopenblas.so.0', 'wb'))"
fi
CUBLAS_DIR=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null)
CUDART_DIR=$(python3 -c 'import nvidia.cuda_runtime, os; print(os.path.join(list(nvidia.cuda_runtime.__path__)[0], "lib"))' 2>/dev/null)
# Only our binaries see the carried libraries (python3 keeps its own libstdc++ and CUDA libs).
LIBS=$PWD/.devrun/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib:${CUBLAS_DIR}:${CUDART_DIR}:${LD_LIBRARY_PATH:-}
run() { LD_LIBRARY_PATH=$LIBS "$@"; }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
{ cat /etc/os-release | head -2; ldd --version | head -1; which cmake ninja nvcc;
  ls -d /usr/include/fmt /usr/include/yaml-cpp /usr/include/gtest /usr/include/*openblas* 2>&1; } >> "$OUT/gpu.txt" 2>&1
run ldd .devrun/bin/bench_cuda_ops | grep -E "not found|cublas|cudart|openblas" | tee -a "$OUT/gpu.txt"
if [[ $what == tests || $what == all ]]; then
  for t in .devrun/bin/gyre_gpu_*_tests; do
    timeout 120 env LD_LIBRARY_PATH=$LIBS "$t" 2>&1 | tee -a "$OUT/gpu_tests.log" | grep -E "^\[  (FAILED|PASSED) |Failure|error|exception|Expected" | head -60
  done
  grep -E "^\[  (PASSED|FAILED)" "$OUT/gpu_tests.log"
  # On failures, one memcheck pass over the failing backend tests (Firecracker machines run it).
  failed=$(grep -E "^\[  FAILED  \] Cuda" "$OUT/gpu_tests.log" | grep -v " ms)" | awk '{print $4}' | sort -u | paste -sd: -)
  if [[ -n $failed ]] && command -v compute-sanitizer >/dev/null; then
    timeout 90 env LD_LIBRARY_PATH=$LIBS compute-sanitizer --tool memcheck --print-limit 20 \
      .devrun/bin/gyre_gpu_backend_tests --gtest_filter="$failed" > "$OUT/memcheck.log" 2>&1
    grep -E "ERROR SUMMARY|Invalid|at 0x|by thread" "$OUT/memcheck.log" | head -20
  fi
fi
if [[ $what == bench || $what == all ]]; then
  timeout 180 env LD_LIBRARY_PATH=$LIBS .devrun/bin/bench_cuda_ops 2>&1 | tee "$OUT/ours.jsonl"
  PYTHONUNBUFFERED=1 timeout 180 python3 bench/hf_anchor.py --ours "$OUT/ours.jsonl" 2>&1 | tee "$OUT/anchor.txt"
fi
if [[ $what == ncu || $what == all ]] && command -v ncu >/dev/null; then
  # Speed-of-light and occupancy of the two attention kernels (one launch each; clocks untouched).
  for spec in "flash_fwd 13" "flash_bwd 0" "flash_bwd_dq 0"; do  # forward: first launch of the 32-rows variant
    set -- $spec
    timeout 100 env LD_LIBRARY_PATH=$LIBS ncu --clock-control none --section SpeedOfLight \
      --section Occupancy --section LaunchStats --kernel-name regex:$1 --launch-skip $2 \
      --launch-count 1 .devrun/bin/bench_cuda_ops attention >> "$OUT/ncu_attention.txt" 2>&1
  done
  grep -E "flash_|Throughput|Registers|Achieved Occupancy|Theoretical Occupancy|Duration|Block Limit" \
    "$OUT/ncu_attention.txt" | head -60
fi
