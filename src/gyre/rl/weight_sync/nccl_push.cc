// Trainer side of SGLang's NCCL weight update (nccl_push.h).
#include "gyre/rl/weight_sync/nccl_push.h"

#include <algorithm>
#include <chrono>
#include <exception>
#include <functional>
#include <future>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "gyre/backend/ops.h"
#include "gyre/core/error.h"
#include "gyre/core/logging.h"
#include "gyre/core/timer.h"
#include "gyre/dist/nccl_comm.h"
#include "gyre/dist/tcp_rendezvous.h"
#include "gyre/dist/weight_update_group.h"
#include "gyre/model/tensor_parallel.h"
#include "gyre/serve/http_client.h"

namespace gyre::rl {

using json = nlohmann::json;

struct NcclWeightPusher::Impl {
  NcclWeightPusher* self = nullptr;  // connect()
  NcclPushOptions o;
  std::vector<serve::Url> urls;
  serve::HttpClient http{1};
  std::unique_ptr<dist::Comm> group;
  Tensor bucket;  // u8 on the GPU, reused across pushes

  // POSTs `bodies[i]` to engine i, all at once; returns a future per engine.
  // `timeout_s` bounds each reply (0: o.timeout_s).
  std::vector<std::future<serve::HttpResponse>> post_all(const std::string& target,
                                                         const std::vector<std::string>& bodies,
                                                         double timeout_s = 0) {
    std::vector<std::future<serve::HttpResponse>> out;
    for (size_t i = 0; i < urls.size(); ++i) {
      auto p = std::make_shared<std::promise<serve::HttpResponse>>();
      out.push_back(p->get_future());
      serve::ClientRequest r;
      r.method = "POST", r.target = target, r.body = bodies[i];
      r.timeout_s = timeout_s > 0 ? timeout_s : o.timeout_s;
      http.request(urls[i], std::move(r),
                   [p](serve::HttpResponse&& resp) { p->set_value(std::move(resp)); });
    }
    return out;
  }

  // The first reply that has already come back unsuccessful, as "<engine>: <message>" ("" while
  // none has): such an engine will not join the NCCL call the trainer is waiting in.
  std::string early_failure(std::vector<std::future<serve::HttpResponse>>& replies,
                            std::vector<std::optional<serve::HttpResponse>>& seen) {
    for (size_t i = 0; i < replies.size(); ++i) {
      if (!seen[i] && replies[i].valid() &&
          replies[i].wait_for(std::chrono::seconds(0)) == std::future_status::ready)
        seen[i] = replies[i].get();
      if (seen[i] && !success(*seen[i])) return urls[i].origin() + ": " + seen[i]->error_message();
    }
    return "";
  }
  static bool success(const serve::HttpResponse& r) {
    auto j = json::parse(r.body, nullptr, false);
    return r.ok() && j.is_object() && j.value("success", false);
  }

  using Take = std::function<void(size_t, const Tensor&)>;
  using Done = std::function<void(const WeightBucket&)>;
  // Sends `plan` labelled `version`; `walk(take, done)` hands over the full tensors bucket by
  // bucket (gather_weight_buckets, or a plain list); `local` (the tensors as this rank holds
  // them) is checked before anything is sent. Any error — a bad tensor, connect(), a refused
  // bucket, a broken group — only stops the sending: the walk runs to its end (under TP every tp
  // rank is in the same gathers), then the first error is rethrown.
  SyncStats send(const WeightPushPlan& plan, int64_t version,
                 const std::vector<model::NamedTensor>& local,
                 const std::function<void(const Take&, const Done&)>& walk);

