// Tensor parallelism on 2 GPUs over NCCL (model/tensor_parallel.h; the tp group is the NCCL world,
// one GPU per rank), launched torchrun-style like dp_nccl_test.cc (gpu/dist/env_workers.h; logs in
// /tmp/gyre_tp_worker_<rank>.log). A Qwen2-shaped model with random weights, sharded TP = 2, must
// compute what the unsharded model computes on one GPU (each worker runs that reference on its own
// GPU, same weights, same packed batch of variable-length sequences):
//   (a) per-token log-probs and entropies (temperatures 1 and 0.7),
//   (b) every parameter gradient of a scalar loss built from them (fixed random weights on the
//       log-probs and the entropies, plus the policy-gradient loss on top), reassembled with
//       gather_full, and the clipping norm (grad_sum_squares) of the sharded gradient,
//   (c) the weights after two AdamW steps (clipping by the full gradient's norm through
//       AdamW::set_grad_sum_squares, as the trainer does under TP),
// and the replicated parameters (RMSNorm weights) get the same gradients and weights on both ranks.
// Cases: small_config() (gpu/model/small_model.h: untied, q/k/v biases, head dim 64, 2 query and 1
// kv head per rank) in f32 and under bf16 autocast; Qwen2.5-0.5B's shape cut to 2 layers in f32
// (tied embedding, 151936-token vocabulary, 7 query heads per rank). Every rank prints its measured
// differences on "[tp]" lines, which the launcher test echoes.
//
// Bounds, f32. TP computes the same function with the f32 sums regrouped: a row-parallel output
// (o_proj, down_proj) is two half-K GEMMs summed by an all-reduce instead of one GEMM; the
// vocab-parallel log-softmax and entropy combine two half-vocabulary maxima and sums; the backward
// all-reduces two partial d(input)s of every column-parallel block; all GEMMs run other shapes, so
// cuBLASLt picks other tiles and split-K; and the reference scores through the fused
// chunked-vocabulary path while TP takes the unfused vocab-parallel one. A reordered f32 sum of n
// terms moves by at most ~n·u·Σ|terms| (u = 2^-24 ≈ 6e-8), typically √n·u·Σ|terms|: over a few
// layers of O(1) activations that is ~1e-6 relative (the CPU TP test, deterministic OpenBLAS,
// passes at 1e-5). So: log-probs and entropies max |Δ| <= 1e-5 × max(1, max |ref|) (~1e-4 nats for
// log-probs around -7..-12); loss 1e-5 relative. A gradient entry is a sum over tokens whose terms
// partly cancel (advantages of both signs), so its error is relative to its terms, not to itself:
// per tensor max |Δ| <= 1e-4 × max(max |ref| of the tensor, 1e-2 × the largest entry of any
// gradient) — the floor covers tensors whose gradient cancels to ~0 (the k_proj bias: softmax is
// shift-invariant); Σ g² within 2e-4 relative. Replicated parameters: both ranks run the same
// kernels on all-reduced (identical) inputs, so they should agree bitwise; bound 1e-6 of the scale.
// AdamW: the first step moves w by lr·g/(|g| + eps) — with the usual eps = 1e-8 a gradient entry
// near 0 flips its update by up to 2·lr on f32 noise alone. The test sets eps to the RMS of the
// clipped gradient and clips at half the gradient norm, so every entry is in Adam's near-linear
// regime (|∂update/∂g| <= lr/eps) and the update depends on the clipping coefficient (a wrong TP
// norm moves it by a sizeable fraction of lr): weights max |Δ| <= 1e-2 × lr (the gradient bound
// times max|g|/rms(g), <= ~100).
// Bounds, bf16 autocast (GEMM and attention operands rounded to bf16, 2^-8 relative, f32
// accumulation; gpu/model/bf16_model_gpu_test.cc): the same regrouping, plus the bf16 rounding of
// an operand flips where the f32 noise crosses a rounding boundary, each flip one bf16 ulp of one
// operand. That is far below bf16-vs-f32 (max 2.3e-2 nats per log-prob, 1.7e-2 per gradient
// tensor on an H200), which bounds it by the triangle inequality: log-probs and entropies
// max |Δ| <= 1e-2 × max(1, max |ref|), gradients 2e-2 (same scale as f32).
// Needs 2 visible GPUs; skips otherwise.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "gpu/dist/env_workers.h"
#include "gpu/model/small_model.h"
#include "gyre/backend/ops.h"
#include "gyre/core/philox.h"
#include "gyre/dist/bootstrap.h"
#include "gyre/dist/nccl_comm.h"
#include "gyre/dist/tensor_parallel_comm.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/named_shapes.h"
#include "gyre/model/scoring.h"
#include "gyre/model/tensor_parallel.h"
#include "gyre/train/optimizer.h"
#include "test_util.h"

