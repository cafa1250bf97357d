// rms_norm_bwd_add (rms_bwd_fused.h): the decoder layer's RMSNorm backward, residual add and the
// bf16 rounding of the sum in one pass over the rows, instead of rms_norm_bwd's two passes over dy
// and x (dx, then the weight-gradient partials), add's re-read of dx and f32_to_bf16's re-read of
// the sum.
//
// Bitwise contract (tests/gpu/backend/rms_norm_backward_add_cuda_test.cc): every value is the
// composition's.
// - dx: each row's dot uses rows.cu's column-to-thread map (thread t of a 256-thread block owns
//   columns t, t + 256, ...), its per-thread order and block_sum's tree (rms_bwd::block_sum_n), and
//   each element is rms_bwd::dx_elem, then one rounded add of the residual (add's `a + b`), then
//   __float2bfloat16_rn (f32_to_bf16's expression). Loads are therefore scalar: float4 loads would
//   give a thread four adjacent columns and change the per-thread summation order of the dot (the
//   warps' scalar loads are still fully coalesced, 128 bytes per warp per array).
// - dw: one block owns one chunk of rms_bwd::kDwRowChunk rows and visits them in order, so the
//   partial it keeps per column (in the owning thread's registers) is dw_step over the chunk's rows
//   in row order from 0 — rows.cu's rms_dw_partial_kernel — and dw_finish adds the partials in
//   chunk order (rows.cu's finish kernel).
// The grid size never enters a value: blocks own whole rows (and whole chunks).
//
// Two one-pass kernels compute the same values: rms_bwd_add_staged_kernel (the default) streams the
// rows through a shared-memory ring filled by bulk asynchronous copies, rms_bwd_add_chunk_kernel
// (kept for A/B runs, set_rms_bwd_add_staged, and for rows the copies cannot take) loads them
// straight into registers. Only where a value is loaded from differs: each thread holds the same
// columns of the same rows in the same registers before the same arithmetic runs.
#include <cuda_bf16.h>

#include <algorithm>
#include <atomic>

#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/column_sums.h"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/mbarrier.cuh"
#include "gyre/backend/cuda/rms_bwd_fused.h"
#include "gyre/backend/cuda/rms_bwd_row.cuh"
#include "gyre/backend/cuda/runtime.h"

