// Packing several f32 matrices with M rows side by side into one bf16 buffer, and the grouped
// autocast linear backward built on it (pack_bf16.h): linear_group_bwd_autocast packs, then runs
// linear_group_bwd_packed's GEMMs, which a caller whose dy comes packed already calls directly.
//
// The pack kernel's work item is 8 consecutive columns of one row inside one member's range (its
// width and column are multiples of 8, so an item never straddles two members): up to 8 f32 loads
// (two float4 when the source row slice is 16-byte aligned and whole, else masked scalars), one
// 16-byte store. Each value goes through __float2bfloat16_rn, the conversion of f32_to_bf16
// (elementwise.cu), so the packed bits are those f32_to_bf16 writes for the same values.
//
// Scratch lifetime as in autocast.cc: pool buffers return to the pool when the host function
// returns while kernels may still be queued; the pool reuses a block on the same stream only.
#include <cuda_bf16.h>

#include <algorithm>
#include <optional>
#include <vector>

#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/bf16_bits.cuh"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/pack_bf16.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/error.h"

namespace gyre::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kMaxMembers = 8;  // members per launch (kernel parameter space)
constexpr int kVec = 8;         // columns per work item: one 16-byte bf16 store

struct PackLaunch {
  PackBf16Member m[kMaxMembers];
  int64_t first_group[kMaxMembers + 1];  // prefix sums of width / kVec
  int count = 0;
};

__global__ void pack_bf16_kernel(PackLaunch p, int64_t M, int64_t ld, uint16_t* dst) {
  const int64_t groups = p.first_group[p.count], items = M * groups;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < items;
       j += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = j / groups, g = j - r * groups;
    int i = 0;
    while (i + 1 < p.count && g >= p.first_group[i + 1]) ++i;
    const PackBf16Member& m = p.m[i];
    const int64_t c = (g - p.first_group[i]) * kVec;  // column within the member
    float v[kVec];
    const float* src = m.src + r * m.n + c;
    if (c + kVec <= m.n && (reinterpret_cast<uintptr_t>(src) & 15) == 0) {
      const float4 a = reinterpret_cast<const float4*>(src)[0];
      const float4 b = reinterpret_cast<const float4*>(src)[1];
      v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z,
      v[7] = b.w;
    } else {
#pragma unroll
      for (int t = 0; t < kVec; ++t) v[t] = c + t < m.n ? src[t] : 0.0f;  // padding: +0
    }
    uint4 out;
    out.x = bf16_rn_pair(v[0], v[1]);
    out.y = bf16_rn_pair(v[2], v[3]);
    out.z = bf16_rn_pair(v[4], v[5]);
    out.w = bf16_rn_pair(v[6], v[7]);
    *reinterpret_cast<uint4*>(dst + r * ld + m.col + c) = out;
  }
}

int64_t round_up(int64_t n, int64_t a) { return (n + a - 1) / a * a; }

}  // namespace

void pack_bf16_columns(const PackBf16Member* members, int64_t count, int64_t M, int64_t ld,
                       uint16_t* dst) {
  GYRE_CHECK(ld % kVec == 0 && reinterpret_cast<uintptr_t>(dst) % 16 == 0,
             "pack_bf16_columns: ld {} must be a multiple of {} and dst 16-byte aligned", ld, kVec);
  for (int64_t first = 0; first < count; first += kMaxMembers) {
    PackLaunch p;
    p.count = int(std::min<int64_t>(kMaxMembers, count - first));
    p.first_group[0] = 0;
    for (int i = 0; i < p.count; ++i) {
      const PackBf16Member& m = members[first + i];
      GYRE_CHECK(
          m.col % kVec == 0 && m.width % kVec == 0 && m.n <= m.width && m.col + m.width <= ld,
          "pack_bf16_columns: member {} (n {}, col {}, width {}) does not fit ld {} in "
          "{}-column groups",
          first + i, m.n, m.col, m.width, ld, kVec);
      p.m[i] = m;
      p.first_group[i + 1] = p.first_group[i] + m.width / kVec;
    }
    const int64_t items = M * p.first_group[p.count];
    if (items == 0) continue;
    pack_bf16_kernel<<<grid_for(items, kThreads), kThreads, 0, stream()>>>(p, M, ld, dst);
    GYRE_CUDA_LAUNCHED("pack_bf16");
  }
}

