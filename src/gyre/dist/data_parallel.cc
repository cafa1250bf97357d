// DataParallelOptimizer (data_parallel.h): replicated all-reduce AdamW and ZeRO-1 sharded AdamW.
#include "gyre/dist/data_parallel.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "gyre/backend/multi_tensor_ops.h"
#include "gyre/backend/ops.h"

namespace gyre::dist {

Range shard_range(int64_t n, int rank, int size) {
  if (size < 1 || rank < 0 || rank >= size)
    GYRE_THROW(invalid_argument, "shard_range: rank {} is outside [0, {})", rank, size);
  if (n < 0) GYRE_THROW(invalid_argument, "shard_range: negative item count {}", n);
  const int64_t base = n / size, extra = n % size;
  Range r;
  r.begin = rank * base + std::min<int64_t>(rank, extra);
  r.end = r.begin + base + (rank < extra ? 1 : 0);
  return r;
}

namespace {

int64_t total_numel(const train::NamedTensors& ts) {
  int64_t n = 0;
  for (auto& [name, t] : ts) n += t.numel();
  return n;
}

// Every tensor f32 on one device, the device whose buffers `comm` moves (MPI: host memory, NCCL:
// this rank's GPU). Returns that device.
Device check_f32(const train::NamedTensors& ts, const char* what, const Comm& comm) {
  const Device want = comm.buffer_device();
  for (auto& [name, t] : ts)
    if (t.dtype() != DType::f32 || t.device() != want)
      GYRE_THROW(invalid_argument,
                 "data-parallel step: {} '{}' is {} on {}; the DP optimizer over {} reduces f32 "
                 "tensors on {} (master weights; a GPU model needs an NCCL communicator, a CPU "
                 "model an MPI one)",
                 what, name, dtype_name(t.dtype()), device_name(t.device()), comm.where(),
                 device_name(want));
  return want;
}

// Copies every tensor into its slot of the flat vector (stream-ordered on the device).
void flatten(const train::NamedTensors& ts, Tensor& flat) {
  int64_t off = 0;
  for (auto& [name, t] : ts) {
    flat.narrow(off, t.numel()).copy_from(t.reshape({t.numel()}));
    off += t.numel();
  }
}

void unflatten(const Tensor& flat, train::NamedTensors& ts) {
  int64_t off = 0;
  for (auto& [name, t] : ts) {
    Tensor dst = t.reshape({t.numel()});
    dst.copy_from(flat.narrow(off, t.numel()));
    off += t.numel();
  }
}

train::AdamWConfig without_clipping(train::AdamWConfig c) {
  c.clip_grad = 0;
  return c;
}

}  // namespace

void all_reduce_gradients(Comm& comm, train::NamedTensors& grads) {
  const Device device = check_f32(grads, "gradient", comm);
  if (comm.size() == 1) return;
  Tensor flat = Tensor::empty({total_numel(grads)}, DType::f32, device);
  flatten(grads, flat);
  comm.all_reduce(flat.raw(), size_t(flat.numel()), DType::f32, ReduceOp::sum);
  unflatten(flat, grads);
}

const char* dp_mode_name(DpMode m) { return m == DpMode::zero1 ? "zero1" : "all_reduce"; }

DpMode parse_dp_mode(const std::string& s) {
  if (s == "zero1") return DpMode::zero1;
  if (s == "all_reduce") return DpMode::all_reduce;
  GYRE_THROW(invalid_argument, "data-parallel mode '{}' is not one of zero1, all_reduce", s);
}

DataParallelOptimizer::DataParallelOptimizer(Comm& comm, train::AdamWConfig cfg,
                                             train::LrSchedule schedule, DpMode mode)
    : comm_(comm),
      mode_(mode),
      cfg_(cfg),
      inner_(mode == DpMode::zero1 ? without_clipping(cfg) : cfg, schedule) {}

void DataParallelOptimizer::set_model_parallel(Comm& mp, std::vector<bool> replicated) {
  if (!names_.empty())
    GYRE_THROW(invalid_argument,
               "{}: set_model_parallel after the first data-parallel step; the clipping norm "
               "must cover the full model from the first step on",
               comm_.where());
  if (mp.buffer_device() != comm_.buffer_device())
    GYRE_THROW(invalid_argument,
               "{}: the model-parallel group {} moves buffers on another device than the "
               "data-parallel group",
               comm_.where(), mp.where());
  mp_ = &mp;
  replicated_ = std::move(replicated);
  // all_reduce mode: train::AdamW clips after the all-reduce; give it the full model's Σ g².
  if (mode_ == DpMode::all_reduce)
    inner_.set_grad_sum_squares([this](const train::NamedTensors& g) {
      // Per-tensor sums in one multi-tensor reduction (one device-to-host transfer on CUDA),
      // each bitwise ops::sum_squares of its tensor.
      std::vector<const Tensor*> ts;
      ts.reserve(g.size());
      for (auto& [name, t] : g) ts.push_back(&t);
      const std::vector<double> each = ops::sum_squares_each(ts);
      double sharded = 0, replicated = 0;
      for (size_t i = 0; i < g.size(); ++i) (replicated_[i] ? replicated : sharded) += each[i];
      return model_parallel_sum_squares(sharded, replicated);
    });
}

std::pair<double, double> DataParallelOptimizer::split_sum_squares(const Tensor& g, Range r) const {
  // One view of g per parameter overlapping [r.begin, r.end), summed in one multi-tensor
  // reduction (one device-to-host transfer on CUDA).
  std::vector<Tensor> views;
  std::vector<bool> view_replicated;
  for (size_t i = 0; i + 1 < offsets_.size(); ++i) {
    const int64_t b = std::max(offsets_[i], r.begin), e = std::min(offsets_[i + 1], r.end);
    if (e <= b) continue;
    views.push_back(g.narrow(b - r.begin, e - b));
    view_replicated.push_back(replicated_[i]);
  }
  std::vector<const Tensor*> ptrs;
  for (auto& v : views) ptrs.push_back(&v);
  const std::vector<double> each = ops::sum_squares_each(ptrs);
  double sharded = 0, replicated = 0;
  for (size_t i = 0; i < each.size(); ++i) (view_replicated[i] ? replicated : sharded) += each[i];
  return {sharded, replicated};
}

double DataParallelOptimizer::model_parallel_sum_squares(double sharded, double replicated) const {
  double v = sharded + (mp_->rank() == 0 ? replicated : 0.0);
  mp_->all_reduce(&v, 1, DType::f64, ReduceOp::sum);
  return v;
}

size_t DataParallelOptimizer::state_bytes() const {
  return size_t(owned_.size()) * 2 * sizeof(float);
}

void DataParallelOptimizer::layout(const train::NamedTensors& params,
                                   const train::NamedTensors& grads) {
  if (params.size() != grads.size())
    GYRE_THROW(invalid_argument, "data-parallel step: {} parameters but {} gradients",
               params.size(), grads.size());
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i].first != grads[i].first || params[i].second.shape() != grads[i].second.shape())
      GYRE_THROW(invalid_argument,
                 "data-parallel step: parameter {} '{}' {} does not match gradient '{}' {}", i,
                 params[i].first, shape_str(params[i].second.shape()), grads[i].first,
                 shape_str(grads[i].second.shape()));
  device_ = check_f32(params, "parameter", comm_);
  check_f32(grads, "gradient", comm_);
  if (!names_.empty()) {
    bool same = names_.size() == params.size();
    for (size_t i = 0; same && i < params.size(); ++i)
      same =
          names_[i] == params[i].first && offsets_[i + 1] - offsets_[i] == params[i].second.numel();
    if (!same)
      GYRE_THROW(invalid_argument,
                 "{}: the parameter list changed since the first data-parallel step ({} tensors "
                 "then, {} now); the optimizer's flat layout is fixed",
                 comm_.where(), names_.size(), params.size());
    return;
  }
  if (mp_ && replicated_.size() != params.size())
    GYRE_THROW(invalid_argument,
               "{}: set_model_parallel marked {} parameters as replicated or not, but the step "
               "has {} parameters",
               comm_.where(), replicated_.size(), params.size());
  offsets_.assign(1, 0);
  for (auto& [name, t] : params) {
    names_.push_back(name);
    offsets_.push_back(offsets_.back() + t.numel());
  }
  const int64_t n = offsets_.back(), world = comm_.size();
  // Every rank must flatten the same number of elements, or the collectives would mismatch.
  std::vector<int64_t> lo{n}, hi{-n};
  comm_.all_reduce(lo, ReduceOp::max);
  comm_.all_reduce(hi, ReduceOp::max);
  if (lo[0] != n || -hi[0] != n)
    GYRE_THROW(invalid_argument,
               "{}: this rank has {} parameter elements but another rank has {}: every DP rank "
               "must hold the same model",
               comm_.where(), n, lo[0] != n ? lo[0] : -hi[0]);
  if (mode_ == DpMode::zero1) {
    shard_ = (n + world - 1) / world;
    padded_ = shard_ * world;
    owned_ = {std::min(n, comm_.rank() * shard_), std::min(n, (comm_.rank() + 1) * shard_)};
    // Zero-filled: the padding past n is reduced and gathered too and must stay 0.
    flat_grad_ = Tensor::zeros({padded_}, DType::f32, device_);
    flat_param_ = Tensor::zeros({padded_}, DType::f32, device_);
    param_shard_ = Tensor::zeros({shard_}, DType::f32, device_);
    grad_shard_ = Tensor::zeros({shard_}, DType::f32, device_);
  } else {
    padded_ = shard_ = n;
    owned_ = {0, n};
    flat_grad_ = Tensor::zeros({n}, DType::f32, device_);
  }
}

