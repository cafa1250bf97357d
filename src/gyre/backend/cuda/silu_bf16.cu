// SwiGLU over bf16 gate/up (kernels.h's silu_mul_fwd_bf16in / silu_mul_fwd_bf16 /
// silu_mul_bwd_bf16in / silu_mul_bwd_bf16 / silu_mul_bwd_bf16_dout): under bf16 autocast on CUDA
// the dense MLP's gate and up projections write bf16 (PyTorch autocast's linear output dtype;
// docs/cuda.md), so ops::silu_mul and ops::silu_mul_backward read them here, and the fused MLP past
// the decode GEMV's rows (fused_gemm.h's swiglu_mlp_residual_gemm_bf16) writes its activation
// straight in bf16 for the down projection.
//
// Bitwise contract: every element converts its bf16 gate and up to f32 exactly (bf16_value:
// bf16_to_f32's conversion) and evaluates silu.cuh's expression — the one elementwise.cu's f32
// kernels and gemv_fused.cu's epilogue evaluate — so the results are the f32 kernels' on the
// converted values, bit for bit. silu_mul_fwd_bf16 stores that f32 value rounded as f32_to_bf16
// does (bf16_rn_bits, bf16_bits.cuh: round to nearest even, NaN kept a NaN); nothing after the
// product could contract with it (it goes straight into the conversion), so its bits are
// f32_to_bf16 of silu_mul_fwd_bf16in's output. Likewise silu_mul_bwd_bf16 of silu_mul_bwd_bf16in's.
// Each direction's f32-out and bf16-out kernels run one body (silu_mul_fwd_groups /
// silu_mul_bwd_groups): the same statements, differing only in out_value's store. The launch shape
// (grid-stride, as elementwise.cu, 4 elements a thread where aligned) does not enter any element's
// arithmetic.
//
// silu_mul_bwd_bf16_packed (pack_bf16.h) runs the bf16-out backward body with another index map
// for the stores only (StridedIndex: dgate and dup rows into one packed [M, ld] buffer at column
// offsets 0 and off, the gate/up linears' one dX GEMM operand): the same values, bit for bit.
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "gyre/backend/cuda/bf16_bits.cuh"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/pack_bf16.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/backend/cuda/silu.cuh"
#include "gyre/core/error.h"

