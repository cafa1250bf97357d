// Streamed small-batch decode GEMVs (gemv_stream.h: what, why, and the bitwise contract).
//
// Schedule. gridDim.x blocks of rms::kThreads (256) threads; block b owns the output columns
// [b N / G, (b + 1) N / G), so every block gets the same number of columns to within one (the
// register kernels' grids ended on a partial wave). The block's 8 warps form 8 / S column slots
// (S = gemv::split_for(K) warps a column, as in every GEMV kernel); slot j computes the block's
// columns n0 + j, n0 + j + slots, ... Each slot has a ring of `ring` stages in shared memory, a
// stage holding one column's C weight rows (gate and up for SiLU·mul: C = 2), each with its own
// mbarrier. Lane 0 of the slot's warp 0 (the issuer) copies column i's rows into stage i % ring
// with cp.async.bulk, arming the stage's barrier with their bytes; the slot's warps wait on the
// barrier's phase (i / ring) & 1, compute, and once every warp of the slot is past its reads
// (the butterfly for S = 1, the combine's named barrier for S > 1) the issuer refills the stage
// with column i + ring. The first `ring` columns are issued before pdl_wait, while the previous
// kernel still runs (weights do not depend on it).
//
// x's M rows are staged once per block after pdl_wait (and the RMSNorm's rstds,
// gemv_rms_prologue.cuh) as the bf16 bits of the values the register kernels feed their FMAs
// (round_bf16 of x or of rms::normed(x, rstd, w)); bf16 represents them exactly, so bf16_lo /
// bf16_hi read back the same f32 values. The per-lane dot products (one sum per weight row and x
// row), butterfly and warp-order combine are gemv_bf16_common.cuh's (see there), with weights and
// x read from shared memory. The M rows share each column's weight stage: at M = 8 a stage's bytes
// feed 8x the FMAs, and x's staged rows (M · K · 2 bytes) leave less room for the ring (a launch
// whose ring of 2 does not fit beside them declines: the register kernel runs).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "gyre/backend/cuda/bf16_bits.cuh"
#include "gyre/backend/cuda/gemv_bf16_common.cuh"
#include "gyre/backend/cuda/gemv_rms_prologue.cuh"
#include "gyre/backend/cuda/gemv_stream.h"
#include "gyre/backend/cuda/mbarrier.cuh"
#include "gyre/backend/cuda/pdl.cuh"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/backend/cuda/silu.cuh"
#include "gyre/core/env.h"

