// The batch-1 decode stack (decode_stack.h): all decoder layers of one decode step in one
// persistent kernel. Read decode_stack.h first (what it computes, and the bitwise contract).
//
// Schedule. gridDim.x CTAs of kThreads (256) threads, one per SM. Per layer the
// stages run in order, a grid-wide barrier after each (every CTA's writes of stage s visible to
// every CTA before stage s + 1 reads them):
//   QKV   columns of [wq; wk; wv] behind the input norm          -> q, k, v
//   ATTN  the attention CTAs (plan.items x plan.splits) as virtual blocks, RoPE + KV write fused
//   COMB  the split combine (only when plan.splits > 1), one virtual block per head
//   O     columns of wo, residual epilogue                          -> x
//   GU    columns of gate/up behind the post-attention norm, SiLU·mul -> act
//   DOWN  columns of wd, residual epilogue                          -> x
// In a GEMV stage CTA b owns the contiguous output columns [b N / G, (b + 1) N / G).
//
// Weight ring. Thread 0 of each CTA walks the CTA's sequence of weight chunks over the whole step
// (layer by layer, stage by stage; a chunk = a few consecutive columns of one weight, i.e.
// consecutive rows of W, contiguous bytes) and copies each into the next free slot of a
// shared-memory ring with cp.async.bulk, completing on the slot's mbarrier. The consumers (all
// threads) take the chunks in the same order; after a chunk, a __syncthreads frees its slot and
// thread 0 refills it with the chunk kSlots ahead. Nothing in the weight stream depends on
// activations, so the copies run ahead across stage boundaries and grid barriers: while a CTA waits
// at a barrier or attends, its next stages' weights are already on the way.
//
// Activations. A GEMV stage first stages its input row once per CTA in shared memory as the bf16
// values the GEMV kernels feed their FMAs (round_bf16 of x, or of the RMSNorm of x): bf16 holds
// them exactly, so reading them back is the same f32 value. Activations written by other CTAs are
// read with ld.global.cg (L2; L1 is not coherent across SMs) after the barrier's acquire.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/decode_stack.h"
#include "gyre/backend/cuda/gemv_bf16_common.cuh"
#include "gyre/backend/cuda/mbarrier.cuh"
#include "gyre/backend/cuda/paged_bf16.h"
#include "gyre/backend/cuda/paged_bf16_attn_cta.cuh"
#include "gyre/backend/cuda/paged_bf16_combine_row.cuh"
#include "gyre/backend/cuda/paged_bf16_plan.h"
#include "gyre/backend/cuda/rms_row.cuh"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/backend/cuda/silu.cuh"
#include "gyre/core/error.h"

