// Counting the kernels a piece of host code launches (GPU tests of the fused decode ops): the
// launches on this thread's stream are captured into a CUDA graph (relaxed mode) and its nodes
// counted. Outputs must be allocated and weights cached beforehand so nothing allocates during the
// capture. A capture only records the kernels, so body then runs once more for real: its outputs
// are what the caller checks.
#pragma once
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstddef>
#include <functional>

#include "gyre/backend/cuda/runtime.h"

namespace gyre::gputest {

// body's launches captured into a graph (nothing runs); the caller destroys it.
inline cudaGraph_t capture_graph(const std::function<void()>& body) {
  cudaStream_t s = static_cast<cudaStream_t>(cuda::stream());
  EXPECT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed), cudaSuccess);
  body();
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  return graph;
}

inline size_t kernels_launched(const std::function<void()>& body) {
  cudaGraph_t graph = capture_graph(body);
  size_t n = 0;
  EXPECT_EQ(cudaGraphGetNodes(graph, nullptr, &n), cudaSuccess);
  cudaGraphDestroy(graph);
  body();
  return n;
}

}  // namespace gyre::gputest
