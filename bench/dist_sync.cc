// bench_dist_sync: weight-sync and data-parallel figures on the CPU (MPI), one JSON line each.
//   full_sync_*   / delta_sync_*   disk sync of a ~23M-parameter Qwen3-shaped model after one RL
//                                  step (policy-gradient backward + AdamW at slime's default lr
//                                  1e-6): bytes and seconds (write + engine apply), delta/full.
//   broadcast_gbps                 bucketed MPI broadcast of the weights (rank 0 -> rank 1) against
//                                  the all-reduce bus bandwidth of the same bytes measured in the
//                                  same run (NCCL-tests convention: busbw = bytes * 2(n-1)/n / t).
//   dp2_scaling_efficiency         ActorTrainer.train on 8 samples: one process alone (the other
//                                  rank idles in a barrier) vs DP=2 (ZeRO-1); efficiency =
//                                  T1 / (2 * T2).
// Run: GYRE_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 mpirun --allow-run-as-root -np 2
//      build/bin/bench_dist_sync   (without mpirun only the disk figures are measured).
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "gyre/core/timer.h"
#include "gyre/dist/bootstrap.h"
#include "gyre/dist/data_parallel.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/scoring.h"
#include "gyre/rl/trainer/actor_trainer.h"
#include "gyre/rl/weight_sync/broadcast_sync.h"
#include "gyre/rl/weight_sync/delta_sync.h"
#include "gyre/rl/weight_sync/disk_sync.h"

using namespace gyre;

