// cuDNN fused attention for training (cudnn_attention.h): the SDPA forward-with-stats and backward
// operation graphs, written out op by op in the composite form cuDNN's fused flash-attention
// engines recognise (NVIDIA's cuDNN documentation, "Scaled Dot Product Attention" and the graph
// API's fused attention patterns), a per-shape plan cache, and execution on gyre's stream with
// workspace from gyre's allocator.
//
// Graph conventions (cuDNN's): tensors are 4-d [b, h, s, d] with explicit strides, so the packed
// [T, H, D] buffers are b × s × h × d with strides (s·H·D, D, H·D, 1) plus a ragged-offset tensor
// (element offset of each sequence's first row = cu_seqlens[b] · H · D); the first matmul takes
// K transposed ([b, h, d, s] over the same memory); GQA is expressed by K/V having fewer heads
// than Q (the engine maps query head h to kv head h / (Hq / Hkv), as gyre does).
#include "gyre/backend/cuda/cudnn_attention.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <tuple>

#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/cudnn_graph.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/env.h"
#include "gyre/core/logging.h"

namespace gyre::cuda {

AttentionBackend attention_backend() {
  return env_choice("GYRE_ATTENTION_BACKEND", {"cudnn", "flash"}, "cudnn") == "flash"
             ? AttentionBackend::flash
             : AttentionBackend::cudnn;
}

namespace {

std::mutex g_mu;  // guards the plan cache, the stats and the logged-reasons set
CudnnAttentionStats g_stats;

}  // namespace

#if GYRE_HAVE_CUDNN_HEADERS

namespace {

// Logs each distinct reason for falling back once (info level).
void log_fallback_once(const std::string& why) {
  static std::set<std::string> logged;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (!logged.insert(why).second) return;
  }
  log::info("attention: cuDNN path not used, running the flash kernels: {}", why);
}

bool deterministic() {
  return env_choice("GYRE_CUDNN_ATTENTION_DETERMINISTIC", {"1", "0"}, "1") == "1";
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// The cached plans are keyed by device (a plan is bound to its device's handle) and bucketed shape.
struct Key {
  int device;
  bool backward;
  int64_t Bp, S, Hq, Hkv, D;
  bool det;
  bool operator<(const Key& o) const {
    return std::tie(device, backward, Bp, S, Hq, Hkv, D, det) <
           std::tie(o.device, o.backward, o.Bp, o.S, o.Hq, o.Hkv, o.D, o.det);
  }
};

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Shape buckets of the plan cache: B to a power of two (the extra sequences are empty), the
// longest sequence to a multiple of 128 up to 1024 and of 512 beyond (rows past a sequence's
// length are masked, and the kernels stop at each sequence's length). A backward plan takes up to
// ~1 s to build, so a run whose longest sequence wanders over 1-8k tokens should meet ~20 length
// buckets, not ~60; the deterministic backward's workspace grows as B_bucket · Hq · S_bucket², so
// the buckets stay within 2.25x of the needed size (1025 -> 1536 is the worst case).
int64_t batch_bucket(int64_t B) {
  int64_t p = 1;
  while (p < B) p *= 2;
  return p;
}
int64_t seq_bucket(int64_t max_seqlen) {
  const int64_t s = std::max<int64_t>(max_seqlen, 1);
  return s <= 1024 ? round_up(s, 128) : round_up(s, 512);
}

// GYRE_CUDNN_ATTENTION_MAX_WORKSPACE_MB (default 4096): plans needing more fall back to the flash
// kernels (the deterministic backward's dP scratch is B·Hq·S²·2 bytes: 2.1 GB at 4 x 4096, 16
// heads, but tens of GB for many short sequences next to one long one).
int64_t max_workspace_bytes() {
  return env_int("GYRE_CUDNN_ATTENTION_MAX_WORKSPACE_MB", 4096, 1, int64_t(1) << 24) << 20;
}

// Checks what the graphs need; empty when supported.
std::string unsupported(int64_t T, int64_t Hq, int64_t Hkv, int64_t D) {
  if (D % 8 != 0 || D > 128) return fmt::format("head dim {} (needs a multiple of 8, <= 128)", D);
  if (Hkv <= 0 || Hq % Hkv != 0) return fmt::format("{} query heads over {} kv heads", Hq, Hkv);
  if (T * Hq * D >= (int64_t(1) << 31)) return "ragged offsets beyond int32";
  return {};
}

using cudnn::GraphBuilder;
using cudnn::TensorRef;

// UIDs of the tensors bound at execution (virtual tensors get theirs from GraphBuilder).
enum Uid : int64_t {
  kQ = 1,
  kK,
  kV,
  kO,
  kStats,
  kDO,
  kDQ,
  kDK,
  kDV,
  kSeqQ,
  kSeqKV,
  kRagQ,
  kRagK,
  kRagV,
  kRagO,
  kRagStats,
  kRagDO,
  kRagDQ,
  kRagDK,
  kRagDV,
  kScale,
  kNegInfPad,
  kNegInfCausal,
  kOne,
  kSoftmaxSum,
  kDQAccum,
  kRagSoftmaxSum,
  kRagDQAccum,
};

constexpr cudnnDataType_t kBf16 = CUDNN_DATA_BFLOAT16, kF32 = CUDNN_DATA_FLOAT,
                          kI32 = CUDNN_DATA_INT32, kBool = CUDNN_DATA_BOOLEAN;

struct Dims {
  int64_t Bp, S, Hq, Hkv, D;
};

// The pieces both graphs share.
struct Common {
  GraphBuilder& g;
  Dims d;
  TensorRef seq_q, seq_kv;

  Common(GraphBuilder& gb, Dims dims) : g(gb), d(dims) {
    seq_q = g.tensor(kSeqQ, kI32, {d.Bp, 1, 1, 1}, {1, 1, 1, 1});
    seq_kv = g.tensor(kSeqKV, kI32, {d.Bp, 1, 1, 1}, {1, 1, 1, 1});
  }
  TensorRef offsets(int64_t uid) { return g.tensor(uid, kI32, {d.Bp + 1, 1, 1, 1}, {1, 1, 1, 1}); }
  // A packed [T, H, D] tensor as [b, h, s, d].
  TensorRef packed(int64_t uid, cudnnDataType_t dt, int64_t H, const TensorRef& rag) {
    return g.tensor(uid, dt, {d.Bp, H, d.S, d.D}, {d.S * H * d.D, d.D, H * d.D, 1}, &rag);
  }
  // The same memory as [b, h, d, s] (K^T, V^T).
  TensorRef packed_t(int64_t uid, int64_t H, const TensorRef& rag) {
    return g.tensor(uid, kBf16, {d.Bp, H, d.D, d.S}, {d.S * H * d.D, d.D, 1, H * d.D}, &rag);
  }
  TensorRef lse(int64_t uid, const TensorRef& rag) {
    return g.tensor(uid, kF32, {d.Bp, d.Hq, d.S, 1}, {d.S * d.Hq, 1, d.Hq, 1}, &rag);
  }
  TensorRef scores(cudnnDataType_t dt = kF32) {
    return g.virt(dt, {d.Bp, d.Hq, d.S, d.S}, {d.Hq * d.S * d.S, d.S * d.S, d.S, 1});
  }
  // Scores transposed per head ([b, h, s_kv, s_q]) for the dV / dK matmuls.
  TensorRef scores_t() {
    return g.virt(kBf16, {d.Bp, d.Hq, d.S, d.S}, {d.Hq * d.S * d.S, d.S * d.S, 1, d.S});
  }
  TensorRef rows() { return g.virt(kF32, {d.Bp, d.Hq, d.S, 1}, {d.Hq * d.S, d.S, 1, 1}); }
  TensorRef pw(cudnnPointwiseMode_t mode, const TensorRef& x, const TensorRef* b, TensorRef y) {
    g.pointwise(mode, kF32, x, b, nullptr, y);
    return y;
  }

  // Scores of rows >= seq_len_q or columns >= seq_len_kv become -inf.
  TensorRef padding_mask(const TensorRef& s) {
    TensorRef row = g.virt(kI32, s.dims, s.strides), col = g.virt(kI32, s.dims, s.strides);
    g.pointwise(CUDNN_POINTWISE_GEN_INDEX, kI32, s, nullptr, nullptr, row, 2);
    g.pointwise(CUDNN_POINTWISE_GEN_INDEX, kI32, s, nullptr, nullptr, col, 3);
    TensorRef row_ok = g.virt(kBool, s.dims, s.strides), col_ok = g.virt(kBool, s.dims, s.strides);
    g.pointwise(CUDNN_POINTWISE_CMP_LT, kBool, row, &seq_q, nullptr, row_ok);
    g.pointwise(CUDNN_POINTWISE_CMP_LT, kBool, col, &seq_kv, nullptr, col_ok);
    TensorRef keep = g.virt(kBool, s.dims, s.strides);
    g.pointwise(CUDNN_POINTWISE_LOGICAL_AND, kBool, row_ok, &col_ok, nullptr, keep);
    TensorRef neg_inf = g.scalar(kNegInfPad, kF32);
    TensorRef out = scores();
    g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, kF32, s, &neg_inf, &keep, out);  // keep ? s : -inf
    return out;
  }
  // Top-left causal mask: column > row becomes -inf (row and column within the sequence).
  TensorRef causal_mask(const TensorRef& s) {
    TensorRef row = g.virt(kI32, s.dims, s.strides), col = g.virt(kI32, s.dims, s.strides);
    g.pointwise(CUDNN_POINTWISE_GEN_INDEX, kF32, s, nullptr, nullptr, row, 2);
    g.pointwise(CUDNN_POINTWISE_GEN_INDEX, kF32, s, nullptr, nullptr, col, 3);
    TensorRef keep = g.virt(kBool, s.dims, s.strides);
    g.pointwise(CUDNN_POINTWISE_CMP_GE, kBool, row, &col, nullptr, keep);
    TensorRef neg_inf = g.scalar(kNegInfCausal, kF32);
    TensorRef out = scores();
    g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, kF32, s, &neg_inf, &keep, out);
    return out;
  }
};

