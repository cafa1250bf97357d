// The batch-1 decode MLP in one persistent launch (gemv_mlp.h says what and why).
//
// Schedule of a block (rms::kThreads threads; the grid is at most the blocks resident at once, one
// or two an SM, so every block runs at the same time — the grid barrier needs that):
//   1. thread 0 issues bulk copies (cp.async.bulk) of the block's down_proj rows — output columns
//      [b·cpb, (b + 1)·cpb) of N, contiguous bytes — into dynamic shared memory, completing on an
//      mbarrier. Weights only (pdl.cuh invariant 1), so this runs before the PDL wait.
//   2. gate/up: gemv::silu_mul_tiles, the linear_gemv_bf16_silu_mul_rms kernel's body (RMSNorm
//      prologue, its pdl_wait, the tile loop) with the grid's own size as the tile stride; each
//      column's f32 value silu(g)·u is stored as bf16 into act.
//   3. a grid-wide barrier: every block's act stores before any block's reads.
//   4. down: the block waits for its copies, then computes its columns with gemv::column_sums —
//      the plain GEMV's per-column order at split S = split_for(I) — reading weights from shared
//      memory (WeightsShared) and act as bf16 (ld_written), and stores y[n] = (Σ + bd[n]) + r[n] as
//      gemv_residual_kernel does.
// Bitwise: the two-kernel path stores act in f32 and the down GEMV rounds each element to bf16
// before its FMA (round_bf16); storing bf16(v) and widening it gives that same value, so the
// products and the sums are those of the two kernels; phase 2's columns and phase 4's columns each
// use one fixed per-column order that depends only on K (resp. I) — not on the grid, the block's
// warps (W = 8 here, 4 in gemv_residual_kernel: combine_parts adds the S partials in warp order
// either way) or where the weight bytes come from.
//
// The grid barrier: a per-stream slot of two counters in device memory (count, generation). Thread
// 0 of each block reads the generation, then adds 1 to count after a fence (release of the block's
// act stores, ordered before by __syncthreads); the last block resets count and publishes
// generation + 1 (release), the others spin until the generation moves (acquire). The slot returns
// to count = 0, so the next launch on the stream reuses it; two launches on one stream never run
// their barriers at once (a launch reaches its barrier only after its pdl_wait, i.e. after every
// earlier kernel of the stream completed). Streams get separate slots (sync_slot).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "gyre/backend/cuda/gemv_bf16_common.cuh"
#include "gyre/backend/cuda/gemv_fused_tiles.cuh"
#include "gyre/backend/cuda/gemv_mlp.h"
#include "gyre/backend/cuda/mbarrier.cuh"
#include "gyre/backend/cuda/pdl.cuh"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/env.h"

namespace gyre::cuda {

namespace {

constexpr int kThreads = rms::kThreads;  // the RMSNorm prologue's block size (rms_row.cuh)
constexpr int kWarps = kThreads / 32;

// Grid-barrier slots: [slot · kSlotWords] = count, [+ 1] = generation; 128 bytes apart.
constexpr int kSyncSlots = 64;
constexpr int kSlotWords = 32;
__device__ unsigned g_mlp_sync[kSyncSlots * kSlotWords];

// How a block's down_proj rows reach shared memory (MlpArgs::copy_mode; GYRE_GEMV_MLP_COPY).
enum CopyMode : int { kTmaStart = 0, kTmaTiles = 1, kAsyncStart = 2, kAsyncTiles = 3 };

struct MlpArgs {
  const float* x;
  RmsPrologue nrm;
  const uint4* wg;
  const float* bg;
  const uint4* wu;
  const float* bu;
  const uint4* wd;
  const float* bd;
  const float* r;
  int64_t K, I, N;
  int64_t cols_per_block;  // down_proj rows (output columns) a block owns
  int copy_mode;           // how down's rows reach shared memory (CopyMode)
  uint16_t* act;           // bf16 [I]
  float* y;                // f32 [N]
  unsigned* sync;          // this stream's barrier slot
};

__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ void grid_barrier(unsigned* slot) {
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned* count = slot;
    unsigned* gen = slot + 1;
    const unsigned g = ld_acquire(gen);  // before arriving: it moves only after every arrival
    __threadfence();                     // release: the block's stores before the arrival
    if (atomicAdd(count, 1u) + 1 == gridDim.x) {
      atomicExch(count, 0u);  // ready for the next launch on this stream
      __threadfence();
      asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(gen), "r"(g + 1) : "memory");
    } else {
      while (ld_acquire(gen) == g) __nanosleep(20);
    }
  }
  __syncthreads();
}