namespace gyre::cuda {

namespace {

using rms_bwd::kDwRowChunk;
using rms_bwd::kThreads;

// One pass from 64 chunks (8192 rows) up: measured on an H200 at H 896 / 1536 (bench_cuda_ops
// rms_bwd), one pass vs the row kernel + dw kernels took 74 / 110 vs 56 / 73 us at 4096 rows,
// 81 / 114 vs 82 / 114 at 8192, 101 / 145 vs 131 / 199 at 16384 and 193 / 290 vs 257 / 391 at
// 32768 (the composition: 209 / 314 us at 16384).
std::atomic<int64_t> g_min_fused_chunks{64};

// Whether the one-pass path uses the staged kernel where it applies (rms_bwd_fused.h).
std::atomic<bool> g_staged{true};

// Ring rows of the staged kernel at most (its static mbarrier array).
constexpr int kMaxSlots = 64;
// Of the opt-in shared memory per block, what the staged kernel's ring leaves for its static arrays
// (the mbarriers, 512 bytes, and block_sum_n's partials, at most 8 rows x 8 warps x 8 bytes).
constexpr int kStaticSmemReserve = 2048;

// Rows per group of the one-pass kernels at vpt = ceil(H / 256) columns per thread (about 24-32
// values per array and thread held at once, within the register budget). Both kernels are
// instantiated through this function (launch_chunk<kVpt>), so the ring's size check sees their
// value: its steps (4, 8, 16) are instantiation widths, so group_rows(ceil(H / 256)) equals
// group_rows of the instantiation launched for H.
constexpr int group_rows(int64_t vpt) { return vpt <= 4 ? 8 : vpt <= 8 ? 4 : vpt <= 16 ? 2 : 1; }

struct BwdAddArgs {
  const float* dy;
  const float* x;
  const float* w;
  const float* rstd;
  const float* res;  // may equal dx
  int64_t R, H;
  float* dx;
  uint16_t* dx16;  // may be null
  double* part;    // [chunks, H] weight-gradient partials (one-pass kernel only)
};

// Asks L2 for the 128-byte lines of rows [r0, r1) of one [R, H] array, spread over the block's
// threads: issued while the current group is reduced, so the next group's loads find L2.
__device__ __forceinline__ void prefetch_rows_l2(const float* base, int64_t r0, int64_t r1,
                                                 int64_t H) {
  const char* p = reinterpret_cast<const char*>(base + r0 * H);
  const char* e = reinterpret_cast<const char*>(base + r1 * H);
  p -= reinterpret_cast<uintptr_t>(p) & 127;
  for (p += int64_t(threadIdx.x) * 128; p < e; p += int64_t(kThreads) * 128)
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

__device__ __forceinline__ void store_dx(const BwdAddArgs& a, int64_t i, float v) {
  a.dx[i] = v;
  if (a.dx16) a.dx16[i] = __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

// The one-pass kernel loading rows into registers (the default before the staged kernel below;
// now for rows the bulk copies cannot take and for A/B runs): block b owns chunk b (rows [b·128,
// b·128 + 128) ∩ [0, R)), thread t the columns t + k·256 for k < kVpt (kVpt·256 >= H). Rows go in
// groups of kRows: all loads of a group are issued before its dots are reduced (memory-level
// parallelism: a chunk's block is alone on its SM for the sizes that take this path), then the
// group's rows are finished in row order, which is the order the weight-gradient partials need.
template <int kVpt, int kRows>
__global__ void __launch_bounds__(kThreads) rms_bwd_add_chunk_kernel(const BwdAddArgs a) {
  const int64_t H = a.H, R = a.R, chunks = (R + kDwRowChunk - 1) / kDwRowChunk;
  float wv[kVpt];
#pragma unroll
  for (int k = 0; k < kVpt; ++k) {
    const int64_t c = threadIdx.x + int64_t(k) * kThreads;
    wv[k] = c < H ? a.w[c] : 0.0f;
  }
  for (int64_t chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
    const int64_t r0 = chunk * kDwRowChunk, r1 = min(R, r0 + kDwRowChunk);
    double acc[kVpt];
#pragma unroll
    for (int k = 0; k < kVpt; ++k) acc[k] = 0;
    for (int64_t g = r0; g < r1; g += kRows) {
      float dyv[kRows][kVpt], xv[kRows][kVpt], rv[kRows][kVpt], rs[kRows];
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        const int64_t r = g + i;
        const bool row_ok = r < r1;
        rs[i] = row_ok ? a.rstd[r] : 0.0f;
#pragma unroll
        for (int k = 0; k < kVpt; ++k) {
          const int64_t c = threadIdx.x + int64_t(k) * kThreads;
          const bool ok = row_ok && c < H;
          dyv[i][k] = ok ? a.dy[r * H + c] : 0.0f;
          xv[i][k] = ok ? a.x[r * H + c] : 0.0f;
          rv[i][k] = ok ? a.res[r * H + c] : 0.0f;
        }
      }
      // The next group's rows, into L2 while this group is reduced and stored (H200, R 16384:
      // 119 -> 101 us at H 896, 183 -> 145 us at H 1536; prefetching 2 to 6 groups ahead was
      // slower than 1).
      if (g + kRows < r1) {
        const int64_t n0 = g + kRows, n1 = min(r1, g + 2 * kRows);
        prefetch_rows_l2(a.dy, n0, n1, H);
        prefetch_rows_l2(a.x, n0, n1, H);
        prefetch_rows_l2(a.res, n0, n1, H);
      }
      // Each row's per-thread dot over the thread's columns in increasing order (rows past r1
      // reduce zeros and are never stored).
      double dot[kRows];
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        dot[i] = 0;
#pragma unroll
        for (int k = 0; k < kVpt; ++k)
          if (threadIdx.x + int64_t(k) * kThreads < H)
            dot[i] = rms_bwd::dot_step(dot[i], dyv[i][k], wv[k], rms_bwd::x_hat(xv[i][k], rs[i]));
      }
      rms_bwd::block_sum_n(dot);
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        const int64_t r = g + i;
        if (r >= r1) break;
        const float mean = rms_bwd::row_mean(dot[i], H);
#pragma unroll
        for (int k = 0; k < kVpt; ++k) {
          const int64_t c = threadIdx.x + int64_t(k) * kThreads;
          if (c >= H) continue;
          const float xh = rms_bwd::x_hat(xv[i][k], rs[i]);
          const float d = rms_bwd::dx_elem(dyv[i][k], wv[k], xh, rs[i], mean);
          store_dx(a, r * H + c, __fadd_rn(d, rv[i][k]));
          acc[k] = rms_bwd::dw_step(acc[k], dyv[i][k], xh);
        }
      }
    }
#pragma unroll
    for (int k = 0; k < kVpt; ++k) {
      const int64_t c = threadIdx.x + int64_t(k) * kThreads;
      if (c < H) a.part[chunk * H + c] = acc[k];
    }
  }
}

// Thread 0 of the staged kernel: bulk-copies rows [from, to) of dy, x and res (row r of the chunk
// that starts at r0 is the block's ring row q = q0 + r - r0, kept in slot q % slots as H floats of
// dy, then of x, then of res), each row completing on its slot's barrier.
__device__ __forceinline__ void stage_rows(const BwdAddArgs& a, float* ring, uint64_t* bars,
                                           int slots, int64_t q0, int64_t r0, int64_t from,
                                           int64_t to) {
  const int64_t H = a.H;
  const uint32_t bytes = uint32_t(H * int64_t(sizeof(float)));
  for (int64_t r = from; r < to; ++r) {
    const int slot = int((q0 + r - r0) % slots);
    float* s = ring + int64_t(slot) * 3 * H;
    mbar_expect_tx(smem_addr(&bars[slot]), 3 * bytes);
    bulk_copy(s, a.dy + r * H, bytes, &bars[slot]);
    bulk_copy(s + H, a.x + r * H, bytes, &bars[slot]);
    bulk_copy(s + 2 * H, a.res + r * H, bytes, &bars[slot]);
  }
}

// The one-pass kernel with its rows staged in shared memory: the same blocks, chunks, groups,
// column-to-thread map, expressions and row order as rms_bwd_add_chunk_kernel (the values each
// thread holds before the arithmetic are the same elements; only their source is the ring instead
// of global memory), so every output bit is that kernel's.
//
// Why: the register kernel has at most one group of loads in flight per SM (kRows rows x 3 arrays,
// 72 KB at H 1536, plus an L2 prefetch of the next group) and none while it reduces and stores,
// which held it to about 3.2 TB/s. Here thread 0 keeps `slots` rows (about 200 KB of the SM's
// shared memory: 12 rows at H 1536, 21 at H 896) of bulk copies in flight: after a group's
// block_sum_n every thread has its group's values in registers, so the group's slots are refilled
// with the rows `slots` ahead before the group's stores, and the copy engine streams while the
// block reduces and stores. The ring holds at least 2 groups (staged_slots), so the next group is
// always in flight.
//
// Ring protocol: ring row q (the block's q-th row over its chunks) lives in slot q % slots and is
// the (q / slots)-th use of that slot's mbarrier (parity (q / slots) & 1). A slot is re-armed for
// row q + slots only after the __syncthreads inside block_sum_n of the group that holds row q,
// which every thread reaches after its wait on row q and its reads of it: no thread can still be
// waiting on the slot's previous phase, and the generic-proxy reads are ordered before the async
// copy that overwrites them (decode_stack.cu's ring relies on the same barrier ordering).
//
// In place (dx == res): the copy of res row r has completed (its barrier's phase) before any thread
// reads the row or writes a dx element of it, and rows still being copied are later rows, disjoint
// from the dx rows written: every res element is read before its dx is written.
template <int kVpt, int kRows>
__global__ void __launch_bounds__(kThreads)
    rms_bwd_add_staged_kernel(const BwdAddArgs a, int slots) {
  extern __shared__ __align__(128) float ring[];  // slots x [dy | x | res] rows of H floats
  __shared__ __align__(8) uint64_t bars[kMaxSlots];
  const int64_t H = a.H, R = a.R, chunks = (R + kDwRowChunk - 1) / kDwRowChunk;
  float wv[kVpt];
#pragma unroll
  for (int k = 0; k < kVpt; ++k) {
    const int64_t c = threadIdx.x + int64_t(k) * kThreads;
    wv[k] = c < H ? a.w[c] : 0.0f;
  }
  if (threadIdx.x == 0) {
    for (int i = 0; i < slots; ++i) mbar_init(smem_addr(&bars[i]), 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  int64_t q0 = 0;  // ring rows of this block's earlier chunks
  for (int64_t chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
    const int64_t r0 = chunk * kDwRowChunk, r1 = min(R, r0 + kDwRowChunk);
    // Rows [r0, staged) have been issued (thread 0's count). The previous chunk's rows were all
    // read before its last block_sum_n, so every slot is free here.
    int64_t staged = min(r1, r0 + int64_t(slots));
    if (threadIdx.x == 0) stage_rows(a, ring, bars, slots, q0, r0, r0, staged);
    double acc[kVpt];
#pragma unroll
    for (int k = 0; k < kVpt; ++k) acc[k] = 0;
    for (int64_t g = r0; g < r1; g += kRows) {
      float dyv[kRows][kVpt], xv[kRows][kVpt], rv[kRows][kVpt], rs[kRows];
      // rstd first: these loads need no barrier, so their latency overlaps the waits below.
#pragma unroll
      for (int i = 0; i < kRows; ++i) rs[i] = g + i < r1 ? a.rstd[g + i] : 0.0f;
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        const int64_t r = g + i;
        const bool row_ok = r < r1;
        const float* s = ring;
        if (row_ok) {
          const int64_t q = q0 + r - r0;
          const int slot = int(q % slots);
          mbar_wait(smem_addr(&bars[slot]), uint32_t(q / slots) & 1u);
          s = ring + int64_t(slot) * 3 * H;
        }
        // Thread t reads columns t + k·256 (the dot's map): a warp's 32 reads are consecutive
        // words, free of bank conflicts.
#pragma unroll
        for (int k = 0; k < kVpt; ++k) {
          const int64_t c = threadIdx.x + int64_t(k) * kThreads;
          const bool ok = row_ok && c < H;
          dyv[i][k] = ok ? s[c] : 0.0f;
          xv[i][k] = ok ? s[H + c] : 0.0f;
          rv[i][k] = ok ? s[2 * H + c] : 0.0f;
        }
      }
      // From here to the end of the group: rms_bwd_add_chunk_kernel's arithmetic, verbatim.
      double dot[kRows];
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        dot[i] = 0;
#pragma unroll
        for (int k = 0; k < kVpt; ++k)
          if (threadIdx.x + int64_t(k) * kThreads < H)
            dot[i] = rms_bwd::dot_step(dot[i], dyv[i][k], wv[k], rms_bwd::x_hat(xv[i][k], rs[i]));
      }
      rms_bwd::block_sum_n(dot);
      // Every thread has read this group's rows (block_sum_n's barriers): their slots take the
      // rows `slots` ahead, in flight while this group is stored and the next ones reduced.
      if (threadIdx.x == 0) {
        const int64_t to = min(r1, g + kRows + int64_t(slots));
        stage_rows(a, ring, bars, slots, q0, r0, staged, to);
        staged = to;  // never below staged: g + kRows > r0
      }
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        const int64_t r = g + i;
        if (r >= r1) break;
        const float mean = rms_bwd::row_mean(dot[i], H);
#pragma unroll
        for (int k = 0; k < kVpt; ++k) {
          const int64_t c = threadIdx.x + int64_t(k) * kThreads;
          if (c >= H) continue;
          const float xh = rms_bwd::x_hat(xv[i][k], rs[i]);
          const float d = rms_bwd::dx_elem(dyv[i][k], wv[k], xh, rs[i], mean);
          store_dx(a, r * H + c, __fadd_rn(d, rv[i][k]));
          acc[k] = rms_bwd::dw_step(acc[k], dyv[i][k], xh);
        }
      }
    }
#pragma unroll
    for (int k = 0; k < kVpt; ++k) {
      const int64_t c = threadIdx.x + int64_t(k) * kThreads;
      if (c < H) a.part[chunk * H + c] = acc[k];
    }
    q0 += r1 - r0;
  }
}