// O = softmax(mask(scale · Q Kᵀ)) V and stats = rowmax + log(rowsum(exp(s − rowmax))).
cudnn::Plan build_forward(const cudnn::Api& a, cudnnHandle_t h, Dims d, std::string* note) {
  GraphBuilder g(a);
  Common c(g, d);
  TensorRef rq = c.offsets(kRagQ), rk = c.offsets(kRagK), rv = c.offsets(kRagV),
            ro = c.offsets(kRagO), rs = c.offsets(kRagStats);
  TensorRef q = c.packed(kQ, kBf16, d.Hq, rq), kt = c.packed_t(kK, d.Hkv, rk),
            v = c.packed(kV, kBf16, d.Hkv, rv), o = c.packed(kO, kBf16, d.Hq, ro);
  TensorRef stats = c.lse(kStats, rs), scale = g.scalar(kScale, kF32);

  TensorRef s = c.scores();
  const double pad = 0.0;
  g.matmul(q, kt, s, &c.seq_q, &c.seq_kv, nullptr, &pad);
  s = c.pw(CUDNN_POINTWISE_MUL, s, &scale, c.scores());
  s = c.padding_mask(s);
  s = c.causal_mask(s);
  TensorRef mx = c.rows();
  g.reduction(CUDNN_REDUCE_TENSOR_MAX, s, mx);
  TensorRef e = c.pw(CUDNN_POINTWISE_SUB, s, &mx, c.scores());
  e = c.pw(CUDNN_POINTWISE_EXP, e, nullptr, c.scores());
  TensorRef sum = c.rows();
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, e, sum);
  TensorRef log_sum = c.pw(CUDNN_POINTWISE_LOG, sum, nullptr, c.rows());
  c.pw(CUDNN_POINTWISE_ADD, mx, &log_sum, stats);
  TensorRef p = c.pw(CUDNN_POINTWISE_DIV, e, &sum, c.scores(kBf16));
  g.matmul(p, v, o, &c.seq_q, nullptr, &c.seq_kv);
  return g.build_plan(h, note);
}

