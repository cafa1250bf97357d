#!/bin/bash
# One device-machine call for the whole-model GPU figures (issue 7): the GPU backend + model tests,
# bench_model_gpu (bf16 mixed precision, both shapes) and bench/hf_anchor.py --models (PyTorch +
# transformers on the same GPU, same workloads), everything written under $OUT. Mode `rollout`:
# bench_rollout_gpu (batch 256 x prompt 128 x 256 new, and batch-1 decode vs the bandwidth bound;
# both shapes) then bench/hf_anchor.py --generate (transformers generate, bf16, same workloads) —
# under 6 minutes even with a slow engine (each bench stops at --budget-s 100 and prints what it
# measured; hard timeouts 125 + 125 + 95 s).
# Preparing the carried folder here (.devrun-bf16 is in .git/info/exclude; pass it to carry):
#   ninja -C build-lead gyre_gpu_backend_tests gyre_gpu_model_tests bench_model_gpu \
#     bench_rollout_gpu
#   mkdir -p .devrun-bf16/bin && cp build-lead/tests/gyre_gpu_{backend,model}_tests \
#     build-lead/bin/bench_{model,rollout}_gpu .devrun-bf16/bin/ && strip .devrun-bf16/bin/*
#   cp .devrun-mg/lib.tar.xz .devrun-bf16/   # libfmt, libopenblas, libgfortran, libquadmath
# Usage on the device: bash bench/model_gpu_device_run.sh
#   [tests|bench|anchor|rollout|kernels|moe|attention|profile|all]
# (GYRE_DEVRUN names the carried folder; GYRE_OP_PROFILE=1 adds per-op GPU times to the output.)
set -u
OUT=${OUT:-/tmp/gyre_out}
D=${GYRE_DEVRUN:-.devrun-bf16}
mkdir -p "$OUT"
what=${1:-all}
[[ -d $D/lib ]] || tar xJf "$D/lib.tar.xz" -C "$D"
[[ -d $D/bin || ! -f $D/bin.tar.xz ]] || tar xJf "$D/bin.tar.xz" -C "$D"  # binaries may travel xz'd
[[ -x $D/bin/gyre ]] && export GYRE_BIN=$PWD/$D/bin/gyre  # tests that spawn the CLI
CUBLAS_DIR=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null)
# cuDNN (training attention, dlopen'ed): the device image has it only in the pip wheel.
CUDNN_DIR=$(python3 -c 'import nvidia.cudnn, os; print(os.path.join(list(nvidia.cudnn.__path__)[0], "lib"))' 2>/dev/null)
LIBS=$PWD/$D/lib:/usr/local/cuda/lib64:${CUBLAS_DIR}:${CUDNN_DIR}:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
if [[ $what == tests || $what == all ]]; then
  # Each binary's whole output goes to its own log first (a pipe into `head` would kill the test
  # with SIGPIPE once the summary lines overflow), then a digest is printed.
  for t in "$D"/bin/gyre_gpu_*_tests; do
    name=$(basename "$t")
    timeout 200 env LD_LIBRARY_PATH=$LIBS "$t" >"$OUT/$name.log" 2>&1
    echo "$name exit $?" | tee -a "$OUT/gpu_tests.log"
    cat "$OUT/$name.log" >>"$OUT/gpu_tests.log"
    grep -E "^\[  (FAILED|PASSED) |Failure|error|bf16 vs f32|Expected|Which is" "$OUT/$name.log" |
      head -40
  done
fi
if [[ $what == bench || $what == all ]]; then
  for shape in qwen2.5-0.5b qwen2.5-1.5b; do
    timeout 240 env LD_LIBRARY_PATH=$LIBS "$D/bin/bench_model_gpu" --shape $shape --precision bf16 \
      2>&1 | tee -a "$OUT/ours.jsonl"
  done
fi
if [[ $what == anchor || $what == all ]]; then
  PYTHONUNBUFFERED=1 timeout 300 python3 bench/hf_anchor.py --models qwen2.5-0.5b qwen2.5-1.5b \
    2>&1 | tee "$OUT/anchor.jsonl"
