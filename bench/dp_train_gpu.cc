// Data-parallel training on several GPUs (issue 8's DP scaling figure): a Qwen2.5-shaped model
// (random weights, bf16 autocast, f32 masters) trained with the same per-GPU batch on every rank,
// first alone on each GPU (single-GPU AdamW, no communication: T1), then as one DP group (gradient
// reduce-scatter + ZeRO-1 AdamW + parameter all-gather over NCCL, or --dp-mode all_reduce: T_N).
// Weak-scaling efficiency = T1 / T_N (the N GPUs process N times the tokens in T_N); goal >= 0.9
// for DP = 2. Also checks that the replicas stay identical: the spread over ranks of Σ w² (0 when
// they agree bitwise).
//
// Tensor-parallel mode (--tp N, N = the number of ranks; TP alone, --dp-mode is ignored): strong
// scaling. The same global batch (--seqs x --len, the same ids on every rank) is trained first by
// one GPU alone (the unsharded model, single-GPU AdamW: T1; every rank does it at once on its own
// GPU, exchanging nothing), then by the TP group (the model sharded Megatron-style over the N
// GPUs, model/tensor_parallel.h, all-reduces over NCCL; AdamW clips by the full gradient's norm,
// CausalLM::grad_sum_squares: T_N). TP scaling efficiency = T1 / (N x T_N) (1 = the N GPUs finish
// the batch N times faster). Also reported: each rank's peak GPU memory in both phases (weights,
// gradients, AdamW state and activations: what TP divides), the first step's loss of both (the
// same weights and batch: equal up to bf16 rounding) and the spread over ranks of Σ w² of the
// replicated parameters (0 when they agree bitwise).
//
// Launch one process per GPU, torchrun-style (no MPI needed):
//   for r in 0 1; do RANK=$r LOCAL_RANK=$r WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1
//     MASTER_PORT=29511 bench_dp_train_gpu --shape qwen2.5-0.5b & done; wait   (one line)
// or with `mpirun -np 2 bench_dp_train_gpu ...` (NCCL bootstrapped over MPI).
// Flags: --shape qwen2.5-0.5b|qwen2.5-1.5b, --seqs 4 --len 4096 (per GPU under DP; the global
// batch under TP), --iters 3, --dp-mode zero1|all_reduce, --tp N (default 1: the DP bench),
// --layers N, --overlap both|on|off (--no-overlap = off; DP only, default both), --skip-single 1
// (TP only: no single-GPU phase, for shapes whose training state does not fit one GPU; its
// figures print as null). Rank 0 prints one JSON line.
//
// Overlap (DP; issue 8's communication stream): the DP step runs the batch in micro-batches of at
// most 8192 tokens (policy_gradient_loss_and_grad's default, which the one-GPU baseline's TrainStep
// is given too, with its bf16 copies dropped per step as the DP trainer does), and with overlap on
// the last micro-batch's backward carries the DP optimizer's gradient-ready hook, so each bucket
// (~40 MB: about one decoder layer) is reduce-scattered on NCCL's stream while the backward goes
// on; off, every bucket is reduced after the backward (the same calls, the same numbers). `both`
// times off, then on: scaling_efficiency is the overlapped one (or the only one measured).
// dp_forward_backward_s ends when the compute stream has finished the backward (the started
// reductions may still run); dp_optimizer_s is the rest of the step: the reduction still exposed,
// clipping, AdamW on the shard and the parameter all-gather.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "gyre/backend/multi_tensor_ops.h"
#ifdef GYRE_HAVE_CUDA
#include "gyre/backend/cuda/runtime.h"
#endif
#include "gyre/bench/workloads.h"
#include "gyre/core/error.h"
#include "gyre/dist/bootstrap.h"
#include "gyre/dist/data_parallel.h"
#include "gyre/dist/nccl_comm.h"
#include "gyre/dist/tensor_parallel_comm.h"
#include "gyre/model/named_shapes.h"
#include "gyre/model/scoring.h"
#include "gyre/model/tensor_parallel.h"

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// Waits for the calling thread's GPU stream (not for NCCL's communication stream).
void sync_compute_stream() {
#ifdef GYRE_HAVE_CUDA
  gyre::cuda::sync();
#endif
}

