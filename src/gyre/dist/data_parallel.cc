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
#include "gyre/core/logging.h"

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

train::AdamWConfig without_clipping(train::AdamWConfig c) {
  c.clip_grad = 0;
  return c;
}

std::string buckets_str(const std::vector<std::pair<size_t, size_t>>& b) {
  std::string s;
  for (size_t i = 0; i < b.size() && i < 4; ++i)
    s += fmt::format("{}[{}, {})", i ? ", " : "", b[i].first, b[i].second);
  if (b.size() > 4) s += ", ...";
  return s;
}

}  // namespace

void all_reduce_gradients(Comm& comm, train::NamedTensors& grads) {
  const Device device = check_f32(grads, "gradient", comm);
  if (comm.size() == 1) return;
  Tensor flat = Tensor::empty({total_numel(grads)}, DType::f32, device);
  int64_t off = 0;
  for (auto& [name, t] : grads) {
    flat.narrow(off, t.numel()).copy_from(t.reshape({t.numel()}));
    off += t.numel();
  }
  comm.all_reduce(flat.raw(), size_t(flat.numel()), DType::f32, ReduceOp::sum);
  off = 0;
  for (auto& [name, t] : grads) {
    Tensor dst = t.reshape({t.numel()});
    dst.copy_from(flat.narrow(off, t.numel()));
    off += t.numel();
  }
}

const char* dp_mode_name(DpMode m) { return m == DpMode::zero1 ? "zero1" : "all_reduce"; }

DpMode parse_dp_mode(const std::string& s) {
  if (s == "zero1") return DpMode::zero1;
  if (s == "all_reduce") return DpMode::all_reduce;
  GYRE_THROW(invalid_argument, "data-parallel mode '{}' is not one of zero1, all_reduce", s);
}

DataParallelOptimizer::DataParallelOptimizer(Comm& comm, train::AdamWConfig cfg,
                                             train::LrSchedule schedule, DpMode mode,
                                             int64_t bucket_elements)
    : comm_(comm),
      mode_(mode),
      cfg_(cfg),
      inner_(mode == DpMode::zero1 ? without_clipping(cfg) : cfg, schedule),
      bucket_elements_(bucket_elements) {
  if (bucket_elements < 1)
    GYRE_THROW(invalid_argument, "data-parallel bucket size {} elements: must be >= 1",
               bucket_elements);
}

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