void linear_group_bwd_packed(const uint16_t* dy, int64_t ld, const PackedBwdMember* members,
                             int64_t count, const float* x, const uint16_t* x_bf16, int64_t M,
                             int64_t K, float* dx, bool accumulate_dx, const uint16_t* w_stacked) {
  GYRE_CHECK(M > 0 && K > 0 && ld > 0 && ld % kPackAlign == 0,
             "linear_group_bwd_packed: empty product or unaligned ld (M {}, K {}, ld {})", M, K,
             ld);
  bool any_dw = false;
  for (int64_t i = 0, end = 0; i < count; ++i) {
    const PackedBwdMember& m = members[i];
    if (m.n == 0) continue;
    GYRE_CHECK(m.col % kPackAlign == 0 && m.col >= end && m.col + m.n <= ld,
               "linear_group_bwd_packed: member {} (col {}, n {}) is unaligned, overlaps the "
               "previous member (which ends at {}) or passes ld {}",
               i, m.col, m.n, end, ld);
    end = m.col + m.n;
    any_dw = any_dw || m.dw != nullptr;
  }
  if (!dx && !any_dw) return;
  cudaStream_t s = stream();
  // The slices dy + col_i must keep the 256-byte alignment the cuBLASLt plans assume (pack_bf16.h):
  // a pool buffer has it; anything else is copied into one (same values, same products).
  std::optional<DeviceBuffer> dys;
  if (reinterpret_cast<uintptr_t>(dy) % 256 != 0) {
    dys.emplace(size_t(M) * size_t(ld) * 2);
    GYRE_CUDA_CHECK(
        cudaMemcpyAsync(dys->as<uint16_t>(), dy, size_t(M * ld) * 2, cudaMemcpyDeviceToDevice, s));
    dy = dys->as<uint16_t>();
  }
  if (dx && w_stacked) {
    // The caller's stack must be exactly the members' rows: no gap for zero rows.
    int64_t covered = 0;
    for (int64_t i = 0; i < count; ++i) {
      GYRE_CHECK(members[i].col == covered,
                 "linear_group_bwd_packed: w_stacked given, but member {} starts at column {} "
                 "instead of {} (a stacked weight cannot hold the zero rows of a gap)",
                 i, members[i].col, covered);
      covered += members[i].n;
    }
    GYRE_CHECK(covered == ld,
               "linear_group_bwd_packed: w_stacked given, but the members cover {} of ld {} "
               "columns",
               covered, ld);
    gemm_bf16(false, false, M, K, ld, 1.0f, dy, ld, w_stacked, K, accumulate_dx ? 1.0f : 0.0f, dx,
              K, false);
  } else if (dx) {
    // The weights stacked [ld, K]: each member's bf16 copy (or its f32 weight rounded as
    // linear_bwd_autocast rounds it) at rows [col_i, col_i + n_i), every other row zero — 0 · 0
    // adds exact zeros to dX, while uninitialised scratch could hold Inf/NaN bits (0 · Inf = NaN).
    DeviceBuffer wp(size_t(ld) * size_t(K) * 2);
    uint16_t* const w = wp.as<uint16_t>();
    auto zero_rows = [&](int64_t from, int64_t to) {
      if (to > from)
        GYRE_CUDA_CHECK(cudaMemsetAsync(w + from * K, 0, size_t((to - from) * K) * 2, s));
    };
    int64_t end = 0;  // rows [0, end) are written
    for (int64_t i = 0; i < count; ++i) {
      const PackedBwdMember& m = members[i];
      if (m.n == 0) continue;
      zero_rows(end, m.col);
      if (m.w_bf16)
        GYRE_CUDA_CHECK(cudaMemcpyAsync(w + m.col * K, m.w_bf16, size_t(m.n * K) * 2,
                                        cudaMemcpyDeviceToDevice, s));
      else
        f32_to_bf16(m.w, w + m.col * K, m.n * K);
      end = m.col + m.n;
    }
    zero_rows(end, ld);
    gemm_bf16(false, false, M, K, ld, 1.0f, dy, ld, w, K, accumulate_dx ? 1.0f : 0.0f, dx, K,
              false);
  }
  if (any_dw) {
    // x's bf16 operand, once for all members: f32_to_bf16 of an f32 x into scratch (what each
    // per-member call rounds), or a bf16 x as is — copied to scratch when off the 256-byte
    // alignment the plans assume (autocast.cc's aligned_bf16).
    std::optional<DeviceBuffer> xs;
    const uint16_t* xb = x_bf16;
    if (!xb || reinterpret_cast<uintptr_t>(xb) % 256 != 0) {
      xs.emplace(size_t(M) * size_t(K) * 2);
      if (xb)
        GYRE_CUDA_CHECK(cudaMemcpyAsync(xs->as<uint16_t>(), xb, size_t(M * K) * 2,
                                        cudaMemcpyDeviceToDevice, s));
      else
        f32_to_bf16(x, xs->as<uint16_t>(), M * K);
      xb = xs->as<uint16_t>();
    }
    // dW_i += dy_i^T x (= with dw_overwrite): linear_bwd_autocast's GEMM with the slice of the
    // packed dy (256-byte aligned at col_i) and leading dimension ld.
    for (int64_t i = 0; i < count; ++i) {
      const PackedBwdMember& m = members[i];
      if (m.n == 0 || !m.dw) continue;
      gemm_bf16(true, false, m.n, K, M, 1.0f, dy + m.col, ld, xb, K, m.dw_overwrite ? 0.0f : 1.0f,
                m.dw, K, false);
    }
  }
}

