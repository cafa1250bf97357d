// RoPE fused with the bf16 paged KV-cache write (rope_kv_write.h). Work items [0, T·Hq·D/2)
// rotate one (p, p + D/2) pair of q in place — exactly rope_pair.cu's q items; the next T·Hkv·D/2
// items each rotate one pair of k in registers and store it, with the same pair of v, as bf16 at
// the token's cache slot — the values rope_qk would leave in k, rounded as paged_kv_write_bf16
// rounds them. The pair index p is the fastest-varying part of an item, so neighbouring threads
// store neighbouring bf16 of one cache row.
#include "gyre/backend/cuda/bf16_bits.cuh"
#include "gyre/backend/cuda/pdl.cuh"
#include "gyre/backend/cuda/rope_kv_write.h"
#include "gyre/backend/cuda/rope_rotate.cuh"
#include "gyre/backend/cuda/runtime.h"

namespace gyre::cuda {

namespace {

using namespace rope_detail;

constexpr int kThreads = 256;

__global__ void rope_kv_write_kernel(float* q, int64_t Hq, const float* k, const float* v,
                                     int64_t Hkv, int64_t tokens, int64_t D,
                                     const int32_t* positions, const float* cos, const float* sin,
                                     const int32_t* slots, uint16_t* k_cache, uint16_t* v_cache) {
  pdl_trigger();  // the attention kernel may launch (it waits for this grid before reading)
  pdl_wait();     // q, k, v come from the q/k/v GEMV (pdl.cuh)
  const int64_t half = D / 2, nq = tokens * Hq * half, total = nq + tokens * Hkv * half;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < total;
       j += int64_t(gridDim.x) * blockDim.x) {
    if (j < nq) {
      const RopeItem r = rope_item(j, Hq, half, positions);
      rope_rotate_pair(q + r.th * D + r.p, half, cos[r.table_row], sin[r.table_row]);
      continue;
    }
    const RopeItem r = rope_item(j - nq, Hkv, half, positions);
    const int64_t t = r.th / Hkv, head = r.th - t * Hkv;
    const int64_t slot = slots[t];
    if (slot < 0) continue;  // padding row: paged_kv_write_bf16 skips it too
    const float* kr = k + r.th * D + r.p;
    const float* vr = v + r.th * D + r.p;
    float ka, kb;
    rope_rotate(kr[0], kr[half], cos[r.table_row], sin[r.table_row], ka, kb);
    // Cache element (slot, head, p) of [pages * page_size, Hkv, D].
    const int64_t off = (slot * Hkv + head) * D + r.p;
    k_cache[off] = uint16_t(to_bf16_bits(ka));
    k_cache[off + half] = uint16_t(to_bf16_bits(kb));
    v_cache[off] = uint16_t(to_bf16_bits(vr[0]));
    v_cache[off + half] = uint16_t(to_bf16_bits(vr[half]));
  }
}

}  // namespace

void rope_qk_paged_kv_write_bf16(float* q, int64_t Hq, const float* k, const float* v, int64_t Hkv,
                                 int64_t T, int64_t D, const int32_t* positions, const float* cos,
                                 const float* sin, const int32_t* slot_mapping, uint16_t* k_cache,
                                 uint16_t* v_cache) {
  const int64_t total = T * (Hq + Hkv) * (D / 2);
  if (total == 0) return;
  launch_pdl("rope_qk_paged_kv_write_bf16", rope_kv_write_kernel, grid_for(total, kThreads),
             kThreads, 0, q, Hq, k, v, Hkv, T, D, positions, cos, sin, slot_mapping, k_cache,
             v_cache);
}

}  // namespace gyre::cuda
