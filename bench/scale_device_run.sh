#!/bin/bash
# Issue 9: how gyre scales across one 8-GPU node (device kind nvidia-h200-x8), in parts that fit
# one device call each (a call may run several: `bash bench/scale_device_run.sh dp sync`).
#
#   dp       training weak scaling, Qwen2.5-1.5B shape, 4 x 4096 tokens per GPU, bf16:
#            bench_dp_train_gpu at DP = 2, 4, 8 (ZeRO-1, overlap on); each run also times every
#            GPU alone (DP = 1). tokens/s and efficiency T1 / T_N. ~5 min.
#   tp       TP = 8 on the qwen3-8b shape (Qwen2.5-7B's 28 query / 4 KV heads do not split 8
#            ways; Qwen3-8B's 32 / 8 do) and TP = 4 on qwen2.5-7b (TP = 2 on a 2-GPU machine: the
#            dry run), one global batch of 4 x 4096:
#            tokens/s, MFU, per-rank peak memory (--skip-single: one GPU cannot hold the training
#            state). ~5 min (each rank draws the full model on the host first).
#   sync     bench_nccl_weight_sync: GPU 0 (the trainer) broadcasts the bf16 weights to 1, 3 and 7
#            engines, Qwen2.5-1.5B and 7B shapes, against the all-reduce bus bandwidth of the same
#            GPUs. ~2 min.
#   rollout  1, 2, 4, 8 `gyre serve --device cuda` engines (Qwen2.5-1.5B shape, random weights,
#            one GPU each) behind `gyre router`, cache_aware then round_robin:
#            bench_rollout_scaling with ROLLOUT_PROMPTS (64) prompts x 8 samples per engine (weak
#            scaling: each engine gets the same load), 512 prompt + 256 output tokens. Output
#            tokens/s, efficiency tok/s(N) / (N x tok/s(1)), prefix-cache hit share. ~5 min.
#   disagg   disaggregated GRPO: `gyre train --device cuda` as DP = 4 on GPUs 0-3, 4 `gyre serve
#            --device cuda` engines on GPUs 4-7 named by --rollout-external-engine-addrs (the
#            trainer rotates requests over them and pushes its weights to all four over NCCL),
#            DISAGG_STEPS (8) steps of the quick-start GRPO config; the phase breakdown from
#            metrics.jsonl. ~2 min. (On fewer GPUs: half train, half roll out.)
# Every part runs on a smaller machine too, on what it has (a 2-GPU machine: DP = 2, TP = 2,
# sync to 1 engine, 1-2 engines, 1 + 1 disaggregated): the dry run the issue asks for before the
# 8-GPU kind is lent.
#
# CPU dry run (SCALE_CPU=1; any machine with a CPU build, mpirun for disagg): the rollout part
# with 1 and 2 CPU engines on tests/fixtures/models/qwen3_tiny and a small load, and the disagg
# part as 2 mpirun trainer ranks + 2 CPU engines (weights through the disk) — the plumbing and the
# checks, not the figures. dp, tp and sync need GPUs and print "skipped" there.
#
# Every part appends JSON lines to $OUT/scale.jsonl and prints a summary; a check that fails prints
# "SCALE CHECK FAILED: ..." and makes the exit status 1.
#
# Binaries: the device machine has no MPI and no build; pack them here with
#   ninja -C build gyre_cli bench_dp_train_gpu bench_nccl_weight_sync bench_rollout_scaling
#   bash bench/pack_device_libs.sh .devrun-scale build/bin/gyre build/bin/bench_dp_train_gpu \
#     build/bin/bench_nccl_weight_sync build/bin/bench_rollout_scaling
# (.devrun-scale must be in .git/info/exclude) and run with carry [".devrun-scale"]:
#   GYRE_DEVRUN=.devrun-scale bash bench/scale_device_run.sh dp sync
# On the CPU: SCALE_CPU=1 SCALE_BIN=build/bin OUT=/tmp/scale bash bench/scale_device_run.sh rollout disagg
# (tests/e2e/bench/scale_dry_run_test.cc runs this on every build). Other knobs: SCALE_WORK (model
# folders and run directories, default /tmp/gyre_scale), SCALE_PORT_BASE (HTTP ports from it, 200
# of them; default 31200), RANK_TIMEOUT (seconds a rank may run, default 540).
set -u
OUT=${OUT:-/tmp/gyre_out}
mkdir -p "$OUT"
parts=${*:-all}
has() { [[ " $parts " == *" $1 "* || " $parts " == *" all "* ]]; }
cpu() { [[ ${SCALE_CPU:-0} == 1 ]]; }
fails=0
check_failed() {
  echo "SCALE CHECK FAILED: $*" | tee -a "$OUT/summary.txt"
  fails=$((fails + 1))
}
note() { echo "$*" | tee -a "$OUT/summary.txt"; }