// dV = Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP − rowsum(dO ∘ O)) · scale, dK = dSᵀ Q, dQ = dS K, with P
// recomputed from the saved stats. GQA: the per-query-head dK/dV reduce over each head group.
cudnn::Plan build_backward(const cudnn::Api& a, cudnnHandle_t h, Dims d, bool det,
                           std::string* note) {
  GraphBuilder g(a);
  Common c(g, d);
  TensorRef rq = c.offsets(kRagQ), rk = c.offsets(kRagK), rv = c.offsets(kRagV),
            ro = c.offsets(kRagO), rs = c.offsets(kRagStats), rdo = c.offsets(kRagDO),
            rdq = c.offsets(kRagDQ), rdk = c.offsets(kRagDK), rdv = c.offsets(kRagDV);
  TensorRef q = c.packed(kQ, kBf16, d.Hq, rq), kt = c.packed_t(kK, d.Hkv, rk),
            vt = c.packed_t(kV, d.Hkv, rv), o = c.packed(kO, kBf16, d.Hq, ro),
            dout = c.packed(kDO, kBf16, d.Hq, rdo), dq = c.packed(kDQ, kBf16, d.Hq, rdq),
            dk = c.packed(kDK, kBf16, d.Hkv, rdk), dv = c.packed(kDV, kBf16, d.Hkv, rdv);
  TensorRef stats = c.lse(kStats, rs), scale = g.scalar(kScale, kF32), one = g.scalar(kOne, kF32);
  // rowsum(dO ∘ O) lives in an f32 scratch the caller binds (the engine reads it per tile), packed
  // like lse: [T, Hq] with lse's ragged offsets.
  TensorRef rss = c.offsets(kRagSoftmaxSum), softmax_sum = c.lse(kSoftmaxSum, rss);
  TensorRef doo =
      c.pw(CUDNN_POINTWISE_MUL, dout, &o,
           g.virt(kF32, {d.Bp, d.Hq, d.S, d.D}, {d.Hq * d.S * d.D, d.S * d.D, d.Hq * d.D, 1}));
  TensorRef row_dot = c.rows();
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, doo, row_dot);
  c.pw(CUDNN_POINTWISE_MUL, row_dot, &one, softmax_sum);

  TensorRef s = c.scores();
  g.matmul(q, kt, s, &c.seq_q, &c.seq_kv, nullptr);
  s = c.pw(CUDNN_POINTWISE_MUL, s, &scale, c.scores());
  s = c.padding_mask(s);
  s = c.pw(CUDNN_POINTWISE_SUB, s, &stats, c.scores());
  s = c.causal_mask(s);
  TensorRef p = c.pw(CUDNN_POINTWISE_EXP, s, nullptr, c.scores());

  // Per query head, then summed over the group when kv heads are shared.
  auto grad_kv = [&](const TensorRef& lhs_t, const TensorRef& rhs, const TensorRef& out) {
    if (d.Hq == d.Hkv) return g.matmul(lhs_t, rhs, out, &c.seq_kv, nullptr, &c.seq_q);
    TensorRef full = g.virt(kBf16, {d.Bp, d.Hq, d.S, d.D}, {d.Hq * d.S * d.D, d.S * d.D, d.D, 1});
    g.matmul(lhs_t, rhs, full, &c.seq_kv, nullptr, &c.seq_q);
    g.reduction(CUDNN_REDUCE_TENSOR_ADD, full, out);
  };
  TensorRef pt = c.scores_t();
  g.reshape(p, pt);
  grad_kv(pt, dout, dv);

  TensorRef dp = c.scores();
  g.matmul(dout, vt, dp, &c.seq_q, &c.seq_kv, nullptr);
  TensorRef ds = c.pw(CUDNN_POINTWISE_SUB, dp, &softmax_sum, c.scores());
  ds = c.pw(CUDNN_POINTWISE_MUL, ds, &p, c.scores());
  ds = c.pw(CUDNN_POINTWISE_MUL, ds, &scale, c.scores());
  TensorRef dst = c.scores_t();
  g.reshape(ds, dst);
  grad_kv(dst, q, dk);

  TensorRef k =
      g.virt(kBf16, {d.Bp, d.Hkv, d.S, d.D}, {d.S * d.Hkv * d.D, d.D, d.Hkv * d.D, 1}, &rk);
  g.reshape(kt, k);
  if (det) {
    g.matmul(ds, k, dq, &c.seq_q, nullptr, &c.seq_kv);
  } else {
    // dQ accumulates in f32 across key tiles (atomics), packed like dq: [T, Hq, D].
    TensorRef racc = c.offsets(kRagDQAccum), acc = c.packed(kDQAccum, kF32, d.Hq, racc);
    g.matmul(ds, k, acc, &c.seq_q, nullptr, &c.seq_kv);
    c.pw(CUDNN_POINTWISE_IDENTITY, acc, nullptr, dq);
  }
  return g.build_plan(h, note);
}

