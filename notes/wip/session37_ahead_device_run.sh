#!/bin/bash
# Session 37, call 6: the M = 1 single-weight GEMVs' load depth (dot_rows_impl's kAhead at
# M * C == 1, GYRE_GEMV_AHEAD1 at compile time: 8 landed, 9 and 12 built). Only the 1.5B down
# projection changes (K = 8960, S = 4: 8.75 vectors a lane, a second batch of one load today);
# every other M = 1 single-weight GEMV of both shapes already loads its <= 6 vectors in one batch.
# Bitwise (only when loads issue). Packs: GYRE_DEVRUN (landed tree), .devrun2 (12), .devrun3 (9).
source bench/device_run_lib.sh
BASE=$D
for v in .devrun2 .devrun3; do [[ -d $v/bin ]] || tar xJf "$v/bin.tar.xz" -C "$v"; done
for i in 1 2 3; do
  left 30 && D=$BASE b1_run a8 qwen2.5-1.5b
  left 30 && D=.devrun2 b1_run a12 qwen2.5-1.5b
  left 30 && D=.devrun3 b1_run a9 qwen2.5-1.5b
done
left 30 && D=$BASE b1_run a8 qwen2.5-0.5b
left 30 && D=.devrun2 b1_run a12 qwen2.5-0.5b
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
