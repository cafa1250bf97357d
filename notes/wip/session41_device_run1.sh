#!/bin/bash
# Session 41, call 1: session 40's plan (notes/wip/session40_device_run1.sh) as it is, with the
# probe build carried inside .devrun as bin/bench_rollout_gpu_probe (one carried folder keeps the
# tree under the 64 MiB limit) and linked to where that script looks for it (.devrun2/bin).
mkdir -p .devrun2/bin && ln -sf "$PWD/${GYRE_DEVRUN:-.devrun}/bin/bench_rollout_gpu_probe" .devrun2/bin/bench_rollout_gpu
source notes/wip/session40_device_run1.sh
