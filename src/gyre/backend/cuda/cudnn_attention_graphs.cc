// The cuDNN SDPA operation graphs (cudnn_attention_graphs.h).
#include "gyre/backend/cuda/cudnn_attention_graphs.h"

#if GYRE_HAVE_CUDNN_HEADERS

namespace gyre::cuda::sdpa_graph {

namespace {

using cudnn::GraphBuilder;
using cudnn::TensorRef;

constexpr cudnnDataType_t kBf16 = CUDNN_DATA_BFLOAT16, kF32 = CUDNN_DATA_FLOAT,
                          kI32 = CUDNN_DATA_INT32, kBool = CUDNN_DATA_BOOLEAN;

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

void define_forward(GraphBuilder& g, Dims d) {
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
}

// dV = Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP − rowsum(dO ∘ O)) · scale, dK = dSᵀ Q, dQ = dS K, with P
// recomputed from the saved stats. GQA: the per-query-head dK/dV reduce over each head group.
void define_backward(GraphBuilder& g, Dims d, bool det) {
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
}

}  // namespace

cudnn::Plan build_forward(const cudnn::Api& a, cudnnHandle_t h, Dims d, std::string* note) {
  GraphBuilder g(a);
  define_forward(g, d);
  return g.build_plan(h, note);
}

cudnn::Plan build_backward(const cudnn::Api& a, cudnnHandle_t h, Dims d, bool det,
                           std::string* note) {
  GraphBuilder g(a);
  define_backward(g, d, det);
  return g.build_plan(h, note);
}

std::vector<cudnn::GraphBuilder::Candidate> build_candidates(const cudnn::Api& a, cudnnHandle_t h,
                                                             Dims d, bool backward, bool det,
                                                             int max_plans, double budget_ms,
                                                             bool sweep_knobs) {
  GraphBuilder g(a);
  if (backward)
    define_backward(g, d, det);
  else
    define_forward(g, d);
  return g.build_candidates(h, max_plans, budget_ms, sweep_knobs);
}

}  // namespace gyre::cuda::sdpa_graph

#endif  // GYRE_HAVE_CUDNN_HEADERS