namespace gyre::cuda {

namespace {

namespace pb = paged_bf16_detail;

// 8 warps a CTA: rms_row.cuh's and paged_bf16_combine.cu's block size, so the rstd and the split
// combine run in their kernels' summation orders as they are; the attention CTA body (4 warps)
// runs on warps 0-3 with named barrier kAttnBarrier while warps 4-7 wait at the grid barrier.
// (A first version had 4 warps a CTA and replayed the 256-thread orders: the GEMV stages were
// latency-bound, docs/cuda.md.)
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kAttnThreads = pb::kThreads;
constexpr int kAttnBarrier = 1;  // named barrier of the attention's warps (0 is __syncthreads')
static_assert(kAttnThreads == 128 && kThreads >= kAttnThreads, "the attention runs on warps 0-3");
constexpr int kSlotBytes = 24 * 1024;  // one ring slot: a chunk of whole weight rows
constexpr int kMaxRowsK = 12288;       // most inputs of a linear (the staged bf16 row: 24 KB)
static_assert(pb::kCombineThreads == kThreads, "the combine runs in its kernel's thread layout");
constexpr int kRegRow = 8;  // a normed row of <= 8 * 256 floats is read into registers
static_assert(rms::kThreads == kThreads, "the rstd runs in rms_row.cuh's thread layout");
constexpr int kSplitWarps = 4;          // gemv::split_for's S for long rows
constexpr int kSmemPerSm = 227 * 1024;  // the most one CTA may have on sm_90
constexpr int kStaticSmem = 8 * 1024;   // the kernel's static shared memory, rounded up
constexpr int kMaxSlots = 8;
constexpr int kMaxColsPerCta = 256;  // most O / DOWN output columns one CTA owns (H / grid)

// Dynamic shared memory: [attention CTA (Layout<D, R>) | staged bf16 input row | ring slots], as
// many slots as fit one CTA per SM (D = 128, R = 8: 5 slots; D = 64: 6).
template <int D, int R>
struct Smem {
  static constexpr int kAttn = (pb::Layout<D, R>::kBytes + 127) / 128 * 128;
  static constexpr int kRow = kAttn;
  static constexpr int kRing = kRow + kMaxRowsK * 2;
  static constexpr int kSlots = (kSmemPerSm - kStaticSmem - kRing) / kSlotBytes < kMaxSlots
                                    ? (kSmemPerSm - kStaticSmem - kRing) / kSlotBytes
                                    : kMaxSlots;
  static constexpr int kBytes = kRing + kSlots * kSlotBytes;
  static_assert(kSlots >= 2, "at least double buffering");
};

enum Stage : int { kQkv = 0, kO = 1, kGu = 2, kDown = 3, kGemvStages = 4 };

struct Params {
  int layers, H, Hq, Hkv, D, I;
  double eps;
  float* x;     // [H]
  float* qkv;   // q [Hq D] | k [Hkv D] | v [Hkv D]
  float* attn;  // [Hq D]
  float* act;   // [I]
  unsigned* counter;
  pb::AttnParams ap;      // k_cache / v_cache set per layer
  pb::RopeAttnParams rp;  // k_cache_w / v_cache_w set per layer
  int attn_items, attn_splits;
  bool split_down;   // gemv::split_for(I) == 4: the down projection's columns take 4 warps each
  long long* trace;  // DecodeStackArgs::trace (null: none)
  int probe;         // DecodeStackArgs::probe
  int trace_stages;
  DecodeStackLayer layer[kDecodeStackMaxLayers];
};

// ---- small PTX helpers ----------------------------------------------------------------------

__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// Grid-wide barrier number `n` (0, 1, 2, ... in the kernel's order; the counter starts at 0): every
// CTA's writes before it are visible to every CTA after it — thread 0 arrives with a release
// reduction and spins with acquire loads (the __syncthreads on both sides extend both to the whole
// CTA); reads of other CTAs' data use ld.global.cg besides.
__device__ __forceinline__ void grid_barrier(unsigned* counter, unsigned n) {
  __syncthreads();
  if (threadIdx.x == 0) {
    // Release: this CTA's writes (ordered before by the __syncthreads) before the arrival; acquire:
    // every CTA's before anything after the barrier.
    asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(counter) : "memory");
    const unsigned target = (n + 1) * gridDim.x;
    while (ld_acquire(counter) < target) {
    }
  }
  __syncthreads();
}

// ---- the chunk sequence -----------------------------------------------------------------------

// Sizes of one GEMV stage.
struct StageShape {
  int K;        // input length
  int C;        // weight rows per output column (GU: gate and up)
  int members;  // QKV: 3, else 1
  int n[3];     // output columns of each member
};

__device__ __forceinline__ StageShape stage_shape(const Params& p, int s) {
  StageShape sh{};
  sh.members = 1;
  sh.C = 1;
  switch (s) {
    case kQkv:
      sh.K = p.H, sh.members = 3;
      sh.n[0] = p.Hq * p.D, sh.n[1] = p.Hkv * p.D, sh.n[2] = p.Hkv * p.D;
      break;
    case kO: sh.K = p.Hq * p.D, sh.n[0] = p.H; break;
    case kGu: sh.K = p.H, sh.C = 2, sh.n[0] = p.I; break;
    default: sh.K = p.I, sh.n[0] = p.H; break;
  }
  return sh;
}

__device__ __forceinline__ int total_columns(const StageShape& sh) {
  int t = 0;
  for (int m = 0; m < sh.members; ++m) t += sh.n[m];
  return t;
}

// Columns of one chunk: as many whole columns (C rows of K bf16 each) as fill a slot.
__device__ __forceinline__ int chunk_columns(const StageShape& sh) {
  return max(1, kSlotBytes / (sh.C * sh.K * 2));
}

// One chunk: columns [c0, c1) of member m (member-local indices) of GEMV stage s of layer l, whose
// rows have K inputs and C weight rows per column.
struct Chunk {
  int l, s, m, c0, c1, K, C;
};

// Walks this CTA's chunks in the order both the producer and the consumers take them. The stage's
// sizes are computed once when the walk enters it, so next() is a few integer operations (thread 0
// calls it for every copy it issues).
struct ChunkWalk {
  int l = 0, s = 0;
  int col = 0, hi = 0;  // the CTA's remaining columns of (l, s), in the concatenated member space
  int m = 0, m_begin = 0, m_end = 0;  // the member holding `col`
  int cpc = 1;                        // columns per chunk
  StageShape sh{};

