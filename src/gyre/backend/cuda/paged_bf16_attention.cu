// bf16 paged attention (declarations, layout and semantics in paged_bf16.h): the tile kernel for
// decode and prefill (its CTA body: paged_bf16_attn_cta.cuh) and the public entry points (the
// split-KV plan: paged_bf16_plan.h). The cache write is paged_bf16_write.cu, the split combine
// paged_bf16_combine.cu (split-KV: paged_bf16_common.cuh).
//
// Attention work item: one CTA (4 warps) owns up to R query rows of one (sequence b, kv head g)
// and one key range. Rows are the flattened (token, head-in-group) pairs f = t * G + hh of the
// sequence's q_len * G rows, so a decode token's G = Hq / Hkv heads share one CTA and every K/V row
// is loaded once for all of them; prefill chunks take R = 16 rows (2+ tokens) per CTA. The key
// range is the whole causal prefix, or with split-KV one chunk of it.
//
// Key loop: tiles of 64 keys are copied page by page into double-buffered shared memory with
// 16-byte cp.async (rows padded by 16 bytes so the 16-byte reads of 8 lanes on 8 different keys
// hit distinct banks). Each warp owns 16 keys of a tile and keeps its own online-softmax state for
// all R rows: scores by lane pairs (lane & 15 = key, lane >> 4 = half of the head dim; q comes from
// shared memory as a broadcast, the bf16 key is widened to f32 in registers), then P V with lanes
// owning 4 output dims (D = 64: two groups of 16 lanes take alternate keys). Scores are in log2
// units (q is pre-multiplied by scale * log2 e) so exp2f is the softmax exponential. At the end the
// 4 warps' states are merged through shared memory (the same formula as the split combine).
// A second decode kernel that scored tiles of <= 8 rows by row with q held in registers (fewer
// shared-memory loads) was measured on an H200 and removed: it needs 168 registers (3 instead of 4
// CTAs per SM and a second wave), 42.3 against this kernel's 32.7 us for batch-256 decode at 384
// keys with 14/2/64 heads, and 64.4 against 67.1 us with 12/2/128 heads (both 3 CTAs per SM).
//
// Fused decode (rope_paged_attention_bf16_decode, the kRope instantiations): q holds the
// unrotated queries, and every sequence has exactly one new token whose key/value k_new/v_new are
// not yet in the cache. Each CTA rotates the q rows it reads while staging them (rope_rotate.cuh,
// rope_kv_write.cu's expression, then the same scale multiply as load_q), and the one CTA of each
// (sequence, kv head) whose key range holds position kv_len - 1 (the last chunk under a split, the
// only CTA without) rotates the new key, rounds key and value to bf16 (bf16_bits.cuh) and stores
// them at slot_mapping[t] before it loads the tile holding that position: a __syncthreads between
// the global stores and the tile's cp.async makes them visible in the CTA, and no other CTA reads
// that position (one row tile per (sequence, kv head): Hq / Hkv <= 16). So the CTAs see the values
// rope_qk_paged_kv_write_bf16 would have left in q and the cache, and the output is bitwise that of
// the two launches.
//
// Numerics: f32 products and sums, f32 online softmax with the max subtracted; the only bf16 data
// are the stored keys/values, which are widened exactly. Rows with no visible key yet (padding
// rows, or a warp whose keys are all masked) keep max = -inf and use 0 as the reference, so they
// produce 0 weights, never NaN; keys past the range are zero-filled in shared memory (0 * garbage
// could be NaN) and masked.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>

#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/paged_bf16.h"
#include "gyre/backend/cuda/paged_bf16_attn_cta.cuh"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/error.h"