std::vector<float> DataParallelOptimizer::reduced_grad() const {
  return reduced_grad_.defined() ? reduced_grad_.narrow(0, owned_.size()).to_vector()
                                 : std::vector<float>();
}

std::pair<double, double> DataParallelOptimizer::step(train::NamedTensors& params,
                                                      train::NamedTensors& grads) {
  layout(params, grads);
  flatten(grads, flat_grad_);
  if (mode_ == DpMode::all_reduce) {
    comm_.all_reduce(flat_grad_.raw(), size_t(flat_grad_.numel()), DType::f32, ReduceOp::sum);
    unflatten(flat_grad_, grads);
    reduced_grad_ = flat_grad_;         // no copy: nothing writes flat_grad_ until the next step
    return inner_.step(params, grads);  // global norm: every rank now holds the summed gradient
  }
  // ZeRO-1. Reduce-scatter: this rank receives the summed gradient of its shard.
  comm_.reduce_scatter(flat_grad_.raw(), grad_shard_.raw(), size_t(shard_), DType::f32,
                       ReduceOp::sum);
  if (keep_reduced_grad_) reduced_grad_ = grad_shard_.clone();  // clipping scales the shard
  // Global norm from the shards' sums of squares (Megatron's clip_grad_norm over the distributed
  // optimizer's shards), then the same clipping rule as train::AdamW::step.
  // DP x TP: summed over the DP group (this tp rank's full shard), then over the tp group.
  double sq = 0;
  if (mp_) {
    auto [sharded, replicated] = split_sum_squares(grad_shard_, owned_);
    std::vector<double> v{sharded, replicated};
    comm_.all_reduce(v, ReduceOp::sum);
    sq = model_parallel_sum_squares(v[0], v[1]);
  } else {
    sq = comm_.all_reduce(ops::sum_squares(grad_shard_), ReduceOp::sum);
  }
  const double norm = std::sqrt(sq);
  if (!std::isfinite(norm))
    GYRE_THROW(invalid_argument,
               "{}: non-finite global gradient norm {} (sum over {} DP ranks); optimizer step "
               "skipped — lower --lr or check the rewards/advantages for NaN",
               comm_.where(), norm, comm_.size());
  if (cfg_.clip_grad > 0) {
    const double coeff = cfg_.clip_grad / (norm + 1e-6);
    if (coeff < 1.0) ops::scale_(grad_shard_, float(coeff));
  }
  // This rank's parameter shard (replicas are identical, so the local copy is the truth).
  flatten(params, flat_param_);
  param_shard_.copy_from(flat_param_.narrow(comm_.rank() * shard_, shard_));
  train::NamedTensors p{{"zero1_shard", param_shard_}}, g{{"zero1_shard", grad_shard_}};
  auto [unused_norm, lr] = inner_.step(p, g);
  comm_.all_gather(param_shard_.raw(), flat_param_.raw(), size_t(shard_) * sizeof(float));
  unflatten(flat_param_, params);
  return {norm, lr};
}

