// Disaggregated rollout for `gyre train` (see remote_rollout.h).
#include "gyre/rl/loop/remote_rollout.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <filesystem>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>

#include "gyre/core/error.h"
#include "gyre/core/logging.h"
#include "gyre/core/timer.h"
#include "gyre/dist/bootstrap.h"
#include "gyre/rl/weight_sync/disk_sync.h"
#include "gyre/serve/http_client.h"
#include "gyre/serve/http_rollout_client.h"

namespace gyre::rl {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// "host:port" or "http://host:port[/]" -> "http://host:port".
std::string normalise_url(const std::string& addr, const char* flag) {
  std::string a = addr;
  if (a.rfind("https://", 0) == 0)
    GYRE_THROW(invalid_argument, "{} '{}': https is not supported; use http:// (loopback/VPC)",
               flag, addr);
  if (a.rfind("http://", 0) == 0) a = a.substr(7);
  while (!a.empty() && a.back() == '/') a.pop_back();
  const size_t colon = a.rfind(':');
  bool port_ok = colon != std::string::npos && colon > 0 && colon + 1 < a.size();
  if (port_ok)
    for (size_t i = colon + 1; i < a.size(); ++i) port_ok = port_ok && std::isdigit(a[i]);
  if (!port_ok || a.find('/') != std::string::npos)
    GYRE_THROW(invalid_argument,
               "{} '{}' is not an address: expected host:port or http://host:port", flag, addr);
  return "http://" + a;
}

// Several engines as one: generate rotates, control calls reach every engine.
class FanOutRolloutClient final : public infer::RolloutClient {
 public:
  explicit FanOutRolloutClient(std::vector<std::unique_ptr<infer::RolloutClient>> engines)
      : engines_(std::move(engines)) {}
  using RolloutClient::generate;
  void generate(infer::GenerateRequest req,
                std::function<void(infer::GenerateResult&&)> done) override {
    const size_t i = next_.fetch_add(1) % engines_.size();
    engines_[i]->generate(std::move(req), std::move(done));
  }
  void abort_all() override {
    for (auto& e : engines_) e->abort_all();
  }
  void pause() override {
    for (auto& e : engines_) e->pause();
  }
  void resume() override {
    for (auto& e : engines_) e->resume();
  }
  bool flush_cache() override {
    bool ok = true;
    for (auto& e : engines_) ok = e->flush_cache() && ok;
    return ok;
  }
  int64_t weight_version() override {
    int64_t v = std::numeric_limits<int64_t>::max();
    for (auto& e : engines_) v = std::min(v, e->weight_version());
    return v;
  }
  int64_t sync_weights(const std::function<void()>& apply, const std::string& hf_dir) override {
    if (apply) apply();
    int64_t v = std::numeric_limits<int64_t>::max();
    for (auto& e : engines_) v = std::min(v, e->sync_weights(nullptr, hf_dir));
    return v;
  }
  std::string describe() const override {
    std::string s;
    for (auto& e : engines_) s += (s.empty() ? "" : ", ") + e->describe();
    return s;
  }

 private:
  std::vector<std::unique_ptr<infer::RolloutClient>> engines_;
  std::atomic<size_t> next_{0};
};

}  // namespace

std::vector<std::string> remote_engine_urls(const TrainConfig& cfg) {
  std::vector<std::string> urls;
  for (const auto& a : cfg.rollout_external_engine_addrs)
    urls.push_back(normalise_url(a, "--rollout-external-engine-addrs"));
  if (!cfg.sglang_router_ip.empty()) {
    if (cfg.sglang_router_port <= 0)
      GYRE_THROW(invalid_argument,
                 "--sglang-router-ip {} needs --sglang-router-port (the router's port)",
                 cfg.sglang_router_ip);
    if (!urls.empty())
      GYRE_THROW(invalid_argument,
                 "--sglang-router-ip and --rollout-external-engine-addrs both name engines; give "
                 "one of them (the router already spreads requests over its workers)");
    urls.push_back(normalise_url(
        cfg.sglang_router_ip + ":" + std::to_string(cfg.sglang_router_port), "--sglang-router-ip"));
  } else if (cfg.sglang_router_port > 0) {
    GYRE_THROW(invalid_argument, "--sglang-router-port {} needs --sglang-router-ip",
               cfg.sglang_router_port);
  }
  return urls;
}