namespace gyre::cuda {

namespace {

using namespace paged_bf16_detail;

template <int D, int R>
__global__ void __launch_bounds__(kThreads, R <= 8 ? 4 : 1)
    paged_attn_bf16_kernel(const AttnParams p) {
  attn_cta<D, R, false>(p, RopeAttnParams{}, blockIdx.x, blockIdx.y);
}

// The fused decode (rope_paged_attention_bf16_decode): the same CTAs with the RoPE and KV write.
template <int D, int R>
__global__ void __launch_bounds__(kThreads, R <= 8 ? 4 : 1)
    rope_paged_attn_bf16_kernel(const AttnParams p, const RopeAttnParams rp) {
  attn_cta<D, R, true>(p, rp, blockIdx.x, blockIdx.y);
}

// ---- host side ----------------------------------------------------------------------------------

[[noreturn]] void bad_argument(const char* fn, const std::string& what) {
  throw Error(ErrorKind::invalid_argument, std::string(fn) + ": " + what);
}

using Plan = SplitPlan;

Plan make_plan(int64_t B, int64_t Hq, int64_t Hkv, int64_t max_q_len, int64_t max_kv_len) {
  return make_split_plan(B, Hq, Hkv, max_q_len, max_kv_len, sm_count(), min_chunk_keys());
}

size_t workspace_for(const Plan& pl, int64_t T, int64_t Hq, int64_t D) {
  if (pl.splits <= 1) return 0;
  return size_t(pl.splits) * size_t(T * Hq) * size_t(D + 2) * sizeof(float);
}

void check_args(const char* fn, const void* q, const void* k_cache, const void* v_cache,
                const void* out, int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D,
                int64_t page_size, int64_t max_q_len, int64_t max_kv_len) {
  if (!paged_attention_bf16_supported(D))
    bad_argument(fn, "head dim " + std::to_string(D) + " is not supported (64 or 128)");
  if (Hkv < 1 || Hq < 1 || Hq % Hkv != 0)
    bad_argument(fn, "Hq = " + std::to_string(Hq) +
                         " must be a positive multiple of Hkv = " + std::to_string(Hkv));
  if (page_size < 1) bad_argument(fn, "page_size must be >= 1, got " + std::to_string(page_size));
  if (B < 0 || T < 0) bad_argument(fn, "negative B or T");
  if (max_q_len < 1 || max_kv_len < 1)
    bad_argument(fn, "max_q_len and max_kv_len must be >= 1 when T > 0");
  // Positions, row counts and split starts (< 2 * max_kv_len) are 32-bit in the kernels.
  const int64_t kIntMax = 0x7FFFFFFF, kMaxKv = int64_t(1) << 30;
  if (T * Hq > kIntMax || max_kv_len > kMaxKv || max_q_len * Hq > kIntMax)
    bad_argument(fn, "sizes exceed 32-bit row/position indices");
  for (const void* ptr : {q, k_cache, v_cache, out})
    if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0)
      bad_argument(fn, "q, out, k_cache and v_cache must be 16-byte aligned");
}

// Sets the kernel's dynamic shared memory limit once per instantiation, then launches it.
template <typename Kernel>
void set_smem_limit(Kernel kernel, int smem_bytes) {
  GYRE_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes));
}

template <int D, int R, bool kRope>
void launch_attn(const AttnParams& p, const RopeAttnParams& rp, const Plan& pl) {
  constexpr int kSmem = Layout<D, R>::kBytes;
  const dim3 grid(unsigned(pl.items), unsigned(pl.splits));
  if constexpr (kRope) {
    static const bool attr = (set_smem_limit(rope_paged_attn_bf16_kernel<D, R>, kSmem), true);
    (void)attr;
    launch_pdl("rope_paged_attention_bf16_decode", rope_paged_attn_bf16_kernel<D, R>, grid,
               dim3(kThreads), size_t(kSmem), p, rp);
  } else {
    static const bool attr = (set_smem_limit(paged_attn_bf16_kernel<D, R>, kSmem), true);
    (void)attr;
    launch_pdl("paged_attention_bf16_fwd", paged_attn_bf16_kernel<D, R>, grid, dim3(kThreads),
               size_t(kSmem), p);
  }
}

template <int D, bool kRope>
void launch_attn_rows(const AttnParams& p, const RopeAttnParams& rp, const Plan& pl) {
  switch (pl.rows) {
    case 1: return launch_attn<D, 1, kRope>(p, rp, pl);
    case 2: return launch_attn<D, 2, kRope>(p, rp, pl);
    case 4: return launch_attn<D, 4, kRope>(p, rp, pl);
    case 8: return launch_attn<D, 8, kRope>(p, rp, pl);
    default: return launch_attn<D, 16, kRope>(p, rp, pl);
  }
}

