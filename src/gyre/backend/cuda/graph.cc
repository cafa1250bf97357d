// CudaGraph (graph.h): capture on the thread's stream into a graph-private memory pool, replay.
#include "gyre/backend/cuda/graph.h"

#include <cuda_runtime.h>

#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/error.h"

namespace gyre::cuda {

CudaGraph::~CudaGraph() {
  if (exec_) cudaGraphExecDestroy(cudaGraphExec_t(exec_));
  if (graph_) cudaGraphDestroy(cudaGraph_t(graph_));
  // pool_ is destroyed after this body: it waits for the stream, then frees its blocks.
}

void CudaGraph::capture(const std::function<void()>& body) {
  GYRE_CHECK(!exec_, "CudaGraph::capture: this graph is already captured");
  cudaStream_t s = stream();
  GraphPoolScope scope(&pool_);
  body();  // warm-up: the pool now holds the blocks the captured run will ask for
  // Relaxed mode: a cudaMalloc for a block the warm-up did not leave free is allowed (it is not
  // stream-ordered work); stream syncs and device-to-host copies still fail the capture.
  GYRE_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
  try {
    body();
  } catch (...) {
    cudaGraph_t broken = nullptr;
    cudaStreamEndCapture(s, &broken);  // leave the stream usable
    if (broken) cudaGraphDestroy(broken);
    cudaGetLastError();
    throw;
  }
  cudaGraph_t g = nullptr;
  GYRE_CUDA_CHECK(cudaStreamEndCapture(s, &g));
  graph_ = g;
  cudaGraphExec_t e = nullptr;
  GYRE_CUDA_CHECK(cudaGraphInstantiate(&e, g, 0));
  exec_ = e;
}

void CudaGraph::replay() {
  GYRE_CHECK(exec_, "CudaGraph::replay: nothing captured");
  GYRE_CUDA_CHECK(cudaGraphLaunch(cudaGraphExec_t(exec_), stream()));
}

}  // namespace gyre::cuda
