#!/usr/bin/env bash
# Writes the quick-start's arithmetic datasets (deterministic; awk only):
#   sft.jsonl    prompts with answers the base model is SFT-trained on (gyre train --loss-type sft_loss)
#   train.jsonl  RL prompts {"prompt": "a+b=", "label": "c"} (disjoint from sft.jsonl)
#   eval.jsonl   held-out prompts for accuracy
# Operands are 0..49; every (a, b) pair appears in exactly one file.
set -euo pipefail
cd "$(dirname "$0")"
awk 'BEGIN {
  srand(1234);
  n = 0;
  for (a = 0; a < 50; a++) for (b = 0; b < 50; b++) { pa[n] = a; pb[n] = b; n++ }
  for (i = n - 1; i > 0; i--) { j = int(rand() * (i + 1)); t = pa[i]; pa[i] = pa[j]; pa[j] = t; t = pb[i]; pb[i] = pb[j]; pb[j] = t }
  for (i = 0; i < n; i++) {
    line = sprintf("{\"prompt\": \"%d+%d=\", \"label\": \"%d\"}", pa[i], pb[i], pa[i] + pb[i]);
    if (i < 1000) print line > "sft.jsonl";
    else if (i < 2300) print line > "train.jsonl";
    else print line > "eval.jsonl";
  }
}'
wc -l sft.jsonl train.jsonl eval.jsonl
