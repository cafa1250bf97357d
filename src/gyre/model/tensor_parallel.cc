// Tensor parallelism for CausalLM (see tensor_parallel.h): the layout and sharding of the
// parameters, reassembly of full tensors, the vocab-parallel embedding and the vocab-parallel
// log-prob / entropy (forward and backward). The layer-level f/g operators live in
// decoder_layer.cc and causal_lm.cc next to the ops they wrap.
#include "gyre/model/tensor_parallel.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "gyre/backend/ops.h"
#include "gyre/core/error.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/weights.h"

namespace gyre::model {

namespace {

void check_cpu_f32(const Tensor& t, const char* what) {
  if (t.device() != Device::cpu || t.dtype() != DType::f32)
    GYRE_THROW(unsupported,
               "tensor parallelism runs on the CPU backend with f32 tensors; {} is {} on {}", what,
               dtype_name(t.dtype()), device_name(t.device()));
}

// Rows [r*n/size, (r+1)*n/size) of dimension `dim` (0 or 1) of a 2-D (or 1-D for dim 0) tensor.
Tensor slice(const Tensor& full, TpSplit split, int rank, int size) {
  if (split == TpSplit::replicated) return full;
  if (split == TpSplit::rows) {
    const int64_t n = full.size(0) / size;
    return full.narrow(rank * n, n).clone();
  }
  const int64_t R = full.size(0), C = full.size(1), c = C / size;
  Tensor out = Tensor::empty({R, c}, DType::f32);
  const float* src = full.f32();
  float* dst = out.f32();
  for (int64_t i = 0; i < R; ++i) std::memcpy(dst + i * c, src + i * C + rank * c, size_t(c) * 4);
  return out;
}

// [size, R, c] blocks in rank order -> [R, size*c].
Tensor interleave_cols(const std::vector<float>& blocks, int size, int64_t R, int64_t c) {
  Tensor out = Tensor::empty({R, c * size}, DType::f32);
  float* dst = out.f32();
  for (int r = 0; r < size; ++r)
    for (int64_t i = 0; i < R; ++i)
      std::memcpy(dst + i * c * size + r * c, blocks.data() + (int64_t(r) * R + i) * c,
                  size_t(c) * 4);
  return out;
}

void check_divisible(int64_t n, int size, const char* what, const char* flag_hint) {
  if (n % size != 0)
    GYRE_THROW(invalid_argument,
               "tensor parallelism: {} = {} is not divisible by --tensor-model-parallel-size {}; "
               "{}",
               what, n, size, flag_hint);
}

// Per-row softmax statistics of z = logits / τ over the whole (sharded) vocabulary.
struct VocabStats {
  std::vector<float> m;        // global max of z
  std::vector<double> s, wz;   // Σ exp(z - m), Σ exp(z - m) (z - m)
  std::vector<double> target;  // z_target - m (0 where there is no target)
};

VocabStats vocab_stats(const TpLayout& tp, const Tensor& logits, const Tensor& targets, float mul,
                       bool need_weighted) {
  const int64_t T = logits.size(0), V = logits.size(1);
  const float* x = logits.f32();
  const int32_t* tg = targets.i32();
  VocabStats st;
  st.m.assign(size_t(T), -std::numeric_limits<float>::infinity());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < V; ++j) st.m[size_t(t)] = std::max(st.m[size_t(t)], x[t * V + j]);
  for (auto& v : st.m) v *= mul;  // mul > 0: max(x * mul) = max(x) * mul
  tp.comm->all_reduce_max(st.m.data(), st.m.size());
  // One all-reduce for the three sums: [s | wz | target].
  std::vector<double> buf(size_t(3 * T), 0.0);
  for (int64_t t = 0; t < T; ++t) {
    const float m = st.m[size_t(t)];
    double s = 0, wz = 0;
    for (int64_t j = 0; j < V; ++j) {
      const double z = double(x[t * V + j] * mul - m);
      const double e = std::exp(z);
      s += e;
      if (need_weighted) wz += e * z;
    }
    buf[size_t(t)] = s;
    buf[size_t(T + t)] = wz;
    if (tg[t] >= tp.vocab_begin && tg[t] < tp.vocab_end)
      buf[size_t(2 * T + t)] = double(x[t * V + (tg[t] - tp.vocab_begin)] * mul - m);
  }
  tp.comm->all_reduce_sum(buf.data(), buf.size());
  st.s.assign(buf.begin(), buf.begin() + T);
  st.wz.assign(buf.begin() + T, buf.begin() + 2 * T);
  st.target.assign(buf.begin() + 2 * T, buf.end());
  return st;
}

void check_logprob_args(const TpLayout& tp, const Tensor& logits, const Tensor& targets) {
  check_cpu_f32(logits, "the logits");
  const int64_t Vl = tp.vocab_end - tp.vocab_begin;
  if (logits.dim() != 2 || logits.size(1) != Vl)
    GYRE_THROW(invalid_argument,
               "vocab-parallel log-probs: logits must be the local shard [T, {}] of tp rank {}, "
               "got {}",
               Vl, tp.rank, shape_str(logits.shape()));
  if (targets.dtype() != DType::i32 || targets.numel() != logits.size(0) ||
      targets.device() != Device::cpu)
    GYRE_THROW(invalid_argument, "vocab-parallel log-probs: targets must be host i32 [{}]",
               logits.size(0));
}

}  // namespace