// Any H, no weight gradient: rows.cu's rms_bwd_dx_kernel (a block per row, the same loops) with
// the residual add and the bf16 store in its output loop.
__global__ void __launch_bounds__(kThreads) rms_bwd_add_row_kernel(const BwdAddArgs a) {
  const int64_t H = a.H;
  for (int64_t r = blockIdx.x; r < a.R; r += gridDim.x) {
    const float* xr = a.x + r * H;
    const float* dyr = a.dy + r * H;
    const float rs = a.rstd[r];
    double dot[1] = {0};
    for (int64_t c = threadIdx.x; c < H; c += kThreads)
      dot[0] = rms_bwd::dot_step(dot[0], dyr[c], a.w[c], rms_bwd::x_hat(xr[c], rs));
    rms_bwd::block_sum_n(dot);
    const float mean = rms_bwd::row_mean(dot[0], H);
    for (int64_t c = threadIdx.x; c < H; c += kThreads) {
      const float d = rms_bwd::dx_elem(dyr[c], a.w[c], rms_bwd::x_hat(xr[c], rs), rs, mean);
      store_dx(a, r * H + c, __fadd_rn(d, a.res[r * H + c]));
    }
  }
}

// The staged kernel's dynamic shared memory limit: the device's opt-in maximum per block (227 KiB
// on an H100 / H200) less its static arrays. Read once (every GPU of a process is the same kind).
int staged_smem_budget() {
  static const int budget = [] {
    int dev = 0, optin = 0;
    GYRE_CUDA_CHECK(cudaGetDevice(&dev));
    GYRE_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    return std::max(0, optin - kStaticSmemReserve);
  }();
  return budget;
}

