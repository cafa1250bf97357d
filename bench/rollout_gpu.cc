// Rollout engine throughput on the GPU (issue 7's rollout figures): a Qwen2.5-0.5B- or 1.5B-shaped
// model with random weights on the CUDA backend, driven by infer::Engine (paged KV cache on the
// GPU, continuous batching, chunked prefill, CPU sampler):
//   - batch-1 decode: one request, prompt 128, 128 new tokens -> ms per output token (decode steps
//     only, and end to end incl. the prefill step), against the memory-bandwidth bound
//     (weight bytes + KV bytes at the average context) / 3.3 TB/s per step: weight bytes = params x
//     4 (f32 weights) and, the goal's bound (within 1.5x), params x 2 (bf16); KV bytes = 2 x
//     layers x kv_heads x head_dim x (2 for the bf16 cache of --precision bf16, else 4) x average
//     context; measured with the fused decode linears off and on (--decode-fusion ab, the
//     default; on|off: one of them), one line each plus an A/B line;
//   - batch throughput: `--batch` requests (random prompt ids, temperature 1.0, fixed seeds,
//     ignore_eos, max_new_tokens = --new) -> output tokens/s. Anchor (issue 7, same H200,
//     transformers generate, bf16, sdpa, batch 256 x prompt 128 x 256 new): 0.5B 14.1k tokens/s,
//     1.5B 7.8k (bench/hf_anchor.py --generate re-measures them in the same device call).
//   - colocated weight sync (issue 8, goal < 1 ms at any model size): Engine::update_weights
//     after the batch run (graphs of every bucket captured), timed until the device finished it;
//     three lines: "refresh" (the bf16 weight copies re-cast in place, one launch; the graphs
//     survive), "adamw_bf16_copies" (gyre train's colocated path: the AdamW step writes the
//     copies, the sync is a version bump) and "dp_unflatten_bf16_copies" (the same under data
//     parallelism: a ZeRO-1 dist::DataParallelOptimizer over a one-rank NCCL communicator,
//     whose final unflatten writes the copies; with the step's time with and without them and
//     the unflatten alone both ways, i.e. what the cast work costs once moved into the step),
//     each with the graphs before/after, the refresh alone, and the first prefill / decode step
//     after the sync against a steady one (what a sync still defers to the next rollout). The
//     copies exist under --precision bf16 only (autocast).
// --budget-s bounds the process's wall time (model init included): the batch-1 run gets a sixth of
// it, the batch run what is left; a run that reaches its share stops and its figure is what was
// measured so far ("complete": false), so a slow engine still reports (print order: batch 1 first).
// One JSON line per figure, printed as soon as it is measured.
// Usage: bench_rollout_gpu [--shape qwen2.5-0.5b|qwen2.5-1.5b] [--batch 256] [--prompt 128]
//          [--new 256] [--iters 1] [--precision f32|bf16] [--chunk 8192] [--budget-s 90]
//          [--layers N (default: the shape's)] [--device cuda|cpu (cpu: smoke test only)]
//          [--decode-fusion ab|on|off] [--cuda-graph-max-bs N (0: no graphs)]
//          [--look-ahead 0|1] [--stop-ids K (the batch run's rows also stop on ids 0..K-1)]
//          [--skip-b1 1] (no batch-1 runs: e.g. an ncu profile of the batch run's steps)
//          [--b1-only 1] (stop after the batch-1 lines: A/B runs of the decode kernels, where the
//          batch run and the weight-sync figures would only cost device time)
// The workload itself (requests, engine sizing, inline driving) is gyre::bench's
// (bench/workloads.h), shared with `gyre bench rollout`.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gyre/backend/multi_tensor_ops.h"
#include "gyre/backend/ops.h"
#include "gyre/bench/workloads.h"
#include "gyre/core/error.h"
#include "gyre/dist/data_parallel.h"
#include "gyre/dist/nccl_comm.h"
#include "gyre/infer/engine.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/decode_fusion.h"
#include "gyre/model/named_shapes.h"
#include "gyre/train/optimizer.h"
#ifdef GYRE_HAVE_CUDA
#include "gyre/backend/cuda/runtime.h"
#endif

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Waits for this thread's CUDA stream: a figure that includes device work stops its clock here.
void device_sync(bool cuda) {
#ifdef GYRE_HAVE_CUDA
  if (cuda) gyre::cuda::sync();
#else
  (void)cuda;
#endif
}

