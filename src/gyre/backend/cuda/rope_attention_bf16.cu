// The fused RoPE + attention's kernels and glue (rope_attention_bf16.h: the bitwise contract).
//
// Both kernels give each block whole tokens (grid-stride over tokens): the token's table rows are
// read once, and its items — (head, pair) of q, then of k, then of v (or dq, dk, dv) — are spread
// over the block's threads, consecutive threads on consecutive pairs of one head (coalesced). A q/k
// item is exactly one iteration of rows.cu's rope kernel: pair p of head h is (x[p], x[p + D/2]) in
// row (t, h), rotated by the table entries cos/sin[positions[t] * D/2 + p] (rope_item's table_row)
// through rope_rotate; a v item moves the same two elements without rotation.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <optional>

#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/rope_attention_bf16.h"
#include "gyre/backend/cuda/rope_rotate.cuh"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/error.h"

namespace gyre::cuda {

namespace {

using rope_detail::rope_rotate;

constexpr int kThreads = 256;

// cuda::f32_to_bf16's rounding (elementwise.cu) and bf16_to_f32's widening, element by element.
__device__ __forceinline__ uint16_t round_bf16(float x) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(x));
}
__device__ __forceinline__ float widen_bf16(uint16_t h) {
  return __bfloat162float(__ushort_as_bfloat16(h));
}

// Where item j of a token lies: which tensor (0 = q, 1 = k, 2 = v), and the element offset of its
// pair's first half within that tensor. kHalf = D/2 is a compile-time constant (32 or 64), so the
// head / pair split is a shift and a mask.
template <int kHalf>
struct TokenItem {
  int which;
  int64_t off;
  int p;
  __device__ __forceinline__ TokenItem(int64_t t, int j, int Hq, int Hkv) {
    const int nq = Hq * kHalf, nk = Hkv * kHalf;
    which = j < nq ? 0 : j < nq + nk ? 1 : 2;
    const int jj = which == 0 ? j : which == 1 ? j - nq : j - nq - nk;
    const int h = jj / kHalf;
    p = jj % kHalf;
    off = (t * (which == 0 ? Hq : Hkv) + h) * (2 * kHalf) + p;
  }
};

template <int kHalf>
__global__ void rope_qkv_bf16_kernel(const float* q, const float* k, const float* v, int64_t T,
                                     int Hq, int Hkv, const int32_t* positions, const float* cos,
                                     const float* sin, uint16_t* qb, uint16_t* kb, uint16_t* vb) {
  const int items = (Hq + 2 * Hkv) * kHalf;
  for (int64_t t = blockIdx.x; t < T; t += gridDim.x) {
    const int64_t row = int64_t(positions[t]) * kHalf;  // rope_item's table row, less the pair
    for (int j = threadIdx.x; j < items; j += blockDim.x) {
      const TokenItem<kHalf> it(t, j, Hq, Hkv);
      if (it.which == 2) {
        vb[it.off] = round_bf16(v[it.off]);
        vb[it.off + kHalf] = round_bf16(v[it.off + kHalf]);
        continue;
      }
      const float* x = it.which == 0 ? q : k;
      uint16_t* xb = it.which == 0 ? qb : kb;
      float a, b;  // rope_kernel's forward rotation of the pair, then f32_to_bf16's rounding
      rope_rotate(x[it.off], x[it.off + kHalf], cos[row + it.p], sin[row + it.p], a, b);
      xb[it.off] = round_bf16(a);
      xb[it.off + kHalf] = round_bf16(b);
    }
  }
}

template <int kHalf>
__global__ void rope_inverse_dqkv_kernel(const uint16_t* dqb, const uint16_t* dkb,
                                         const uint16_t* dvb, int64_t T, int Hq, int Hkv,
                                         const int32_t* positions, const float* cos,
                                         const float* sin, float* dq, float* dk, float* dv) {
  const int items = (Hq + 2 * Hkv) * kHalf;
  for (int64_t t = blockIdx.x; t < T; t += gridDim.x) {
    const int64_t row = int64_t(positions[t]) * kHalf;
    for (int j = threadIdx.x; j < items; j += blockDim.x) {
      const TokenItem<kHalf> it(t, j, Hq, Hkv);
      if (it.which == 2) {
        dv[it.off] = widen_bf16(dvb[it.off]);
        dv[it.off + kHalf] = widen_bf16(dvb[it.off + kHalf]);
        continue;
      }
      const uint16_t* gb = it.which == 0 ? dqb : dkb;
      float* g = it.which == 0 ? dq : dk;
      // bf16_to_f32 (exact), then rope_kernel's inverse rotation: the angle's sine negated.
      float a, b;
      rope_rotate(widen_bf16(gb[it.off]), widen_bf16(gb[it.off + kHalf]), cos[row + it.p],
                  -sin[row + it.p], a, b);
      g[it.off] = a;
      g[it.off + kHalf] = b;
    }
  }
}

unsigned token_blocks(int64_t T) { return unsigned(std::min<int64_t>(T, 65535)); }