std::unique_ptr<infer::RolloutClient> make_remote_rollout_client(
    const std::vector<std::string>& urls) {
  GYRE_CHECK(!urls.empty(), "make_remote_rollout_client: no engine address");
  std::vector<std::unique_ptr<infer::RolloutClient>> clients;
  for (const auto& u : urls) {
    serve::HttpRolloutClientConfig c;
    c.url = u;
    auto client = std::make_unique<serve::HttpRolloutClient>(c);
    // Fail now, naming the address, if nothing answers there (instead of at the first rollout).
    try {
      client->weight_version();
    } catch (const Error& e) {
      GYRE_THROW(io,
                 "rollout engine {} does not answer ({}); start it first (gyre serve --model DIR "
                 "--port N, or gyre router) or fix the address",
                 u, e.what());
    }
    clients.push_back(std::move(client));
  }
  if (clients.size() == 1) return std::move(clients.front());
  return std::make_unique<FanOutRolloutClient>(std::move(clients));
}

RemoteWeightPusher::RemoteWeightPusher(std::string dir, DType dtype)
    : dir_(std::move(dir)), dtype_(dtype) {
  create_dir();
}

void RemoteWeightPusher::prepare() {
  create_dir();
  settle_transport();
}

void RemoteWeightPusher::settle_transport() {
  if (!nccl_ || nccl_->connected()) return;
  try {
    nccl_->connect();
  } catch (const Error& e) {
    if (nccl_required_) throw;
    log::warn(
        "weight sync: the NCCL weight-update group could not be formed ({}); pushing through "
        "{} instead (--update-weight-transport disk skips the attempt)",
        e.what(), dir_);
    nccl_.reset();
  }
}

void RemoteWeightPusher::create_dir() const {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec)
    GYRE_THROW(io,
               "weight push to the remote engines: cannot create {}: {} (pass a writable folder "
               "that the engines can read with --update-weight-dir)",
               dir_, ec.message());
}

void RemoteWeightPusher::use_nccl(NcclPushOptions options, bool required) {
  nccl_ = std::make_unique<NcclWeightPusher>(std::move(options));
  nccl_required_ = required;
}

std::string resolve_weight_transport(const TrainConfig& cfg) {
  const std::string& t = cfg.update_weight_transport;
  const bool router = !cfg.sglang_router_ip.empty();
  if (t == "nccl") {
    if (router)
      GYRE_THROW(invalid_argument,
                 "--update-weight-transport nccl forms one NCCL group with every engine: list "
                 "them with --rollout-external-engine-addrs instead of --sglang-router-ip");
    return "nccl";
  }
  // Tensor parallelism changes nothing here: the push gathers the shards (nccl_push.h).
  if (t == "auto" && cfg.device == "cuda" && !router && !cfg.rollout_external_engine_addrs.empty())
    return "nccl";
  return "disk";
}

NcclPushOptions nccl_push_options(const TrainConfig& cfg, const std::vector<std::string>& urls) {
  NcclPushOptions o;
  o.engine_urls = urls;
  o.bucket_bytes = size_t(cfg.update_weight_buffer_size);
  o.wire_dtype = cfg.precision == "bf16" ? DType::bf16 : DType::f32;
  o.timeout_s = dist::comm_timeout_s(cfg.distributed_timeout_minutes * 60);
  // Half the communicators' timeout: tp peers (and other dp replicas) wait in a broadcast for
  // rank 0's verdict while it connects (push_weights_to_remote).
  o.connect_timeout_s = std::max(5.0, 0.5 * o.timeout_s);
  o.master_address = cfg.update_weight_master_address;
  if (o.master_address.empty()) {
    bool local = true;
    for (const auto& u : urls) {
      const std::string host = serve::Url::parse(u).host;
      local = local && (host == "127.0.0.1" || host == "localhost");
    }
    o.master_address = local ? "127.0.0.1" : dist::local_host_name();
  }
  return o;
}

int64_t RemoteWeightPusher::push(const model::CausalLM& model, int64_t version,
                                 infer::RolloutClient& client, std::map<std::string, double>& m) {
  settle_transport();
  if (nccl_) {
    SyncStats st = nccl_->push(model, version);
    for (auto& [k, v] : sync_metrics(st)) m[k] = v;
    return client.weight_version();
  }
  std::string path;
  SyncStats st = write_full_weights(model, dir_, version, dtype_, &path);
  Timer t;
  const int64_t engine_version = client.sync_weights(nullptr, fs::absolute(path).string());
  st.seconds += t.elapsed();
  st.version = engine_version;
  log_sync(st);
  for (auto& [k, v] : sync_metrics(st)) m[k] = v;
  if (!previous_.empty() && previous_ != path) {
    std::error_code ec;
    fs::remove_all(previous_, ec);
  }
  previous_ = path;
  return engine_version;
}