// The attention (and the combine when split) for an already checked call: p's index arrays, q,
// caches and sizes are set (rp: the fused decode's fields, read only when kRope); fills in the
// plan's fields.
template <bool kRope>
void run_attention(const char* fn, AttnParams p, const RopeAttnParams& rp, int64_t B, int64_t D,
                   float scale, int64_t max_q_len, int64_t max_kv_len, void* workspace,
                   size_t workspace_bytes) {
  const Plan pl = make_plan(B, p.Hq, p.Hkv, max_q_len, max_kv_len);
  if (pl.items > 0x7FFFFFFF) bad_argument(fn, "too many work items for one grid");
  const size_t need = workspace_for(pl, p.T, p.Hq, D);
  if (workspace_bytes < need)
    bad_argument(fn, "workspace of " + std::to_string(workspace_bytes) + " bytes, need " +
                         std::to_string(need));
  if (need > 0 && reinterpret_cast<uintptr_t>(workspace) % 16 != 0)
    bad_argument(fn, "workspace must be 16-byte aligned");
  p.G = p.Hq / p.Hkv;
  p.row_tiles = pl.row_tiles;
  p.splits = pl.splits;
  p.min_chunk = pl.min_chunk;
  p.qscale = scale * kLog2e;
  p.part_o = need > 0 ? static_cast<float*>(workspace) : nullptr;
  p.part_ml = need > 0 ? reinterpret_cast<float2*>(static_cast<float*>(workspace) +
                                                   size_t(pl.splits) * size_t(p.T * p.Hq * D))
                       : nullptr;
  if (D == 64)
    launch_attn_rows<64, kRope>(p, rp, pl);
  else
    launch_attn_rows<128, kRope>(p, rp, pl);
  if (need > 0)
    launch_split_combine(p.part_o, p.part_ml, p.cu_q, p.kv_lens, int(B), p.T, p.Hq, int(D),
                         pl.splits, pl.min_chunk, p.out);
}

AttnParams attn_params(const float* q, const uint16_t* k_cache, const uint16_t* v_cache,
                       const int32_t* cu_seqlens_q, const int32_t* kv_lens,
                       const int32_t* page_indptr, const int32_t* page_indices, int64_t T,
                       int64_t Hq, int64_t Hkv, int64_t page_size, float* out) {
  AttnParams p{};
  p.q = q;
  p.k_cache = k_cache;
  p.v_cache = v_cache;
  p.cu_q = cu_seqlens_q;
  p.kv_lens = kv_lens;
  p.page_indptr = page_indptr;
  p.page_indices = page_indices;
  p.T = int(T);
  p.Hq = int(Hq);
  p.Hkv = int(Hkv);
  p.page_size = int(page_size);
  p.out = out;
  return p;
}

// The pool-scratch overloads' workspace: calls call(workspace, workspace_bytes) with the plan's
// workspace for these sizes borrowed from the device pool (null and 0 when the plan needs none).
// Stream-ordered: released when this returns, reused only after the kernels call launched.
template <typename Call>
void with_pool_workspace(int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D,
                         int64_t max_q_len, int64_t max_kv_len, Call&& call) {
  const size_t need = workspace_for(make_plan(B, Hq, Hkv, max_q_len, max_kv_len), T, Hq, D);
  std::optional<DeviceBuffer> scratch;
  if (need > 0) scratch.emplace(need);
  call(need > 0 ? scratch->as<void>() : nullptr, need);
}

constexpr const char* kFwd = "paged_attention_bf16_fwd";
constexpr const char* kFused = "rope_paged_attention_bf16_decode";

}  // namespace

bool paged_attention_bf16_supported(int64_t D) { return D == 64 || D == 128; }

bool rope_paged_attention_bf16_supported(int64_t Hq, int64_t Hkv, int64_t D) {
  return paged_attention_bf16_supported(D) && Hkv >= 1 && Hq >= Hkv && Hq % Hkv == 0 &&
         Hq / Hkv <= kPlanMaxRows;
}

size_t paged_attention_bf16_workspace_bytes(int64_t B, int64_t T, int64_t Hq, int64_t Hkv,
                                            int64_t D, int64_t max_q_len, int64_t max_kv_len) {
  if (T == 0 || B == 0 || Hkv < 1) return 0;
  return workspace_for(make_plan(B, Hq, Hkv, max_q_len, max_kv_len), T, Hq, D);
}

void paged_attention_bf16_fwd(const float* q, const uint16_t* k_cache, const uint16_t* v_cache,
                              const int32_t* cu_seqlens_q, const int32_t* kv_lens,
                              const int32_t* page_indptr, const int32_t* page_indices, int64_t B,
                              int64_t T, int64_t Hq, int64_t Hkv, int64_t D, int64_t page_size,
                              float scale, int64_t max_q_len, int64_t max_kv_len, float* out,
                              void* workspace, size_t workspace_bytes) {
  if (T == 0 || B == 0) return;
  check_args(kFwd, q, k_cache, v_cache, out, B, T, Hq, Hkv, D, page_size, max_q_len, max_kv_len);
  run_attention<false>(kFwd,
                       attn_params(q, k_cache, v_cache, cu_seqlens_q, kv_lens, page_indptr,
                                   page_indices, T, Hq, Hkv, page_size, out),
                       RopeAttnParams{}, B, D, scale, max_q_len, max_kv_len, workspace,
                       workspace_bytes);
}

