// gyre::ops vocabulary-chunked log-probs (ops.h "vocabulary-chunked log-probs"): argument checking
// and dispatch of logprob_chunk_{stats,finish,backward}, and linear_token_logprobs{,_backward},
// which stream the lm_head's vocabulary through them so no [T, V] tensor is ever allocated.
//
// Memory: one [T, C] logits chunk (C = default_logprob_chunk(V) <= V/16) plus [T, 4] statistics;
// the backward writes dz into that same chunk buffer. The GEMMs are ops::linear /
// ops::linear_backward over row views of the weight, so autocast and gradient accumulation behave
// exactly as for the full lm_head.
//
// CUDA under Bf16Autocast (H > 0): the same loop runs in
// cuda::linear_token_logprobs{,_bwd}_autocast (cuda/logprob_head.h) on bf16 operands converted once
// per call, with the backward's dz written directly in bf16 — the same numbers as the composition
// above (same roundings, same GEMM calls). Its extra memory, in bytes, with C =
// default_logprob_chunk(V) <= V/16:
//   f32 logits chunk 4TC + bf16 dz chunk 2TC + bf16 h 2TH + bf16 weight rows 2CH + stats 16T
//   <= 6TV/16 + 2TH + VH/8 + 16T,
// within issue 7's bound T·V·4/8 = TV/2 whenever 2TH + VH/8 + 16T <= TV/8. For T >= V/16 (then
// VH/8 <= 2TH) H <= V/32 - 4 suffices: Qwen2.5 (V = 151936, H = 896 / 1536) is far inside (4744);
// the 2CH weight rows only matter for T below ~H (scoring a handful of tokens). The autocast
// composition this replaces held the same buffers (its bf16 copies of h, w_c and dz were per-chunk
// scratch), so the bound is unchanged; the chunk width stays the caller's (model/scoring.cc sizes
// its micro-batches by it).
#include <algorithm>
#include <cmath>

#include "gyre/backend/cpu/kernels.h"
#include "gyre/backend/cuda/kernels.h"  // declarations only; linked when GYRE_HAVE_CUDA
#include "gyre/backend/cuda/logprob_head.h"
#include "gyre/backend/ops.h"
#include "gyre/backend/ops_args.h"

