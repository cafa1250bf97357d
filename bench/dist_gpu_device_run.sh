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
#   disaggtp  the same with a tensor-parallel trainer: `gyre serve --device cuda` on GPU 1, `gyre
#           train --device cuda --tensor-model-parallel-size 2` as 2 torchrun-style ranks (GPUs 0
#           and 1; the weight group is {trainer rank 0 on GPU 0, the engine on GPU 1}) with
#           --update-weight-transport nccl: rank 0 pushes the shards both ranks gather. Checks both
#           ranks exit 0, one "weight sync nccl" line per push (none through the disk), the
#           engine's weight version advancing every step and ending at the trainer's; prints the
#           reward curve and each push's time and bytes ("disaggtp_grpo_gpu" JSON line);
#           "DISAGGTP CHECK FAILED" lines on failure. Needs 2 GPUs
#   sync    bench_nccl_weight_sync (Qwen2.5-1.5B bf16 broadcast vs all-reduce bus bandwidth)
#   serve   `gyre serve --tp-size 2 --device cuda` as 2 torchrun-style processes (one per GPU) next
#           to a one-GPU `gyre serve --device cuda` of the same model (tests/fixtures qwen3_tiny),
#           --dtype float32 then the bf16 default: /get_server_info (tp_size 2, num_gpus 2, CUDA
#           graphs on: cuda_graph_max_bs > 0, no "capture failed" in the logs), greedy /generate on both (float32: the same tokens, log-probs within 1e-4;
#           bf16: agreement reported, log-probs within 1e-2 where the tokens agree),
#           /init_weights_update_group answered 400, /update_weights_from_disk of another random
#           folder on both (outputs change, still equal), a bad folder refused, SIGTERM to rank 0
#           ends both ranks with exit 0. One "serve_tp2_gpu" JSON line per dtype; "SERVE CHECK
#           FAILED" lines on failure
#   tprollout  bench_tp_rollout_gpu: TP=2 decode throughput (TP with CUDA graphs, then TP eager:
#           "tp_graphs", "tp_cuda_graphs", "graphs_vs_tp_eager") vs one GPU (with and without CUDA
#           graphs) at batch 1, 64, 256 (bf16, prompt 128, 128 new), Qwen2.5-1.5B and 7B shapes
#           (TPROLLOUT_SHAPES overrides). The 7B weights are drawn on the host (minutes): give it a
#           device call of its own, e.g. TPROLLOUT_SHAPES=qwen2.5-7b RANK_TIMEOUT=560
# Preparing the carried folder here (.devrun-dist is in .git/info/exclude; pass it to carry):
#   ninja -C build-lead gyre_cli bench_dp_train_gpu bench_nccl_weight_sync bench_tp_rollout_gpu \
#     gyre_gpu_dist_tests gyre_unit_dist_tests gyre_gpu_rl_tests
#   bash bench/pack_device_libs.sh .devrun-dist build-lead/bin/gyre build-lead/bin/bench_dp_train_gpu \
#     build-lead/bin/bench_nccl_weight_sync build-lead/bin/bench_tp_rollout_gpu \
#     build-lead/tests/gyre_gpu_dist_tests build-lead/tests/gyre_unit_dist_tests \
#     build-lead/tests/gyre_gpu_rl_tests
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
      timeout ${RANK_TIMEOUT:-420} "$@" >"$OUT/$tag.$r.log" 2>&1 &
    pids="$pids $!"
  done
  for p in $pids; do wait "$p" || rc=1; done
  echo "$tag exit $rc"
  return $rc
}

