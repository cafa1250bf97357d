// CUDA runtime plumbing shared by every CUDA kernel file: error checking that turns CUDA / cuBLAS
// status codes into gyre::Error naming the failed call and its source line, one stream per host
// thread, and device queries.
//
// Invariants: every kernel launched by gyre runs on the calling thread's stream (stream()), so work
// issued by one thread is ordered and threads never serialise on the legacy default stream. Host
// code that reads device results synchronises that stream first (the copy hooks do). Errors are
// checked after every runtime call and launch (check_launch); kernels themselves never throw.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace gyre::cuda {

// True when a CUDA device is visible (cudaGetDeviceCount > 0); never throws.
bool available();
// The calling thread's stream (created on first use, non-blocking w.r.t. the default stream).
cudaStream_t stream();
// Waits for the calling thread's stream.
void sync();
// Multiprocessor count of the current device (cached).
int sm_count();

// Throws Error(internal) "CUDA call `what` failed at file:line: <cuda error string>".
[[noreturn]] void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line);
[[noreturn]] void throw_cublas_error(int status, const char* what, const char* file, int line);
// Checks cudaGetLastError after a kernel launch.
void check_launch(const char* kernel, const char* file, int line);

// Blocks of `threads` covering n items, capped so a grid-stride loop covers the rest.
inline unsigned grid_for(int64_t n, int threads, int64_t cap = 65535) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  return unsigned(b < cap ? b : cap);
}

}  // namespace gyre::cuda

#define GYRE_CUDA_CHECK(call)                                               \
  do {                                                                      \
    cudaError_t gyre_err_ = (call);                                         \
    if (gyre_err_ != cudaSuccess) [[unlikely]]                              \
      ::gyre::cuda::throw_cuda_error(gyre_err_, #call, __FILE__, __LINE__); \
  } while (0)

#define GYRE_CUBLAS_CHECK(call)                                              \
  do {                                                                       \
    int gyre_st_ = int(call);                                                \
    if (gyre_st_ != 0) [[unlikely]]                                          \
      ::gyre::cuda::throw_cublas_error(gyre_st_, #call, __FILE__, __LINE__); \
  } while (0)

#define GYRE_CUDA_LAUNCHED(name) ::gyre::cuda::check_launch(name, __FILE__, __LINE__)
