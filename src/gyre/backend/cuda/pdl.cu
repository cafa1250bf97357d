// Host side of pdl.cuh: whether programmatic dependent launch is on, and the barrier launch.
#include "gyre/backend/cuda/pdl.cuh"
#include "gyre/core/env.h"

namespace gyre::cuda {

namespace {

__global__ void pdl_barrier_kernel() {}

}  // namespace

bool pdl_enabled() {
  static const bool on = [] {
    if (env_choice("GYRE_PDL", {"0", "1"}, "1") == "0") return false;
    int dev = 0, major = 0;
    GYRE_CUDA_CHECK(cudaGetDevice(&dev));
    GYRE_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    return major >= 9;
  }();
  return on;
}

void pdl_barrier() {
  pdl_barrier_kernel<<<1, 32, 0, stream()>>>();
  GYRE_CUDA_LAUNCHED("pdl_barrier");
}

}  // namespace gyre::cuda