// Bytes of one ring row (dy, x and res rows of H floats).
int64_t staged_row_bytes(int64_t H) { return 3 * H * int64_t(sizeof(float)); }

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Ring rows of the staged kernel for these rows, or 0 where it does not apply: the bulk copies need
// 16-byte aligned row starts and lengths (H % 4 == 0 and aligned bases), and the ring must hold two
// groups (one being read while the next is in flight; fewer than one group would deadlock).
int staged_slots(int64_t H, const float* dy, const float* x, const float* res) {
  if (!g_staged.load(std::memory_order_relaxed)) return 0;
  if (H % 4 != 0 || !aligned16(dy) || !aligned16(x) || !aligned16(res)) return 0;
  const int64_t vpt = (H + kThreads - 1) / kThreads;
  const int64_t slots = std::min<int64_t>(kMaxSlots, staged_smem_budget() / staged_row_bytes(H));
  return slots >= 2 * group_rows(vpt) ? int(slots) : 0;
}

// One of the one-pass kernels (slots 0: the register kernel) for vpt <= kVpt columns per thread.
template <int kVpt>
void launch_chunk(const BwdAddArgs& a, int64_t chunks, int slots) {
  constexpr int kRows = group_rows(kVpt);
  const unsigned grid = unsigned(std::min<int64_t>(chunks, 65535));
  if (slots == 0) {
    rms_bwd_add_chunk_kernel<kVpt, kRows><<<grid, kThreads, 0, stream()>>>(a);
    return;
  }
  constexpr auto kernel = rms_bwd_add_staged_kernel<kVpt, kRows>;
  static const bool attr = [] {
    GYRE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         staged_smem_budget()));
    return true;
  }();
  (void)attr;
  kernel<<<grid, kThreads, size_t(slots * staged_row_bytes(a.H)), stream()>>>(a, slots);
}