if cpu; then
  B=${SCALE_BIN:-build/bin}
  ngpu=0
else
  D=${GYRE_DEVRUN:-.devrun-scale}
  source bench/device_env.sh  # unpacks $D, sets LD_LIBRARY_PATH and GYRE_BIN
  B=$D/bin
  export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
  nvidia-smi --query-gpu=name,memory.total,power.limit --format=csv | tee -a "$OUT/summary.txt"
  ngpu=$(nvidia-smi -L | grep -c GPU)
fi
G=$B/gyre
W=${SCALE_WORK:-/tmp/gyre_scale}  # model folders and run directories
mkdir -p "$W"
P=${SCALE_PORT_BASE:-31200}  # HTTP ports P .. P + 199 (engines, routers, the disaggregated run)

# ranks TAG N PORT GPU_LIST CMD...: N ranks of CMD, rank r's output in $OUT/TAG.r.log (one
# $OUT/TAG.log under mpirun). GPUs: torchrun-style (each rank binds the LOCAL_RANK-th GPU of
# GPU_LIST: dist::bind_local_gpu); CPU: mpirun.
ranks() {
  local tag=$1 n=$2 port=$3 gpus=$4
  shift 4
  if cpu; then
    timeout "${RANK_TIMEOUT:-540}" mpirun --allow-run-as-root --bind-to none -np "$n" "$@" \
      >"$OUT/$tag.log" 2>&1
    return
  fi
  local pids=() rc=0 r
  for ((r = 0; r < n; r++)); do
    CUDA_VISIBLE_DEVICES=$gpus RANK=$r LOCAL_RANK=$r WORLD_SIZE=$n LOCAL_WORLD_SIZE=$n \
      MASTER_ADDR=127.0.0.1 MASTER_PORT=$port timeout "${RANK_TIMEOUT:-540}" "$@" \
      >"$OUT/$tag.$r.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return $rc
}
gpu_list() { seq -s, "$1" "$2"; }  # gpu_list 0 3 -> 0,1,2,3
need_gpus() {
  if ((ngpu < $1)); then
    note "{\"bench\": \"scale_$2\", \"skipped\": \"needs $1 GPUs, $ngpu visible\"}"
    return 1
  fi
}
# JSON lines of a log into scale.jsonl (and the terminal).
collect() { grep -h '^{' "$@" 2>/dev/null | tee -a "$OUT/scale.jsonl"; }
http_get() {
  python3 -c "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=60).read().decode())" "$1"
}
# wait_listening LOG SECONDS: until a server's log says it is listening (false on timeout or exit).
wait_listening() {
  local i
  for ((i = 0; i < $2 * 2; i++)); do
    grep -q "listening" "$1" 2>/dev/null && return 0
    sleep 0.5
  done
  return 1
}

# start_engines TAG N PORT0 GPU0 SECONDS SERVE_ARGS...: N `gyre serve` engines on ports PORT0..,
# engine e on GPU GPU0 + e (one thread each on the CPU), logs $OUT/TAG$e.log; waits until each
# listens (a check fails for one that does not within SECONDS). Sets epids and eports.
start_engines() {
  local tag=$1 n=$2 port0=$3 gpu0=$4 secs=$5 e
  shift 5
  epids=()
  eports=()
  for ((e = 0; e < n; e++)); do
    if cpu; then
      GYRE_NUM_THREADS=1 "$G" serve "$@" --port $((port0 + e)) >"$OUT/$tag$e.log" 2>&1 &
    else
      CUDA_VISIBLE_DEVICES=$((gpu0 + e)) "$G" serve "$@" --port $((port0 + e)) \
        >"$OUT/$tag$e.log" 2>&1 &
    fi
    epids+=($!)
    eports+=($((port0 + e)))
  done
  for ((e = 0; e < n; e++)); do
    wait_listening "$OUT/$tag$e.log" "$secs" || check_failed "$tag $e did not start ($OUT/$tag$e.log)"
  done
}
stop_engines() {
  local p
  for p in "${epids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${epids[@]}"; do wait "$p" 2>/dev/null; done
}

if has dp && need_gpus 2 dp; then
  for n in 2 4 8; do
    ((n <= ngpu)) || continue
    ranks "dp$n" $n $((29600 + n)) "$(gpu_list 0 $((n - 1)))" "$B/bench_dp_train_gpu" \
      --shape qwen2.5-1.5b --iters 3 --overlap on || check_failed "dp $n: a rank exited non-zero ($OUT/dp$n.*.log)"
    collect "$OUT/dp$n.0.log"
  done
fi

