#!/bin/bash
# One device-machine call (nvidia-h200-x2) for issue 8's two-GPU figures and tests. No MPI on the
# device image: every multi-process run is launched torchrun-style (RANK / WORLD_SIZE /
# LOCAL_RANK / MASTER_ADDR / MASTER_PORT), one process per GPU.
#   tests   gyre_gpu_dist_tests (NcclComm, DP over NCCL vs one GPU, TP=2 over NCCL vs one GPU),
#           gyre_unit_dist_tests and gyre_gpu_rl_tests' NcclWeightPush (SGLang's NCCL weight update,
#           server on GPU 1); the DP/TP workers' logs (/tmp/gyre_{dp,tp}_worker_<rank>.log) are
#           copied to $OUT, the TP workers' measured differences ("[tp]" lines) printed
#   dp      bench_dp_train_gpu: DP=2 weak-scaling efficiency, Qwen2.5-0.5B and 1.5B shapes
#   tp      bench_dp_train_gpu --tp 2: TP=2 strong-scaling efficiency (the same global batch on one
#           GPU vs sharded over both) and per-rank peak memory, Qwen2.5-0.5B and 1.5B shapes
#   train   `gyre train --device cuda` on the quick-start: 1 GPU vs DP=2 (first-step grad norm)
#   disagg  disaggregated GRPO: `gyre serve --device cuda` on GPU 1, `gyre train --device cuda`
#           on GPU 0 with --rollout-external-engine-addrs (weights pushed each step)
#   sync    bench_nccl_weight_sync (Qwen2.5-1.5B bf16 broadcast vs all-reduce bus bandwidth)
# Preparing the carried folder here (.devrun-dist is in .git/info/exclude; pass it to carry):
#   ninja -C build-lead gyre_cli bench_dp_train_gpu bench_nccl_weight_sync gyre_gpu_dist_tests \
#     gyre_unit_dist_tests gyre_gpu_rl_tests
#   bash bench/pack_device_libs.sh .devrun-dist build-lead/bin/gyre build-lead/bin/bench_dp_train_gpu \
#     build-lead/bin/bench_nccl_weight_sync build-lead/tests/gyre_gpu_dist_tests \
#     build-lead/tests/gyre_unit_dist_tests build-lead/tests/gyre_gpu_rl_tests
# Usage on the device: GYRE_DEVRUN=.devrun-dist bash bench/dist_gpu_device_run.sh [modes...|all]
set -u
OUT=${OUT:-/tmp/gyre_out}
D=${GYRE_DEVRUN:-.devrun-dist}
mkdir -p "$OUT"
modes=${*:-all}
has() { [[ " $modes " == *" $1 "* || " $modes " == *" all "* ]]; }
[[ -d $D/lib ]] || tar xJf "$D/lib.tar.xz" -C "$D"
[[ -d $D/bin ]] || tar xJf "$D/bin.tar.xz" -C "$D"
export GYRE_BIN=$PWD/$D/bin/gyre
pydir() { python3 -c "import $1, os; print(os.path.join(list($1.__path__)[0], 'lib'))" 2>/dev/null; }
export LD_LIBRARY_PATH=$PWD/$D/lib:/usr/local/cuda/lib64:$(pydir nvidia.cublas):$(pydir nvidia.cudnn):$(pydir nvidia.nccl):${LD_LIBRARY_PATH:-}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
ngpu=$(nvidia-smi -L | grep -c GPU)
# With one GPU the disaggregated run shares it between the two processes (the code path, not the
# two-GPU figure).
serve_gpu=$((ngpu > 1 ? 1 : 0))

# Runs "$@" on 2 ranks, torchrun-style; rank r's output in $OUT/$tag.r.log; returns non-zero if any
# rank failed.
two_ranks() {
  local tag=$1 port=$2
  shift 2
  local pids="" rc=0
  for r in 0 1; do
    RANK=$r LOCAL_RANK=$r WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
      timeout 420 "$@" >"$OUT/$tag.$r.log" 2>&1 &
    pids="$pids $!"
  done
  for p in $pids; do wait "$p" || rc=1; done
  echo "$tag exit $rc"
  return $rc
}

if has tests; then
  rm -f /tmp/gyre_dp_worker_*.log /tmp/gyre_tp_worker_*.log
  for t in gyre_gpu_dist_tests gyre_unit_dist_tests gyre_gpu_rl_tests; do
    filter=$([[ $t == gyre_gpu_rl_tests ]] && echo "--gtest_filter=NcclWeightPush.*" || echo "")
    timeout 420 "$D/bin/$t" $filter >"$OUT/$t.log" 2>&1
    echo "$t exit $?"
    grep -E "^\[  (FAILED|PASSED|SKIPPED) |Failure|Expected|Which is|error" "$OUT/$t.log" | head -30
  done
  for w in dp tp; do
    for r in 0 1; do [[ -f /tmp/gyre_${w}_worker_$r.log ]] && cp /tmp/gyre_${w}_worker_$r.log "$OUT/"; done
  done
  grep -hE "Failure|Expected|Which is|FAILED|error" /tmp/gyre_dp_worker_*.log \
    /tmp/gyre_tp_worker_*.log 2>/dev/null | head -30
  grep -h "^\[tp\]" /tmp/gyre_tp_worker_*.log 2>/dev/null
