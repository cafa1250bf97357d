// CUDA runtime plumbing (see runtime.h): per-thread streams, device queries, error translation.
#include "gyre/backend/cuda/runtime.h"

#include <cublasLt.h>

#include <mutex>
#include <vector>

#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/core/error.h"

namespace gyre::cuda {

namespace {
// Destroys the thread's stream when the thread exits (after draining it).
struct ThreadStream {
  cudaStream_t s = nullptr;
  ~ThreadStream() {
    if (s) {
      cudaStreamSynchronize(s);
      stream_retired(s);  // the allocator's free blocks forget the handle before it dies
      cudaStreamDestroy(s);
    }
  }
};
}  // namespace

bool available() {
  static const bool ok = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();  // clear the sticky "no device" error so later queries start clean
      return false;
    }
    return n > 0;
  }();
  return ok;
}

bool device_available() { return available(); }

cudaStream_t stream() {
  thread_local ThreadStream ts;
  if (!ts.s) {
    if (!available())
      GYRE_THROW(unsupported,
                 "no CUDA device is visible to this process (cudaGetDeviceCount = 0); run on a GPU "
                 "machine or keep the tensors on the CPU");
    GYRE_CUDA_CHECK(cudaStreamCreateWithFlags(&ts.s, cudaStreamNonBlocking));
  }
  return ts.s;
}

void sync() { GYRE_CUDA_CHECK(cudaStreamSynchronize(stream())); }

namespace {
std::mutex g_event_mu;
std::vector<cudaEvent_t> g_free_events;  // recycled profiler events
}  // namespace

void* profile_event_record() {
  cudaEvent_t e = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_event_mu);
    if (!g_free_events.empty()) {
      e = g_free_events.back();
      g_free_events.pop_back();
    }
  }
  if (!e) GYRE_CUDA_CHECK(cudaEventCreate(&e));
  GYRE_CUDA_CHECK(cudaEventRecord(e, stream()));
  return e;
}

double profile_elapsed_ms(void* start, void* stop) {
  GYRE_CUDA_CHECK(cudaEventSynchronize(cudaEvent_t(stop)));
  float ms = 0;
  GYRE_CUDA_CHECK(cudaEventElapsedTime(&ms, cudaEvent_t(start), cudaEvent_t(stop)));
  return ms;
}

void profile_event_release(void* event) {
  std::lock_guard<std::mutex> lock(g_event_mu);
  g_free_events.push_back(cudaEvent_t(event));
}

int sm_count() {
  static const int n = [] {
    int dev = 0, v = 0;
    GYRE_CUDA_CHECK(cudaGetDevice(&dev));
    GYRE_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev));
    return v;
  }();
  return n;
}

void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line) {
  GYRE_THROW(internal, "CUDA call `{}` failed at {}:{}: {} ({})", what, file, line,
             cudaGetErrorString(err), cudaGetErrorName(err));
}

void throw_cublas_error(int status, const char* what, const char* file, int line) {
  GYRE_THROW(internal, "cuBLAS call `{}` failed at {}:{}: status {} ({})", what, file, line, status,
             cublasLtGetStatusString(cublasStatus_t(status)));
}

void check_launch(const char* kernel, const char* file, int line) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    GYRE_THROW(internal, "CUDA kernel {} failed to launch at {}:{}: {} ({})", kernel, file, line,
               cudaGetErrorString(err), cudaGetErrorName(err));
}

}  // namespace gyre::cuda

namespace gyre::cuda {
namespace {
// Any binary that runs a CUDA op links this file, so device tensors work from start-up.
const bool kHooksRegistered = (register_hooks(), true);
}  // namespace
}  // namespace gyre::cuda