namespace gyre::cuda {

namespace {

// rms_row.cuh's block size: the norm's rstd is bitwise rms_norm's only at this block size.
constexpr int kThreads = rms::kThreads;
constexpr int kWarps = kThreads / 32;
// Stages a slot at most: with S = 4 (2 slots) the combine's named barriers 1 + slot · ring +
// stage must stay <= 15 (0 is __syncthreads').
constexpr int kMaxRing = 7;
constexpr int kMinRing = 2;
// Shared-memory bytes of x's staged bf16 row, padded so the weight ring after it stays aligned.
__host__ __device__ constexpr int64_t x_stage_bytes(int64_t K) {
  constexpr int64_t kAlign = 128;
  return (K * 2 + kAlign - 1) / kAlign * kAlign;
}

// The epilogues: what a column's sums become (gemv_fused.cu's kernels of the same name).
enum Epilogue : int {
  kEpiSiluMul,   // out = silu_mul(bf16(x·wg + bg), bf16(x·wu + bu)): C = 2 rows a column
  kEpiResidual,  // y = (x·w + b) + r
  kEpiGroup,     // y_i = x·w_i + b_i over the group's concatenated columns
};
template <int kEpi>
constexpr int kRowsOf = kEpi == kEpiSiluMul ? 2 : 1;

struct StreamArgs {
  const float* x;     // [K], 16-byte aligned
  RmsPrologue nrm;    // the norm (kNorm only)
  const uint4* w[2];  // the C weight matrices [N, K] bf16, as 16-byte vectors (not kEpiGroup)
  const float* b[2];  // their biases [N] or null
  const float* r;     // the residual [N] (kEpiResidual); may be y
  float* y;           // [N]
  GemvGroup g;        // kEpiGroup: the members (w, b, y, n each)
  int64_t N, K;       // N: all columns (kEpiGroup: the members' n summed)
  int ring;           // stages a slot, kMinRing..kMaxRing
  int pre;            // stages a slot issued before pdl_wait (the rest after the prologue), 1..ring
};

// kEpiGroup: the member that owns concatenated column n, and n within it. Compile-time member
// indices only (a dynamic index into the kernel parameter would copy it to local memory), as
// gemv_fused.cu's group kernel.
struct Member {
  const uint16_t* w;
  const float* b;
  float* y;
  int64_t n;     // the column within the member
  int64_t size;  // the member's columns (its output rows' stride)
};
__device__ __forceinline__ Member member_of(const GemvGroup& g, int64_t n) {
  Member m{nullptr, nullptr, nullptr, 0, 0};
  bool found = false;
#pragma unroll
  for (int i = 0; i < kGemvGroupMax; ++i) {
    if (!found && i < g.count) {
      if (n < g.n[i]) {
        m = Member{g.w[i], g.b[i], g.y[i], n, g.n[i]};
        found = true;
      } else {
        n -= g.n[i];
      }
    }
  }
  return m;
}

// kEpi's columns (Epilogue) for the M rows of x; kNorm: x is replaced by its RMSNorm (nrm).
template <int kEpi, bool kNorm, int S, int M>
__global__ void __launch_bounds__(kThreads) gemv_stream_kernel(const StreamArgs a) {
  pdl_trigger();  // the next decode kernel may launch and load its weights (pdl.cuh)
  constexpr int C = kRowsOf<kEpi>;
  constexpr int kSlots = kWarps / S;
  extern __shared__ __align__(128) unsigned char dyn[];
  __shared__ uint64_t full[kSlots * kMaxRing];
  __shared__ float parts[kSlots * kMaxRing][S][C][M];
  const int warp = int(threadIdx.x >> 5), lane = int(threadIdx.x & 31);
  const int slot = warp / S, part = warp % S;
  const int R = a.ring;
  const int64_t K8 = a.K / 8;
  const uint32_t row_bytes = uint32_t(K8) * 16u;
  const int64_t x_bytes = M * x_stage_bytes(a.K);   // row m at m · x_stage_bytes(K)
  const int64_t x_row16 = x_stage_bytes(a.K) / 16;  // the staged row's stride in 16-byte vectors
  uint4* xs = reinterpret_cast<uint4*>(dyn);
  unsigned char* ring = dyn + x_bytes + size_t(slot) * R * C * row_bytes;
  const int64_t n0 = a.N * blockIdx.x / gridDim.x, n1 = a.N * (blockIdx.x + 1) / gridDim.x;
  const auto column = [&](int64_t i) { return n0 + slot + i * kSlots; };

  if (threadIdx.x == 0) {
    for (int i = 0; i < kSlots * R; ++i) mbar_init(smem_addr(&full[i]), 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  const bool issuer = part == 0 && lane == 0;
  // Column i's C rows into stage i % R, completing on that stage's barrier.
  const auto issue = [&](int64_t i) {
    const int st = int(i % R);
    uint64_t* bar = &full[slot * R + st];
    unsigned char* dst = ring + size_t(st) * C * row_bytes;
    mbar_expect_tx(smem_addr(bar), uint32_t(C) * row_bytes);
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const uint4* src;
      if constexpr (kEpi == kEpiGroup) {
        const Member m = member_of(a.g, column(i));
        src = reinterpret_cast<const uint4*>(m.w) + m.n * K8;
      } else {
        src = a.w[c] + column(i) * K8;
      }
      bulk_copy(dst + c * row_bytes, src, row_bytes, bar);
    }
  };
  if (issuer)
    for (int64_t i = 0; i < a.pre && column(i) < n1; ++i) issue(i);

  // pdl_wait, then (kNorm) the block's rstd and block 0's side outputs: gemv_rms_prologue.cuh.
  float rs[M];
  RmsRstd<M, kNorm>{a.x, a.nrm, a.K}(rs);
  if (issuer) {
    for (int64_t i = a.pre; i < R && column(i) < n1; ++i) issue(i);
  }
  // x as the FMAs' bf16 values, 8 a 16-byte vector (element 2i in the low half of word i, as the
  // weights: bf16_lo / bf16_hi pair them up in the same order); row m at xs + m · x_row16.
#pragma unroll
  for (int m = 0; m < M; ++m) {
#pragma unroll 4
    for (int64_t k8 = threadIdx.x; k8 < K8; k8 += kThreads) {
      const float4* xr = reinterpret_cast<const float4*>(a.x + m * a.K) + k8 * 2;
      float4 p = xr[0], q = xr[1];
      if constexpr (kNorm) {
        const float4* nr = reinterpret_cast<const float4*>(a.nrm.w) + k8 * 2;
        const float4 na = nr[0], nb = nr[1];
        const float r = rs[m];
        p = make_float4(rms::normed(p.x, r, na.x), rms::normed(p.y, r, na.y),
                        rms::normed(p.z, r, na.z), rms::normed(p.w, r, na.w));
        q = make_float4(rms::normed(q.x, r, nb.x), rms::normed(q.y, r, nb.y),
                        rms::normed(q.z, r, nb.z), rms::normed(q.w, r, nb.w));
      }
      xs[m * x_row16 + k8] = make_uint4(bf16_rn_pair(p.x, p.y), bf16_rn_pair(p.z, p.w),
                                        bf16_rn_pair(q.x, q.y), bf16_rn_pair(q.z, q.w));
    }
  }
  __syncthreads();

  for (int64_t i = 0;; ++i) {
    const int64_t n = column(i);
    if (n >= n1) break;  // the same for all S warps of the slot
    const int st = int(i % R);
    mbar_wait(smem_addr(&full[slot * R + st]), uint32_t((i / R) & 1));
    const uint4* ws = reinterpret_cast<const uint4*>(ring + size_t(st) * C * row_bytes);
    // gemv_bf16_common.cuh's order: for each weight row c and x row m, lane `lane` of warp `part`
    // adds the vectors part·32 + lane + j·32·S in order, each as 8 fmaf in element order (the M
    // rows' sums are independent of each other, as there).
    float acc[C][M];
#pragma unroll
    for (int c = 0; c < C; ++c)
#pragma unroll
      for (int m = 0; m < M; ++m) acc[c][m] = 0.0f;
#pragma unroll 4
    for (int64_t k8 = int64_t(part) * 32 + lane; k8 < K8; k8 += 32 * S) {
      float wf[C][8];
#pragma unroll
      for (int c = 0; c < C; ++c) {
        const uint4 w = ws[c * K8 + k8];
        wf[c][0] = gemv::bf16_lo(w.x), wf[c][1] = gemv::bf16_hi(w.x);
        wf[c][2] = gemv::bf16_lo(w.y), wf[c][3] = gemv::bf16_hi(w.y);
        wf[c][4] = gemv::bf16_lo(w.z), wf[c][5] = gemv::bf16_hi(w.z);
        wf[c][6] = gemv::bf16_lo(w.w), wf[c][7] = gemv::bf16_hi(w.w);
      }
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const uint4 xv4 = xs[m * x_row16 + k8];
        const float xv[8] = {gemv::bf16_lo(xv4.x), gemv::bf16_hi(xv4.x), gemv::bf16_lo(xv4.y),
                             gemv::bf16_hi(xv4.y), gemv::bf16_lo(xv4.z), gemv::bf16_hi(xv4.z),
                             gemv::bf16_lo(xv4.w), gemv::bf16_hi(xv4.w)};
#pragma unroll
        for (int c = 0; c < C; ++c) {
          float s = acc[c][m];
#pragma unroll
          for (int j = 0; j < 8; ++j) s = fmaf(xv[j], wf[c][j], s);
          acc[c][m] = s;
        }
      }
    }
#pragma unroll
    for (int c = 0; c < C; ++c)
#pragma unroll
      for (int m = 0; m < M; ++m) {
        float s = acc[c][m];
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
        acc[c][m] = s;
      }
    if constexpr (S > 1) {
      // combine_parts' order ((w0 + w1) + w2) + w3, through this stage's entries and named
      // barrier: warps 1..S-1 can reuse them only at column i + R, whose weights the issuer copies
      // after its bar.sync here, so no hand-back barrier is needed.
      const int id = 1 + slot * R + st;
      if (part != 0) {
        if (lane == 0)
#pragma unroll
          for (int c = 0; c < C; ++c)
#pragma unroll
            for (int m = 0; m < M; ++m) parts[slot * R + st][part][c][m] = acc[c][m];
        __syncwarp();
        asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(32 * S) : "memory");
        continue;
      }
      asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(32 * S) : "memory");
#pragma unroll
      for (int c = 0; c < C; ++c)
#pragma unroll
        for (int m = 0; m < M; ++m) {
          float s = acc[c][m];
#pragma unroll
          for (int p = 1; p < S; ++p) s += parts[slot * R + st][p][c][m];
          acc[c][m] = s;
        }
    }
    if (lane == 0) {
      // Every warp of the slot is past its reads of stage st: refill it.
      if (issuer && column(i + R) < n1) issue(i + R);
      // gemv_fused.cu's epilogues, row m of each output at m · (its columns).
      if constexpr (kEpi == kEpiSiluMul) {
#pragma unroll
        for (int m = 0; m < M; ++m) {
          // The silu_mul epilogue: gate and up rounded to bf16, then silu.cuh.
          const float g = gemv::round_bf16(gemv::with_bias(acc[0][m], a.b[0], n));
          const float u = gemv::round_bf16(gemv::with_bias(acc[1][m], a.b[1], n));
          a.y[m * a.N + n] = silu_mul_value(g, u);
        }
      } else if constexpr (kEpi == kEpiGroup) {
        const Member mb = member_of(a.g, n);
#pragma unroll
        for (int m = 0; m < M; ++m)  // the group kernel's store
          mb.y[m * mb.size + mb.n] = gemv::with_bias(acc[0][m], mb.b, mb.n);
      } else {
#pragma unroll
        for (int m = 0; m < M; ++m) {
          const float lin = gemv::with_bias(acc[0][m], a.b[0], n);  // what linear_gemv_bf16 stores
          a.y[m * a.N + n] = lin + a.r[m * a.N + n];                // add_kernel: out = a + b
        }
      }
    }
  }
}