// Forwards a model::TpComm and adds up the host time of its calls (and counts them).
class TimedTpComm : public gyre::model::TpComm {
 public:
  explicit TimedTpComm(gyre::model::TpComm& inner) : in_(inner) {}
  int rank() const override { return in_.rank(); }
  int size() const override { return in_.size(); }
  gyre::Device buffer_device() const override { return in_.buffer_device(); }
  void all_reduce_sum(float* b, size_t n) override {
    timed([&] { in_.all_reduce_sum(b, n); });
  }
  void all_reduce_sum_ordered(float* b, size_t n) override {  // host time: the enqueue only
    timed([&] { in_.all_reduce_sum_ordered(b, n); });
  }
  void all_reduce_max(float* b, size_t n) override {
    timed([&] { in_.all_reduce_max(b, n); });
  }
  void all_reduce_sum(double* b, size_t n) override {
    timed([&] { in_.all_reduce_sum(b, n); });
  }
  void all_gather(const void* s, void* r, size_t n) override {
    timed([&] { in_.all_gather(s, r, n); });
  }
  void reset() { seconds_ = 0, calls_ = 0; }
  double seconds() const { return seconds_; }
  int64_t calls() const { return calls_; }

 private:
  template <typename F>
  void timed(F&& f) {
    const double t = now_s();
    f();
    seconds_ += now_s() - t, ++calls_;
  }
  gyre::model::TpComm& in_;
  double seconds_ = 0;
  int64_t calls_ = 0;
};