  __device__ __forceinline__ void enter(const Params& p) {
    sh = stage_shape(p, s);
    const unsigned N = unsigned(total_columns(sh));
    col = int(blockIdx.x * N / gridDim.x);  // N * grid < 2^32 (decode_stack_supported)
    hi = int((blockIdx.x + 1) * N / gridDim.x);
    m = 0, m_begin = 0, m_end = sh.n[0];
    while (m + 1 < sh.members && col >= m_end) m_begin = m_end, m_end += sh.n[++m];
    cpc = chunk_columns(sh);
  }
  __device__ __forceinline__ void start(const Params& p) {
    l = 0, s = 0;
    enter(p);
    skip_empty(p);
  }
  // Moves to the next (l, s) with columns for this CTA; l == p.layers at the end.
  __device__ __forceinline__ void skip_empty(const Params& p) {
    while (l < p.layers && col >= hi) {
      if (++s == kGemvStages) s = 0, ++l;
      if (l < p.layers) enter(p);
    }
  }
  __device__ __forceinline__ bool done(const Params& p) const { return l >= p.layers; }
  // The next chunk (not done()).
  __device__ __forceinline__ Chunk next(const Params& p) {
    while (m + 1 < sh.members && col >= m_end) m_begin = m_end, m_end += sh.n[++m];
    const int c1 = min(min(hi, m_end), col + cpc);
    const Chunk c{l, s, m, col - m_begin, c1 - m_begin, sh.K, sh.C};
    col = c1;
    skip_empty(p);
    return c;
  }
};

__device__ __forceinline__ const uint16_t* chunk_weight(const Params& p, const Chunk& c, int row) {
  const DecodeStackLayer& L = p.layer[c.l];
  switch (c.s) {
    case kQkv: return c.m == 0 ? L.wq : (c.m == 1 ? L.wk : L.wv);
    case kO: return L.wo;
    case kGu: return row == 0 ? L.wg : L.wu;
    default: return L.wd;
  }
}

// The ring: slot i holds chunk j with j % kSlots == i; its mbarrier's phase parity for chunk j is
// (j / kSlots) & 1.
template <int D, int R>
struct Ring {
  using SM = Smem<D, R>;
  unsigned char* base;
  uint64_t* bars;
  ChunkWalk producer;
  int issued = 0;  // chunks issued by thread 0 so far (only thread 0 keeps it)

  __device__ __forceinline__ unsigned char* slot(int j) const {
    return base + (j % SM::kSlots) * kSlotBytes;
  }
  // Thread 0: issues chunk `issued` into its slot (free: its previous chunk was consumed).
  __device__ __forceinline__ void issue_one(const Params& p) {
    const Chunk c = producer.next(p);
    const uint32_t row_bytes = uint32_t(c.K) * 2, cols = uint32_t(c.c1 - c.c0);
    uint64_t* bar = bars + issued % SM::kSlots;
    unsigned char* dst = slot(issued);
    mbar_expect_tx(smem_addr(bar), cols * row_bytes * uint32_t(c.C));
    for (int r = 0; r < c.C; ++r)
      bulk_copy(dst + r * cols * row_bytes, chunk_weight(p, c, r) + int64_t(c.c0) * c.K,
                cols * row_bytes, bar);
    ++issued;
  }
  // Thread 0: fills every free slot (up to kSlots chunks ahead of `consumed`). The slots' previous
  // contents were read by every thread before the caller's __syncthreads, and the copies are issued
  // after it (the barrier orders the reads before the issue; a fence.proxy.async here changed
  // nothing measurable on an H200).
  __device__ __forceinline__ void refill(const Params& p, int consumed) {
    while (!producer.done(p) && issued < consumed + SM::kSlots) issue_one(p);
  }
};

// ---- activations -----------------------------------------------------------------------------

// rms_row.cuh's row_rstd (this CTA has its 256 threads: thread t sums elements t, t + 256, ... in
// f64 with __fma_rn, then block_sum's butterfly and warp order) with x read through L2.
__device__ __forceinline__ float row_rstd_cg(const float* x, int H, double eps, double* red) {
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  double a = 0;
  for (int c = t; c < H; c += kThreads) {
    const double v = double(__ldcg(x + c));
    a = __fma_rn(v, v, a);
  }
  for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffffu, a, o);
  if (lane == 0) red[warp] = a;
  __syncthreads();
  double s = 0;
  for (int w = 0; w < kWarps; ++w) s += red[w];
  __syncthreads();  // red is reused
  return float(1.0 / sqrt(s / double(H) + eps));
}