namespace gyre::ops {

using namespace detail;

namespace {

void check_temperature(const char* op, float temperature) {
  if (!(temperature > 0) || !std::isfinite(temperature))
    GYRE_THROW(invalid_argument, "ops::{}: temperature {} must be a finite number > 0", op,
               temperature);
}

// logits_chunk [n, C] with targets i32 [n]; returns n and C.
void check_chunk(const char* op, const Tensor& logits_chunk, const Tensor& targets, int64_t v0,
                 int64_t* n, int64_t* C) {
  check_defined(op, "logits_chunk", logits_chunk);
  check_i32(op, "targets", targets);
  GYRE_CHECK(logits_chunk.dim() == 2, "ops::{}: logits_chunk must be [T, C], got {}", op,
             shape_str(logits_chunk.shape()));
  GYRE_CHECK(v0 >= 0, "ops::{}: chunk offset v0 = {} must be >= 0", op, v0);
  *n = logits_chunk.size(0);
  *C = logits_chunk.size(1);
  GYRE_CHECK(targets.numel() == *n, "ops::{}: {} targets for {} rows of logits_chunk {}", op,
             targets.numel(), *n, shape_str(logits_chunk.shape()));
}

// Every target < V (negative ones are skipped rows), unless the caller proved it (KnownIndices).
void check_targets(const char* op, const Tensor& targets, int64_t V) {
  if (const auto* k = KnownIndices::find(targets, KnownIndices::Entry::range))
    if (k->hi <= V) return;
  const Tensor host = host_view(targets);
  const int32_t* tg = host.i32();
  for (int64_t i = 0; i < host.numel(); ++i)
    if (tg[i] >= V)
      GYRE_THROW(invalid_argument,
                 "ops::{}: target id {} at position {} is outside the vocabulary [0, {}); use a "
                 "negative target to skip a position",
                 op, tg[i], i, V);
}

// A [T, c] tensor over the first T·c elements of `buf` (c <= buf's columns): the last, narrower
// vocabulary chunk reuses the full chunk's buffer.
Tensor chunk_view(const Tensor& buf, int64_t T, int64_t c) {
  return buf.reshape({buf.numel()}).narrow(0, T * c).reshape({T, c});
}

struct LinearArgs {
  int64_t T = 0, H = 0, V = 0, chunk = 0;
  Device dev = Device::cpu;
  DType dt = DType::f32;
};

LinearArgs check_linear(const char* op, const Tensor& h, const Tensor& w, const Tensor& targets,
                        float temperature, int64_t chunk, std::initializer_list<Arg> floats) {
  check_defined(op, "h", h);
  check_defined(op, "w", w);
  check_i32(op, "targets", targets);
  LinearArgs a;
  a.dev = op_device(op, floats);
  GYRE_CHECK(targets.device() == a.dev, "ops::{}: targets are on {} but h is on {}", op,
             device_name(targets.device()), device_name(a.dev));
  a.dt = float_dtype(op, floats);
  GYRE_CHECK(h.dim() == 2 && w.dim() == 2 && h.size(1) == w.size(1),
             "ops::{}: h must be [T, H] and w [V, H], got {} and {}", op, shape_str(h.shape()),
             shape_str(w.shape()));
  a.T = h.size(0), a.H = h.size(1), a.V = w.size(0);
  GYRE_CHECK(a.V > 0, "ops::{}: the weight has no rows (vocabulary size 0)", op);
  GYRE_CHECK(targets.numel() == a.T, "ops::{}: {} targets for {} rows of h", op, targets.numel(),
             a.T);
  check_temperature(op, temperature);
  a.chunk = chunk > 0 ? std::min(chunk, a.V) : default_logprob_chunk(a.V);
  check_targets(op, targets, a.V);
  return a;
}

}  // namespace

void logprob_chunk_stats(const Tensor& logits_chunk, const Tensor& targets, int64_t v0,
                         float temperature, bool accumulate, Tensor& stats) {
  OpScope op_scope_("logprob_chunk_stats");
  const char* op = "logprob_chunk_stats";
  int64_t n = 0, C = 0;
  check_chunk(op, logits_chunk, targets, v0, &n, &C);
  const Device dev =
      op_device(op, {{"logits_chunk", &logits_chunk}, {"targets", &targets}, {"stats", &stats}});
  const DType dt = float_dtype(op, {{"logits_chunk", &logits_chunk}, {"stats", &stats}});
  GYRE_CHECK(C > 0, "ops::{}: logits_chunk {} has no columns", op, shape_str(logits_chunk.shape()));
  check_temperature(op, temperature);
  GYRE_CHECK(!accumulate || stats.defined(),
             "ops::{}: accumulate = true needs the stats of the previous chunks", op);
  prepare_out(op, "stats", stats, {n, 4}, dt, dev);
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32(op, dt);
      return cuda::logprob_chunk_stats(logits_chunk.f32(), targets.i32(), n, C, v0, temperature,
                                       accumulate, stats.f32());
    }
  dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::logprob_chunk_stats<T>(ptr<T>(logits_chunk), targets.i32(), n, C, v0, T(temperature),
                                accumulate, ptr<T>(stats));
  });
}

void logprob_chunk_finish(const Tensor& stats, const Tensor& targets, Tensor& logp, Tensor& entropy,
                          Tensor& lse) {
  OpScope op_scope_("logprob_chunk_finish");
  const char* op = "logprob_chunk_finish";
  check_defined(op, "stats", stats);
  check_i32(op, "targets", targets);
  const Device dev = op_device(op, {{"stats", &stats},
                                    {"targets", &targets},
                                    {"logp", &logp},
                                    {"entropy", &entropy},
                                    {"lse", &lse}});
  const DType dt =
      float_dtype(op, {{"stats", &stats}, {"logp", &logp}, {"entropy", &entropy}, {"lse", &lse}});
  GYRE_CHECK(stats.dim() == 2 && stats.size(1) == 4, "ops::{}: stats must be [T, 4], got {}", op,
             shape_str(stats.shape()));
  const int64_t n = stats.size(0);
  GYRE_CHECK(targets.numel() == n, "ops::{}: {} targets for {} rows of stats", op, targets.numel(),
             n);
  prepare_out(op, "logp", logp, {n}, dt, dev);
  if (entropy.defined()) prepare_out(op, "entropy", entropy, {n}, dt, dev);
  if (lse.defined()) prepare_out(op, "lse", lse, {n}, dt, dev);
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32(op, dt);
      return cuda::logprob_chunk_finish(stats.f32(), targets.i32(), n, logp.f32(),
                                        ptr<float>(entropy), ptr<float>(lse));
    }
  dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::logprob_chunk_finish<T>(ptr<T>(stats), targets.i32(), n, ptr<T>(logp), ptr<T>(entropy),
                                 ptr<T>(lse));
  });
}