// --tp N: T1 (the unsharded model alone on each GPU) vs T_N (the model sharded over `group`) on the
// same global batch; see the header.
int run_tp(gyre::dist::Comm& world, gyre::dist::Comm& group, int tp, const std::string& shape,
           const gyre::model::ModelConfig& cfg, int seqs, int len, int iters, bool skip_single) {
  using gyre::Device;
  if (group.size() != tp)
    GYRE_THROW(invalid_argument,
               "--tp {} needs exactly {} ranks (tensor parallelism alone: this bench does not "
               "combine DP and TP), but {} are running",
               tp, tp, group.size());
  // The same global batch on every rank (a TP group trains one batch together).
  const auto batch = gyre::bench::random_sequences(seqs, len, cfg.vocab_size, 12345u);
  const double tokens = double(seqs) * len;
  const int rank = group.rank();

  // T1: the unsharded model alone on each GPU (the ranks run at once but exchange nothing).
  // --skip-single 1: not measured (a shape whose training state does not fit one GPU, such as
  // qwen3-8b's ~131 GB of f32 masters, gradients and AdamW moments); its fields print as null.
  double t1 = 0, loss1 = 0;
  size_t peak1 = 0;
  const int64_t params = cfg.num_parameters();
  if (!skip_single) {
    gyre::bench::reset_peak_memory(Device::cuda);
    auto single = gyre::model::CausalLM::random_init(cfg, 1);
    single->to(Device::cuda);
    single->set_precision(gyre::model::Precision::bf16);
    // The same step as the N-GPU one: 8192-token micro-batches, copies dropped per step.
    gyre::bench::TrainStep step(*single, batch, 8192, /*optimizer_writes_copies=*/false);
    loss1 = step.run();  // warm-up, at the initial weights
    // One more warm-up: GEMM autotuning (default on) tunes a large GEMM on its second launch.
    t1 = gyre::bench::time_steps([&] { step.run(); }, iters, 1);
    peak1 = gyre::bench::peak_memory_bytes(Device::cuda);
  }  // frees the unsharded model, its gradients and its AdamW state
  group.barrier();

  // T_N: the same step with the model sharded over the group: the same initial weights (every rank
  // draws the full model and keeps its shard).
  // The model's collectives go through a timing wrapper: the host time spent in them (a blocking
  // one waits for the GPU work before it, then for the transfer; the activations' stream-ordered
  // all-reduces only enqueue) is reported as tp_collectives_s per step.
  auto inner_comm = gyre::dist::make_tp_comm(group);
  TimedTpComm timed_comm(*inner_comm);
  gyre::model::TpComm* tp_comm = &timed_comm;
  gyre::bench::reset_peak_memory(Device::cuda);
  auto model = gyre::model::CausalLM::random_init(cfg, 1, 0.02f, tp_comm);
  model->to(Device::cuda);
  model->set_precision(gyre::model::Precision::bf16);
  gyre::model::Gradients grads = model->zeros_like_parameters();
  gyre::train::AdamW opt({.lr = 1e-6, .clip_grad = 1.0}, {});  // TrainStep's optimizer
  opt.set_grad_sum_squares([&model](const gyre::train::NamedTensors& g) {
    std::vector<gyre::Tensor> v;
    for (const auto& [name, t] : g) v.push_back(t);
    return model->grad_sum_squares(v);
  });
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
    const double loss =
        gyre::model::policy_gradient_loss_and_grad(*model, batch, prompt_lens, adv, grads);
    const double b = now_s();  // the loss is a host value: the backward has finished
    opt.step(plist, glist);    // reads the (all-reduced) gradient norm back: synchronised
    const double c = now_s();
    if (timed) fb_s += b - a, opt_s += c - b;
    return loss;
  };
  const double loss_tp = step(false);  // warm-up, at the initial weights
  group.barrier();
  timed_comm.reset();
  const double t0 = now_s();
  for (int i = 0; i < iters; ++i) step(true);
  const double tn = (now_s() - t0) / iters;
  fb_s /= iters, opt_s /= iters;
  const double coll_s = timed_comm.seconds() / iters;
  const double coll_calls = double(timed_comm.calls()) / iters;
  if (gyre::ops::op_profile_enabled()) {  // GYRE_OP_PROFILE=1: one more step, op by op
    gyre::ops::op_profile_report();       // drops the timed steps' records
    step(false);
    if (rank == 0) std::fprintf(stderr, "%s", gyre::ops::op_profile_report().c_str());
  }
  const size_t peak_n = gyre::bench::peak_memory_bytes(Device::cuda);

  // Replicated parameters (norm weights) identical on every rank: Σ w² agrees bitwise.
  std::vector<const gyre::Tensor*> rep;
  const auto& split = model->tensor_parallel()->split;
  for (size_t i = 0; i < plist.size(); ++i)
    if (split[i] == gyre::model::TpSplit::replicated) rep.push_back(&plist[i].second);
  const double sq = rep.empty() ? 0.0 : gyre::ops::sum_squares_many(rep);
  const double sq_max = group.all_reduce(sq, gyre::dist::ReduceOp::max);
  const double sq_min = -group.all_reduce(-sq, gyre::dist::ReduceOp::max);
  // The slowest rank sets the pace of both figures; memory per rank.
  const double t1_max = group.all_reduce(t1, gyre::dist::ReduceOp::max);
  const double tn_max = group.all_reduce(tn, gyre::dist::ReduceOp::max);
  std::vector<double> mem(size_t(2 * tp), 0.0);
  mem[size_t(rank)] = double(peak1) / kGiB;
  mem[size_t(tp + rank)] = double(peak_n) / kGiB;
  group.all_reduce(mem, gyre::dist::ReduceOp::sum);
  if (world.rank() == 0) {
    auto list = [&](int from) {
      std::string s = "[";
      char buf[32];
      for (int r = 0; r < tp; ++r) {
        std::snprintf(buf, sizeof buf, "%s%.2f", r ? ", " : "", mem[size_t(from + r)]);
        s += buf;
      }
      return s + "]";
    };
    const double flops =
        gyre::bench::train_step_flops(cfg, params, std::vector<int64_t>(size_t(seqs), len));
    // A figure of the skipped single-GPU phase prints as null.
    const auto num = [&](double v, const char* f) {
      char buf[64];
      if (skip_single) return std::string("null");
      std::snprintf(buf, sizeof buf, f, v);
      return std::string(buf);
    };
    std::printf(
        "{\"bench\": \"tp_train_gpu\", \"shape\": \"%s\", \"layers\": %lld, \"gpus\": %d, "
        "\"tp\": %d, \"precision\": \"bf16\", \"global_tokens_per_step\": %.0f, "
        "\"single_gpu_step_s\": %s, \"tp_step_s\": %.4f, \"tp_forward_backward_s\": %.4f, "
        "\"tp_optimizer_s\": %.4f, \"tp_collectives_s\": %.4f, \"tp_collective_calls\": %.0f, "
        "\"single_gpu_tokens_per_s\": %s, \"tp_tokens_per_s\": %.0f, "
        "\"single_gpu_mfu\": %s, \"tp_mfu\": %.3f, \"tp_scaling_efficiency\": %s, "
        "\"single_gpu_peak_mem_gib\": %s, \"tp_peak_mem_gib_per_rank\": %s, "
        "\"first_loss_single_gpu\": %s, \"first_loss_tp\": %.6f, "
        "\"replicated_sum_sq_spread\": %.3g}\n",
        shape.c_str(), (long long)cfg.num_hidden_layers, group.size(), tp, tokens,
        num(t1_max, "%.4f").c_str(), tn_max, fb_s, opt_s, coll_s, coll_calls,
        num(tokens / t1_max, "%.0f").c_str(), tokens / tn_max,
        num(flops / t1_max / gyre::bench::kH200PeakFlops, "%.3f").c_str(),
        flops / tn_max / (tp * gyre::bench::kH200PeakFlops),
        num(t1_max / (tp * tn_max), "%.3f").c_str(), skip_single ? "null" : list(0).c_str(),
        list(tp).c_str(), num(loss1, "%.6f").c_str(), loss_tp, sq_max - sq_min);
    std::fflush(stdout);
  }
  return 0;
}