std::atomic<int> g_mode_override{-1};
std::atomic<int64_t> g_ring_override{0};
std::atomic<int64_t> g_rows_override{0};

// Whether a launch of `kind` takes the streamed kernel.
bool takes(int kind) { return (gemv_stream_mode() & kind) != 0; }

// Blocks of the streamed kernels an SM is meant to hold (GYRE_GEMV_STREAM_BPS, 1..4). Two measured
// best on Qwen2.5-1.5B's batch-1 decode (H200, session 38: 1.461 ms a token with one, 1.374 with
// two); the ring shrinks so that they fit (launch_stream).
int64_t blocks_per_sm() {
  static const int64_t n = env_int("GYRE_GEMV_STREAM_BPS", 2, 1, 4);
  return n;
}

// Whether M rows take the streamed kernels at all (gemv_stream_max_rows).
// gemv::with_rows instantiates the kernels for M <= 8.
static_assert(kGemvStreamMaxRows == 8, "gemv::with_rows covers 1..8 rows");
bool rows_take(int64_t M) { return M >= 1 && M <= gemv_stream_max_rows(); }

// Launches kernel <kEpi, kNorm, S, M> or returns false when not even a ring of kMinRing fits
// beside x's M staged rows.
template <int kEpi, bool kNorm, int S, int M>
bool launch_stream(const char* name, StreamArgs a) {
  constexpr auto kernel = gemv_stream_kernel<kEpi, kNorm, S, M>;
  constexpr int C = kRowsOf<kEpi>;
  constexpr int64_t kSlots = kWarps / S;
  struct Limits {
    int64_t max_dyn;  // the dynamic shared memory one block may have (opt-in less static)
    int64_t per_sm;   // an SM's shared memory
    int64_t per_block_overhead;  // what each resident block costs besides its dynamic part
  };
  static const Limits lim = [] {
    int dev = 0, optin = 0, per_sm = 0, reserved = 0;
    GYRE_CUDA_CHECK(cudaGetDevice(&dev));
    GYRE_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    GYRE_CUDA_CHECK(
        cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev));
    GYRE_CUDA_CHECK(
        cudaDeviceGetAttribute(&reserved, cudaDevAttrReservedSharedMemoryPerBlock, dev));
    cudaFuncAttributes attr{};
    GYRE_CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
    const int64_t dyn = int64_t(optin) - int64_t(attr.sharedSizeBytes);
    GYRE_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(dyn)));
    return Limits{dyn, per_sm, int64_t(reserved) + int64_t(attr.sharedSizeBytes)};
  }();
  const int64_t stage = int64_t(C) * a.K * 2;  // one column's rows
  const int64_t x_bytes = M * x_stage_bytes(a.K);
  const int64_t level = kSlots * stage;  // one more stage for every slot
  if (x_bytes + kMinRing * level > lim.max_dyn) return false;
  // The ring: what the budget asks for, within what blocks_per_sm() blocks an SM leave each.
  const int64_t bps = blocks_per_sm();
  int64_t fit = (lim.per_sm / bps - lim.per_block_overhead - x_bytes) / level;
  int64_t ring = gemv_stream_ring_bytes() / level;
  if (ring > fit) ring = fit;
  if (ring > kMaxRing) ring = kMaxRing;
  if (ring < kMinRing) ring = kMinRing;  // fewer blocks an SM then (the grid follows)
  const int64_t smem = x_bytes + ring * level;
  int64_t resident = lim.per_sm / (smem + lim.per_block_overhead);
  if (resident > bps) resident = bps;
  if (resident < 1) resident = 1;
  a.ring = int(ring);
  // Stages a slot issued before pdl_wait; the rest follow the norm prologue. Issuing the whole ring
  // first queued the rstd's dependent L2 reads of x behind the ring's copies (session 41's probe:
  // gate/up's rstd 2.75 us at 0.5B, q/k/v's 1.18). One stage first, for the batch-1 norm kernels
  // only (session 43, H100, same call, ms a token: 0.5B 0.796 -> 0.786, 1.5B 1.530 -> 1.498; the
  // same on every kernel: 0.5B 0.808, slower). GYRE_GEMV_STREAM_PRE (0 = the whole ring first)
  // and GYRE_GEMV_STREAM_PRE_ALL = 1 (every kernel and row count) are for A/B runs.
  static const int64_t pre_env = env_int("GYRE_GEMV_STREAM_PRE", 1, 0, kMaxRing);
  static const bool pre_all = env_int("GYRE_GEMV_STREAM_PRE_ALL", 0, 0, 1) != 0;
  const bool early_prologue = pre_all || (kNorm && M == 1);
  a.pre = (pre_env > 0 && early_prologue && pre_env < ring) ? int(pre_env) : int(ring);
  const int64_t blocks = int64_t(sm_count()) * resident;
  const unsigned grid = unsigned(a.N < blocks ? a.N : blocks);
  launch_pdl(name, kernel, dim3(grid), dim3(kThreads), size_t(smem), a);
  return true;
}

}  // namespace