// The plan for key, built on first use; null when building failed (then `why` says why).
// g_mu guards only the maps and the stats: a build (up to ~1 s for a backward plan) runs under the
// cuDNN handle's mutex alone, so lookups of other shapes, the fallback log and the stats never
// wait for it. Two threads missing the same key may both build it; the first insert wins and the
// other plan is dropped (same key, same plan).
std::shared_ptr<cudnn::Plan> plan_for(const Key& key, std::string& why) {
  static std::map<Key, std::shared_ptr<cudnn::Plan>> cache;
  static std::map<Key, std::string> failures;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (auto it = cache.find(key); it != cache.end()) return it->second;
    if (auto it = failures.find(key); it != failures.end()) {
      why = it->second;
      return nullptr;
    }
  }
  const cudnn::Api* a = cudnn::api();
  const Dims d{key.Bp, key.S, key.Hq, key.Hkv, key.D};
  std::string note;
  const auto t0 = std::chrono::steady_clock::now();
  std::shared_ptr<cudnn::Plan> plan;
  try {
    std::lock_guard<std::mutex> hl(cudnn::handle_mutex());
    cudnnHandle_t h = cudnn::handle_for_current_device();
    plan = std::make_shared<cudnn::Plan>(key.backward ? build_backward(*a, h, d, key.det, &note)
                                                      : build_forward(*a, h, d, &note));
  } catch (const std::exception& e) {
    why = fmt::format("{} plan for B {} S {} heads {}/{} D {}: {}",
                      key.backward ? "backward" : "forward", d.Bp, d.S, d.Hq, d.Hkv, d.D, e.what());
    std::lock_guard<std::mutex> lock(g_mu);
    failures.emplace(key, why);
    return nullptr;
  }
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::lock_guard<std::mutex> lock(g_mu);
  if (auto it = cache.find(key); it != cache.end()) return it->second;  // built meanwhile
  g_stats.plans_built++;
  g_stats.build_ms += ms;
  g_stats.last_workspace_bytes = plan->workspace();
  g_stats.last_engine = note;
  log::debug(
      "attention: cuDNN {} plan B {} S {} heads {}/{} D {} built in {:.0f} ms ({}, workspace {} "
      "bytes)",
      key.backward ? "backward" : "forward", d.Bp, d.S, d.Hq, d.Hkv, d.D, ms, note,
      plan->workspace());
  cache.emplace(key, plan);
  return plan;
}