int run(int argc, char** argv) {
  std::string shape = "qwen2.5-0.5b", mode = "zero1", overlap = "both";
  int seqs = 4, len = 4096, iters = 3, layers = 0, tp = 1, skip_single = 0;
  for (int i = 1; i < argc; i += 2) {
    if (!std::strcmp(argv[i], "--no-overlap")) {
      overlap = "off";
      --i;  // a flag without a value
      continue;
    }
    if (i + 1 >= argc)
      GYRE_THROW(invalid_argument,
                 "flag {} needs a value (see the header of bench/dp_train_gpu.cc)", argv[i]);
    if (!std::strcmp(argv[i], "--overlap"))
      overlap = argv[i + 1];
    else if (!std::strcmp(argv[i], "--shape"))
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
    else if (!std::strcmp(argv[i], "--tp"))
      tp = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--skip-single"))
      skip_single = std::atoi(argv[i + 1]);
    else
      GYRE_THROW(invalid_argument, "unknown flag {} (see the header of bench/dp_train_gpu.cc)",
                 argv[i]);
  }
  if (seqs < 1 || len < 2 || iters < 1 || tp < 1)
    GYRE_THROW(invalid_argument,
               "--seqs {} --len {} --iters {} --tp {}: need >= 1, >= 2, >= 1, >= 1", seqs, len,
               iters, tp);
  if (overlap != "both" && overlap != "on" && overlap != "off")
    GYRE_THROW(invalid_argument, "--overlap {}: use both, on or off", overlap);
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
  if (skip_single && tp == 1)
    GYRE_THROW(invalid_argument,
               "--skip-single applies to --tp N > 1 only (the DP bench's efficiency needs its "
               "single-GPU step)");
  if (tp > 1) return run_tp(*world, *dp, tp, shape, cfg, seqs, len, iters, skip_single != 0);
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
    // The same step as the N-GPU one: 8192-token micro-batches, copies dropped per step.
    gyre::bench::TrainStep single(*model, batch, 8192, /*optimizer_writes_copies=*/false);
    t1 = gyre::bench::time_steps([&] { single.run(); }, iters, 2);
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
  // TrainStep's loss (policy_gradient_loss_and_grad: prompt length 1, advantage 1, normalised by
  // the response tokens) over its packing (micro-batches of <= 8192 tokens), written out here so
  // that only the last micro-batch's backward carries the gradient-ready hook.
  std::vector<std::vector<std::vector<int32_t>>> micro;
  int64_t response_tokens = 0, filled = 0;
  for (const auto& s : batch) {
    if (micro.empty() || (filled > 0 && filled + int64_t(s.size()) > 8192))
      micro.emplace_back(), filled = 0;
    micro.back().push_back(s);
    filled += int64_t(s.size());
    response_tokens += int64_t(s.size()) - 1;
  }
  double fb_s = 0, opt_s = 0;
  auto step = [&](bool overlapped) {
    grads.zero();
    const double a = now_s();
    double loss = 0;
    for (size_t k = 0; k < micro.size(); ++k) {
      auto sb = gyre::model::score_for_training(*model, micro[k], 1.0f, false);
      const int64_t T = sb.batch.num_tokens();
      gyre::Tensor dlogp = gyre::Tensor::zeros({T});
      const gyre::Tensor lp = sb.logp.to(gyre::Device::cpu);  // the loss: a host value
      const int32_t* cu = sb.batch.cu_seqlens.i32();
      const double coef = -1.0 / double(response_tokens);
      for (int64_t q = 0; q + 1 < sb.batch.cu_seqlens.numel(); ++q)
        for (int64_t r = cu[q]; r < cu[q + 1] - 1; ++r)
          loss += coef * lp.f32()[r], dlogp.f32()[r] = float(coef);
      const bool last = k + 1 == micro.size();
      if (overlapped && last) {
        opt.begin_overlap(plist, glist);
        model->set_grad_ready_hook(opt.grad_ready_hook());
      }
      gyre::model::backward_from_logprobs(*model, sb, dlogp, gyre::Tensor(), grads);
      model->set_grad_ready_hook({});
    }
    sync_compute_stream();  // the backward is done; started reductions may still be running
    const double b = now_s();
    opt.step(plist, glist);
    sync_compute_stream();  // the parameters are current (the all-gather is stream-ordered)
    const double c = now_s();
    fb_s += b - a, opt_s += c - b;
    return loss;
  };
  struct Timing {
    double step_s = 0, fb_s = 0, opt_s = 0;
  };
  auto time_dp = [&](bool overlapped) {
    step(overlapped);  // warm-up (the first step also fixes the optimizer's layout)
    dp->barrier();
    fb_s = opt_s = 0;
    const double t0 = now_s();
    for (int i = 0; i < iters; ++i) step(overlapped);
    Timing t;
    t.step_s = (now_s() - t0) / iters;
    t.fb_s = fb_s / iters, t.opt_s = opt_s / iters;
    // The slowest rank sets the pace.
    t.step_s = dp->all_reduce(t.step_s, gyre::dist::ReduceOp::max);
    return t;
  };
  Timing off, on;
  if (overlap != "on") off = time_dp(false);
  if (overlap != "off") on = time_dp(true);
  const Timing& main_t = overlap == "off" ? off : on;
  const double tn = main_t.step_s;

  // Replicas identical: Σ w² over all parameters must agree bitwise across the ranks.
  std::vector<const gyre::Tensor*> pts;
  for (auto& [name, t] : plist) pts.push_back(&t);
  const double sq = gyre::ops::sum_squares_many(pts);
  const double sq_max = dp->all_reduce(sq, gyre::dist::ReduceOp::max);
  const double sq_min = -dp->all_reduce(-sq, gyre::dist::ReduceOp::max);
  // The slowest rank sets the pace of both figures.
  const double t1_max = dp->all_reduce(t1, gyre::dist::ReduceOp::max);
  const double tn_max = tn;  // already the slowest rank's (time_dp)
  const int buckets = int(opt.bucket_params().size()), early = opt.buckets_started_early();
  if (world->rank() == 0) {
    const int n = dp->size();
    const double flops =
        gyre::bench::train_step_flops(cfg, params, std::vector<int64_t>(size_t(seqs), len));
    // Efficiency of each variant measured (-1: not measured).
    auto eff = [&](const Timing& t) { return t.step_s > 0 ? t1_max / t.step_s : -1.0; };
    std::printf(
        "{\"bench\": \"dp_train_gpu\", \"shape\": \"%s\", \"layers\": %lld, \"gpus\": %d, "
        "\"dp_mode\": \"%s\", \"overlap\": \"%s\", \"buckets\": %d, "
        "\"buckets_overlapped\": %d, \"tokens_per_gpu_step\": %.0f, "
        "\"single_gpu_step_s\": %.4f, \"dp_step_s\": %.4f, \"dp_forward_backward_s\": %.4f, "
        "\"dp_optimizer_s\": %.4f, \"dp_step_s_no_overlap\": %.4f, "
        "\"dp_forward_backward_s_no_overlap\": %.4f, \"dp_optimizer_s_no_overlap\": %.4f, "
        "\"single_gpu_tokens_per_s\": %.0f, \"dp_tokens_per_s\": %.0f, \"dp_mfu\": %.3f, "
        "\"scaling_efficiency\": %.3f, \"scaling_efficiency_overlap\": %.3f, "
        "\"scaling_efficiency_no_overlap\": %.3f, \"anchor_efficiency\": 0.9, "
        "\"replica_sum_sq_spread\": %.3g}\n",
        shape.c_str(), (long long)cfg.num_hidden_layers, n, mode.c_str(), overlap.c_str(), buckets,
        overlap == "off" ? 0 : early, tokens, t1_max, tn_max, main_t.fb_s, main_t.opt_s, off.step_s,
        off.fb_s, off.opt_s, tokens / t1_max, n * tokens / tn_max,
        flops / tn_max / gyre::bench::kH200PeakFlops, t1_max / tn_max, eff(on), eff(off),
        sq_max - sq_min);
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
