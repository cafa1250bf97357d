// CUDA kernels of the vocabulary-chunked log-prob ops (ops.h logprob_chunk_*; CPU reference in
// backend/cpu/logprob_chunk.cc). The caller streams the vocabulary in chunks of C columns:
// logprob_chunk_stats folds one [n, C] chunk of logits into per-row online softmax statistics
// (m, s, w, z_target), logprob_chunk_finish turns them into logp / entropy / lse, and
// logprob_chunk_bwd writes the chunk's dlogits (in place of the logits when dx == x);
// logprob_chunk_bwd_bf16 (logprob_head.h) writes them rounded to bf16 into a separate buffer.
//
// Both chunk kernels are bound by memory bandwidth (the fused head's f32 logits chunk is ~0.6 GB
// per GEMM at T = 16384), so:
// - One read per element. stats_kernel keeps, per thread, an online triple over the elements it
//   has seen: the running max mx (of x; z = x·mul, mul = 1/τ > 0, so max z = mx·mul), s = Σ e and
//   w = Σ e·d with d = z - mx·mul, e = exp(d), as f64 partials. Elements arrive in tiles of
//   kStatsTile float4 groups held in registers; when a tile raises the max the partials are
//   rebased with the fold formula below (s' = a·s, w' = a·(w + δ·s), δ = m - M, a = exp(δ), in
//   f64) — once per tile, not per element. Each group's four e and e·d terms are summed in f32
//   (<= 2 roundings on values <= 4: ~1e-7 relative, like the f32 e themselves) and then added to
//   the f64 partials, which keeps the f64 conversions off the per-element path. At the end the
//   team takes the max M of the per-thread maxima, each thread rebases its triple to M, and the
//   team sums s and w in a fixed order. This replaces a max pass + exp pass (two reads of each
//   element) and keeps the register cost fixed for any C (the chunk may be the whole vocabulary);
//   holding a whole row in registers would need a C-dependent template and a fallback anyway.
//   The only re-read is the target's logit (one element per row, by the team's first thread).
// - 16-byte accesses where possible: float4 loads of x when x is 16-byte aligned and C % 4 == 0
//   (then every row start is), float4 / 4 x bf16 (8-byte) stores of dx when it is aligned as
//   well; scalar loads and stores otherwise (odd C, a narrowed view, the last chunk of a
//   vocabulary that is not a multiple of 4).
// - Rows per block: 256-thread blocks; a row is handled by a team of one warp (8 rows per block,
//   shuffle-only reductions) or by the whole block. The stats kernel uses a warp up to C = 16384
//   (kStatsWarpRowMaxC; the fused head's 9,472-column chunks: 74 float4 groups per lane, no block
//   barriers), the backward up to C = 2048 (it has no reductions; at 9,472 columns a block team
//   gives each thread ~9 groups). The team size depends on C alone.
//
// Invariants: deterministic (fixed element-to-thread assignment and merge order, no atomics); a
// row's statistics depend only on its values, C and τ — not on the pointer alignment (the scalar
// path visits the same groups of four in the same order as the float4 path, padding a partial
// last group with -inf, which adds exactly nothing) nor on n; per-thread partials are f64 and the
// result agrees with the CPU reference (f64 sums) to ~1e-6 relative; the statistics between
// chunks are f32. -inf logits (masked vocabulary): e = 0 adds 0 to s and 0 (not 0 · -inf) to w;
// an all -inf chunk or row part adds nothing. The backward is elementwise with one f32
// expression per element (rounding pinned by __f*_rn intrinsics, so the float4 and scalar paths
// and both output types agree bit for bit); each element of x is read and its dx written by the
// same thread, so dx may alias x (Out = float).
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "gyre/backend/cuda/bf16_bits.cuh"
#include "gyre/backend/cuda/device_util.cuh"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/logprob_head.h"
#include "gyre/backend/cuda/runtime.h"