int gemv_stream_mode() {
  const int o = g_mode_override.load();
  if (o >= 0) return o;
  static const int env = int(env_int("GYRE_GEMV_STREAM", kGemvStreamDefault, 0, kGemvStreamAll));
  return env;
}

void set_gemv_stream_mode(int bits) {
  g_mode_override.store(bits < 0 ? -1 : bits & kGemvStreamAll);
}

int64_t gemv_stream_ring_bytes() {
  const int64_t o = g_ring_override.load();
  if (o > 0) return o;
  // 64 KB: Qwen2.5-1.5B batch 1 (H200, session 38) 1.369 ms a token at 96 KB, 1.351 at 64 and
  // 1.350 at 48 with gate/up, o_proj and down streamed; 1.363 / 1.278 / 1.278 with q/k/v too:
  // o_proj's ring shrinks to 2 columns a slot, so gate/up's blocks fit beside it and start
  // streaming before it ends (programmatic dependent launch).
  static const int64_t env = env_int("GYRE_GEMV_STREAM_KB", 64, 1, 1 << 20) * 1024;
  return env;
}

void set_gemv_stream_ring_bytes(int64_t bytes) { g_ring_override.store(bytes > 0 ? bytes : 0); }

int64_t gemv_stream_max_rows() {
  const int64_t o = g_rows_override.load();
  if (o > 0) return o;
  static const int64_t env =
      env_int("GYRE_GEMV_STREAM_ROWS", kGemvStreamRowsDefault, 1, kGemvStreamMaxRows);
  return env;
}