  // Every reply must be 200 with {"success": true}; otherwise an io Error naming the engine.
  void expect_success(std::vector<std::future<serve::HttpResponse>>& replies,
                      std::vector<std::optional<serve::HttpResponse>>& seen, const char* what) {
    std::string failures;
    for (size_t i = 0; i < replies.size(); ++i) {
      if (!seen[i]) seen[i] = replies[i].get();
      if (success(*seen[i])) continue;
      failures += fmt::format("{}{}: {}", failures.empty() ? "" : "; ", urls[i].origin(),
                              seen[i]->error_message());
    }
    if (!failures.empty()) GYRE_THROW(io, "{} failed on {}", what, failures);
  }
};

SyncStats NcclWeightPusher::Impl::send(const WeightPushPlan& plan, int64_t version,
                                       const std::vector<model::NamedTensor>& local,
                                       const std::function<void(const Take&, const Done&)>& walk) {
  Timer timer;
  const DType wire = o.wire_dtype;
  const size_t esize = dtype_size(wire);
  std::exception_ptr failure;  // the first error; the walk goes on without sending
  auto attempt = [&](const std::function<void()>& f) {
    if (failure) return;
    try {
      f();
    } catch (...) {
      failure = std::current_exception();
    }
  };
  attempt([&] {
    for (const auto& t : local)
      if (t.tensor.device() != Device::cuda || t.tensor.dtype() != DType::f32)
        GYRE_THROW(invalid_argument,
                   "NCCL weight push: '{}' is {} on {}; the trainer sends f32 GPU tensors (train "
                   "with --device cuda, or use the disk transport)",
                   t.name, dtype_name(t.tensor.dtype()), device_name(t.tensor.device()));
    if (!group) self->connect();
    if (!bucket.defined() || size_t(bucket.numel()) < plan.max_bucket_bytes)
      bucket = Tensor::empty({int64_t(plan.max_bucket_bytes)}, DType::u8, Device::cuda);
  });
  uint64_t sent = 0, raw = 0;
  size_t off = 0;
  json names = json::array(), dtypes = json::array(), shapes = json::array();
  auto take = [&](size_t k, const Tensor& src) {
    attempt([&] {
      const std::string& name = plan.names[k];
      GYRE_CHECK(src.device() == Device::cuda && src.dtype() == DType::f32 &&
                     src.shape() == plan.shapes[k],
                 "NCCL weight push: '{}' is not the planned f32 GPU tensor", name);
      Tensor slot = Tensor::borrow(static_cast<char*>(bucket.raw()) + off, src.shape(), wire,
                                   Device::cuda, bucket.storage());
      ops::copy(src, slot);  // f32 -> wire dtype on the GPU (round to nearest even for bf16)
      names.push_back(name);
      dtypes.push_back(dist::torch_dtype_name(wire));
      shapes.push_back(src.shape());
      off += size_t(src.numel()) * esize;
      raw += src.nbytes();
    });
  };
  auto done = [&](const WeightBucket&) {
    attempt([&] {
      const std::string body = json{{"names", names},
                                    {"dtypes", dtypes},
                                    {"shapes", shapes},
                                    {"group_name", o.group_name},
                                    {"load_format", "flattened_bucket"},
                                    {"flush_cache", false},
                                    {"weight_version", std::to_string(version)}}
                                   .dump();
      auto replies =
          post_all("/update_weights_from_distributed", std::vector<std::string>(urls.size(), body));
      std::vector<std::optional<serve::HttpResponse>> seen(replies.size());
      // An engine that refuses before joining the broadcast (no such group, an unknown dtype, out
      // of memory) would leave this broadcast waiting for the timeout: its reply aborts the wait.
      auto set_check = [&](std::function<std::string()> f) {
#ifdef GYRE_HAVE_NCCL  // (without NCCL no group can exist: nccl_comm_init throws)
        if (auto* n = dynamic_cast<dist::NcclComm*>(group.get())) n->set_abort_check(std::move(f));
#else
        (void)f;
#endif
      };
      set_check([&] {
        const std::string f = early_failure(replies, seen);
        return f.empty() ? f : "an engine will not receive this bucket: " + f;
      });
      try {
        group->broadcast(bucket.raw(), off, 0);  // waits for the packing kernels first
        set_check({});
      } catch (const std::exception& e) {
        set_check({});
        group.reset();  // broken: the next push reconnects (destroy + init)
        GYRE_THROW(io, "NCCL weight push v{}: broadcast failed: {}", version, e.what());
      }
      sent += off;
      expect_success(replies, seen, "NCCL weight push: update_weights_from_distributed");
    });
    off = 0;
    names = json::array(), dtypes = json::array(), shapes = json::array();
  };
  walk(take, done);
  if (failure) std::rethrow_exception(failure);
  SyncStats s;
  s.method = "nccl";
  s.version = version;
  s.bytes = sent;
  s.raw_bytes = raw;
  s.tensors = s.changed_tensors = int64_t(plan.names.size());
  s.seconds = timer.elapsed();
  log_sync(s);
  return s;
}

NcclWeightPusher::NcclWeightPusher(NcclPushOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->self = this;
  impl_->o = std::move(options);
  if (impl_->o.engine_urls.empty())
    GYRE_THROW(invalid_argument, "NCCL weight push: no engine URLs");
  if (impl_->o.bucket_bytes < 1024)
    GYRE_THROW(invalid_argument, "--update-weight-buffer-size {} bytes is too small (>= 1 KiB)",
               impl_->o.bucket_bytes);
  dist::torch_dtype_name(impl_->o.wire_dtype);  // rejects a dtype with no wire name
  if (impl_->o.wire_dtype == DType::f16)
    GYRE_THROW(invalid_argument, "NCCL weight push: wire dtype f16 is not supported; use bf16/f32");
  for (const auto& u : impl_->o.engine_urls)
    impl_->urls.push_back(
        serve::Url::parse(u.find("://") == std::string::npos ? "http://" + u : u));
  if (impl_->o.master_address.empty()) impl_->o.master_address = "127.0.0.1";
}

// Leaves the group on both sides at once. ncclCommFinalize waits for the other members of the
// communicator, so finalising the trainer's member alone blocked the process at exit while the
// engines kept theirs (session 8, two H200s: `gyre train` never returned). The engines are told to
// destroy theirs (each finalises in its HTTP handler) while this side finalises; a finalize that
// does not finish within a bounded time (an engine gone) aborts instead.
NcclWeightPusher::~NcclWeightPusher() {
  Impl& m = *impl_;
  if (!m.group) return;
  constexpr double kLeaveTimeoutS = 30;
  std::vector<std::future<serve::HttpResponse>> replies;
  try {
    m.o.timeout_s = std::min(m.o.timeout_s, kLeaveTimeoutS);
    replies = m.post_all(
        "/destroy_weights_update_group",
        std::vector<std::string>(m.urls.size(), json{{"group_name", m.o.group_name}}.dump()));
  } catch (const std::exception& e) {
    log::warn("weight sync nccl: could not ask the engines to leave group '{}': {}", m.o.group_name,
              e.what());
  }
#ifdef GYRE_HAVE_NCCL
  if (auto* n = dynamic_cast<dist::NcclComm*>(m.group.get())) n->set_timeout(m.o.timeout_s);
#endif
  m.group.reset();  // finalize (the engines finalise theirs concurrently), or abort on timeout
  // One deadline for all the replies (each request is also bounded by its own timeout).
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                            std::chrono::duration<double>(m.o.timeout_s));
  bool all_left = replies.size() == m.urls.size();
  for (size_t i = 0; i < replies.size(); ++i) {
    if (replies[i].wait_until(deadline) != std::future_status::ready) {
      log::warn("weight sync nccl: {} did not answer destroy_weights_update_group",
                m.urls[i].origin());
      all_left = false;
      continue;
    }
    auto r = replies[i].get();
    if (!Impl::success(r)) {
      log::warn("weight sync nccl: {} destroy_weights_update_group: {}", m.urls[i].origin(),
                r.error_message());
      all_left = false;
    }
  }
  if (all_left) log::info("weight sync nccl: left group '{}'", m.o.group_name);
}