fi
if has dp; then
  for shape in qwen2.5-0.5b qwen2.5-1.5b; do
    two_ranks "dp_$shape" 29511 "$D/bin/bench_dp_train_gpu" --shape $shape --iters 3
    cat "$OUT/dp_$shape.0.log" | tee -a "$OUT/dp.jsonl" | tail -3
    tail -3 "$OUT/dp_$shape.1.log"
  done
fi
if has tp; then
  for shape in qwen2.5-0.5b qwen2.5-1.5b; do
    two_ranks "tp_$shape" 29513 "$D/bin/bench_dp_train_gpu" --shape $shape --tp 2 --iters 3
    cat "$OUT/tp_$shape.0.log" | tee -a "$OUT/tp.jsonl" | tail -3
    tail -3 "$OUT/tp_$shape.1.log"
  done
fi
if has train; then
  cfg="train --config examples/quickstart/grpo.yaml --device cuda --eval-interval 0 --num-rollout 3"
  timeout 300 "$GYRE_BIN" $cfg --save "$OUT/train1" >"$OUT/train1.log" 2>&1
  echo "gyre train 1 GPU exit $?"
  two_ranks train2 29512 "$GYRE_BIN" $cfg --save "$OUT/train2" --actor-num-gpus-per-node 2
  tail -5 "$OUT/train2.0.log" "$OUT/train2.1.log"
  # TP = 2: the policy sharded over the two GPUs, the colocated engine sharded the same way.
  two_ranks train_tp2 29514 "$GYRE_BIN" $cfg --save "$OUT/train_tp2" --actor-num-gpus-per-node 2 \
    --tensor-model-parallel-size 2
  tail -5 "$OUT/train_tp2.0.log" "$OUT/train_tp2.1.log"
  python3 - "$OUT" <<'EOF'
import json, sys
o = sys.argv[1]
def rows(d):
    try: return [json.loads(l) for l in open(f"{o}/{d}/metrics.jsonl")]
    except Exception as e: return str(e)
a = rows("train1")
for tag, d in [("dp2", "train2"), ("tp2", "train_tp2")]:
    b = rows(d)
    print(tag, "metrics rows", len(a) if isinstance(a, list) else a,
          len(b) if isinstance(b, list) else b)
    if isinstance(a, list) and isinstance(b, list) and a and b:
        for k in ["rollout/raw_reward", "train/loss", "train/grad_norm", "perf/train_time",
                  "perf/update_weights_time"]:
            print(k, [r.get(k) for r in a], [r.get(k) for r in b])
        g1, g2 = a[0]["train/grad_norm"], b[0]["train/grad_norm"]
        print(json.dumps({"bench": f"gyre_train_{tag}_gpu_first_step", "grad_norm_1gpu": g1,
                          f"grad_norm_{tag}": g2, "rel_diff": abs(g1 - g2) / abs(g1)}))
EOF
fi
if has disagg; then
  CUDA_VISIBLE_DEVICES=$serve_gpu "$GYRE_BIN" serve --model-path examples/quickstart/base_model --device cuda \
    --port 30111 --max-running-requests 256 >"$OUT/serve.log" 2>&1 &
  spid=$!
  for i in $(seq 1 120); do grep -q "listening" "$OUT/serve.log" && break; sleep 0.5; done
  t0=$SECONDS
  CUDA_VISIBLE_DEVICES=0 timeout 400 "$GYRE_BIN" train --config examples/quickstart/grpo.yaml \
    --device cuda --num-rollout 20 --eval-interval 10 --save "$OUT/disagg" \
    --rollout-external-engine-addrs 127.0.0.1:30111 >"$OUT/disagg.log" 2>&1
  echo "disaggregated train exit $? after $((SECONDS - t0)) s (last log lines below: it must exit"
  echo "  right after its last step, session 8's hang)"
  tail -3 "$OUT/disagg.log"
  kill $spid; wait $spid 2>/dev/null
  tail -4 "$OUT/serve.log"
  python3 - "$OUT" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/disagg/metrics.jsonl")]
ev = [(i, r["eval/heldout"]) for i, r in enumerate(rows) if "eval/heldout" in r]
rw = [round(r.get("rollout/raw_reward", -1), 3) for r in rows]
sync = [round(r.get("perf/update_weights_time", -1), 4) for r in rows]
print(json.dumps({"bench": "disaggregated_grpo_gpu", "rollouts": len(rows), "eval_heldout": ev,
                  "raw_reward": rw, "update_weights_s": sync}))
EOF
  tail -3 "$OUT/disagg.log"
fi
if has sync; then
  timeout 120 "$D/bin/bench_nccl_weight_sync" 2>&1 | tee -a "$OUT/sync.jsonl" | tail -4
fi