namespace gyre::cuda {

namespace {

constexpr int kThreads = 256;

// Elements per thread and iteration: kVec where n is a multiple of it and every pointer allows
// the wide accesses (8-byte bf16 loads, 16-byte f32 loads/stores), else 1. Why: a thread's bf16
// loads are half the bytes of the f32 kernel's, so one element at a time keeps too few bytes in
// flight per SM to stream at full bandwidth; four at a time keep more than the f32 kernel does.
// Each element's arithmetic is the same whatever the width (the loop over j is unrolled: the
// same per-element statements), so the width never changes a bit.
constexpr int kVec = 4;

template <int V, typename T>
__device__ __forceinline__ void load(const T* p, T (&v)[V]) {
  if constexpr (V == 1) {
    v[0] = p[0];
  } else if constexpr (sizeof(T) == 2) {
    const uint2 w = *reinterpret_cast<const uint2*>(p);  // 4 bf16
    v[0] = T(w.x & 0xffffu), v[1] = T(w.x >> 16), v[2] = T(w.y & 0xffffu), v[3] = T(w.y >> 16);
  } else {
    const float4 w = *reinterpret_cast<const float4*>(p);
    v[0] = w.x, v[1] = w.y, v[2] = w.z, v[3] = w.w;
  }
}

template <int V, typename T>
__device__ __forceinline__ void store(T* p, const T (&v)[V]) {
  if constexpr (V == 1) {
    p[0] = v[0];
  } else if constexpr (sizeof(T) == 2) {
    *reinterpret_cast<uint2*>(p) = make_uint2(uint32_t(v[0]) | (uint32_t(v[1]) << 16),
                                              uint32_t(v[2]) | (uint32_t(v[3]) << 16));
  } else {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  }
}

static_assert(kVec == 4, "load/store move 4 elements");

// Grid-stride over groups of V elements (n a multiple of V).
#define GYRE_FOR_GROUPS(i, n, V)                                                    \
  for (int64_t i = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) * (V); i < (n); \
       i += int64_t(gridDim.x) * blockDim.x * (V))

// An f32 result as an OutT output element: the value itself (f32 outputs) or rounded as
// f32_to_bf16 rounds (bf16_rn_bits; bf16 outputs). Each result goes straight into this, so the
// f32 and bf16 kernels of a direction evaluate the same statements and differ only in the store.
template <typename OutT>
__device__ __forceinline__ OutT out_value(float v) {
  static_assert(std::is_same_v<OutT, float> || std::is_same_v<OutT, uint16_t>);
  if constexpr (std::is_same_v<OutT, float>)
    return v;
  else
    return uint16_t(bf16_rn_bits(v));
}

// The forward kernels' body: silu_mul over bf16 gate/up, each product stored as OutT.
template <int V, typename OutT>
__device__ __forceinline__ void silu_mul_fwd_groups(const uint16_t* gate, const uint16_t* up,
                                                    OutT* out, int64_t n) {
  GYRE_FOR_GROUPS(i, n, V) {
    uint16_t g[V], u[V];
    OutT o[V];
    load<V>(gate + i, g);
    load<V>(up + i, u);
#pragma unroll
    for (int j = 0; j < V; ++j)
      o[j] = out_value<OutT>(silu_mul_value(bf16_value(g[j]), bf16_value(u[j])));
    store<V>(out + i, o);
  }
}

// An input element as f32: itself, or a bf16's exact widening (bf16_value).
template <typename InT>
__device__ __forceinline__ float in_value(InT v) {
  if constexpr (std::is_same_v<InT, float>)
    return v;
  else
    return bf16_value(v);
}

// Where element i (the flat index into the row-major [rows, cols] dout / gate / up) of dgate and
// dup is stored: i itself (the plain kernels), or row i / cols at row stride ld (the packed
// kernel). With V > 1, cols % V == 0, so a group of V never straddles two rows and lands on V
// consecutive outputs either way. A cursor over the grid-stride loop: start() at the thread's
// first index, advance() by the loop's stride — the packed one divides once per thread and then
// adds the stride's (rows, columns), since a 64-bit division per group cost more than the pass it
// saves (~0.1 ms a layer at [16384, 8960] on the H200).
struct FlatIndex {
  __device__ __forceinline__ void start(int64_t, int64_t) {}
  __device__ __forceinline__ int64_t operator()(int64_t i) const { return i; }
  __device__ __forceinline__ void advance() {}
};
struct StridedIndex {
  int64_t cols, ld;
  int64_t r = 0, c = 0, step_r = 0, step_c = 0;  // the current element's row and column
  __device__ __forceinline__ void start(int64_t i, int64_t stride) {
    r = i / cols, c = i - r * cols;
    step_r = stride / cols, step_c = stride - step_r * cols;
  }
  __device__ __forceinline__ int64_t operator()(int64_t) const { return r * ld + c; }
  __device__ __forceinline__ void advance() {
    r += step_r, c += step_c;
    if (c >= cols) c -= cols, ++r;
  }
};

// The backward kernels' body: silu_mul_grad over bf16 gate/up and an f32 or bf16 dout (widened
// exactly), each gradient stored as OutT at dgate / dup + at(i).
template <int V, typename DinT, typename OutT, typename Index = FlatIndex>
__device__ __forceinline__ void silu_mul_bwd_groups(const DinT* dout, const uint16_t* gate,
                                                    const uint16_t* up, OutT* dgate, OutT* dup,
                                                    int64_t n, Index at = {}) {
  at.start((blockIdx.x * int64_t(blockDim.x) + threadIdx.x) * V,
           int64_t(gridDim.x) * blockDim.x * V);
  GYRE_FOR_GROUPS(i, n, V) {
    uint16_t g[V], u[V];
    DinT d[V];
    OutT dgo[V], duo[V];
    load<V>(dout + i, d);
    load<V>(gate + i, g);
    load<V>(up + i, u);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      float dg, du;
      silu_mul_grad(in_value(d[j]), bf16_value(g[j]), bf16_value(u[j]), dg, du);
      dgo[j] = out_value<OutT>(dg), duo[j] = out_value<OutT>(du);
    }
    const int64_t o = at(i);
    store<V>(dgate + o, dgo);
    store<V>(dup + o, duo);
    at.advance();
  }
}