void set_gemv_stream_max_rows(int64_t rows) {
  g_rows_override.store(rows > 0 ? (rows < kGemvStreamMaxRows ? rows : kGemvStreamMaxRows) : 0);
}

bool gemv_stream_silu_mul(const float* x, const RmsPrologue* nrm, const uint16_t* wg,
                          const float* bg, const uint16_t* wu, const float* bu, int64_t M,
                          int64_t N, int64_t K, float* out) {
  if (!rows_take(M) || N < 1 || !takes(kGemvStreamSiluMul)) return false;
  StreamArgs a{};
  a.x = x;
  if (nrm) a.nrm = *nrm;
  a.w[0] = reinterpret_cast<const uint4*>(wg), a.w[1] = reinterpret_cast<const uint4*>(wu);
  a.b[0] = bg, a.b[1] = bu;
  a.y = out, a.N = N, a.K = K;
  bool launched = false;
  gemv::with_split(K, [&](auto s) {
    gemv::with_rows(M, [&](auto rows) {
      constexpr int S = decltype(s)::value, R = decltype(rows)::value;
      launched = nrm ? launch_stream<kEpiSiluMul, true, S, R>("gemv_stream_silu_mul_rms", a)
                     : launch_stream<kEpiSiluMul, false, S, R>("gemv_stream_silu_mul", a);
    });
  });
  return launched;
}