// The stage's input row as bf16 in shared memory: round_bf16(x[k]) or, with a norm weight,
// round_bf16(rms::normed(x[k], rstd, nw[k])) — the values gemv::dot_rows_impl multiplies.
__device__ __forceinline__ void stage_row(const float* x, const float* nw, int K, double eps,
                                          uint16_t* row, double* red) {
  if (nw && K <= kRegRow * kThreads) {
    // The normed stages (K = H) read x from L2 once: v[j] is element t + 256 j, row_rstd's
    // sequence for thread t, summed in its order; the norm weights load alongside.
    const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
    float v[kRegRow], w[kRegRow];
#pragma unroll
    for (int j = 0; j < kRegRow; ++j) {
      const int c = t + j * kThreads;
      v[j] = c < K ? __ldcg(x + c) : 0.0f;
      w[j] = c < K ? __ldg(nw + c) : 0.0f;
    }
    double a = 0;
#pragma unroll
    for (int j = 0; j < kRegRow; ++j)
      if (t + j * kThreads < K) a = __fma_rn(double(v[j]), double(v[j]), a);
    for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffffu, a, o);
    if (lane == 0) red[warp] = a;
    __syncthreads();
    double s = 0;
    for (int i = 0; i < kWarps; ++i) s += red[i];
    const float rstd = float(1.0 / sqrt(s / double(K) + eps));
#pragma unroll
    for (int j = 0; j < kRegRow; ++j) {
      const int c = t + j * kThreads;
      if (c < K) row[c] = __bfloat16_as_ushort(__float2bfloat16_rn(rms::normed(v[j], rstd, w[j])));
    }
    __syncthreads();  // the row is complete, and red may be reused
    return;
  }
  float rstd = 0.0f;
  if (nw) rstd = row_rstd_cg(x, K, eps, red);
  for (int k = threadIdx.x; k < K; k += kThreads) {
    float v = __ldcg(x + k);
    if (nw) v = rms::normed(v, rstd, __ldg(nw + k));
    row[k] = __bfloat16_as_ushort(__float2bfloat16_rn(v));  // gemv::round_bf16
  }
  __syncthreads();
}

// ---- one GEMV chunk
// ------------------------------------------------------------------------------

// Lane `lane` of split part `part` (of S) for NC columns at once: for each column and weight row
// wr[i][c] (shared memory), its sums over the vectors part·32 + lane + k·32·S against the staged
// row xs, then the warp butterfly — gemv::dot_rows_impl's order for every (column, row); the NC·C
// chains are independent, so they hide each other's load and FMA latency (a CTA has one or two
// warps per scheduler).
template <int NC, int C, int S>
__device__ __forceinline__ void columns_dot(const uint4* (&wr)[NC][C], const uint4* xs, int K8,
                                            int part, int lane, float (&acc)[NC][C]) {
#pragma unroll
  for (int i = 0; i < NC; ++i)
#pragma unroll
    for (int c = 0; c < C; ++c) acc[i][c] = 0.0f;
  for (int k8 = part * 32 + lane; k8 < K8; k8 += 32 * S) {
    const uint4 xr = xs[k8];
    uint4 w[NC][C];
#pragma unroll
    for (int i = 0; i < NC; ++i)
#pragma unroll
      for (int c = 0; c < C; ++c) w[i][c] = wr[i][c][k8];
    const float xv[8] = {gemv::bf16_lo(xr.x), gemv::bf16_hi(xr.x), gemv::bf16_lo(xr.y),
                         gemv::bf16_hi(xr.y), gemv::bf16_lo(xr.z), gemv::bf16_hi(xr.z),
                         gemv::bf16_lo(xr.w), gemv::bf16_hi(xr.w)};
#pragma unroll
    for (int i = 0; i < NC; ++i)
#pragma unroll
      for (int c = 0; c < C; ++c) {
        const uint4 v = w[i][c];
        const float wf[8] = {gemv::bf16_lo(v.x), gemv::bf16_hi(v.x), gemv::bf16_lo(v.y),
                             gemv::bf16_hi(v.y), gemv::bf16_lo(v.z), gemv::bf16_hi(v.z),
                             gemv::bf16_lo(v.w), gemv::bf16_hi(v.w)};
        float a = acc[i][c];
#pragma unroll
        for (int e = 0; e < 8; ++e) a = fmaf(xv[e], wf[e], a);
        acc[i][c] = a;
      }
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1)
#pragma unroll
    for (int i = 0; i < NC; ++i)
#pragma unroll
      for (int c = 0; c < C; ++c) acc[i][c] += __shfl_xor_sync(0xffffffffu, acc[i][c], off);
}

