// Device-side byte comparison for GEMM autotuning (gemm_tune.cc): whether a candidate's output is
// bitwise the reference's, without copying hundreds of megabytes to the host.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace gyre::cuda {

namespace {
// Sets *differs when any byte of a and b differs; 16-byte words where both are aligned, bytes in
// the tail. Grid-stride; only ever writes 1, so the flag needs no atomics.
__global__ void bytes_differ_kernel(const unsigned char* a, const unsigned char* b, size_t n,
                                    int* differs) {
  const size_t words = n / 16;
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  const size_t first = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const uint4* a4 = reinterpret_cast<const uint4*>(a);
  const uint4* b4 = reinterpret_cast<const uint4*>(b);
  bool diff = false;
  for (size_t i = first; i < words; i += stride) {
    const uint4 x = a4[i], y = b4[i];
    diff |= x.x != y.x || x.y != y.y || x.z != y.z || x.w != y.w;
  }
  for (size_t i = words * 16 + first; i < n; i += stride) diff |= a[i] != b[i];
  if (diff) *differs = 1;
}
}  // namespace

// Whether n bytes at a and b (device, 16-byte aligned: cudaMalloc'd) are identical; `flag` is one
// device int of scratch. Synchronises the stream.
bool device_bytes_equal(const void* a, const void* b, size_t n, int* flag, cudaStream_t s) {
  if (cudaMemsetAsync(flag, 0, sizeof(int), s) != cudaSuccess) return false;
  bytes_differ_kernel<<<1024, 256, 0, s>>>(static_cast<const unsigned char*>(a),
                                           static_cast<const unsigned char*>(b), n, flag);
  int host = 1;
  if (cudaMemcpyAsync(&host, flag, sizeof(int), cudaMemcpyDeviceToHost, s) != cudaSuccess ||
      cudaStreamSynchronize(s) != cudaSuccess)
    return false;
  return host == 0;
}

}  // namespace gyre::cuda