namespace gyre::cuda {

namespace {

constexpr int kThreads = 256;  // threads per block of every kernel here
// The backward: one warp per row up to this C, else one block per row.
constexpr int kWarpRowMaxC = 2048;
// The stats: one warp per row up to this C (the fused head's 9472-column chunks of the Qwen2.5
// vocabulary included), else one block: a block team's three barriers per row left the kernel at
// 2.88 TB/s where a warp team reaches 3.9 (session 22, 4 x 4096 rows x 9472: 216 -> 159 us).
// The cost is paid by calls of few rows (below ~1,000 the warps no longer fill the GPU, and each
// walks its row alone: a 100-row chunk takes several times a block team's latency). The team may
// not depend on the row count (a row's bits must not depend on its batch), so the choice favours
// the trainer's and scorer's thousands of rows per call.
constexpr int kStatsWarpRowMaxC = 16384;
constexpr int kStatsTile = 8;  // float4 groups per thread in registers per stats tile
constexpr int kBwdTile = 4;    // float4 groups (or elements) per thread per backward step

bool aligned(const void* p, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// Blocks for n rows at kThreads / kTeam rows per block (grid-stride beyond 65535 blocks).
template <int kTeam>
unsigned row_grid(int64_t n) {
  constexpr int64_t rows = kThreads / kTeam;
  const int64_t b = (n + rows - 1) / rows;
  return unsigned(b < 1 ? 1 : (b < 65535 ? b : 65535));
}

// Reductions over a row's team: a warp (kTeam = 32: xor butterflies, every lane gets the same
// bits — a + b = b + a) or the whole block (device_util.cuh, fixed order).
template <int kTeam>
__device__ __forceinline__ float team_max(float v) {
  if constexpr (kTeam == 32) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
  } else {
    return block_max(v);
  }
}
template <int kTeam>
__device__ __forceinline__ double team_sum(double v) {
  if constexpr (kTeam == 32) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
  } else {
    return block_sum(v);
  }
}

// Columns [j0, j0 + 4) of a row, j0 = 4·group < C: one 16-byte load (kVec: row 16-byte aligned,
// C % 4 == 0), else scalar loads with -inf past the row's end.
template <bool kVec>
__device__ __forceinline__ float4 load_group(const float* __restrict__ xr, int64_t j0, int64_t C) {
  if constexpr (kVec) {
    return *reinterpret_cast<const float4*>(xr + j0);
  } else {
    float4 v;
    v.x = xr[j0];
    v.y = j0 + 1 < C ? xr[j0 + 1] : -INFINITY;
    v.z = j0 + 2 < C ? xr[j0 + 2] : -INFINITY;
    v.w = j0 + 3 < C ? xr[j0 + 3] : -INFINITY;
    return v;
  }
}

__device__ __forceinline__ float max4(float4 v) { return fmaxf(fmaxf(v.x, v.y), fmaxf(v.z, v.w)); }

// One element's terms relative to mz (>= its z, finite): e = exp(d), and e·d unless e = 0
// (z = -inf: the limit 0, not 0 · -inf). z = x·mul and d = z - mz are rounded separately, so the
// max element has d = 0 exactly.
__device__ __forceinline__ float exp_term(float x, float mul, float mz, float* wd) {
  const float d = __fsub_rn(__fmul_rn(x, mul), mz);
  const float e = expf(d);
  *wd = e > 0.0f ? __fmul_rn(e, d) : 0.0f;
  return e;
}

// Rebases a thread's (s, w), kept relative to the z-max mz_old, to mz_new >= mz_old — the fold
// formula of the stats kernel, in f64. Only for s > 0 (an empty triple needs nothing).
__device__ __forceinline__ void rebase(double& s, double& w, float mz_old, float mz_new) {
  const double dm = double(mz_old) - double(mz_new);
  const double a = exp(dm);
  w = a * (w + dm * s);
  s = a * s;
}

template <int kTeam, bool kVec>
__global__ void __launch_bounds__(kThreads)
    stats_kernel(const float* __restrict__ x, const int32_t* __restrict__ targets, int64_t n,
                 int64_t C, int64_t v0, float mul, bool accumulate, float* __restrict__ stats) {
  constexpr int kRows = kThreads / kTeam;
  const int lane = int(threadIdx.x) % kTeam;
  const int64_t G = (C + 3) / 4;  // groups of four columns; group g: columns [4g, 4g + 4)
  for (int64_t t0 = int64_t(blockIdx.x) * kRows; t0 < n; t0 += int64_t(gridDim.x) * kRows) {
    // A warp team leaves as a whole (no block barrier when kTeam = 32); a block team never does.
    const int64_t t = t0 + int(threadIdx.x) / kTeam;
    if (t >= n) continue;
    const float* xr = x + t * C;
    // This thread's triple: max of its x so far, and f64 s, w relative to mz = mx·mul. A thread
    // takes groups lane, lane + kTeam, ... (coalesced), kStatsTile of them per tile.
    float mx = -INFINITY;
    double s = 0, w = 0;
    bool nan_skipped = false;  // a NaN in a tile skipped while mx was -inf
    for (int64_t g0 = lane; g0 < G; g0 += int64_t(kStatsTile) * kTeam) {
      float4 v[kStatsTile];
#pragma unroll
      for (int u = 0; u < kStatsTile; ++u) {
        const int64_t g = g0 + int64_t(u) * kTeam;
        v[u] = g < G ? load_group<kVec>(xr, 4 * g, C)
                     : make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY);
      }
      float tmx = max4(v[0]);
#pragma unroll
      for (int u = 1; u < kStatsTile; ++u) tmx = fmaxf(tmx, max4(v[u]));
      if (tmx > mx) {
        if (s > 0) rebase(s, w, __fmul_rn(mx, mul), __fmul_rn(tmx, mul));
        mx = tmx;
      }
      if (mx == -INFINITY) {
        // Only -inf (and NaN, which fmaxf drops) so far: no mass, and no -inf - -inf. Remember a
        // NaN (the tile's sum is NaN exactly then) so that it reaches s as on the CPU.
        float sum = 0.0f;
#pragma unroll
        for (int u = 0; u < kStatsTile; ++u) sum += (v[u].x + v[u].y) + (v[u].z + v[u].w);
        nan_skipped |= isnan(sum);
        continue;
      }
      const float mz = __fmul_rn(mx, mul);
#pragma unroll
      for (int u = 0; u < kStatsTile; ++u) {
        if (g0 + int64_t(u) * kTeam >= G) break;
        float w0, w1, w2, w3;
        const float e0 = exp_term(v[u].x, mul, mz, &w0), e1 = exp_term(v[u].y, mul, mz, &w1),
                    e2 = exp_term(v[u].z, mul, mz, &w2), e3 = exp_term(v[u].w, mul, mz, &w3);
        s += double(__fadd_rn(__fadd_rn(e0, e1), __fadd_rn(e2, e3)));
        w += double(__fadd_rn(__fadd_rn(w0, w1), __fadd_rn(w2, w3)));
      }
    }
    // Merge the team: chunk max mc = max z (mul > 0: max(x)·mul), every triple rebased to it, then
    // sc = Σ exp(z - mc) and wc = Σ exp(z - mc)(z - mc) in a fixed order. An all -inf (masked)
    // row gives mc = -inf, sc = wc = 0 (no thread has s > 0), skipped by the fold below.
    const float mc = __fmul_rn(team_max<kTeam>(mx), mul);
    if (s > 0) rebase(s, w, __fmul_rn(mx, mul), mc);
    // NaN logits: like the CPU reference (whose max skips NaN too), a NaN makes s NaN — also in a
    // chunk holding nothing else than -inf and NaN, so the row's result is NaN whatever the
    // chunking.
    if (nan_skipped) s = NAN;
    const double sc = team_sum<kTeam>(s), wc = team_sum<kTeam>(w);
    if (lane != 0) continue;
    float* st = stats + t * 4;
    const int64_t j = int64_t(targets[t]) - v0;
    const bool has_target = j >= 0 && j < C;
    if (!accumulate) {
      st[0] = mc, st[1] = float(sc), st[2] = float(wc);
      st[3] = has_target ? __fmul_rn(xr[j], mul) : 0.0f;
      continue;
    }
    // Fold (m1, s1, w1) and (mc, sc, wc) at the larger max M: rebasing from m to M multiplies
    // exp(z - m) by a = exp(m - M) and shifts (z - m) by (m - M), so s' = a·s and
    // w' = a·(w + (m - M)·s); an empty triple (s = 0) adds nothing, a NaN one (a NaN logit) is
    // folded so that s stays NaN whatever the chunking (as on the CPU).
    const double m1 = st[0], s1 = st[1], w1 = st[2];
    const double M = fmax(m1, double(mc));
    double so = 0, wo = 0;
    if (s1 != 0) {
      const double a = exp(m1 - M);
      so += a * s1, wo += a * (w1 + (m1 - M) * s1);
    }
    if (sc != 0) {
      const double a = exp(double(mc) - M);
      so += a * sc, wo += a * (wc + (double(mc) - M) * sc);
    }
    st[0] = float(M), st[1] = float(so), st[2] = float(wo);
    if (has_target) st[3] = __fmul_rn(xr[j], mul);
  }
}

