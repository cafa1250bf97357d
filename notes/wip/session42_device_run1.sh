#!/bin/bash
# Session 42, call 1 (short: the session had ~25 minutes left): batch-1 A/B only of the copied
# norm prologue (notes/wip/session41_copied_norm.patch) against the landed binary, same call.
# No GPU tests were built for it; a landing still needs notes/wip/session41_device_run4.sh.
LIMIT=${LIMIT:-300}
GYRE_DEVRUN=.devrun3
source bench/device_run_lib.sh
mkdir -p .devold/bin && ln -sf "$PWD/.devrun3/bin/bench_rollout_gpu_old" .devold/bin/bench_rollout_gpu
for rep in 1 2; do
  for shape in qwen2.5-0.5b qwen2.5-1.5b; do
    D=.devold; b1_run old $shape; D=.devrun3
    b1_run new $shape
  done
done
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