// Global -> shared bulk copy of `bytes` (a multiple of 16, both ends 16-byte aligned), completing
// on the mbarrier at shared address `bar`.
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, uint32_t bytes,
                                          uint32_t bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::
          "r"(smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(bar)
      : "memory");
}

template <int Sg, int Sd, bool kStaged>
__global__ void __launch_bounds__(kThreads) gemv_mlp_rms_kernel(MlpArgs a) {
  pdl_trigger();  // the next decode kernel may launch and load its weights (pdl.cuh)
  extern __shared__ __align__(16) uint4 wd_rows[];
  __shared__ __align__(8) uint64_t wd_bar;
  const int64_t I8 = a.I / 8;
  const int64_t c0 = int64_t(blockIdx.x) * a.cols_per_block;
  const int64_t left = a.N - c0;  // may be <= 0: the last blocks can own no column
  const int64_t cols = left <= 0 ? 0 : (left < a.cols_per_block ? left : a.cols_per_block);
  const uint32_t bar = smem_addr(&wd_bar);
  // 1. The block's down rows into shared memory (weights: before the PDL wait is allowed), as
  // a.copy_mode says: bulk copies (thread 0, on the mbarrier) or 16-byte cp.async of every thread,
  // all at the start or spread over the block's gate/up tiles.
  const int64_t vecs = cols * I8;  // 16-byte vectors of the block's rows
  const bool tma = a.copy_mode == kTmaStart || a.copy_mode == kTmaTiles;
  const bool spread = a.copy_mode == kTmaTiles || a.copy_mode == kAsyncTiles;
  if (kStaged && tma && threadIdx.x == 0) {
    mbar_init(bar, 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    mbar_expect_tx(bar, uint32_t(vecs * 16));  // the one arrival, and the bytes to come
  }
  const int64_t tiles = (a.I + gemv::kColumnsOf<true, Sg> - 1) / gemv::kColumnsOf<true, Sg>;
  const int64_t my_tiles = (tiles - int64_t(blockIdx.x) + gridDim.x - 1) / gridDim.x;
  const int64_t parts = spread ? my_tiles : 1;
  // Part k of the block's copies: rows [k·rp, (k + 1)·rp) by bulk copy, or each thread's vectors
  // t + 256·i for i in [k·vp, (k + 1)·vp) by cp.async.
  auto copy_part = [&](int64_t k) {
    if (!kStaged || k >= parts) return;
    if (tma) {
      if (threadIdx.x != 0) return;
      const int64_t rp = (cols + parts - 1) / parts;
      for (int64_t c = k * rp; c < cols && c < (k + 1) * rp; ++c)
        bulk_copy(wd_rows + c * I8, a.wd + (c0 + c) * I8, uint32_t(a.I * 2), bar);
    } else {
      const int64_t mine = (vecs - threadIdx.x + kThreads - 1) / kThreads;
      const int64_t vp = (mine + parts - 1) / parts;
      const uint4* src = a.wd + c0 * I8;
      for (int64_t i = k * vp; i < mine && i < (k + 1) * vp; ++i) {
        const int64_t v = threadIdx.x + i * kThreads;
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_addr(wd_rows + v)),
                     "l"(src + v)
                     : "memory");
      }
    }
  };
  if (!spread) copy_part(0);
  // 2. gate/up (with the PDL wait in its prologue), act in bf16.
  uint16_t* act = a.act;
  auto store = [&](int64_t i, float v) { act[i] = __bfloat16_as_ushort(__float2bfloat16_rn(v)); };
  if (spread)
    gemv::silu_mul_tiles<1, true, Sg>(a.x, a.nrm, a.wg, a.bg, a.wu, a.bu, a.I, a.K, store,
                                      copy_part);
  else
    gemv::silu_mul_tiles<1, true, Sg>(a.x, a.nrm, a.wg, a.bg, a.wu, a.bu, a.I, a.K, store);
  // 3. Every block's act before any block's down columns (also orders mbar_init before the waits).
  grid_barrier(a.sync);
  // 4. down: kWarps / Sd columns a round, out of shared memory (kStaged) or global memory. Every
  // warp runs the block's number of rounds; a __syncthreads between rounds hands a slot's partials
  // (combine_parts) from one round to the next.
  if constexpr (kStaged) {
    if (tma) {
      mbar_wait(bar, 0);
    } else {
      asm volatile("cp.async.wait_all;" ::: "memory");
      __syncthreads();  // every thread's copies before any thread's reads
    }
  }
  constexpr int kCols = kWarps / Sd;
  const int lane = int(threadIdx.x) & 31;
  const int64_t rounds = (cols + kCols - 1) / kCols;
  for (int64_t round = 0; round < rounds; ++round) {
    const int64_t j = round * kCols + gemv::column_slot<Sd>();
    if (j < cols) {
      const int64_t n = c0 + j;
      float acc[1][1];
      bool holds;
      if constexpr (kStaged) {
        const uint4* const wr[1] = {wd_rows + j * I8};
        holds = gemv::column_sums<1, 1, false, Sd, kWarps, gemv::WeightsShared, uint16_t>(
            act, nullptr, wr, I8, true, lane, acc, gemv::NoPrologue{});
      } else {
        const uint4* const wr[1] = {a.wd + n * I8};
        holds = gemv::column_sums<1, 1, false, Sd, kWarps, gemv::WeightsGlobal, uint16_t>(
            act, nullptr, wr, I8, true, lane, acc, gemv::NoPrologue{});
      }
      if (holds && lane == 0) {
        const float lin = gemv::with_bias(acc[0][0], a.bd, n);  // what linear_gemv_bf16 stores
        a.y[n] = lin + a.r[n];                                  // add_kernel: out = a + b
      }
    }
    if (round + 1 < rounds) __syncthreads();
  }
}