__global__ void finish_kernel(const float* __restrict__ stats, const int32_t* __restrict__ targets,
                              int64_t n, float* __restrict__ logp, float* __restrict__ entropy,
                              float* __restrict__ lse) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < n;
       t += int64_t(gridDim.x) * blockDim.x) {
    const float* st = stats + t * 4;
    const double log_s = log(double(st[1]));
    // log p_target = (z_target - m) - log s; H = log s - w / s; lse = m + log s.
    logp[t] = targets[t] < 0 ? 0.0f : float(double(st[3] - st[0]) - log_s);
    if (entropy) entropy[t] = float(log_s - double(st[2]) / double(st[1]));
    if (lse) lse[t] = float(double(st[0]) + log_s);
  }
}

// The per-row constants of the backward.
struct BwdRow {
  float mul, L, g_lp, g_h, h;
  int64_t tg;  // the target's column in the chunk; -1 (or out of range) for none
};

// dz_j = dlogp (1[j = target] - p_j) - dH p_j (log p_j + H), log p_j = z_j - lse; dx = dz / τ.
// Every rounding is explicit (no contraction choices left to the compiler), so each call site —
// float4 or scalar path, f32 or bf16 output — computes the same f32 bits.
__device__ __forceinline__ float dz_value(float x, int64_t j, const BwdRow& r) {
  const float lp = __fsub_rn(__fmul_rn(x, r.mul), r.L);
  const float p = expf(lp);
  const float hit = j == r.tg ? r.g_lp : 0.0f;
  // p = 0: the entropy term's limit 0, not 0 · -inf.
  const float ent = p > 0.0f ? __fmul_rn(__fmul_rn(r.g_h, p), __fadd_rn(lp, r.h)) : 0.0f;
  return __fmul_rn(__fsub_rn(__fsub_rn(hit, __fmul_rn(r.g_lp, p)), ent), r.mul);
}

