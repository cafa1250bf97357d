// HttpRolloutClient (http_rollout_client.h).
#include "gyre/serve/http_rollout_client.h"

#include <cmath>

#include "gyre/core/logging.h"
#include "gyre/serve/http_client.h"
#include "gyre/serve/request_json.h"
#include "gyre/serve/task_thread.h"

namespace gyre::serve {

using infer::FinishType;
using infer::GenerateRequest;
using infer::GenerateResult;

std::string rollout_request_body(const GenerateRequest& r) {
  const infer::SamplingParams& s = r.sampling;
  json sp{{"temperature", s.temperature},
          {"top_p", s.top_p},
          {"top_k", s.top_k},
          {"min_p", s.min_p},
          {"repetition_penalty", s.repetition_penalty},
          {"presence_penalty", s.presence_penalty},
          {"frequency_penalty", s.frequency_penalty},
          {"max_new_tokens", s.max_new_tokens},
          {"min_new_tokens", s.min_new_tokens},
          {"ignore_eos", s.ignore_eos},
          {"no_stop_trim", s.no_stop_trim},
          {"skip_special_tokens", s.skip_special_tokens},
          {"spaces_between_special_tokens", false}};
  if (!s.stop.empty()) sp["stop"] = s.stop;
  if (!s.stop_token_ids.empty()) sp["stop_token_ids"] = s.stop_token_ids;
  if (s.seed) sp["sampling_seed"] = *s.seed;
  json b{{"input_ids", r.input_ids}, {"sampling_params", sp}, {"return_logprob", r.return_logprob}};
  if (!r.rid.empty()) b["rid"] = r.rid;
  if (r.logprob_start_len >= 0) b["logprob_start_len"] = r.logprob_start_len;
  if (r.top_logprobs_num > 0) b["top_logprobs_num"] = r.top_logprobs_num;
  if (r.priority != 0) b["priority"] = r.priority;
  return dump_json(b);
}

namespace {

int64_t version_number(const json& v) {
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_string()) {
    const std::string& s = v.get_ref<const std::string&>();
    if (!s.empty() && s.find_first_not_of("0123456789") == std::string::npos) return std::stoll(s);
  }
  return 0;  // a label such as SGLang's "default": the initial weights
}

float lp_of(const json& v) { return v.is_number() ? v.get<float>() : NAN; }

std::vector<std::vector<infer::TopLogprob>> tops_of(const json& v, const std::string& path) {
  std::vector<std::vector<infer::TopLogprob>> out;
  if (!v.is_array()) return out;
  for (const auto& pos : v) {
    std::vector<infer::TopLogprob> p;
    if (pos.is_array())
      for (const auto& e : pos) {
        if (!e.is_array() || e.size() < 2) bad_field(path, "entries must be [logprob, id, text]");
        p.push_back({int32_t(as_int(e[1], path)), lp_of(e[0])});
      }
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace

GenerateResult parse_rollout_response(const std::string& body, const std::string& rid) {
  json j = parse_json_object(body);
  GenerateResult r;
  r.rid = rid;
  if (auto t = opt_string(j, "text", "text")) r.text = *t;
  if (const json* ids = field(j, "output_ids")) r.output_ids = int_list(*ids, "output_ids");
  const json* meta = field(j, "meta_info");
  if (!meta || !meta->is_object()) bad_field("meta_info", "is missing from the /generate reply");
  const json& m = *meta;
  if (auto id = opt_string(m, "id", "meta_info.id")) r.rid = *id;
  r.prompt_tokens = int32_t(opt_int(m, "prompt_tokens", "meta_info.prompt_tokens").value_or(0));
  r.completion_tokens = int32_t(
      opt_int(m, "completion_tokens", "meta_info.completion_tokens").value_or(r.output_ids.size()));
  r.cached_tokens = int32_t(opt_int(m, "cached_tokens", "meta_info.cached_tokens").value_or(0));
  if (const json* v = field(m, "weight_version")) r.weight_version = version_number(*v);
  if (auto e = opt_number(m, "e2e_latency", "meta_info.e2e_latency")) r.e2e_latency = *e;
  if (const json* f = field(m, "finish_reason")) {
    if (!f->is_object()) bad_field("meta_info.finish_reason", "must be an object or null");
    std::string type = opt_string(*f, "type", "meta_info.finish_reason.type").value_or("");
    if (type == "stop") {
      r.finish.type = FinishType::stop;
      if (const json* mt = field(*f, "matched")) {
        if (mt->is_number_integer())
          r.finish.matched_token = mt->get<int32_t>();
        else if (mt->is_string())
          r.finish.matched_str = mt->get<std::string>();
      }
    } else if (type == "length") {
      r.finish.type = FinishType::length;
    } else if (type == "abort") {
      r.finish.type = FinishType::abort;
      r.finish.message = opt_string(*f, "message", "meta_info.finish_reason.message").value_or("");
    } else {
      bad_field("meta_info.finish_reason.type",
                fmt::format("'{}' is not stop, length or abort", type));
    }
  }
  if (const json* lps = field(m, "output_token_logprobs")) {
    if (!lps->is_array()) bad_field("meta_info.output_token_logprobs", "must be a list");
    std::vector<int32_t> ids;
    for (const auto& e : *lps) {
      if (!e.is_array() || e.size() < 2)
        bad_field("meta_info.output_token_logprobs", "entries must be [logprob, id, text]");
      r.output_logprobs.push_back(lp_of(e[0]));
      ids.push_back(int32_t(as_int(e[1], "meta_info.output_token_logprobs")));
    }
    // slime trains on these ids; they must be the output ids.
    if (!r.output_ids.empty() && ids != r.output_ids)
      bad_field("meta_info.output_token_logprobs",
                "token ids differ from output_ids: the server's log-probs do not describe the "
                "returned tokens");
    if (r.output_ids.empty()) r.output_ids = ids;
  }
  if (const json* t = field(m, "output_top_logprobs"))
    r.output_top_logprobs = tops_of(*t, "meta_info.output_top_logprobs");
  if (const json* in = field(m, "input_token_logprobs")) {
    if (!in->is_array()) bad_field("meta_info.input_token_logprobs", "must be a list");
    for (const auto& e : *in)
      r.input_logprobs.push_back(e.is_array() && !e.empty() ? lp_of(e[0]) : NAN);
  }
  if (const json* t = field(m, "input_top_logprobs"))
    r.input_top_logprobs = tops_of(*t, "meta_info.input_top_logprobs");
  return r;
}

// Answers a generate whose scheduled retry was dropped (the client shut down first), so that
// `done` still runs exactly once.
struct RetryGuard {
  std::shared_ptr<std::function<void(GenerateResult&&)>> done;
  std::string rid;
  int32_t index, prompt_tokens;
  bool armed = true;
  RetryGuard(std::shared_ptr<std::function<void(GenerateResult&&)>> d, std::string r, int32_t i,
             int32_t p)
      : done(std::move(d)), rid(std::move(r)), index(i), prompt_tokens(p) {}
  ~RetryGuard() {
    if (!armed) return;
    GenerateResult r;
    r.rid = rid;
    r.index = index;
    r.error = "rollout client shut down before the retry";
    r.finish = {FinishType::abort, {}, {}, r.error};
    r.prompt_tokens = prompt_tokens;
    (*done)(std::move(r));
  }
};

struct HttpRolloutClient::Impl : std::enable_shared_from_this<HttpRolloutClient::Impl> {
  HttpRolloutClientConfig cfg;
  Url url;
  HttpClient client;
  TaskThread delays;

  explicit Impl(HttpRolloutClientConfig c)
      : cfg(std::move(c)), url(Url::parse(cfg.url)), client(cfg.io_threads) {}

  ClientRequest make(const std::string& method, const std::string& target, std::string body,
                     double timeout) const {
    ClientRequest r;
    r.method = method;
    r.target = target;
    r.body = std::move(body);
    r.timeout_s = timeout;
    if (!cfg.api_key.empty()) r.headers.emplace_back("authorization", "Bearer " + cfg.api_key);
    return r;
  }

  void attempt(GenerateRequest req, int32_t index, std::string body,
               std::shared_ptr<std::function<void(GenerateResult&&)>> done, int tries) {
    auto self = shared_from_this();
    client.request(
        url, make("POST", "/generate", body, cfg.request_timeout_s),
        [self, req = std::move(req), index, body, done, tries](HttpResponse&& resp) mutable {
          bool transient = !resp.error.empty() || resp.status >= 500;
          if (transient && tries < self->cfg.max_retries) {
            double wait = self->cfg.retry_backoff_s * double(1 << std::min(tries, 10));
            log::warn("rollout client: /generate {} failed ({}); retry {} in {:.2f}s", req.rid,
                      resp.error_message(), tries + 1, wait);
            // A retry dropped by shutdown still answers: the task's destructor runs `finish`.
            auto retry =
                std::make_shared<RetryGuard>(done, req.rid, index, int32_t(req.input_ids.size()));
            if (self->delays.post_after(
                    wait, [self, req, index, body, done, tries, retry]() mutable {
                      retry->armed = false;
                      self->attempt(std::move(req), index, std::move(body), done, tries + 1);
                    }))
              return;
            retry->armed = false;
            resp = {};
            resp.error = "rollout client shut down";
          }
          GenerateResult r;
          if (resp.ok()) {
            try {
              r = parse_rollout_response(resp.body, req.rid);
            } catch (const std::exception& e) {
              r = {};
              r.error = std::string("bad /generate reply: ") + e.what();
            }
          } else {
            r.error = resp.error_message();
          }
          if (!r.error.empty()) {
            r.rid = req.rid;
            r.finish.type = FinishType::abort;
            r.finish.message = r.error;
            r.prompt_tokens = int32_t(req.input_ids.size());
          }
          r.index = index;
          (*done)(std::move(r));
        });
  }

  // A control call; against a router without the route (404), every worker of GET /workers.
  std::vector<HttpResponse> control(const std::string& method, const std::string& target,
                                    const std::string& body, double timeout = 600) {
    HttpResponse r = client.request_sync(url, make(method, target, body, timeout));
    if (r.status != 404) return {std::move(r)};
    HttpResponse w = client.request_sync(url, make("GET", "/workers", "", 30));
    auto j = json::parse(w.body, nullptr, false);
    if (!w.ok() || j.is_discarded() || !j.contains("workers")) return {std::move(r)};
    std::vector<HttpResponse> out;
    for (const auto& wk : j["workers"])
      if (wk.contains("url") && wk["url"].is_string())
        out.push_back(client.request_sync(Url::parse(wk["url"].get<std::string>()),
                                          make(method, target, body, timeout)));
    return out;
  }
};

HttpRolloutClient::HttpRolloutClient(HttpRolloutClientConfig cfg)
    : impl_(std::make_shared<Impl>(std::move(cfg))) {}

HttpRolloutClient::~HttpRolloutClient() {
  // Stop the threads here, on the owner's thread: callbacks hold the Impl, and if the last of
  // them let go on an I/O or retry thread, that thread would have to tear itself down.
  impl_->delays.stop();
  impl_->client.shutdown();
}

std::string HttpRolloutClient::describe() const { return impl_->url.origin() + impl_->url.path; }

void HttpRolloutClient::generate(GenerateRequest req, std::function<void(GenerateResult&&)> done) {
  auto d = std::make_shared<std::function<void(GenerateResult &&)>>(std::move(done));
  int32_t n = std::max(1, req.sampling.n);
  if (req.sampling.n < 1) {
    GenerateResult r;
    r.rid = req.rid;
    r.error = fmt::format("sampling_params.n = {} must be >= 1", req.sampling.n);
    r.finish = {FinishType::abort, {}, {}, r.error};
    (*d)(std::move(r));
    return;
  }
  // n samples = n calls named and seeded as the engine would ("<rid>-<i>", seed + i).
  for (int32_t i = 0; i < n; ++i) {
    GenerateRequest r = req;
    r.sampling.n = 1;
    if (n > 1) {
      if (!r.rid.empty()) r.rid = fmt::format("{}-{}", req.rid, i);
      if (r.sampling.seed) r.sampling.seed = *r.sampling.seed + uint64_t(i);
    }
    std::string body = rollout_request_body(r);
    impl_->attempt(std::move(r), i, std::move(body), d, 0);
  }
}

void HttpRolloutClient::abort_all() {
  for (auto& r : impl_->control("POST", "/abort_request", R"({"abort_all":true})"))
    if (!r.ok()) log::warn("rollout client: abort_all failed: {}", r.error_message());
}

void HttpRolloutClient::pause() {
  for (auto& r : impl_->control("POST", "/pause_generation", "{}"))
    if (!r.ok()) GYRE_THROW(io, "pause_generation on {} failed: {}", describe(), r.error_message());
}

void HttpRolloutClient::resume() {
  for (auto& r : impl_->control("POST", "/continue_generation", "{}"))
    if (!r.ok())
      GYRE_THROW(io, "continue_generation on {} failed: {}", describe(), r.error_message());
}

bool HttpRolloutClient::flush_cache() {
  bool ok = true;
  for (auto& r : impl_->control("GET", "/flush_cache", "")) {
    if (r.status == 400)
      ok = false;  // requests running: the engine's "not now"
    else if (!r.ok())
      GYRE_THROW(io, "flush_cache on {} failed: {}", describe(), r.error_message());
  }
  return ok;
}

int64_t HttpRolloutClient::weight_version() {
  HttpResponse r =
      impl_->client.request_sync(impl_->url, impl_->make("GET", "/get_weight_version", "", 60));
  if (!r.ok()) GYRE_THROW(io, "get_weight_version on {} failed: {}", describe(), r.error_message());
  json j = parse_json_object(r.body);
  if (!j.contains("weight_version"))
    GYRE_THROW(io, "get_weight_version on {}: reply has no weight_version: {}", describe(), r.body);
  return version_number(j["weight_version"]);
}

int64_t HttpRolloutClient::sync_weights(const std::function<void()>& apply,
                                        const std::string& hf_dir) {
  if (apply) apply();
  if (hf_dir.empty())
    GYRE_THROW(invalid_argument,
               "sync_weights over HTTP needs the folder the trainer saved (hf_dir); the remote "
               "engine reloads it with /update_weights_from_disk");
  int64_t version = -1;
  for (auto& r : impl_->control("POST", "/update_weights_from_disk",
                                dump_json(json{{"model_path", hf_dir}}))) {
    auto j = json::parse(r.body, nullptr, false);
    if (!r.ok() || j.is_discarded() || !j.value("success", false))
      GYRE_THROW(io, "update_weights_from_disk({}) on {} failed: {}", hf_dir, describe(),
                 r.error_message());
    if (j.contains("weight_version"))
      version = std::max(version, version_number(j["weight_version"]));
  }
  return version >= 0 ? version : weight_version();
}

}  // namespace gyre::serve
