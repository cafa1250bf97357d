# Sourced by a device-machine script (bash, after `set -u`): the shared frame of the
# notes/wip/*_device_run.sh scripts. Sources bench/device_env.sh (unpack, LD_LIBRARY_PATH,
# SRC_LINK, GYRE_BIN), then sets OUT (what the device tool returns: keep to summary.txt and one
# tarball), R (the results folder to pack), S (the summary), T0 and LIMIT (start no part past
# LIMIT seconds; the call's limit is 600) and defines:
#   note MSG              a line with the elapsed seconds, into the summary
#   left [SECONDS]        whether SECONDS (default 30) are left before LIMIT
#   gt NAME BIN FILTER [VAR=VALUE...]   one gtest run of $D/bin/BIN, its verdict lines in the summary
#   b1_run LABEL SHAPE [VAR=VALUE...]   one bench_rollout_gpu batch-1 run (bf16, decode fusion on,
#                         --b1-only: no batch run, no weight-sync figures;
#                         up to 75 s: a run takes 6-11 s since session 36, 37-55 s before the parallel
#                         random_init); its decode_b1 line goes to
#                         $R/b1.jsonl and "LABEL exit RC shape ms median ratio" to the summary
#   bt_run LABEL SHAPE BATCH [VAR=VALUE...]  one bench_rollout_gpu batch run (batch x (128 + 256),
#                         --skip-b1; ~8-14 s at batch 2-8): its rollout_gpu line goes to $R/bt.jsonl
#                         and "LABEL SHAPE batch B: exit RC output_tokens_per_s" to the summary
#   b1_trace NAME SHAPE [VAR=VALUE...]  one batch-1 run under the CUPTI tracer
#                         ($D/bin/libgyre_cupti_trace.so): trace_NAME.csv.gz and the
#                         cupti_timeline.py --critical report trace_NAME.txt in $R, its critical
#                         path in the summary
set -u
OUT=${OUT:-/tmp/gyre_out}
D=${GYRE_DEVRUN:-.devrun}
R=${R:-/tmp/gyre_results}
mkdir -p "$OUT" "$R"
source bench/device_env.sh
S=$OUT/summary.txt
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,power.limit --format=csv | tee -a "$S"
T0=$SECONDS
LIMIT=${LIMIT:-540}
note() { echo "$1 ($((SECONDS - T0)) s)" | tee -a "$S"; }
left() { (( SECONDS - T0 < LIMIT - ${1:-30} )); }
gt() {
  local name=$1 bin=$2 filter=$3
  shift 3
  left 60 || return
  env "$@" timeout 200 "$D/bin/$bin" --gtest_filter="$filter" >"$R/$name.log" 2>&1
  note "$name: exit $?"
  grep -E "^\[  (FAILED|PASSED) |Failure|Expected|Which is|error" "$R/$name.log" | head -24 | tee -a "$S"
}
b1_run() {
  local label=$1 shape=$2
  shift 2
  local log=$R/b1_${shape}_$SECONDS.log t=$SECONDS
  env "$@" timeout 75 "$D/bin/bench_rollout_gpu" --shape "$shape" --precision bf16 \
    --batch 1 --iters 1 --new 128 --decode-fusion on --budget-s 20 --b1-only 1 >"$log" 2>&1
  local rc=$? line
  line=$(grep decode_b1 "$log")
  if [[ -z $line ]]; then
    note "$label $shape: exit $rc, no decode_b1 line ($(tail -c 300 "$log" | tr '\n' ' '))"
    return
  fi
  echo "$label $line" >>"$R/b1.jsonl"
  echo "$line" | python3 -c 'import sys, json
j = json.loads(sys.stdin.read())
print(j["shape"], j["ms_per_token"], j["ms_per_token_median_streamed"], j["ratio_bound_bf16"])' |
    sed "s/^/$label exit $rc $((SECONDS - t)) s /" | tee -a "$S"
}
bt_run() {
  local label=$1 shape=$2 b=$3
  shift 3
  left 40 || return
  local log=$R/bt_${label}_${shape}_${b}_$SECONDS.log
  env "$@" timeout 60 "$D/bin/bench_rollout_gpu" --shape "$shape" --precision bf16 --batch "$b" \
    --prompt 128 --new 256 --iters 1 --decode-fusion on --skip-b1 1 --budget-s 40 >"$log" 2>&1
  local rc=$? line
  line=$(grep -m1 '"rollout_gpu"' "$log")
  echo "$label $line" >>"$R/bt.jsonl"
  note "$label $shape batch $b: exit $rc $(echo "$line" | grep -o '"output_tokens_per_s": [0-9.]*')"
}
b1_trace() {
  local name=$1 shape=$2
  shift 2
  env "$@" GYRE_CUPTI_TRACE="$R/trace_$name.csv" LD_PRELOAD="$PWD/$D/bin/libgyre_cupti_trace.so" \
    timeout 75 "$D/bin/bench_rollout_gpu" --shape "$shape" --precision bf16 --batch 1 --new 128 \
    --iters 1 --decode-fusion on --budget-s 12 --b1-only 1 2>>"$R/trace.err" |
    grep decode_b1 >>"$R/trace_b1.jsonl"
  python3 bench/cupti_timeline.py "$R/trace_$name.csv" --marker pick_kernel --burst-ms 0.2 \
    --steps 300 --critical --top 14 --gap-us 3 >"$R/trace_$name.txt" 2>&1
  note "trace $name ($shape $*)"
  sed -n '/^critical/,$p' "$R/trace_$name.txt" | head -24 >>"$S"
  gzip -f "$R/trace_$name.csv"
}
