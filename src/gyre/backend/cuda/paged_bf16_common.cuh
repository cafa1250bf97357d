// Pieces shared by the bf16 paged KV attention kernels: paged_bf16_attention.cu (the tile kernel
// for decode and prefill, its fused RoPE + KV write decode variant, the public entry points) and
// paged_bf16_combine.cu (the split-KV combine, the same for both variants). The public interface is
// paged_bf16.h; the split plan is paged_bf16_plan.h; nothing here is part of the public interface.
//
// Split-KV (flash-decoding): when (sequences x kv heads x row tiles) cannot fill the GPU, each
// sequence's keys are cut into `splits` chunks of split_chunk(kv_len, splits) keys (a multiple of
// the 64-key tile, chosen per sequence from its actual length so that short sequences use
// one-tile chunks), one CTA per chunk. A chunk's CTA writes per row the unnormalised partial
// o_s = sum_j 2^(x_j - m_s) v_j, its max m_s (log2 units) and sum l_s = sum_j 2^(x_j - m_s); the
// combine kernel then computes
//   M = max_s m_s,  L = sum_s l_s 2^(m_s - M),  out = (sum_s o_s 2^(m_s - M)) / L,
// which is exactly softmax over the union of the chunks. Split s holds keys of a row at position
// pos iff s * chunk <= pos, so the combine reads splits 0 .. pos / chunk only (each of those saw
// at least key s * chunk, so l_s > 0); chunks past a row's position are never read. A row with
// pos < chunk (only split 0 holds its keys) is finished by split 0's CTA, which writes `out`
// directly; the combine skips it. The combine is launched as a programmatic dependent of the
// attention kernel (griddepcontrol): its CTAs start while the attention's last CTAs finish and
// wait for the attention grid (complete, writes visible) before reading any partial — every
// combine CTA waits, also those with nothing to do, so the combine's completion implies the
// attention's. The split plan depends only on host-known sizes; the chunk only on kv_lens.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "gyre/backend/cuda/paged_bf16_combine.h"
#include "gyre/backend/cuda/paged_bf16_plan.h"
#include "gyre/backend/cuda/pdl.cuh"

namespace gyre::cuda::paged_bf16_detail {

constexpr int kMaxSplits = kPlanMaxSplits;       // most key chunks of one call
constexpr int kDefaultMinChunk = kPlanTileKeys;  // min_chunk_keys() without GYRE_PAGED_MIN_CHUNK

// Keys per chunk of a sequence with kv_len keys cut into `splits` chunks: the smallest multiple of
// the 64-key tile with splits * chunk >= kv_len, at least the plan's min_chunk
// (paged_bf16_plan.h's split_chunk_host). kv_len <= 2^30 (checked on the host), so the int
// arithmetic cannot overflow.
__device__ __forceinline__ int split_chunk(int kv_len, int splits, int min_chunk) {
  const int per = (max(kv_len, 1) + splits - 1) / splits;
  return max((per + kPlanTileKeys - 1) / kPlanTileKeys * kPlanTileKeys, min_chunk);
}

__device__ __forceinline__ float4 f4_axpy(float a, const float4& x, const float4& y) {
  return make_float4(fmaf(a, x.x, y.x), fmaf(a, x.y, y.y), fmaf(a, x.z, y.z), fmaf(a, x.w, y.w));
}
__device__ __forceinline__ float4 f4_scale(const float4& x, float a) {
  return make_float4(x.x * a, x.y * a, x.z * a, x.w * a);
}

// launch_split_combine (and its CTA-only reference): paged_bf16_combine.h (launched on
// cuda::stream() right after the attention kernel, as its programmatic dependent where the device
// supports it).

// The fewest keys per split-KV chunk (SplitPlan::min_chunk) of this process's plans:
// GYRE_PAGED_MIN_CHUNK (keys; rounded up to a multiple of the tile), default kDefaultMinChunk.
int min_chunk_keys();

}  // namespace gyre::cuda::paged_bf16_detail
