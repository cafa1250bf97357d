// Row-indexed and per-row CUDA kernels: embedding lookup and its scatter-add backward, MoE row
// gather / weighted scatter-add, row dots, RMSNorm (HF LlamaRMSNorm) forward/backward and RoPE
// (HF rotate_half).
//
// Invariants: scatter-adds never use atomics: the host groups the source rows of each destination
// row (counting sort of the ids, stable), and one block owns one destination row and adds its
// sources in ascending source order, which is the CPU reference's order, so the result is
// deterministic and matches it. Row statistics (RMS, dots) accumulate in f64 like the CPU.
#include <algorithm>
#include <vector>

#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/device_util.cuh"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/rms_bwd_row.cuh"
#include "gyre/backend/cuda/rms_row.cuh"
#include "gyre/backend/cuda/rope_rotate.cuh"
#include "gyre/backend/cuda/runtime.h"

namespace gyre::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kRowChunk = rms_bwd::kDwRowChunk;  // the dw partials' chunking

__global__ void gather_rows_kernel(const int32_t* idx, int64_t n, const float* src, int64_t H,
                                   float* out) {
  const int64_t total = n * H;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / H, c = i - r * H;
    out[i] = src[int64_t(idx[r]) * H + c];
  }
}

// Destination u = dests[u] gets Σ_{j in [off[u], off[u+1])} scale[srcs[j]] src[srcs[j]] in order.
__global__ void scatter_grouped_kernel(const float* src, int64_t H, const int32_t* dests,
                                       const int32_t* off, const int32_t* srcs, int64_t U,
                                       const float* scale, float* out) {
  for (int64_t u = blockIdx.x; u < U; u += gridDim.x) {
    float* o = out + int64_t(dests[u]) * H;
    const int32_t j0 = off[u], j1 = off[u + 1];
    for (int64_t c = threadIdx.x; c < H; c += blockDim.x) {
      float acc = o[c];
      for (int32_t j = j0; j < j1; ++j) {
        const int64_t i = srcs[j];
        acc = scale ? acc + scale[i] * src[i * H + c] : acc + src[i * H + c];
      }
      o[c] = acc;
    }
  }
}

__global__ void row_dot_kernel(const float* a, const float* b, int64_t n, int64_t H, float* out) {
  const int warps = blockDim.x >> 5, lane = threadIdx.x & 31;
  for (int64_t r = blockIdx.x * int64_t(warps) + (threadIdx.x >> 5); r < n;
       r += int64_t(gridDim.x) * warps) {
    double s = 0;
    for (int64_t c = lane; c < H; c += 32) s += double(a[r * H + c]) * double(b[r * H + c]);
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) out[r] = float(s);
  }
}

// Launched with rms::kThreads threads: the row arithmetic is rms_row.cuh's, shared with the
// RMSNorm prologue of the fused decode GEMVs (gemv_fused.cu), which must match it bitwise.
__global__ void __launch_bounds__(rms::kThreads)
    rms_fwd_kernel(const float* x, const float* w, int64_t R, int64_t H, double eps, float* y,
                   float* rstd) {
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const float* xr = x + r * H;
    const float rs = rms::row_rstd(xr, H, eps);
    if (threadIdx.x == 0) rstd[r] = rs;
    // HF: weight * (x * rsqrt(var + eps)) — the normalised value is rounded before the weight.
    for (int64_t c = threadIdx.x; c < H; c += rms::kThreads)
      y[r * H + c] = rms::normed(xr[c], rs, w[c]);
  }
}