void logprob_chunk_backward(const Tensor& logits_chunk, const Tensor& targets, int64_t v0,
                            float temperature, const Tensor& lse, const Tensor& entropy,
                            const Tensor& dlogp, const Tensor& dentropy, Tensor& dlogits_chunk) {
  OpScope op_scope_("logprob_chunk_backward");
  const char* op = "logprob_chunk_backward";
  int64_t n = 0, C = 0;
  check_chunk(op, logits_chunk, targets, v0, &n, &C);
  check_defined(op, "lse", lse);
  check_defined(op, "dlogp", dlogp);
  const Device dev = op_device(op, {{"logits_chunk", &logits_chunk},
                                    {"targets", &targets},
                                    {"lse", &lse},
                                    {"entropy", &entropy},
                                    {"dlogp", &dlogp},
                                    {"dentropy", &dentropy},
                                    {"dlogits_chunk", &dlogits_chunk}});
  const DType dt = float_dtype(op, {{"logits_chunk", &logits_chunk},
                                    {"lse", &lse},
                                    {"entropy", &entropy},
                                    {"dlogp", &dlogp},
                                    {"dentropy", &dentropy},
                                    {"dlogits_chunk", &dlogits_chunk}});
  check_temperature(op, temperature);
  GYRE_CHECK(lse.numel() == n, "ops::{}: lse has {} elements for {} rows", op, lse.numel(), n);
  GYRE_CHECK(dlogp.numel() == n, "ops::{}: dlogp has {} elements for {} rows", op, dlogp.numel(),
             n);
  if (dentropy.defined()) {
    GYRE_CHECK(dentropy.numel() == n, "ops::{}: dentropy has {} elements for {} rows", op,
               dentropy.numel(), n);
    GYRE_CHECK(entropy.defined() && entropy.numel() == n,
               "ops::{}: a dentropy needs the forward's entropy [{}] (got {})", op, n,
               entropy.defined() ? shape_str(entropy.shape()) : std::string("undefined"));
  }
  prepare_out(op, "dlogits_chunk", dlogits_chunk, logits_chunk.shape(), dt, dev);
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32(op, dt);
      return cuda::logprob_chunk_bwd(logits_chunk.f32(), targets.i32(), n, C, v0, temperature,
                                     lse.f32(), ptr<float>(entropy), dlogp.f32(),
                                     ptr<float>(dentropy), dlogits_chunk.f32());
    }
  dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::logprob_chunk_bwd<T>(ptr<T>(logits_chunk), targets.i32(), n, C, v0, T(temperature),
                              ptr<T>(lse), ptr<T>(entropy), ptr<T>(dlogp), ptr<T>(dentropy),
                              ptr<T>(dlogits_chunk));
  });
}

int64_t default_logprob_chunk(int64_t V) {
  // Two [T, C] f32 buffers (a chunk and its dz) must stay <= 1/8 of the [T, V] logits: C <= V/16,
  // rounded down to a multiple of 128 (GEMM-friendly), at least 128 and at most V.
  const int64_t c = (V / 16) / 128 * 128;
  return std::min(V, std::max<int64_t>(128, c));
}

