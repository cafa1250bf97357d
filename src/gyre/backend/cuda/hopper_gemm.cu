// The own Hopper GEMM (sm_90a: TMA loads, wgmma tensor-core MMAs, warp specialisation), for the
// GEMMs whose epilogue cuBLASLt cannot fuse. First epilogue: SwiGLU, so the MLP's gate and up
// projections and silu_mul run as one kernel (notes/next_steps_issue7.md: the design sketch; the
// lever that training at the 1.5B shape still needs).
//
// Structure (one CTA per SM, persistent over 128 x 256 output tiles; 384 threads = 3 warpgroups):
// - warpgroup 0, warp 0, one thread: the producer. For each tile and each 64-wide K block it waits
//   until a pipeline stage is free (mbarrier `empty`), then issues three TMA loads into it — A's
//   128 rows and B's two halves of 128 rows — completing on the stage's `full` mbarrier.
// - warpgroups 1 and 2: the consumers, rows 0-63 and 64-127 of the tile. Each waits on `full`,
//   issues four wgmma m64n256k16 (one per 16 columns of K), and frees the previous stage once the
//   MMAs that read it have completed (wgmma.wait_group 1), so one stage's MMAs are always in flight
//   while the next stage is waited for. At the tile's end each rounds its accumulators to bf16 into
//   a staging tile in shared memory (the 128-byte swizzle, 64-column chunks: what the output TMA
//   boxes expect; row r's 16-byte piece j sits at piece j ^ (r % 8), so a warp's eight rows hit 32
//   distinct banks).
// - Plain GEMM: each consumer warpgroup then stores its staging tile with the TMA (asynchronous:
//   the next tile's MMAs start at once; the staging tile is reused only once the store has read
//   it).
// - SwiGLU: warps 1-3 of warpgroup 0 are the epilogue warps. The consumers hand the staged bf16
//   gate | up tile over (mbarrier `staged_full`) and go on with the next tile's MMAs; the epilogue
//   warps compute act = silu(gate) · up in place of gate, store it (and, for training, gate and up)
//   with the TMA and free the staging tile (`staged_free`), so silu's arithmetic runs beside the
//   MMAs instead of between tiles. With silu.cuh's IEEE expression (expf and a correctly rounded
//   division, ~40 instructions and a slow-path branch an element) the three warps cannot keep up
//   and set the kernel's pace (H200, session 26: 1.5B 1605-1686 us against 1253 with no math and
//   1306 with __expf / __fdividef); docs/cuda.md, "Not done yet".
//
// Operands (both "K-major": the layout of a row-major activation x[M, K] and of an HF weight
// w[N, K]): C[M, N] = A[M, K] · B[N, K]^T with f32 accumulation. Shared-memory tiles use the
// 128-byte swizzle: a 64-element bf16 row is one 128-byte line, 8 lines an atom of 1024 bytes;
// the TMA writes that pattern and the wgmma descriptors read it (start address, stride between
// 8-row atoms = 1024 bytes, swizzle mode 1); the k-th 16-column slice of a line starts 32·k bytes
// in (the hardware applies the swizzle to the address bits). Loads past the operands fill zeros and
// stores past the output are dropped, so ragged M, N, K need no other handling.
//
// Accumulator layout of wgmma m64nNk16 (f32): thread t of the warpgroup (warp w = t / 32, lane l)
// holds, for j = 0 .. N/8 - 1, d[4j + 0, 1] = C[16w + l/4, 8j + 2(l%4) + 0, 1] and
// d[4j + 2, 3] = the same columns 8 rows down.
//
// Accumulation order: each output element is the tensor core's f32 sum over K in 16-wide slices,
// slices in increasing K, and does not depend on which other columns share its tile, so the
// SwiGLU kernel's gate (and up) values are bitwise the plain kernel's x · wg^T.
//
// Measured and dropped (session 26): CTA pairs (clusters of 2) sharing B through TMA multicast ran
// at 420-470 TFLOP/s against 720 without (8192^3 and the MLP shapes).
#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>

#include "gyre/backend/cuda/bf16_bits.cuh"
#include "gyre/backend/cuda/hopper_gemm_launch.h"
#include "gyre/backend/cuda/mbarrier.cuh"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/backend/cuda/silu.cuh"