// GYRE_GEMV_MLP: 1 (default) the one launch with down's rows staged in shared memory, 2 the one
// launch reading them from global memory after the barrier (a measurement variant), 0 the two
// kernels.
const std::string& mode() {
  static const std::string m = env_choice("GYRE_GEMV_MLP", {"0", "1", "2"}, "1");
  return m;
}
bool enabled() { return mode() != "0"; }
// GYRE_GEMV_MLP_COPY (a measurement switch): tma (default: bulk copies at the start), tma-tiles
// (spread over the gate/up tiles), async / async-tiles (16-byte cp.async of every thread).
int copy_mode() {
  static const int m = [] {
    const std::string c =
        env_choice("GYRE_GEMV_MLP_COPY", {"tma", "tma-tiles", "async", "async-tiles"}, "tma");
    return c == "tma"         ? kTmaStart
           : c == "tma-tiles" ? kTmaTiles
           : c == "async"     ? kAsyncStart
                              : kAsyncTiles;
  }();
  return m;
}
bool staged() { return mode() == "1"; }

// The launch shape for K, I, N: blocks (at most the resident ones and the gate/up tiles), down rows
// a block, dynamic shared memory; grid 0 where the rows do not fit.
struct Plan {
  unsigned grid = 0;
  int64_t cols_per_block = 0;
  size_t smem = 0;
};

template <typename F>
void with_splits(int64_t K, int64_t I, F&& f) {
  gemv::with_split(K, [&](auto sg) { gemv::with_split(I, [&](auto sd) { f(sg, sd); }); });
}

