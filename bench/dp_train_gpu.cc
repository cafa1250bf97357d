// Data-parallel training on several GPUs (issue 8's DP scaling figure): a Qwen2.5-shaped model
// (random weights, bf16 autocast, f32 masters) trained with the same per-GPU batch on every rank,
// first alone on each GPU (single-GPU AdamW, no communication: T1), then as one DP group (gradient
// reduce-scatter + ZeRO-1 AdamW + parameter all-gather over NCCL, or --dp-mode all_reduce: T_N).
// Weak-scaling efficiency = T1 / T_N (the N GPUs process N times the tokens in T_N); goal >= 0.9
// for DP = 2. Also checks that the replicas stay identical: the spread over ranks of Σ w² (0 when
// they agree bitwise).
//
// Launch one process per GPU, torchrun-style (no MPI needed):
//   for r in 0 1; do RANK=$r LOCAL_RANK=$r WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1
//     MASTER_PORT=29511 bench_dp_train_gpu --shape qwen2.5-0.5b & done; wait   (one line)
// or with `mpirun -np 2 bench_dp_train_gpu ...` (NCCL bootstrapped over MPI).
// Flags: --shape qwen2.5-0.5b|qwen2.5-1.5b, --seqs 4 --len 4096 (per GPU), --iters 3,
// --dp-mode zero1|all_reduce, --layers N. Rank 0 prints one JSON line.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "gyre/backend/multi_tensor_ops.h"
#include "gyre/bench/workloads.h"
#include "gyre/core/error.h"
#include "gyre/dist/bootstrap.h"
#include "gyre/dist/data_parallel.h"
#include "gyre/dist/nccl_comm.h"
#include "gyre/model/named_shapes.h"
#include "gyre/model/scoring.h"

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int run(int argc, char** argv) {
  std::string shape = "qwen2.5-0.5b", mode = "zero1";
  int seqs = 4, len = 4096, iters = 3, layers = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--shape"))
      shape = argv[i + 1];
    else if (!std::strcmp(argv[i], "--dp-mode"))
      mode = argv[i + 1];
    else if (!std::strcmp(argv[i], "--seqs"))
      seqs = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--len"))
      len = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--iters"))
      iters = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--layers"))
      layers = std::atoi(argv[i + 1]);
    else
      GYRE_THROW(invalid_argument, "unknown flag {} (see the header of bench/dp_train_gpu.cc)",
                 argv[i]);
  }
  if (seqs < 1 || len < 2 || iters < 1)
    GYRE_THROW(invalid_argument, "--seqs {} --len {} --iters {}: need >= 1, >= 2, >= 1", seqs, len,
               iters);
  auto world = gyre::dist::init_distributed({.timeout_s = 300});
  gyre::bench::require_device(gyre::Device::cuda);
  // The DP group over GPU buffers: the world itself under a torchrun-style launch, else NCCL
  // bootstrapped over the MPI world.
  std::unique_ptr<gyre::dist::Comm> nccl;
  gyre::dist::Comm* dp = world.get();
  if (world->size() > 1 && world->buffer_device() != gyre::Device::cuda) {
    nccl = gyre::dist::nccl_comm_from(*world, 0, 300, "dp");
    dp = nccl.get();
  }
  auto cfg = gyre::model::named_shape(shape);
  if (layers > 0) cfg.num_hidden_layers = layers;
  auto model = gyre::model::CausalLM::random_init(cfg, 1);  // the same weights on every rank
  model->to(gyre::Device::cuda);
  model->set_precision(gyre::model::Precision::bf16);
  const int64_t params = model->num_parameters();
  // Each rank its own batch (seeded by rank), the same size on every rank.
  const auto batch =
      gyre::bench::random_sequences(seqs, len, cfg.vocab_size, 12345u + uint32_t(world->rank()));
  const double tokens = double(seqs) * len;

  // T1: every GPU alone (the ranks run at the same time but exchange nothing).
  double t1 = 0;
  {
    gyre::bench::TrainStep single(*model, batch);
    t1 = gyre::bench::time_steps([&] { single.run(); }, iters, 1);
  }
  dp->barrier();

  // T_N: forward + backward on the rank's batch, then the DP optimizer step.
  gyre::train::AdamWConfig ac{.lr = 1e-6, .clip_grad = 1.0};
  gyre::dist::DataParallelOptimizer opt(*dp, ac, {}, gyre::dist::parse_dp_mode(mode));
  gyre::model::Gradients grads = model->zeros_like_parameters();
  gyre::train::NamedTensors plist, glist;
  auto ps = model->parameters();
  for (size_t i = 0; i < ps.size(); ++i) {
    plist.emplace_back(ps[i].name, ps[i].tensor);
    glist.emplace_back(grads.tensors[i].name, grads.tensors[i].tensor);
  }
  const std::vector<int32_t> prompt_lens(size_t(seqs), 1);
  const std::vector<float> adv(size_t(seqs), 1.0f);
  double fb_s = 0, opt_s = 0;
  auto step = [&](bool timed) {
    grads.zero();
    const double a = now_s();
    gyre::model::policy_gradient_loss_and_grad(*model, batch, prompt_lens, adv, grads);
    const double b = now_s();  // the loss is a host value: the backward has finished
    opt.step(plist, glist);    // returns after the all-gather: parameters are current
    const double c = now_s();
    if (timed) fb_s += b - a, opt_s += c - b;
  };
  step(false);
  dp->barrier();
  const double t0 = now_s();
  for (int i = 0; i < iters; ++i) step(true);
  const double tn = (now_s() - t0) / iters;
  fb_s /= iters, opt_s /= iters;

  // Replicas identical: Σ w² over all parameters must agree bitwise across the ranks.
  std::vector<const gyre::Tensor*> pts;
  for (auto& [name, t] : plist) pts.push_back(&t);
  const double sq = gyre::ops::sum_squares_many(pts);
  const double sq_max = dp->all_reduce(sq, gyre::dist::ReduceOp::max);
  const double sq_min = -dp->all_reduce(-sq, gyre::dist::ReduceOp::max);
  // The slowest rank sets the pace of both figures.
  const double t1_max = dp->all_reduce(t1, gyre::dist::ReduceOp::max);
  const double tn_max = dp->all_reduce(tn, gyre::dist::ReduceOp::max);
  if (world->rank() == 0) {
    const int n = dp->size();
    const double flops =
        gyre::bench::train_step_flops(cfg, params, std::vector<int64_t>(size_t(seqs), len));
    std::printf(
        "{\"bench\": \"dp_train_gpu\", \"shape\": \"%s\", \"layers\": %lld, \"gpus\": %d, "
        "\"dp_mode\": \"%s\", \"tokens_per_gpu_step\": %.0f, \"single_gpu_step_s\": %.4f, "
        "\"dp_step_s\": %.4f, \"dp_forward_backward_s\": %.4f, \"dp_optimizer_s\": %.4f, "
        "\"single_gpu_tokens_per_s\": %.0f, \"dp_tokens_per_s\": %.0f, \"dp_mfu\": %.3f, "
        "\"scaling_efficiency\": %.3f, \"anchor_efficiency\": 0.9, "
        "\"replica_sum_sq_spread\": %.3g}\n",
        shape.c_str(), (long long)cfg.num_hidden_layers, n, mode.c_str(), tokens, t1_max, tn_max,
        fb_s, opt_s, tokens / t1_max, n * tokens / tn_max,
        flops / tn_max / gyre::bench::kH200PeakFlops, t1_max / tn_max, sq_max - sq_min);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_dp_train_gpu: %s\n", e.what());
    return 1;
  }
}