std::vector<NamedTensor> shard_like(const TpLayout& tp, const std::vector<NamedTensor>& full) {
  GYRE_CHECK(full.size() == tp.split.size(), "{} tensors for {} parameters", full.size(),
             tp.split.size());
  std::vector<NamedTensor> out;
  out.reserve(full.size());
  for (size_t i = 0; i < full.size(); ++i)
    out.push_back({full[i].name, slice(full[i].tensor, tp.split[i], tp.rank, tp.size)});
  return out;
}

void tp_all_reduce(TpComm* comm, Tensor& t) {
  if (!comm || comm->size() == 1) return;
  check_cpu_f32(t, "an activation to all-reduce");
  comm->all_reduce_sum(t.f32(), size_t(t.numel()));
}

void tp_add_bias(Tensor& y, const Tensor& b) {
  const int64_t R = y.size(0), C = y.numel() / std::max<int64_t>(1, R);
  const float* pb = b.f32();
  float* py = y.f32();
  for (int64_t i = 0; i < R; ++i)
    for (int64_t j = 0; j < C; ++j) py[i * C + j] += pb[j];
}

void tp_embedding(const Tensor& ids, const Tensor& table, int64_t begin, Tensor& out) {
  const int64_t T = ids.numel(), H = table.size(1), n = table.size(0);
  const int32_t* id = ids.i32();
  const float* w = table.f32();
  float* o = out.f32();
  for (int64_t t = 0; t < T; ++t) {
    const int64_t local = int64_t(id[t]) - begin;
    if (local >= 0 && local < n)
      std::memcpy(o + t * H, w + local * H, size_t(H) * 4);
    else
      std::memset(o + t * H, 0, size_t(H) * 4);
  }
}

void tp_embedding_backward(const Tensor& ids, const Tensor& dout, int64_t begin, Tensor& dtable) {
  const int64_t T = ids.numel(), H = dtable.size(1), n = dtable.size(0);
  const int32_t* id = ids.i32();
  const float* d = dout.f32();
  float* g = dtable.f32();
  for (int64_t t = 0; t < T; ++t) {
    const int64_t local = int64_t(id[t]) - begin;
    if (local < 0 || local >= n) continue;
    for (int64_t j = 0; j < H; ++j) g[local * H + j] += d[t * H + j];
  }
}

void tp_token_logprobs(const TpLayout& tp, const Tensor& logits, const Tensor& targets,
                       float temperature, Tensor& logp, Tensor& entropy) {
  check_logprob_args(tp, logits, targets);
  const int64_t T = logits.size(0);
  const VocabStats st = vocab_stats(tp, logits, targets, 1.0f / temperature, entropy.defined());
  const int32_t* tg = targets.i32();
  float* lp = logp.f32();
  for (int64_t t = 0; t < T; ++t) {
    const double log_s = std::log(st.s[size_t(t)]);
    lp[t] = tg[t] < 0 ? 0.0f : float(st.target[size_t(t)] - log_s);
    // H = -Σ p (z - m - log s) = log s - Σ e (z - m) / s
    if (entropy.defined()) entropy.f32()[t] = float(log_s - st.wz[size_t(t)] / st.s[size_t(t)]);
  }
}

void tp_token_logprobs_backward(const TpLayout& tp, const Tensor& logits, const Tensor& targets,
                                float temperature, const Tensor& dlogp, const Tensor& dentropy,
                                Tensor& dlogits) {
  check_logprob_args(tp, logits, targets);
  const int64_t T = logits.size(0), V = logits.size(1);
  const float mul = 1.0f / temperature;
  const VocabStats st = vocab_stats(tp, logits, targets, mul, dentropy.defined());
  const float* x = logits.f32();
  const int32_t* tg = targets.i32();
  float* d = dlogits.f32();
  for (int64_t t = 0; t < T; ++t) {
    const double g_lp = tg[t] < 0 ? 0.0 : double(dlogp.f32()[t]);
    const double g_h = dentropy.defined() ? double(dentropy.f32()[t]) : 0.0;
    const double log_s = std::log(st.s[size_t(t)]);
    const double h = log_s - st.wz[size_t(t)] / st.s[size_t(t)];
    const double m = st.m[size_t(t)];
    // ∂logp/∂z_j = 1[j = target] - p_j;  ∂H/∂z_j = -p_j (log p_j + H);  ∂z/∂logits = 1/τ.
    for (int64_t j = 0; j < V; ++j) {
      const double zj = double(x[t * V + j] * mul) - m;
      const double p = std::exp(zj - log_s);
      d[t * V + j] = float((-g_lp * p - g_h * p * ((zj - log_s) + h)) * mul);
    }
    if (tg[t] >= tp.vocab_begin && tg[t] < tp.vocab_end)
      d[t * V + (tg[t] - tp.vocab_begin)] += float(g_lp * mul);
  }
}

