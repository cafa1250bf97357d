#!/bin/bash
# Session 36, call 2: the fused decode attention's one-tile writer CTA copying its tile before
# pdl_wait without the new key's row (which it stores into shared memory itself), against the
# landed binary in the same call. Two packs (bench/pack_device_libs.sh): GYRE_DEVRUN (the new
# binaries: the four of session35_pipe_device_run.sh) and BASE (bench_rollout_gpu of the landed
# tree; its libraries are the same).
#   tests  paged-attention / decode-stack backend tests and the infer decode tests (new binary)
#   ab     bench_rollout_gpu batch 1 (--b1-only), base / new alternating: 1.5B x AB_N15, 0.5B x AB_N05
#   race   compute-sanitizer racecheck: the landed S = 4 residual GEMVs, and the new attention
#   trace  CUPTI critical path of the 1.5B step, new binary
#   tests2 / ab2  call 3: V2 (a third pack: the same with both stages' tiles copied before the
#          wait, kEarly = 2) tested, then b1 of NEW / V2 at GYRE_PAGED_MIN_CHUNK 64 / 128 (V2 also
#          256), and batch 16 (128 + 128) NEW mc 64 / V2 mc 64 / V2 mc 128 (AB2_ROUNDS,
#          AB2_CONFIGS, B16_CONFIGS change the lists; call 6 ran V2 = the RoPE rows' L2 prefetch)
# Usage on the device: GYRE_DEVRUN=DIR BASE=DIR2 SRC_LINK=/path/of/the/build/source bash THIS [parts]
source bench/device_run_lib.sh  # OUT, R, S, note, left, gt, b1_run (and device_env.sh)
BASE=${BASE:-.devbase}
[[ -d $BASE/bin ]] || tar xJf "$BASE/bin.tar.xz" -C "$BASE"
NEW=$D
V2=${V2:-.devrun2}
[[ -d $V2/bin || ! -f $V2/bin.tar.xz ]] || tar xJf "$V2/bin.tar.xz" -C "$V2"
what=" ${*:-tests ab race trace} "
if [[ $what == *" tests "* ]]; then
  gt backend_attn gyre_gpu_backend_tests '*Paged*:*RopeAttention*:DecodeStackCuda*:CudaGraph*:PdlChainCuda*'
  gt infer_attn gyre_gpu_infer_tests 'DecodeFusion*:DecodeGraph*:EngineBf16*:DecodeLookAhead*:*Paged*'
fi
if [[ $what == *" ab "* ]]; then
  for i in $(seq ${AB_N15:-3}); do
    left 60 && D=$BASE b1_run base qwen2.5-1.5b
    left 60 && D=$NEW b1_run new qwen2.5-1.5b
  done
  for i in $(seq ${AB_N05:-2}); do
    left 50 && D=$BASE b1_run base qwen2.5-0.5b
    left 50 && D=$NEW b1_run new qwen2.5-0.5b
  done
  note "ab done"
fi
if [[ $what == *" tests2 "* ]]; then
  D=$V2 gt backend_v2 gyre_gpu_backend_tests '*Paged*:*RopeAttention*:DecodeStackCuda*:CudaGraph*:PdlChainCuda*'
  D=$V2 gt infer_v2 gyre_gpu_infer_tests 'DecodeFusion*:DecodeGraph*:EngineBf16*:DecodeLookAhead*:*Paged*'
fi
if [[ $what == *" ab2 "* ]]; then
  for i in $(seq ${AB2_ROUNDS:-2}); do
    for shape in qwen2.5-1.5b qwen2.5-0.5b; do
      for c in ${AB2_CONFIGS:-NEW:64 V2:64 NEW:128 V2:128 V2:256}; do
        b=${c%%:*}
        left 40 && D=${!b} b1_run "${b}_mc${c##*:}" $shape GYRE_PAGED_MIN_CHUNK=${c##*:}
      done
    done
  done
  for c in ${B16_CONFIGS-NEW:64 V2:64 V2:128}; do
    left 60 || break
    b=${c%%:*}
    GYRE_PAGED_MIN_CHUNK=${c##*:} timeout 45 "${!b}/bin/bench_rollout_gpu" --shape qwen2.5-1.5b \
      --precision bf16 --batch 16 --prompt 128 --new 128 --iters 2 --skip-b1 1 --budget-s 40 \
      2>/dev/null | grep '"rollout_gpu"' | sed "s/^/${b}_mc${c##*:} /" | tee -a "$R/b16.jsonl" |
      grep -oE '"output_tokens_per_s": [0-9.]+' | sed "s/^/b16 ${b}_mc${c##*:} /" | tee -a "$S"
  done
  note "ab2 done"
fi
if [[ $what == *" race "* ]]; then
  for f in 'FusedLinearCuda.AddResidualIsOneKernel*' 'RopePagedAttentionCuda.*'; do
    left 90 || break
    timeout 120 compute-sanitizer --tool racecheck --error-exitcode 9 \
      "$D/bin/gyre_gpu_backend_tests" --gtest_filter="$f" >"$R/race_${f%%.*}.log" 2>&1
    note "racecheck $f: exit $?"
    grep -E "ERROR SUMMARY|^\[  (FAILED|PASSED) |Race reported" "$R/race_${f%%.*}.log" | sort |
      uniq -c | head -6 | tee -a "$S"
  done
fi
if [[ $what == *" trace "* ]] && left 60; then
  b1_trace 15b qwen2.5-1.5b
fi
tar czf "$OUT/results.tar.gz" -C "$R" .
note "packed"
