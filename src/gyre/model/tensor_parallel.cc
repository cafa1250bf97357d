// Tensor parallelism for CausalLM (see tensor_parallel.h): the layout and sharding of the
// parameters, reassembly of full tensors, the vocab-parallel embedding and the vocab-parallel
// log-prob / entropy (forward and backward). The layer-level f/g operators live in
// decoder_layer.cc and causal_lm.cc next to the ops they wrap.
#include "gyre/model/tensor_parallel.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "gyre/backend/ops.h"
#include "gyre/backend/tp_ops.h"
#include "gyre/core/error.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/weights.h"

namespace gyre::model {

namespace {

void check_f32(const Tensor& t, const char* what) {
  if (t.dtype() != DType::f32)
    GYRE_THROW(unsupported, "tensor parallelism runs with f32 activations; {} is {}", what,
               dtype_name(t.dtype()));
}

// The row indices (into the ids) that fall in [begin, begin + n) and their local ids, as i32
// tensors on `dev` (the vocab-parallel embedding on a GPU: a gather of the local rows and a
// scatter to their positions), with host copies of both. Returns false when none does. The ids
// are read on the host: from the copy a KnownIndices scope recorded for them (CausalLM's backward
// records the host ids its forward validated) or, without one, by copying them back — which waits
// for the GPU.
struct LocalRows {
  Tensor pos, lid;            // on dev
  Tensor host_pos, host_lid;  // the same values on the CPU
};
bool local_rows(const Tensor& ids, int64_t begin, int64_t n, Device dev, LocalRows& out) {
  Tensor copied;
  const int32_t* host = nullptr;
  if (const auto* e = ops::KnownIndices::find(ids, ops::KnownIndices::Entry::host_values)) {
    host = e->host;
  } else {
    copied = ids.to(Device::cpu);
    host = copied.i32();
  }
  std::vector<int32_t> p, l;
  for (int64_t t = 0; t < ids.numel(); ++t) {
    const int64_t local = int64_t(host[t]) - begin;
    if (local >= 0 && local < n) p.push_back(int32_t(t)), l.push_back(int32_t(local));
  }
  if (p.empty()) return false;
  out.host_pos = Tensor::from_vector(p, {int64_t(p.size())});
  out.host_lid = Tensor::from_vector(l, {int64_t(l.size())});
  out.pos = out.host_pos.to(dev);
  out.lid = out.host_lid.to(dev);
  return true;
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

// The softmax statistics of z = logits / τ over the whole (sharded) vocabulary, [T, 4] on the
// local statistics' device in ops::logprob_chunk_stats' layout (m, s = Σ exp(z - m), w = Σ exp(z -
// m)(z - m), z_target), from each rank's statistics of its own shard: the ranks' [T, 4] triples
// are all-gathered (tiny: 16 bytes a token) and folded on the host in rank order, so every rank
// gets bitwise the same statistics; z_target comes from the rank whose shard holds the target.
Tensor fold_rank_stats(const TpLayout& tp, const Tensor& local,
                       const std::vector<int32_t>& host_targets) {
  const int64_t T = local.size(0), Vl = tp.vocab_end - tp.vocab_begin;
  const Tensor mine = local.to(Device::cpu);
  std::vector<float> all(size_t(4 * T * tp.size));
  tp.comm->all_gather(mine.f32(), all.data(), size_t(4 * T) * sizeof(float));
  Tensor folded = Tensor::empty({T, 4}, DType::f32);
  float* out = folded.f32();
  for (int64_t t = 0; t < T; ++t) {
    auto at = [&](int r, int k) { return double(all[size_t((int64_t(r) * T + t) * 4 + k)]); };
    // The fold of logprob_chunk_stats (accumulate = true), over the ranks: rebase each triple to
    // the largest max M (s' = a s, w' = a (w + (m - M) s), a = exp(m - M)); a shard whose logits
    // are all -inf (s = 0) holds no mass and is skipped. A NaN s (a NaN logit in that shard) is
    // not skipped: it makes the sum NaN, as one process's statistics would be.
    double M = -std::numeric_limits<double>::infinity();
    for (int r = 0; r < tp.size; ++r)
      if (at(r, 1) != 0) M = std::max(M, at(r, 0));
    double sum = 0, w = 0;
    for (int r = 0; r < tp.size; ++r) {
      if (at(r, 1) == 0) continue;
      const double a = std::exp(at(r, 0) - M);
      sum += a * at(r, 1), w += a * (at(r, 2) + (at(r, 0) - M) * at(r, 1));
    }
    const int32_t tg = host_targets[size_t(t)];
    out[t * 4 + 0] = float(sum != 0 ? M : at(0, 0));
    out[t * 4 + 1] = float(sum), out[t * 4 + 2] = float(w);
    out[t * 4 + 3] = tg < 0 ? 0.0f : float(at(int(tg / Vl), 3));
  }
  return folded.to(local.device());
}

// The softmax statistics of z = logits / τ over the whole (sharded) vocabulary from each rank's
// local logits [T, V/n]: the shard is one "chunk" starting at vocab_begin.
Tensor global_vocab_stats(const TpLayout& tp, const Tensor& logits, const Tensor& targets,
                          const std::vector<int32_t>& host_targets, float temperature) {
  Tensor local = Tensor::empty({logits.size(0), 4}, DType::f32, logits.device());
  ops::logprob_chunk_stats(logits, targets, tp.vocab_begin, temperature, false, local);
  return fold_rank_stats(tp, local, host_targets);
}

// Checks the targets of the vocab-parallel log-prob ops: i32 [T], every value below the full
// vocabulary V (negative: no target). Returns them on the host when `want_host` (the statistics'
// fold needs them); otherwise a KnownIndices range that already proves them (scoring.cc records
// one) spares the device-to-host copy and the empty vector is returned.
std::vector<int32_t> check_targets(const TpLayout& tp, const Tensor& targets, int64_t T,
                                   bool want_host) {
  const int64_t V = (tp.vocab_end - tp.vocab_begin) * tp.size;
  if (targets.dtype() != DType::i32 || targets.numel() != T)
    GYRE_THROW(invalid_argument, "vocab-parallel log-probs: targets must be i32 [{}], got {} {}", T,
               dtype_name(targets.dtype()), shape_str(targets.shape()));
  if (!want_host)
    if (const auto* k = ops::KnownIndices::find(targets, ops::KnownIndices::Entry::range))
      if (k->hi <= V) return {};
  const Tensor host = targets.to(Device::cpu);
  std::vector<int32_t> tg(host.i32(), host.i32() + host.numel());
  for (size_t t = 0; t < tg.size(); ++t)
    if (tg[t] >= V)
      GYRE_THROW(invalid_argument,
                 "vocab-parallel log-probs: target {} at position {} of the micro-batch's packed "
                 "tokens is outside the vocabulary of {} ids (token ids must be < the model's "
                 "vocab_size; use a negative target to skip a position)",
                 tg[t], t, V);
  return tg;
}

// Checks the arguments of the vocab-parallel log-prob ops; returns the targets on the host.
std::vector<int32_t> check_logprob_args(const TpLayout& tp, const Tensor& logits,
                                        const Tensor& targets) {
  check_f32(logits, "the logits");
  const int64_t Vl = tp.vocab_end - tp.vocab_begin;
  if (logits.dim() != 2 || logits.size(1) != Vl)
    GYRE_THROW(invalid_argument,
               "vocab-parallel log-probs: logits must be the local shard [T, {}] of tp rank {}, "
               "got {}",
               Vl, tp.rank, shape_str(logits.shape()));
  return check_targets(tp, targets, logits.size(0), /*want_host=*/true);
}

// Checks h and the lm_head shard w of the fused vocab-parallel log-prob ops; returns the chunk
// width over the shard.
int64_t check_linear_logprob_args(const TpLayout& tp, const Tensor& h, const Tensor& w,
                                  int64_t chunk) {
  check_f32(h, "the lm_head input");
  check_f32(w, "the lm_head shard");
  const int64_t Vl = tp.vocab_end - tp.vocab_begin;
  if (h.dim() != 2 || w.dim() != 2 || w.size(0) != Vl || w.size(1) != h.size(1))
    GYRE_THROW(invalid_argument,
               "vocab-parallel log-probs: h must be [T, H] and w this rank's lm_head shard [{}, H] "
               "(tp rank {}), got h {} and w {}",
               Vl, tp.rank, shape_str(h.shape()), shape_str(w.shape()));
  return chunk > 0 ? std::min(chunk, Vl) : ops::default_logprob_chunk(Vl);
}

// A [T, c] view of the first T·c elements of the chunk buffer (the chunks share one allocation).
Tensor chunk_block(const Tensor& buf, int64_t T, int64_t c) {
  return buf.reshape({buf.numel()}).narrow(0, T * c).reshape({T, c});
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
  check_f32(t, "an activation to all-reduce");
  if (t.device() == comm->buffer_device()) {
    if (t.device() == Device::cpu)
      comm->all_reduce_sum(t.f32(), size_t(t.numel()));
    else  // read only by the next kernels: stream-ordered, no host wait
      comm->all_reduce_sum_ordered(t.f32(), size_t(t.numel()));
    return;
  }
  // A GPU model over host collectives (MPI): staged through host memory.
  Tensor host = t.to(Device::cpu);
  comm->all_reduce_sum(host.f32(), size_t(host.numel()));
  ops::copy(host.to(t.device()), t);
}

void tp_embedding(const Tensor& ids, const Tensor& table, int64_t begin, Tensor& out) {
  // One op on the table's device (on a GPU one kernel reading the ids there: no host copy,
  // capturable); rows outside [begin, begin + V_local) are zeros.
  ops::embedding_shard(ids.to(table.device()), table, begin, out);
}

void tp_embedding_backward(const Tensor& ids, const Tensor& dout, int64_t begin, Tensor& dtable) {
  if (dtable.device() != Device::cpu) {
    LocalRows r;
    if (!local_rows(ids, begin, dtable.size(0), dtable.device(), r)) return;
    // The index tensors were built on the host from in-range values: recorded, so gather_rows and
    // the embedding backward neither check them nor group by them through a copy back.
    ops::KnownIndices known;
    known.add_range(r.pos, 0, ids.numel());
    known.add_range(r.lid, 0, dtable.size(0));
    known.add_host_values(r.lid, r.host_lid);
    Tensor rows = Tensor::empty({r.pos.numel(), dtable.size(1)}, DType::f32, dtable.device());
    ops::gather_rows(dout, r.pos, rows);
    ops::embedding_backward(r.lid, rows, dtable);  // dtable += scatter
    return;
  }
  const Tensor host_ids = ids.to(Device::cpu);
  const int64_t T = ids.numel(), H = dtable.size(1), n = dtable.size(0);
  const int32_t* id = host_ids.i32();
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
  const std::vector<int32_t> tg = check_logprob_args(tp, logits, targets);
  const Tensor dev_targets = targets.to(logits.device());
  const Tensor stats = global_vocab_stats(tp, logits, dev_targets, tg, temperature);
  Tensor no_lse;
  ops::logprob_chunk_finish(stats, dev_targets, logp, entropy, no_lse);
}

void tp_token_logprobs_backward(const TpLayout& tp, const Tensor& logits, const Tensor& targets,
                                float temperature, const Tensor& dlogp, const Tensor& dentropy,
                                Tensor& dlogits) {
  const std::vector<int32_t> tg = check_logprob_args(tp, logits, targets);
  const Device dev = logits.device();
  const Tensor dev_targets = targets.to(dev);
  const int64_t T = logits.size(0);
  const Tensor stats = global_vocab_stats(tp, logits, dev_targets, tg, temperature);
  Tensor logp = Tensor::empty({T}, DType::f32, dev), lse = Tensor::empty({T}, DType::f32, dev);
  Tensor entropy = dentropy.defined() ? Tensor::empty({T}, DType::f32, dev) : Tensor();
  ops::logprob_chunk_finish(stats, dev_targets, logp, entropy, lse);
  // The local shard's part of token_logprobs_backward: (1/τ)[dlogp (1[j = target] - p_j) -
  // dentropy p_j (log p_j + H)] with the global lse and H.
  ops::logprob_chunk_backward(logits, dev_targets, tp.vocab_begin, temperature, lse, entropy,
                              dlogp.to(dev), dentropy.defined() ? dentropy.to(dev) : Tensor(),
                              dlogits);
}

void tp_linear_token_logprobs(const TpLayout& tp, const Tensor& h, const Tensor& w,
                              const Tensor& targets, float temperature, int64_t chunk, Tensor& logp,
                              Tensor& entropy, Tensor& lse) {
  const int64_t c = check_linear_logprob_args(tp, h, w, chunk);
  const std::vector<int32_t> tg = check_targets(tp, targets, h.size(0), /*want_host=*/true);
  const Device dev = h.device();
  const int64_t T = h.size(0), Vl = w.size(0);
  const Tensor dev_targets = targets.to(dev);
  // The chunks are row views of the shard: kept out of any installed bf16 weight cache (each view
  // would become a copy of its own, outside what the cache's writers keep fresh); an autocast
  // linear rounds the view's rows itself.
  ops::UseBf16WeightCache no_view_copies(nullptr);
  Tensor local = Tensor::empty({T, 4}, DType::f32, dev), none;
  if (T > 0) {  // (Vl >= 1: the vocabulary divides over the ranks)
    const Tensor buf = Tensor::empty({T, c}, DType::f32, dev);
    for (int64_t v0 = 0; v0 < Vl; v0 += c) {
      const int64_t n = std::min(c, Vl - v0);
      Tensor z = chunk_block(buf, T, n);
      ops::linear(h, w.narrow(v0, n), none, z);  // logits of this rank's rows [v0, v0 + n)
      ops::logprob_chunk_stats(z, dev_targets, tp.vocab_begin + v0, temperature,
                               /*accumulate=*/v0 > 0, local);
    }
  }
  const Tensor stats = fold_rank_stats(tp, local, tg);
  // lse is always written (the backward needs it); entropy when the caller defined it.
  if (!lse.defined()) lse = Tensor::empty({T}, DType::f32, dev);
  ops::logprob_chunk_finish(stats, dev_targets, logp, entropy, lse);
}

void tp_linear_token_logprobs_backward(const TpLayout& tp, const Tensor& h, const Tensor& w,
                                       const Tensor& targets, float temperature, int64_t chunk,
                                       const Tensor& lse, const Tensor& entropy,
                                       const Tensor& dlogp, const Tensor& dentropy, Tensor& dh,
                                       Tensor& dw) {
  const int64_t c = check_linear_logprob_args(tp, h, w, chunk);
  check_targets(tp, targets, h.size(0), /*want_host=*/false);  // no fold: the values stay put
  const Device dev = h.device();
  const int64_t T = h.size(0), H = h.size(1), Vl = w.size(0);
  if (dw.defined() && dw.shape() != w.shape())
    GYRE_THROW(invalid_argument,
               "vocab-parallel log-probs backward: dw must be the lm_head shard's shape {}, got {}",
               shape_str(w.shape()), shape_str(dw.shape()));
  if (dh.defined() && (dh.dtype() != DType::f32 || dh.shape() != Shape{T, H}))
    GYRE_THROW(invalid_argument,
               "vocab-parallel log-probs backward: dh must be f32 [{}, {}], got {} {}", T, H,
               dtype_name(dh.dtype()), shape_str(dh.shape()));
  if (!dh.defined()) dh = Tensor::empty({T, H}, DType::f32, dev);
  if (T == 0) return;
  const Tensor dev_targets = targets.to(dev);
  ops::UseBf16WeightCache no_view_copies(nullptr);  // as in the forward
  const Tensor buf = Tensor::empty({T, c}, DType::f32, dev);
  Tensor none;
  for (int64_t v0 = 0; v0 < Vl; v0 += c) {
    const int64_t n = std::min(c, Vl - v0);
    const Tensor wc = w.narrow(v0, n);
    Tensor z = chunk_block(buf, T, n);
    ops::linear(h, wc, none, z);  // recompute the chunk's logits
    // The local columns' part of token_logprobs_backward with the global lse and entropy,
    // computed in place.
    ops::logprob_chunk_backward(z, dev_targets, tp.vocab_begin + v0, temperature, lse, entropy,
                                dlogp, dentropy, z);
    Tensor dwc = dw.defined() ? dw.narrow(v0, n) : Tensor();
    ops::linear_backward(z, h, wc, dh, dwc, none, /*accumulate_dx=*/v0 > 0);
  }
}

Tensor tp_gather_vocab(const TpLayout& tp, const Tensor& local_logits) {
  check_f32(local_logits, "the logits");
  const Device dev = local_logits.device();
  if (dev != Device::cpu && tp.comm->buffer_device() == dev) {
    // On the device (NCCL): all-gather [n, R, V/n] stream-ordered (no host wait, capturable),
    // then interleave the column blocks — the same copies as the host path below.
    const int64_t R = local_logits.size(0), c = local_logits.size(1);
    Tensor blocks = Tensor::empty({int64_t(tp.size), R, c}, DType::f32, dev);
    tp.comm->all_gather_ordered(local_logits.f32(), blocks.f32(), size_t(R * c) * 4);
    Tensor out = Tensor::empty({R, c * tp.size}, DType::f32, dev);
    ops::interleave_blocks(blocks, out);
    return out;
  }
  return tp_gather_vocab_host(tp, local_logits);
}

Tensor tp_gather_vocab_host(const TpLayout& tp, const Tensor& local_logits) {
  check_f32(local_logits, "the logits");
  const Tensor local = local_logits.to(Device::cpu);
  const int64_t R = local.size(0), c = local.size(1);
  std::vector<float> blocks(size_t(R * c * tp.size));
  tp.comm->all_gather(local.f32(), blocks.data(), size_t(R * c) * 4);
  return interleave_cols(blocks, tp.size, R, c).to(local_logits.device());
}

// ---- CausalLM members that only exist for tensor parallelism

void CausalLM::shard_for_tensor_parallel(TpComm* comm) {
  if (!comm || comm->size() == 1) return;
  const ModelConfig& c = config_;
  const int n = comm->size();
  if (device_ != Device::cpu)  // CausalLM::load shards on the host, before moving to the device
    GYRE_THROW(unsupported,
               "shard_for_tensor_parallel: shard the model on the host (LoadOptions::tp), then "
               "move it to {}",
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
    check_f32(t, local[i].name.c_str());
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
