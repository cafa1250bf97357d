// A thin layer over cuDNN's backend graph API (cudnn_graph.h: cudnnBackendCreateDescriptor /
// SetAttribute / Finalize, operation graphs, engine heuristics, execution plans, variant packs),
// with the library loaded at run time: gyre builds and runs without cuDNN, and everything here
// reports "unavailable" instead of failing when libcudnn.so.9 cannot be opened.
//
// Invariants:
// - The library is opened once per process (dlopen, never closed); `api()` is null when it is
//   missing, too old (< 9.0), or this build had no cuDNN headers (GYRE_HAVE_CUDNN_HEADERS 0).
// - Every failing cuDNN call throws CudnnError (a std::runtime_error) naming the call, the status
//   and cuDNN's last error message; callers that can fall back catch it at their boundary.
// - A GraphBuilder owns every descriptor it creates; descriptors are destroyed with it, except the
//   finalized execution plan, which `build_plan` hands over in a Plan (moved, destroyed once).
// - Tensor UIDs are chosen by the caller for tensors bound at execution (the variant pack) and
//   allocated from 1000 upwards for virtual tensors, so the two never collide.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if __has_include(<cudnn_graph.h>)
#include <cudnn_graph.h>
#define GYRE_HAVE_CUDNN_HEADERS 1
#else
#define GYRE_HAVE_CUDNN_HEADERS 0
#endif

namespace gyre::cuda::cudnn {

struct CudnnError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

#if GYRE_HAVE_CUDNN_HEADERS

// The backend functions gyre uses, resolved with dlsym.
struct Api {
  size_t version = 0;  // cudnnGetVersion(), e.g. 91900
  decltype(&cudnnGetVersion) get_version = nullptr;
  decltype(&cudnnGetErrorString) error_string = nullptr;
  decltype(&cudnnGetLastErrorString) last_error = nullptr;  // optional
  decltype(&cudnnCreate) create = nullptr;
  decltype(&cudnnSetStream) set_stream = nullptr;
  decltype(&cudnnBackendCreateDescriptor) create_desc = nullptr;
  decltype(&cudnnBackendDestroyDescriptor) destroy_desc = nullptr;
  decltype(&cudnnBackendSetAttribute) set_attr = nullptr;
  decltype(&cudnnBackendGetAttribute) get_attr = nullptr;
  decltype(&cudnnBackendFinalize) finalize = nullptr;
  decltype(&cudnnBackendExecute) execute = nullptr;
};

// The loaded library, or null (and `why` says why once).
const Api* api(std::string* why = nullptr);

// One cuDNN handle per device, created on first use (the caller holds handle_mutex()).
cudnnHandle_t handle_for_current_device();
std::mutex& handle_mutex();

// Throws CudnnError when st is not CUDNN_STATUS_SUCCESS.
void check(cudnnStatus_t st, const char* what);

// A tensor of the graph: its descriptor and UID (the descriptor is owned by the builder).
struct TensorRef {
  cudnnBackendDescriptor_t desc = nullptr;
  int64_t uid = 0;
  std::vector<int64_t> dims, strides;
};

// A finalized execution plan and the workspace it needs.
class Plan {
 public:
  Plan() = default;
  Plan(cudnnBackendDescriptor_t plan, int64_t workspace) : plan_(plan), workspace_(workspace) {}
  Plan(Plan&& o) noexcept : plan_(o.plan_), workspace_(o.workspace_) { o.plan_ = nullptr; }
  Plan& operator=(Plan&& o) noexcept;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan();
  cudnnBackendDescriptor_t get() const { return plan_; }
  int64_t workspace() const { return workspace_; }
  cudnnBackendDescriptor_t release() { return std::exchange(plan_, nullptr); }

 private:
  cudnnBackendDescriptor_t plan_ = nullptr;
  int64_t workspace_ = 0;
};

class GraphBuilder {
 public:
  explicit GraphBuilder(const Api& a) : a_(a) {}
  ~GraphBuilder();
  GraphBuilder(const GraphBuilder&) = delete;
  GraphBuilder& operator=(const GraphBuilder&) = delete;