void paged_attention_bf16_fwd(const float* q, const uint16_t* k_cache, const uint16_t* v_cache,
                              const int32_t* cu_seqlens_q, const int32_t* kv_lens,
                              const int32_t* page_indptr, const int32_t* page_indices, int64_t B,
                              int64_t T, int64_t Hq, int64_t Hkv, int64_t D, int64_t page_size,
                              float scale, int64_t max_q_len, int64_t max_kv_len, float* out) {
  if (T == 0 || B == 0) return;
  check_args(kFwd, q, k_cache, v_cache, out, B, T, Hq, Hkv, D, page_size, max_q_len, max_kv_len);
  with_pool_workspace(B, T, Hq, Hkv, D, max_q_len, max_kv_len, [&](void* ws, size_t ws_bytes) {
    paged_attention_bf16_fwd(q, k_cache, v_cache, cu_seqlens_q, kv_lens, page_indptr, page_indices,
                             B, T, Hq, Hkv, D, page_size, scale, max_q_len, max_kv_len, out, ws,
                             ws_bytes);
  });
}

void rope_paged_attention_bf16_decode(
    const float* q, const float* k, const float* v, const int32_t* positions, const float* cos,
    const float* sin, const int32_t* slot_mapping, uint16_t* k_cache, uint16_t* v_cache,
    const int32_t* cu_seqlens_q, const int32_t* kv_lens, const int32_t* page_indptr,
    const int32_t* page_indices, int64_t B, int64_t Hq, int64_t Hkv, int64_t D, int64_t page_size,
    float scale, int64_t max_kv_len, float* out, void* workspace, size_t workspace_bytes) {
  if (B == 0) return;
  check_args(kFused, q, k_cache, v_cache, out, B, B, Hq, Hkv, D, page_size, 1, max_kv_len);
  if (!rope_paged_attention_bf16_supported(Hq, Hkv, D))
    bad_argument(kFused, "Hq / Hkv = " + std::to_string(Hq / Hkv) +
                             " query heads per kv head; the fused decode takes at most " +
                             std::to_string(kPlanMaxRows));
  for (const void* ptr : {static_cast<const void*>(k), static_cast<const void*>(v),
                          static_cast<const void*>(positions), static_cast<const void*>(cos),
                          static_cast<const void*>(sin), static_cast<const void*>(slot_mapping)})
    if (ptr == nullptr) bad_argument(kFused, "null k, v, positions, cos, sin or slot_mapping");
  RopeAttnParams rp;
  rp.k_new = k;
  rp.v_new = v;
  rp.positions = positions;
  rp.cos = cos;
  rp.sin = sin;
  rp.slots = slot_mapping;
  rp.k_cache_w = k_cache;
  rp.v_cache_w = v_cache;
  // A launch captured into a graph is one decode step's (the engine's decode graphs): the keys
  // before the new token were written before the graph began (attn_cta, old_keys_settled).
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  GYRE_CUDA_CHECK(cudaStreamIsCapturing(stream(), &capture));
  rp.old_keys_settled = capture == cudaStreamCaptureStatusActive;
  // The plan of paged_attention_bf16_fwd with max_q_len = 1: the same CTAs, chunks and combine.
  run_attention<true>(kFused,
                      attn_params(q, k_cache, v_cache, cu_seqlens_q, kv_lens, page_indptr,
                                  page_indices, B, Hq, Hkv, page_size, out),
                      rp, B, D, scale, 1, max_kv_len, workspace, workspace_bytes);
}

void rope_paged_attention_bf16_decode(const float* q, const float* k, const float* v,
                                      const int32_t* positions, const float* cos, const float* sin,
                                      const int32_t* slot_mapping, uint16_t* k_cache,
                                      uint16_t* v_cache, const int32_t* cu_seqlens_q,
                                      const int32_t* kv_lens, const int32_t* page_indptr,
                                      const int32_t* page_indices, int64_t B, int64_t Hq,
                                      int64_t Hkv, int64_t D, int64_t page_size, float scale,
                                      int64_t max_kv_len, float* out) {
  if (B == 0) return;
  check_args(kFused, q, k_cache, v_cache, out, B, B, Hq, Hkv, D, page_size, 1, max_kv_len);
  // T = B (one new token a sequence) and max_q_len = 1: the sizes the other overload plans with.
  with_pool_workspace(B, B, Hq, Hkv, D, 1, max_kv_len, [&](void* ws, size_t ws_bytes) {
    rope_paged_attention_bf16_decode(q, k, v, positions, cos, sin, slot_mapping, k_cache, v_cache,
                                     cu_seqlens_q, kv_lens, page_indptr, page_indices, B, Hq, Hkv,
                                     D, page_size, scale, max_kv_len, out, ws, ws_bytes);
  });
}

}  // namespace gyre::cuda