int64_t push_weights_to_remote(RemoteWeightPusher* pusher, infer::RolloutClient* client,
                               const model::CausalLM& actor, int64_t version, TrainDistributed& d,
                               std::map<std::string, double>& m) {
  const bool main_rank = d.main_rank();
  GYRE_CHECK(main_rank == (pusher != nullptr && client != nullptr),
             "push_weights_to_remote: rank 0, and only rank 0, pushes (pusher and client)");
  // Replica 0's tp ranks are world ranks [0, tp) (rank = dp_rank * tp + tp_rank).
  const bool gathers = d.tp_size() > 1 && d.world->rank() < d.tp_size();
  std::string error;  // rank 0: why the push failed ("" while it has not)
  std::exception_ptr failure;
  auto attempt = [&](const std::function<void()>& f) {
    try {
      f();
    } catch (const std::exception& e) {
      error = e.what();
      failure = std::current_exception();
    }
  };
  // Everything that can fail before the gathers start happens first: the folder, and the NCCL
  // group — formed now or, under auto, given up for the disk — so the transport is settled.
  if (main_rank) attempt([&] { pusher->prepare(); });
  // Go / no-go for the gathers: rank 0 enters them only if nothing failed before them, and tells
  // its tp peers, which otherwise would wait in a gather for a rank that never comes (until the
  // timeout). A "go" says how to gather, since the peers hold no pusher: the disk path gathers
  // every shard inside CausalLM::save; the NCCL push gathers tensor by tensor in its buckets, so
  // the peers get its wire dtype and bucket size and plan the same buckets (follow_weight_push).
  // From then on rank 0 joins every gather even when the push fails midway (the NCCL pusher
  // stops sending but gathers to the end; save() gathers before it writes), and the failure
  // reaches the peers in the outcome broadcast below.
  std::string go;
  if (main_rank) {
    json g{{"go", error.empty()}, {"transport", pusher->transport()}};
    if (const NcclPushOptions* o = pusher->nccl_options())
      g["wire"] = int(o->wire_dtype), g["bucket_bytes"] = o->bucket_bytes;
    go = g.dump();
  }
  if (gathers) d.groups.tp->broadcast(go, 0);
  int64_t engine_version = -1;
  if (main_rank) {
    if (error.empty()) attempt([&] { engine_version = pusher->push(actor, version, *client, m); });
  } else if (gathers) {
    // Caught so that this rank still joins the outcome broadcast (then rethrown below).
    attempt([&] {
      const json g = json::parse(go, nullptr, false);
      if (!g.is_object() || !g.contains("go") || !g.contains("transport"))
        GYRE_THROW(io, "{}: malformed weight-push announcement '{}' from rank 0", d.world->where(),
                   go);
      if (!g["go"].get<bool>()) return;
      if (g["transport"] == "nccl")
        follow_weight_push(actor, DType(g.at("wire").get<int>()),
                           g.at("bucket_bytes").get<size_t>());
      else
        actor.save("", DType::f32);  // the gather only: tp rank 0 writes (in the pusher's dtype)
    });
  }
  // The outcome from rank 0 to every rank: the engines' version, or the error.
  std::string outcome =
      main_rank ? (failure ? "E" + error : "V" + std::to_string(engine_version)) : std::string();
  if (d.world->size() > 1) d.world->broadcast(outcome, 0);
  if (failure) std::rethrow_exception(failure);
  if (outcome.empty() || (outcome[0] != 'V' && outcome[0] != 'E'))
    GYRE_THROW(io, "{}: malformed weight-push outcome '{}' from rank 0", d.world->where(), outcome);
  if (outcome[0] == 'E')
    GYRE_THROW(io,
               "{}: rank 0 failed to push weight version {} to the remote rollout engines, so "
               "this rank stops too: {}",
               d.world->where(), version, outcome.substr(1));
  return std::stoll(outcome.substr(1));
}

}  // namespace gyre::rl