// Per output token of requests streamed one token a chunk: [0] from the submit to the first
// token (the prefill), [1] to the second (the first decode step), then the steady decode steps.
// Timed by the chunks, not by Engine::step(): with the decode look-ahead one step() call runs a
// burst of decode steps, so a short generation took one or two calls ("short generation in sync
// bench" in session 32's first device call). Without the look-ahead it is the steps' wall time.
std::vector<double> step_times(gyre::infer::Engine& engine,
                               std::vector<gyre::infer::GenerateRequest> reqs) {
  auto error = std::make_shared<std::string>();
  auto times = std::make_shared<std::vector<double>>();
  const double t0 = now_s();
  for (auto& r : reqs) {
    r.stream = true;
    gyre::infer::RequestCallbacks cb;
    // The first request's tokens only: every request's row is in the same steps.
    if (&r == &reqs.front())
      cb.on_chunk = [times](const gyre::infer::TokenChunk& c) {
        for (size_t i = 0; i < c.output_ids.size(); ++i) times->push_back(now_s());
      };
    cb.on_done = [error](gyre::infer::GenerateResult&& res) {
      if (!res.error.empty() && error->empty()) *error = res.error;
    };
    engine.submit(std::move(r), std::move(cb));
  }
  engine.run_until_idle();
  if (!error->empty()) GYRE_THROW(invalid_argument, "request rejected: {}", *error);
  std::vector<double> out;
  for (size_t i = 0; i < times->size(); ++i)
    out.push_back((*times)[i] - (i ? (*times)[i - 1] : t0));
  return out;
}

// Streams one request (stream_interval 1) and returns the host times between its consecutive
// token chunks after the first (the prefill's): the time per output token step by step, SGLang's
// TPOT. With the decode look-ahead every chunk is processed one step after its step was launched,
// so the intervals are the steps' cadence.
std::vector<double> streamed_token_intervals(gyre::infer::Engine& engine,
                                             gyre::infer::GenerateRequest req) {
  auto times = std::make_shared<std::vector<double>>();
  req.stream = true;
  gyre::infer::RequestCallbacks cb;
  cb.on_chunk = [times](const gyre::infer::TokenChunk& c) {
    for (size_t i = 0; i < c.output_ids.size(); ++i) times->push_back(now_s());
  };
  engine.submit(std::move(req), std::move(cb));
  engine.run_until_idle();
  std::vector<double> out;
  for (size_t i = 2; i < times->size(); ++i) out.push_back((*times)[i] - (*times)[i - 1]);
  return out;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The data-parallel optimizer's final unflatten both ways, means over `reps` (device time
// included): one copy per parameter from the flat vector (DataParallelOptimizer without copies)
// and ops::copy_many writing the f32 parameters and their bf16 copies in one launch (with them).
// The flat vector holds the parameters' own values, so neither changes anything.
std::pair<double, double> time_unflatten(const gyre::train::NamedTensors& weights,
                                         gyre::ops::Bf16WeightCache& copies, int reps) {
  int64_t total = 0;
  for (auto& [name, t] : weights) total += t.numel();
  gyre::Tensor flat = gyre::Tensor::zeros({total}, gyre::DType::f32, gyre::Device::cuda);
  std::vector<gyre::Tensor> src, dst;
  std::vector<uint16_t*> bf16;
  int64_t off = 0;
  for (auto& [name, t] : weights) {
    src.push_back(flat.narrow(off, t.numel()));
    src.back().copy_from(t.reshape({t.numel()}));
    dst.push_back(t.reshape({t.numel()}));
    bf16.push_back(copies.copy_to_write(t));
    off += t.numel();
  }
  std::vector<const gyre::Tensor*> sp;
  std::vector<gyre::Tensor*> dp;
  for (size_t k = 0; k < src.size(); ++k) sp.push_back(&src[k]), dp.push_back(&dst[k]);
  double plain = 0, fused = 0;
  for (int i = 0; i <= reps; ++i) {  // the first round warms up
    double t = now_s();
    for (size_t k = 0; k < src.size(); ++k) dst[k].copy_from(src[k]);
    device_sync(true);
    if (i > 0) plain += now_s() - t;
    t = now_s();
    gyre::ops::copy_many(sp, dp, bf16);
    device_sync(true);
    if (i > 0) fused += now_s() - t;
  }
  return {plain / reps, fused / reps};
}

using gyre::bench::drive;
using gyre::bench::random_requests;
using gyre::bench::RolloutRun;

}  // namespace

