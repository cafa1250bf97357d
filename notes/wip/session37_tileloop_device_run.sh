#!/bin/bash
# Session 37, call 5: the *_rms tile-loop kernels' grid capped to fewer blocks an SM
# (GYRE_TILE_LOOP_PER_SM_SILU: gate/up; _GROUP: q/k/v), leaving room on every SM for the next PDL
# kernel's early blocks (down's, the attention's), which load their first weights / K/V tiles
# before their wait. The fold experiment (call 3) showed the next kernel's residency matters:
# o_proj's SM-filling blocks cost gate/up 68 us a step. Results are bitwise for any grid.
# Usage on the device: GYRE_DEVRUN=DIR bash THIS
source bench/device_run_lib.sh
for i in 1 2; do
  for shape in qwen2.5-1.5b qwen2.5-0.5b; do
    left 30 && b1_run default $shape
    left 30 && b1_run silu1 $shape GYRE_TILE_LOOP_PER_SM_SILU=1
    left 30 && b1_run group1 $shape GYRE_TILE_LOOP_PER_SM_GROUP=1
    left 30 && b1_run both1 $shape GYRE_TILE_LOOP_PER_SM_SILU=1 GYRE_TILE_LOOP_PER_SM_GROUP=1
  done
done
grep -h "tile-loop kernel" "$R"/b1_*.log | sort | uniq -c | tee -a "$S"
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