fi
if [[ $what == moe || $what == all ]]; then
  # Session 6: one Qwen3-30B-A3B-shaped MoE layer, sorted dispatch vs the former per-expert path.
  for p in bf16 f32; do
    timeout 120 env LD_LIBRARY_PATH=$LIBS "$D/bin/bench_moe_gpu" --precision $p 2>&1 |
      tee -a "$OUT/moe.jsonl"
  done
fi
if [[ $what == attention || $what == all ]]; then
  # Session 6: training attention, cuDNN fused SDPA vs the flash kernels (bench_cuda_ops prints
  # both), and the 0.5B training step with each backend.
  timeout 120 env LD_LIBRARY_PATH=$LIBS "$D/bin/bench_cuda_ops" attention 2>&1 | tee "$OUT/attn.jsonl"
  for be in flash cudnn; do
    timeout 100 env LD_LIBRARY_PATH=$LIBS GYRE_ATTENTION_BACKEND=$be "$D/bin/bench_model_gpu" \
      --shape qwen2.5-0.5b --precision bf16 2>&1 | sed "s/^{/{\"attention_backend\":\"$be\",/" |
      tee -a "$OUT/train_attn_ab.jsonl"
  done
fi
if [[ $what == kernels || $what == all ]]; then
  # Session 5's kernels: device top-k/top-p sampling vs the host path (same tokens), multi-tensor
  # AdamW vs per-tensor, and the fused log-prob head's peak memory vs T*V*4/8.
  for sd in 2.5 4; do
    timeout 60 env LD_LIBRARY_PATH=$LIBS "$D/bin/bench_sampling_gpu" --logit-sd $sd 2>&1 |
      tee -a "$OUT/kernels.jsonl"
  done
  timeout 90 env LD_LIBRARY_PATH=$LIBS "$D/bin/bench_optimizer_gpu" --shape qwen2.5-0.5b \
    --iters 10 2>&1 | tee -a "$OUT/kernels.jsonl"
  timeout 90 env LD_LIBRARY_PATH=$LIBS "$D/bin/bench_model_gpu" --shape qwen2.5-0.5b --seqs 4 \
    --len 4096 --head-only 1 --iters 3 2>&1 | tee -a "$OUT/kernels.jsonl"
fi
if [[ $what == rollout || $what == all ]]; then
  # ROLLOUT_PRECISION=bf16 (default): autocast GEMMs, bf16 weight copies, bf16 KV cache.
  for shape in qwen2.5-0.5b qwen2.5-1.5b; do
    timeout 125 env LD_LIBRARY_PATH=$LIBS "$D/bin/bench_rollout_gpu" --shape $shape --batch 256 \
      --prompt 128 --new 256 --iters 1 --budget-s 100 --precision "${ROLLOUT_PRECISION:-bf16}" \
      2>&1 | tee -a "$OUT/rollout_ours.jsonl"
  done
  [[ -x $D/bin/bench_paged_decode_gpu ]] &&
    timeout 60 env LD_LIBRARY_PATH=$LIBS "$D/bin/bench_paged_decode_gpu" 2>&1 | tee "$OUT/paged.jsonl"
  PYTHONUNBUFFERED=1 timeout 95 python3 bench/hf_anchor.py --generate qwen2.5-0.5b qwen2.5-1.5b \
    2>&1 | tee "$OUT/rollout_anchor.jsonl"
fi
if [[ $what == profile ]]; then
  # Session 7: per-kernel GPU time of one decode step (0.5B, graphs, batch 1 and 256) measured by
  # ncu in isolation, summarised by bench/ncu_step_summary.py (the step ends with the sampler's
  # pick kernel). Not part of `all`: ncu replays every kernel (~1-2 min).
  for bs in 1 256; do
    timeout 240 env LD_LIBRARY_PATH=$LIBS ncu --clock-control none --graph-profiling node \
      --metrics gpu__time_duration.sum --csv --print-units base -c 2500 \
      "$D/bin/bench_rollout_gpu" --shape qwen2.5-0.5b --batch $bs --prompt 128 --new 6 --iters 1 \
      --budget-s 60 --precision bf16 >"$OUT/ncu_b$bs.csv" 2>"$OUT/ncu_b$bs.err"
    python3 bench/ncu_step_summary.py "$OUT/ncu_b$bs.csv" 2>&1 | head -30 | tee "$OUT/ncu_b$bs.txt"
  done
fi
