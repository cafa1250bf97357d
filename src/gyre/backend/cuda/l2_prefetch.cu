// l2_prefetch.h: a side stream per host thread and the bulk L2 prefetch kernel.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "gyre/backend/cuda/l2_prefetch.h"
#include "gyre/backend/cuda/runtime.h"

namespace gyre::cuda {

namespace {

// Bytes per cp.async.bulk.prefetch: small enough that a range spreads over many threads (the
// instruction is issued by one thread and the copy engine walks the bytes), large enough that
// 60 MB is ~15k instructions.
constexpr uint64_t kPiece = 4096;

struct Ranges {
  uint64_t begin[kMaxL2PrefetchRanges];
  uint64_t end[kMaxL2PrefetchRanges];  // both 16-byte aligned, begin <= end
  uint64_t pieces_before[kMaxL2PrefetchRanges + 1];
  int n;
};

// Piece p of the concatenated ranges goes to thread p mod (grid threads).
__global__ void l2_prefetch_kernel(const Ranges r) {
  const uint64_t total = r.pieces_before[r.n];
  for (uint64_t p = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; p < total;
       p += uint64_t(gridDim.x) * blockDim.x) {
    int i = 0;
    while (p >= r.pieces_before[i + 1]) ++i;
    const uint64_t a = r.begin[i] + (p - r.pieces_before[i]) * kPiece;
    const uint64_t left = r.end[i] - a;
    const uint32_t len = uint32_t(left < kPiece ? left : kPiece);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(a), "r"(len) : "memory");
#else
    (void)a, (void)len;
#endif
  }
}

struct SideStream {
  cudaStream_t side = nullptr;
  cudaEvent_t fork = nullptr, done = nullptr;
  bool pending = false;  // `done` recorded under a stream capture since the last join
  SideStream() {
    GYRE_CUDA_CHECK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
    GYRE_CUDA_CHECK(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
    GYRE_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  }
  ~SideStream() {
    // Thread exit: the prefetches are hints; wait so the stream is idle before it goes.
    if (side) cudaStreamSynchronize(side), cudaStreamDestroy(side);
    if (fork) cudaEventDestroy(fork);
    if (done) cudaEventDestroy(done);
  }
};

SideStream& side_stream() {
  thread_local SideStream s;
  return s;
}

}  // namespace

void l2_prefetch_side(const void* const* ptrs, const size_t* bytes, int n) {
  Ranges r{};
  uint64_t pieces = 0;
  for (int i = 0; i < n && r.n < kMaxL2PrefetchRanges; ++i) {
    const uint64_t a = (reinterpret_cast<uint64_t>(ptrs[i]) + 15) & ~uint64_t(15);
    const uint64_t e = (reinterpret_cast<uint64_t>(ptrs[i]) + bytes[i]) & ~uint64_t(15);
    if (!ptrs[i] || e <= a) continue;
    r.begin[r.n] = a;
    r.end[r.n] = e;
    r.pieces_before[r.n] = pieces;
    pieces += (e - a + kPiece - 1) / kPiece;
    ++r.n;
  }
  r.pieces_before[r.n] = pieces;
  if (pieces == 0) return;
  SideStream& s = side_stream();
  GYRE_CUDA_CHECK(cudaEventRecord(s.fork, stream()));
  GYRE_CUDA_CHECK(cudaStreamWaitEvent(s.side, s.fork, 0));
  const unsigned threads = 128;
  const unsigned grid = unsigned(std::min<uint64_t>((pieces + threads - 1) / threads, 264));
  l2_prefetch_kernel<<<grid, threads, 0, s.side>>>(r);
  GYRE_CUDA_LAUNCHED("l2_prefetch");
  GYRE_CUDA_CHECK(cudaEventRecord(s.done, s.side));
  // Only a capture must be joined (an eager prefetch is never waited for; an event recorded
  // outside a capture must not be waited on inside one).
  cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
  GYRE_CUDA_CHECK(cudaStreamIsCapturing(stream(), &cs));
  s.pending = cs == cudaStreamCaptureStatusActive;
}

void l2_prefetch_join() {
  SideStream& s = side_stream();
  if (!s.pending) return;
  GYRE_CUDA_CHECK(cudaStreamWaitEvent(stream(), s.done, 0));
  s.pending = false;
}

void l2_prefetch_forget() noexcept { side_stream().pending = false; }

}  // namespace gyre::cuda
