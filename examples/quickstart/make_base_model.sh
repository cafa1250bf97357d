#!/usr/bin/env bash
# Recreates examples/quickstart/base_model: a tiny Qwen3-shaped model (about 80k parameters) that
# gyre itself trained with --loss-type sft_loss on sft.jsonl for a short while, so that it knows the
# answer format ("a+b=" -> digits, then <|endoftext|>) but gets only part of the sums right. The
# GRPO quick-start (grpo.yaml) then lifts its accuracy. Usage: make_base_model.sh [gyre binary]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
gyre="${1:-$here/../../build/bin/gyre}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$gyre" init-model --config "$here/model_config.json" --output "$work/init" --seed 7
cp "$here/tokenizer/"* "$work/init/"
"$gyre" train --config "$here/sft.yaml" --hf-checkpoint "$work/init" --save "$work/sft"
rm -rf "$here/base_model"
mkdir -p "$here/base_model"
last="$(cat "$work/sft/latest_checkpointed_iteration.txt")"
cp "$work/sft/iter_$(printf '%07d' "$last")/model/"* "$here/base_model/"
echo "base model written to $here/base_model"