namespace gyre::cuda::hopper {

namespace {

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define GYRE_HOPPER_GEMM_DEVICE 1
#endif

#ifdef GYRE_HOPPER_GEMM_DEVICE
// TMA: the box at (column c0, row c1) of the tensor map into shared memory at dst, completing
// its bytes on the mbarrier.
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap* map, int c0, int c1,
                                            uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3}], [%4];" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}

// TMA store of a shared-memory box to (column c0, row c1) of the tensor map (clipped to it).
__device__ __forceinline__ void tma_store_2d(const CUtensorMap* map, uint32_t src, int c0, int c1) {
  asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];" ::"l"(
                   reinterpret_cast<uint64_t>(map)),
               "r"(c0), "r"(c1), "r"(src)
               : "memory");
}
__device__ __forceinline__ void bulk_commit() {
  asm volatile("cp.async.bulk.commit_group;" ::: "memory");
}
// Waits until the committed stores have read their shared memory (it may be written again).
__device__ __forceinline__ void bulk_wait_read() {
  asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
}
__device__ __forceinline__ void bulk_wait_all() {
  asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
}
// Generic-proxy shared-memory writes become visible to the TMA (async proxy).
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}
__device__ __forceinline__ void named_barrier(int id, int threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ uint4 ld_shared_v4(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(addr)
               : "memory");
  return v;
}
__device__ __forceinline__ void st_shared_v4(uint32_t addr, uint4 v) {
  asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};" ::"r"(addr), "r"(v.x), "r"(v.y), "r"(v.z),
               "r"(v.w)
               : "memory");
}
__device__ __forceinline__ void st_shared_u32(uint32_t addr, uint32_t v) {
  asm volatile("st.shared.b32 [%0], %1;" ::"r"(addr), "r"(v) : "memory");
}