if has tests; then
  rm -f /tmp/gyre_dp_worker_*.log /tmp/gyre_tp_worker_*.log /tmp/gyre_tpserve_worker_*.log \
    /tmp/gyre_tppush_worker_*.log
  for t in gyre_gpu_dist_tests gyre_unit_dist_tests gyre_gpu_rl_tests; do
    filter=$([[ $t == gyre_gpu_rl_tests ]] && echo "--gtest_filter=NcclWeightPush.*" || echo "")
    timeout 420 "$D/bin/$t" $filter >"$OUT/$t.log" 2>&1
    echo "$t exit $?"
    grep -E "^\[  (FAILED|PASSED|SKIPPED) |Failure|Expected|Which is|error" "$OUT/$t.log" | head -30
  done
  for w in dp tp tpserve tppush; do
    for r in 0 1; do [[ -f /tmp/gyre_${w}_worker_$r.log ]] && cp /tmp/gyre_${w}_worker_$r.log "$OUT/"; done
  done
  grep -hE "Failure|Expected|Which is|FAILED|error" /tmp/gyre_dp_worker_*.log \
    /tmp/gyre_tp_worker_*.log /tmp/gyre_tpserve_worker_*.log /tmp/gyre_tppush_worker_*.log \
    2>/dev/null | head -30
  grep -h "^\[tp\]" /tmp/gyre_tp_worker_*.log 2>/dev/null
  grep -h "^\[tpserve\]" /tmp/gyre_tpserve_worker_*.log 2>/dev/null
  grep -h "^\[tppush\]" /tmp/gyre_tppush_worker_*.log 2>/dev/null
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
if has disaggtp; then
  if ((ngpu < 2)); then
    echo "DISAGGTP CHECK FAILED: needs 2 GPUs, $ngpu visible"
  else
    nroll=20
    CUDA_VISIBLE_DEVICES=1 "$GYRE_BIN" serve --model-path examples/quickstart/base_model \
      --device cuda --port 30113 --max-running-requests 256 >"$OUT/serve_disaggtp.log" 2>&1 &
    spid=$!
    for i in $(seq 1 120); do grep -q "listening" "$OUT/serve_disaggtp.log" && break; sleep 0.5; done
    t0=$SECONDS
    # Each rank binds its GPU from LOCAL_RANK (the server above is its own process on GPU 1).
    two_ranks disaggtp 29519 "$GYRE_BIN" train --config examples/quickstart/grpo.yaml \
      --device cuda --num-rollout $nroll --eval-interval 10 --save "$OUT/disaggtp" \
      --actor-num-gpus-per-node 2 --tensor-model-parallel-size 2 \
      --rollout-external-engine-addrs 127.0.0.1:30113 --update-weight-transport nccl
    rc=$?
    echo "disaggregated TP=2 train exit $rc after $((SECONDS - t0)) s"
    [[ $rc == 0 ]] || echo "DISAGGTP CHECK FAILED: a trainer rank exited non-zero (disaggtp.{0,1}.log)"
    engine_version=$(python3 -c "import json, urllib.request; print(json.load(urllib.request.urlopen(
      'http://127.0.0.1:30113/get_weight_version', timeout=30))['weight_version'])" 2>&1)
    kill $spid; wait $spid 2>/dev/null
    tail -n 3 "$OUT/disaggtp.0.log" "$OUT/disaggtp.1.log"
    tail -n 4 "$OUT/serve_disaggtp.log"
    python3 - "$OUT" $nroll "$engine_version" <<'EOF'
import json, re, sys
out, nroll, engine_version = sys.argv[1], int(sys.argv[2]), sys.argv[3].strip()
fails = []
def check(ok, what):
    if not ok:
        fails.append(what)
        print("DISAGGTP CHECK FAILED:", what)
log = open(f"{out}/disaggtp.0.log", errors="replace").read()
nccl = re.findall(r"weight sync nccl v(\d+): ([\d.]+) MB .*?, ([\d.]+) s", log)
check("through NCCL" in log, "rank 0 did not pick the NCCL transport")
check("could not be formed" not in log, "the NCCL group could not be formed (fell back to disk)")
check(re.search(r"weight sync disk v", log) is None, "a push went through the disk")
# One push before the first rollout, then one after each step.
check(len(nccl) == nroll + 1, f"{len(nccl)} 'weight sync nccl' lines, want {nroll + 1}")
try:
    all_rows = [json.loads(l) for l in open(f"{out}/disaggtp/metrics.jsonl")]
except Exception as e:
    all_rows = []
    check(False, f"metrics.jsonl: {e}")
rows = [r for r in all_rows if "rollout/weight_version" in r]  # the steps (not the eval before)
check(len(rows) == nroll, f"{len(rows)} step rows in metrics.jsonl, want {nroll}")
ver = [r["rollout/weight_version"] for r in rows]
check(bool(ver) and all(b > a for a, b in zip(ver, ver[1:])),
      f"the engine's weight version does not advance every step: {ver}")
check(bool(ver) and engine_version == str(int(ver[-1])),
      f"the engine ends at weight version {engine_version}, the trainer at {ver[-1] if ver else None}")
