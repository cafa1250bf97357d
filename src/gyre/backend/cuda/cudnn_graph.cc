// cuDNN backend graph API over a dlopen'ed libcudnn.so.9 (cudnn_graph.h says what and why).
#include "gyre/backend/cuda/cudnn_graph.h"

#if GYRE_HAVE_CUDNN_HEADERS
#include <dlfcn.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>

#include "gyre/backend/cuda/runtime.h"

namespace gyre::cuda::cudnn {

namespace {

Api load(std::string& why) {
  Api a;
  // libcudnn.so.9 is the dispatcher: it loads its engine libraries (libcudnn_engines_*.so.9,
  // libcudnn_graph.so.9) itself from the same directory or the loader path.
  void* lib = dlopen("libcudnn.so.9", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* e = dlerror();
    why = fmt::format("cannot load libcudnn.so.9 ({})", e ? e : "not found");
    return a;
  }
  bool ok = true;
  auto sym = [&](auto& fn, const char* name, bool required = true) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
    if (!fn && required) {
      ok = false;
      why = fmt::format("libcudnn.so.9 lacks {}", name);
    }
  };
  sym(a.get_version, "cudnnGetVersion");
  sym(a.error_string, "cudnnGetErrorString");
  sym(a.last_error, "cudnnGetLastErrorString", false);
  sym(a.create, "cudnnCreate");
  sym(a.set_stream, "cudnnSetStream");
  sym(a.create_desc, "cudnnBackendCreateDescriptor");
  sym(a.destroy_desc, "cudnnBackendDestroyDescriptor");
  sym(a.set_attr, "cudnnBackendSetAttribute");
  sym(a.get_attr, "cudnnBackendGetAttribute");
  sym(a.finalize, "cudnnBackendFinalize");
  sym(a.execute, "cudnnBackendExecute");
  if (!ok) return Api{};
  a.version = a.get_version();
  if (a.version < 90000) {
    why = fmt::format("libcudnn.so.9 reports version {} (< 9.0)", a.version);
    return Api{};
  }
  return a;
}

}  // namespace

const Api* api(std::string* why) {
  static std::string reason;
  static const Api loaded = load(reason);
  if (why) *why = reason;
  return loaded.create ? &loaded : nullptr;
}

std::mutex& handle_mutex() {
  static std::mutex m;
  return m;
}

cudnnHandle_t handle_for_current_device() {
  // Handles live for the process (like the cuBLASLt handles): destroying them at exit would race
  // the CUDA runtime's own teardown.
  static std::map<int, cudnnHandle_t> handles;
  int dev = 0;
  GYRE_CUDA_CHECK(cudaGetDevice(&dev));
  auto it = handles.find(dev);
  if (it != handles.end()) return it->second;
  const Api* a = api();
  if (!a) throw CudnnError("cuDNN is not loaded");
  cudnnHandle_t h = nullptr;
  check(a->create(&h), "cudnnCreate");
  handles[dev] = h;
  return h;
}

void check(cudnnStatus_t st, const char* what) {
  if (st == CUDNN_STATUS_SUCCESS) return;
  const Api* a = api();
  std::string msg = fmt::format("cuDNN call {} failed: {}", what,
                                a ? a->error_string(st) : std::to_string(int(st)));
  if (a && a->last_error) {
    char buf[512] = {0};
    a->last_error(buf, sizeof(buf));
    if (buf[0]) msg += fmt::format(" ({})", buf);
  }
  throw CudnnError(msg);
}

Plan& Plan::operator=(Plan&& o) noexcept {
  if (this != &o) {
    if (plan_) api()->destroy_desc(plan_);
    plan_ = o.plan_;
    workspace_ = o.workspace_;
    o.plan_ = nullptr;
  }
  return *this;
}

Plan::~Plan() {
  if (plan_) api()->destroy_desc(plan_);
}

GraphBuilder::~GraphBuilder() {
  for (auto it = owned_.rbegin(); it != owned_.rend(); ++it) a_.destroy_desc(*it);
}

cudnnBackendDescriptor_t GraphBuilder::make(cudnnBackendDescriptorType_t type) {
  cudnnBackendDescriptor_t d = nullptr;
  check(a_.create_desc(type, &d), "cudnnBackendCreateDescriptor");
  owned_.push_back(d);
  return d;
}

void GraphBuilder::set(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name,
                       cudnnBackendAttributeType_t type, int64_t count, const void* value,
                       const char* what) {
  check(a_.set_attr(d, name, type, count, value), what);
}

