// Decode throughput of the tensor-parallel rollout engine on GPUs (issue 8: `gyre serve --tp-size N
// --device cuda`'s engine) against one GPU. A Qwen2.5-shaped model with random weights on the CUDA
// backend, loaded as gyre serve loads it (rank 0 draws the weights and writes them as an HF folder
// in bf16, or --weights DIR; every rank reads it and keeps its Megatron shard,
// model/tensor_parallel.h): rank 0 runs the leading infer::Engine (schedules, samples on its GPU
// from the all-gathered logits, broadcasts every step's plan over the NCCL tp group), ranks
// 1..N-1 EngineFollowers — exactly what `gyre serve --tp-size N --device cuda` runs
// (dist::init_tp_serve_group), driven inline here so the clock sees every step. The TP engine runs
// with CUDA decode graphs (gyre serve's default: the NCCL collectives captured in the graphs, the
// followers capturing and replaying as the leader says) and, with --tp-graphs both (default),
// again without (--cuda-graph-max-bs 0: the A/B of the graphs under TP). Then rank 0 alone
// runs the unsharded model (the same weights) on its GPU twice: with CUDA graphs (what one-GPU
// `gyre serve` does: the anchor) and without (so the ratio shows the collectives' cost apart
// from graphs). Every line says whether the TP engine's graphs were on ("tp_graphs") and how many
// it captured ("tp_cuda_graphs": 0 means the capture failed and it decoded eagerly; its log
// says why). (One host draw of the weights, not one per setup: a 7B
// draw takes minutes.)
//
// Workload per batch size B (--batches, default 1,64,256): B requests of --prompt random ids,
// temperature 1 with fixed seeds, ignore_eos, exactly --new tokens each (gyre::bench's
// random_requests, as bench_rollout_gpu). Every request is admitted at once, so after the prefill
// steps every step decodes all B: the decode phase starts at the first step after which every
// request has its first token. Figures per B: output tokens/s over the whole run (prefill
// included), decode tokens/s and ms per decode step (= ms per output token of one request) over
// the decode phase, each for TP and one GPU; ratio = TP decode tokens/s / one-GPU decode tokens/s
// (> 1: TP is faster; N means perfect strong scaling), also against one GPU without graphs. Peak
// GPU memory of rank 0 in both setups. One JSON line per figure (TP lines as soon as measured,
// the comparison lines at the end). A run that reaches --budget-s stops ("complete": false) and
// reports what it measured.
//
// Launch one process per GPU, torchrun-style (no MPI needed):
//   for r in 0 1; do RANK=$r LOCAL_RANK=$r WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1
//     MASTER_PORT=29515 bench_tp_rollout_gpu --shape qwen2.5-1.5b & done; wait   (one line)
// or `mpirun -np 2 bench_tp_rollout_gpu ...`. Flags: --shape qwen2.5-0.5b|qwen2.5-1.5b|
// qwen2.5-7b (default qwen2.5-1.5b), --precision bf16|f32 (default bf16, gyre serve's GPU
// default), --batches 1,64,256, --prompt 128, --new 128, --budget-s 60 (per run), --layers N,
// --weights DIR (an HF folder of that shape instead of the random draw), --tp-graphs both|on|off
// (default both), --device cpu (a smoke test of the harness under `mpirun -np 2`, e.g. --shape
// tiny --precision f32; no figures).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "gyre/bench/workloads.h"
#include "gyre/core/error.h"
#include "gyre/dist/bootstrap.h"
#include "gyre/dist/tp_serve.h"
#include "gyre/infer/engine.h"
#include "gyre/infer/engine_follower.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/named_shapes.h"