// Device index arrays of one call (seq lengths, ragged offsets), 16-byte aligned sections.
struct Indices {
  DeviceBuffer buf;
  int32_t *seqlen, *off_q, *off_kv, *off_lse;
  static int64_t sec(int64_t n) { return round_up(n, 4); }
  Indices(const int32_t* cu, int64_t B, int64_t Bp, int64_t Hq, int64_t Hkv, int64_t D)
      : buf(size_t(sec(Bp) + 3 * sec(Bp + 1)) * 4) {
    seqlen = buf.as<int32_t>();
    off_q = seqlen + sec(Bp);
    off_kv = off_q + sec(Bp + 1);
    off_lse = off_kv + sec(Bp + 1);
    cudnn_attention_prep(cu, B, Bp, int32_t(Hq * D), int32_t(Hkv * D), int32_t(Hq), seqlen, off_q,
                         off_kv, off_lse);
  }
};

// Looks up the plan of a call; null (and logs why once) when the cuDNN path cannot run it.
std::shared_ptr<cudnn::Plan> prepare(bool backward, bool det, int64_t B, int64_t max_seqlen,
                                     int64_t T, int64_t Hq, int64_t Hkv, int64_t D,
                                     std::initializer_list<const void*> ptrs) {
  if (attention_backend() != AttentionBackend::cudnn) return nullptr;
  std::string why;
  if (!cudnn::api(&why)) {
    log_fallback_once(why);
    return nullptr;
  }
  why = unsupported(T, Hq, Hkv, D);
  for (const void* p : ptrs)
    if (why.empty() && !aligned16(p)) why = "a buffer is not 16-byte aligned";
  if (!why.empty()) {
    log_fallback_once(why);
    return nullptr;
  }
  int device = 0;
  GYRE_CUDA_CHECK(cudaGetDevice(&device));
  const Key key{device, backward, batch_bucket(B), seq_bucket(max_seqlen), Hq, Hkv, D, det};
  auto plan = plan_for(key, why);
  if (plan && plan->workspace() > max_workspace_bytes()) {
    why = fmt::format(
        "{} plan for B {} S {} needs {} MB of workspace (over "
        "GYRE_CUDNN_ATTENTION_MAX_WORKSPACE_MB)",
        backward ? "backward" : "forward", key.Bp, key.S, plan->workspace() >> 20);
    plan = nullptr;
  }
  if (!plan) log_fallback_once(why);
  return plan;
}