void linear_token_logprobs(const Tensor& h, const Tensor& w, const Tensor& targets,
                           float temperature, int64_t chunk, Tensor& logp, Tensor& entropy,
                           Tensor& lse) {
  OpScope op_scope_("linear_token_logprobs");
  const char* op = "linear_token_logprobs";
  const LinearArgs a =
      check_linear(op, h, w, targets, temperature, chunk,
                   {{"h", &h}, {"w", &w}, {"logp", &logp}, {"entropy", &entropy}, {"lse", &lse}});
  prepare_out(op, "logp", logp, {a.T}, a.dt, a.dev);
  if (entropy.defined()) prepare_out(op, "entropy", entropy, {a.T}, a.dt, a.dev);
  prepare_out(op, "lse", lse, {a.T}, a.dt, a.dev);
  if (a.T == 0) return;
  if constexpr (kCuda)
    if (a.dev == Device::cuda && bf16_autocast() && a.H > 0) {
      require_cuda_f32(op, a.dt);
      Bf16WeightCache* cache = bf16_weight_cache();
      return cuda::linear_token_logprobs_autocast(
          h.f32(), w.f32(), cache ? cache->bf16(w) : nullptr, targets.i32(), a.T, a.H, a.V, a.chunk,
          temperature, logp.f32(), ptr<float>(entropy), lse.f32());
    }
  const Tensor buf = Tensor::empty({a.T, a.chunk}, a.dt, a.dev);
  Tensor stats = Tensor::empty({a.T, 4}, a.dt, a.dev), none;
  for (int64_t v0 = 0; v0 < a.V; v0 += a.chunk) {
    const int64_t c = std::min(a.chunk, a.V - v0);
    Tensor z = chunk_view(buf, a.T, c);
    linear(h, w.narrow(v0, c), none, z);  // logits of vocabulary rows [v0, v0 + c)
    logprob_chunk_stats(z, targets, v0, temperature, /*accumulate=*/v0 > 0, stats);
  }
  logprob_chunk_finish(stats, targets, logp, entropy, lse);
}

void linear_token_logprobs_backward(const Tensor& h, const Tensor& w, const Tensor& targets,
                                    float temperature, int64_t chunk, const Tensor& lse,
                                    const Tensor& entropy, const Tensor& dlogp,
                                    const Tensor& dentropy, Tensor& dh, Tensor& dw) {
  OpScope op_scope_("linear_token_logprobs_backward");
  const char* op = "linear_token_logprobs_backward";
  const LinearArgs a = check_linear(op, h, w, targets, temperature, chunk,
                                    {{"h", &h},
                                     {"w", &w},
                                     {"lse", &lse},
                                     {"entropy", &entropy},
                                     {"dlogp", &dlogp},
                                     {"dentropy", &dentropy},
                                     {"dh", &dh},
                                     {"dw", &dw}});
  check_defined(op, "lse", lse);
  check_defined(op, "dlogp", dlogp);
  GYRE_CHECK(lse.numel() == a.T && dlogp.numel() == a.T,
             "ops::{}: lse and dlogp must have {} elements, got {} and {}", op, a.T, lse.numel(),
             dlogp.numel());
  if (dentropy.defined())
    GYRE_CHECK(entropy.defined() && entropy.numel() == a.T && dentropy.numel() == a.T,
               "ops::{}: a dentropy [{}] needs the forward's entropy [{}] (pass the entropy "
               "linear_token_logprobs wrote)",
               op, dentropy.numel(), a.T);
  if (dw.defined()) check_shape(op, "dw", dw, w.shape());
  prepare_out(op, "dh", dh, {a.T, a.H}, a.dt, a.dev);
  if (a.T == 0) return;
  if constexpr (kCuda)
    if (a.dev == Device::cuda && bf16_autocast() && a.H > 0) {
      require_cuda_f32(op, a.dt);
      Bf16WeightCache* cache = bf16_weight_cache();
      // Deferred zeros in dw (Gradients::zero) are claimed: every chunk's dW GEMM overwrites its
      // rows (T > 0 and H > 0 here, and the chunks cover all V rows).
      const bool dw_overwrite = a.V > 0 && dw.defined() && dw.claim_pending_zero();
      return cuda::linear_token_logprobs_bwd_autocast(
          h.f32(), w.f32(), cache ? cache->bf16(w) : nullptr, targets.i32(), a.T, a.H, a.V, a.chunk,
          temperature, lse.f32(), ptr<float>(entropy), dlogp.f32(), ptr<float>(dentropy), dh.f32(),
          ptr<float>(dw), dw_overwrite);
    }
  const Tensor buf = Tensor::empty({a.T, a.chunk}, a.dt, a.dev);
  Tensor none;
  for (int64_t v0 = 0; v0 < a.V; v0 += a.chunk) {
    const int64_t c = std::min(a.chunk, a.V - v0);
    const Tensor wc = w.narrow(v0, c);
    Tensor z = chunk_view(buf, a.T, c);
    linear(h, wc, none, z);  // recompute the chunk's logits
    logprob_chunk_backward(z, targets, v0, temperature, lse, entropy, dlogp, dentropy, z);
    // dh (+)= dz_c · W_c; dW_c += dz_c^T · h (a row view of dw: the rows of this chunk).
    Tensor dwc = dw.defined() ? dw.narrow(v0, c) : Tensor();
    linear_backward(z, h, wc, dh, dwc, none, /*accumulate_dx=*/v0 > 0);
  }
}