// Launched with rms_bwd::kThreads threads: the element arithmetic, the dot's column-to-thread map
// and its block reduction are rms_bwd_row.cuh's, shared with rms_bwd_fused.cu's
// rms_norm_bwd_add, which must match this kernel (and the dw kernels below) bitwise.
__global__ void __launch_bounds__(rms_bwd::kThreads)
    rms_bwd_dx_kernel(const float* dy, const float* x, const float* w, const float* rstd, int64_t R,
                      int64_t H, float* dx) {
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const float* xr = x + r * H;
    const float* dyr = dy + r * H;
    const float rs = rstd[r];
    double dot[1] = {0};
    for (int64_t c = threadIdx.x; c < H; c += rms_bwd::kThreads)
      dot[0] = rms_bwd::dot_step(dot[0], dyr[c], w[c], rms_bwd::x_hat(xr[c], rs));
    rms_bwd::block_sum_n(dot);
    const float mean = rms_bwd::row_mean(dot[0], H);
    for (int64_t c = threadIdx.x; c < H; c += rms_bwd::kThreads)
      dx[r * H + c] = rms_bwd::dx_elem(dyr[c], w[c], rms_bwd::x_hat(xr[c], rs), rs, mean);
  }
}

// Column c's partial over one chunk of kRowChunk rows (rms_bwd_row.cuh's dw contract).
__global__ void rms_dw_partial_kernel(const float* dy, const float* x, const float* rstd, int64_t R,
                                      int64_t H, double* part) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= H) return;
  // Grid-stride over chunks in y: past 65535 chunks (8.4M rows) a block row takes several.
  const int64_t chunks = (R + kRowChunk - 1) / kRowChunk;
  for (int64_t k = blockIdx.y; k < chunks; k += gridDim.y) {
    const int64_t r0 = k * kRowChunk, r1 = min(R, r0 + kRowChunk);
    double s = 0;
    for (int64_t r = r0; r < r1; ++r)
      s = rms_bwd::dw_step(s, dy[r * H + c], rms_bwd::x_hat(x[r * H + c], rstd[r]));
    part[k * H + c] = s;
  }
}

__global__ void finish_add_kernel(const double* part, int64_t chunks, int64_t C, float* out) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  out[c] = rms_bwd::dw_finish(part, chunks, C, c, out[c]);
}

__global__ void rope_kernel(float* x, int64_t tokens, int64_t H, int64_t D,
                            const int32_t* positions, const float* cos, const float* sin,
                            bool inverse) {
  const int64_t half = D / 2, total = tokens * H * half;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    // The rotation shared with rope_pair.cu and rope_kv_write.cu (rope_rotate.cuh); the inverse
    // rotation is the one by -angle.
    const rope_detail::RopeItem r = rope_detail::rope_item(i, H, half, positions);
    const float c = cos[r.table_row], s = inverse ? -sin[r.table_row] : sin[r.table_row];
    rope_detail::rope_rotate_pair(x + r.th * D + r.p, half, c, s);
  }
}

// Groups source rows by destination (stable) and runs the ordered scatter kernel.
void scatter_grouped(const float* src, int64_t H, const int32_t* idx_host, const float* scale,
                     int64_t n, float* out) {
  if (n == 0 || H == 0) return;
  std::vector<int32_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[size_t(i)] = int32_t(i);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return idx_host[a] < idx_host[b]; });
  std::vector<int32_t> dests, off;
  for (int64_t j = 0; j < n; ++j) {
    const int32_t d = idx_host[order[size_t(j)]];
    if (dests.empty() || dests.back() != d) {
      dests.push_back(d);
      off.push_back(int32_t(j));
    }
  }
  off.push_back(int32_t(n));
  const int64_t U = int64_t(dests.size());
  DeviceBuffer buf(size_t(U + (U + 1) + n) * sizeof(int32_t));
  int32_t* d_dests = buf.as<int32_t>();
  int32_t* d_off = d_dests + U;
  int32_t* d_srcs = d_off + U + 1;
  cudaStream_t s = stream();
  GYRE_CUDA_CHECK(cudaMemcpyAsync(d_dests, dests.data(), size_t(U) * 4, cudaMemcpyHostToDevice, s));
  GYRE_CUDA_CHECK(cudaMemcpyAsync(d_off, off.data(), size_t(U + 1) * 4, cudaMemcpyHostToDevice, s));
  GYRE_CUDA_CHECK(cudaMemcpyAsync(d_srcs, order.data(), size_t(n) * 4, cudaMemcpyHostToDevice, s));
  // Pageable sources: the copies above have been staged when they return, the vectors may go.
  const int threads = int(std::min<int64_t>(kThreads, ((H + 31) / 32) * 32));
  scatter_grouped_kernel<<<unsigned(std::min<int64_t>(U, 65535)), threads, 0, s>>>(
      src, H, d_dests, d_off, d_srcs, U, scale, out);
  GYRE_CUDA_LAUNCHED("scatter_grouped");
}