// The epilogue of column n (member-local) of chunk c, from its totals. resid: the residual stages'
// x values of this CTA's columns, read at the stage's start (resid[n - first column]).
template <int C>
__device__ __forceinline__ void column_out(const Params& p, const Chunk& c, int n,
                                           const float (&acc)[C], const float* resid, int first) {
  const DecodeStackLayer& L = p.layer[c.l];
  if constexpr (C == 2) {
    // gemv_silu_mul_kernel's epilogue: gate and up rounded to bf16, then silu_mul.
    const float g = gemv::round_bf16(gemv::with_bias(acc[0], L.bg, n));
    const float u = gemv::round_bf16(gemv::with_bias(acc[1], L.bu, n));
    p.act[n] = silu_mul_value(g, u);
  } else if (c.s == kQkv) {
    const int off = c.m == 0 ? 0 : (c.m == 1 ? p.Hq * p.D : (p.Hq + p.Hkv) * p.D);
    p.qkv[off + n] = gemv::with_bias(acc[0], c.m == 0 ? L.bq : (c.m == 1 ? L.bk : L.bv), n);
  } else {
    // gemv_residual_kernel's epilogue: (x · w + b) + r.
    const float lin = gemv::with_bias(acc[0], c.s == kO ? L.bo : L.bd, n);
    p.x[n] = lin + resid[n - first];
  }
}

constexpr int kColsAtOnce = 4;                     // most columns one warp computes at once (S = 1)
constexpr int kSplitSlots = kWarps / kSplitWarps;  // split columns the CTA computes at once

// The columns of chunk c from its slot. S = 1: warp w takes the chunk's columns w, w + 8, ...,
// ceil(cols / 8) of them at once. S = 4: warps 4q .. 4q + 3 take columns q, q + 2, ... together
// and warp 4q adds their sums in warp order (gemv::combine_parts' order); the loop runs the same
// number of rounds on every warp (block barriers), a slot past the chunk computes nothing.
// Columns past the chunk in a group compute on column 0's rows and are not written.
template <int C, int S>
__device__ __forceinline__ void chunk_columns_run(const Params& p, const Chunk& c, int K,
                                                  const unsigned char* slot, const uint4* xs,
                                                  float (*parts)[2], const float* resid,
                                                  int first) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, K8 = K / 8;
  const int cols = c.c1 - c.c0;
  const uint4* rows = reinterpret_cast<const uint4*>(slot);
  if constexpr (S == 1) {
    const int per_warp = (cols + kWarps - 1) / kWarps;
    auto run = [&](auto nc) {
      constexpr int NC = decltype(nc)::value;
      for (int j0 = warp; j0 < cols; j0 += kWarps * NC) {
        const uint4* wr[NC][C];
#pragma unroll
        for (int i = 0; i < NC; ++i) {
          const int j = j0 + i * kWarps < cols ? j0 + i * kWarps : j0;
#pragma unroll
          for (int r = 0; r < C; ++r) wr[i][r] = rows + int64_t(r * cols + j) * K8;
        }
        float acc[NC][C];
        columns_dot<NC, C, 1>(wr, xs, K8, 0, lane, acc);
        if (lane == 0)
#pragma unroll
          for (int i = 0; i < NC; ++i)
            if (j0 + i * kWarps < cols)
              column_out<C>(p, c, c.c0 + j0 + i * kWarps, acc[i], resid, first);
      }
    };
    if (per_warp <= 1)
      run(std::integral_constant<int, 1>{});
    else if (per_warp == 2)
      run(std::integral_constant<int, 2>{});
    else
      run(std::integral_constant<int, kColsAtOnce>{});
  } else {
    static_assert(S == kSplitWarps, "a split column takes 4 warps");
    const int q = warp / S, part = warp % S;
    for (int j0 = 0; j0 < cols; j0 += kSplitSlots) {
      const int j = j0 + q;
      const bool live = j < cols;
      const uint4* wr[1][C];
#pragma unroll
      for (int r = 0; r < C; ++r) wr[0][r] = rows + int64_t(r * cols + (live ? j : 0)) * K8;
      float acc[1][C];
      columns_dot<1, C, S>(wr, xs, K8, part, lane, acc);
      if (lane == 0 && part != 0)
#pragma unroll
        for (int r = 0; r < C; ++r) parts[warp][r] = acc[0][r];
      __syncthreads();
      if (part == 0 && lane == 0 && live) {
        float tot[C];
#pragma unroll
        for (int r = 0; r < C; ++r) {
          tot[r] = acc[0][r];
#pragma unroll
          for (int w = 1; w < S; ++w) tot[r] += parts[warp + w][r];  // combine_parts' order
        }
        column_out<C>(p, c, c.c0 + j, tot, resid, first);
      }
      __syncthreads();  // parts is rewritten by the next round
    }
  }
}

// ---- the split combine ------------------------------------------------------------------------

// Partials read through L2 (written by other CTAs in this launch).
struct CgLoad {
  template <typename T>
  __device__ __forceinline__ T operator()(const T* p) const {
    return __ldcg(p);
  }
};

