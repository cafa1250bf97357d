#!/usr/bin/env bash
# Configures and builds gyre into build/ (Release). Extra args go to cmake, e.g. -DGYRE_CUDA=OFF.
# CUDA is built whenever nvcc exists (compile-only on machines without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${GYRE_BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGYRE_CUDA=${GYRE_CUDA:-AUTO} "$@" >/dev/null
ninja -C "$BUILD_DIR" ${GYRE_NINJA_TARGETS:-}