void linear_group_bwd_autocast(const LinearGroupBwdMember* members, int64_t count, const float* x,
                               const uint16_t* x_bf16, int64_t M, int64_t K, float* dx,
                               bool accumulate_dx) {
  GYRE_CHECK(M > 0 && K > 0 && count >= 1,
             "linear_group_bwd_autocast: empty product (M {}, K {}, {} members)", M, K, count);
  // Member i's columns in the packed dy (and rows in the packed weight): [col_i, col_i + n_i),
  // then zero padding up to the next multiple of kPackAlign (pack_bf16.h: 256-byte aligned slices).
  std::vector<PackBf16Member> pack;
  std::vector<PackedBwdMember> packed(static_cast<size_t>(count));
  int64_t ld = 0;
  bool any_dw = false;
  for (int64_t i = 0; i < count; ++i) {
    const LinearGroupBwdMember& m = members[i];
    packed[size_t(i)] = {m.w, m.w_bf16, m.n, ld, m.dw, m.dw_overwrite};
    if (m.n == 0) continue;  // nothing to add anywhere
    const int64_t width = round_up(m.n, kPackAlign);
    pack.push_back({m.dy, m.n, ld, width});
    ld += width;
    any_dw = any_dw || m.dw != nullptr;
  }
  GYRE_CHECK(ld > 0, "linear_group_bwd_autocast: every member has N = 0");
  if (dx || any_dw) {
    DeviceBuffer dyp(size_t(M) * size_t(ld) * 2);
    pack_bf16_columns(pack.data(), int64_t(pack.size()), M, ld, dyp.as<uint16_t>());
    linear_group_bwd_packed(dyp.as<uint16_t>(), ld, packed.data(), count, x, x_bf16, M, K, dx,
                            accumulate_dx);
  }
  for (int64_t i = 0; i < count; ++i) {
    const LinearGroupBwdMember& m = members[i];
    if (m.n > 0 && m.db) column_sums_add(m.dy, M, m.n, m.db);  // f32 dy, as the per-member path
  }
}

}  // namespace gyre::cuda