// paged_bf16_combine.cu's kernel for output row `row` (T = 1: row = head): its valid split count
// for the one token, then the same CTA body (paged_bf16_combine_row.cuh).
__device__ __forceinline__ void combine_row(const Params& p, int row) {
  const int kv_len = p.ap.kv_lens[0], splits = p.attn_splits;
  const int pos = kv_len - 1;  // the one token's position (B = 1, one new token)
  const int n = min(splits, pos / pb::split_chunk(kv_len, splits, p.ap.min_chunk) + 1);
  pb::combine_row_cta(reinterpret_cast<const float4*>(p.ap.part_o), p.ap.part_ml, p.Hq, row,
                      p.D / 4, n, reinterpret_cast<float4*>(p.ap.out), CgLoad{});
  __syncthreads();  // its shared arrays are reused by the next row
}

// ---- the kernel --------------------------------------------------------------------------------

template <int D, int R>
__global__ void __launch_bounds__(kThreads, 1)
    decode_stack_kernel(const __grid_constant__ Params p) {
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ __align__(8) uint64_t bars[kMaxSlots];
  __shared__ double red64[kWarps];
  __shared__ float parts[kWarps][2];
  __shared__ float resid[kMaxColsPerCta];  // the residual stages' x values of this CTA's columns
  using SM = Smem<D, R>;
  uint16_t* row = reinterpret_cast<uint16_t*>(smem + SM::kRow);
  const uint4* xs = reinterpret_cast<const uint4*>(row);

  Ring<D, R> ring{smem + SM::kRing, bars};
  if (threadIdx.x == 0) {
    for (int i = 0; i < SM::kSlots; ++i) mbar_init(smem_addr(&bars[i]), 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    ring.producer.start(p);
    ring.refill(p, 0);
  }
  __syncthreads();

  ChunkWalk consumer;
  consumer.start(p);
  int consumed = 0;
  unsigned barrier = 0;
  const int attn_blocks = p.attn_items * p.attn_splits;

  // DecodeStackArgs::trace: per CTA and stage, {kind, clock64 at entry, after the row, before the
  // barrier, after it}.
  auto mark = [&](int slot, long long v) {
    if (p.trace && threadIdx.x == 0 && int(barrier) < p.trace_stages)
      p.trace[(int64_t(blockIdx.x) * p.trace_stages + barrier) * 7 + slot] = v;
  };
  // One GEMV stage of layer l: stage the input row, then this CTA's chunks of it.
  auto gemv_stage = [&](int l, int s) {
    mark(0, s), mark(1, clock64());
    long long wait_clk = 0, refill_clk = 0;
    const DecodeStackLayer& L = p.layer[l];
    const StageShape sh = stage_shape(p, s);
    const float* in = s == kQkv || s == kGu ? p.x : (s == kO ? p.attn : p.act);
    const float* nw = s == kQkv ? L.input_norm : (s == kGu ? L.post_norm : nullptr);
    // The CTA's columns of O / DOWN: their residual x values, read with the row (before any column
    // of this CTA is written; no other CTA writes them).
    const int N = total_columns(sh);
    const int first = int(int64_t(blockIdx.x) * N / gridDim.x);
    if (s == kO || s == kDown) {
      const int last = int(int64_t(blockIdx.x + 1) * N / gridDim.x);
      for (int t = threadIdx.x; t < last - first; t += kThreads) resid[t] = __ldcg(p.x + first + t);
    }
    stage_row(in, nw, sh.K, p.eps, row, red64);  // ends with __syncthreads: resid is visible
    mark(2, clock64());
    while (!consumer.done(p) && consumer.l == l && consumer.s == s) {
      const Chunk c = consumer.next(p);
      const long long w0 = clock64();
      if (p.probe != 2)
        mbar_wait(smem_addr(&bars[consumed % SM::kSlots]), uint32_t(consumed / SM::kSlots) & 1u);
      wait_clk += clock64() - w0;
      const unsigned char* slot = ring.slot(consumed);
      if (p.probe == 1) {
      } else if (s == kGu)
        chunk_columns_run<2, 1>(p, c, sh.K, slot, xs, parts, resid, first);
      else if (s == kDown && p.split_down)
        chunk_columns_run<1, kSplitWarps>(p, c, sh.K, slot, xs, parts, resid, first);
      else
        chunk_columns_run<1, 1>(p, c, sh.K, slot, xs, parts, resid, first);
      ++consumed;
      __syncthreads();  // every warp is done with the slot (and with `row` at the stage's end)
      if (threadIdx.x == 0) {
        const long long r0 = clock64();
        ring.refill(p, consumed);
        refill_clk += clock64() - r0;
      }
    }
    mark(5, wait_clk), mark(6, refill_clk);
    mark(3, clock64());
    grid_barrier(p.counter, barrier);
    mark(4, clock64());
    ++barrier;
  };
  auto other_stage_end = [&] {
    mark(3, clock64());
    grid_barrier(p.counter, barrier);
    mark(4, clock64());
    ++barrier;
  };

  for (int l = 0; l < p.layers; ++l) {
    const DecodeStackLayer& L = p.layer[l];
    gemv_stage(l, kQkv);
    // Attention: the fused decode's CTAs as virtual blocks (bx, by) of its grid.
    pb::AttnParams ap = p.ap;
    ap.k_cache = L.k_cache, ap.v_cache = L.v_cache;
    pb::RopeAttnParams rp = p.rp;
    rp.k_cache_w = L.k_cache, rp.v_cache_w = L.v_cache;
    mark(0, 4), mark(1, clock64()), mark(2, clock64());
    if (threadIdx.x < kAttnThreads)
      for (int v = blockIdx.x; v < attn_blocks; v += gridDim.x) {
        pb::attn_cta<D, R, true, kAttnBarrier>(ap, rp, unsigned(v % p.attn_items),
                                               unsigned(v / p.attn_items));
        pb::attn_sync<kAttnBarrier>();  // the next virtual block reuses the attention's memory
      }
    other_stage_end();
    if (p.attn_splits > 1) {
      mark(0, 5), mark(1, clock64()), mark(2, clock64());
      for (int row = blockIdx.x; row < p.Hq; row += gridDim.x) combine_row(p, row);
      other_stage_end();
    }
    gemv_stage(l, kO);
    gemv_stage(l, kGu);
    gemv_stage(l, kDown);
  }
}

// ---- host side ---------------------------------------------------------------------------------

[[noreturn]] void bad(const std::string& what) {
  throw Error(ErrorKind::invalid_argument, "decode_stack_bf16: " + what);
}

constexpr float kLog2e = 1.4426950408889634f;

bool row_fits(int64_t K, int C) { return K % 8 == 0 && K <= kMaxRowsK && C * K * 2 <= kSlotBytes; }

template <int D, int R>
void launch(const Params& p) {
  constexpr auto kernel = decode_stack_kernel<D, R>;
  static const bool attr = [] {
    GYRE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         Smem<D, R>::kBytes));
    return true;
  }();
  (void)attr;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(sm_count()));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = size_t(Smem<D, R>::kBytes);
  cfg.stream = stream();
  // Cooperative: every CTA resident at once (the grid barriers need it), or the launch fails.
  cudaLaunchAttribute coop[1];
  coop[0].id = cudaLaunchAttributeCooperative;
  coop[0].val.cooperative = 1;
  cfg.attrs = coop;
  cfg.numAttrs = 1;
  const cudaError_t err = cudaLaunchKernelEx(&cfg, kernel, p);
  if (err != cudaSuccess) throw_cuda_error(err, "decode_stack_bf16", __FILE__, __LINE__);
  check_launch("decode_stack_bf16", __FILE__, __LINE__);
}