// Shared-memory matrix descriptor of a K-major tile in the 128-byte swizzle (see the top).
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr) {
  uint64_t d = uint64_t((addr & 0x3FFFF) >> 4);
  d |= uint64_t(1) << 16;          // leading byte offset (unused by swizzled K-major layouts)
  d |= uint64_t(1024 >> 4) << 32;  // stride byte offset: 8 lines of 128 bytes
  d |= uint64_t(1) << 62;          // 128-byte swizzle
  return d;
}

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
// Keeps the compiler from moving reads or writes of an accumulator across the asynchronous MMAs.
__device__ __forceinline__ void fence_acc(float (&d)[128]) {
#pragma unroll
  for (int i = 0; i < 128; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// One wgmma.mma_async m64n256k16 (bf16 x bf16 -> f32, both operands K-major in shared memory):
// acc += A[64 x 16] * B[256 x 16]^T, or acc = the product when scale_d == 0.
__device__ __forceinline__ void wgmma_m64n256k16(float (&d)[128], uint64_t desc_a, uint64_t desc_b,
                                                 int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
      "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
      "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
      "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, "
      "%127"
      "}, %128, %129, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
        "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),
        "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]),
        "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]),
        "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]),
        "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]),
        "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]),
        "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
        "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]),
        "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]),
        "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]),
        "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

// Tile t -> (tile row, tile column), rastered in groups of kGroupM tile rows: the CTAs running at
// one time share a few A row blocks and B column blocks, which stay in L2.
__device__ __forceinline__ void tile_coords(int t, int tiles_m, int tiles_n, int& tm, int& tn) {
  const int per_group = kGroupM * tiles_n;
  const int first_m = (t / per_group) * kGroupM;
  const int rows = min(tiles_m - first_m, kGroupM);
  const int r = t % per_group;
  tm = first_m + r % rows;
  tn = r / rows;
}

// Shared-memory byte offset of row r (0-63), 16-byte piece `piece` (0-31 across the 256 columns)
// of a consumer warpgroup's staging tile: 64-column chunks of 8 KB in the 128-byte swizzle.
__device__ __forceinline__ uint32_t staged_offset(int r, int piece) {
  return uint32_t((piece / 8) * 8192 + r * 128 + (((piece % 8) ^ (r % 8)) * 16));
}

// act of eight bf16 gate / up pairs (16 bytes each), as silu_mul_fwd_bf16 computes each element.
__device__ __forceinline__ uint4 silu_mul_8(uint4 g, uint4 u) {
  const uint32_t gw[4] = {g.x, g.y, g.z, g.w}, uw[4] = {u.x, u.y, u.z, u.w};
  uint32_t o[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float a0 =
        silu_mul_value(bf16_value(uint16_t(gw[i] & 0xFFFF)), bf16_value(uint16_t(uw[i] & 0xFFFF)));
    const float a1 =
        silu_mul_value(bf16_value(uint16_t(gw[i] >> 16)), bf16_value(uint16_t(uw[i] >> 16)));
    o[i] = bf16_rn_pair(a0, a1);
  }
  return make_uint4(o[0], o[1], o[2], o[3]);
}
#endif  // GYRE_HOPPER_GEMM_DEVICE

// Shared memory per variant. The plain GEMM stages its output in two 128-column halves (16 KB a
// consumer warpgroup), which leaves room for a 4th pipeline stage; SwiGLU's epilogue warps need
// a whole gate | up tile staged (32 KB a warpgroup), so it runs 3 stages.
template <bool kSwiglu>
struct Layout {
  static constexpr int kStages = kSwiglu ? 3 : 4;
  static constexpr int kEpiBytes = 64 * (kSwiglu ? kBN : kBN / 2) * 2;  // one consumer warpgroup
  static constexpr int kSmemBytes =
      kStages * kStageBytes + 2 * kEpiBytes + 1024 /* alignment */ + (2 * kStages + 2) * 8;
  static_assert(kSmemBytes <= 227 * 1024, "more shared memory than an sm_90 CTA may have");
};

// kSwiglu = false: out = A · B^T (B = tma_b0 = tma_b1, rows tn·256 .. +255 as two boxes).
// kSwiglu = true:  B's first half is 128 gate rows, its second 128 up rows of the same output
// columns; out = bf16(silu_mul(bf16(gate), bf16(up))) — silu_mul_fwd_bf16 of the bf16 gate and up
// — and, when p.store_gate_up, gate and up themselves (tma_gate / tma_up).
template <bool kSwiglu>
__global__ void __launch_bounds__(kThreads, 1)
    hopper_gemm_kernel(const __grid_constant__ CUtensorMap tma_a,
                       const __grid_constant__ CUtensorMap tma_b0,
                       const __grid_constant__ CUtensorMap tma_b1,
                       const __grid_constant__ CUtensorMap tma_out,
                       const __grid_constant__ CUtensorMap tma_gate,
                       const __grid_constant__ CUtensorMap tma_up, const Params p) {
#ifdef GYRE_HOPPER_GEMM_DEVICE
  constexpr int kStages = Layout<kSwiglu>::kStages, kEpiBytes = Layout<kSwiglu>::kEpiBytes;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem =
      reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  const uint32_t tiles_base = smem_addr(smem);
  const uint32_t staged_base = tiles_base + kStages * kStageBytes;  // 2 x kEpiBytes
  const uint32_t full_bar = staged_base + 2 * kEpiBytes;
  const uint32_t empty_bar = full_bar + kStages * 8;
  const uint32_t staged_full = empty_bar + kStages * 8;  // SwiGLU hand-over
  const uint32_t staged_free = staged_full + 8;
  const int wg = threadIdx.x / 128;
  const int tid = threadIdx.x % 128;
  const int warp = tid / 32, lane = tid % 32;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(full_bar + 8 * s, 1);   // the producer's arrive (+ the TMA bytes)
      mbar_init(empty_bar + 8 * s, 2);  // one arrive per consumer warpgroup
    }
    mbar_init(staged_full, 2);  // one arrive per consumer warpgroup
    mbar_init(staged_free, 1);  // the epilogue warps' storing thread
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  const int ktiles = (p.K + kBK - 1) / kBK;
  const int ntiles = p.tiles_m * p.tiles_n;
  constexpr int kOutCols = kSwiglu ? kBN / 2 : kBN;  // output columns per tile

  if (wg == 0 && warp == 0) {
    if (lane != 0) return;
    // Producer.
    int stage = 0;
    uint32_t phase = 0;
    for (int t = blockIdx.x; t < ntiles; t += gridDim.x) {
      int tm, tn;
      tile_coords(t, p.tiles_m, p.tiles_n, tm, tn);
      const int row_b0 = kSwiglu ? tn * (kBN / 2) : tn * kBN;
      const int row_b1 = kSwiglu ? row_b0 : row_b0 + kBN / 2;
      for (int kt = 0; kt < ktiles; ++kt) {
        mbar_wait(empty_bar + 8 * stage, phase ^ 1);
        const uint32_t sa = tiles_base + stage * kStageBytes;
        const uint32_t sb = sa + kStageA;
        const uint32_t fb = full_bar + 8 * stage;
        mbar_expect_tx(fb, kStageBytes);
        tma_load_2d(sa, &tma_a, kt * kBK, tm * kBM, fb);
        tma_load_2d(sb, &tma_b0, kt * kBK, row_b0, fb);
        tma_load_2d(sb + kHalfB, &tma_b1, kt * kBK, row_b1, fb);
        if (++stage == kStages) stage = 0, phase ^= 1;
      }
    }
    return;
  }

  if (wg == 0) {
    if constexpr (kSwiglu) {
      // Epilogue warps (96 threads): act in place of gate in both staging tiles, then the stores.
      const int w = tid - 32;
      uint32_t phase = 0;
      for (int t = blockIdx.x; t < ntiles; t += gridDim.x) {
        int tm, tn;
        tile_coords(t, p.tiles_m, p.tiles_n, tm, tn);
        mbar_wait(staged_full, phase);
        if (p.store_gate_up) {  // training keeps the bf16 gate and up for the backward
          if (w == 0) {
#pragma unroll
            for (int c = 0; c < 2; ++c)
#pragma unroll
              for (int q = 0; q < 2; ++q) {
                const uint32_t base = staged_base + c * kEpiBytes;
                tma_store_2d(&tma_gate, base + q * 8192, tn * kOutCols + 64 * q, tm * kBM + c * 64);
                tma_store_2d(&tma_up, base + (2 + q) * 8192, tn * kOutCols + 64 * q,
                             tm * kBM + c * 64);
              }
            bulk_commit();
            bulk_wait_read();  // gate is read before act overwrites it
          }
          named_barrier(3, 96);
        }
        // 128 rows x 16 pieces of 8 gate values (pieces 0-15; up is piece + 16).
        for (int i = w; i < kBM * 16; i += 96) {
          const int r = i / 16, piece = i % 16;
          const uint32_t base = staged_base + (r / 64) * kEpiBytes;
          const uint32_t ga = base + staged_offset(r % 64, piece);
          const uint32_t ua = base + staged_offset(r % 64, piece + 16);
          st_shared_v4(ga, silu_mul_8(ld_shared_v4(ga), ld_shared_v4(ua)));
        }
        fence_proxy_async();
        named_barrier(3, 96);
        if (w == 0) {
#pragma unroll
          for (int c = 0; c < 2; ++c)
#pragma unroll
            for (int q = 0; q < 2; ++q)
              tma_store_2d(&tma_out, staged_base + c * kEpiBytes + q * 8192, tn * kOutCols + 64 * q,
                           tm * kBM + c * 64);
          bulk_commit();
          bulk_wait_read();
          mbar_arrive(staged_free);
        }
        phase ^= 1;
      }
      if (w == 0) bulk_wait_all();
    }
    return;
  }

  // Consumers.
  const int c = wg - 1;
  const uint32_t staged = staged_base + c * kEpiBytes;
  int stage = 0;
  uint32_t phase = 0, staged_phase = 0;
  float acc[128];
  for (int t = blockIdx.x; t < ntiles; t += gridDim.x) {
    int tm, tn;
    tile_coords(t, p.tiles_m, p.tiles_n, tm, tn);
#pragma unroll
    for (int i = 0; i < 128; ++i) acc[i] = 0.0f;
    fence_acc(acc);
    int prev_stage = -1;
    for (int kt = 0; kt < ktiles; ++kt) {
      mbar_wait(full_bar + 8 * stage, phase);
      const uint32_t sa = tiles_base + stage * kStageBytes + c * (64 * kBK * 2);
      const uint32_t sb = tiles_base + stage * kStageBytes + kStageA;
      wgmma_fence();
#pragma unroll
      for (int k = 0; k < kBK / 16; ++k)
        wgmma_m64n256k16(acc, smem_desc(sa + 32 * k), smem_desc(sb + 32 * k), 1);
      wgmma_commit();
      wgmma_wait<1>();  // the previous stage's MMAs have read their operands
      fence_acc(acc);
      if (prev_stage >= 0 && tid == 0) mbar_arrive(empty_bar + 8 * prev_stage);
      prev_stage = stage;
      if (++stage == kStages) stage = 0, phase ^= 1;
    }
    wgmma_wait<0>();
    fence_acc(acc);
    if (prev_stage >= 0 && tid == 0) mbar_arrive(empty_bar + 8 * prev_stage);

    // The staging tile is free once the previous tile's stores have read it.
    if constexpr (kSwiglu) {
      mbar_wait(staged_free, staged_phase ^ 1);
    } else {
      if (tid == 0) bulk_wait_read();
      named_barrier(1 + c, 128);
    }
    const int r0 = warp * 16 + lane / 4;  // and r0 + 8; r0 % 8 == lane / 4
    const uint32_t lane_off = uint32_t(r0) * 128 + 4 * (lane % 4);
    if constexpr (kSwiglu) {
#pragma unroll
      for (int j = 0; j < 32; ++j) {  // 16-byte piece j holds columns 8j .. 8j + 7
        const uint32_t a = staged + (j / 8) * 8192 + lane_off + (((j % 8) ^ (lane / 4)) * 16);
        st_shared_u32(a, bf16_rn_pair(acc[4 * j], acc[4 * j + 1]));
        st_shared_u32(a + 8 * 128, bf16_rn_pair(acc[4 * j + 2], acc[4 * j + 3]));
      }
      fence_proxy_async();  // the epilogue warps may TMA-store gate / up straight from here
      named_barrier(1 + c, 128);
      if (tid == 0) mbar_arrive(staged_full);
      staged_phase ^= 1;
    } else {
#pragma unroll
      for (int h = 0; h < 2; ++h) {  // columns 128h .. 128h + 127
        if (h == 1) {                // the first half's store has read the staging tile
          if (tid == 0) bulk_wait_read();
          named_barrier(1 + c, 128);
        }
#pragma unroll
        for (int j = 0; j < 16; ++j) {
          const int jj = 16 * h + j;
          const uint32_t a = staged + (j / 8) * 8192 + lane_off + (((j % 8) ^ (lane / 4)) * 16);
          st_shared_u32(a, bf16_rn_pair(acc[4 * jj], acc[4 * jj + 1]));
          st_shared_u32(a + 8 * 128, bf16_rn_pair(acc[4 * jj + 2], acc[4 * jj + 3]));
        }
        fence_proxy_async();
        named_barrier(1 + c, 128);
        if (tid == 0) {
#pragma unroll
          for (int q = 0; q < 2; ++q)
            tma_store_2d(&tma_out, staged + q * 8192, tn * kBN + 128 * h + 64 * q,
                         tm * kBM + c * 64);
          bulk_commit();
        }
      }
    }
  }
  if constexpr (!kSwiglu)
    if (tid == 0) bulk_wait_all();
#endif  // GYRE_HOPPER_GEMM_DEVICE
}

template <bool kSwiglu>
void launch_kernel(const TensorMaps& m, const Params& p, int max_ctas) {
  auto* kernel = hopper_gemm_kernel<kSwiglu>;
  constexpr int kSmemBytes = Layout<kSwiglu>::kSmemBytes;
  static std::once_flag once;
  std::call_once(once, [&] {
    GYRE_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  });
  const int grid = std::max(1, std::min(p.tiles_m * p.tiles_n, max_ctas));
  kernel<<<grid, kThreads, kSmemBytes, stream()>>>(m.a, m.b0, m.b1, m.out, m.gate, m.up, p);
  GYRE_CUDA_LAUNCHED("hopper_gemm_kernel");
}

}  // namespace

void launch(bool swiglu, const TensorMaps& m, const Params& p, int max_ctas) {
  if (swiglu)
    launch_kernel<true>(m, p, max_ctas);
  else
    launch_kernel<false>(m, p, max_ctas);
}

}  // namespace gyre::cuda::hopper