namespace gyre::model {
namespace {

using test::envw::count_of;
using test::envw::echo_lines;
using test::envw::run_env_workers;
using test::envw::worker_port;

std::vector<float> host(const Tensor& t) { return t.to(Device::cpu).to_vector(); }

// The largest |got - want| (infinite on a size mismatch or a NaN), where, and max |want|.
struct Diff {
  double max_abs = 0, scale = 0;
  size_t worst = 0;
  // max_abs relative to max(scale, floor).
  double rel(double floor) const { return max_abs / std::max(scale, floor); }
};

Diff diff_of(const std::vector<float>& got, const std::vector<float>& want) {
  Diff d;
  if (got.size() != want.size()) {
    d.max_abs = INFINITY;
    return d;
  }
  for (size_t i = 0; i < got.size(); ++i) {
    const double e = std::fabs(double(got[i]) - double(want[i]));
    if (std::isnan(e)) {
      d.max_abs = INFINITY, d.worst = i;
      break;
    }
    if (e > d.max_abs) d.max_abs = e, d.worst = i;
    d.scale = std::max(d.scale, std::fabs(double(want[i])));
  }
  return d;
}

struct Case {
  std::string name;
  ModelConfig cfg;
  float init_std = 0.02f;
  std::vector<std::vector<int32_t>> seqs;
  std::vector<int32_t> prompt_lens;
  std::vector<float> advantages;
  Precision precision = Precision::f32;
  double tol_logprob = 0;  // max |Δ| / max(1, max |ref|), log-probs and entropies
  double tol_grad = 0;     // per tensor, see the header
  bool adamw = false;      // (c): two AdamW steps (f32 only: the optimizer is f32 either way)
};

// Sequences of these lengths with ids drawn over the whole vocabulary (both ranks' vocab shards
// are hit). A length-1 sequence has no target; 300 is longer than a flash-attention tile.
std::vector<std::vector<int32_t>> sequences(int64_t vocab, uint64_t seed) {
  std::vector<std::vector<int32_t>> seqs;
  PhiloxStream rng(seed, 0);
  for (int len : {1, 37, 300, 129}) {
    std::vector<int32_t> s;
    for (int i = 0; i < len; ++i) s.push_back(int32_t(rng.next_u32() % uint32_t(vocab)));
    seqs.push_back(s);
  }
  return seqs;
}

std::vector<Case> cases() {
  const std::vector<int32_t> prompts{1, 5, 20, 1};
  const std::vector<float> adv{0.5f, -1.0f, 1.0f, 0.25f};
  const ModelConfig small = testmodel::small_config();
  ModelConfig qwen05 = named_shape("qwen2.5-0.5b");
  qwen05.num_hidden_layers = 2;
  std::vector<Case> v;
  v.push_back({"small f32", small, 0.05f, sequences(small.vocab_size, 3), prompts, adv,
               Precision::f32, 1e-5, 1e-4, true});
  v.push_back({"small bf16", small, 0.05f, sequences(small.vocab_size, 3), prompts, adv,
               Precision::bf16, 1e-2, 2e-2, false});
  v.push_back({"qwen2.5-0.5b x 2 layers f32", qwen05, 0.02f, sequences(qwen05.vocab_size, 5),
               prompts, adv, Precision::f32, 1e-5, 1e-4, true});
  return v;
}

// Compares the replicated tensors of `ts` (parameters() order) across the ranks: every rank's
// values against rank 0's (host buffers; NcclComm stages them through the GPU). Returns max |Δ|
// relative to max |rank 0's values|; *bitwise tells whether they are identical.
double replicated_spread(dist::Comm& world, const CausalLM& m, const std::vector<NamedTensor>& ts,
                         bool* bitwise) {
  const TpLayout& tp = *m.tensor_parallel();
  std::vector<float> mine;
  for (size_t i = 0; i < ts.size(); ++i)
    if (tp.split[i] == TpSplit::replicated) {
      const auto v = host(ts[i].tensor);
      mine.insert(mine.end(), v.begin(), v.end());
    }
  *bitwise = true;
  if (mine.empty()) return 0;
  const size_t n = mine.size();
  std::vector<float> all(n * size_t(world.size()));
  world.all_gather(mine.data(), all.data(), n * sizeof(float));
  const std::vector<float> first(all.begin(), all.begin() + std::ptrdiff_t(n));
  double worst = 0;
  for (int r = 1; r < world.size(); ++r) {
    const std::vector<float> other(all.begin() + std::ptrdiff_t(n * size_t(r)),
                                   all.begin() + std::ptrdiff_t(n * size_t(r + 1)));
    if (std::memcmp(other.data(), first.data(), n * sizeof(float)) != 0) *bitwise = false;
    worst = std::max(worst, diff_of(other, first).rel(1e-30));
  }
  return worst;
}

void run_case(dist::Comm& world, TpComm& tp, const Case& c) {
  SCOPED_TRACE(c.name);
  const int rank = world.rank();
  const char* name = c.name.c_str();
  auto ref = CausalLM::random_init(c.cfg, 7, c.init_std);
  auto m = CausalLM::random_init(c.cfg, 7, c.init_std, &tp);  // the same draw, this rank's shard
  ref->to(Device::cuda);
  m->to(Device::cuda);
  ref->set_precision(c.precision);
  m->set_precision(c.precision);
  ASSERT_NE(m->tensor_parallel(), nullptr);
  EXPECT_EQ(m->tensor_parallel()->local.num_attention_heads, c.cfg.num_attention_heads / 2);
  EXPECT_EQ(m->tensor_parallel()->local.vocab_size, c.cfg.vocab_size / 2);
  for (const auto& p : m->parameters()) EXPECT_EQ(p.tensor.device(), Device::cuda) << p.name;

  // (a) Log-probs and entropies, vocab-parallel (never gathered), at two temperatures.
  double lp_worst = 0, ent_worst = 0, lp_abs = 0, ent_abs = 0;
  for (float temp : {1.0f, 0.7f}) {
    const auto s_ref = score(*ref, c.seqs, temp, true), s_tp = score(*m, c.seqs, temp, true);
    ASSERT_EQ(s_tp.size(), s_ref.size());
    std::vector<float> lr, lt, er, et;
    for (size_t i = 0; i < s_ref.size(); ++i) {
      lr.insert(lr.end(), s_ref[i].token_logprobs.begin(), s_ref[i].token_logprobs.end());
      lt.insert(lt.end(), s_tp[i].token_logprobs.begin(), s_tp[i].token_logprobs.end());
      er.insert(er.end(), s_ref[i].entropy.begin(), s_ref[i].entropy.end());
      et.insert(et.end(), s_tp[i].entropy.begin(), s_tp[i].entropy.end());
    }
    const Diff dl = diff_of(lt, lr), de = diff_of(et, er);
    EXPECT_LE(dl.rel(1.0), c.tol_logprob) << "log-probs at temperature " << temp << ": max |diff| "
                                          << dl.max_abs << " at token " << dl.worst;
    EXPECT_LE(de.rel(1.0), c.tol_logprob) << "entropies at temperature " << temp << ": max |diff| "
                                          << de.max_abs << " at token " << de.worst;
    lp_worst = std::max(lp_worst, dl.rel(1.0)), lp_abs = std::max(lp_abs, dl.max_abs);
    ent_worst = std::max(ent_worst, de.rel(1.0)), ent_abs = std::max(ent_abs, de.max_abs);
  }
  std::printf(
      "[tp] %s rank %d: log-probs max |diff| %.3e (relative %.3e), entropies %.3e (relative "
      "%.3e); bound %.0e relative\n",
      name, rank, lp_abs, lp_worst, ent_abs, ent_worst, c.tol_logprob);

  // (b) Backward through log-probs AND entropies at τ = 0.7 with fixed random upstream gradients,
  // then the policy-gradient loss on top (accumulating): every parameter gradient, reassembled.
  int64_t T = 0;
  for (const auto& s : c.seqs) T += int64_t(s.size());
  std::vector<float> dlp(static_cast<size_t>(T)), dent(static_cast<size_t>(T));
  PhiloxStream rng(11, 1);
  for (int64_t t = 0; t < T; ++t)
    dlp[size_t(t)] = rng.next_normal(), dent[size_t(t)] = 0.3f * rng.next_normal();
  Gradients g_ref = ref->zeros_like_parameters(), g_tp = m->zeros_like_parameters();
  for (CausalLM* model : {ref.get(), m.get()}) {
    ScoredBatch sb = score_for_training(*model, c.seqs, 0.7f, true);
    backward_from_logprobs(*model, sb, Tensor::from_vector(dlp, {T}),
                           Tensor::from_vector(dent, {T}), model == ref.get() ? g_ref : g_tp);
  }
  const double l_ref =
      policy_gradient_loss_and_grad(*ref, c.seqs, c.prompt_lens, c.advantages, g_ref);
  const double l_tp = policy_gradient_loss_and_grad(*m, c.seqs, c.prompt_lens, c.advantages, g_tp);
  EXPECT_NEAR(l_tp, l_ref, c.tol_logprob * std::max(1.0, std::fabs(l_ref)));
  const auto full = m->gather_full(g_tp.tensors);
  ASSERT_EQ(full.size(), g_ref.tensors.size());
  std::vector<std::vector<float>> want(full.size());
  double g_max = 0;
  for (size_t i = 0; i < full.size(); ++i) {
    want[i] = host(g_ref.tensors[i].tensor);
    for (float x : want[i]) g_max = std::max(g_max, double(std::fabs(x)));
  }
  double g_worst = 0;
  std::string g_worst_name;
  for (size_t i = 0; i < full.size(); ++i) {
    const std::string& pn = g_ref.tensors[i].name;
    EXPECT_EQ(full[i].name, pn);
    EXPECT_EQ(full[i].tensor.shape(), g_ref.tensors[i].tensor.shape()) << pn;
    const Diff d = diff_of(host(full[i].tensor), want[i]);
    const double r = d.rel(1e-2 * g_max);
    EXPECT_LE(r, c.tol_grad) << "gradient " << pn << ": max |diff| " << d.max_abs << " at "
                             << d.worst << ", scale " << d.scale << " (largest gradient entry "
                             << g_max << ")";
    if (r >= g_worst) g_worst = r, g_worst_name = pn;
  }
  std::vector<Tensor> gl;
  for (const auto& g : g_tp.tensors) gl.push_back(g.tensor);
  const double sq_ref = g_ref.sum_squares(), sq_tp = m->grad_sum_squares(gl);
  EXPECT_NEAR(sq_tp, sq_ref, 2 * c.tol_grad * sq_ref);
  bool g_bitwise = false;
  const double g_spread = replicated_spread(world, *m, g_tp.tensors, &g_bitwise);
  EXPECT_LE(g_spread, 1e-6) << "replicated gradients differ across the ranks";
  std::printf(
      "[tp] %s rank %d: loss %.8f vs %.8f; gradients worst %.3e (%s; bound %.0e); sum g^2 %.9g vs "
      "%.9g (relative %.3e); replicated gradients across ranks: %s (max relative %.3e)\n",
      name, rank, l_tp, l_ref, g_worst, g_worst_name.c_str(), c.tol_grad, sq_tp, sq_ref,
      std::fabs(sq_tp - sq_ref) / sq_ref, g_bitwise ? "bitwise equal" : "differ", g_spread);
  std::fflush(stdout);
  if (!c.adamw) return;

  // (c) Two AdamW steps on the policy-gradient loss; the TP optimizer clips by the norm of the full
  // gradient (grad_sum_squares). eps and the clip threshold come from rank 0's reference gradient
  // (identical on every rank, else the replicated weights would drift apart).
  auto lists = [](CausalLM& model, Gradients& g) {
    train::NamedTensors p, gv;
    auto ps = model.parameters();
    for (size_t i = 0; i < ps.size(); ++i) {
      p.emplace_back(ps[i].name, ps[i].tensor);
      gv.emplace_back(g.tensors[i].name, g.tensors[i].tensor);
    }
    return std::make_pair(p, gv);
  };
  auto [ref_p, ref_g] = lists(*ref, g_ref);
  auto [tp_p, tp_g] = lists(*m, g_tp);
  const double lr = 1e-3;
  std::optional<train::AdamW> ref_opt, tp_opt;
  for (int step = 0; step < 2; ++step) {
    g_ref.zero();
    g_tp.zero();
    policy_gradient_loss_and_grad(*ref, c.seqs, c.prompt_lens, c.advantages, g_ref);
    policy_gradient_loss_and_grad(*m, c.seqs, c.prompt_lens, c.advantages, g_tp);
    if (!ref_opt) {
      double norm = std::sqrt(g_ref.sum_squares());
      world.broadcast(&norm, sizeof norm, 0);
      const double clip = 0.5 * norm, eps = clip / std::sqrt(double(ref->num_parameters()));
      const train::AdamWConfig ac{.lr = lr, .eps = eps, .weight_decay = 0.01, .clip_grad = clip};
      ref_opt.emplace(ac, train::LrSchedule{});
      tp_opt.emplace(ac, train::LrSchedule{});
      const CausalLM* tpm = m.get();
      tp_opt->set_grad_sum_squares([tpm](const train::NamedTensors& g) {
        std::vector<Tensor> v;
        for (const auto& [n, t] : g) v.push_back(t);
        return tpm->grad_sum_squares(v);
      });
      std::printf("[tp] %s rank %d: AdamW lr %.0e eps %.3e clip %.4g (gradient norm %.4g)\n", name,
                  rank, lr, eps, clip, norm);
    }
    const auto [ref_norm, ref_lr] = ref_opt->step(ref_p, ref_g);
    const auto [tp_norm, tp_lr] = tp_opt->step(tp_p, tp_g);
    EXPECT_NEAR(tp_norm, ref_norm, 1e-5 * ref_norm) << "step " << step;
    EXPECT_EQ(tp_lr, ref_lr);
    const auto full_w = m->gather_full(m->parameters());
    const auto ref_w = ref->parameters();
    ASSERT_EQ(full_w.size(), ref_w.size());
    double w_worst = 0;
    std::string w_worst_name;
    for (size_t i = 0; i < ref_w.size(); ++i) {
      const Diff d = diff_of(host(full_w[i].tensor), host(ref_w[i].tensor));
      EXPECT_LE(d.max_abs, 1e-2 * lr)
          << "step " << step << " weight " << ref_w[i].name << " at " << d.worst;
      if (d.max_abs >= w_worst) w_worst = d.max_abs, w_worst_name = ref_w[i].name;
    }
    bool w_bitwise = false;
    const double w_spread = replicated_spread(world, *m, m->parameters(), &w_bitwise);
    EXPECT_LE(w_spread, 1e-6) << "replicated weights differ across the ranks, step " << step;
    std::printf(
        "[tp] %s rank %d: AdamW step %d: grad norm %.9g vs %.9g; weights max |diff| %.3e = %.3e lr "
        "(%s; bound 1e-2 lr); replicated weights across ranks: %s (max relative %.3e)\n",
        name, rank, step, tp_norm, ref_norm, w_worst, w_worst / lr, w_worst_name.c_str(),
        w_bitwise ? "bitwise equal" : "differ", w_spread);
    std::fflush(stdout);
  }
}

// Rank r's local logits [R, c] for the gather check: deterministic in (r, step), so every rank
// can build the expected full rows; specials included (-0.0, ±inf, a NaN payload, denormals), which
// a gather must move as bits.
std::vector<float> gather_block(int r, int step, int64_t R, int64_t c) {
  std::vector<float> v(size_t(R * c));
  PhiloxStream rng(uint64_t(100 + step), uint64_t(r));
  for (auto& x : v) x = float(int32_t(rng.next_u32() % 2000001u) - 1000000) * 1e-3f;
  v[0] = -0.0f;
  v[1] = std::numeric_limits<float>::infinity();
  v[2] = -std::numeric_limits<float>::infinity();
  uint32_t nan_bits = 0x7fc01234u + uint32_t(r), denorm_bits = 0x00000017u;
  std::memcpy(&v[3], &nan_bits, 4);
  std::memcpy(&v[4], &denorm_bits, 4);
  return v;
}

// tp_gather_vocab on the device (stream-ordered NCCL all-gather + interleave kernel) against the
// host path (tp_gather_vocab_host) and the expected rows, bitwise; then the device gather captured
// in a CUDA graph (the TP decode graphs' last collective) and replayed over new contents, bitwise
// again.
void check_vocab_gather(TpComm& tp) {
  const int n = tp.size(), me = tp.rank();
  const int64_t R = 5, c = 1000;  // odd shapes on purpose
  TpLayout layout;
  layout.comm = &tp;
  layout.rank = me;
  layout.size = n;
  auto expected = [&](int step) {
    std::vector<float> full(size_t(R * c * n));
    for (int r = 0; r < n; ++r) {
      const std::vector<float> b = gather_block(r, step, R, c);
      for (int64_t i = 0; i < R; ++i)
        std::memcpy(&full[size_t(i * c * n + r * c)], &b[size_t(i * c)], size_t(c) * 4);
    }
    return full;
  };
  auto same_bits = [](const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
  };
  Tensor local = Tensor::from_vector(gather_block(me, 0, R, c), {R, c}).to(Device::cuda);
  const std::vector<float> dev = host(tp_gather_vocab(layout, local));
  const std::vector<float> via_host = host(tp_gather_vocab_host(layout, local));
  EXPECT_TRUE(same_bits(dev, via_host)) << "device gather != host gather";
  EXPECT_TRUE(same_bits(dev, expected(0))) << "device gather != the expected rows";

  // Captured: warm-up + capture run inside capture(), then two replays over new inputs.
  Tensor out;
  ops::DeviceGraph graph;
  graph.capture([&] { out = tp_gather_vocab(layout, local); });
  for (int step = 1; step <= 2; ++step) {
    local.copy_from(Tensor::from_vector(gather_block(me, step, R, c), {R, c}));
    graph.replay();
    tp.watch_replay("gather test replay");
    EXPECT_TRUE(same_bits(host(out), expected(step))) << "replay " << step;
  }
  std::printf(
      "[tp] rank %d: vocab gather [%lld, %lld] x %d on the device == host path == "
      "expected, bitwise; captured in a CUDA graph and replayed twice, bitwise\n",
      me, static_cast<long long>(R), static_cast<long long>(c), n);
  std::fflush(stdout);
}

TEST(TensorParallelNccl, TwoGpusMatchOneGpu) {
  GYRE_SKIP_WITHOUT_GPUS(2);
  auto r = run_env_workers("TensorParallelNccl.DISABLED_Worker", 2, worker_port(29900), "tp");
  echo_lines(r.out, "[tp]");
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(count_of(r.out, "[  PASSED  ] 1 test"), 2u) << r.out;  // on both ranks
}

// One rank of the test above: the tp group is the whole (NCCL) world.
TEST(TensorParallelNccl, DISABLED_Worker) {
  auto world = dist::init_distributed({.timeout_s = 120});
  ASSERT_EQ(world->size(), 2);
  ASSERT_EQ(world->buffer_device(), Device::cuda) << "a torchrun-style world talks NCCL";
  auto tp = dist::make_tp_comm(*world);
  ASSERT_TRUE(tp->graph_capturable());
  check_vocab_gather(*tp);
  for (const Case& c : cases()) run_case(*world, *tp, c);
}

}  // namespace
}  // namespace gyre::model
