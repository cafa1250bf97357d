// ops::DeviceGraph (ops.h) over cuda::CudaGraph; without the CUDA backend capture() is unsupported.
#include "gyre/backend/ops.h"
#include "gyre/core/error.h"
#ifdef GYRE_HAVE_CUDA
#include "gyre/backend/cuda/graph.h"
#endif

namespace gyre::ops {

struct DeviceGraph::Impl {
#ifdef GYRE_HAVE_CUDA
  cuda::CudaGraph graph;
#endif
};

DeviceGraph::DeviceGraph() : impl_(new Impl) {}
DeviceGraph::~DeviceGraph() { delete impl_; }

void DeviceGraph::capture(const std::function<void()>& body) {
#ifdef GYRE_HAVE_CUDA
  impl_->graph.capture(body);
#else
  (void)body;
  GYRE_THROW(unsupported, "DeviceGraph: CUDA graphs need the CUDA backend (-DGYRE_CUDA=ON)");
#endif
}

void DeviceGraph::replay() {
#ifdef GYRE_HAVE_CUDA
  impl_->graph.replay();
#else
  GYRE_THROW(unsupported, "DeviceGraph: CUDA graphs need the CUDA backend (-DGYRE_CUDA=ON)");
#endif
}

bool DeviceGraph::captured() const {
#ifdef GYRE_HAVE_CUDA
  return impl_->graph.captured();
#else
  return false;
#endif
}

size_t DeviceGraph::memory_bytes() const {
#ifdef GYRE_HAVE_CUDA
  return impl_->graph.pool_bytes();
#else
  return 0;
#endif
}

}  // namespace gyre::ops