void DataParallelOptimizer::save(const std::string& dir) const {
  const std::string sub =
      fmt::format("{}/dp_rank_{:03d}_of_{:03d}", dir, comm_.rank(), comm_.size());
  inner_.save(sub);
  nlohmann::json j = {{"mode", dp_mode_name(mode_)},
                      {"dp_size", comm_.size()},
                      {"padded", padded_},
                      {"shard", shard_}};
  std::ofstream(sub + "/data_parallel.json") << j.dump(2) << "\n";
}

void DataParallelOptimizer::load(const std::string& dir) {
  const std::string sub =
      fmt::format("{}/dp_rank_{:03d}_of_{:03d}", dir, comm_.rank(), comm_.size());
  std::ifstream f(sub + "/data_parallel.json");
  if (!f)
    GYRE_THROW(not_found,
               "{}: {}/data_parallel.json not found: the checkpoint in {} was not written with "
               "{} data-parallel ranks (ZeRO-1 state is per rank; resume with the same DP size)",
               comm_.where(), sub, dir, comm_.size());
  nlohmann::json j;
  try {
    f >> j;
    if (j.at("mode").get<std::string>() != dp_mode_name(mode_))
      GYRE_THROW(invalid_argument, "{}: optimizer checkpoint {} was written in mode {}, not {}",
                 comm_.where(), sub, j.at("mode").get<std::string>(), dp_mode_name(mode_));
  } catch (const nlohmann::json::exception& e) {
    GYRE_THROW(invalid_argument, "{}/data_parallel.json: {}", sub, e.what());
  }
  inner_.load(sub);
}

}  // namespace gyre::dist