void check_head_dim(const char* what, int64_t D) {
  GYRE_CHECK(D == 64 || D == 128, "cuda::{}: head dim {} (the bf16 attention takes 64 or 128)",
             what, D);
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

void copy_bf16(uint16_t* dst, const uint16_t* src, int64_t n) {
  GYRE_CUDA_CHECK(cudaMemcpyAsync(dst, src, size_t(n) * 2, cudaMemcpyDeviceToDevice, stream()));
}

// A bf16 buffer the forward writes and the attention reads: the caller's `dst` when given and
// 16-byte aligned, else pool scratch (a fresh block: aligned), copied to `dst` by finish().
struct Bf16Dest {
  std::optional<DeviceBuffer> scratch;
  uint16_t* dst;
  uint16_t* p;
  int64_t n;
  Bf16Dest(uint16_t* dst_, int64_t n_) : dst(dst_), p(dst_), n(n_) {
    if (!dst || !aligned16(dst)) p = scratch.emplace(size_t(n) * 2).as<uint16_t>();
  }
  void finish() {
    if (dst && p != dst) copy_bf16(dst, p, n);
  }
};

// The bf16 values the backward's attention reads for an operand: its bf16 buffer when 16-byte
// aligned (else a scratch copy), or its f32 values rounded into scratch — f32_to_bf16, the
// rounding attention_bwd_autocast applies.
struct Bf16Source {
  std::optional<DeviceBuffer> scratch;
  const uint16_t* p;
  Bf16Source(Bf16Operand op, int64_t n) : p(op.bf16) {
    if (op.bf16 && aligned16(op.bf16)) return;
    uint16_t* s = scratch.emplace(size_t(n) * 2).as<uint16_t>();
    if (op.bf16)
      copy_bf16(s, op.bf16, n);
    else
      f32_to_bf16(op.f32, s, n);
    p = s;
  }
};

}  // namespace

void rope_qkv_bf16(const float* q, const float* k, const float* v, int64_t T, int64_t Hq,
                   int64_t Hkv, int64_t D, const int32_t* positions, const float* cos,
                   const float* sin, uint16_t* qb, uint16_t* kb, uint16_t* vb) {
  if (T == 0) return;
  check_head_dim("rope_qkv_bf16", D);
  auto* kernel = D == 64 ? rope_qkv_bf16_kernel<32> : rope_qkv_bf16_kernel<64>;
  kernel<<<token_blocks(T), kThreads, 0, stream()>>>(q, k, v, T, int(Hq), int(Hkv), positions, cos,
                                                     sin, qb, kb, vb);
  GYRE_CUDA_LAUNCHED("rope_qkv_bf16");
}

void rope_inverse_dqkv_f32(const uint16_t* dqb, const uint16_t* dkb, const uint16_t* dvb, int64_t T,
                           int64_t Hq, int64_t Hkv, int64_t D, const int32_t* positions,
                           const float* cos, const float* sin, float* dq, float* dk, float* dv) {
  if (T == 0) return;
  check_head_dim("rope_inverse_dqkv_f32", D);
  auto* kernel = D == 64 ? rope_inverse_dqkv_kernel<32> : rope_inverse_dqkv_kernel<64>;
  kernel<<<token_blocks(T), kThreads, 0, stream()>>>(dqb, dkb, dvb, T, int(Hq), int(Hkv), positions,
                                                     cos, sin, dq, dk, dv);
  GYRE_CUDA_LAUNCHED("rope_inverse_dqkv_f32");
}

void rope_attention_fwd_bf16(const float* q, const float* k, const float* v,
                             const int32_t* positions, const float* cos, const float* sin,
                             const int32_t* cu_seqlens, int64_t B, int64_t max_seqlen, int64_t T,
                             int64_t Hq, int64_t Hkv, int64_t D, float scale, uint16_t* qb,
                             uint16_t* kb, uint16_t* vb, float* out, uint16_t* out_bf16,
                             float* lse) {
  if (T == 0) return;
  const int64_t nq = T * Hq * D, nkv = T * Hkv * D;
  Bf16Dest qd(qb, nq), kd(kb, nkv), vd(vb, nkv), od(out_bf16, nq);
  rope_qkv_bf16(q, k, v, T, Hq, Hkv, D, positions, cos, sin, qd.p, kd.p, vd.p);
  attention_fwd_bf16(qd.p, kd.p, vd.p, cu_seqlens, B, max_seqlen, T, Hq, Hkv, D, scale, od.p, lse);
  if (!out_bf16) bf16_to_f32(od.p, out, nq);  // attention_fwd_autocast's widening
  qd.finish();
  kd.finish();
  vd.finish();
  od.finish();
}

void rope_attention_bwd_bf16(Bf16Operand dout, Bf16Operand q, Bf16Operand k, Bf16Operand v,
                             Bf16Operand out, const float* lse, const int32_t* positions,
                             const float* cos, const float* sin, const int32_t* cu_seqlens,
                             int64_t B, int64_t max_seqlen, int64_t T, int64_t Hq, int64_t Hkv,
                             int64_t D, float scale, float* dq, float* dk, float* dv) {
  if (T == 0) return;
  const int64_t nq = T * Hq * D, nkv = T * Hkv * D;
  Bf16Source dos(dout, nq), qs(q, nq), ks(k, nkv), vs(v, nkv), os(out, nq);
  DeviceBuffer dqb(size_t(nq) * 2), dkb(size_t(nkv) * 2), dvb(size_t(nkv) * 2);
  attention_bwd_bf16(dos.p, qs.p, ks.p, vs.p, os.p, lse, cu_seqlens, B, max_seqlen, T, Hq, Hkv, D,
                     scale, dqb.as<uint16_t>(), dkb.as<uint16_t>(), dvb.as<uint16_t>());
  rope_inverse_dqkv_f32(dqb.as<uint16_t>(), dkb.as<uint16_t>(), dvb.as<uint16_t>(), T, Hq, Hkv, D,
                        positions, cos, sin, dq, dk, dv);
}

}  // namespace gyre::cuda
