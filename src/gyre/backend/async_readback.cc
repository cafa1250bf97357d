// ops::AsyncReadback (ops.h): a device-to-host copy into page-locked memory, waited for by its
// own event rather than by a stream synchronisation.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "gyre/backend/ops.h"
#include "gyre/core/allocator.h"
#include "gyre/core/error.h"
#ifdef GYRE_HAVE_CUDA
#include <cuda_runtime.h>

#include "gyre/backend/cuda/runtime.h"
#endif

namespace gyre::ops {

namespace {
void free_host(void* p, bool pinned) {
  if (!p) return;
#ifdef GYRE_HAVE_CUDA
  if (pinned) {
    cudaFreeHost(p);
    return;
  }
#endif
  (void)pinned;
  std::free(p);
}
}  // namespace

AsyncReadback::~AsyncReadback() {
#ifdef GYRE_HAVE_CUDA
  // A copy still in flight writes into host_: let it land before the buffer goes.
  if (event_) {
    if (pending_) cudaEventSynchronize(static_cast<cudaEvent_t>(event_));
    cudaEventDestroy(static_cast<cudaEvent_t>(event_));
  }
#endif
  free_host(host_, pinned_);
}

void AsyncReadback::start(const Tensor& src) {
  GYRE_CHECK(src.defined(), "AsyncReadback::start: undefined tensor");
  if (pending_) wait();  // the buffer is about to be reused: the previous copy must have landed
  const size_t n = src.nbytes();
  const bool device = src.device() != Device::cpu;
  if (n > capacity_ || device != pinned_) {
    free_host(host_, pinned_);
    host_ = nullptr, capacity_ = 0;
    const size_t cap = std::max<size_t>(n, 256);
#ifdef GYRE_HAVE_CUDA
    if (device) {
      GYRE_CUDA_CHECK(cudaMallocHost(&host_, cap));
    } else
#endif
    {
      host_ = std::malloc(cap);
      GYRE_CHECK(host_ != nullptr, "AsyncReadback: out of host memory for {} bytes", cap);
    }
    pinned_ = device, capacity_ = cap;
  }
  bytes_ = n;
  if (!device) {
    if (n) std::memcpy(host_, src.raw(), n);
    return;
  }
#ifdef GYRE_HAVE_CUDA
  cudaStream_t s = cuda::stream();
  if (!event_) {
    cudaEvent_t e = nullptr;
    GYRE_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    event_ = e;
  }
  if (n) GYRE_CUDA_CHECK(cudaMemcpyAsync(host_, src.raw(), n, cudaMemcpyDeviceToHost, s));
  GYRE_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event_), s));
  pending_ = true;
#else
  GYRE_THROW(unsupported, "AsyncReadback: a {} tensor in a build without CUDA",
             device_name(src.device()));
#endif
}

const void* AsyncReadback::wait() {
#ifdef GYRE_HAVE_CUDA
  if (pending_) {
    pending_ = false;
    GYRE_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event_)));
  }
#endif
  return host_;
}

}  // namespace gyre::ops