namespace {

int g_rank = 0;

// ~23M parameters: hidden 512, 2 layers, intermediate 1536, vocab 16000, untied lm_head.
model::ModelConfig bench_config() {
  model::ModelConfig c;
  c.arch = model::Arch::qwen3;
  c.model_type = "qwen3";
  c.vocab_size = 16000;
  c.hidden_size = 512;
  c.intermediate_size = 1536;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 4;
  c.head_dim = 64;
  c.max_position_embeddings = 4096;
  c.qk_norm = true;
  c.rope.theta = 1e6;
  return c;
}

void emit(const char* metric, double value, const char* unit, const std::string& extra) {
  if (g_rank != 0) return;
  std::printf(
      "{\"bench\": \"dist_sync\", \"metric\": \"%s\", \"value\": %.6g, \"unit\": \"%s\"%s}\n",
      metric, value, unit, extra.empty() ? "" : (", " + extra).c_str());
  std::fflush(stdout);
}

std::vector<std::vector<int32_t>> sequences(int n, int len, int vocab, int salt) {
  std::vector<std::vector<int32_t>> s(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i)
    for (int t = 0; t < len; ++t) s[size_t(i)].push_back((i * 7919 + t * 104729 + salt) % vocab);
  return s;
}

// One RL-like step: policy-gradient loss on 4 sequences, AdamW at lr 1e-6.
void rl_step(model::CausalLM& m) {
  auto seqs = sequences(4, 128, int(m.config().vocab_size), 1);
  std::vector<int32_t> prompts(4, 32);
  std::vector<float> adv{1.0f, -0.5f, 0.25f, -1.0f};
  auto lg = model::policy_gradient_loss_and_grad(m, seqs, prompts, adv);
  train::AdamWConfig c;
  c.lr = 1e-6;
  train::AdamW opt(c, {});
  train::NamedTensors p, g;
  for (auto& x : m.parameters()) p.emplace_back(x.name, x.tensor);
  for (auto& x : lg.grads.tensors) g.emplace_back(x.name, x.tensor);
  opt.step(p, g);
}

void disk_figures(const model::ModelConfig& cfg) {
  const std::string root = fmt::format("/tmp/bench_dist_sync_{}", getpid());
  auto trainer = model::CausalLM::random_init(cfg, 1);
  auto engine = model::CausalLM::random_init(cfg, 1);
  rl::DeltaEncoder enc;
  enc.set_base(*trainer, 0);
  rl_step(*trainer);
  std::string full_path, delta_path;
  rl::SyncStats fw = rl::write_full_weights(*trainer, root, 1, DType::f32, &full_path);
  rl::SyncStats fr = rl::load_full_weights(*engine, full_path);
  auto engine2 = model::CausalLM::random_init(cfg, 1);
  rl::SyncStats dw = enc.write(*trainer, root, 1, &delta_path);
  rl::SyncStats dr = rl::apply_delta(*engine2, delta_path, 0);
  const std::string params = fmt::format("\"params\": {}", trainer->num_parameters());
  emit("full_sync_bytes", double(fw.bytes), "bytes", params);
  emit("full_sync_seconds", fw.seconds + fr.seconds, "s",
       fmt::format("\"write_s\": {:.4f}, \"load_s\": {:.4f}", fw.seconds, fr.seconds));
  emit("delta_sync_bytes", double(dw.bytes), "bytes",
       fmt::format("\"changed_tensors\": {}, \"tensors\": {}", dw.changed_tensors, dw.tensors));
  emit("delta_sync_seconds", dw.seconds + dr.seconds, "s",
       fmt::format("\"encode_s\": {:.4f}, \"apply_s\": {:.4f}", dw.seconds, dr.seconds));
  emit("delta_vs_full_bytes", double(dw.bytes) / double(fw.bytes), "ratio",
       "\"anchor\": \"full disk sync (slime UpdateWeightFromDisk), goal < 1\"");
  emit("delta_vs_full_seconds", (dw.seconds + dr.seconds) / (fw.seconds + fr.seconds), "ratio",
       "\"anchor\": \"full disk sync\"");
  std::error_code ec;
  std::filesystem::remove_all(root, ec);
}

void comm_figures(dist::Comm& world, const model::ModelConfig& cfg) {
  auto m = model::CausalLM::random_init(cfg, 1);
  rl::BroadcastSyncOptions o;
  double best_b = 1e30;
  uint64_t bytes = 0;
  for (int rep = 0; rep < 4; ++rep) {
    world.barrier();
    rl::SyncStats s = rl::broadcast_weights(world, *m, rep + 1, o);
    if (rep > 0) best_b = std::min(best_b, s.seconds);  // first run warms up the transport
    bytes = s.bytes;
  }
  std::vector<float> buf(bytes / sizeof(float), 1.0f);
  double best_a = 1e30;
  for (int rep = 0; rep < 4; ++rep) {
    world.barrier();
    Timer t;
    world.all_reduce(buf);
    if (rep > 0) best_a = std::min(best_a, t.elapsed());
  }
  const int n = world.size();
  const double bcast = double(bytes) / best_b / 1e9;
  const double busbw = double(bytes) * 2.0 * (n - 1) / n / best_a / 1e9;
  emit("broadcast_gbps", bcast, "GB/s",
       fmt::format("\"bytes\": {}, \"seconds\": {:.4f}, \"ranks\": {}", bytes, best_b, n));
  emit("allreduce_busbw_gbps", busbw, "GB/s",
       fmt::format("\"bytes\": {}, \"seconds\": {:.4f}", bytes, best_a));
  emit("broadcast_vs_allreduce_busbw", bcast / busbw, "ratio",
       "\"anchor\": \"MPI all-reduce bus bandwidth, same run (goal >= 0.8 on NCCL)\"");
}

std::vector<rl::Sample> dp_samples(int vocab) {
  std::vector<rl::Sample> out;
  auto seqs = sequences(8, 96, vocab, 3);
  for (int i = 0; i < 8; ++i) {
    rl::Sample s;
    s.index = i;
    s.group_index = i / 4;
    s.tokens = seqs[size_t(i)];
    s.response_length = 64;
    s.status = rl::SampleStatus::completed;
    out.push_back(s);
  }
  return out;
}

double train_seconds(const model::ModelConfig& cfg, dist::DataParallelOptimizer* dp) {
  auto m = model::CausalLM::random_init(cfg, 2);
  rl::ActorTrainerOptions o;
  o.algo.n_samples_per_prompt = 4;
  o.algo.rollout_batch_size = 2;
  o.global_batch_size = 8;
  o.micro.micro_batch_size = 1;
  train::AdamWConfig ac;
  ac.lr = 1e-6;
  train::AdamW opt(ac, {});
  o.data_parallel = dp;
  rl::ActorTrainer t(*m, nullptr, opt, o);
  const std::vector<float> rewards{1, 0, 0, 1, 0.5f, 0, 1, 0};
  Timer timer;
  t.train(dp_samples(int(cfg.vocab_size)), rewards);
  return timer.elapsed();
}

void dp_figures(dist::Comm& world, const model::ModelConfig& cfg) {
  double t1 = 0;
  world.barrier();
  if (world.rank() == 0) t1 = train_seconds(cfg, nullptr);
  world.barrier();
  train::AdamWConfig ac;
  ac.lr = 1e-6;
  dist::DataParallelOptimizer dp(world, ac, {}, dist::DpMode::zero1);
  Timer t;
  train_seconds(cfg, &dp);
  world.barrier();
  const double t2 = t.elapsed();
  emit("dp2_scaling_efficiency", t1 / (world.size() * t2), "ratio",
       fmt::format("\"t1_s\": {:.3f}, \"t2_s\": {:.3f}, \"ranks\": {}, \"anchor\": \"ideal DP "
                   "(goal >= 0.9 on 2 GPUs); here 2 ranks share the 2-core machine\"",
                   t1, t2, world.size()));
}

}  // namespace

int main() {
  try {
    auto world = dist::init_distributed();
    g_rank = world->rank();
    const auto cfg = bench_config();
    if (world->rank() == 0) disk_figures(cfg);
    world->barrier();
    if (world->size() >= 2) {
      comm_figures(*world, cfg);
      dp_figures(*world, cfg);
    } else {
      emit("broadcast_gbps", 0, "GB/s", "\"skipped\": \"run under mpirun -np 2\"");
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