if has tp && need_gpus 2 tp; then
  if ((ngpu >= 8)); then
    ranks tp8 8 29620 "$(gpu_list 0 7)" "$B/bench_dp_train_gpu" --shape qwen3-8b --tp 8 \
      --skip-single 1 --iters 3 || check_failed "tp 8 qwen3-8b: a rank exited non-zero ($OUT/tp8.*.log)"
    collect "$OUT/tp8.0.log"
  fi
  # TP = 4 on qwen2.5-7b (TP = 2 where only 2 GPUs are lent: the dry run of the same path).
  n=$((ngpu >= 4 ? 4 : 2))
  ranks tp$n $n 29621 "$(gpu_list 0 $((n - 1)))" "$B/bench_dp_train_gpu" --shape qwen2.5-7b \
    --tp $n --skip-single 1 --iters 3 ||
    check_failed "tp $n qwen2.5-7b: a rank exited non-zero ($OUT/tp$n.*.log)"
  collect "$OUT/tp$n.0.log"
fi

if has sync && need_gpus 2 sync; then
  for shape in qwen2.5-1.5b qwen2.5-7b; do
    for n in 2 4 8; do
      ((n <= ngpu)) || continue
      CUDA_VISIBLE_DEVICES=$(gpu_list 0 $((n - 1))) timeout 240 "$B/bench_nccl_weight_sync" \
        --gpus $n --shape $shape >"$OUT/sync_${shape}_$n.log" 2>&1 ||
        check_failed "sync $shape to $((n - 1)) engines exited non-zero ($OUT/sync_${shape}_$n.log)"
      collect "$OUT/sync_${shape}_$n.log"
    done
  done
fi

# ---- rollout: N engines behind the router -------------------------------------------------------
if has rollout; then
  if cpu; then
    model=tests/fixtures/models/qwen3_tiny
    engines_max=2
    ppe=8  # prompts per engine
    load=(--samples 4 --prompt-len 64 --new 16 --vocab 512)
    serve_args=(--model-path "$model" --skip-tokenizer-init)
  else
    model=$W/qwen2.5-1.5b
    engines_max=$((ngpu < 8 ? ngpu : 8))
    ppe=${ROLLOUT_PROMPTS:-64}
    load=(--samples 8 --prompt-len 512 --new 256 --vocab 151000)
    serve_args=(--model-path "$model" --skip-tokenizer-init --device cuda
      --max-running-requests 256)
    if [[ ! -f $model/config.json ]]; then
      "$G" init-model --shape qwen2.5-1.5b --output "$model" --seed 1 --dtype bf16 \
        >"$OUT/init_model.log" 2>&1 || check_failed "init-model qwen2.5-1.5b ($OUT/init_model.log)"
    fi
  fi
  # The engines, one a GPU, all started once; each round's router takes the first N.
  start_engines engine "$engines_max" "$P" 0 300 "${serve_args[@]}"
  urls=()
  for port in "${eports[@]}"; do urls+=("http://127.0.0.1:$port"); done
  rport=$((P + 90))
  for policy in cache_aware round_robin; do
    for n in 1 2 4 8; do
      ((n <= engines_max)) || continue
      for ((e = 0; e < n; e++)); do http_get "${urls[$e]}/flush_cache" >/dev/null 2>&1; done
      rport=$((rport + 1))  # a fresh port a round (the last router's may linger in TIME_WAIT)
      "$G" router --port $rport --policy $policy --worker-urls "${urls[@]:0:n}" \
        >"$OUT/router_${policy}_$n.log" 2>&1 &
      rpid=$!
      if ! wait_listening "$OUT/router_${policy}_$n.log" 60; then
        check_failed "router ($policy, $n engines) did not start"
        kill $rpid 2>/dev/null
        continue
      fi
      sleep 1  # its first health check marks the workers up
      # Weak scaling: the same load per engine.
      timeout 900 "$B/bench_rollout_scaling" --url "http://127.0.0.1:$rport" \
        --label "${policy}_$n" --prompts $((ppe * n)) "${load[@]}" \
        >"$OUT/rollout_${policy}_$n.log" 2>&1 ||
        check_failed "bench_rollout_scaling $policy $n engines ($OUT/rollout_${policy}_$n.log)"
      collect "$OUT/rollout_${policy}_$n.log"
      kill $rpid 2>/dev/null
      wait $rpid 2>/dev/null
    done
  done
  stop_engines
  summary=$(python3 - "$OUT/scale.jsonl" <<'EOF'

import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"rollout_scaling"' in l]
for policy in ["cache_aware", "round_robin"]:
    rs = {int(r["label"].rsplit("_", 1)[1]): r for r in rows if r["label"].startswith(policy)}
    if 1 not in rs:
        continue
    base = rs[1]["output_tokens_per_s"]
    for n in sorted(rs):
        r = rs[n]
        print(json.dumps({"bench": "scale_rollout", "policy": policy, "engines": n,
                          "output_tokens_per_s": r["output_tokens_per_s"],
                          "efficiency": round(r["output_tokens_per_s"] / (n * base), 3),
                          "prefix_cache_hit": r["prefix_cache_hit"],
                          "prefix_cache_hit_max": r["prefix_cache_hit_max"],
                          "failed": r["failed"]}))
EOF
  )
  echo "$summary" | tee -a "$OUT/summary.txt" >>"$OUT/scale.jsonl"
  echo "$summary"