bool gemv_stream_residual(const float* x, const uint16_t* w, const float* b, const float* r,
                          int64_t M, int64_t N, int64_t K, float* y) {
  if (!rows_take(M) || N < 1) return false;
  const int bit = gemv::split_for(K) > 1 ? kGemvStreamResidualSplit : kGemvStreamResidual;
  if (!takes(bit)) return false;
  StreamArgs a{};
  a.x = x;
  a.w[0] = reinterpret_cast<const uint4*>(w), a.w[1] = nullptr;
  a.b[0] = b, a.b[1] = nullptr;
  a.r = r, a.y = y, a.N = N, a.K = K;
  bool launched = false;
  gemv::with_split(K, [&](auto s) {
    gemv::with_rows(M, [&](auto rows) {
      constexpr int S = decltype(s)::value, R = decltype(rows)::value;
      launched = launch_stream<kEpiResidual, false, S, R>("gemv_stream_residual", a);
    });
  });
  return launched;
}

bool gemv_stream_group(const float* x, const RmsPrologue* nrm, const GemvGroup& g, int64_t M,
                       int64_t K) {
  int64_t N = 0;
  for (int i = 0; i < g.count; ++i) N += g.n[i];
  if (!rows_take(M) || N < 1 || !takes(kGemvStreamGroup)) return false;
  StreamArgs a{};
  a.x = x;
  if (nrm) a.nrm = *nrm;
  a.g = g, a.N = N, a.K = K;
  bool launched = false;
  gemv::with_split(K, [&](auto s) {
    gemv::with_rows(M, [&](auto rows) {
      constexpr int S = decltype(s)::value, R = decltype(rows)::value;
      launched = nrm ? launch_stream<kEpiGroup, true, S, R>("gemv_stream_group_rms", a)
                     : launch_stream<kEpiGroup, false, S, R>("gemv_stream_group", a);
    });
  });
  return launched;
}

}  // namespace gyre::cuda