// Executes on the calling thread's stream; false (logged once) when cuDNN refuses, so the caller
// can still run the flash kernels (a failed execute launches nothing).
bool run(bool backward, const cudnn::Plan& plan, const std::vector<int64_t>& uids,
         const std::vector<void*>& ptrs, void* workspace) {
  const cudnn::Api* a = cudnn::api();
  try {
    std::lock_guard<std::mutex> lock(cudnn::handle_mutex());
    cudnnHandle_t h = cudnn::handle_for_current_device();
    cudnn::check(a->set_stream(h, stream()), "cudnnSetStream");
    cudnn::execute(*a, h, plan, uids, ptrs, workspace);
  } catch (const cudnn::CudnnError& e) {
    log_fallback_once(std::string("execution failed: ") + e.what());
    return false;
  }
  std::lock_guard<std::mutex> lock(g_mu);
  (backward ? g_stats.bwd_calls : g_stats.fwd_calls)++;
  return true;
}

}  // namespace

bool cudnn_attention_available(std::string* why) { return cudnn::api(why) != nullptr; }

bool cudnn_attention_fwd(const uint16_t* q, const uint16_t* k, const uint16_t* v,
                         const int32_t* cu_seqlens, int64_t B, int64_t max_seqlen, int64_t T,
                         int64_t Hq, int64_t Hkv, int64_t D, float scale, uint16_t* out,
                         float* lse) {
  auto plan = prepare(false, false, B, max_seqlen, T, Hq, Hkv, D, {q, k, v, out, lse});
  if (!plan) return false;
  Indices ix(cu_seqlens, B, batch_bucket(B), Hq, Hkv, D);
  DeviceBuffer ws(size_t(std::max<int64_t>(plan->workspace(), 16)));
  float scale_v = scale, neg_inf = -std::numeric_limits<float>::infinity();
  // The by-value scalars are read while the call is recorded (host pointers).
  std::vector<int64_t> uids = {kQ,    kK,        kV,     kO,         kStats,
                               kSeqQ, kSeqKV,    kRagQ,  kRagK,      kRagV,
                               kRagO, kRagStats, kScale, kNegInfPad, kNegInfCausal};
  std::vector<void*> ptrs = {const_cast<uint16_t*>(q),
                             const_cast<uint16_t*>(k),
                             const_cast<uint16_t*>(v),
                             out,
                             lse,
                             ix.seqlen,
                             ix.seqlen,
                             ix.off_q,
                             ix.off_kv,
                             ix.off_kv,
                             ix.off_q,
                             ix.off_lse,
                             &scale_v,
                             &neg_inf,
                             &neg_inf};
  return run(false, *plan, uids, ptrs, ws.as<void>());
}