// The value written for one dz element: f32 as computed (Out = float), or rounded to nearest-even
// bf16 (Out = uint16_t, the bf16 bit pattern) — exactly what cuda::f32_to_bf16 would make of the
// f32 value (bf16_bits.cuh's bf16_rn_*), so the bf16 variant equals the f32 kernel followed by
// that conversion.
__device__ __forceinline__ void store_dz(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_dz(uint16_t* p, float v) { *p = uint16_t(bf16_rn_bits(v)); }
// Four consecutive values at p: one 16-byte (f32) or 8-byte (bf16; little-endian, so the lower
// column in the low half) store; p aligned accordingly.
__device__ __forceinline__ void store_dz4(float* p, float a, float b, float c, float d) {
  *reinterpret_cast<float4*>(p) = make_float4(a, b, c, d);
}
__device__ __forceinline__ void store_dz4(uint16_t* p, float a, float b, float c, float d) {
  *reinterpret_cast<uint2*>(p) = bf16_rn_pack4(a, b, c, d);
}

// dx may alias x when Out = float: each element is read and written by the same thread (a tile's
// loads come before its stores in that thread). Both instantiations evaluate dz_value, so they
// agree before rounding. kVec: x 16-byte aligned, dx aligned for store_dz4, C % 4 == 0.
template <typename Out, int kTeam, bool kVec>
__global__ void __launch_bounds__(kThreads)
    bwd_kernel(const float* x, const int32_t* __restrict__ targets, int64_t n, int64_t C,
               int64_t v0, float mul, const float* __restrict__ lse,
               const float* __restrict__ entropy, const float* __restrict__ dlogp,
               const float* __restrict__ dentropy, Out* dx) {
  constexpr int kRows = kThreads / kTeam;
  const int lane = int(threadIdx.x) % kTeam;
  for (int64_t t = int64_t(blockIdx.x) * kRows + int(threadIdx.x) / kTeam; t < n;
       t += int64_t(gridDim.x) * kRows) {
    const int32_t tgt = targets[t];
    BwdRow r;
    r.mul = mul;
    r.tg = tgt < 0 ? -1 : int64_t(tgt) - v0;
    r.g_lp = tgt < 0 ? 0.0f : dlogp[t];
    r.g_h = dentropy ? dentropy[t] : 0.0f;
    r.h = r.g_h != 0.0f ? entropy[t] : 0.0f;
    r.L = lse[t];
    const float* xr = x + t * C;
    Out* d = dx + t * C;
    if constexpr (kVec) {
      const int64_t G = C / 4;
      for (int64_t g0 = lane; g0 < G; g0 += int64_t(kBwdTile) * kTeam) {
        float4 v[kBwdTile];
#pragma unroll
        for (int u = 0; u < kBwdTile; ++u) {
          const int64_t g = g0 + int64_t(u) * kTeam;
          v[u] = g < G ? *reinterpret_cast<const float4*>(xr + 4 * g) : make_float4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < kBwdTile; ++u) {
          const int64_t j = 4 * (g0 + int64_t(u) * kTeam);
          if (j >= C) break;
          store_dz4(d + j, dz_value(v[u].x, j, r), dz_value(v[u].y, j + 1, r),
                    dz_value(v[u].z, j + 2, r), dz_value(v[u].w, j + 3, r));
        }
      }
    } else {
      for (int64_t j0 = lane; j0 < C; j0 += int64_t(kBwdTile) * kTeam) {
        float v[kBwdTile];
#pragma unroll
        for (int u = 0; u < kBwdTile; ++u) {
          const int64_t j = j0 + int64_t(u) * kTeam;
          v[u] = j < C ? xr[j] : 0.0f;
        }
#pragma unroll
        for (int u = 0; u < kBwdTile; ++u) {
          const int64_t j = j0 + int64_t(u) * kTeam;
          if (j >= C) break;
          store_dz(d + j, dz_value(v[u], j, r));
        }
      }
    }
  }
}

template <int kTeam>
void launch_stats(const float* x, const int32_t* targets, int64_t n, int64_t C, int64_t v0,
                  float mul, bool accumulate, float* stats) {
  if (C % 4 == 0 && aligned(x, 16))
    stats_kernel<kTeam, true><<<row_grid<kTeam>(n), kThreads, 0, stream()>>>(
        x, targets, n, C, v0, mul, accumulate, stats);
  else
    stats_kernel<kTeam, false><<<row_grid<kTeam>(n), kThreads, 0, stream()>>>(
        x, targets, n, C, v0, mul, accumulate, stats);
}

template <typename Out, int kTeam>
void launch_bwd(const float* x, const int32_t* targets, int64_t n, int64_t C, int64_t v0, float mul,
                const float* lse, const float* entropy, const float* dlogp, const float* dentropy,
                Out* dx) {
  if (C % 4 == 0 && aligned(x, 16) && aligned(dx, 4 * sizeof(Out)))
    bwd_kernel<Out, kTeam, true><<<row_grid<kTeam>(n), kThreads, 0, stream()>>>(
        x, targets, n, C, v0, mul, lse, entropy, dlogp, dentropy, dx);
  else
    bwd_kernel<Out, kTeam, false><<<row_grid<kTeam>(n), kThreads, 0, stream()>>>(
        x, targets, n, C, v0, mul, lse, entropy, dlogp, dentropy, dx);
}

template <typename Out>
void launch_bwd_any(const float* x, const int32_t* targets, int64_t n, int64_t C, int64_t v0,
                    float temperature, const float* lse, const float* entropy, const float* dlogp,
                    const float* dentropy, Out* dx) {
  const float mul = 1.0f / temperature;
  if (C <= kWarpRowMaxC)
    launch_bwd<Out, 32>(x, targets, n, C, v0, mul, lse, entropy, dlogp, dentropy, dx);
  else
    launch_bwd<Out, kThreads>(x, targets, n, C, v0, mul, lse, entropy, dlogp, dentropy, dx);
}

}  // namespace

