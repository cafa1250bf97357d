#!/usr/bin/env bash
# Sets up (Debian packages), builds, and runs gyre's test suite on the CPU:
#   1. format check (clang-format) of the project's sources;
#   2. Release build (CUDA compiled when nvcc exists) and every test label but `gpu`;
#   3. an AddressSanitizer+UBSan build of the unit tests (and the CLI they run), running the
#      parsing tests (`parse` in the test name). -O0 -g1: line numbers in ASan's stack traces, and
#      far less build time than -O2 -g (the sanitised build was CI's longest stage).
# Usage: bash scripts/test.sh [ctest -L regex, default 'unit|golden|e2e|dist']
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/install_node_deps.sh
bash scripts/check_format.sh
bash scripts/build.sh
LABELS=${1:-'unit|golden|e2e|dist'}
(cd build && ctest -L "$LABELS" -LE gpu --output-on-failure -j2 --timeout 600)
if [ "${GYRE_SKIP_SANITIZE:-0}" != 1 ]; then
  GYRE_BUILD_DIR=build-asan GYRE_CUDA=OFF GYRE_NINJA_TARGETS=gyre_unit_all \
    bash scripts/build.sh -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O0 -g1 -DNDEBUG" \
    -DGYRE_SANITIZE=address,undefined -DGYRE_BENCH=OFF
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest -R 'Parse|parse' -L unit --output-on-failure -j2 --timeout 600)
fi
echo "[gyre] all tests passed"