int main(int argc, char** argv) {
  int batch = 256, prompt = 128, new_tokens = 256, iters = 1, layers = 0, chunk = 8192;
  int graph_max_bs = 256;  // --cuda-graph-max-bs (0: no CUDA graphs, for A/B runs)
  double budget_s = 90;
  std::string shape = "qwen2.5-0.5b", precision = "f32", device = "cuda";
  std::string decode_fusion = "ab";  // --decode-fusion on|off|ab (ab: batch 1 both ways)
  bool skip_b1 = false, b1_only = false;
  bool look_ahead = true;  // --look-ahead 0|1: EngineConfig::decode_look_ahead (A/B runs)
  // --stop-ids K: the batch run's requests also stop on ids 0..K-1 (ignore_eos leaves
  // stop_token_ids in force), so they end at different lengths, as RL rollouts stopping on EOS
  // do. At temperature 1 over a near-flat distribution a step stops a row with probability
  // ~K / vocab (K 512 of 151,936: 0.34%, ~58% of the rows stop before 256 new tokens). 0: none.
  int stop_ids = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--batch")) batch = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--prompt")) prompt = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--new")) new_tokens = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--iters")) iters = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--layers")) layers = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--chunk")) chunk = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--cuda-graph-max-bs")) graph_max_bs = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--budget-s")) budget_s = std::atof(argv[i + 1]);
    if (!std::strcmp(argv[i], "--shape")) shape = argv[i + 1];
    if (!std::strcmp(argv[i], "--precision")) precision = argv[i + 1];
    if (!std::strcmp(argv[i], "--device")) device = argv[i + 1];
    if (!std::strcmp(argv[i], "--decode-fusion")) decode_fusion = argv[i + 1];
    if (!std::strcmp(argv[i], "--skip-b1")) skip_b1 = std::atoi(argv[i + 1]) != 0;
    if (!std::strcmp(argv[i], "--b1-only")) b1_only = std::atoi(argv[i + 1]) != 0;
    if (!std::strcmp(argv[i], "--look-ahead")) look_ahead = std::atoi(argv[i + 1]) != 0;
    if (!std::strcmp(argv[i], "--stop-ids")) stop_ids = std::atoi(argv[i + 1]);
  }
  const double t_start = now_s();
  try {
    if (batch < 1 || prompt < 1 || new_tokens < 1 || iters < 1)
      GYRE_THROW(invalid_argument, "--batch, --prompt, --new and --iters must be >= 1");
    if (stop_ids < 0) GYRE_THROW(invalid_argument, "--stop-ids {}: expected >= 0", stop_ids);
    if (skip_b1 && b1_only)
      GYRE_THROW(invalid_argument, "--skip-b1 1 and --b1-only 1 leave nothing to measure");
    if (decode_fusion != "on" && decode_fusion != "off" && decode_fusion != "ab")
      GYRE_THROW(invalid_argument, "--decode-fusion {}: expected on, off or ab", decode_fusion);
    auto cfg = gyre::model::named_shape(shape);
    if (shape != "qwen2.5-0.5b" && shape != "qwen2.5-1.5b")
      GYRE_THROW(invalid_argument,
                 "--shape {}: the anchors are for qwen2.5-0.5b and qwen2.5-1.5b (gyre bench "
                 "rollout --shape {} --device cuda runs any named shape)",
                 shape, shape);
    if (layers > 0) cfg.num_hidden_layers = layers;
    const bool big = shape == "qwen2.5-1.5b";
    const double anchor = big ? 7800 : 14100;
    auto model = gyre::model::CausalLM::random_init(cfg, 1);
    model->to(device == "cpu" ? gyre::Device::cpu : gyre::Device::cuda);  // cpu: a smoke test
    model->set_precision(gyre::model::parse_precision(precision));
    const int64_t params = model->num_parameters();

    const int kB1Prompt = 128, kB1New = 128;
    const int64_t max_len = std::max(prompt + new_tokens, kB1Prompt + kB1New);
    gyre::infer::EngineConfig ecfg =
        gyre::bench::rollout_engine_config(batch, prompt, max_len, chunk);
    ecfg.cuda_graph_max_bs = graph_max_bs;
    ecfg.decode_look_ahead = look_ahead;
    gyre::infer::Engine engine(*model, nullptr, ecfg);

    // Warm-up at a small size (kernels, cuBLAS handles, allocator pools).
    drive(engine, random_requests(4, 16, 8, cfg.vocab_size, 1), 1e9);

    // Batch-1 decode against the memory-bandwidth bound, with the fused decode linears
    // (model/decode_fusion.h) off and on in the same process: the A/B of issue 7's launch count.
    // Each setting starts from a batch-1 warm-up (the engine re-captures its graphs when the
    // switch changed since their capture: the bucket-1 graph here), so the timed run replays
    // graphs of its own setting only.
    const double avg_ctx = kB1Prompt + kB1New / 2.0;  // decode step k reads prompt + k tokens
    // KV element bytes: the engine's cache is bf16 when the model computes in bf16 on the GPU.
    const double kv_elem = precision == "bf16" && device == "cuda" ? 2.0 : 4.0;
    const double kv_bytes = 2.0 * double(cfg.num_hidden_layers) * double(cfg.num_key_value_heads) *
                            double(cfg.head_dim) * kv_elem * avg_ctx;
    const double bw = 3.3e12;
    const double bound_f32 = (double(params) * 4.0 + kv_bytes) / bw * 1e3;
    const double bound_bf16 = (double(params) * 2.0 + kv_bytes) / bw * 1e3;
    double ms_of[2] = {0, 0};
    for (const bool fusion : {false, true}) {
      if (skip_b1 || (decode_fusion != "ab" && (decode_fusion == "on") != fusion)) continue;
      gyre::model::set_decode_fusion(fusion);
      drive(engine, random_requests(1, 16, 8, cfg.vocab_size, 3), 1e9);
      RolloutRun r =
          drive(engine, random_requests(1, kB1Prompt, kB1New, cfg.vocab_size, 2), budget_s / 12);
      const int64_t decode_tokens = r.tokens - r.tokens_after_first;
      const double ms_tok = decode_tokens > 0
                                ? (r.seconds - r.first_step_s) / double(decode_tokens) * 1e3
                                : r.seconds * 1e3;
      const double ms_tok_e2e = r.seconds / double(std::max<int64_t>(r.tokens, 1)) * 1e3;
      ms_of[fusion] = ms_tok;
      // The same request streamed: the median step (a mean over 128 tokens also holds the first
      // steps after the warm-up, and any one-off stall).
      const double ms_tok_median =
          median(streamed_token_intervals(
              engine, random_requests(1, kB1Prompt, kB1New, cfg.vocab_size, 2)[0])) *
          1e3;
      std::printf(
          "{\"bench\": \"rollout_gpu_decode_b1\", \"shape\": \"%s\", \"precision\": \"%s\", "
          "\"decode_fusion\": %s, \"look_ahead\": %s, \"params\": %lld, \"prompt\": %d, \"new\": "
          "%d, "
          "\"output_tokens\": %lld, \"complete\": %s, \"ms_per_token\": %.4f, "
          "\"ms_per_token_median_streamed\": %.4f, "
          "\"ms_per_token_e2e\": %.4f, \"prefill_step_ms\": %.3f, \"kv_elem_bytes\": %.0f, "
          "\"kv_bytes_avg_context\": %.0f, \"bound_ms_f32_weights\": %.4f, "
          "\"ratio_bound_f32\": %.3f, \"bound_ms_bf16_weights\": %.4f, "
          "\"ratio_bound_bf16\": %.3f, \"goal_ratio_bound_bf16\": 1.5, \"meets_goal\": %s}\n",
          shape.c_str(), precision.c_str(), fusion ? "true" : "false",
          look_ahead ? "true" : "false", (long long)params, kB1Prompt, kB1New, (long long)r.tokens,
          r.complete ? "true" : "false", ms_tok, ms_tok_median, ms_tok_e2e, r.first_step_s * 1e3,
          kv_elem, kv_bytes, bound_f32, ms_tok / bound_f32, bound_bf16, ms_tok / bound_bf16,
          ms_tok / bound_bf16 <= 1.5 ? "true" : "false");
      std::fflush(stdout);
    }
    if (ms_of[0] > 0 && ms_of[1] > 0) {
      std::printf(
          "{\"bench\": \"rollout_gpu_decode_b1_fusion_ab\", \"shape\": \"%s\", "
          "\"precision\": \"%s\", \"ms_per_token_unfused\": %.4f, \"ms_per_token_fused\": %.4f, "
          "\"speedup\": %.3f, \"bound_ms_bf16_weights\": %.4f}\n",
          shape.c_str(), precision.c_str(), ms_of[0], ms_of[1], ms_of[0] / ms_of[1], bound_bf16);
      std::fflush(stdout);
    }
    if (b1_only) return 0;
    gyre::model::set_decode_fusion(decode_fusion != "off");  // the batch run

    // One short run of the batch's shape first, untimed: GEMM autotuning (backend/cuda/
    // gemm_tune.h, default on) times a problem's candidates on its second launch — here the
    // prefill chunks' and the batch decode step's GEMMs, ~10 ms each once per process — and the
    // batch's decode graph is captured; the timed runs then measure the steady state, as the
    // training benches' two warm-up steps do.
    drive(engine, random_requests(batch, prompt, 8, cfg.vocab_size, 9), 1e9);
    // GYRE_OP_PROFILE=1: GPU time per op of the timed batch runs (wall minus that = host work:
    // scheduling, logits copy, sampling); the batch-1 and warm-up records are dropped here.
    if (gyre::ops::op_profile_enabled()) gyre::ops::op_profile_report();
    // Batch throughput (each iteration a fresh set of prompts; the figure is the mean).
    double secs = 0;
    int64_t tokens = 0;
    bool complete = true;
    int done_iters = 0;
    for (int it = 0; it < iters && complete; ++it) {
      const double left = std::max(5.0, budget_s - (now_s() - t_start));
      auto reqs = random_requests(batch, prompt, new_tokens, cfg.vocab_size, 10 + it);
      for (auto& q : reqs)
        for (int t = 0; t < stop_ids; ++t) q.sampling.stop_token_ids.push_back(t);
      RolloutRun r = drive(engine, std::move(reqs), left);
      secs += r.seconds;
      tokens += r.tokens;
      complete = r.complete;
      ++done_iters;
    }
    const double tps = double(tokens) / secs;
    std::printf(
        "{\"bench\": \"rollout_gpu\", \"shape\": \"%s\", \"precision\": \"%s\", \"batch\": %d, "
        "\"look_ahead\": %s, \"stop_ids\": %d, \"prompt\": %d, \"new\": %d, \"iters\": %d, "
        "\"complete\": %s, "
        "\"output_tokens\": %lld, "
        "\"seconds\": %.4f, \"output_tokens_per_s\": %.1f, "
        "\"anchor_hf_generate_tokens_per_s\": %.0f, \"ratio\": %.3f}\n",
        shape.c_str(), precision.c_str(), batch, look_ahead ? "true" : "false", stop_ids, prompt,
        new_tokens, done_iters, complete ? "true" : "false", (long long)tokens, secs / done_iters,
        tps, anchor, tps / anchor);
    std::fflush(stdout);
    // Colocated weight sync (issue 8: "under 1 ms regardless of model size"). Trainer and engine
    // share the weights, so a sync is Engine::update_weights: the values changed in place, so the
    // bf16 weight copies are re-cast in place in one launch ("refresh") and the captured decode
    // graphs stay valid — or, in gyre train's colocated path, the trainer's AdamW already wrote
    // the copies in its update ("adamw_bf16_copies": train::AdamW::set_bf16_copies) and the sync
    // is a version bump. sync_ms runs until the device finished (the refresh included; means over
    // the syncs). Anything still deferred shows up as a slower first prefill / decode step after
    // the sync than in the same short generation before it (medians over the syncs). (gyre train's
    // engine runs on its own thread: add one condition-variable wake-up to sync_ms.)
    {
      constexpr int kSyncs = 5;
      const bool cuda = device == "cuda";
      gyre::ops::Bf16WeightCache& copies = engine.weight_cache();
      // The refresh alone (host + device): what a sync costs when nobody wrote the copies.
      double refresh_s = 0;
      for (int i = 0; i < kSyncs; ++i) {
        const double t = now_s();
        copies.refresh();
        device_sync(cuda);
        refresh_s += now_s() - t;
      }
      const size_t copy_bytes = copies.bytes();
      // The trainer's side of the adamw_bf16_copies mode: one AdamW over every parameter (zero
      // gradients: the values barely move, the traffic is a real step's), timed with and without
      // the copies attached.
      gyre::train::NamedTensors weights, grads;
      for (auto& p : model->parameters()) {
        if (!cuda) break;  // the CPU smoke run measures the refresh mode only
        weights.emplace_back(p.name, p.tensor);
        grads.emplace_back(
            p.name, gyre::Tensor::zeros(p.tensor.shape(), gyre::DType::f32, p.tensor.device()));
      }
      auto adamw = std::make_unique<gyre::train::AdamW>(gyre::train::AdamWConfig{},
                                                        gyre::train::LrSchedule{});
      if (cuda) adamw->step(weights, grads);  // untimed: allocates the moments
      // Not owned: the engine outlives `adamw` and `dp` in this scope.
      auto shared_copies =
          std::shared_ptr<gyre::ops::Bf16WeightCache>(&copies, [](gyre::ops::Bf16WeightCache*) {});
      // The dp_unflatten_bf16_copies mode: gyre train under data parallelism, ZeRO-1 over a
      // one-rank NCCL communicator (the real device path: bucketed reduce-scatter, shard AdamW,
      // all-gather, unflatten; nothing to exchange), whose final unflatten writes the copies.
      std::unique_ptr<gyre::dist::Comm> dp_comm;
      std::unique_ptr<gyre::dist::DataParallelOptimizer> dp;
      const bool dp_mode =
          cuda && gyre::dist::nccl_available() && gyre::dist::cuda_device_count() > 0;
      for (const std::string mode : {"refresh", "adamw_bf16_copies", "dp_unflatten_bf16_copies"}) {
        const bool adamw_writes = mode == "adamw_bf16_copies";
        const bool dp_writes = mode == "dp_unflatten_bf16_copies";
        if ((adamw_writes && !cuda) || (dp_writes && !dp_mode)) continue;
        if (dp_writes) {
          adamw.reset();  // its moments: make room for the DP optimizer's flat buffers and shard
          dp_comm = gyre::dist::nccl_comm_init(gyre::dist::nccl_unique_id(), 1, 0, 0, 120, "dp");
          dp = std::make_unique<gyre::dist::DataParallelOptimizer>(
              *dp_comm, gyre::train::AdamWConfig{}, gyre::train::LrSchedule{},
              gyre::dist::DpMode::zero1);
          dp->step(weights, grads);  // untimed: the layout, flat buffers and moments
          device_sync(cuda);
        }
        double host_s = 0, total_s = 0, opt_s = 0, opt_plain_s = 0;
        // Per sync: the short generation before it (steady) and right after it; medians below.
        std::vector<double> prefill_steady, prefill_after, first_steady, first_after, deferred;
        std::vector<double> steady_steps;
        const int64_t graphs_before = engine.num_cuda_graphs();
        const auto counts0 = engine.weight_sync_counts();
        for (int i = 0; i < kSyncs; ++i) {
          const std::vector<double> a =
              step_times(engine, random_requests(1, 16, 8, cfg.vocab_size, 40 + i));
          if (adamw_writes || dp_writes) {
            // The optimizer step without the copies, then with them (the one the sync follows).
            auto step = [&] {
              if (dp_writes)
                dp->step(weights, grads);
              else
                adamw->step(weights, grads);
            };
            auto attach = [&](std::shared_ptr<gyre::ops::Bf16WeightCache> c) {
              if (dp_writes)
                dp->set_bf16_copies(c);
              else
                adamw->set_bf16_copies(c);
            };
            attach(nullptr);
            double t = now_s();
            step();
            device_sync(cuda);
            opt_plain_s += now_s() - t;
            attach(shared_copies);
            t = now_s();
            step();
            device_sync(cuda);
            opt_s += now_s() - t;
            attach(nullptr);
          }
          const double t = now_s();
          engine.update_weights([] {});
          host_s += now_s() - t;
          device_sync(cuda);
          total_s += now_s() - t;
          const std::vector<double> b =
              step_times(engine, random_requests(1, 16, 8, cfg.vocab_size, 50 + i));
          if (a.size() < 3 || b.size() < 2) GYRE_THROW(internal, "short generation in sync bench");
          prefill_steady.push_back(a[0]), first_steady.push_back(a[1]);
          prefill_after.push_back(b[0]), first_after.push_back(b[1]);
          for (size_t k = 2; k < a.size(); ++k) steady_steps.push_back(a[k]);
          double d = 0;
          for (double x : b) d += x;
          for (double x : a) d -= x;
          deferred.push_back(d);
        }
        const auto counts1 = engine.weight_sync_counts();
        const int64_t fresh = counts1.fresh - counts0.fresh;
        const int64_t refreshed = counts1.refreshed - counts0.refreshed;
        const int64_t dropped = counts1.dropped - counts0.dropped;
        const double sync_ms = total_s / kSyncs * 1e3;
        char opt_fields[512] = "";
        if (adamw_writes)
          std::snprintf(opt_fields, sizeof opt_fields,
                        "\"adamw_ms\": %.3f, \"adamw_bf16_copies_ms\": %.3f, ",
                        opt_plain_s / kSyncs * 1e3, opt_s / kSyncs * 1e3);
        if (dp_writes) {
          // The cast work moved into the step, measured alone: the unflatten as the optimizer
          // does it without copies (one copy per parameter) and with them (ops::copy_many, one
          // launch writing f32 + bf16), from a flat vector of the parameters' values.
          const std::pair<double, double> unflatten = time_unflatten(weights, copies, kSyncs);
          std::snprintf(opt_fields, sizeof opt_fields,
                        "\"dp_step_ms\": %.3f, \"dp_step_bf16_copies_ms\": %.3f, "
                        "\"dp_step_extra_ms\": %.3f, \"unflatten_plain_ms\": %.3f, "
                        "\"unflatten_bf16_copies_ms\": %.3f, \"unflatten_extra_ms\": %.3f, ",
                        opt_plain_s / kSyncs * 1e3, opt_s / kSyncs * 1e3,
                        (opt_s - opt_plain_s) / kSyncs * 1e3, unflatten.first * 1e3,
                        unflatten.second * 1e3, (unflatten.second - unflatten.first) * 1e3);
        }
        char refresh_field[64] = "null";
        if (copies.entries() > 0)
          std::snprintf(refresh_field, sizeof refresh_field, "%.4f", refresh_s / kSyncs * 1e3);
        std::printf(
            "{\"bench\": \"rollout_gpu_colocated_sync\", \"shape\": \"%s\", "
            "\"precision\": \"%s\", \"params\": %lld, \"mode\": \"%s\", \"sync_ms\": %.4f, "
            "\"sync_host_ms\": %.4f, \"goal_ms\": 1.0, \"meets_goal\": %s, "
            "\"graphs_before\": %lld, \"graphs_after\": %lld, \"syncs_fresh\": %lld, "
            "\"syncs_refreshed\": %lld, \"syncs_dropped\": %lld, \"refresh_ms\": %s, "
            "\"bf16_copies\": %zu, \"bf16_copy_bytes\": %zu, %s\"prefill_ms_after_sync\": %.3f, "
            "\"prefill_ms_steady\": %.3f, \"first_decode_ms_after_sync\": %.3f, "
            "\"first_decode_ms_steady\": %.3f, \"decode_step_ms_steady\": %.3f, "
            "\"deferred_to_next_rollout_ms\": %.3f}\n",
            shape.c_str(), precision.c_str(), (long long)params, mode.c_str(), sync_ms,
            host_s / kSyncs * 1e3, sync_ms < 1.0 ? "true" : "false", (long long)graphs_before,
            (long long)engine.num_cuda_graphs(), (long long)fresh, (long long)refreshed,
            (long long)dropped, refresh_field, copies.entries(), copy_bytes, opt_fields,
            median(prefill_after) * 1e3, median(prefill_steady) * 1e3, median(first_after) * 1e3,
            median(first_steady) * 1e3, median(steady_steps) * 1e3, median(deferred) * 1e3);
        std::fflush(stdout);
      }
    }
    const auto st = engine.stats();  // cumulative over the whole process (all runs)
    std::fprintf(stderr,
                 "engine phases (cumulative, s): schedule %.3f, forward + logits copy %.3f, "
                 "host sampling %.3f, finish %.3f; look-ahead steps %lld (rows dropped %lld)\n",
                 st.schedule_seconds, st.forward_seconds, st.sample_seconds, st.finish_seconds,
                 (long long)st.look_ahead_steps, (long long)st.look_ahead_dropped_rows);
    if (gyre::ops::op_profile_enabled())
      std::fprintf(stderr, "--- batch run, %.3f s wall\n%s", secs,
                   gyre::ops::op_profile_report().c_str());
  } catch (const gyre::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