void linear_token_logprobs_with_grad(const Tensor& h, const Tensor& w, const Tensor& targets,
                                     float temperature, const Tensor& dlogp, const Tensor& dentropy,
                                     Tensor& logp, Tensor& entropy, Tensor& lse, Tensor& dh,
                                     Tensor& dw) {
  OpScope op_scope_("linear_token_logprobs_with_grad");
  const char* op = "linear_token_logprobs_with_grad";
  const LinearArgs a = check_linear(op, h, w, targets, temperature, 0,
                                    {{"h", &h},
                                     {"w", &w},
                                     {"dlogp", &dlogp},
                                     {"dentropy", &dentropy},
                                     {"logp", &logp},
                                     {"entropy", &entropy},
                                     {"lse", &lse},
                                     {"dh", &dh},
                                     {"dw", &dw}});
  check_defined(op, "dlogp", dlogp);
  GYRE_CHECK(dlogp.numel() == a.T,
             "ops::{}: dlogp must have {} elements (one per row of h), got {}", op, a.T,
             dlogp.numel());
  if (dentropy.defined())
    GYRE_CHECK(dentropy.numel() == a.T,
               "ops::{}: dentropy must have {} elements (one per row of h), got {}", op, a.T,
               dentropy.numel());
  if (dw.defined()) check_shape(op, "dw", dw, w.shape());
  if constexpr (kCuda)
    if (a.dev == Device::cuda && bf16_autocast() && a.H > 0 && a.T > 0) {
      require_cuda_f32(op, a.dt);
      prepare_out(op, "logp", logp, {a.T}, a.dt, a.dev);
      if (entropy.defined()) prepare_out(op, "entropy", entropy, {a.T}, a.dt, a.dev);
      prepare_out(op, "lse", lse, {a.T}, a.dt, a.dev);
      prepare_out(op, "dh", dh, {a.T, a.H}, a.dt, a.dev);
      Bf16WeightCache* cache = bf16_weight_cache();
      // Deferred zeros in dw are claimed: the first token chunk's dW GEMM overwrites all V rows.
      const bool dw_overwrite = dw.defined() && dw.claim_pending_zero();
      return cuda::linear_token_logprobs_with_grad_autocast(
          h.f32(), w.f32(), cache ? cache->bf16(w) : nullptr, targets.i32(), a.T, a.H, a.V,
          temperature, dlogp.f32(), ptr<float>(dentropy), logp.f32(), ptr<float>(entropy),
          lse.f32(), dh.f32(), ptr<float>(dw), dw_overwrite);
    }
  // The composition; the backward needs the forward's entropy whenever a dentropy is given.
  Tensor scratch;
  if (dentropy.defined() && !entropy.defined()) scratch = Tensor::empty({a.T}, a.dt, a.dev);
  Tensor& ent = entropy.defined() ? entropy : scratch;
  linear_token_logprobs(h, w, targets, temperature, 0, logp, ent, lse);
  linear_token_logprobs_backward(h, w, targets, temperature, 0, lse, ent, dlogp, dentropy, dh, dw);
}

}  // namespace gyre::ops