Tensor tp_gather_vocab(const TpLayout& tp, const Tensor& local) {
  check_cpu_f32(local, "the logits");
  const int64_t R = local.size(0), c = local.size(1);
  std::vector<float> blocks(size_t(R * c * tp.size));
  tp.comm->all_gather(local.f32(), blocks.data(), size_t(R * c) * 4);
  return interleave_cols(blocks, tp.size, R, c);
}

// ---- CausalLM members that only exist for tensor parallelism

void CausalLM::shard_for_tensor_parallel(TpComm* comm) {
  if (!comm || comm->size() == 1) return;
  const ModelConfig& c = config_;
  const int n = comm->size();
  if (device_ != Device::cpu)
    GYRE_THROW(unsupported, "tensor parallelism runs on the CPU backend; the model is on {}",
               device_name(device_));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    if (c.is_moe_layer(l))
      GYRE_THROW(unsupported,
                 "tensor parallelism does not shard MoE layers yet (layer {} of this {} model is "
                 "MoE); run it with --tensor-model-parallel-size 1 (data parallelism works)",
                 l, arch_name(c.arch));
  check_divisible(c.num_attention_heads, n, "num_attention_heads",
                  "each rank runs an equal share of the query heads; pick a TP size that divides "
                  "the head counts");
  check_divisible(c.num_key_value_heads, n, "num_key_value_heads",
                  "each rank runs an equal share of the kv heads (kv-head replication is not "
                  "supported); pick a TP size that divides the kv head count");
  check_divisible(c.intermediate_size, n, "intermediate_size",
                  "gate/up/down are split along the intermediate dimension");
  check_divisible(c.vocab_size, n, "vocab_size",
                  "embedding and lm_head are split along the vocabulary (no padding)");
  auto layout = std::make_shared<TpLayout>();
  layout->comm = comm;
  layout->rank = comm->rank();
  layout->size = n;
  layout->local = c;
  layout->local.num_attention_heads /= n;
  layout->local.num_key_value_heads /= n;
  layout->local.intermediate_size /= n;
  layout->local.vocab_size /= n;
  layout->vocab_begin = int64_t(layout->rank) * layout->local.vocab_size;
  layout->vocab_end = layout->vocab_begin + layout->local.vocab_size;
  layout->split.assign(w_->params.size(), TpSplit::replicated);
  const ModelSlots& s = w_->slots;
  auto mark = [&](int slot, TpSplit how) {
    if (slot >= 0) layout->split[size_t(slot)] = how;
  };
  mark(s.embed, TpSplit::rows);
  mark(s.lm_head, TpSplit::rows);  // tied: the same slot, split the same way
  for (const LayerSlots& l : s.layers) {
    for (int slot : {l.q_w, l.q_b, l.k_w, l.k_b, l.v_w, l.v_b, l.gate_w, l.gate_b, l.up_w, l.up_b})
      mark(slot, TpSplit::rows);
    mark(l.o_w, TpSplit::cols);
    mark(l.down_w, TpSplit::cols);
  }
  w_->params = shard_like(*layout, w_->params);
  w_->t = bind_tensors(w_->slots, w_->params);
  tp_ = std::move(layout);
}

std::vector<NamedTensor> CausalLM::gather_full(const std::vector<NamedTensor>& local) const {
  if (!tp_) return local;
  if (local.size() != tp_->split.size())
    GYRE_THROW(invalid_argument,
               "gather_full: {} tensors given but the model has {} parameters (pass parameters() "
               "or Gradients::tensors)",
               local.size(), tp_->split.size());
  std::vector<NamedTensor> out;
  out.reserve(local.size());
  for (size_t i = 0; i < local.size(); ++i) {
    const Tensor t = local[i].tensor.to(Device::cpu);
    check_cpu_f32(t, local[i].name.c_str());
    if (tp_->split[i] == TpSplit::replicated) {
      out.push_back({local[i].name, t});
      continue;
    }
    std::vector<float> blocks(size_t(t.numel() * tp_->size));
    tp_->comm->all_gather(t.f32(), blocks.data(), size_t(t.numel()) * 4);
    if (tp_->split[i] == TpSplit::rows) {
      Shape shape = t.shape();
      shape[0] *= tp_->size;
      out.push_back({local[i].name, Tensor::from_vector(blocks, shape)});
    } else {
      out.push_back({local[i].name, interleave_cols(blocks, tp_->size, t.size(0), t.size(1))});
    }
  }
  return out;
}

double CausalLM::grad_sum_squares(const std::vector<Tensor>& grads) const {
  double sharded = 0, replicated = 0;
  for (size_t i = 0; i < grads.size(); ++i) {
    const double sq = ops::sum_squares(grads[i]);
    if (tp_ && tp_->split.at(i) != TpSplit::replicated)
      sharded += sq;
    else
      replicated += sq;
  }
  // Sharded tensors: each rank holds a disjoint part, so their squares add up over the ranks;
  // replicated tensors are equal on every rank and count once.
  if (tp_) tp_->comm->all_reduce_sum(&sharded, 1);
  return sharded + replicated;
}

}  // namespace gyre::model
