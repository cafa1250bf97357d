#!/usr/bin/env bash
# The CPU quick-start (gyre's main job): installs the Debian packages, builds gyre, and runs GRPO on
# two-digit addition with a tiny model that gyre SFT-trained itself (examples/quickstart/). The
# reward (exact match of the sum) and the held-out accuracy (eval/heldout) rise as it trains.
# Extra arguments go to `gyre train` (e.g. --num-rollout 10).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
GYRE_NINJA_TARGETS=gyre_cli bash scripts/build.sh
out=${GYRE_QUICKSTART_OUT:-runs/quickstart}
rm -rf "$out"
./build/bin/gyre train --config examples/quickstart/grpo.yaml --save "$out" "$@"
echo "[gyre] metrics: $out/metrics.jsonl; trained model: $out/iter_*/model"