// The widest row the one-pass kernels keep in registers, in columns per thread (H <= 8192).
constexpr int64_t kMaxVpt = 32;

// Launches a one-pass kernel for vpt = ceil(H / 256) <= kMaxVpt columns per thread.
void launch_chunk_for(int64_t vpt, const BwdAddArgs& a, int64_t chunks, int slots) {
  if (vpt <= 1) return launch_chunk<1>(a, chunks, slots);
  if (vpt <= 2) return launch_chunk<2>(a, chunks, slots);
  if (vpt <= 4) return launch_chunk<4>(a, chunks, slots);
  if (vpt <= 6) return launch_chunk<6>(a, chunks, slots);
  if (vpt <= 8) return launch_chunk<8>(a, chunks, slots);
  if (vpt <= 12) return launch_chunk<12>(a, chunks, slots);
  if (vpt <= 16) return launch_chunk<16>(a, chunks, slots);
  if (vpt <= 24) return launch_chunk<24>(a, chunks, slots);
  static_assert(kMaxVpt == 32);
  return launch_chunk<32>(a, chunks, slots);
}

}  // namespace

int64_t set_rms_bwd_add_min_fused_chunks(int64_t chunks) {
  return g_min_fused_chunks.exchange(chunks);
}

int64_t rms_bwd_add_min_fused_chunks() { return g_min_fused_chunks.load(); }