unsigned row_blocks(int64_t R) {
  return unsigned(std::max<int64_t>(1, std::min<int64_t>(R, 65535)));
}

}  // namespace

void embedding_fwd(const int32_t* ids, int64_t n, const float* table, int64_t H, float* out) {
  gather_rows(table, H, ids, n, out);
}

void embedding_bwd(const int32_t* ids_host, int64_t n, const float* dout, int64_t H,
                   float* dtable) {
  scatter_grouped(dout, H, ids_host, nullptr, n, dtable);
}

void gather_rows(const float* src, int64_t H, const int32_t* idx, int64_t n, float* out) {
  if (n * H == 0) return;
  gather_rows_kernel<<<grid_for(n * H, kThreads), kThreads, 0, stream()>>>(idx, n, src, H, out);
  GYRE_CUDA_LAUNCHED("gather_rows");
}

void scatter_add_rows(const float* src, int64_t H, const int32_t* idx_host, const float* scale,
                      int64_t n, float* out) {
  scatter_grouped(src, H, idx_host, scale, n, out);
}

void row_dot(const float* a, const float* b, int64_t n, int64_t H, float* out) {
  if (n == 0) return;
  row_dot_kernel<<<grid_for(n, kThreads / 32), kThreads, 0, stream()>>>(a, b, n, H, out);
  GYRE_CUDA_LAUNCHED("row_dot");
}

void rms_norm_fwd(const float* x, const float* w, int64_t R, int64_t H, double eps, float* y,
                  float* rstd) {
  if (R == 0) return;
  rms_fwd_kernel<<<row_blocks(R), rms::kThreads, 0, stream()>>>(x, w, R, H, eps, y, rstd);
  GYRE_CUDA_LAUNCHED("rms_norm_fwd");
}

void rms_norm_bwd(const float* dy, const float* x, const float* w, const float* rstd, int64_t R,
                  int64_t H, float* dx, float* dw) {
  cudaStream_t s = stream();
  if (dx && R > 0) {
    rms_bwd_dx_kernel<<<row_blocks(R), rms_bwd::kThreads, 0, s>>>(dy, x, w, rstd, R, H, dx);
    GYRE_CUDA_LAUNCHED("rms_norm_bwd_dx");
  }
  if (dw && R > 0) {
    const int64_t chunks = (R + kRowChunk - 1) / kRowChunk;
    DeviceBuffer part(size_t(chunks * H) * sizeof(double));
    const dim3 grid =
        dim3(unsigned((H + kThreads - 1) / kThreads), unsigned(std::min<int64_t>(chunks, 65535)));
    rms_dw_partial_kernel<<<grid, kThreads, 0, s>>>(dy, x, rstd, R, H, part.as<double>());
    GYRE_CUDA_LAUNCHED("rms_norm_bwd_dw");
    finish_add_kernel<<<grid_for(H, kThreads), kThreads, 0, s>>>(part.as<double>(), chunks, H, dw);
    GYRE_CUDA_LAUNCHED("rms_norm_bwd_dw_finish");
  }
}

void rope(float* x, int64_t tokens, int64_t H, int64_t D, const int32_t* positions,
          const float* cos, const float* sin, bool inverse) {
  const int64_t total = tokens * H * (D / 2);
  if (total == 0) return;
  rope_kernel<<<grid_for(total, kThreads), kThreads, 0, stream()>>>(x, tokens, H, D, positions, cos,
                                                                    sin, inverse);
  GYRE_CUDA_LAUNCHED("rope");
}

}  // namespace gyre::cuda