ev = [(i, r["eval/heldout"]) for i, r in enumerate(all_rows) if "eval/heldout" in r]
print(json.dumps({"bench": "disaggtp_grpo_gpu", "rollouts": len(rows), "eval_heldout": ev,
                  "raw_reward": [round(r.get("rollout/raw_reward", -1), 3) for r in rows],
                  "weight_version": ver, "engine_weight_version": engine_version,
                  "push_s": [round(r.get("perf/update_weights_time", -1), 4) for r in rows],
                  "push_wire_bytes": [int(r.get("perf/update_weights_wire_bytes", -1)) for r in rows],
                  "push_log": [(int(v), float(mb), float(s)) for v, mb, s in nccl],
                  "checks_failed": len(fails)}))
EOF
  fi
fi
if has sync; then
  timeout 120 "$D/bin/bench_nccl_weight_sync" 2>&1 | tee -a "$OUT/sync.jsonl" | tail -4
fi
if has serve; then
  M=tests/fixtures/models/qwen3_tiny
  rm -rf "$OUT/serve_w2"
  "$GYRE_BIN" init-model --config $M/config.json --output "$OUT/serve_w2" --seed 77 --std 0.05 \
    >"$OUT/serve_init.log" 2>&1 || echo "SERVE CHECK FAILED: gyre init-model (see serve_init.log)"
  for dtype in float32 auto; do
    tag=serve_tp2_$dtype
    # Fresh ports per round (the first round's sockets may linger in TIME_WAIT).
    off=$([[ $dtype == float32 ]] && echo 0 || echo 10)
    tp_port=$((30121 + off)) one_port=$((30122 + off)) rdv_port=$((29516 + off))
    # One server over both GPUs (rank r on GPU r: dist::bind_local_gpu from LOCAL_RANK) and the
    # one-GPU reference on GPU 0. `timeout` forwards the SIGTERM below to rank 0.
    rank_pids=()
    for r in 0 1; do
      RANK=$r LOCAL_RANK=$r WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$rdv_port \
        timeout 300 "$GYRE_BIN" serve --model-path $M --skip-tokenizer-init --tp-size 2 \
        --device cuda --dtype $dtype --port $tp_port --page-size 4 --num-pages 512 \
        --chunked-prefill-size 16 >"$OUT/$tag.$r.log" 2>&1 &
      rank_pids+=($!)
    done
    CUDA_VISIBLE_DEVICES=0 timeout 300 "$GYRE_BIN" serve --model-path $M --skip-tokenizer-init \
      --device cuda --dtype $dtype --port $one_port --page-size 4 --num-pages 512 \
      --chunked-prefill-size 16 >"$OUT/${tag}_one.log" 2>&1 &
    one_pid=$!
    for i in $(seq 1 240); do
      grep -q "listening" "$OUT/$tag.0.log" && grep -q "listening" "$OUT/${tag}_one.log" && break
      sleep 0.5
    done
    python3 - "$dtype" "$OUT/serve_w2" $tp_port $one_port <<'PYEOF'
import json, math, sys, urllib.request, urllib.error
dtype, w2 = sys.argv[1], sys.argv[2]
TP, ONE = (f"http://127.0.0.1:{p}" for p in sys.argv[3:5])
fails = []
def check(ok, what):
    if not ok:
        fails.append(what)
        print("SERVE CHECK FAILED:", what)