Plan make_plan(int64_t K, int64_t I, int64_t N, bool staged) {
  Plan best;
  if (K < 8 || K % 8 || I < 8 || I % 8 || N < 1) return best;
  int dev = 0, optin = 0;
  GYRE_CUDA_CHECK(cudaGetDevice(&dev));
  GYRE_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  with_splits(K, I, [&](auto sg, auto sd) {
    auto kernel = staged ? gemv_mlp_rms_kernel<decltype(sg)::value, decltype(sd)::value, true>
                         : gemv_mlp_rms_kernel<decltype(sg)::value, decltype(sd)::value, false>;
    cudaFuncAttributes attr{};
    GYRE_CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
    const int64_t budget = int64_t(optin) - int64_t(attr.sharedSizeBytes);
    GYRE_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(budget)));
    const int64_t tiles = (I + gemv::kColumnsOf<true, decltype(sg)::value> - 1) /
                          gemv::kColumnsOf<true, decltype(sg)::value>;
    for (int per_sm : {2, 1}) {
      const int64_t grid = std::min<int64_t>(int64_t(per_sm) * sm_count(), tiles);
      const int64_t cpb = (N + grid - 1) / grid;
      const int64_t smem = staged ? cpb * I * 2 : 0;
      if (smem > budget) continue;
      int resident = 0;
      GYRE_CUDA_CHECK(
          cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, kernel, kThreads, size_t(smem)));
      if (int64_t(resident) * sm_count() < grid) continue;
      best = Plan{unsigned(grid), cpb, size_t(smem)};
      return;
    }
  });
  return best;
}

Plan plan_for(int64_t K, int64_t I, int64_t N) {
  static std::mutex mu;
  static std::map<std::tuple<int, int64_t, int64_t, int64_t>, Plan> plans;
  int dev = 0;
  GYRE_CUDA_CHECK(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_tuple(dev, K, I, N);
  auto it = plans.find(key);
  if (it == plans.end()) it = plans.emplace(key, make_plan(K, I, N, staged())).first;
  return it->second;
}

// The barrier slot of the calling thread's stream on the current device, or null when all are
// taken. Slots are never given back (a stream's captured graphs keep using theirs).
unsigned* sync_slot() {
  static std::mutex mu;
  static std::map<std::pair<int, cudaStream_t>, int> slots;
  static std::map<int, int> used;
  static std::map<int, unsigned*> base;
  int dev = 0;
  GYRE_CUDA_CHECK(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mu);
  auto b = base.find(dev);
  if (b == base.end()) {
    void* p = nullptr;
    GYRE_CUDA_CHECK(cudaGetSymbolAddress(&p, g_mlp_sync));
    b = base.emplace(dev, static_cast<unsigned*>(p)).first;
  }
  const auto key = std::make_pair(dev, stream());
  auto it = slots.find(key);
  if (it == slots.end()) {
    int& n = used[dev];
    if (n >= kSyncSlots) return nullptr;
    it = slots.emplace(key, n++).first;
  }
  return b->second + it->second * kSlotWords;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

bool gemv_mlp_supported(int64_t K, int64_t I, int64_t N) {
  return enabled() && plan_for(K, I, N).grid > 0;
}

bool linear_gemv_bf16_mlp_rms(const float* x, const RmsPrologue& n, const uint16_t* wg,
                              const float* bg, const uint16_t* wu, const float* bu,
                              const uint16_t* wd, const float* bd, const float* r, int64_t K,
                              int64_t I, int64_t N, uint16_t* act, float* y) {
  if (!enabled() || n.xn || n.rstd || !aligned16(x) || !aligned16(n.w) || !aligned16(wg) ||
      !aligned16(wu) || !aligned16(wd) || !aligned16(act))
    return false;
  const Plan plan = plan_for(K, I, N);
  if (plan.grid == 0) return false;
  unsigned* sync = sync_slot();
  if (!sync) return false;
  const MlpArgs args{x,
                     n,
                     reinterpret_cast<const uint4*>(wg),
                     bg,
                     reinterpret_cast<const uint4*>(wu),
                     bu,
                     reinterpret_cast<const uint4*>(wd),
                     bd,
                     r,
                     K,
                     I,
                     N,
                     plan.cols_per_block,
                     copy_mode(),
                     act,
                     y,
                     sync};
  with_splits(K, I, [&](auto sg, auto sd) {
    constexpr int Sg = decltype(sg)::value, Sd = decltype(sd)::value;
    if (staged())
      launch_pdl("gemv_bf16_mlp_rms", gemv_mlp_rms_kernel<Sg, Sd, true>, plan.grid, kThreads,
                 plan.smem, args);
    else
      launch_pdl("gemv_bf16_mlp_rms", gemv_mlp_rms_kernel<Sg, Sd, false>, plan.grid, kThreads,
                 plan.smem, args);
  });
  return true;
}

}  // namespace gyre::cuda