bool NcclWeightPusher::connected() const { return impl_->group != nullptr; }

void NcclWeightPusher::connect() {
  Impl& m = *impl_;
  m.group.reset();
  // One deadline for every wait below (NcclPushOptions::connect_timeout_s).
  const double budget =
      m.o.connect_timeout_s > 0 ? std::min(m.o.connect_timeout_s, m.o.timeout_s) : m.o.timeout_s;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(budget);
  const bool one_budget = m.o.connect_timeout_s > 0;
  auto left = [&] {
    if (!one_budget) return m.o.timeout_s;
    const double s =
        std::chrono::duration<double>(deadline - std::chrono::steady_clock::now()).count();
    return std::max(1.0, s);
  };
  const int world = int(m.urls.size()) + 1;
  const int port = m.o.master_port > 0 ? m.o.master_port : dist::pick_free_port();
  // A group of that name left over from an earlier trainer: dropped first (errors ignored).
  std::vector<std::string> destroy(m.urls.size(), json{{"group_name", m.o.group_name}}.dump());
  for (auto& f : m.post_all("/destroy_weights_update_group", destroy, left())) f.get();
  std::vector<std::string> init;
  for (size_t i = 0; i < m.urls.size(); ++i)
    init.push_back(json{
        {"master_address", m.o.master_address},
        {"master_port", port},
        {"rank_offset", int(i) + 1},
        {"world_size", world},
        {"group_name", m.o.group_name},
        {"backend",
         "nccl"}}.dump());
  auto replies = m.post_all("/init_weights_update_group", init, left());
  std::vector<std::optional<serve::HttpResponse>> seen(replies.size());
  // An engine that answers "no" at once (a CPU server, a bad field) never joins: stop waiting.
  auto refused = [&] { return m.early_failure(replies, seen); };
  // Rank 0 joins while the engines do; a failed join still waits for the replies (they carry the
  // engines' side of the story) before it rethrows.
  std::unique_ptr<dist::Comm> group;
  std::string error;
  try {
    dist::RendezvousOptions ro;
    ro.host = m.o.master_address, ro.port = port, ro.rank = 0, ro.world_size = world;
    ro.group = m.o.group_name, ro.timeout_s = left();
    ro.abort_check = refused;
    const std::string id = dist::tcp_rendezvous_share(ro, dist::nccl_unique_id());
    group = dist::nccl_comm_init(id, world, 0, 0, left(), m.o.group_name);
    // The pushes' collectives get the full timeout again.
#ifdef GYRE_HAVE_NCCL  // (without NCCL nccl_comm_init has thrown already)
    if (auto* n = dynamic_cast<dist::NcclComm*>(group.get())) n->set_timeout(m.o.timeout_s);
#endif
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (!error.empty()) {
    // The engines give up on their own deadline; what they said within a few seconds helps.
    std::string engines;
    for (size_t i = 0; i < replies.size(); ++i) {
      if (!seen[i] && replies[i].wait_for(std::chrono::seconds(3)) == std::future_status::ready)
        seen[i] = replies[i].get();
      if (seen[i] && !Impl::success(*seen[i]))
        engines += fmt::format("; {}: {}", m.urls[i].origin(), seen[i]->error_message());
    }
    GYRE_THROW(io, "NCCL weight push: joining group '{}' as rank 0 failed: {}{}", m.o.group_name,
               error, engines);
  }
  m.expect_success(replies, seen, "NCCL weight push: init_weights_update_group");
  m.group = std::move(group);
  log::info("weight sync nccl: group '{}' of {} ranks formed at {}:{}", m.o.group_name, world,
            m.o.master_address, port);
}

WeightPushPlan plan_weight_push(std::vector<std::string> names, std::vector<Shape> full_shapes,
                                DType wire, size_t bucket_bytes) {
  if (names.size() != full_shapes.size())
    GYRE_THROW(invalid_argument, "plan_weight_push: {} names but {} shapes", names.size(),
               full_shapes.size());
  if (bucket_bytes == 0) GYRE_THROW(invalid_argument, "plan_weight_push: bucket_bytes is 0");
  WeightPushPlan p;
  p.names = std::move(names);
  p.shapes = std::move(full_shapes);
  const size_t esize = dtype_size(wire);
  auto bytes_of = [&](size_t k) {
    size_t n = 1;
    for (int64_t d : p.shapes[k]) n *= size_t(d);
    return n * esize;
  };
  for (size_t i = 0; i < p.shapes.size();) {
    WeightBucket b;
    b.first = i;
    size_t j = i;
    while (j < p.shapes.size() && (j == i || b.bytes + bytes_of(j) <= bucket_bytes))
      b.bytes += bytes_of(j++);
    b.last = j;
    p.buckets.push_back(b);
    p.max_bucket_bytes = std::max(p.max_bucket_bytes, b.bytes);
    p.wire_bytes += b.bytes;
    i = j;
  }
  return p;
}

WeightPushPlan plan_weight_push(const model::CausalLM& model, DType wire, size_t bucket_bytes) {
  const std::vector<model::NamedTensor> params = model.parameters();
  const model::TpLayout* tp = model.tensor_parallel();
  std::vector<std::string> names;
  std::vector<Shape> shapes;
  for (size_t k = 0; k < params.size(); ++k) {
    names.push_back(params[k].name);
    Shape s = params[k].tensor.shape();
    if (tp && tp->split.at(k) == model::TpSplit::rows) s.at(0) *= tp->size;
    if (tp && tp->split.at(k) == model::TpSplit::cols) s.at(1) *= tp->size;
    shapes.push_back(std::move(s));
  }
  return plan_weight_push(std::move(names), std::move(shapes), wire, bucket_bytes);
}

void gather_weight_buckets(const model::CausalLM& model, const WeightPushPlan& plan,
                           const std::function<void(size_t, const Tensor&)>& take,
                           const std::function<void(const WeightBucket&)>& done) {
  const std::vector<model::NamedTensor> params = model.parameters();
  GYRE_CHECK(params.size() == plan.names.size(),
             "gather_weight_buckets: the plan has {} tensors, the model {} parameters",
             plan.names.size(), params.size());
  const model::TpLayout* tp = model.tensor_parallel();
  for (const WeightBucket& b : plan.buckets) {
    for (size_t k = b.first; k < b.last; ++k) {
      const Tensor& local = params[k].tensor;
      const model::TpSplit split = tp ? tp->split.at(k) : model::TpSplit::replicated;
      if (split == model::TpSplit::replicated) {
        take(k, local);
        continue;
      }
      // The column-block gather of the vocab-sharded logits is the gather of any split: a
      // column-split [R, c] becomes [R, n*c] (rank r's block at columns [r*c, (r+1)*c)); a row
      // split is the same gather of the shard viewed as one row, i.e. the rank blocks one after
      // another — what gather_full assembles, with the same all-gather of each shard's bytes.
      const Tensor as_cols =
          split == model::TpSplit::cols ? local : local.reshape({1, local.numel()});
      const Tensor full = model::tp_gather_vocab(*tp, as_cols).reshape(plan.shapes[k]);
      take(k, full);
    }
    done(b);
  }
}

void follow_weight_push(const model::CausalLM& model, DType wire, size_t bucket_bytes) {
  gather_weight_buckets(
      model, plan_weight_push(model, wire, bucket_bytes), [](size_t, const Tensor&) {},
      [](const WeightBucket&) {});
}

const NcclPushOptions& NcclWeightPusher::options() const { return impl_->o; }

SyncStats NcclWeightPusher::push(const model::CausalLM& model, int64_t version) {
  Impl& m = *impl_;
  const WeightPushPlan plan = plan_weight_push(model, m.o.wire_dtype, m.o.bucket_bytes);
  return m.send(plan, version, model.parameters(), [&](const auto& take, const auto& done) {
    gather_weight_buckets(model, plan, take, done);
  });
}

SyncStats NcclWeightPusher::push_tensors(const std::vector<model::NamedTensor>& tensors,
                                         int64_t version) {
  Impl& m = *impl_;
  std::vector<std::string> names;
  std::vector<Shape> shapes;
  for (const auto& t : tensors) names.push_back(t.name), shapes.push_back(t.tensor.shape());
  const WeightPushPlan plan =
      plan_weight_push(std::move(names), std::move(shapes), m.o.wire_dtype, m.o.bucket_bytes);
  return m.send(plan, version, tensors, [&](const auto& take, const auto& done) {
    for (const WeightBucket& b : plan.buckets) {
      for (size_t k = b.first; k < b.last; ++k) take(k, tensors[k].tensor);
      done(b);
    }
  });
}

}  // namespace gyre::rl