std::pair<double, double> DataParallelOptimizer::split_sum_squares(const Tensor& shard) const {
  // One view of the shard per (bucket block, parameter) overlap, summed in one multi-tensor
  // reduction (one device-to-host transfer on CUDA).
  std::vector<Tensor> views;
  std::vector<bool> view_replicated;
  for (const Bucket& b : buckets_) {
    const Range r = b.owned;
    for (size_t i = b.first; i < b.last; ++i) {
      const int64_t lo = std::max(offsets_[i], r.begin), hi = std::min(offsets_[i + 1], r.end);
      if (hi <= lo) continue;
      views.push_back(shard.narrow(b.shard_offset + lo - r.begin, hi - lo));
      view_replicated.push_back(replicated_[i]);
    }
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

std::vector<Range> DataParallelOptimizer::owned_ranges() const {
  std::vector<Range> out;
  if (mode_ == DpMode::all_reduce) {
    if (!offsets_.empty()) out.push_back({0, offsets_.back()});
    return out;
  }
  for (const Bucket& b : buckets_) out.push_back(b.owned);
  return out;
}

Range DataParallelOptimizer::owned_range() const {
  const std::vector<Range> r = owned_ranges();
  if (r.size() > 1)
    GYRE_THROW(invalid_argument,
               "{}: ZeRO-1 over {} gradient buckets owns one range per bucket; use owned_ranges()",
               comm_.where(), r.size());
  return r.empty() ? Range{} : r[0];
}

size_t DataParallelOptimizer::state_bytes() const {
  int64_t n = 0;
  for (const Range& r : owned_ranges()) n += r.size();
  return size_t(n) * 2 * sizeof(float);
}

std::vector<std::pair<size_t, size_t>> DataParallelOptimizer::bucket_params() const {
  std::vector<std::pair<size_t, size_t>> out;
  for (const Bucket& b : buckets_) out.emplace_back(b.first, b.last);
  return out;
}

void DataParallelOptimizer::make_buckets(const train::NamedTensors& params) {
  // Backward order: from the last parameter to the first, a bucket closes once it is full.
  std::vector<std::pair<size_t, size_t>> ranges;
  size_t last = params.size();
  int64_t filled = 0;
  for (size_t i = params.size(); i-- > 0;) {
    filled += params[i].second.numel();
    if (filled >= bucket_elements_ || i == 0) {
      ranges.emplace_back(i, last);
      last = i;
      filled = 0;
    }
  }
  std::reverse(ranges.begin(), ranges.end());
  const int64_t world = comm_.size(), rank = comm_.rank();
  buckets_.clear();
  bucket_of_.assign(params.size(), 0);
  pos_.assign(params.size(), 0);
  padded_ = shard_ = 0;
  for (auto [first, end] : ranges) {
    Bucket b;
    b.first = first, b.last = end;
    b.begin = offsets_[first], b.end = offsets_[end];
    const int64_t n = b.end - b.begin;
    b.flat = padded_;
    if (mode_ == DpMode::zero1) {
      b.shard = (n + world - 1) / world;
      b.padded = b.shard * world;
      b.shard_offset = shard_;
      b.owned = {b.begin + std::min(n, rank * b.shard),
                 b.begin + std::min(n, (rank + 1) * b.shard)};
    } else {
      b.padded = b.shard = n;
      b.owned = {b.begin, b.end};
    }
    for (size_t i = first; i < end; ++i) {
      bucket_of_[i] = buckets_.size();
      pos_[i] = b.flat + offsets_[i] - b.begin;
    }
    padded_ += b.padded;
    shard_ += b.shard;
    buckets_.push_back(b);
  }
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
  if (params.empty())
    GYRE_THROW(invalid_argument, "{}: data-parallel step without parameters", comm_.where());
  std::vector<std::string> names;
  offsets_.assign(1, 0);
  for (auto& [name, t] : params) {
    names.push_back(name);
    offsets_.push_back(offsets_.back() + t.numel());
  }
  const int64_t n = offsets_.back();
  // Every rank must flatten the same number of elements in the same buckets, or the collectives
  // would mismatch: the element count and the tensor count (the buckets follow from the sizes).
  std::vector<int64_t> lo{n, int64_t(params.size())}, hi{-n, -int64_t(params.size())};
  comm_.all_reduce(lo, ReduceOp::max);
  comm_.all_reduce(hi, ReduceOp::max);
  if (lo[0] != n || -hi[0] != n || lo[1] != -hi[1])
    GYRE_THROW(invalid_argument,
               "{}: this rank has {} parameter elements in {} tensors but another rank has {} "
               "elements in {}: every DP rank must hold the same model",
               comm_.where(), n, params.size(), lo[0] != n ? lo[0] : -hi[0],
               lo[1] != int64_t(params.size()) ? lo[1] : -hi[1]);
  make_buckets(params);
  check_loaded_layout();
  names_ = std::move(names);  // the layout is fixed from here on
  // Zero-filled: the padding is reduced and gathered too and must stay 0.
  flat_grad_ = Tensor::zeros({padded_}, DType::f32, device_);
  if (mode_ == DpMode::zero1) {
    flat_param_ = Tensor::zeros({padded_}, DType::f32, device_);
    param_shard_ = Tensor::zeros({shard_}, DType::f32, device_);
    grad_shard_ = Tensor::zeros({shard_}, DType::f32, device_);
  }
}

void DataParallelOptimizer::check_loaded_layout() const {
  if (!loaded_buckets_ || buckets_.empty()) return;
  const auto mine = bucket_params();
  if (loaded_buckets_->empty() ? mine.size() == 1 : *loaded_buckets_ == mine) return;
  if (loaded_buckets_->empty())
    GYRE_THROW(invalid_argument,
               "{}: optimizer checkpoint {} holds ZeRO-1 state in the single-shard layout of gyre "
               "before bucketed gradient reduction, but this optimizer shards each of {} gradient "
               "buckets ({}) separately: the Adam moments cannot be mapped onto their elements. "
               "Resume from a checkpoint written by this version, or start the optimizer state "
               "afresh (load the model weights only)",
               comm_.where(), loaded_from_, mine.size(), buckets_str(mine));
  GYRE_THROW(invalid_argument,
             "{}: optimizer checkpoint {} was written with {} ZeRO-1 gradient buckets ({}), this "
             "optimizer has {} ({}): another model or another bucket size; the Adam moments "
             "cannot be mapped onto their elements",
             comm_.where(), loaded_from_, loaded_buckets_->size(), buckets_str(*loaded_buckets_),
             mine.size(), buckets_str(mine));
}

void DataParallelOptimizer::flatten(const train::NamedTensors& ts, Tensor& flat, size_t first,
                                    size_t last) const {
  for (size_t i = first; i < last; ++i) {
    const Tensor& t = ts[i].second;
    flat.narrow(pos_[i], t.numel()).copy_from(t.reshape({t.numel()}));
  }
}

void DataParallelOptimizer::unflatten(const Tensor& flat, train::NamedTensors& ts,
                                      ops::Bf16WeightCache* copies) const {
  if (copies) {
    // One launch: the f32 parameters and the bf16 copies of those that have one, from one read of
    // the flat vector. The cache is fresh afterwards only if that covered every copy.
    std::vector<Tensor> src, dst;
    std::vector<uint16_t*> bf16(ts.size(), nullptr);
    std::vector<const Tensor*> written;
    src.reserve(ts.size()), dst.reserve(ts.size());
    for (size_t i = 0; i < ts.size(); ++i) {
      const Tensor& t = ts[i].second;
      src.push_back(flat.narrow(pos_[i], t.numel()));
      dst.push_back(t.reshape({t.numel()}));  // a view: writes reach the parameter
      if ((bf16[i] = copies->copy_to_write(t))) written.push_back(&t);
    }
    if (!written.empty()) {
      std::vector<const Tensor*> sp(ts.size());
      std::vector<Tensor*> dp(ts.size());
      for (size_t i = 0; i < ts.size(); ++i) sp[i] = &src[i], dp[i] = &dst[i];
      ops::copy_many(sp, dp, bf16);
      copies->copies_written(written);
      return;
    }
    copies->copies_written(written);  // nothing cached (yet): fresh only if there are no copies
  }
  for (size_t i = 0; i < ts.size(); ++i) {
    Tensor& t = ts[i].second;
    Tensor dst = t.reshape({t.numel()});
    dst.copy_from(flat.narrow(pos_[i], t.numel()));
  }
}

void DataParallelOptimizer::start_bucket(Bucket& b, const train::NamedTensors& grads) {
  flatten(grads, flat_grad_, b.first, b.last);  // on the caller's (compute) stream
  Tensor in = flat_grad_.narrow(b.flat, b.padded);
  if (mode_ == DpMode::all_reduce) {
    comm_.all_reduce_start(in.raw(), size_t(b.padded), DType::f32, ReduceOp::sum);
  } else {
    Tensor out = grad_shard_.narrow(b.shard_offset, b.shard);
    comm_.reduce_scatter_start(in.raw(), out.raw(), size_t(b.shard), DType::f32, ReduceOp::sum);
  }
  b.started = true;
}

void DataParallelOptimizer::begin_overlap(const train::NamedTensors& params,
                                          const train::NamedTensors& grads) {
  layout(params, grads);
  if (armed_)
    GYRE_THROW(invalid_argument,
               "{}: begin_overlap twice without a step() in between (arm the gradient buckets "
               "once, for the step's last backward)",
               comm_.where());
  armed_ = true;
  armed_grads_ = grads;
  reported_.assign(grads.size(), 0);
  started_early_ = 0;
  for (Bucket& b : buckets_) b.ready = 0, b.started = false;
}

void DataParallelOptimizer::grads_ready(size_t begin, size_t end) {
  if (!armed_)
    GYRE_THROW(invalid_argument,
               "{}: gradients reported ready without begin_overlap (arm the buckets before the "
               "step's last backward)",
               comm_.where());
  if (begin > end || end > reported_.size())
    GYRE_THROW(invalid_argument, "{}: gradients [{}, {}) reported ready, but there are {}",
               comm_.where(), begin, end, reported_.size());
  // Descending, like the reports themselves: buckets start last one first, as in step().
  for (size_t i = end; i-- > begin;) {
    if (reported_[i])
      GYRE_THROW(invalid_argument,
                 "{}: gradient {} '{}' reported ready twice in one step: the hook must be active "
                 "only for the backward that completes the step (its last micro-batch)",
                 comm_.where(), i, names_[i]);
    reported_[i] = 1;
    Bucket& b = buckets_[bucket_of_[i]];
    if (++b.ready == b.last - b.first) {
      start_bucket(b, armed_grads_);
      ++started_early_;
    }
  }
}

void DataParallelOptimizer::abort_overlap() noexcept {
  if (!armed_) return;
  armed_ = false;
  armed_grads_.clear();
  if (started_early_ > 0) {
    try {
      log::error(
          "{}: the backward failed after starting {} of {} gradient-bucket reductions on this "
          "rank; the data-parallel group is out of step (its ranks' next collectives will time "
          "out)",
          comm_.where(), started_early_, buckets_.size());
    } catch (...) {  // logging must not turn an unwinding error into std::terminate
    }
  }
  for (Bucket& b : buckets_) b.ready = 0, b.started = false;
  started_early_ = 0;
}

std::vector<float> DataParallelOptimizer::reduced_grad() const {
  if (!reduced_grad_.defined()) return {};
  if (mode_ == DpMode::all_reduce) return reduced_grad_.narrow(0, offsets_.back()).to_vector();
  const std::vector<float> shard = reduced_grad_.to_vector();
  std::vector<float> out;
  for (const Bucket& b : buckets_)
    out.insert(out.end(), shard.begin() + b.shard_offset,
               shard.begin() + b.shard_offset + b.owned.size());
  return out;
}

void DataParallelOptimizer::set_bf16_copies(std::weak_ptr<ops::Bf16WeightCache> cache) {
  // all_reduce: the inner AdamW updates the parameters themselves and writes the copies in its
  // kernel. zero1: it updates a shard that has no copies; the final unflatten writes them.
  inner_.set_bf16_copies(mode_ == DpMode::all_reduce ? cache
                                                     : std::weak_ptr<ops::Bf16WeightCache>());
  bf16_copies_ = std::move(cache);
}

std::pair<double, double> DataParallelOptimizer::step(train::NamedTensors& params,
                                                      train::NamedTensors& grads) {
  // Attached copies are stale from here until a complete write says otherwise (a step that throws
  // half-way is never trusted).
  const std::shared_ptr<ops::Bf16WeightCache> copies = bf16_copies_.lock();
  if (copies) copies->mark_stale();
  layout(params, grads);
  if (armed_) {
    armed_ = false;
    for (size_t i = 0; i < grads.size(); ++i)
      if (grads[i].second.address() != armed_grads_[i].second.address())
        GYRE_THROW(invalid_argument,
                   "{}: step() got gradient '{}' in other memory than begin_overlap armed",
                   comm_.where(), grads[i].first);
    armed_grads_.clear();
  } else {
    for (Bucket& b : buckets_) b.started = false;
    started_early_ = 0;
  }
  // The buckets no hook started, in the hooks' order (the last bucket first): every rank issues
  // the same calls in the same order whether it overlapped or not.
  for (size_t k = buckets_.size(); k-- > 0;)
    if (!buckets_[k].started) start_bucket(buckets_[k], grads);
  comm_.finish_started();  // the compute stream waits for the reductions (no host wait)
  if (mode_ == DpMode::all_reduce) {
    unflatten(flat_grad_, grads);
    reduced_grad_ = flat_grad_;         // no copy: nothing writes flat_grad_ until the next step
    return inner_.step(params, grads);  // global norm: every rank now holds the summed gradient
  }
  // ZeRO-1: this rank's shard holds the summed gradient of its block of every bucket.
  if (keep_reduced_grad_) reduced_grad_ = grad_shard_.clone();  // clipping scales the shard
  // Global norm from the shards' sums of squares (Megatron's clip_grad_norm over the distributed
  // optimizer's shards), then the same clipping rule as train::AdamW::step (padding is 0).
  // DP x TP: summed over the DP group (this tp rank's full shard), then over the tp group.
  double sq = 0;
  if (mp_) {
    auto [sharded, replicated] = split_sum_squares(grad_shard_);
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
  // This rank's parameter blocks, straight from the parameters (replicas are identical, so the
  // local copy is the truth); the padding stays 0 (AdamW keeps a 0 with a 0 gradient at 0).
  for (const Bucket& b : buckets_)
    for (size_t i = b.first; i < b.last; ++i) {
      const int64_t lo = std::max(offsets_[i], b.owned.begin);
      const int64_t hi = std::min(offsets_[i + 1], b.owned.end);
      if (hi <= lo) continue;
      const Tensor& p = params[i].second;
      param_shard_.narrow(b.shard_offset + lo - b.owned.begin, hi - lo)
          .copy_from(p.reshape({p.numel()}).narrow(lo - offsets_[i], hi - lo));
    }
  train::NamedTensors p{{"zero1_shard", param_shard_}}, g{{"zero1_shard", grad_shard_}};
  auto [unused_norm, lr] = inner_.step(p, g);
  for (const Bucket& b : buckets_)
    comm_.all_gather_start(param_shard_.narrow(b.shard_offset, b.shard).raw(),
                           flat_param_.narrow(b.flat, b.padded).raw(),
                           size_t(b.shard) * sizeof(float));
  comm_.finish_started();
  unflatten(flat_param_, params, copies.get());
  return {norm, lr};
}

void DataParallelOptimizer::save(const std::string& dir) const {
  const std::string sub =
      fmt::format("{}/dp_rank_{:03d}_of_{:03d}", dir, comm_.rank(), comm_.size());
  inner_.save(sub);
  nlohmann::json j = {{"mode", dp_mode_name(mode_)},
                      {"dp_size", comm_.size()},
                      {"padded", padded_},
                      {"shard", shard_},
                      {"bucket_elements", bucket_elements_},
                      {"buckets", nlohmann::json::array()}};
  for (auto [first, last] : bucket_params())
    j["buckets"].push_back(nlohmann::json::array({first, last}));
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
  std::vector<std::pair<size_t, size_t>> buckets;
  try {
    f >> j;
    if (j.at("mode").get<std::string>() != dp_mode_name(mode_))
      GYRE_THROW(invalid_argument, "{}: optimizer checkpoint {} was written in mode {}, not {}",
                 comm_.where(), sub, j.at("mode").get<std::string>(), dp_mode_name(mode_));
    // No "buckets": written before bucketed reduction (one shard of the whole flat vector).
    if (j.contains("buckets"))
      for (const auto& b : j.at("buckets"))
        buckets.emplace_back(b.at(0).get<size_t>(), b.at(1).get<size_t>());
  } catch (const nlohmann::json::exception& e) {
    GYRE_THROW(invalid_argument, "{}/data_parallel.json: {}", sub, e.what());
  }
  // all_reduce keys its Adam state by parameter name: any bucket layout fits.
  if (mode_ == DpMode::zero1) {
    loaded_buckets_ = std::move(buckets);
    loaded_from_ = sub;
    check_loaded_layout();  // at once when the layout is already fixed, else at the first step
  }
  inner_.load(sub);
}

}  // namespace gyre::dist