  // A tensor bound at execution (uid chosen by the caller); ragged: its ragged-offset tensor.
  TensorRef tensor(int64_t uid, cudnnDataType_t dt, std::vector<int64_t> dims,
                   std::vector<int64_t> strides, const TensorRef* ragged = nullptr);
  // A scalar passed by value at execution ({1,1,1,1}, host pointer in the variant pack).
  TensorRef scalar(int64_t uid, cudnnDataType_t dt);
  // An intermediate the engine keeps on chip (or in its own workspace).
  TensorRef virt(cudnnDataType_t dt, std::vector<int64_t> dims, std::vector<int64_t> strides,
                 const TensorRef* ragged = nullptr);

  // y = mode(x[, b[, t]]) elementwise with broadcasting; prec is the compute type; axis only for
  // CUDNN_POINTWISE_GEN_INDEX.
  void pointwise(cudnnPointwiseMode_t mode, cudnnDataType_t prec, const TensorRef& x,
                 const TensorRef* b, const TensorRef* t, const TensorRef& y, int64_t axis = -1);
  // y = reduce(x) over the axes where y has extent 1; f32 compute.
  void reduction(cudnnReduceTensorOp_t op, const TensorRef& x, const TensorRef& y);
  // c = a @ b over the last two axes (batched over the first two, b broadcast over head groups);
  // m/n/k overrides: per-batch row counts (seq lengths); padding: value written past them.
  void matmul(const TensorRef& a, const TensorRef& b, const TensorRef& c, const TensorRef* m,
              const TensorRef* n, const TensorRef* k, const double* padding = nullptr);
  // y views x's data with other dims/strides (a transpose, in the SDPA graphs).
  void reshape(const TensorRef& x, const TensorRef& y);

  // Finalizes the operation graph and returns the first engine configuration (heuristics mode A,
  // then the fallback list) whose plan finalizes; throws CudnnError when none does.
  Plan build_plan(cudnnHandle_t handle, std::string* engine_note = nullptr);

  // One finalized plan among the graph's alternatives (build_candidates).
  struct Candidate {
    Plan plan;
    std::string note;       // where it came from, its engine's global index and knob choices
    bool nondeterministic;  // the engine carries CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC
  };
  // Every plan of the graph that finalizes, in this order, without repeats (same engine and knob
  // choices): heuristics mode A's configurations (the first is build_plan's choice), mode B's,
  // the fallback list's, then — with sweep_knobs — each engine of the graph (by global index)
  // with its default knobs and with each knob set alone to each value of its range (at most
  // kKnobValues per knob). A configuration whose plan fails to build is skipped. Stops at
  // max_plans plans or once budget_ms of building has passed (a runtime-compiled plan takes up to
  // ~1 s). For measuring the alternatives (cudnn_attention.cc's tuning).
  static constexpr int kKnobValues = 16;
  std::vector<Candidate> build_candidates(cudnnHandle_t handle, int max_plans, double budget_ms,
                                          bool sweep_knobs);

 private:
  cudnnBackendDescriptor_t make(cudnnBackendDescriptorType_t type);
  void set(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name,
           cudnnBackendAttributeType_t type, int64_t count, const void* value, const char* what);
  cudnnBackendDescriptor_t finalize_graph(cudnnHandle_t handle);
  std::vector<cudnnBackendDescriptor_t> heuristic_configs(cudnnBackendHeurMode_t mode);
  // The plan of one engine configuration; its status (the plan is set only on success).
  cudnnStatus_t try_plan(cudnnHandle_t handle, cudnnBackendDescriptor_t cfg, Plan& out);
  // "engine E knobs t=v,..." and whether the engine is nondeterministic.
  std::string describe(cudnnBackendDescriptor_t cfg, bool* nondeterministic);
  TensorRef finish_tensor(int64_t uid, cudnnDataType_t dt, std::vector<int64_t> dims,
                          std::vector<int64_t> strides, bool is_virtual, bool by_value,
                          const TensorRef* ragged);

  const Api& a_;
  std::vector<cudnnBackendDescriptor_t> owned_;
  std::vector<cudnnBackendDescriptor_t> ops_;
  int64_t next_virtual_uid_ = 1000;
  cudnnBackendDescriptor_t graph_ = nullptr;  // the finalized operation graph, once built
};

// Executes plan with (uid, pointer) bindings and a workspace on the handle's stream.
void execute(const Api& a, cudnnHandle_t handle, const Plan& plan, const std::vector<int64_t>& uids,
             const std::vector<void*>& ptrs, void* workspace);

#endif  // GYRE_HAVE_CUDNN_HEADERS

}  // namespace gyre::cuda::cudnn
