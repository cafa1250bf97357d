#!/bin/bash
# Session 41, call 3: why the one-load prologue (call 2) was slower. Variants, alternating:
# old = landed; A = row_rstd's one-load only; B = A + the streamed *_rms one-load prologue (landed
# staging loop elsewhere); C = B + 8-vector batched staging (call 2's "new"); no probe build.
# old, C and the probe build are not carried (the tree's 64 MiB limit): call 2 measured them, 4 rounds stable to 0.2%.
LIMIT=${LIMIT:-500}
GYRE_DEVRUN=.devrun3
source bench/device_run_lib.sh
for v in A B; do
  mkdir -p .dv_$v/bin && ln -sf "$PWD/.devrun3/bin/bench_rollout_gpu_$v" .dv_$v/bin/bench_rollout_gpu
done
for rep in 1 2 3; do
  for shape in qwen2.5-0.5b qwen2.5-1.5b; do
    for v in A B; do D=.dv_$v; b1_run $v $shape; done
  done
done
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