// R: the plan's query rows per attention CTA (Hq / Hkv rounded up to a power of two; at most 16,
// rope_paged_attention_bf16_supported).
template <int D>
void launch_rows(const Params& p, int R) {
  switch (R) {
    case 1: return launch<D, 1>(p);
    case 2: return launch<D, 2>(p);
    case 4: return launch<D, 4>(p);
    case 8: return launch<D, 8>(p);
    default: return launch<D, 16>(p);
  }
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

bool decode_stack_supported(int64_t layers, int64_t H, int64_t Hq, int64_t Hkv, int64_t D,
                            int64_t I) {
  if (!available()) return false;
  if (layers < 1 || layers > kDecodeStackMaxLayers) return false;
  if (!rope_paged_attention_bf16_supported(Hq, Hkv, D)) return false;
  if (!row_fits(H, 2) || !row_fits(Hq * D, 1) || !row_fits(I, 1)) return false;
  // The split down projection takes 4 warps a column; other stages must stay unsplit
  // (gemv::split_for).
  if (gemv::split_for(H) != 1 || gemv::split_for(Hq * D) != 1) return false;
  if ((H + sm_count() - 1) / sm_count() > kMaxColsPerCta) return false;
  int dev = 0, optin = 0;
  GYRE_CUDA_CHECK(cudaGetDevice(&dev));
  GYRE_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  return optin >= kSmemPerSm;
}

void decode_stack_bf16(const DecodeStackArgs& a) {
  if (!decode_stack_supported(a.layers, a.H, a.Hq, a.Hkv, a.D, a.I))
    bad("unsupported sizes: layers " + std::to_string(a.layers) + ", hidden " +
        std::to_string(a.H) + ", heads " + std::to_string(a.Hq) + "/" + std::to_string(a.Hkv) +
        ", head dim " + std::to_string(a.D) + ", intermediate " + std::to_string(a.I) +
        " (decode_stack_supported says which are taken)");
  if (a.max_kv_len < 1 || a.page_size < 1) bad("max_kv_len and page_size must be >= 1");
  if (!a.x || !aligned16(a.x)) bad("x must be a 16-byte aligned device pointer");
  for (const void* q :
       {static_cast<const void*>(a.positions), static_cast<const void*>(a.slot_mapping),
        static_cast<const void*>(a.cu_seqlens_q), static_cast<const void*>(a.kv_lens),
        static_cast<const void*>(a.page_indptr), static_cast<const void*>(a.page_indices),
        static_cast<const void*>(a.cos), static_cast<const void*>(a.sin)})
    if (!q) bad("null attention index array or RoPE table");
  Params p{};
  p.layers = int(a.layers), p.H = int(a.H), p.Hq = int(a.Hq), p.Hkv = int(a.Hkv);
  p.D = int(a.D), p.I = int(a.I), p.eps = a.eps, p.x = a.x;
  for (int64_t l = 0; l < a.layers; ++l) {
    const DecodeStackLayer& s = a.layer[l];
    const std::string at = "layer " + std::to_string(l) + ": ";
    for (const void* w : {static_cast<const void*>(s.wq), static_cast<const void*>(s.wk),
                          static_cast<const void*>(s.wv), static_cast<const void*>(s.wo),
                          static_cast<const void*>(s.wg), static_cast<const void*>(s.wu),
                          static_cast<const void*>(s.wd), static_cast<const void*>(s.input_norm),
                          static_cast<const void*>(s.post_norm),
                          static_cast<const void*>(s.k_cache), static_cast<const void*>(s.v_cache)})
      if (!w || !aligned16(w))
        bad(at + "every weight, norm weight and cache must be a 16-byte aligned device pointer");
    p.layer[l] = s;
  }
  // The plan rope_paged_attention_bf16_decode makes for B = 1 (same CTAs, chunks, combine).
  const pb::SplitPlan pl =
      pb::make_split_plan(1, a.Hq, a.Hkv, 1, a.max_kv_len, sm_count(), pb::min_chunk_keys());
  if (pl.splits > pb::kMaxSplits) bad("too many key splits");
  const int64_t qd = a.Hq * a.D, kvd = a.Hkv * a.D;
  const int64_t part = pl.splits > 1 ? int64_t(pl.splits) * qd : 0;
  const int64_t part_ml = pl.splits > 1 ? int64_t(pl.splits) * a.Hq * 2 : 0;
  // Scratch (f32 words, each piece 16-byte aligned): q|k|v, attn, act, part_o, part_ml, counter.
  auto up4 = [](int64_t n) { return (n + 3) / 4 * 4; };
  const int64_t o_qkv = 0, o_attn = up4(qd + 2 * kvd), o_act = o_attn + up4(qd),
                o_part = o_act + up4(a.I), o_ml = o_part + up4(part), o_ctr = o_ml + up4(part_ml);
  DeviceBuffer scratch(size_t(o_ctr + 4) * sizeof(float));
  float* base = scratch.as<float>();
  p.qkv = base + o_qkv, p.attn = base + o_attn, p.act = base + o_act;
  p.counter = reinterpret_cast<unsigned*>(base + o_ctr);
  GYRE_CUDA_CHECK(cudaMemsetAsync(p.counter, 0, sizeof(unsigned), stream()));

  pb::AttnParams& ap = p.ap;
  ap.q = p.qkv;
  ap.cu_q = a.cu_seqlens_q, ap.kv_lens = a.kv_lens;
  ap.page_indptr = a.page_indptr, ap.page_indices = a.page_indices;
  ap.T = 1, ap.Hq = int(a.Hq), ap.Hkv = int(a.Hkv), ap.G = int(a.Hq / a.Hkv);
  ap.page_size = int(a.page_size);
  ap.row_tiles = pl.row_tiles, ap.splits = pl.splits, ap.min_chunk = pl.min_chunk;
  ap.qscale = a.scale * kLog2e;
  ap.out = p.attn;
  ap.part_o = pl.splits > 1 ? base + o_part : nullptr;
  ap.part_ml = pl.splits > 1 ? reinterpret_cast<float2*>(base + o_ml) : nullptr;
  pb::RopeAttnParams& rp = p.rp;
  rp.k_new = p.qkv + qd, rp.v_new = p.qkv + qd + kvd;
  rp.positions = a.positions, rp.cos = a.cos, rp.sin = a.sin, rp.slots = a.slot_mapping;
  p.attn_items = int(pl.items), p.attn_splits = pl.splits;

  p.split_down = gemv::split_for(a.I) == kSplitWarps;
  p.trace = a.trace, p.trace_stages = int(a.trace_stages);
  p.probe = a.probe;
  if (a.D == 64)
    launch_rows<64>(p, pl.rows);
  else
    launch_rows<128>(p, pl.rows);
}

}  // namespace gyre::cuda