namespace {

namespace fs = std::filesystem;

using gyre::infer::Engine;
using gyre::infer::EngineConfig;
using gyre::infer::GenerateRequest;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

struct Run {
  int64_t batch = 0, tokens = 0;
  double seconds = 0;
  int64_t decode_steps = 0, decode_tokens = 0;
  double decode_seconds = 0;
  bool complete = true;
  double tokens_per_s() const { return seconds > 0 ? double(tokens) / seconds : 0; }
  double decode_tokens_per_s() const {
    return decode_seconds > 0 ? double(decode_tokens) / decode_seconds : 0;
  }
  double ms_per_step() const {
    return decode_steps > 0 ? decode_seconds / double(decode_steps) * 1e3 : 0;
  }
};

// Submits all, then steps the engine inline until done or `budget_s` (then aborts the rest).
Run drive(Engine& e, std::vector<GenerateRequest> reqs, double budget_s) {
  Run r;
  r.batch = int64_t(reqs.size());
  auto pending = std::make_shared<int64_t>(r.batch);
  auto error = std::make_shared<std::string>();
  for (auto& q : reqs) {
    gyre::infer::RequestCallbacks cb;
    cb.on_done = [pending, error](gyre::infer::GenerateResult&& res) {
      --*pending;
      if (!res.error.empty() && error->empty()) *error = res.error;
    };
    e.submit(std::move(q), std::move(cb));
  }
  const int64_t gen0 = e.stats().generated_tokens;
  const double t0 = now_s();
  double decode_t0 = -1;
  int64_t decode_gen0 = 0;
  while (e.step()) {
    const double t = now_s();
    const int64_t gen = e.stats().generated_tokens - gen0;
    if (decode_t0 < 0) {
      if (gen >= r.batch) decode_t0 = t, decode_gen0 = gen;  // every request has its first token
    } else {
      ++r.decode_steps;
    }
    if (t - t0 > budget_s && *pending > 0) {
      r.complete = false;
      break;
    }
  }
  const double t1 = now_s();
  r.seconds = t1 - t0;
  r.tokens = e.stats().generated_tokens - gen0;
  if (decode_t0 >= 0) r.decode_seconds = t1 - decode_t0, r.decode_tokens = r.tokens - decode_gen0;
  if (!r.complete) {
    e.abort_all();
    e.run_until_idle();
  }
  if (!error->empty()) GYRE_THROW(invalid_argument, "request rejected: {}", *error);
  return r;
}

struct Options {
  std::string shape = "qwen2.5-1.5b", precision = "bf16", weights, device = "cuda";
  std::string tp_graphs = "both";  // the TP engine's CUDA graphs: both (on, then off), on, off
  std::vector<int64_t> batches{1, 64, 256};
  int prompt = 128, new_tokens = 128, layers = 0;
  double budget_s = 60;
};

// One engine's figures over every batch size (a small warm-up of each size first: kernels, cuBLAS
// handles, allocator pools and, with graphs, the bucket's capture stay out of the clock).
std::vector<Run> run_all(Engine& e, const Options& o, int64_t vocab, const char* label,
                         bool print) {
  std::vector<Run> out;
  for (size_t i = 0; i < o.batches.size(); ++i) {
    const int64_t b = o.batches[i];
    drive(e, gyre::bench::random_requests(b, 16, 4, vocab, 90 + uint32_t(i)), 1e9);
    Run r =
        drive(e, gyre::bench::random_requests(b, o.prompt, o.new_tokens, vocab, 10 + uint32_t(i)),
              o.budget_s);
    out.push_back(r);
    if (print) {
      std::printf(
          "{\"bench\": \"tp_rollout_gpu_run\", \"engine\": \"%s\", \"shape\": \"%s\", "
          "\"precision\": \"%s\", \"batch\": %lld, \"prompt\": %d, \"new\": %d, \"complete\": %s, "
          "\"output_tokens\": %lld, \"seconds\": %.4f, \"tokens_per_s\": %.1f, "
          "\"decode_tokens_per_s\": %.1f, \"ms_per_token\": %.4f, \"cuda_graphs\": %lld}\n",
          label, o.shape.c_str(), o.precision.c_str(), (long long)b, o.prompt, o.new_tokens,
          r.complete ? "true" : "false", (long long)r.tokens, r.seconds, r.tokens_per_s(),
          r.decode_tokens_per_s(), r.ms_per_step(), (long long)e.num_cuda_graphs());
      std::fflush(stdout);
    }
  }
  return out;
}

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) v.push_back(std::atoll(item.c_str()));
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--shape")) o.shape = argv[i + 1];
    if (!std::strcmp(argv[i], "--precision")) o.precision = argv[i + 1];
    if (!std::strcmp(argv[i], "--batches")) o.batches = parse_list(argv[i + 1]);
    if (!std::strcmp(argv[i], "--prompt")) o.prompt = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--new")) o.new_tokens = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--layers")) o.layers = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--budget-s")) o.budget_s = std::atof(argv[i + 1]);
    if (!std::strcmp(argv[i], "--weights")) o.weights = argv[i + 1];
    if (!std::strcmp(argv[i], "--device")) o.device = argv[i + 1];
    if (!std::strcmp(argv[i], "--tp-graphs")) o.tp_graphs = argv[i + 1];
  }
  try {
    if (o.batches.empty() || o.prompt < 1 || o.new_tokens < 2)
      GYRE_THROW(invalid_argument, "--batches, --prompt >= 1 and --new >= 2 are required");
    if (o.tp_graphs != "both" && o.tp_graphs != "on" && o.tp_graphs != "off")
      GYRE_THROW(invalid_argument, "--tp-graphs is both, on or off, got '{}'", o.tp_graphs);
    for (int64_t b : o.batches)
      if (b < 1) GYRE_THROW(invalid_argument, "--batches: every batch size must be >= 1");
    gyre::model::ModelConfig cfg = gyre::model::named_shape(o.shape);
    if (o.layers > 0) cfg.num_hidden_layers = o.layers;
    const gyre::model::Precision precision = gyre::model::parse_precision(o.precision);
    const gyre::Device device = o.device == "cpu" ? gyre::Device::cpu : gyre::Device::cuda;
    const gyre::dist::LaunchInfo launch = gyre::dist::detect_launch();
    const int tp = launch.size;
    gyre::dist::check_tp_serve_topology(tp, launch, cfg, "--tp");
    // As gyre serve: rank r on its local GPU, the NCCL tp group, the step channel over it.
    gyre::dist::TpServeGroup g;
    if (tp > 1) g = gyre::dist::init_tp_serve_group(device, launch);
    gyre::bench::require_device(device);
    const bool leader = launch.rank == 0;

    const int64_t max_batch = *std::max_element(o.batches.begin(), o.batches.end());
    EngineConfig ec =
        gyre::bench::rollout_engine_config(max_batch, o.prompt, o.prompt + o.new_tokens);
    ec.cuda_graph_max_bs = 0;  // eager; `graphs` below decodes through CUDA graphs
    EngineConfig graphs = ec;
    graphs.cuda_graph_max_bs = int32_t(std::max<int64_t>(max_batch, 1));
    // The TP setups, in order (every rank parses the same flags, so followers match); the CPU
    // has no graphs: one eager setup.
    std::vector<bool> tp_setups;
    if (o.tp_graphs != "off" && device == gyre::Device::cuda) tp_setups.push_back(true);
    if (o.tp_graphs != "on" || device != gyre::Device::cuda) tp_setups.push_back(false);

    // The weights: rank 0 draws them once (kept on the host for the one-GPU runs) and writes the
    // HF folder every rank loads its shard from; the path reaches the other ranks after the write.
    std::string dir = o.weights, written;
    std::unique_ptr<gyre::model::CausalLM> full;
    if (dir.empty()) {
      if (leader) {
        const double t = now_s();
        full = gyre::model::CausalLM::random_init(cfg, 1, 0.02f);
        written = dir = (fs::temp_directory_path() /
                         ("gyre_tp_rollout_" + o.shape + "_" + std::to_string(::getpid())))
                            .string();
        full->save(dir, gyre::DType::bf16);
        std::fprintf(stderr, "rank 0: weights drawn and written to %s in %.1f s\n", dir.c_str(),
                     now_s() - t);
      }
      if (tp > 1) g.tp().broadcast(dir, 0);
    }

    // TP runs: [setup][batch]; the graphs each setup's leader captured.
    std::vector<std::vector<Run>> tp_runs;
    std::vector<int64_t> tp_graph_counts;
    double tp_peak_gib = 0;
    if (tp > 1) {
      gyre::bench::reset_peak_memory(device);
      const double t = now_s();
      auto shard = gyre::model::CausalLM::load(
          dir, {.device = device, .precision = precision, .tp = g.tp_comm.get()});
      std::fprintf(stderr, "rank %d: shard loaded in %.1f s\n", launch.rank, now_s() - t);
      for (const bool on : tp_setups) {
        const EngineConfig& c = on ? graphs : ec;
        if (!leader) {
          // One follower per leader engine (its step sequence starts with that engine).
          gyre::infer::EngineFollower follower(*shard, c, *g.step_channel);
          const auto out = follower.run();  // until rank 0's engine stops
          std::fprintf(stderr,
                       "rank %d: followed %lld steps, %lld through CUDA graphs (graphs %s; %s)\n",
                       launch.rank, (long long)follower.steps(), (long long)follower.graph_steps(),
                       on ? "on" : "off", out.message.c_str());
          continue;
        }
        Engine engine(*shard, nullptr, c);
        engine.attach_followers(*g.step_channel, /*engaged=*/true);
        tp_runs.push_back(run_all(engine, o, cfg.vocab_size, on ? "tp" : "tp_eager", true));
        tp_graph_counts.push_back(engine.num_cuda_graphs());
        tp_peak_gib = std::max(tp_peak_gib, double(gyre::bench::peak_memory_bytes(device)) / kGiB);
        const auto st = engine.stats();
        std::fprintf(stderr,
                     "TP engine (CUDA graphs %s, %lld captured) phases (cumulative, s): schedule "
                     "%.3f, forward + logits %.3f, sampling %.3f, finish %.3f\n",
                     on ? "on" : "off", (long long)engine.num_cuda_graphs(), st.schedule_seconds,
                     st.forward_seconds, st.sample_seconds, st.finish_seconds);
        engine.stop();  // the followers return
      }
      if (!leader) return 0;
    }

    // One GPU, the same weights (rank 0's f32 draw: under bf16 autocast its GEMMs see exactly the
    // bf16 values the shards were read from).
    if (!written.empty()) fs::remove_all(written);  // every rank has read it
    gyre::bench::reset_peak_memory(device);
    if (full) {
      full->to(device);
      full->set_precision(precision);
    } else {
      full = gyre::model::CausalLM::load(dir, {.device = device, .precision = precision});
    }
    const int64_t params = full->num_parameters();
    std::vector<Run> one, eager;
    {
      Engine e(*full, nullptr, graphs);
      one = run_all(e, o, cfg.vocab_size, "one_gpu", true);
    }
    const double one_peak_gib = double(gyre::bench::peak_memory_bytes(device)) / kGiB;
    {
      Engine e(*full, nullptr, ec);
      eager = run_all(e, o, cfg.vocab_size, "one_gpu_eager", true);
    }
    if (tp == 1) return 0;  // one process: the one-GPU lines only
    for (size_t k = 0; k < tp_runs.size(); ++k) {
      const bool on = tp_setups[k];
      for (size_t i = 0; i < o.batches.size(); ++i) {
        const Run &t = tp_runs[k][i], &a = one[i], &b = eager[i];
        const double ratio =
            a.decode_tokens_per_s() > 0 ? t.decode_tokens_per_s() / a.decode_tokens_per_s() : 0;
        const double ratio_eager =
            b.decode_tokens_per_s() > 0 ? t.decode_tokens_per_s() / b.decode_tokens_per_s() : 0;
        // With both setups, the graph line also says what the graphs bought under TP.
        double vs_tp_eager = 0;
        if (on && tp_runs.size() == 2 && tp_runs[1][i].decode_tokens_per_s() > 0)
          vs_tp_eager = t.decode_tokens_per_s() / tp_runs[1][i].decode_tokens_per_s();
        std::printf(
            "{\"bench\": \"tp_rollout_gpu\", \"shape\": \"%s\", \"precision\": \"%s\", \"tp\": %d, "
            "\"tp_graphs\": %s, \"tp_cuda_graphs\": %lld, "
            "\"params\": %lld, \"batch\": %lld, \"prompt\": %d, \"new\": %d, \"complete\": %s, "
            "\"tp_tokens_per_s\": %.1f, \"tp_decode_tokens_per_s\": %.1f, "
            "\"tp_ms_per_token\": %.4f, "
            "\"one_gpu_tokens_per_s\": %.1f, \"one_gpu_decode_tokens_per_s\": %.1f, "
            "\"one_gpu_ms_per_token\": %.4f, \"one_gpu_eager_decode_tokens_per_s\": %.1f, "
            "\"one_gpu_eager_ms_per_token\": %.4f, \"ratio_vs_one_gpu\": %.3f, "
            "\"ratio_vs_one_gpu_eager\": %.3f, \"scaling_efficiency\": %.3f, "
            "\"graphs_vs_tp_eager\": %.3f, "
            "\"tp_rank0_peak_gib\": %.2f, \"one_gpu_peak_gib\": %.2f}\n",
            o.shape.c_str(), o.precision.c_str(), tp, on ? "true" : "false",
            (long long)tp_graph_counts[k], (long long)params, (long long)o.batches[i], o.prompt,
            o.new_tokens, t.complete && a.complete && b.complete ? "true" : "false",
            t.tokens_per_s(), t.decode_tokens_per_s(), t.ms_per_step(), a.tokens_per_s(),
            a.decode_tokens_per_s(), a.ms_per_step(), b.decode_tokens_per_s(), b.ms_per_step(),
            ratio, ratio_eager, ratio / tp, vs_tp_eager, tp_peak_gib, one_peak_gib);
      }
    }
    std::fflush(stdout);
  } catch (const gyre::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