bool cudnn_attention_bwd(const uint16_t* dout, const uint16_t* q, const uint16_t* k,
                         const uint16_t* v, const uint16_t* out, const float* lse,
                         const int32_t* cu_seqlens, int64_t B, int64_t max_seqlen, int64_t T,
                         int64_t Hq, int64_t Hkv, int64_t D, float scale, uint16_t* dq,
                         uint16_t* dk, uint16_t* dv) {
  const bool det = deterministic();
  auto plan =
      prepare(true, det, B, max_seqlen, T, Hq, Hkv, D, {dout, q, k, v, out, lse, dq, dk, dv});
  if (!plan) return false;
  Indices ix(cu_seqlens, B, batch_bucket(B), Hq, Hkv, D);
  DeviceBuffer ws(size_t(std::max<int64_t>(plan->workspace(), 16)));
  // Packed like lse and dq (ragged), so T rows whatever the bucket.
  DeviceBuffer softmax_sum(size_t(T * Hq) * 4);
  DeviceBuffer dq_accum(det ? 16 : size_t(T * Hq * D) * 4);
  float scale_v = scale, neg_inf = -std::numeric_limits<float>::infinity(), one = 1.0f;
  std::vector<int64_t> uids = {
      kQ,     kK,     kV,     kO,         kDO,           kStats, kDQ,         kDK,           kDV,
      kSeqQ,  kSeqKV, kRagQ,  kRagK,      kRagV,         kRagO,  kRagStats,   kRagDO,        kRagDQ,
      kRagDK, kRagDV, kScale, kNegInfPad, kNegInfCausal, kOne,   kSoftmaxSum, kRagSoftmaxSum};
  std::vector<void*> ptrs = {const_cast<uint16_t*>(q),
                             const_cast<uint16_t*>(k),
                             const_cast<uint16_t*>(v),
                             const_cast<uint16_t*>(out),
                             const_cast<uint16_t*>(dout),
                             const_cast<float*>(lse),
                             dq,
                             dk,
                             dv,
                             ix.seqlen,
                             ix.seqlen,
                             ix.off_q,
                             ix.off_kv,
                             ix.off_kv,
                             ix.off_q,
                             ix.off_lse,
                             ix.off_q,
                             ix.off_q,
                             ix.off_kv,
                             ix.off_kv,
                             &scale_v,
                             &neg_inf,
                             &neg_inf,
                             &one,
                             softmax_sum.as<void>(),
                             ix.off_lse};
  if (!det) {
    uids.insert(uids.end(), {kDQAccum, kRagDQAccum});
    ptrs.insert(ptrs.end(), {dq_accum.as<void>(), ix.off_q});
  }
  return run(true, *plan, uids, ptrs, ws.as<void>());
}

#else  // no cuDNN headers in this build: the flash kernels always run

bool cudnn_attention_available(std::string* why) {
  if (why) *why = "built without cuDNN headers";
  return false;
}
bool cudnn_attention_fwd(const uint16_t*, const uint16_t*, const uint16_t*, const int32_t*, int64_t,
                         int64_t, int64_t, int64_t, int64_t, int64_t, float, uint16_t*, float*) {
  return false;
}
bool cudnn_attention_bwd(const uint16_t*, const uint16_t*, const uint16_t*, const uint16_t*,
                         const uint16_t*, const float*, const int32_t*, int64_t, int64_t, int64_t,
                         int64_t, int64_t, int64_t, float, uint16_t*, uint16_t*, uint16_t*) {
  return false;
}

#endif  // GYRE_HAVE_CUDNN_HEADERS

CudnnAttentionStats cudnn_attention_stats() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_stats;
}

}  // namespace gyre::cuda
