// Host side of pdl.cuh: whether programmatic dependent launch is on, and the barrier launch.
#include "gyre/backend/cuda/pdl.cuh"
#include "gyre/core/env.h"

namespace gyre::cuda {

namespace {

// One flag per host thread: each thread launches on its own stream() (runtime.cc), so "this
// thread's next launch_pdl" is "the next PDL kernel on the stream the weights were written on".
thread_local bool t_barrier_pending = false;

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

void pdl_barrier() { t_barrier_pending = true; }

bool pdl_barrier_pending() { return t_barrier_pending; }

bool pdl_take_barrier() {
  const bool was = t_barrier_pending;
  t_barrier_pending = false;
  return was;
}

}  // namespace gyre::cuda