fi

# ---- disagg: 4 GPUs train, 4 roll out ------------------------------------------------------------
if has disagg; then
  steps=${DISAGG_STEPS:-8}
  if cpu; then
    nt=2 ne=2
    serve_extra=()
  else
    # 4 + 4 on the 8-GPU node; half and half on fewer (the 2-GPU dry run: 1 + 1).
    nt=$((ngpu >= 8 ? 4 : ngpu / 2)) ne=$nt
    serve_extra=(--device cuda --max-running-requests 256)
  fi
  if ! cpu && ((nt < 1)); then
    note "{\"bench\": \"scale_disagg\", \"skipped\": \"needs 2 GPUs, $ngpu visible\"}"
  else
    start_engines disagg_engine "$ne" $((P + 100)) "$nt" 120 \
      --model-path examples/quickstart/base_model "${serve_extra[@]}"
    addrs=()
    for port in "${eports[@]}"; do addrs+=("127.0.0.1:$port"); done
    rm -rf "$W/disagg"
    train=(train --config examples/quickstart/grpo.yaml --num-rollout "$steps" --eval-interval 0
      --save "$W/disagg" --actor-num-gpus-per-node $nt --rollout-external-engine-addrs "${addrs[@]}")
    cpu || train+=(--device cuda --update-weight-transport nccl)
    t0=$SECONDS
    ranks disagg $nt 29630 "$(gpu_list 0 $((nt - 1)))" "$G" "${train[@]}" ||
      check_failed "disaggregated train: a rank exited non-zero ($OUT/disagg*.log)"
    note "disaggregated GRPO ($nt train ranks, $ne engines, $steps steps): $((SECONDS - t0)) s"
    versions=""
    for a in "${addrs[@]}"; do
      versions+="$(http_get "http://$a/get_weight_version" 2>/dev/null | tr -d ' \n') "
    done
    stop_engines
    log=$OUT/disagg.0.log
    cpu && log=$OUT/disagg.log
    report=$(python3 - "$W/disagg/metrics.jsonl" "$log" "$steps" "$nt" "$ne" "$versions" <<'EOF'

import json, re, sys
path, log, steps, nt, ne, versions = sys.argv[1:7]
steps, nt, ne = int(steps), int(nt), int(ne)
fails = []
def check(ok, what):
    if not ok:
        fails.append(what)
        print("SCALE CHECK FAILED: disagg:", what)
try:
    rows = [json.loads(l) for l in open(path)]
except Exception as e:
    rows = []
    check(False, f"{path}: {e}")
rows = [r for r in rows if "rollout/weight_version" in r]
check(len(rows) == steps, f"{len(rows)} step rows in metrics.jsonl, want {steps}")
ver = [r["rollout/weight_version"] for r in rows]
check(all(b > a for a, b in zip(ver, ver[1:])), f"weight version does not advance every step: {ver}")
engine_versions = [json.loads(v).get("weight_version") for v in versions.split()] if versions.strip() else []
check(len(engine_versions) == ne, f"{len(engine_versions)} of {ne} engines answered /get_weight_version")
check(bool(ver) and all(str(v) == str(int(ver[-1])) for v in engine_versions),
      f"engines end at weight versions {engine_versions}, the trainer at {ver[-1] if ver else None}")
text = open(log, errors="replace").read()
transport = "nccl" if "weight sync nccl" in text else "disk" if "weight sync disk" in text else "?"
keys = sorted({k for r in rows for k in r if k.startswith("perf/")})
steady = rows[1:] if len(rows) > 1 else rows  # the first step pays the warm-ups
phase = {k: round(sum(r.get(k, 0) for r in steady) / max(len(steady), 1), 4) for k in keys}
print(json.dumps({"bench": "scale_disagg", "train_ranks": nt, "engines": ne, "steps": len(rows),
                  "weight_transport": transport, "weight_version": ver,
                  "engine_weight_versions": engine_versions,
                  "raw_reward": [round(r.get("rollout/raw_reward", -1), 3) for r in rows],
                  "phase_mean_s_after_step_0": phase, "checks_failed": len(fails)}))
EOF
    )
    echo "$report" | tee -a "$OUT/summary.txt"
    echo "$report" | grep '^{' >>"$OUT/scale.jsonl"
    fails=$((fails + $(echo "$report" | grep -c "SCALE CHECK FAILED")))
  fi
fi

note "scale parts [$parts]: $fails failed check(s)"
((fails == 0))