// bf16 gate/up, f32 out: ops::silu_mul on the autocast MLP's pre-activations.
template <int V>
__global__ void silu_mul_fwd_bf16in_kernel(const uint16_t* gate, const uint16_t* up, float* out,
                                           int64_t n) {
  silu_mul_fwd_groups<V>(gate, up, out, n);
}

// bf16 gate/up, bf16 out: the fused MLP's activation, the down projection's bf16 operand.
template <int V>
__global__ void silu_mul_bf16_kernel(const uint16_t* gate, const uint16_t* up, uint16_t* out,
                                     int64_t n) {
  silu_mul_fwd_groups<V>(gate, up, out, n);
}

// bf16 gate/up, f32 dout / dgate / dup: the training backward over the saved bf16 gate/up.
template <int V>
__global__ void silu_mul_bwd_bf16in_kernel(const float* dout, const uint16_t* gate,
                                           const uint16_t* up, float* dgate, float* dup,
                                           int64_t n) {
  silu_mul_bwd_groups<V, float>(dout, gate, up, dgate, dup, n);
}

// bf16 gate/up, f32 dout, bf16 dgate / dup: the backward whose gradients only feed the gate/up
// linears' bf16 GEMMs (no bias), written rounded as f32_to_bf16 would round
// silu_mul_bwd_bf16in's f32 outputs — the same silu_mul_grad values, each going straight into
// the conversion.
template <int V>
__global__ void silu_mul_bwd_bf16_kernel(const float* dout, const uint16_t* gate,
                                         const uint16_t* up, uint16_t* dgate, uint16_t* dup,
                                         int64_t n) {
  silu_mul_bwd_groups<V, float>(dout, gate, up, dgate, dup, n);
}

// Everything bf16: the training backward whose dout (down_proj's dx) came out of its GEMM rounded
// to bf16 — silu_mul_bwd_bf16 of that dout widened exactly.
template <int V>
__global__ void silu_mul_bwd_bf16_dout_kernel(const uint16_t* dout, const uint16_t* gate,
                                              const uint16_t* up, uint16_t* dgate, uint16_t* dup,
                                              int64_t n) {
  silu_mul_bwd_groups<V, uint16_t>(dout, gate, up, dgate, dup, n);
}

// silu_mul_bwd_bf16 (DinT float) / _dout (DinT uint16_t) with dgate and dup as the column ranges
// [0, cols) and [off, off + cols) of the packed rows (pack_bf16.h's gate/up layout).
template <int V, typename DinT>
__global__ void silu_mul_bwd_bf16_packed_kernel(const DinT* dout, const uint16_t* gate,
                                                const uint16_t* up, uint16_t* packed, int64_t off,
                                                StridedIndex at, int64_t n) {
  silu_mul_bwd_groups<V, DinT>(dout, gate, up, packed, packed + off, n, at);
}

#undef GYRE_FOR_GROUPS

// Whether n and every pointer allow kVec-wide accesses (16 bytes covers both element sizes).
bool wide(int64_t n, std::initializer_list<const void*> ptrs) {
  if (n % kVec != 0) return false;
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

// Launches kernel<kVec> over n / kVec groups where wide(), else kernel<1> over n elements.
template <typename Launch>
void launch(int64_t n, bool w, const char* what, Launch&& l) {
  if (n == 0) return;
  if (w)
    l(std::integral_constant<int, kVec>{}, grid_for(n / kVec, kThreads));
  else
    l(std::integral_constant<int, 1>{}, grid_for(n, kThreads));
  GYRE_CUDA_LAUNCHED(what);
}

}  // namespace

void silu_mul_fwd_bf16in(const uint16_t* gate, const uint16_t* up, float* out, int64_t n) {
  launch(n, wide(n, {gate, up, out}), "silu_mul_fwd_bf16in", [&](auto v, unsigned grid) {
    silu_mul_fwd_bf16in_kernel<decltype(v)::value>
        <<<grid, kThreads, 0, stream()>>>(gate, up, out, n);
  });
}