TensorRef GraphBuilder::finish_tensor(int64_t uid, cudnnDataType_t dt, std::vector<int64_t> dims,
                                      std::vector<int64_t> strides, bool is_virtual, bool by_value,
                                      const TensorRef* ragged) {
  cudnnBackendDescriptor_t d = make(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  const int64_t n = int64_t(dims.size()), align = 16;
  set(d, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt, "tensor data type");
  set(d, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, n, dims.data(), "tensor dims");
  set(d, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, n, strides.data(), "tensor strides");
  set(d, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, "tensor uid");
  set(d, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align, "tensor alignment");
  if (is_virtual) {
    bool v = true;
    set(d, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &v, "tensor virtual");
  }
  if (by_value) {
    bool v = true;
    set(d, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &v, "tensor by value");
  }
  if (ragged)
    set(d, CUDNN_ATTR_TENSOR_RAGGED_OFFSET_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &ragged->desc,
        "tensor ragged offset");
  check(a_.finalize(d), "finalize tensor");
  return TensorRef{d, uid, std::move(dims), std::move(strides)};
}

TensorRef GraphBuilder::tensor(int64_t uid, cudnnDataType_t dt, std::vector<int64_t> dims,
                               std::vector<int64_t> strides, const TensorRef* ragged) {
  return finish_tensor(uid, dt, std::move(dims), std::move(strides), false, false, ragged);
}

TensorRef GraphBuilder::scalar(int64_t uid, cudnnDataType_t dt) {
  return finish_tensor(uid, dt, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true, nullptr);
}

TensorRef GraphBuilder::virt(cudnnDataType_t dt, std::vector<int64_t> dims,
                             std::vector<int64_t> strides, const TensorRef* ragged) {
  return finish_tensor(next_virtual_uid_++, dt, std::move(dims), std::move(strides), true, false,
                       ragged);
}

void GraphBuilder::pointwise(cudnnPointwiseMode_t mode, cudnnDataType_t prec, const TensorRef& x,
                             const TensorRef* b, const TensorRef* t, const TensorRef& y,
                             int64_t axis) {
  cudnnBackendDescriptor_t pw = make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
  set(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, "pointwise mode");
  set(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec, "pointwise precision");
  if (mode == CUDNN_POINTWISE_GEN_INDEX)
    set(pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis, "pointwise axis");
  check(a_.finalize(pw), "finalize pointwise descriptor");
  cudnnBackendDescriptor_t op = make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
  const float one = 1.0f;
  set(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw,
      "pointwise op descriptor");
  set(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x.desc,
      "pointwise x");
  if (b)
    set(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b->desc,
        "pointwise b");
  if (t)
    set(op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t->desc,
        "pointwise t");
  set(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y.desc,
      "pointwise y");
  set(op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA1, CUDNN_TYPE_FLOAT, 1, &one, "pointwise alpha1");
  set(op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA2, CUDNN_TYPE_FLOAT, 1, &one, "pointwise alpha2");
  check(a_.finalize(op), "finalize pointwise op");
  ops_.push_back(op);
}

void GraphBuilder::reduction(cudnnReduceTensorOp_t op_kind, const TensorRef& x,
                             const TensorRef& y) {
  cudnnBackendDescriptor_t r = make(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
  const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
  set(r, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &op_kind,
      "reduction operator");
  set(r, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32, "reduction compute");
  check(a_.finalize(r), "finalize reduction descriptor");
  cudnnBackendDescriptor_t op = make(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
  set(op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x.desc,
      "reduction x");
  set(op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y.desc,
      "reduction y");
  set(op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &r,
      "reduction descriptor");
  check(a_.finalize(op), "finalize reduction op");
  ops_.push_back(op);
}

void GraphBuilder::matmul(const TensorRef& a, const TensorRef& b, const TensorRef& c,
                          const TensorRef* m, const TensorRef* n, const TensorRef* k,
                          const double* padding) {
  cudnnBackendDescriptor_t mm = make(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
  const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
  set(mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32, "matmul compute");
  if (padding)
    set(mm, CUDNN_ATTR_MATMUL_PADDING_VALUE, CUDNN_TYPE_DOUBLE, 1, padding, "matmul padding");
  check(a_.finalize(mm), "finalize matmul descriptor");
  cudnnBackendDescriptor_t op = make(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
  set(op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a.desc, "matmul a");
  set(op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b.desc, "matmul b");
  set(op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c.desc, "matmul c");
  set(op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &mm,
      "matmul descriptor");
  if (m)
    set(op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_M_OVERRIDE_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
        &m->desc, "matmul m override");
  if (n)
    set(op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_N_OVERRIDE_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
        &n->desc, "matmul n override");
  if (k)
    set(op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_K_OVERRIDE_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
        &k->desc, "matmul k override");
  check(a_.finalize(op), "finalize matmul op");
  ops_.push_back(op);
}

void GraphBuilder::reshape(const TensorRef& x, const TensorRef& y) {
  cudnnBackendDescriptor_t op = make(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
  set(op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x.desc,
      "reshape x");
  set(op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y.desc,
      "reshape y");
  check(a_.finalize(op), "finalize reshape op");
  ops_.push_back(op);
}

cudnnBackendDescriptor_t GraphBuilder::finalize_graph(cudnnHandle_t handle) {
  if (graph_) return graph_;
  cudnnBackendDescriptor_t graph = make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  set(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, int64_t(ops_.size()),
      ops_.data(), "operation graph ops");
  set(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle,
      "operation graph handle");
  check(a_.finalize(graph), "finalize operation graph");
  graph_ = graph;
  return graph;
}

std::vector<cudnnBackendDescriptor_t> GraphBuilder::heuristic_configs(cudnnBackendHeurMode_t mode) {
  cudnnBackendDescriptor_t heur = make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
  set(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph_,
      "heuristics graph");
  set(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode, "heuristics mode");
  if (a_.finalize(heur) != CUDNN_STATUS_SUCCESS) return {};
  int64_t count = 0;
  check(a_.get_attr(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                    nullptr),
        "heuristics result count");
  if (count <= 0) return {};
  std::vector<cudnnBackendDescriptor_t> cfgs(static_cast<size_t>(count));
  for (auto& c : cfgs) c = make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
  int64_t got = 0;
  check(a_.get_attr(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got,
                    cfgs.data()),
        "heuristics results");
  cfgs.resize(static_cast<size_t>(std::clamp<int64_t>(got, 0, count)));
  return cfgs;
}

cudnnStatus_t GraphBuilder::try_plan(cudnnHandle_t handle, cudnnBackendDescriptor_t cfg,
                                     Plan& out) {
  cudnnBackendDescriptor_t plan = nullptr;
  check(a_.create_desc(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan), "create plan");
  Plan candidate(plan, 0);  // destroys the plan unless it is handed over
  set(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, "plan handle");
  set(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg,
      "plan engine config");
  const cudnnStatus_t st = a_.finalize(plan);
  if (st != CUDNN_STATUS_SUCCESS) return st;
  int64_t ws = 0, n_ws = 0;
  check(
      a_.get_attr(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n_ws, &ws),
      "plan workspace size");
  out = Plan(candidate.release(), ws);
  return st;
}

Plan GraphBuilder::build_plan(cudnnHandle_t handle, std::string* engine_note) {
  finalize_graph(handle);
  std::string last_error = "no engine configuration";
  for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    const std::vector<cudnnBackendDescriptor_t> cfgs = heuristic_configs(mode);
    for (size_t i = 0; i < cfgs.size(); ++i) {
      Plan plan;
      const cudnnStatus_t st = try_plan(handle, cfgs[i], plan);
      if (st != CUDNN_STATUS_SUCCESS) {
        last_error = a_.error_string(st);
        continue;
      }
      if (engine_note)
        *engine_note =
            fmt::format("{} config {} of {}",
                        mode == CUDNN_HEUR_MODE_A ? "heuristics A" : "fallback", i, cfgs.size());
      return plan;
    }
  }
  throw CudnnError("cuDNN found no engine for the graph: " + last_error);
}

std::string GraphBuilder::describe(cudnnBackendDescriptor_t cfg, bool* nondeterministic) {
  *nondeterministic = false;
  cudnnBackendDescriptor_t engine = make(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
  int64_t n = 0, index = -1;
  if (a_.get_attr(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n,
                  &engine) != CUDNN_STATUS_SUCCESS ||
      a_.get_attr(engine, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &n, &index) !=
          CUDNN_STATUS_SUCCESS)
    return "engine ?";
  cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
  if (a_.get_attr(engine, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                  CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &n, notes) == CUDNN_STATUS_SUCCESS)
    for (int64_t i = 0; i < std::min<int64_t>(n, CUDNN_NUMERICAL_NOTE_TYPE_COUNT); ++i)
      if (notes[i] == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) *nondeterministic = true;
  std::vector<cudnnBackendDescriptor_t> choices(CUDNN_KNOB_TYPE_COUNTS);
  for (auto& c : choices) c = make(CUDNN_BACKEND_KNOB_CHOICE_DESCRIPTOR);
  std::map<int64_t, int64_t> knobs;  // sorted by type: one key per configuration
  if (a_.get_attr(cfg, CUDNN_ATTR_ENGINECFG_KNOB_CHOICES, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                  int64_t(choices.size()), &n, choices.data()) == CUDNN_STATUS_SUCCESS) {
    for (int64_t i = 0; i < std::min<int64_t>(n, int64_t(choices.size())); ++i) {
      cudnnBackendKnobType_t type{};
      int64_t value = 0, m = 0;
      if (a_.get_attr(choices[size_t(i)], CUDNN_ATTR_KNOB_CHOICE_KNOB_TYPE, CUDNN_TYPE_KNOB_TYPE, 1,
                      &m, &type) == CUDNN_STATUS_SUCCESS &&
          a_.get_attr(choices[size_t(i)], CUDNN_ATTR_KNOB_CHOICE_KNOB_VALUE, CUDNN_TYPE_INT64, 1,
                      &m, &value) == CUDNN_STATUS_SUCCESS)
        knobs[int64_t(type)] = value;
    }
  }
  std::string key = fmt::format("engine {} knobs", index);
  for (const auto& [type, value] : knobs) key += fmt::format(" {}={}", type, value);
  if (knobs.empty()) key += " default";
  return key;
}

std::vector<GraphBuilder::Candidate> GraphBuilder::build_candidates(cudnnHandle_t handle,
                                                                    int max_plans, double budget_ms,
                                                                    bool sweep_knobs) {
  finalize_graph(handle);
  std::vector<Candidate> out;
  std::set<std::string> seen;
  const auto t0 = std::chrono::steady_clock::now();
  auto over = [&] {
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    return int(out.size()) >= max_plans || ms > budget_ms;
  };
  auto consider = [&](cudnnBackendDescriptor_t cfg, const std::string& source) {
    if (over()) return;
    try {
      bool nondet = false;
      const std::string key = describe(cfg, &nondet);
      if (!seen.insert(key).second) return;
      Plan plan;
      if (try_plan(handle, cfg, plan) != CUDNN_STATUS_SUCCESS) return;
      out.push_back(Candidate{std::move(plan), source + ": " + key, nondet});
    } catch (const CudnnError&) {
      // this configuration cannot be described or planned: the others still count
    }
  };
  const std::pair<cudnnBackendHeurMode_t, const char*> modes[] = {
      {CUDNN_HEUR_MODE_A, "heuristics A"},
      {CUDNN_HEUR_MODE_B, "heuristics B"},
      {CUDNN_HEUR_MODE_FALLBACK, "fallback"}};
  for (const auto& [mode, name] : modes) {
    std::vector<cudnnBackendDescriptor_t> cfgs;
    try {
      cfgs = heuristic_configs(mode);
    } catch (const CudnnError&) {
      continue;  // a mode this graph has no results for
    }
    for (size_t i = 0; i < cfgs.size(); ++i) consider(cfgs[i], fmt::format("{} #{}", name, i));
  }

  if (!sweep_knobs) return out;
  // Each engine with its default knobs, then each knob alone over its range.
  int64_t engines = 0, n = 0;
  if (a_.get_attr(graph_, CUDNN_ATTR_OPERATIONGRAPH_ENGINE_GLOBAL_COUNT, CUDNN_TYPE_INT64, 1, &n,
                  &engines) != CUDNN_STATUS_SUCCESS)
    engines = 0;
  auto config = [&](cudnnBackendDescriptor_t engine,
                    const std::vector<std::pair<cudnnBackendKnobType_t, int64_t>>& knobs)
      -> cudnnBackendDescriptor_t {
    std::vector<cudnnBackendDescriptor_t> choices;
    for (const auto& [type, value] : knobs) {
      cudnnBackendDescriptor_t c = make(CUDNN_BACKEND_KNOB_CHOICE_DESCRIPTOR);
      if (a_.set_attr(c, CUDNN_ATTR_KNOB_CHOICE_KNOB_TYPE, CUDNN_TYPE_KNOB_TYPE, 1, &type) !=
              CUDNN_STATUS_SUCCESS ||
          a_.set_attr(c, CUDNN_ATTR_KNOB_CHOICE_KNOB_VALUE, CUDNN_TYPE_INT64, 1, &value) !=
              CUDNN_STATUS_SUCCESS ||
          a_.finalize(c) != CUDNN_STATUS_SUCCESS)
        return nullptr;
      choices.push_back(c);
    }
    cudnnBackendDescriptor_t cfg = make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    if (a_.set_attr(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &engine) !=
            CUDNN_STATUS_SUCCESS ||
        (!choices.empty() &&
         a_.set_attr(cfg, CUDNN_ATTR_ENGINECFG_KNOB_CHOICES, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                     int64_t(choices.size()), choices.data()) != CUDNN_STATUS_SUCCESS) ||
        a_.finalize(cfg) != CUDNN_STATUS_SUCCESS)
      return nullptr;
    return cfg;
  };
  for (int64_t e = 0; e < engines && !over(); ++e) {
    cudnnBackendDescriptor_t engine = make(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
    if (a_.set_attr(engine, CUDNN_ATTR_ENGINE_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                    &graph_) != CUDNN_STATUS_SUCCESS ||
        a_.set_attr(engine, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &e) !=
            CUDNN_STATUS_SUCCESS ||
        a_.finalize(engine) != CUDNN_STATUS_SUCCESS)
      continue;  // the engine does not support this graph
    if (cudnnBackendDescriptor_t cfg = config(engine, {})) consider(cfg, "engine list");
    std::vector<cudnnBackendDescriptor_t> infos(CUDNN_KNOB_TYPE_COUNTS);
    for (auto& k : infos) k = make(CUDNN_BACKEND_KNOB_INFO_DESCRIPTOR);
    int64_t n_info = 0;
    if (a_.get_attr(engine, CUDNN_ATTR_ENGINE_KNOB_INFO, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                    int64_t(infos.size()), &n_info, infos.data()) != CUDNN_STATUS_SUCCESS)
      continue;
    for (int64_t k = 0; k < std::min<int64_t>(n_info, int64_t(infos.size())) && !over(); ++k) {
      cudnnBackendKnobType_t type{};
      int64_t lo = 0, hi = 0, stride = 1, m = 0;
      if (a_.get_attr(infos[size_t(k)], CUDNN_ATTR_KNOB_INFO_TYPE, CUDNN_TYPE_KNOB_TYPE, 1, &m,
                      &type) != CUDNN_STATUS_SUCCESS ||
          a_.get_attr(infos[size_t(k)], CUDNN_ATTR_KNOB_INFO_MINIMUM_VALUE, CUDNN_TYPE_INT64, 1, &m,
                      &lo) != CUDNN_STATUS_SUCCESS ||
          a_.get_attr(infos[size_t(k)], CUDNN_ATTR_KNOB_INFO_MAXIMUM_VALUE, CUDNN_TYPE_INT64, 1, &m,
                      &hi) != CUDNN_STATUS_SUCCESS ||
          a_.get_attr(infos[size_t(k)], CUDNN_ATTR_KNOB_INFO_STRIDE, CUDNN_TYPE_INT64, 1, &m,
                      &stride) != CUDNN_STATUS_SUCCESS)
        continue;
      stride = std::max<int64_t>(stride, 1);
      int tried = 0;
      for (int64_t v = lo; v <= hi && tried < kKnobValues && !over(); v += stride, ++tried)
        if (cudnnBackendDescriptor_t cfg = config(engine, {{type, v}}))
          consider(cfg, "engine list");
    }
  }
  return out;
}

void execute(const Api& a, cudnnHandle_t handle, const Plan& plan, const std::vector<int64_t>& uids,
             const std::vector<void*>& ptrs, void* workspace) {
  if (uids.size() != ptrs.size())
    throw CudnnError(
        fmt::format("variant pack: {} uids for {} pointers", uids.size(), ptrs.size()));
  cudnnBackendDescriptor_t vp = nullptr;
  check(a.create_desc(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &vp), "create variant pack");
  struct Destroy {
    const Api& a;
    cudnnBackendDescriptor_t d;
    ~Destroy() { a.destroy_desc(d); }
  } destroy{a, vp};
  check(a.set_attr(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, int64_t(uids.size()),
                   uids.data()),
        "variant pack uids");
  check(a.set_attr(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR,
                   int64_t(ptrs.size()), ptrs.data()),
        "variant pack pointers");
  check(a.set_attr(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace),
        "variant pack workspace");
  check(a.finalize(vp), "finalize variant pack");
  check(a.execute(handle, plan.get(), vp), "cudnnBackendExecute");
}

}  // namespace gyre::cuda::cudnn

#endif  // GYRE_HAVE_CUDNN_HEADERS