void logprob_chunk_stats(const float* x, const int32_t* targets, int64_t n, int64_t C, int64_t v0,
                         float temperature, bool accumulate, float* stats) {
  if (n == 0 || C == 0) return;
  const float mul = 1.0f / temperature;
  if (C <= kStatsWarpRowMaxC)
    launch_stats<32>(x, targets, n, C, v0, mul, accumulate, stats);
  else
    launch_stats<kThreads>(x, targets, n, C, v0, mul, accumulate, stats);
  GYRE_CUDA_LAUNCHED("logprob_chunk_stats");
}

void logprob_chunk_finish(const float* stats, const int32_t* targets, int64_t n, float* logp,
                          float* entropy, float* lse) {
  if (n == 0) return;
  finish_kernel<<<grid_for(n, kThreads), kThreads, 0, stream()>>>(stats, targets, n, logp, entropy,
                                                                  lse);
  GYRE_CUDA_LAUNCHED("logprob_chunk_finish");
}

void logprob_chunk_bwd(const float* x, const int32_t* targets, int64_t n, int64_t C, int64_t v0,
                       float temperature, const float* lse, const float* entropy,
                       const float* dlogp, const float* dentropy, float* dx) {
  if (n == 0 || C == 0) return;
  launch_bwd_any<float>(x, targets, n, C, v0, temperature, lse, entropy, dlogp, dentropy, dx);
  GYRE_CUDA_LAUNCHED("logprob_chunk_bwd");
}

void logprob_chunk_bwd_bf16(const float* x, const int32_t* targets, int64_t n, int64_t C,
                            int64_t v0, float temperature, const float* lse, const float* entropy,
                            const float* dlogp, const float* dentropy, uint16_t* dz) {
  if (n == 0 || C == 0) return;
  launch_bwd_any<uint16_t>(x, targets, n, C, v0, temperature, lse, entropy, dlogp, dentropy, dz);
  GYRE_CUDA_LAUNCHED("logprob_chunk_bwd_bf16");
}

}  // namespace gyre::cuda