bool set_rms_bwd_add_staged(bool on) { return g_staged.exchange(on); }

bool rms_bwd_add_staged() { return g_staged.load(); }

RmsBwdAddPath rms_bwd_add_path(int64_t R, int64_t H, bool with_dw, const float* dy, const float* x,
                               const float* res) {
  const int64_t chunks = (R + kDwRowChunk - 1) / kDwRowChunk;
  const int64_t vpt = (H + kThreads - 1) / kThreads;
  if (!with_dw || vpt > kMaxVpt || chunks < g_min_fused_chunks.load(std::memory_order_relaxed))
    return RmsBwdAddPath::rows;
  return staged_slots(H, dy, x, res) > 0 ? RmsBwdAddPath::one_pass_staged
                                         : RmsBwdAddPath::one_pass_registers;
}

void rms_norm_bwd_add(const float* dy, const float* x, const float* w, const float* rstd,
                      const float* res, int64_t R, int64_t H, float* dx, float* dw,
                      uint16_t* dx_bf16) {
  if (R == 0 || H == 0) return;
  BwdAddArgs a{dy, x, w, rstd, res, R, H, dx, dx_bf16, nullptr};
  const int64_t chunks = (R + kDwRowChunk - 1) / kDwRowChunk;
  const int64_t vpt = (H + kThreads - 1) / kThreads;
  if (rms_bwd_add_path(R, H, dw != nullptr, dy, x, res) != RmsBwdAddPath::rows) {
    DeviceBuffer part(size_t(chunks * H) * sizeof(double));  // stream-ordered reuse after free
    a.part = part.as<double>();
    launch_chunk_for(vpt, a, chunks, staged_slots(H, dy, x, res));
    GYRE_CUDA_LAUNCHED("rms_norm_bwd_add");
    // rms_bwd::dw_finish's arithmetic (chunks added in order from 0.0, then to dw in f64, rounded
    // to f32) is column_sums_add's finishing stage term for term: its shared-memory kernel.
    colsum::finish_add(a.part, chunks, H, dw);
    return;
  }
  const unsigned grid = unsigned(std::min<int64_t>(R, 65535));
  rms_bwd_add_row_kernel<<<grid, kThreads, 0, stream()>>>(a);
  GYRE_CUDA_LAUNCHED("rms_norm_bwd_add_rows");
  // The weight gradient from rms_norm_bwd's own kernels (they read only dy, x and rstd).
  if (dw) rms_norm_bwd(dy, x, w, rstd, R, H, nullptr, dw);
}

}  // namespace gyre::cuda