def call(url, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")
    except Exception as e:
        return 0, {"error": str(e)}
prompts = [[1, 17, 300, 42, 7], [260, 5, 9], list(range(400, 430)), [77], [5, 6, 7, 8, 9, 10]]
def generate(url):
    out = []
    for p in prompts:
        st, j = call(url, "/generate", {"input_ids": p, "return_logprob": True, "sampling_params":
                     {"temperature": 0, "max_new_tokens": 24, "ignore_eos": True}})
        check(st == 200 and "output_ids" in j, f"/generate on {url}: {st} {j}")
        lps = [x[0] for x in j.get("meta_info", {}).get("output_token_logprobs", [])]
        out.append((j.get("output_ids", []), lps))
    return out
def compare(a, b, what):
    # Log-probs compared up to the first differing token (later positions have other contexts).
    same, worst = 0, 0.0
    for (ta, la), (tb, lb) in zip(a, b):
        same += ta == tb
        n = 0
        while n < min(len(ta), len(tb)) and ta[n] == tb[n]:
            n += 1
        for x, y in zip(la[:n], lb[:n]):
            check(math.isfinite(x), f"{what}: log-prob {x}")
            worst = max(worst, abs(x - y))
    bound = 1e-4 if dtype == "float32" else 1e-2
    if dtype == "float32":
        check(same == len(a), f"{what}: {same} of {len(a)} requests with the same tokens")
    check(worst <= bound, f"{what}: log-probs max |diff| {worst} > {bound}")
    return same, worst
st, info = call(TP, "/get_server_info")
check(st == 200, f"/get_server_info {st} {info}")
for k, v in [("tp_size", 2), ("num_gpus", 2), ("device", "cuda"), ("disable_cuda_graph", False)]:
    check(info.get(k) == v, f"/get_server_info {k} = {info.get(k)}, want {v}")
check((info.get("cuda_graph_max_bs") or 0) > 0,
      f"/get_server_info cuda_graph_max_bs = {info.get('cuda_graph_max_bs')}: TP decodes with graphs")
st, one_info = call(ONE, "/get_server_info")
check(one_info.get("num_gpus") == 1, f"one-GPU server num_gpus = {one_info.get('num_gpus')}")
before = generate(TP)
same0, lp0 = compare(before, generate(ONE), "before reload")
st, j = call(TP, "/init_weights_update_group", {"master_address": "127.0.0.1", "master_port": 29999,
             "rank_offset": 1, "world_size": 2, "group_name": "g", "backend": "nccl"})
check(st == 400 and "tensor-parallel" in json.dumps(j), f"/init_weights_update_group: {st} {j}")
for url in (TP, ONE):
    st, j = call(url, "/update_weights_from_disk", {"model_path": w2, "weight_version": "v2"})
    check(st == 200 and j.get("success"), f"/update_weights_from_disk on {url}: {st} {j}")
after = generate(TP)
same1, lp1 = compare(after, generate(ONE), "after reload")
check(sum(a[0] != b[0] for a, b in zip(before, after)) > 0, "the reload changed no output")
st, j = call(TP, "/update_weights_from_disk", {"model_path": "/nonexistent/gyre_w"})
check(st == 400 and "every tp rank kept" in json.dumps(j), f"bad reload: {st} {j}")
keys = ("tp_size", "num_gpus", "dtype", "cuda_graph_max_bs", "disable_cuda_graph", "kv_cache_dtype")
print(json.dumps({"bench": "serve_tp2_gpu", "dtype": dtype, "requests": len(prompts),
                  "same_tokens_before_reload": same0, "logprob_max_diff_before": lp0,
                  "same_tokens_after_reload": same1, "logprob_max_diff_after": lp1,
                  "server_info": {k: info.get(k) for k in keys}, "checks_failed": len(fails)}))
PYEOF
    kill -TERM "${rank_pids[0]}"
    rc=0
    for p in "${rank_pids[@]}"; do wait "$p" || rc=1; done
    echo "$tag: ranks exit $rc after SIGTERM to rank 0 (0: both exited 0)"
    [[ $rc == 0 ]] || echo "SERVE CHECK FAILED: $tag ranks exit $rc"
    kill "$one_pid"; wait "$one_pid" 2>/dev/null
    grep -hE "CUDA graphs on|capture failed|weight-update groups|over NCCL|done after|error" \
      "$OUT/$tag.0.log" "$OUT/$tag.1.log" | head -10
    grep -q "capture failed" "$OUT/$tag.0.log" "$OUT/$tag.1.log" &&
      echo "SERVE CHECK FAILED: $tag: a CUDA graph capture failed under TP (decoded eagerly)"
  done
fi
if has tprollout; then
  for shape in ${TPROLLOUT_SHAPES:-qwen2.5-1.5b qwen2.5-7b}; do
    # Rank 1 waits in a broadcast while rank 0 draws and writes the weights (minutes at 7B).
    (export GYRE_COMM_TIMEOUT=900
     two_ranks "tprollout_$shape" 29517 "$D/bin/bench_tp_rollout_gpu" \
       --shape $shape --batches 1,64,256 --prompt 128 --new 128 --budget-s 45)
    grep '"bench"' "$OUT/tprollout_$shape.0.log" | tee -a "$OUT/tprollout.jsonl" | tail -4
    tail -3 "$OUT/tprollout_$shape.1.log"
  done
fi