void silu_mul_fwd_bf16(const uint16_t* gate, const uint16_t* up, uint16_t* out, int64_t n) {
  launch(n, wide(n, {gate, up, out}), "silu_mul_fwd_bf16", [&](auto v, unsigned grid) {
    silu_mul_bf16_kernel<decltype(v)::value><<<grid, kThreads, 0, stream()>>>(gate, up, out, n);
  });
}

void silu_mul_bwd_bf16in(const float* dout, const uint16_t* gate, const uint16_t* up, float* dgate,
                         float* dup, int64_t n) {
  launch(n, wide(n, {dout, gate, up, dgate, dup}), "silu_mul_bwd_bf16in",
         [&](auto v, unsigned grid) {
           silu_mul_bwd_bf16in_kernel<decltype(v)::value>
               <<<grid, kThreads, 0, stream()>>>(dout, gate, up, dgate, dup, n);
         });
}

void silu_mul_bwd_bf16(const float* dout, const uint16_t* gate, const uint16_t* up, uint16_t* dgate,
                       uint16_t* dup, int64_t n) {
  launch(n, wide(n, {dout, gate, up, dgate, dup}), "silu_mul_bwd_bf16", [&](auto v, unsigned grid) {
    silu_mul_bwd_bf16_kernel<decltype(v)::value>
        <<<grid, kThreads, 0, stream()>>>(dout, gate, up, dgate, dup, n);
  });
}

void silu_mul_bwd_bf16_dout(const uint16_t* dout, const uint16_t* gate, const uint16_t* up,
                            uint16_t* dgate, uint16_t* dup, int64_t n) {
  launch(n, wide(n, {dout, gate, up, dgate, dup}), "silu_mul_bwd_bf16_dout",
         [&](auto v, unsigned grid) {
           silu_mul_bwd_bf16_dout_kernel<decltype(v)::value>
               <<<grid, kThreads, 0, stream()>>>(dout, gate, up, dgate, dup, n);
         });
}

void silu_mul_bwd_bf16_packed(const float* dout, const uint16_t* dout_bf16, const uint16_t* gate,
                              const uint16_t* up, int64_t M, int64_t I, uint16_t* packed,
                              int64_t off, int64_t ld) {
  GYRE_CHECK((dout == nullptr) != (dout_bf16 == nullptr) && I <= off && off + I <= ld,
             "silu_mul_bwd_bf16_packed: pass exactly one dout, and off >= I, ld >= off + I "
             "(I {}, off {}, ld {})",
             I, off, ld);
  if (M == 0) return;
  cudaStream_t s = stream();
  // The padding columns: zeros, which the dX GEMM multiplies by its zero weight rows (bits left
  // from an earlier use of the block could be Inf/NaN: 0 · Inf = NaN). None for I % 128 == 0.
  auto zero_cols = [&](int64_t from, int64_t to) {
    if (to > from)
      GYRE_CUDA_CHECK(
          cudaMemset2DAsync(packed + from, size_t(ld) * 2, 0, size_t(to - from) * 2, size_t(M), s));
  };
  zero_cols(I, off);
  zero_cols(off + I, ld);
  const int64_t n = M * I;
  const StridedIndex at{I, ld};
  // Wide where every group of 4 stays in one row (I % 4) and every output row start keeps the
  // stores' alignment (ld % 4 with 16-byte packed and packed + off).
  const bool w =
      I % kVec == 0 && ld % kVec == 0 &&
      wide(n, {dout ? static_cast<const void*>(dout) : dout_bf16, gate, up, packed, packed + off});
  launch(n, w, "silu_mul_bwd_bf16_packed", [&](auto v, unsigned grid) {
    constexpr int V = decltype(v)::value;
    if (dout)
      silu_mul_bwd_bf16_packed_kernel<V, float>
          <<<grid, kThreads, 0, s>>>(dout, gate, up, packed, off, at, n);
    else
      silu_mul_bwd_bf16_packed_kernel<V, uint16_t>
          <<<grid, kThreads, 0, s>>>(dout_bf16, gate, up, packed, off, at, n);
  });
}

}  // namespace gyre::cuda
