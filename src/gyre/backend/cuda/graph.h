// CUDA graphs for work that repeats with the same shapes (the rollout engine's decode step): one
// capture records every kernel a host function launches on the calling thread's stream; replay()
// relaunches them all with one call, removing the per-kernel host cost (the decode step is
// host-bound: hundreds of small kernels of a few microseconds each).
//
// Invariants (what makes a replay equal to running the function again):
// - The captured function reads its inputs from, and writes its outputs to, device buffers whose
//   addresses do not change: the caller refreshes the inputs' contents before each replay.
// - Every allocation made while capturing comes from the graph's private pool (GraphPool), so no
//   other work is ever handed memory the graph writes.
// - Nothing inside may synchronise the host (a stream sync, a device-to-host copy): CUDA rejects it
//   during capture, which turns an accidental sync into an Error rather than a silent stall.
// - capture() runs the function once eagerly first (warm-up: fills the pool with the blocks the
//   captured run will reuse, builds cuBLASLt plans, sets kernel attributes), then captures a
//   second run; the warm-up's results are valid outputs too.
#pragma once
#include <functional>

#include "gyre/backend/cuda/allocator.h"

namespace gyre::cuda {

class CudaGraph {
 public:
  CudaGraph() = default;
  ~CudaGraph();
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  // Warm-up run + capture of `body` on the calling thread's stream (see the invariants above).
  void capture(const std::function<void()>& body);
  // Relaunches the captured work on the calling thread's stream (asynchronous).
  void replay();
  bool captured() const { return exec_ != nullptr; }
  size_t pool_bytes() const { return pool_.reserved_bytes(); }

 private:
  GraphPool pool_;
  void* graph_ = nullptr;  // cudaGraph_t
  void* exec_ = nullptr;   // cudaGraphExec_t
};

}  // namespace gyre::cuda
